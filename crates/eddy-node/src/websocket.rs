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
pub use eddy_parse::api::{CHANNEL_NAME_BYTES_MAX, validate_channel};
pub use eddy_parse::platform::CLOSE_REASON_BYTES_MAX;
use eddy_runtime::ResponseBody;

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
pub struct Sockets {
    limits: LimitsConfig,
    clock: Clock,
    state: Mutex<SocketState>,
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

/// Why a send or close did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum SocketError {
    /// No open connection with that id (for this function).
    NoConnection,
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
        })
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

    /// Queue `message` on a connection (of `function`, when given), within its send buffer.
    pub fn send(
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
    /// close frame holds (`CLOSE_REASON_BYTES_MAX`).
    pub fn close(
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

    /// Join (`true`) or leave a channel.
    pub fn membership(
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

    /// Send `message` to every connection in `function`'s `channel`; how many got it queued
    /// (a slow reader among them is closed, the others are not held up).
    pub fn broadcast(&self, function: &str, channel: &str, message: Message) -> usize {
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

    /// Open connections by function.
    pub fn counts(&self) -> HashMap<String, usize> {
        self.lock()
            .per_function
            .iter()
            .map(|(f, n)| (f.to_string(), *n))
            .collect()
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

/// Runs connections: the upgrade, the read/write loop and the function's events.
pub struct SocketServer {
    pub sockets: Arc<Sockets>,
    pub registry: Arc<Registry>,
    pub invoker: Invoker,
    pub limits: LimitsConfig,
}

/// Whether `req` asks for a WebSocket upgrade.
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

impl SocketServer {
    /// Answer an upgrade request to `live`: ask the function, then switch protocols.
    pub async fn upgrade(
        self: &Arc<Self>,
        live: Arc<LiveFunction>,
        mut req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
        let version_ok = req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
        let Some(key) = key.filter(|_| req.method() == http::Method::GET && version_ok) else {
            return node_response(
                StatusCode::BAD_REQUEST,
                "websocket_handshake",
                "a WebSocket upgrade is a GET with Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            );
        };
        if let Err((limit, message)) = self.sockets.reserve(&live.name) {
            return busy_response(limit, &message);
        }
        let id = connection_id();
        let on_upgrade = hyper::upgrade::on(&mut req);
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(|| live.route.clone(), |p| p.to_string());
        // The connect event: the upgrade request itself, marked.
        let mut connect = Request::builder()
            .method(http::Method::GET)
            .uri(path.as_str())
            .body(Full::new(Bytes::new()))
            .expect("a path from a request is a valid URI");
        for (name, value) in req.headers() {
            connect.headers_mut().append(name, value.clone());
        }
        mark(connect.headers_mut(), "connect", &id, None, 0);
        let answer = match self.invoke(&live, connect).await {
            Ok(answer) => answer,
            Err(response) => {
                self.sockets.unreserve(&live.name);
                return response;
            }
        };
        if !answer.status.is_success() {
            self.sockets.unreserve(&live.name);
            if answer.over_limit {
                return node_response(
                    StatusCode::BAD_GATEWAY,
                    "websocket_message_bytes_max",
                    &format!(
                        "the function refused the connection with a body larger than websocket_message_bytes_max ({} bytes)",
                        self.limits.websocket_message_bytes_max
                    ),
                );
            }
            let mut response = Response::new(ResponseBody::full(answer.body));
            *response.status_mut() = answer.status;
            *response.headers_mut() = answer.headers;
            // The header is the node's word, here as on every response.
            response.headers_mut().remove(ERROR_HEADER);
            return response;
        }
        let channels: HashSet<String> = answer
            .headers
            .get(HEADER_CHANNELS)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|c| validate_channel(c).is_ok())
                    .take(WEBSOCKET_CHANNELS_PER_CONNECTION_MAX)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let mut response = Response::new(ResponseBody::full(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
        );
        if let Some(protocol) = answer.headers.get(HEADER_PROTOCOL) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol.clone());
        }
        if let Ok(value) = HeaderValue::from_str(&id) {
            headers.insert(HEADER_CONNECTION_ID, value);
        }
        // Registered before the 101 goes out: a client told it is connected is already in
        // its channels, and what is sent to it waits in its queue until the socket is up.
        let function = live.name.clone();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let held = Held {
            queued: Arc::new(AtomicUsize::new(0)),
            closer: CancellationToken::new(),
            close_with: Arc::new(Mutex::new(None)),
        };
        self.sockets.register(
            &id,
            Connection {
                function: function.clone(),
                out: out_tx,
                held: held.clone(),
                channels,
                opened_at_ms: self.registry.clock().now_ms(),
            },
        );
        self.registry.meter().websocket_opened(&function);
        let server = self.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => server.run(function, id, path, out_rx, held, upgraded).await,
                Err(e) => {
                    // The function accepted the connection: it hears that it ended.
                    tracing::debug!(%function, error = %e, "WebSocket upgrade failed");
                    server.closed(&function, &id, &path, 1006).await;
                    server.finish(&function, &id);
                }
            }
        });
        response
    }

    /// Invoke `live` for a WebSocket event (interactive: a client is waiting).
    async fn invoke(
        &self,
        live: &Arc<LiveFunction>,
        request: Request<Full<Bytes>>,
    ) -> Result<Collected, Response<ResponseBody>> {
        let record = self.invoker.record(live, &request);
        // The same gate, answer and limit name as a refused HTTP request.
        let permit = self
            .invoker
            .admit(&record, Trigger::WebSocket)
            .await
            .map_err(|refusal| refusal.response(self.registry.clock().now_ms()))?;
        self.invoker
            .run_collected(
                record,
                request,
                permit,
                // A reply becomes a message; a refusal's body, a response: the same bound.
                Keep::Body(self.limits.websocket_message_bytes_max),
            )
            .await
            .map_err(|message| {
                node_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "websocket_connect_failed",
                    &format!("the function failed at connect: {message}"),
                )
            })
    }

    /// One open connection, until it closes.
    async fn run(
        self: Arc<Self>,
        function: Arc<str>,
        id: String,
        path: String,
        out_rx: mpsc::UnboundedReceiver<Message>,
        held: Held,
        upgraded: hyper::upgrade::Upgraded,
    ) {
        let Held {
            queued,
            closer,
            close_with,
        } = held;
        let config = WebSocketConfig::default()
            .read_buffer_size(WEBSOCKET_READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_message_size(Some(self.limits.websocket_message_bytes_max))
            .max_frame_size(Some(self.limits.websocket_message_bytes_max));
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let (write, mut read) = socket.split();
        // The writer has a task of its own, so a reader that stops reading blocks only it:
        // the connection still sees its close, its timeouts and its events.
        let writer = tokio::spawn(write_loop(
            write,
            out_rx,
            queued.clone(),
            closer.clone(),
            close_with.clone(),
        ));
        let idle_timeout = Duration::from_millis(self.limits.websocket_idle_timeout_ms);
        let mut ping = tokio::time::interval(Duration::from_millis(
            self.limits.websocket_ping_interval_ms,
        ));
        ping.reset();
        let mut last_heard = Instant::now();
        let mut pending: Option<std::pin::Pin<Box<dyn Future<Output = Option<Message>> + Send>>> =
            None;
        let mut client_closed = None;
        loop {
            let idle_left = idle_timeout.saturating_sub(last_heard.elapsed());
            tokio::select! {
                _ = closer.cancelled() => break,
                reply = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                    pending = None;
                    if let Some(message) = reply {
                        // The function's answer, within the same send buffer as any other.
                        let _ = self.sockets.send(None, &id, message);
                    }
                }
                _ = ping.tick() => {
                    let _ = self.sockets.send(None, &id, Message::Ping(Bytes::new()));
                }
                _ = tokio::time::sleep(idle_left) => {
                    self.sockets.close(None, &id, 1001, format!(
                        "idle for websocket_idle_timeout_ms ({} ms)",
                        self.limits.websocket_idle_timeout_ms
                    )).ok();
                }
                incoming = read.next(), if pending.is_none() => {
                    last_heard = Instant::now();
                    match incoming {
                        Some(Ok(Message::Text(text))) => {
                            pending = Some(Box::pin(self.clone().message(
                                function.clone(), id.clone(), path.clone(), Bytes::from(text), true,
                            )));
                        }
                        Some(Ok(Message::Binary(data))) => {
                            pending = Some(Box::pin(self.clone().message(
                                function.clone(), id.clone(), path.clone(), data, false,
                            )));
                        }
                        Some(Ok(Message::Close(frame))) => {
                            // Echo the client's close frame, then end.
                            let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                            let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                            client_closed = Some(code);
                            let _ = self.sockets.close(None, &id, code, reason);
                        }
                        Some(Ok(_)) => {} // ping (answered by tungstenite), pong, raw frame
                        Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                            let _ = self.sockets.close(None, &id, 1009, format!(
                                "message larger than websocket_message_bytes_max ({} bytes)",
                                self.limits.websocket_message_bytes_max
                            ));
                        }
                        Some(Err(_)) | None => {
                            client_closed = Some(1006);
                            closer.cancel();
                        }
                    }
                }
            }
        }
        let sent_code = writer.await.ok().flatten();
        let code = client_closed.or(sent_code).unwrap_or(1006);
        self.closed(&function, &id, &path, code).await;
        self.finish(&function, &id);
    }

    fn finish(&self, function: &Arc<str>, id: &str) {
        if let Some(open_for) = self.sockets.unregister(id) {
            self.registry.meter().websocket_closed(
                function,
                self.registry.clock().now_ms(),
                open_for,
            );
        }
    }

    /// Deliver one message; the reply to send back, if any.
    async fn message(
        self: Arc<Self>,
        function: Arc<str>,
        id: String,
        path: String,
        data: Bytes,
        text: bool,
    ) -> Option<Message> {
        let live = self.registry.routes().function(&function).cloned()?;
        if self.invoker.budget(&function, Trigger::WebSocket).is_err() {
            // A hard cap refuses every interactive invocation, so a held connection's next
            // message closes it instead of running the function.
            let _ = self.sockets.close(
                None,
                &id,
                BUDGET_CLOSE_CODE,
                "budget spent: the function's monthly budget is spent".to_string(),
            );
            return None;
        }
        let mut request = event_request(&path, data, text);
        mark(
            request.headers_mut(),
            "message",
            &id,
            Some(text),
            self.registry.clock().now_ms(),
        );
        let answer = match self.invoke(&live, request).await {
            Ok(answer) => answer,
            Err(_) => return None,
        };
        if answer.over_limit {
            let _ = self.sockets.close(
                None,
                &id,
                1009,
                format!(
                    "the function's reply is larger than websocket_message_bytes_max ({} bytes)",
                    self.limits.websocket_message_bytes_max
                ),
            );
            return None;
        }
        if !answer.status.is_success() || answer.body.is_empty() {
            return None;
        }
        Some(if text {
            match Utf8Bytes::try_from(answer.body) {
                Ok(text) => Message::Text(text),
                Err(_) => return None,
            }
        } else {
            Message::Binary(answer.body)
        })
    }

    /// Deliver the close event (nothing is sent back).
    async fn closed(&self, function: &Arc<str>, id: &str, path: &str, code: u16) {
        let Some(live) = self.registry.routes().function(function).cloned() else {
            return;
        };
        // Past a spent budget's hard cap the gate refuses the close event too.
        let mut request = event_request(path, Bytes::new(), false);
        mark(
            request.headers_mut(),
            "close",
            id,
            None,
            self.registry.clock().now_ms(),
        );
        if let Ok(value) = HeaderValue::from_str(&code.to_string()) {
            request.headers_mut().insert(HEADER_CLOSE_CODE, value);
        }
        let _ = self.invoke(&live, request).await;
    }
}

