//! Outgoing HTTP from guests: a per-function allowlist, one pooled client per node, a
//! timeout and a response-size limit.
//!
//! While a guest awaits a response its invocation is a parked future: it holds no OS
//! thread and uses no CPU until bytes arrive.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

use crate::destinations::{DestinationPolicy, GuardedConnector, refusal_in};
use crate::limits::OUTBOUND_REQUESTS_PER_INSTANCE_MAX;
use crate::log::LogPipe;

/// The node's pooled client and the limits every outgoing request runs under.
pub struct OutboundClient {
    client: Client<HttpsConnector<GuardedConnector>, WasiBody>,
    config: OutboundConfig,
    /// Outgoing requests in flight on the node (`requests_in_flight_max`).
    in_flight: Arc<Semaphore>,
}

/// Node-wide settings of outgoing HTTP (see `docs/limits.md`).
#[derive(Clone, Copy, Debug)]
pub struct OutboundConfig {
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest wait for the response head, and between frames of the response body.
    pub timeout: Duration,
    /// Largest response body a guest may receive.
    pub response_bytes_max: u64,
    /// Idle pooled connections kept per upstream host.
    pub idle_connections_per_host_max: usize,
    /// Outgoing requests in flight at once on the node, all functions together (each
    /// holds a connection until its response body is read or dropped).
    pub requests_in_flight_max: usize,
}

impl OutboundClient {
    pub fn new(config: OutboundConfig, destinations: DestinationPolicy) -> OutboundClient {
        let http = GuardedConnector::new(Arc::new(destinations), |http| {
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(config.connect_timeout));
        });
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.idle_connections_per_host_max)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        OutboundClient {
            client,
            config,
            in_flight: Arc::new(Semaphore::new(config.requests_in_flight_max)),
        }
    }

    /// Send an allowed request. Timeouts asked for by the guest apply when shorter than
    /// the node's.
    pub(crate) async fn send(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        permits: InFlight,
        log: LogPipe,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        let shorter = |asked: Option<Duration>| {
            asked.map_or(self.config.timeout, |d| d.min(self.config.timeout))
        };
        let first_byte = shorter(options.and_then(|o| o.first_byte_timeout));
        let uri = request.uri().clone();
        let between_bytes = shorter(options.and_then(|o| o.between_bytes_timeout));
        let response = tokio::time::timeout(first_byte, self.client.request(request))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)?
            .map_err(|e| client_error(e, &uri, &log))?;
        let bytes_max = self.config.response_bytes_max;
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > bytes_max) {
            return Err(HttpError::HttpResponseBodySize(declared));
        }
        Ok(response.map(|body| {
            LimitedResponse {
                inner: body,
                seen_bytes: 0,
                bytes_max,
                between_bytes,
                idle: None,
                _permits: permits,
            }
            .boxed_unsync()
        }))
    }
}

/// Maps a pooled-client failure to the `wasi:http` error code the guest sees; a destination
/// the node refused is also said in the function's log.
fn client_error(
    error: hyper_util::client::legacy::Error,
    uri: &http::Uri,
    log: &LogPipe,
) -> HttpError {
    use std::error::Error as _;
    if let Some(refusal) = refusal_in(&error) {
        log.note(&format!(
            "[eddy: outgoing request to {uri} refused: {refusal}]"
        ));
        return HttpError::DestinationIpProhibited;
    }
    if error.is_connect() {
        let mut source = error.source();
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => HttpError::ConnectionRefused,
                    std::io::ErrorKind::TimedOut => HttpError::ConnectionTimeout,
                    _ => HttpError::InternalError(Some(format!("cannot connect: {io}"))),
                };
            }
            if e.to_string().contains("dns error") {
                return HttpError::DnsError {
                    rcode: Some(e.to_string()),
                    info_code: None,
                };
            }
            source = e.source();
        }
        return HttpError::InternalError(Some(format!("cannot connect: {error}")));
    }
    match error
        .source()
        .and_then(|e| e.downcast_ref::<hyper::Error>())
    {
        Some(e) if e.is_timeout() => HttpError::HttpResponseTimeout,
        Some(e) if e.is_incomplete_message() => HttpError::HttpResponseIncomplete,
        _ => HttpError::InternalError(Some(error.to_string())),
    }
}

