//! Test guest for eddy: the last path segment picks a (mis)behaviour, to exercise host limits.
//!
//! `/<prefix>/echo`, `env`, `log`, `loop`, `alloc`, `trap`, `panic`, `big?bytes=N`,
//! `big-declared?bytes=N`, `half?bytes=N` (sends N bytes of its body, then traps),
//! `sleep?ms=N`, `outgoing[?to=HOST:PORT/PATH]` (GETs `http://HOST:PORT/PATH`, default
//! `example.com/`, and answers with the upstream's status and body or the error it got),
//! `count` (counts requests in module state: 1 on a fresh instance, more on a reused one),
//! `leak` (sends its head and part of its body, then returns without finishing or dropping
//! the body), `hoard?n=N` (leaves N header `fields` handles open, as an interpreter waiting
//! for its garbage collector would, and answers like `count`),
//! `bodies?n=N` (opens N outgoing requests and fills each body's buffer without sending
//! any), `fields?n=N&kb=K` (keeps N header maps of K KiB each),
//! `trailers` (answers with its request's trailers, `name: value` a line),
//! `burst?n=N&queue=Q` (starts N publishes to `eddy.local` at once; answers how many were
//! accepted and how many refused for the per-instance limit),
//! `fake-error` (answers 200 with its own `eddy-error` header),
//! `fresh?mb=N` (checks that it runs in a fresh instance: a static still holds its initial
//! value, and N MiB of newly grown memory read as zeros; then dirties both);
//! `flaky?fail=P&to=HOST:PORT/PATH` (a queue consumer: fails P% of deliveries at random with
//! 500, otherwise GETs `to?id=<ce-id>&attempt=<ce-eddyattempt>` and answers 200 if that
//! answered 200), `publish?queue=Q` (POSTs its body to `http://eddy.local/queues/Q` and
//! answers 200 with the node's `<status> <body>`);
//! `ws` (a WebSocket function, see `websocket`);
//! anything else answers 404.

use std::hint::black_box;
use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use wasi::io::streams::{OutputStream, StreamError};

struct Misbehave;