/// Close code of a connection whose reader fell too far behind ("try again later").
const SLOW_READER_CLOSE_CODE: u16 = 1013;

/// Close code of a held connection whose function's budget is spent (policy violation).
pub const BUDGET_CLOSE_CODE: u16 = 1008;

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

/// Writes a connection's outgoing messages until it closes; then the close frame, if the
/// socket can still take one. Returns the close code sent.
async fn write_loop(
    mut write: futures::stream::SplitSink<
        WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
        Message,
    >,
    mut out: mpsc::UnboundedReceiver<Message>,
    queued: Arc<AtomicUsize>,
    closer: CancellationToken,
    close_with: Arc<Mutex<Option<(u16, String)>>>,
) -> Option<u16> {
    let mut intact = true;
    loop {
        tokio::select! {
            biased;
            _ = closer.cancelled() => {
                // What was sent before the close goes out first (within CLOSE_WRITE_TIMEOUT),
                // unless the reader is too slow for it: that is why it is closed.
                let slow = matches!(
                    *close_with.lock().unwrap_or_else(|e| e.into_inner()),
                    Some((SLOW_READER_CLOSE_CODE, _))
                );
                if !slow {
                    let flushed = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
                        while let Ok(message) = out.try_recv() {
                            let bytes = message.len();
                            let written = write.send(message).await.is_ok();
                            queued.fetch_sub(bytes, Ordering::AcqRel);
                            if !written {
                                return false;
                            }
                        }
                        true
                    })
                    .await;
                    intact = matches!(flushed, Ok(true));
                }
                break;
            }
            outgoing = out.recv() => {
                let Some(message) = outgoing else { break };
                let bytes = message.len();
                let written = {
                    let send = write.send(message);
                    tokio::pin!(send);
                    tokio::select! {
                        written = &mut send => written.is_ok(),
                        // Closing (a slow reader, say): the frame on its way gets a moment
                        // to finish, so the close frame can follow it; else the socket is
                        // dropped as it is.
                        _ = closer.cancelled() => {
                            match tokio::time::timeout(CLOSE_WRITE_TIMEOUT, &mut send).await {
                                Ok(written) => written.is_ok(),
                                Err(_) => { intact = false; false }
                            }
                        }
                    }
                };
                queued.fetch_sub(bytes, Ordering::AcqRel);
                if !written {
                    break;
                }
            }
        }
    }
    closer.cancel();
    let (code, reason) = close_with
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()?;
    if intact {
        let frame = (!is_reserved_close_code(code)).then(|| CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(reason),
        });
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, write.send(Message::Close(frame))).await;
    }
    Some(code)
}