/// A response body cut off at the node's size limit and its between-bytes timeout.
struct LimitedResponse {
    inner: hyper::body::Incoming,
    seen_bytes: u64,
    bytes_max: u64,
    between_bytes: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Held until the body is read or dropped.
    _permits: InFlight,
}

/// The slots an outgoing request holds: one of the node's, one of its invocation's.
pub(crate) struct InFlight {
    _node: OwnedSemaphorePermit,
    _invocation: OwnedSemaphorePermit,
}

impl Body for LimitedResponse {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                let between_bytes = this.between_bytes;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(between_bytes)));
                ready!(idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
            }
            Poll::Ready(frame) => {
                this.idle = None;
                let frame = match frame {
                    None => return Poll::Ready(None),
                    Some(Err(e)) => return Poll::Ready(Some(Err(HttpError::from(e)))),
                    Some(Ok(frame)) => frame,
                };
                if let Some(data) = frame.data_ref() {
                    this.seen_bytes += data.len() as u64;
                    if this.seen_bytes > this.bytes_max {
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(
                            this.seen_bytes,
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One entry of a function's outbound allowlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// `http` or `https`; `None` allows both.
    scheme: Option<String>,
    /// Lower-case host; a leading `*.` allows every subdomain; `*` allows every host.
    host: String,
    /// `None`: the scheme's default port; `Some(None)`: any port.
    port: Option<Option<u16>>,
    /// Path prefix (without a trailing `/`); empty allows every path.
    path: String,
}

/// An outbound rule that does not parse: the rule as given and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error(
    "outbound rule `{rule}` is invalid: {why} (expected `*`, `host`, `host:port`, `host:*`, `*.domain` or a URL such as `https://api.example.com`)"
)]
pub struct InvalidAllowRule {
    pub rule: String,
    pub why: &'static str,
}

impl AllowRule {
    /// Parse `*`, `host`, `host:port`, `host:*`, `*.domain`, or a URL
    /// (`https://host[:port][/path]`).
    pub fn parse(text: &str) -> Result<AllowRule, InvalidAllowRule> {
        let bad = |why: &'static str| {
            Err(InvalidAllowRule {
                rule: text.to_string(),
                why,
            })
        };
        let text = text.trim();
        if text == "*" {
            return Ok(AllowRule {
                scheme: None,
                host: "*".into(),
                port: Some(None),
                path: String::new(),
            });
        }
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = scheme.to_ascii_lowercase();
                if scheme != "http" && scheme != "https" {
                    return bad("only http and https URLs can be allowed");
                }
                (Some(scheme), rest)
            }
            None => (None, text),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
            None => (rest, ""),
        };
        // `[v6::addr]:port`, `host:port`, or either without a port.
        let (host, port_text) = match authority.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((v6, "")) => (v6, None),
                Some((v6, tail)) => match tail.strip_prefix(':') {
                    Some(port) => (v6, Some(port)),
                    None => return bad("unexpected text after the IPv6 address"),
                },
                None => return bad("the IPv6 address has no closing `]`"),
            },
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port_text {
            None => None,
            Some("*") => Some(None),
            Some(port) => match port.parse::<u16>() {
                Ok(port) => Some(Some(port)),
                Err(_) => return bad("the port is not a number"),
            },
        };
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if bare.is_empty()
            || bare.contains('*')
            || !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return bad("the host is not a host name or address");
        }
        Ok(AllowRule {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_string(),
        })
    }

    /// Whether this rule allows a request to `uri`.
    fn allows(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        // `http::Uri` keeps the brackets of an IPv6 host; rules hold the bare address.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let scheme = uri.scheme_str().unwrap_or("https");
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        let host_ok = match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == self.host,
        };
        let default_port = if uri.scheme() == Some(&Scheme::HTTP) {
            80
        } else {
            443
        };
        let port = uri.port_u16().unwrap_or(default_port);
        let port_ok = match self.port {
            Some(None) => true,
            Some(Some(allowed)) => port == allowed,
            None => port == default_port,
        };
        let path = uri.path();
        // A path rule is only as good as the path it sees: dot segments or an encoded `.`
        // or `/` could walk out of the prefix once the upstream normalises them.
        let path_ok = self.path.is_empty()
            || (!walks_out(path)
                && (path == self.path
                    || path
                        .strip_prefix(&self.path)
                        .is_some_and(|rest| rest.starts_with('/'))));
        host_ok && port_ok && path_ok
    }
}