impl Guest for Misbehave {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query.split_once('?').unwrap_or((&path_with_query, ""));
        let param = |name: &str| -> u64 {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| *key == name)
                .and_then(|(_, value)| value.parse().ok())
                .unwrap_or(0)
        };

        match path.rsplit('/').next().unwrap_or("") {
            "echo" => echo(&request, &path_with_query, out),
            "env" => {
                let mut vars: Vec<(String, String)> = std::env::vars().collect();
                vars.sort();
                let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                respond(out, 200, text.as_bytes());
            }
            "log" => {
                println!("hello stdout");
                eprintln!("hello stderr");
                respond(out, 200, b"logged");
            }
            "nul" => {
                // Output no Postgres TEXT column can hold as is.
                println!("before\0after");
                respond(out, 200, b"logged a NUL");
            }
            "loop" => spin(),
            "alloc" => hog_memory(),
            "trap" => core::arch::wasm32::unreachable(),
            "panic" => panic!("guest panicked on purpose"),
            "big" => big(out, param("bytes"), false),
            "big-declared" => big(out, param("bytes"), true),
            "half" => {
                let bytes = vec![b'h'; param("bytes") as usize];
                send(out, 200, None, |stream| {
                    stream.write_all(&bytes)?;
                    stream.blocking_flush().map_err(std::io::Error::other)?;
                    core::arch::wasm32::unreachable()
                })
            }
            "trailers" => {
                // Reads the body to its end, then answers with the request's trailers.
                let text = trailers(&request);
                respond(out, 200, text.as_bytes());
            }
            "fake-error" => fake_error(out),
            // Cookies for the host name, the console's session cookie among them (the node
            // removes those two) and one of the function's own.
            "set-cookie" => respond_with(
                out,
                200,
                &[
                    ("set-cookie".to_string(), b"eddy_session=planted; Path=/v1".to_vec()),
                    ("set-cookie".to_string(), b"=eddy_session=nameless; Path=/".to_vec()),
                    ("set-cookie".to_string(), b"theme=dark; Path=/".to_vec()),
                ],
                b"cookies",
            ),
            "fresh" => match check_fresh(param("mb")) {
                Ok(()) => respond(out, 200, b"fresh"),
                Err(problem) => respond(out, 500, problem.as_bytes()),
            },
            "sleep" => {
                let ms = param("ms");
                wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, format!("slept {ms} ms").as_bytes());
            }
            "outgoing" => {
                let to = query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("to="))
                    .unwrap_or("example.com/");
                let text = match outgoing_get(to) {
                    Ok((status, body)) => format!("outgoing ok: {status} {body}"),
                    Err(error) => format!("outgoing refused: {error}"),
                };
                respond(out, 200, text.as_bytes());
            }
            "leak" => {
                let response = OutgoingResponse::new(Fields::new());
                let body = response.body().expect("body taken once");
                ResponseOutparam::set(out, Ok(response));
                let stream = body.write().expect("body stream taken once");
                let _ = stream.blocking_write_and_flush(b"partial");
                std::mem::forget(stream);
                std::mem::forget(body);
            }
            "bodies" => {
                // Opens `n` outgoing requests and fills each body's buffer as far as
                // check-write allows, sending none: host memory outside the guest's limit.
                let mut kept = 0;
                for _ in 0..param("n") {
                    let request = OutgoingRequest::new(Fields::new());
                    let Ok(body) = request.body() else { break };
                    let Ok(stream) = body.write() else { break };
                    if let Ok(room) = stream.check_write() {
                        let _ = stream.write(&vec![b'b'; room as usize]);
                    }
                    std::mem::forget((request, body, stream));
                    kept += 1;
                }
                respond(out, 200, format!("{kept} bodies").as_bytes());
            }
            "fields" => {
                // Keeps `n` header maps of `kb` KiB of values each.
                let value = vec![b'f'; 1024];
                let mut kept = 0;
                for _ in 0..param("n") {
                    let fields = Fields::new();
                    for i in 0..param("kb") {
                        if fields.append(&format!("x-{i}"), &value).is_err() {
                            break;
                        }
                    }
                    std::mem::forget(fields);
                    kept += 1;
                }
                respond(out, 200, format!("{kept} fields").as_bytes());
            }
            "burst" => {
                // Starts `n` publishes to `eddy.local/queues/{queue}` at once, then waits for
                // them all: how many were answered 2xx, and how many refused for the limit.
                let queue = query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("queue="))
                    .unwrap_or("jobs")
                    .to_string();
                // Each request's body stays open until all are started, so every one is in
                // flight at once.
                let mut futures = Vec::new();
                let mut bodies = Vec::new();
                for _ in 0..param("n") {
                    let request = OutgoingRequest::new(Fields::new());
                    let _ = request.set_method(&Method::Post);
                    let _ = request.set_scheme(Some(&Scheme::Http));
                    let _ = request.set_authority(Some("eddy.local"));
                    let _ = request.set_path_with_query(Some(&format!("/queues/{queue}")));
                    bodies.push(request.body().expect("body taken once"));
                    futures.push(wasi::http::outgoing_handler::handle(request, None));
                }
                for body in bodies {
                    let _ = OutgoingBody::finish(body, None);
                }
                let (mut ok, mut limited, mut other) = (0, 0, 0);
                for future in futures {
                    let answer = future.and_then(|future| {
                        future.subscribe().block();
                        match future.get() {
                            Some(Ok(Ok(response))) => Ok(response.status()),
                            Some(Ok(Err(e))) => Err(e),
                            _ => Err(wasi::http::types::ErrorCode::InternalError(None)),
                        }
                    });
                    match answer {
                        Ok(status) if (200..300).contains(&status) => ok += 1,
                        Err(wasi::http::types::ErrorCode::ConnectionLimitReached) => limited += 1,
                        _ => other += 1,
                    }
                }
                respond(out, 200, format!("ok {ok} limited {limited} other {other}").as_bytes());
            }
            "hoard" => {
                for _ in 0..param("n") {
                    std::mem::forget(Fields::new());
                }
                let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                respond(out, 200, n.to_string().as_bytes());
            }
            "count" => {
                let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                respond(out, 200, n.to_string().as_bytes());
            }
            "flaky" => {
                // A queue consumer that fails `fail` percent of deliveries at random and
                // reports each success (ce-id, attempt) to `to` before acknowledging it.
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .first()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                let (id, attempt) = (header("ce-id"), header("ce-eddyattempt"));
                let roll = wasi::random::random::get_random_u64() % 100;
                if roll < param("fail") {
                    respond(out, 500, b"failed on purpose");
                    return;
                }
                let to = query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("to="))
                    .unwrap_or("");
                match outgoing_get(&format!("{to}?id={id}&attempt={attempt}")) {
                    Ok((200, _)) => respond(out, 200, b"done"),
                    Ok((status, body)) => respond(out, 502, format!("recorder said {status} {body}").as_bytes()),
                    Err(error) => respond(out, 502, error.as_bytes()),
                }
            }
            "relay" => {
                // POSTs what `echo` would answer to `to` and answers 200 if that did.
                let to = query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("to="))
                    .unwrap_or("")
                    .to_string();
                match outgoing_post(&to, &describe(&request, &path_with_query)) {
                    Ok((200, _)) => respond(out, 200, b"relayed"),
                    Ok((status, body)) => respond(out, 502, format!("{status} {body}").as_bytes()),
                    Err(error) => respond(out, 502, error.as_bytes()),
                }
            }
            "ws" => websocket(&request, query, out),
            "publish" => {
                // Publishes its request body to `queue` through the node's platform API and
                // answers with the node's status and body.
                let queue = query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("queue="))
                    .unwrap_or("")
                    .to_string();
                let body = read_body(&request);
                let text = match outgoing_post(&format!("eddy.local/queues/{queue}"), &body) {
                    Ok((status, body)) => format!("{status} {body}"),
                    Err(error) => format!("refused: {error}"),
                };
                respond(out, 200, text.as_bytes());
            }
            _ => respond(out, 404, b"unknown behaviour"),
        }
    }
}

