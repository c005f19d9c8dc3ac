//! WebSockets with hibernation: the node holds the connection; the function runs only when
//! something happens on it.
//!
//! - **Connect.** An upgrade on a route whose function opted in (`websocket`) is first
//!   delivered to the function as the GET it is, with `eddy-websocket: connect` and
//!   `eddy-connection-id`. A non-2xx answer refuses the upgrade with that answer; a 2xx
//!   accepts it, optionally choosing a subprotocol (`eddy-websocket-protocol`) and channels
//!   to join (`eddy-websocket-channels`, comma-separated).
//! - **Events.** Each message, and the close, is a POST in the CloudEvents binary mode
//!   (`ce-type: dev.eddy.websocket.message` / `.close`), with `eddy-connection-id`,
//!   `eddy-websocket: message|close` and `eddy-websocket-kind: text|binary`. A non-empty 2xx
//!   body is sent back on the connection as a message of the same kind. Messages of one
//!   connection are delivered one at a time, in order.
//! - **Between events no instance exists**: a connection is a socket, a small read buffer
//!   (`WEBSOCKET_READ_BUFFER_BYTES`) and one task.
//! - **Bounds.** Incoming messages above `websocket_message_bytes_max` close with 1009; a
//!   reader more than `websocket_send_buffer_bytes_max` behind is closed with 1013; no frame
//!   for `websocket_idle_timeout_ms` closes with 1001; pings every
//!   `websocket_ping_interval_ms`; connections per function and per node are capped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::LimitsConfig;
use crate::events::{CLOSE_EVENT_TYPE, CloudEvent, MESSAGE_EVENT_TYPE};
use crate::invoker::{
    Collected, ERROR_HEADER, Invoker, Keep, Trigger, busy_response, node_response,
};
use crate::registry::Registry;
use crate::routes::LiveFunction;
pub use eddy_parse::api::validate_channel;
pub use eddy_parse::platform::CLOSE_REASON_BYTES_MAX;
use eddy_runtime::ResponseBody;

mod server;

/// Close code of a connection whose reader fell too far behind ("try again later").
const SLOW_READER_CLOSE_CODE: u16 = 1013;
pub use server::{SocketServer, is_upgrade};

/// Read buffer of one connection (tungstenite's default is 128 KiB, eagerly allocated: 12
/// GiB for 100,000 idle connections).
pub const WEBSOCKET_READ_BUFFER_BYTES: usize = 1024;
/// How long a closing connection gets to send its close frame.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Channels one connection may join.
pub const WEBSOCKET_CHANNELS_PER_CONNECTION_MAX: usize = 64;

/// Close codes that must never be sent in a close frame (RFC 6455, 7.4.1): they say what
/// happened locally (no code, abnormal closure, TLS failure). A connection closed with one
/// gets a close frame without a code.
fn is_reserved_close_code(code: u16) -> bool {
    matches!(code, 1004 | 1005 | 1006 | 1015) || code < 1000 || (1016..3000).contains(&code)
}

pub const HEADER_WEBSOCKET: &str = "eddy-websocket";
pub const HEADER_CONNECTION_ID: &str = "eddy-connection-id";
pub use eddy_parse::platform::HEADER_KIND;
pub const HEADER_PROTOCOL: &str = "eddy-websocket-protocol";
pub const HEADER_CHANNELS: &str = "eddy-websocket-channels";
pub const HEADER_CLOSE_CODE: &str = "eddy-websocket-close-code";

/// The node's open connections and channels; what `eddy.local` and the control API act on.
/// Broadcasts waiting to be relayed to a cluster's other nodes, at most; past it one is
/// delivered on this node only (and logged), rather than queued without bound while the
/// store is slow or away.
pub const RELAY_QUEUE_MAX: usize = 1024;
/// Relayed broadcasts and operations written to the store in one transaction at most.
const RELAY_BATCH_MAX: usize = 256;

pub struct Sockets {
    limits: LimitsConfig,
    clock: Clock,
    state: Mutex<SocketState>,
    /// In a cluster: broadcasts on their way to the other nodes, in order, and this node's
    /// name.
    relay: std::sync::OnceLock<(mpsc::Sender<eddy_store::RelayedBroadcast>, String)>,
}

