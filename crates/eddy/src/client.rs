//! The control API client: the one place that knows the node's address, the admin token, the
//! time limits, and how HTTP failures become one-line `what is wrong — what to do` errors.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::multipart::Form;
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ErrorBody;

/// Name of the file in the state directory where a node writes its admin token.
const TOKEN_FILE: &str = "admin-token";

/// A node on the same machine or network accepts in milliseconds; waiting longer only delays
/// the "cannot reach" error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Limit for calls that only read or change the node's registry (list, remove, rollback).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Limit for a deploy, which uploads the component and waits while the node compiles it to
/// machine code; a large component over a slow link can take minutes.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Time a long poll gets beyond the wait it asked the node for, so a node that answers a little
/// late is not mistaken for one that is gone.
const LONG_POLL_SLACK: Duration = Duration::from_secs(10);

/// Largest response body read. The biggest legitimate answer, a full page of 1000 log entries
/// with their captured output, stays far below this; a runaway peer does not get to fill memory.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How much of a non-JSON error body is shown: enough to recognise a proxy's error page
/// without flooding the terminal.
const ERROR_BODY_CHARS_MAX: usize = 200;

/// The state directory of a node started in `start` or a directory above it (`eddy serve`
/// and `scripts/demo` keep it in `./.eddy`): the nearest `<dir>/<name>` holding an admin
/// token. So `eddy deploy` in a function project made inside the directory the node runs
/// from finds the node's token, as git finds `.git`.
pub fn find_state_dir(start: &Path, name: &Path) -> Option<PathBuf> {
    let start = std::path::absolute(start).ok()?;
    start
        .ancestors()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.join(TOKEN_FILE).is_file())
}

/// Returns the admin token: the one given with `--token`/`EDDY_TOKEN`, else the one the node
/// wrote to `<state_dir>/admin-token`.
pub fn resolve_token(given: Option<String>, state_dir: &Path) -> Result<String> {
    if let Some(token) = given
        .as_deref()
        .map(str::trim)
        .filter(|token| !token.is_empty())
    {
        return Ok(token.to_owned());
    }
    let path = state_dir.join(TOKEN_FILE);
    let contents = match std::fs::read_to_string(&path) {
        Ok(contents) => contents,
        Err(err) if err.kind() == io::ErrorKind::NotFound => bail!(
            "no admin token: {} does not exist — pass --token or EDDY_TOKEN, or --state-dir of the node",
            path.display()
        ),
        Err(err) => bail!(
            "cannot read the admin token from {}: {err} — pass --token or EDDY_TOKEN, or run as the user that runs the node",
            path.display()
        ),
    };
    let token = contents.trim();
    if token.is_empty() {
        bail!(
            "the admin token file {} is empty — pass --token or EDDY_TOKEN, or --state-dir of the node",
            path.display()
        );
    }
    Ok(token.to_owned())
}

/// A client of one node's control API. Every call sends the bearer token, has a time limit, and
/// decodes the JSON answer into `T` (use `serde_json::Value` to keep it as sent).
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
    state_dir: PathBuf,
}