wasi::http::proxy::export!(Misbehave);

/// Describes the request (method, path, sorted headers) followed by its raw body.
fn echo(request: &IncomingRequest, path_with_query: &str, out: ResponseOutparam) {
    respond(out, 200, &describe(request, path_with_query));
}

/// The request as text: method, path, sorted headers, body size, then the body.
fn describe(request: &IncomingRequest, path_with_query: &str) -> Vec<u8> {
    let method = match request.method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(name) => name,
    };
    let mut headers = request.headers().entries();
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let body = read_body(request);

    let mut text = format!("method: {method}\npath: {path_with_query}\n");
    for (name, value) in headers {
        text += &format!("header: {name}: {}\n", String::from_utf8_lossy(&value));
    }
    text += &format!("body-bytes: {}\nbody:\n", body.len());
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// Reads the whole incoming body through its input stream, until the stream closes.
fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut data = Vec::new();
    let Ok(body) = request.consume() else { return data };
    let stream = body.stream().expect("body stream taken once");
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(error)) => {
                eprintln!("reading request body failed: {}", error.to_debug_string());
                break;
            }
        }
    }
    drop(stream); // the stream is a child of the body: drop it first
    data
}

/// The request's trailers, one `name: value` line each, once its body is read.
fn trailers(request: &IncomingRequest) -> String {
    let Ok(body) = request.consume() else { return "no body".into() };
    let stream = body.stream().expect("body stream taken once");
    while stream.blocking_read(64 * 1024).is_ok() {}
    drop(stream);
    let future = wasi::http::types::IncomingBody::finish(body);
    future.subscribe().block();
    let mut text = String::new();
    if let Some(Ok(Ok(Some(trailers)))) = future.get() {
        for (name, value) in trailers.entries() {
            text += &format!("{name}: {}\n", String::from_utf8_lossy(&value));
        }
    }
    text
}