/// A channel: its function's, named. Each function has channels of its own: another
/// function's channel of the same name is another channel.
type ChannelKey = (Arc<str>, String);

#[derive(Default)]
struct SocketState {
    connections: HashMap<String, Connection>,
    channels: HashMap<ChannelKey, HashSet<String>>,
    per_function: HashMap<Arc<str>, usize>,
    /// Reserved by upgrades in progress and held by open connections.
    total: usize,
}

impl SocketState {
    /// The open connection `id`, if it belongs to `function` (any function's when `None`).
    fn connection(&self, function: Option<&str>, id: &str) -> Result<&Connection, SocketError> {
        self.connections
            .get(id)
            .filter(|c| function.is_none_or(|f| &*c.function == f))
            .ok_or(SocketError::NoConnection)
    }
}

struct Connection {
    function: Arc<str>,
    out: mpsc::UnboundedSender<Message>,
    held: Held,
    channels: HashSet<String>,
    opened_at_ms: i64,
}

/// One connection as listed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConnectionInfo {
    pub id: String,
    pub function: String,
    pub opened_at_ms: i64,
    pub channels: Vec<String>,
    pub queued_bytes: usize,
}

/// Where a send, close or channel change went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Done to a connection this node holds.
    Here,
    /// Handed to the cluster's other nodes: the one holding the connection does it (none
    /// does when no node holds it, and the caller is not told).
    Relayed,
}

/// Why a send or close did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum SocketError {
    /// No open connection with that id (for this function).
    NoConnection,
    /// In a cluster: the connection is not on this node, and `RELAY_QUEUE_MAX` operations
    /// are already waiting to be handed to the others.
    RelayFull,
    /// The reader is too far behind: the connection was closed with 1013.
    SlowReader,
    /// The connection has joined `WEBSOCKET_CHANNELS_PER_CONNECTION_MAX` channels.
    TooManyChannels,
}

impl Sockets {
    /// Largest message sent through `eddy.local` or the control API.
    pub fn message_bytes_max(&self) -> usize {
        self.limits.websocket_message_bytes_max
    }

    /// Bytes a connection may have waiting to be written.
    pub fn send_buffer_bytes_max(&self) -> usize {
        self.limits.websocket_send_buffer_bytes_max
    }

    pub fn new(limits: LimitsConfig, clock: Clock) -> Arc<Sockets> {
        Arc::new(Sockets {
            limits,
            clock,
            state: Mutex::new(SocketState::default()),
            relay: std::sync::OnceLock::new(),
        })
    }