/// Whether `path` has a dot segment or an encoded `.`, `/` or `\\`.
fn walks_out(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// The host under which a guest reaches the node's own API (publishing to a queue, ...)
/// with ordinary outgoing HTTP; the node answers without a network hop.
pub const PLATFORM_HOST: &str = "eddy.local";

/// The node's answer to a guest's request to `http://eddy.local/...`. The node knows which
/// function asks (one `Platform` per deployment) and what it may do.
pub trait Platform: Send + Sync {
    fn handle(
        &self,
        request: http::Request<WasiBody>,
    ) -> Pin<Box<dyn Future<Output = http::Response<WasiBody>> + Send>>;
}

/// What one function may reach, and the client it reaches it with.
#[derive(Clone)]
pub struct OutboundPolicy {
    rules: Arc<[AllowRule]>,
    client: Arc<OutboundClient>,
    platform: Option<Arc<dyn Platform>>,
}

/// Outgoing requests one instance may have in flight at once.
pub(crate) fn invocation_slots() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(OUTBOUND_REQUESTS_PER_INSTANCE_MAX))
}

impl OutboundPolicy {
    pub fn new(
        rules: Vec<AllowRule>,
        client: Arc<OutboundClient>,
        platform: Option<Arc<dyn Platform>>,
    ) -> OutboundPolicy {
        OutboundPolicy {
            rules: rules.into(),
            client,
            platform,
        }
    }