/// Streams `bytes` bytes of `x` in 64 KiB chunks, optionally declaring the length first.
fn big(out: ResponseOutparam, bytes: u64, declared: bool) {
    let length = declared.then(|| bytes.to_string());
    let chunk = vec![b'x'; 64 * 1024];
    send(out, 200, length.as_deref(), |stream| {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        Ok(())
    });
}

/// Answers 200 with an `eddy-error` header of its own, which the node must not pass on.
fn fake_error(out: ResponseOutparam) {
    let fields = [
        ("content-type".to_string(), b"text/plain".to_vec()),
        ("eddy-error".to_string(), b"timeout_ms".to_vec()),
    ];
    let response = OutgoingResponse::new(Fields::from_list(&fields).expect("valid headers"));
    let body = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("body stream taken once");
    stream.blocking_write_and_flush(b"fine").expect("write");
    drop(stream);
    OutgoingBody::finish(body, None).expect("finish");
}

/// Requests served by this instance (module state that reuse keeps).
static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// `GET http://{to}` (`to` is `host[:port]/path`): the status and body, or the error.
fn outgoing_get(to: &str) -> Result<(u16, String), String> {
    outgoing(to, None)
}

/// `POST http://{to}` with `body`: the status and body, or the error.
fn outgoing_post(to: &str, body: &[u8]) -> Result<(u16, String), String> {
    outgoing(to, Some(body))
}

fn outgoing(to: &str, body: Option<&[u8]>) -> Result<(u16, String), String> {
    let method = if body.is_some() { Method::Post } else { Method::Get };
    outgoing_with(method, to, body, &[])
}

fn outgoing_with(
    method: Method,
    to: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let (authority, path) = match to.find('/') {
        Some(at) => (&to[..at], &to[at..]),
        None => (to, "/"),
    };
    let fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    let request = OutgoingRequest::new(Fields::from_list(&fields).map_err(|e| format!("{e:?}"))?);
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "bad scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "bad authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "bad path")?;
    request.set_method(&method).map_err(|()| "bad method")?;
    let outgoing_body = request.body().map_err(|()| "body taken")?;
    // Send the head first: the body streams to a request already on its way (written
    // before, a body larger than the pipe's buffer would wait forever).
    let future = wasi::http::outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    if let Some(bytes) = body {
        let stream = outgoing_body.write().map_err(|()| "body stream taken")?;
        for chunk in bytes.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| format!("{e:?}"))?;
        }
        drop(stream);
    }
    OutgoingBody::finish(outgoing_body, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(error))) => return Err(format!("{error:?}")),
        Some(Err(())) | None => return Err("no response".to_string()),
    };
    let status = response.status();
    let body = response.consume().map_err(|()| "body taken")?;
    let stream = body.stream().map_err(|()| "stream taken")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading the body: {}", e.to_debug_string()));
            }
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Burns CPU forever; `black_box` keeps the optimiser from removing the loop.
fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates and touches 1 MiB chunks until memory runs out (allocation failure aborts).
fn hog_memory() -> ! {
    let mut chunks = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        chunks.push(black_box(chunk));
    }
}

/// Set by every run of `fresh`: a fresh instance always finds it at zero.
static MARK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Fails if state of an earlier instance is visible: `MARK` already set, or memory grown
/// by `mb` MiB not all zeros. Leaves both dirty for the next instance to check.
fn check_fresh(mb: u64) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    const PAGE_BYTES: usize = 64 * 1024;
    let previous = MARK.swap(0xEDD1, Ordering::Relaxed);
    if previous != 0 {
        return Err(format!("stale: a static holds {previous:#x} from an earlier instance"));
    }
    let pages = (mb as usize) * 1024 * 1024 / PAGE_BYTES;
    if pages == 0 {
        return Ok(());
    }
    let first = core::arch::wasm32::memory_grow(0, pages);
    if first == usize::MAX {
        return Err(format!("could not grow memory by {mb} MiB"));
    }
    // Memory the guest grew itself lies outside the allocator: reading and writing it
    // through a raw pointer touches no Rust object.
    let grown = unsafe {
        core::slice::from_raw_parts_mut((first * PAGE_BYTES) as *mut u8, pages * PAGE_BYTES)
    };
    if let Some(offset) = grown.iter().position(|&byte| byte != 0) {
        return Err(format!("stale: grown memory holds {:#x} at offset {offset}", grown[offset]));
    }
    grown.fill(0xAB);
    Ok(())
}