fn event_request(path: &str, data: Bytes, text: bool) -> Request<Full<Bytes>> {
    let mut request = Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header(header::HOST, "localhost")
        .body(Full::new(data))
        .expect("a path from a request is a valid URI");
    let content_type = if text {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    request
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    request
}

/// The `eddy-websocket` headers and, for message and close events, the CloudEvents ones
/// (`ce-time`: `now_ms`).
fn mark(
    headers: &mut http::HeaderMap,
    event: &'static str,
    id: &str,
    text: Option<bool>,
    now_ms: i64,
) {
    let id_value = HeaderValue::from_str(id).expect("connection ids are hex");
    headers.insert(HEADER_WEBSOCKET, HeaderValue::from_static(event));
    headers.insert(HEADER_CONNECTION_ID, id_value.clone());
    if let Some(text) = text {
        headers.insert(
            HEADER_KIND,
            HeaderValue::from_static(if text { "text" } else { "binary" }),
        );
    }
    if event == "connect" {
        return;
    }
    CloudEvent {
        id: format!("{id}-{}", event_counter()),
        kind: if event == "close" {
            CLOSE_EVENT_TYPE
        } else {
            MESSAGE_EVENT_TYPE
        },
        source: format!("/websockets/{id}"),
        time_ms: now_ms,
        extensions: Vec::new(),
    }
    .insert_headers(headers);
}

fn event_counter() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A new connection id: 64 random bits in hex, so one function cannot guess another's.
fn connection_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
