//! The WebSocket server: the upgrade (the connect event), each connection's reader and
//! writer tasks, and the message and close events, each an invocation through the
//! pipeline. The connections themselves are held in `Sockets` (`mod.rs`).

use super::*;

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
                opened_at_ms: self.invoker.parts().clock.now_ms(),
            },
        );
        self.invoker.parts().meter.websocket_opened(&function);
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
            .map_err(|refusal| refusal.response(self.invoker.parts().clock.now_ms()))?;
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
            self.invoker.parts().meter.websocket_closed(
                function,
                self.invoker.parts().clock.now_ms(),
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
            self.invoker.parts().clock.now_ms(),
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
            self.invoker.parts().clock.now_ms(),
        );
        if let Ok(value) = HeaderValue::from_str(&code.to_string()) {
            request.headers_mut().insert(HEADER_CLOSE_CODE, value);
        }
        let _ = self.invoke(&live, request).await;
    }
}

/// Close code of a held connection whose function's budget is spent (policy violation).
pub const BUDGET_CLOSE_CODE: u16 = 1008;

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