/// Sends a small text/plain response.
/// A WebSocket function (the node holds the connection; each event is a request):
/// - connect: `refuse=STATUS` refuses with that status; otherwise accepts, joining the
///   comma-separated `channels` and choosing `protocol`;
/// - message `close` closes the connection through eddy.local (code 4000); `join:CH` joins a
///   channel; `broadcast:CH:DATA` sends DATA to channel CH; `flood:N` sends N messages of
///   64 KiB to this connection; anything else is echoed back;
/// - close: prints `closed CODE` and answers 200.
fn websocket(request: &IncomingRequest, query: &str, out: ResponseOutparam) {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let arg = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
            .unwrap_or("")
            .to_string()
    };
    let id = header("eddy-connection-id");
    let me = format!("eddy.local/websockets/connections/{id}");
    match header("eddy-websocket").as_str() {
        "connect" => {
            if let Ok(status) = arg("refuse").parse::<u16>() {
                // `forge=1`: with an `eddy-error` header of its own, which the node removes.
                // `forge=cookie`: setting the console's session cookie, which the node removes.
                let fields = match arg("forge").as_str() {
                    "1" => vec![("eddy-error".to_string(), b"forged".to_vec())],
                    "cookie" => vec![("set-cookie".to_string(), b"eddy_session=planted; Path=/v1".to_vec())],
                    _ => Vec::new(),
                };
                let body = vec![b'r'; arg("bytes").parse().unwrap_or(0)];
                let body = if body.is_empty() { b"refused by the function".to_vec() } else { body };
                return respond_with(out, status, &fields, &body);
            }
            let mut fields = vec![
                ("eddy-websocket-channels".to_string(), arg("channels").into_bytes()),
            ];
            if !arg("protocol").is_empty() {
                fields.push(("eddy-websocket-protocol".to_string(), arg("protocol").into_bytes()));
            }
            respond_with(out, 200, &fields, b"");
        }
        "message" => {
            let body = read_body(request);
            let text = String::from_utf8_lossy(&body).into_owned();
            if text == "close" {
                let _ = outgoing_with(Method::Post, &format!("{me}/close?code=4000&reason=bye"), Some(b""), &[]);
                respond(out, 200, b"");
            } else if let Some(last) = text.strip_prefix("bye:") {
                // A last message, then the close: the client must get both, in order.
                let _ = outgoing_with(Method::Post, &format!("{me}/messages"), Some(last.as_bytes()), &[("eddy-websocket-kind", "text")]);
                let _ = outgoing_with(Method::Post, &format!("{me}/close?code=4000&reason=bye"), Some(b""), &[]);
                respond(out, 200, b"");
            } else if let Some(reason) = text.strip_prefix("close:") {
                let answer = outgoing_with(Method::Post, &format!("{me}/close?code=4000&reason={reason}"), Some(b""), &[]);
                respond(out, 200, format!("close: {answer:?}").as_bytes());
            } else if let Some(n) = text.strip_prefix("big:") {
                respond(out, 200, &vec![b'b'; n.parse().unwrap_or(0)]);
            } else if let Some(rest) = text.strip_prefix("send:") {
                // Sends to connection `id` (perhaps another function's).
                let (id, data) = rest.split_once(':').unwrap_or((rest, ""));
                let answer = outgoing_with(
                    Method::Post,
                    &format!("eddy.local/websockets/connections/{id}/messages"),
                    Some(data.as_bytes()),
                    &[("eddy-websocket-kind", "text")],
                );
                respond(out, 200, format!("send: {answer:?}").as_bytes());
            } else if let Some(id) = text.strip_prefix("closeid:") {
                // Closes connection `id` (perhaps held by another node of a cluster).
                let answer = outgoing_with(
                    Method::Post,
                    &format!("eddy.local/websockets/connections/{id}/close?code=4001&reason=closed%20from%20afar"),
                    Some(b""),
                    &[],
                );
                respond(out, 200, format!("closeid: {answer:?}").as_bytes());
            } else if let Some(rest) = text.strip_prefix("joinid:") {
                // Puts connection `id` (perhaps held by another node) in a channel.
                let (id, channel) = rest.split_once(':').unwrap_or((rest, ""));
                let answer = outgoing_with(
                    Method::Put,
                    &format!("eddy.local/websockets/connections/{id}/channels/{channel}"),
                    Some(b""),
                    &[],
                );
                respond(out, 200, format!("joinid: {answer:?}").as_bytes());
            } else if let Some(channel) = text.strip_prefix("join:") {
                let answer = outgoing_with(Method::Put, &format!("{me}/channels/{channel}"), Some(b""), &[]);
                respond(out, 200, format!("join: {answer:?}").as_bytes());
            } else if let Some(rest) = text.strip_prefix("broadcast:") {
                let (channel, data) = rest.split_once(':').unwrap_or((rest, ""));
                let answer = outgoing_with(
                    Method::Post,
                    &format!("eddy.local/websockets/channels/{channel}/messages"),
                    Some(data.as_bytes()),
                    &[("eddy-websocket-kind", "text")],
                );
                respond(out, 200, format!("broadcast: {answer:?}").as_bytes());
            } else if let Some(n) = text.strip_prefix("flood:") {
                let chunk = vec![b'f'; 64 * 1024];
                let mut sent = 0;
                for _ in 0..n.parse::<u32>().unwrap_or(0) {
                    match outgoing_with(Method::Post, &format!("{me}/messages"), Some(&chunk), &[]) {
                        Ok((200 | 202, _)) => sent += 1,
                        _ => break,
                    }
                }
                respond(out, 200, format!("flooded {sent}").as_bytes());
            } else {
                respond(out, 200, &body);
            }
        }
        "close" => {
            // Into the invocation's log, where tests look for it.
            println!("closed {}", header("eddy-websocket-close-code"));
            respond(out, 200, b"");
        }
        _ => respond(out, 200, b""),
    }
}