    /// Makes broadcasts reach the channel's connections on every node of the cluster, and
    /// delivers the other nodes' broadcasts to this node's connections until `shutdown`.
    pub fn relay_through(
        self: &Arc<Self>,
        relay: Arc<dyn eddy_store::SocketRelay>,
        node: String,
        shutdown: CancellationToken,
    ) {
        let mut relayed = relay.subscribe();
        let (outgoing, mut to_relay) = mpsc::channel(RELAY_QUEUE_MAX);
        if self.relay.set((outgoing, node)).is_err() {
            return;
        }
        // One sender, so broadcasts reach the other nodes in the order they were made; what
        // waits goes in one transaction.
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while to_relay.recv_many(&mut batch, RELAY_BATCH_MAX).await > 0 {
                let count = batch.len();
                if let Err(e) = relay.relay(std::mem::take(&mut batch)).await {
                    tracing::warn!(error = %e, count, "WebSocket broadcasts could not be relayed to the other nodes");
                }
            }
        });
        let sockets = self.clone();
        tokio::spawn(async move {
            loop {
                let broadcast = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = relayed.recv() => received,
                };
                match broadcast {
                    Ok(b) => sockets.act_on_relayed(b),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "this node fell behind the cluster's WebSocket broadcasts; some were not delivered here"
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Does here what another node relayed, to the connections this node holds; an
    /// operation on a connection held elsewhere (or not at all) is not this node's.
    fn act_on_relayed(&self, b: eddy_store::RelayedBroadcast) {
        use eddy_store::RelayAction;
        let function = Some(b.function.as_str());
        let message = || {
            if b.binary {
                Some(Message::Binary(Bytes::from(b.body.clone())))
            } else {
                Utf8Bytes::try_from(Bytes::from(b.body.clone()))
                    .ok()
                    .map(Message::Text)
            }
        };
        match &b.action {
            RelayAction::Broadcast => {
                if let Some(message) = message() {
                    self.broadcast_here(&b.function, &b.channel, message);
                }
            }
            RelayAction::Send { connection } => {
                if let Some(message) = message() {
                    let _ = self.send_here(function, connection, message);
                }
            }
            RelayAction::Close { connection, code } => {
                let reason = String::from_utf8_lossy(&b.body).into_owned();
                let _ = self.close_here(function, connection, *code, reason);
            }
            RelayAction::Membership { connection, join } => {
                // The channel is in the body: a node of an older release reads every relayed
                // row as a broadcast to its `channel`, which is left empty here.
                let channel = String::from_utf8_lossy(&b.body);
                let _ = self.membership_here(function, connection, &channel, *join);
            }
        }
    }

    /// What was done `here`; when the connection is not on this node, `relayed()`'s body and
    /// action handed to the cluster's other nodes, if there are any (`Ok(Reach::Relayed)`;
    /// else the connection is unknown).
    fn or_relayed(
        &self,
        here: Result<(), SocketError>,
        function: Option<&str>,
        relayed: impl FnOnce() -> (Option<Message>, eddy_store::RelayAction),
    ) -> Result<Reach, SocketError> {
        match here {
            Err(SocketError::NoConnection) => {
                let (message, action) = relayed();
                self.relay_to_holder(function, "", message.as_ref(), action)
            }
            done => done.map(|()| Reach::Here),
        }
    }

    /// Hands `action` (on `channel`, for a broadcast) to the cluster's other nodes, in the
    /// order made: `Ok(Reach::Relayed)`; `NoConnection` without other nodes (or for the
    /// node's own calls), `RelayFull` past `RELAY_QUEUE_MAX` waiting.
    fn relay_to_holder(
        &self,
        function: Option<&str>,
        channel: &str,
        message: Option<&Message>,
        action: eddy_store::RelayAction,
    ) -> Result<Reach, SocketError> {
        // The node's own calls (function `None`) are about its own connections only.
        let (Some((relay, node)), Some(function)) = (self.relay.get(), function) else {
            return Err(SocketError::NoConnection);
        };
        let (binary, body) = match message {
            Some(Message::Binary(bytes)) => (true, bytes.to_vec()),
            Some(Message::Text(text)) => (false, text.as_bytes().to_vec()),
            _ => (false, Vec::new()),
        };
        let relayed = eddy_store::RelayedBroadcast {
            origin: node.clone(),
            function: function.to_owned(),
            channel: channel.to_owned(),
            binary,
            body,
            action,
        };
        if relay.try_send(relayed).is_err() {
            tracing::warn!(
                queued = RELAY_QUEUE_MAX,
                "a WebSocket broadcast or operation was not relayed to the other nodes: RELAY_QUEUE_MAX are waiting for the store"
            );
            return Err(SocketError::RelayFull);
        }
        Ok(Reach::Relayed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SocketState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hold a place for one more connection of `function`, or name the limit in the way.
    fn reserve(&self, function: &Arc<str>) -> Result<(), (&'static str, String)> {
        let mut s = self.lock();
        if s.total >= self.limits.websocket_connections_max {
            return Err((
                "websocket_connections_max",
                format!(
                    "this node holds its websocket_connections_max ({}) WebSocket connections; retry shortly",
                    self.limits.websocket_connections_max
                ),
            ));
        }
        let count = s.per_function.entry(function.clone()).or_default();
        if *count >= self.limits.websocket_connections_per_function_max {
            return Err((
                "websocket_connections_per_function_max",
                format!(
                    "`{function}` holds its websocket_connections_per_function_max ({}) WebSocket connections; retry shortly",
                    self.limits.websocket_connections_per_function_max
                ),
            ));
        }
        *count += 1;
        s.total += 1;
        Ok(())
    }

    /// Give back a place reserved for a connection that never opened.
    fn unreserve(&self, function: &Arc<str>) {
        let mut s = self.lock();
        s.total -= 1;
        if let Some(count) = s.per_function.get_mut(function) {
            *count -= 1;
        }
    }

    fn register(&self, id: &str, connection: Connection) {
        let mut s = self.lock();
        for channel in &connection.channels {
            s.channels
                .entry((connection.function.clone(), channel.clone()))
                .or_default()
                .insert(id.to_string());
        }
        s.connections.insert(id.to_string(), connection);
    }

    /// Forget a closed connection; how long it was open.
    fn unregister(&self, id: &str) -> Option<Duration> {
        let mut s = self.lock();
        let connection = s.connections.remove(id)?;
        for channel in &connection.channels {
            let key = (connection.function.clone(), channel.clone());
            if let Some(members) = s.channels.get_mut(&key) {
                members.remove(id);
                if members.is_empty() {
                    s.channels.remove(&key);
                }
            }
        }
        s.total -= 1;
        if let Some(count) = s.per_function.get_mut(&connection.function) {
            *count -= 1;
        }
        Some(Duration::from_millis(
            (self.clock.now_ms() - connection.opened_at_ms).max(0) as u64,
        ))
    }

    /// Queue `message` on a connection (of `function`, when given), within its send buffer;
    /// in a cluster, one this node does not hold is handed to the node that does.
    pub fn send(
        &self,
        function: Option<&str>,
        id: &str,
        message: Message,
    ) -> Result<Reach, SocketError> {
        let here = self.send_here(function, id, message.clone());
        self.or_relayed(here, function, || {
            let connection = id.to_owned();
            (Some(message), eddy_store::RelayAction::Send { connection })
        })
    }

    fn send_here(
        &self,
        function: Option<&str>,
        id: &str,
        message: Message,
    ) -> Result<(), SocketError> {
        let s = self.lock();
        self.enqueue(s.connection(function, id)?, message)
    }

    fn enqueue(&self, connection: &Connection, message: Message) -> Result<(), SocketError> {
        let bytes = message.len();
        let before = connection.held.queued.fetch_add(bytes, Ordering::AcqRel);
        // One message always fits in an empty buffer; past that the reader must keep up.
        if before > 0 && before + bytes > self.limits.websocket_send_buffer_bytes_max {
            connection.held.queued.fetch_sub(bytes, Ordering::AcqRel);
            close(
                connection,
                SLOW_READER_CLOSE_CODE,
                format!(
                    "slow reader: more than websocket_send_buffer_bytes_max ({} bytes) waiting",
                    self.limits.websocket_send_buffer_bytes_max
                ),
            );
            return Err(SocketError::SlowReader);
        }
        if connection.out.send(message).is_err() {
            connection.held.queued.fetch_sub(bytes, Ordering::AcqRel);
            return Err(SocketError::NoConnection);
        }
        Ok(())
    }

    /// Close a connection (of `function`, when given) with `code`; `reason` is cut to what a
    /// close frame holds (`CLOSE_REASON_BYTES_MAX`). In a cluster, one this node does not
    /// hold is handed to the node that does.
    pub fn close(
        &self,
        function: Option<&str>,
        id: &str,
        code: u16,
        reason: String,
    ) -> Result<Reach, SocketError> {
        let here = self.close_here(function, id, code, reason.clone());
        self.or_relayed(here, function, || {
            let connection = id.to_owned();
            let action = eddy_store::RelayAction::Close { connection, code };
            (Some(Message::Text(reason.into())), action)
        })
    }

    fn close_here(
        &self,
        function: Option<&str>,
        id: &str,
        code: u16,
        reason: String,
    ) -> Result<(), SocketError> {
        close(self.lock().connection(function, id)?, code, reason);
        Ok(())
    }

    /// Close every connection of `function` with `code` (it was removed); how many.
    pub fn close_function(&self, function: &str, code: u16, reason: &str) -> usize {
        let s = self.lock();
        let mine: Vec<&Connection> = s
            .connections
            .values()
            .filter(|c| &*c.function == function)
            .collect();
        for connection in &mine {
            close(connection, code, reason.to_string());
        }
        mine.len()
    }

    /// Close every connection with `code` (the node is shutting down); how many.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        let s = self.lock();
        for connection in s.connections.values() {
            close(connection, code, reason.to_string());
        }
        s.connections.len()
    }

    /// Join (`true`) or leave a channel. In a cluster, a connection this node does not hold
    /// is handed to the node that does.
    pub fn membership(
        &self,
        function: Option<&str>,
        id: &str,
        channel: &str,
        join: bool,
    ) -> Result<Reach, SocketError> {
        let here = self.membership_here(function, id, channel, join);
        self.or_relayed(here, function, || {
            let connection = id.to_owned();
            let action = eddy_store::RelayAction::Membership { connection, join };
            (Some(Message::Text(channel.into())), action)
        })
    }

    fn membership_here(
        &self,
        function: Option<&str>,
        id: &str,
        channel: &str,
        join: bool,
    ) -> Result<(), SocketError> {
        let mut s = self.lock();
        let connection = s
            .connections
            .get_mut(id)
            .filter(|c| function.is_none_or(|f| &*c.function == f))
            .ok_or(SocketError::NoConnection)?;
        let key = (connection.function.clone(), channel.to_string());
        if join {
            if !connection.channels.contains(channel)
                && connection.channels.len() >= WEBSOCKET_CHANNELS_PER_CONNECTION_MAX
            {
                return Err(SocketError::TooManyChannels);
            }
            connection.channels.insert(channel.to_string());
            s.channels.entry(key).or_default().insert(id.to_string());
        } else {
            connection.channels.remove(channel);
            if let Some(members) = s.channels.get_mut(&key) {
                members.remove(id);
                if members.is_empty() {
                    s.channels.remove(&key);
                }
            }
        }
        Ok(())
    }

    /// Send `message` to every connection in `function`'s `channel`, on every node of a
    /// cluster; how many of this node's connections got it queued (a slow reader among them
    /// is closed, the others are not held up). The other nodes get it through the store, in
    /// the background.
    pub fn broadcast(&self, function: &str, channel: &str, message: Message) -> usize {
        // A single node has no one to relay to; a full relay queue is logged there.
        let _ = self.relay_to_holder(
            Some(function),
            channel,
            Some(&message),
            eddy_store::RelayAction::Broadcast,
        );
        self.broadcast_here(function, channel, message)
    }

    /// [`Sockets::broadcast`] to this node's connections only.
    fn broadcast_here(&self, function: &str, channel: &str, message: Message) -> usize {
        let s = self.lock();
        let Some(members) = s.channels.get(&(Arc::from(function), channel.to_string())) else {
            return 0;
        };
        members
            .iter()
            .filter_map(|id| s.connections.get(id))
            .filter(|c| self.enqueue(c, message.clone()).is_ok())
            .count()
    }

    /// Open connections of `function` (every function's when `None`), oldest first.
    pub fn list(&self, function: Option<&str>) -> Vec<ConnectionInfo> {
        let s = self.lock();
        let mut list: Vec<ConnectionInfo> = s
            .connections
            .iter()
            .filter(|(_, c)| function.is_none_or(|f| &*c.function == f))
            .map(|(id, c)| {
                let mut channels: Vec<String> = c.channels.iter().cloned().collect();
                channels.sort();
                ConnectionInfo {
                    id: id.clone(),
                    function: c.function.to_string(),
                    opened_at_ms: c.opened_at_ms,
                    channels,
                    queued_bytes: c.held.queued.load(Ordering::Relaxed),
                }
            })
            .collect();
        list.sort_by(|a, b| (a.opened_at_ms, &a.id).cmp(&(b.opened_at_ms, &b.id)));
        list
    }
}

fn close(connection: &Connection, code: u16, mut reason: String) {
    if reason.len() > CLOSE_REASON_BYTES_MAX {
        let mut end = CLOSE_REASON_BYTES_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    *connection
        .held
        .close_with
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some((code, reason));
    connection.held.closer.cancel();
}

/// What a registered connection's tasks share with its entry in `Sockets`.
#[derive(Clone)]
struct Held {
    /// Bytes sent to the connection and not yet written.
    queued: Arc<AtomicUsize>,
    /// Cancelled to close the connection; `close_with` says how.
    closer: CancellationToken,
    /// The close frame to send, once chosen.
    close_with: Arc<Mutex<Option<(u16, String)>>>,
}