impl Client {
    /// `base` is the `--server` URL; `state_dir` is only used to point at the token file when
    /// the node refuses the token.
    pub fn new(
        base: Url,
        token: String,
        state_dir: PathBuf,
        ca_cert: Option<&Path>,
    ) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("eddy-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("--ca-cert {} holds no PEM certificate", path.display())
            })?;
            if certificates.is_empty() {
                bail!("--ca-cert {} holds no PEM certificate", path.display());
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .context("cannot set up the HTTP client — this is a bug in eddy")?;
        Ok(Self {
            http,
            base,
            token,
            state_dir,
        })
    }

    /// `GET` the path made of `segments` (each percent-encoded), with `query` parameters.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T> {
        self.get_within(segments, query, REQUEST_TIMEOUT).await
    }

    /// `GET` that the node may hold open for up to `wait` before answering (long poll).
    pub async fn long_poll<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        wait: Duration,
    ) -> Result<T> {
        self.get_within(segments, query, wait + LONG_POLL_SLACK)
            .await
    }

    /// `GET` something that may not exist: `None` when the node answers 404 with the error code
    /// `missing_code` (a 404 from anything else, such as a proxy, stays an error).
    pub async fn get_unless_missing<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        missing_code: &str,
    ) -> Result<Option<T>> {
        let request = self.http.get(self.url(segments)).timeout(REQUEST_TIMEOUT);
        let (status, body) = self.exchange(request).await?;
        if status == StatusCode::NOT_FOUND
            && serde_json::from_slice::<ErrorBody>(&body)
                .is_ok_and(|ErrorBody { error }| error.code == missing_code)
        {
            return Ok(None);
        }
        self.decode(status, &body).map(Some)
    }

    /// Print a listing: the node's JSON as it came with `--json`, otherwise `render`'s table.
    pub async fn print_listing<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        json: bool,
        render: impl FnOnce(T) -> String,
    ) -> Result<()> {
        let output = if json {
            serde_json::to_string_pretty(&self.get::<serde_json::Value>(segments, query).await?)?
                + "\n"
        } else {
            render(self.get::<T>(segments, query).await?)
        };
        std::io::Write::write_all(&mut std::io::stdout(), output.as_bytes())?;
        Ok(())
    }

    async fn get_within<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        timeout: Duration,
    ) -> Result<T> {
        let request = self
            .http
            .get(self.url(segments))
            .query(query)
            .timeout(timeout);
        self.send(request).await
    }

    /// `POST` a JSON body.
    pub async fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T> {
        self.send_json(reqwest::Method::POST, segments, body).await
    }

    /// `PUT` a JSON body.
    pub async fn put<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T> {
        self.send_json(reqwest::Method::PUT, segments, body).await
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T> {
        let request = self
            .http
            .request(method, self.url(segments))
            .json(body)
            .timeout(REQUEST_TIMEOUT);
        self.send(request).await
    }

    /// `POST` `body` as it is, with `query` parameters and `headers` (such as
    /// `content-type`), checked by the caller to be valid header values.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<T> {
        self.send_bytes(reqwest::Method::POST, segments, query, body, headers)
            .await
    }

    /// `PUT` `body` as it is, like `post_bytes`.
    pub async fn put_bytes<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<T> {
        self.send_bytes(reqwest::Method::PUT, segments, &[], body, headers)
            .await
    }

    async fn send_bytes<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<T> {
        let request = headers.iter().fold(
            self.http
                .request(method, self.url(segments))
                .query(query)
                .body(body)
                .timeout(REQUEST_TIMEOUT),
            |request, (name, value)| request.header(*name, *value),
        );
        self.send(request).await
    }

    /// `POST` a deploy: a multipart upload followed by compilation on the node.
    pub async fn post_deploy<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        form: Form,
    ) -> Result<T> {
        let request = self
            .http
            .post(self.url(segments))
            .multipart(form)
            .timeout(DEPLOY_TIMEOUT);
        self.send(request).await
    }

    /// `DELETE`; use `T = ()` for a `204 No Content` answer.
    pub async fn delete<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T> {
        let request = self
            .http
            .delete(self.url(segments))
            .timeout(REQUEST_TIMEOUT);
        self.send(request).await
    }

    /// The `--server` URL as the user would write it, for messages.
    fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Appends `segments` to the base URL's path, so a node behind a path-prefixing proxy
    /// (`http://gateway/eddy`) works and a function name can never rewrite the path.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("--server was checked to be an http URL, which always has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let (status, body) = self.exchange(request).await?;
        self.decode(status, &body)
    }

    /// Sends `request` with the token and reads the whole answer, within the size limit.
    async fn exchange(&self, request: RequestBuilder) -> Result<(StatusCode, Vec<u8>)> {
        let mut response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|err| self.transport_error(&err))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| self.transport_error(&err))?
        {
            if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
                bail!(
                    "the control API at {} sent more than {} — is --server pointing at an eddy node's control API?",
                    self.server(),
                    bytesize::ByteSize(RESPONSE_BYTES_MAX as u64)
                );
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    /// The JSON answer as `T`, or the one-line error for a non-2xx status. A `204 No Content`
    /// reads as JSON `null`, which is what `()` expects.
    fn decode<T: DeserializeOwned>(&self, status: StatusCode, body: &[u8]) -> Result<T> {
        if !status.is_success() {
            bail!(status_error_message(status, body, &self.state_dir));
        }
        let body = if status == StatusCode::NO_CONTENT {
            &b"null"[..]
        } else {
            body
        };
        serde_json::from_slice(body).map_err(|err| {
            anyhow!(
                "the control API at {} sent an answer this eddy cannot read ({err}) — is --server pointing at an eddy node's control API, and are the CLI and node the same version?",
                self.server()
            )
        })
    }

    fn transport_error(&self, err: &reqwest::Error) -> anyhow::Error {
        let server = self.server();
        let chain = error_chain(err);
        if chain.contains("certificate") || chain.contains("InvalidCertificate") {
            return anyhow!(
                "the control API at {server} presented a certificate this CLI does not trust ({chain}) — pass --ca-cert FILE (or EDDY_CA_CERT) with the node's CA or its self-signed certificate"
            );
        }
        if err.is_connect() {
            anyhow!(
                "cannot reach the eddy control API at {server} — is `eddy serve` running? (set --server or EDDY_SERVER)"
            )
        } else if err.is_timeout() {
            anyhow!(
                "the eddy control API at {server} did not answer in time — check the node's log, or that --server points at its control API"
            )
        } else {
            anyhow!(
                "talking to the eddy control API at {server} failed: {} — is --server pointing at an eddy node's control API?",
                error_chain(err)
            )
        }
    }
}