fn respond_with(out: ResponseOutparam, status: u16, fields: &[(String, Vec<u8>)], body: &[u8]) {
    let response = OutgoingResponse::new(Fields::from_list(fields).expect("valid headers"));
    response.set_status_code(status).expect("valid status");
    let outgoing = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("body stream taken once");
    for chunk in body.chunks(4096) {
        if stream.blocking_write_and_flush(chunk).is_err() {
            break;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    send(out, status, None, |stream| stream.write_all(body));
}

/// Sends the response head (text/plain, optional content-length), then streams the body.
fn send(
    out: ResponseOutparam,
    status: u16,
    content_length: Option<&str>,
    write: impl FnOnce(&mut OutputStream) -> std::io::Result<()>,
) {
    let mut fields = vec![("content-type".to_string(), b"text/plain".to_vec())];
    if let Some(length) = content_length {
        fields.push(("content-length".to_string(), length.as_bytes().to_vec()));
    }
    let response = OutgoingResponse::new(Fields::from_list(&fields).expect("valid headers"));
    response.set_status_code(status).expect("valid status");
    let body = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));

    let mut stream = body.write().expect("body stream taken once");
    // If the client has gone away there is nobody left to tell: stop without finishing.
    if write(&mut stream).is_ok() && stream.blocking_flush().is_ok() {
        drop(stream); // the stream is a child of the body: drop it before finishing
        let _ = OutgoingBody::finish(body, None);
    }
}