    /// Send `request` if a rule allows it; otherwise say so in the function's log and
    /// fail it with `HTTP-request-denied`.
    pub(crate) fn send(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        log: &LogPipe,
        instance_slots: &Arc<Semaphore>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<WasiBody>, HttpError>> + Send>> {
        if request.uri().host() == Some(PLATFORM_HOST) {
            let Some(platform) = &self.platform else {
                return Box::pin(async { Err(HttpError::DestinationNotFound) });
            };
            // The node's own API is outgoing requests too: each holds one of the instance's
            // slots until answered (but no connection, so none of the node's).
            let slot = instance_slot(instance_slots, log, request.uri());
            let answer = slot.map(|slot| (slot, platform.handle(request)));
            return Box::pin(async move {
                let (_slot, answer) = answer?;
                Ok(answer.await)
            });
        }
        let allowed = self.rules.iter().any(|rule| rule.allows(request.uri()));
        let permits = if !allowed {
            log.note(&format!(
                "[eddy: outgoing request to {} denied: not in this function's outbound allowlist; deploy with --allow-outbound {}]",
                request.uri(),
                suggestion(request.uri())
            ));
            Err(HttpError::HttpRequestDenied)
        } else {
            self.slots(instance_slots, log, request.uri())
        };
        let client = self.client.clone();
        let log = log.clone();
        Box::pin(async move { client.send(request, options, permits?, log).await })
    }

    /// A node slot and an instance slot for one outgoing request, or the refusal.
    fn slots(
        &self,
        instance_slots: &Arc<Semaphore>,
        log: &LogPipe,
        uri: &http::Uri,
    ) -> Result<InFlight, HttpError> {
        let invocation = instance_slot(instance_slots, log, uri)?;
        let Ok(node) = self.client.in_flight.clone().try_acquire_owned() else {
            log.note(&format!(
                "[eddy: outgoing request to {uri} refused: the node has {} outgoing requests in flight (limits.outbound_requests_in_flight_max)]",
                self.client.config.requests_in_flight_max
            ));
            return Err(HttpError::ConnectionLimitReached);
        };
        Ok(InFlight {
            _node: node,
            _invocation: invocation,
        })
    }
}

/// One of the instance's slots for an outgoing request to `uri` (to `eddy.local` too), or the
/// refusal, said in the function's log.
fn instance_slot(
    instance_slots: &Arc<Semaphore>,
    log: &LogPipe,
    uri: &http::Uri,
) -> Result<OwnedSemaphorePermit, HttpError> {
    instance_slots.clone().try_acquire_owned().map_err(|_| {
        log.note(&format!(
            "[eddy: outgoing request to {uri} refused: this invocation already has {OUTBOUND_REQUESTS_PER_INSTANCE_MAX} outgoing requests in flight (outbound_requests_per_instance_max)]"
        ));
        HttpError::ConnectionLimitReached
    })
}

/// The narrowest `--allow-outbound` value that would allow `uri`.
fn suggestion(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    match (uri.host(), uri.port_u16()) {
        (Some(host), Some(port)) => format!("{scheme}://{host}:{port}"),
        (Some(host), None) => format!("{scheme}://{host}"),
        _ => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rule: &str, uri: &str) -> bool {
        AllowRule::parse(rule)
            .unwrap()
            .allows(&uri.parse().unwrap())
    }

    #[test]
    fn rules_match_scheme_host_port_and_path() {
        assert!(allows("*", "http://anything.example:1234/x"));
        assert!(allows("api.example.com", "https://api.example.com/v1"));
        assert!(allows("api.example.com", "http://api.example.com/"));
        assert!(!allows("api.example.com", "https://api.example.com:8443/"));
        assert!(!allows("api.example.com", "https://evil.example.com/"));
        assert!(!allows(
            "api.example.com",
            "https://api.example.com.evil.org/"
        ));
        assert!(allows("127.0.0.1:9000", "http://127.0.0.1:9000/slow"));
        assert!(!allows("127.0.0.1:9000", "http://127.0.0.1:9001/slow"));
        assert!(allows("localhost:*", "http://localhost:1/"));
        assert!(allows("*.example.com", "https://a.b.example.com/"));
        assert!(!allows("*.example.com", "https://example.com/"));
        assert!(allows(
            "https://api.example.com",
            "https://API.example.com/"
        ));
        assert!(!allows(
            "https://api.example.com",
            "http://api.example.com/"
        ));
        assert!(allows("http://h:8080/v1", "http://h:8080/v1/items"));
        assert!(!allows("http://h:8080/v1", "http://h:8080/v10"));
        assert!(!allows("http://h:8080/v1", "http://h:8080/v1/../admin"));
        assert!(!allows("http://h:8080/v1", "http://h:8080/v1/%2e%2e/admin"));
        assert!(!allows("http://h:8080/v1", "http://h:8080/v1/a%2F..%2Fb"));
        assert!(allows("[::1]:9000", "http://[::1]:9000/x"));
        assert!(allows("http://[::1]", "http://[::1]/x"));
        assert!(!allows("[::1]:9000", "http://[::1]:9001/x"));
        assert!(!allows("api.example.com", "http://user@evil.example/"));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (rule, why) in [
            ("ftp://x", "only http and https"),
            ("host:port", "not a number"),
            ("", "not a host"),
            ("a*b.com", "not a host"),
            ("ex ample.com", "not a host"),
            ("[::1", "no closing"),
        ] {
            let err = AllowRule::parse(rule).unwrap_err().to_string();
            assert!(err.contains(why), "{rule}: {err}");
        }
    }
}