/// The message for a non-2xx answer: the node's own message when it sent its JSON error,
/// otherwise the status and the start of the body.
fn status_error_message(status: StatusCode, body: &[u8], state_dir: &Path) -> String {
    if status == StatusCode::UNAUTHORIZED
        && let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body)
        && error.message.contains("expired")
    {
        return error.message;
    }
    if status == StatusCode::UNAUTHORIZED {
        return format!(
            "the control API refused the token — pass --token or EDDY_TOKEN, or check {}",
            state_dir.join(TOKEN_FILE).display()
        );
    }
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return if error.message.trim().is_empty() {
            error.code
        } else {
            error.message
        };
    }
    let text = String::from_utf8_lossy(body);
    let start: String = text.trim().chars().take(ERROR_BODY_CHARS_MAX).collect();
    if start.is_empty() {
        format!("control API answered {status}")
    } else {
        format!("control API answered {status}: {start}")
    }
}

/// `err` and its causes, joined: reqwest's top-level message alone ("error sending request")
/// hides the reason.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_dir_is_found_in_a_directory_above() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join(".eddy");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join(TOKEN_FILE), "t").unwrap();
        let deep = root.path().join("functions/hello");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(
            find_state_dir(&deep, Path::new(".eddy")),
            Some(state.clone())
        );
        assert_eq!(find_state_dir(root.path(), Path::new(".eddy")), Some(state));
        // A .eddy without a token (a node that never started there) is not it.
        std::fs::create_dir_all(deep.join(".eddy")).unwrap();
        assert_eq!(
            find_state_dir(&deep, Path::new(".eddy")),
            Some(root.path().join(".eddy"))
        );
    }

    fn message(status: u16, body: &str) -> String {
        let status = StatusCode::from_u16(status).unwrap();
        status_error_message(status, body.as_bytes(), Path::new("/var/lib/eddy"))
    }

    #[test]
    fn api_errors_show_the_nodes_message() {
        let body = r#"{"error": {"code": "route_taken", "message": "route /hello is already served by function `hello`; choose another --route or remove `hello` first"}}"#;
        assert_eq!(
            message(409, body),
            "route /hello is already served by function `hello`; choose another --route or remove `hello` first"
        );
    }

    #[test]
    fn unauthorized_points_at_the_token_file() {
        let body =
            r#"{"error": {"code": "unauthorized", "message": "missing or wrong bearer token"}}"#;
        assert_eq!(
            message(401, body),
            "the control API refused the token — pass --token or EDDY_TOKEN, or check /var/lib/eddy/admin-token"
        );
    }

    #[test]
    fn non_json_errors_show_status_and_the_start_of_the_body() {
        assert_eq!(
            message(502, "<html>bad gateway</html>\n"),
            "control API answered 502 Bad Gateway: <html>bad gateway</html>"
        );
        assert_eq!(message(404, ""), "control API answered 404 Not Found");
        let long = "x".repeat(1000);
        let shown = message(500, &long);
        assert_eq!(
            shown.len(),
            "control API answered 500 Internal Server Error: ".len() + 200
        );
    }

    #[test]
    fn token_comes_from_the_flag_then_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_token(Some("given".into()), dir.path()).unwrap(),
            "given"
        );

        let missing = resolve_token(None, dir.path()).unwrap_err().to_string();
        assert!(missing.starts_with("no admin token: "), "{missing}");
        assert!(missing.contains("admin-token does not exist"), "{missing}");

        std::fs::write(dir.path().join("admin-token"), "  secret\n").unwrap();
        assert_eq!(resolve_token(None, dir.path()).unwrap(), "secret");
        assert_eq!(
            resolve_token(Some(String::new()), dir.path()).unwrap(),
            "secret"
        );
    }

    #[test]
    fn names_are_path_segments_not_paths() {
        let base = Url::parse("http://node:8081/eddy/").unwrap();
        let client = Client::new(base, "t".into(), PathBuf::new(), None).unwrap();
        assert_eq!(
            client.url(&["v1", "functions", "a/../b?x"]).as_str(),
            "http://node:8081/eddy/v1/functions/a%2F..%2Fb%3Fx"
        );
    }
}
