//! The admin token: created on first start, only its hash stored, the plain token written
//! to `<state-dir>/admin-token` with mode 0600; or given by the operator in a file.
//!
//! On one node, deleting the file and restarting the node rotates the token. In a cluster
//! the token is the cluster's: the first node creates it once, the others accept it, and
//! no node rotates it by starting.

use std::path::Path;

use eddy_store::TokenStore;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// File name of the plain token inside the state directory.
pub const TOKEN_FILE: &str = "admin-token";

/// The SHA-256 of the admin token, compared in constant time.
pub struct TokenHash(String);

impl TokenHash {
    /// Whether `token` is the admin token.
    pub fn matches(&self, token: &str) -> bool {
        let presented = hash(token);
        presented.len() == self.0.len()
            && presented
                .bytes()
                .zip(self.0.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Where the admin token comes from.
pub struct TokenSource<'a> {
    /// A file holding the token the operator gives: accepted as is, nothing written.
    pub given: Option<&'a Path>,
    /// Whether the store is shared by a cluster: then the token is the cluster's, created
    /// once by the first node and never rotated by a node starting.
    pub shared: bool,
}

/// The admin token's hash: the operator's token if one is given; else the stored one,
/// creating the token (and its file) when there is none. On one node (SQLite), a missing
/// token file also makes a new token: deleting it and restarting rotates the token.
pub async fn admin_token(
    store: &dyn TokenStore,
    state_dir: &Path,
    source: TokenSource<'_>,
) -> anyhow::Result<TokenHash> {
    use anyhow::Context;
    if let Some(given) = source.given {
        let token = std::fs::read_to_string(given)
            .with_context(|| format!("reading the admin token from {}", given.display()))?;
        let token = token.trim();
        anyhow::ensure!(
            token.len() >= GIVEN_TOKEN_BYTES_MIN,
            "the admin token in {} is {} bytes; use at least {GIVEN_TOKEN_BYTES_MIN}",
            given.display(),
            token.len()
        );
        return Ok(TokenHash(hash(token)));
    }
    let path = state_dir.join(TOKEN_FILE);
    let stored = store
        .admin_token_hash()
        .await
        .context("reading the admin token hash")?;
    match stored {
        Some(stored) if source.shared || path.exists() => return Ok(TokenHash(stored)),
        _ => {}
    }
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("eddy_{}", hex::encode(raw));
    let hashed = hash(&token);
    if source.shared {
        // The first node of the cluster stores its token; the others take that one. The
        // file is written before the hash is stored (a token whose hash is stored but that
        // nobody holds would lock everyone out) and kept only by the node whose token won.
        let pending = path.with_extension("pending");
        write_private(&pending, &token)
            .with_context(|| format!("writing the admin token to {}", pending.display()))?;
        let stored = store.init_admin_token_hash(&hashed).await;
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                let _ = std::fs::remove_file(&pending);
                return Err(e).context("storing the admin token hash");
            }
        };
        if !stored {
            let _ = std::fs::remove_file(&pending);
            let theirs = store
                .admin_token_hash()
                .await
                .context("reading the admin token hash")?
                .context("the admin token hash vanished from the store")?;
            return Ok(TokenHash(theirs));
        }
        std::fs::rename(&pending, &path)
            .with_context(|| format!("moving the admin token into {}", path.display()))?;
        tracing::info!(path = %path.display(), "created the cluster's admin token");
        return Ok(TokenHash(hashed));
    }
    write_private(&path, &token)
        .with_context(|| format!("writing the admin token to {}", path.display()))?;
    store
        .set_admin_token_hash(&hashed)
        .await
        .context("storing the admin token hash")?;
    tracing::info!(path = %path.display(), "created a new admin token");
    Ok(TokenHash(hashed))
}

/// Shortest admin token an operator may give (bytes): about 128 bits of hex.
pub const GIVEN_TOKEN_BYTES_MIN: usize = 32;

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Write the token through a new temporary file, mode 0600 from its creation and never
/// through a symlink, then rename it into place.
fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    eddy_runtime::write_new_private(&tmp, format!("{token}\n").as_bytes())?;
    std::fs::rename(&tmp, path)
}

/// The name of the console's session cookie. It holds the token itself: `HttpOnly` (no
/// script reads it), `SameSite=Strict` (no other site's page sends it), `Secure` over TLS.
///
/// Cookies are scoped by host name, not port: a browser sends the admin listener's cookie
/// to the public listener on the same host too. So the ingress takes it out of every
/// request before a function sees it ([`remove_session_cookie`]) and out of every
/// function's response ([`remove_session_set_cookie`]).
pub const SESSION_COOKIE: &str = "eddy_session";

/// The values of the session cookie in the request's `Cookie` headers (a page on the same
/// host name may have set more than one).
pub fn session_cookies(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .collect()
}

/// Takes the session cookie out of the request's `Cookie` headers, keeping every other
/// cookie: a function never sees the token of whoever signed in to the console.
pub fn remove_session_cookie(headers: &mut http::HeaderMap) {
    let is_session = |pair: &str| {
        pair.trim()
            .split_once('=')
            .is_some_and(|(name, _)| name == SESSION_COOKIE)
    };
    rewrite_header(headers, http::header::COOKIE, |value| {
        let text = String::from_utf8_lossy(value.as_bytes());
        if !text.split(';').any(is_session) {
            return Some(value.clone());
        }
        let rest: Vec<&str> = text
            .split(';')
            .filter(|pair| !is_session(pair))
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .collect();
        http::HeaderValue::from_str(&rest.join("; "))
            .ok()
            .filter(|_| !rest.is_empty())
    });
}

/// Takes out of a function's response every `Set-Cookie` that would set the session
/// cookie: a function cannot sign the console in as another token, nor lock it out.
pub fn remove_session_set_cookie(headers: &mut http::HeaderMap) {
    rewrite_header(headers, http::header::SET_COOKIE, |value| {
        // The name is before the first `=` of the part before the first `;`. A browser
        // takes `=eddy_session=x` (no name) as a cookie it sends back as `eddy_session=x`.
        let text = String::from_utf8_lossy(value.as_bytes());
        let pair = text.split(';').next().unwrap_or("").trim();
        let pair = pair.strip_prefix('=').unwrap_or(pair).trim_start();
        let sets_session = pair
            .split_once('=')
            .is_some_and(|(name, _)| name.trim() == SESSION_COOKIE);
        (!sets_session).then(|| value.clone())
    });
}

/// Replaces each value of header `name` by what `keep` makes of it (`None`: dropped), in
/// order. Touches the map only when some value changes: the common request, without the
/// header or with nothing to take out, costs one lookup.
fn rewrite_header(
    headers: &mut http::HeaderMap,
    name: http::header::HeaderName,
    keep: impl Fn(&http::HeaderValue) -> Option<http::HeaderValue>,
) {
    let values: Vec<(http::HeaderValue, Option<http::HeaderValue>)> = headers
        .get_all(&name)
        .iter()
        .map(|value| (value.clone(), keep(value)))
        .collect();
    if values.iter().all(|(was, now)| now.as_ref() == Some(was)) {
        return;
    }
    headers.remove(&name);
    for (_, now) in values {
        if let Some(now) = now {
            headers.append(&name, now);
        }
    }
}

/// Name the bootstrap admin token goes by in the audit trail; no scoped token may take it.
pub const BOOTSTRAP_TOKEN_NAME: &str = "admin";

/// The SHA-256 (hex) of a presented token: how scoped tokens are looked up.
pub fn token_hash(token: &str) -> String {
    hash(token)
}

/// A new random token (`eddy_` and 64 hex digits: 256 bits).
pub fn new_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    format!("eddy_{}", hex::encode(raw))
}

/// What a token may do, as a set of permissions; see `docs/security.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Deployer,
    Reader,
    Publisher,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Deployer, Role::Reader, Role::Publisher];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Reader => "reader",
            Role::Publisher => "publisher",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether the role holds `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        if permission == Session {
            return true;
        }
        match self {
            Role::Admin => true,
            Role::Reader => matches!(
                permission,
                NodesRead | FunctionsRead | QueuesRead | CostRead
            ),
            Role::Deployer => matches!(
                permission,
                NodesRead
                    | FunctionsRead
                    | QueuesRead
                    | CostRead
                    | FunctionsWrite
                    | WebsocketsSend
                    | QueuesWrite
                    | SecretsRead
            ),
            Role::Publisher => matches!(permission, QueuesPublish),
        }
    }
}

/// One thing a control-API route does; every route needs exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// The node, the cluster's nodes and metrics.
    NodesRead,
    /// Functions, versions, logs, stats, WebSocket connections.
    FunctionsRead,
    /// Deploy, roll back and remove functions.
    FunctionsWrite,
    /// Send to a function's WebSocket channels.
    WebsocketsSend,
    /// Queues and their counts.
    QueuesRead,
    /// Create and delete queues, bind consumers, peek, purge, redrive.
    QueuesWrite,
    /// Send messages to queues.
    QueuesPublish,
    /// Cost reports, price sheets and budgets.
    CostRead,
    /// Put and remove price sheets and budgets.
    CostWrite,
    /// Secrets' names, versions and dates.
    SecretsRead,
    /// Set, remove and re-key secrets.
    SecretsWrite,
    /// Create, list and revoke tokens.
    TokensManage,
    /// Read the audit trail.
    AuditRead,
    /// Sign in to the console, see who is signed in, sign out: every role holds it.
    Session,
}

impl Permission {
    pub const ALL: [Permission; 14] = [
        Permission::NodesRead,
        Permission::FunctionsRead,
        Permission::FunctionsWrite,
        Permission::WebsocketsSend,
        Permission::QueuesRead,
        Permission::QueuesWrite,
        Permission::QueuesPublish,
        Permission::CostRead,
        Permission::CostWrite,
        Permission::SecretsRead,
        Permission::SecretsWrite,
        Permission::TokensManage,
        Permission::AuditRead,
        Permission::Session,
    ];

    /// Whether a change made with this permission goes to the audit trail: every change
    /// of state, not the data sent through (messages to queues and WebSockets).
    pub fn audited(self) -> bool {
        !matches!(self, Permission::QueuesPublish | Permission::WebsocketsSend)
    }

    pub fn name(self) -> &'static str {
        match self {
            Permission::NodesRead => "nodes:read",
            Permission::FunctionsRead => "functions:read",
            Permission::FunctionsWrite => "functions:write",
            Permission::WebsocketsSend => "websockets:send",
            Permission::QueuesRead => "queues:read",
            Permission::QueuesWrite => "queues:write",
            Permission::QueuesPublish => "queues:publish",
            Permission::CostRead => "cost:read",
            Permission::CostWrite => "cost:write",
            Permission::SecretsRead => "secrets:read",
            Permission::SecretsWrite => "secrets:write",
            Permission::TokensManage => "tokens:manage",
            Permission::AuditRead => "audit:read",
            Permission::Session => "session",
        }
    }
}

/// Which path parameter, if any, names what a route touches, for tokens scoped to some
/// functions or queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    None,
    /// The `{name}` of the path is a function.
    Function,
    /// The `{name}` of the path is a queue.
    Queue,
}

/// One route of the control API and what it needs.
pub struct RouteRule {
    pub method: &'static str,
    /// The path as the router declares it.
    pub path: &'static str,
    pub permission: Permission,
    pub target: Target,
}

const fn rule(
    method: &'static str,
    path: &'static str,
    permission: Permission,
    target: Target,
) -> RouteRule {
    RouteRule {
        method,
        path,
        permission,
        target,
    }
}

/// Every route of the control API with the permission it needs. A route missing here is
/// refused to every token (the test of each role against each route walks this table, and
/// `docs/api.md` lists it).
pub const ROUTES: &[RouteRule] = {
    use Permission::*;
    use Target::{Function, None, Queue};
    &[
        rule("GET", "/metrics", NodesRead, None),
        rule("GET", "/v1/node", NodesRead, None),
        rule("GET", "/v1/nodes", NodesRead, None),
        rule("GET", "/v1/functions", FunctionsRead, None),
        rule("GET", "/v1/functions/{name}", FunctionsRead, Function),
        rule("DELETE", "/v1/functions/{name}", FunctionsWrite, Function),
        rule(
            "GET",
            "/v1/functions/{name}/versions",
            FunctionsRead,
            Function,
        ),
        rule(
            "POST",
            "/v1/functions/{name}/versions",
            FunctionsWrite,
            Function,
        ),
        rule(
            "POST",
            "/v1/functions/{name}/rollback",
            FunctionsWrite,
            Function,
        ),
        rule("GET", "/v1/functions/{name}/logs", FunctionsRead, Function),
        rule("GET", "/v1/functions/{name}/stats", FunctionsRead, Function),
        rule(
            "GET",
            "/v1/functions/{name}/websockets",
            FunctionsRead,
            Function,
        ),
        rule(
            "POST",
            "/v1/functions/{name}/websockets/channels/{channel}/messages",
            WebsocketsSend,
            Function,
        ),
        rule("GET", "/v1/queues", QueuesRead, None),
        rule("POST", "/v1/queues", QueuesWrite, None),
        rule("GET", "/v1/queues/{name}", QueuesRead, Queue),
        rule("DELETE", "/v1/queues/{name}", QueuesWrite, Queue),
        rule("GET", "/v1/queues/{name}/messages", QueuesWrite, Queue),
        rule("POST", "/v1/queues/{name}/messages", QueuesPublish, Queue),
        rule("POST", "/v1/queues/{name}/batch", QueuesPublish, Queue),
        rule("POST", "/v1/queues/{name}/redrive", QueuesWrite, Queue),
        rule("POST", "/v1/queues/{name}/purge", QueuesWrite, Queue),
        rule("PUT", "/v1/queues/{name}/consumer", QueuesWrite, Queue),
        rule("DELETE", "/v1/queues/{name}/consumer", QueuesWrite, Queue),
        rule("GET", "/v1/cost", CostRead, None),
        rule("GET", "/v1/price-sheets", CostRead, None),
        rule("PUT", "/v1/price-sheets/{name}", CostWrite, None),
        rule("DELETE", "/v1/price-sheets/{name}", CostWrite, None),
        rule("GET", "/v1/budgets", CostRead, None),
        rule("PUT", "/v1/budgets/node", CostWrite, None),
        rule("DELETE", "/v1/budgets/node", CostWrite, None),
        rule("PUT", "/v1/budgets/functions/{name}", CostWrite, None),
        rule("DELETE", "/v1/budgets/functions/{name}", CostWrite, None),
        rule("GET", "/v1/tokens", TokensManage, None),
        rule("POST", "/v1/tokens", TokensManage, None),
        rule("DELETE", "/v1/tokens/{name}", TokensManage, None),
        rule("GET", "/v1/audit", AuditRead, None),
        rule("GET", "/v1/secrets", SecretsRead, None),
        rule("PUT", "/v1/secrets/{name}", SecretsWrite, None),
        rule("DELETE", "/v1/secrets/{name}", SecretsWrite, None),
        rule("POST", "/v1/secrets/rekey", SecretsWrite, None),
        rule("GET", "/v1/session", Session, None),
        rule("POST", "/v1/session", Session, None),
        rule("DELETE", "/v1/session", Session, None),
        rule(
            "GET",
            "/v1/functions/{name}/series",
            FunctionsRead,
            Function,
        ),
        rule(
            "GET",
            "/v1/functions/{name}/logs/stream",
            FunctionsRead,
            Function,
        ),
        rule("GET", "/v1/schedules", FunctionsRead, None),
        rule("GET", "/v1/stats", FunctionsRead, None),
    ]
};

/// The rule of `method` on the declared `path`; `HEAD` is a `GET` without the body.
pub fn rule_of(method: &str, path: &str) -> Option<&'static RouteRule> {
    let method = if method == "HEAD" { "GET" } else { method };
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

/// Who is calling: the token's name, role and scopes.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// Empty: every function.
    pub functions: Vec<String>,
    pub queues: Vec<String>,
    pub secrets: Vec<String>,
}

impl Caller {
    /// The bootstrap admin.
    pub fn bootstrap() -> Caller {
        Caller {
            name: BOOTSTRAP_TOKEN_NAME.to_owned(),
            role: Role::Admin,
            functions: Vec::new(),
            queues: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Why this caller may not use `permission` on `name` (of kind `target`), or `None`.
    pub fn denies(
        &self,
        permission: Permission,
        target: Target,
        name: Option<&str>,
    ) -> Option<String> {
        if !self.role.allows(permission) {
            return Some(format!(
                "token `{}` (role {}) lacks the permission `{}`",
                self.name,
                self.role.name(),
                permission.name()
            ));
        }
        let (scope, kind) = match target {
            Target::None => return None,
            Target::Function => (&self.functions, "function"),
            Target::Queue => (&self.queues, "queue"),
        };
        let Some(name) = name else {
            // Fail closed: a scoped route whose name cannot be read is refused to a
            // scoped token.
            return (!scope.is_empty()).then(|| {
                format!(
                    "token `{}` is scoped to some {kind}s and this request names none",
                    self.name
                )
            });
        };
        self.out_of_scope(scope, kind, name, permission)
    }

    /// Why this caller may not touch function `name` with `permission`, or `None`.
    pub fn denies_function(&self, permission: Permission, name: &str) -> Option<String> {
        self.denies(permission, Target::Function, Some(name))
    }

    /// Why this caller may not touch queue `name` with `permission`, or `None`.
    pub fn denies_queue(&self, permission: Permission, name: &str) -> Option<String> {
        self.denies(permission, Target::Queue, Some(name))
    }

    /// Why this caller may not deploy a function that publishes to `queue` (`*`: any), or
    /// `None`: a function's publish list is held to the token's queue scope.
    pub fn denies_publish_grant(&self, queue: &str) -> Option<String> {
        if queue == "*" && !self.queues.is_empty() {
            return Some(format!(
                "token `{}` is scoped to some queues: it may not deploy a function that publishes to every queue (`*`)",
                self.name
            ));
        }
        self.out_of_scope(&self.queues, "queue", queue, Permission::FunctionsWrite)
    }

    /// Why this caller may not bind secret `name`, or `None`.
    pub fn denies_secret(&self, name: &str) -> Option<String> {
        self.out_of_scope(&self.secrets, "secret", name, Permission::FunctionsWrite)
    }

    fn out_of_scope(
        &self,
        scope: &[String],
        kind: &str,
        name: &str,
        permission: Permission,
    ) -> Option<String> {
        // A queue's own dead-letter queue (`jobs-dlq`) goes with it.
        let owner = (kind == "queue")
            .then(|| name.strip_suffix(eddy_store::queues::DEAD_LETTER_SUFFIX))
            .flatten();
        if scope.is_empty() || scope.iter().any(|s| s == name || Some(s.as_str()) == owner) {
            return None;
        }
        Some(format!(
            "token `{}` has the permission `{}` only for {kind}s {}, not `{name}`",
            self.name,
            permission.name(),
            scope
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Failed authentications per client address, in one-minute windows: past the limit the
/// address is refused unchecked until its window ends. Bounded: at most
/// `AUTH_THROTTLE_ADDRESSES_MAX` addresses are remembered (the oldest windows go first).
#[derive(Default)]
pub struct AuthThrottle {
    failures: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (i64, u32)>>,
}

/// Client addresses the throttle remembers at most.
pub const AUTH_THROTTLE_ADDRESSES_MAX: usize = 10_000;
const THROTTLE_WINDOW_MS: i64 = 60_000;

/// What the throttle counts failures by: an IPv4 address, or an IPv6 address's /64 (one
/// host commonly holds a whole /64 and may rotate through it).
fn client_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
        },
        v4 => v4,
    }
}

impl AuthThrottle {
    /// Milliseconds until `ip` may try again, if it has failed `max` times this window.
    pub fn refused_for_ms(&self, ip: std::net::IpAddr, now_ms: i64, max: u32) -> Option<i64> {
        let ip = client_key(ip);
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = *failures.get(&ip)?;
        let ends = start + THROTTLE_WINDOW_MS;
        (now_ms < ends && count >= max).then_some(ends - now_ms)
    }

    /// Counts one failed authentication from `ip`.
    pub fn failed(&self, ip: std::net::IpAddr, now_ms: i64) {
        let ip = client_key(ip);
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= AUTH_THROTTLE_ADDRESSES_MAX && !failures.contains_key(&ip) {
            failures.retain(|_, (start, _)| now_ms < *start + THROTTLE_WINDOW_MS);
            if failures.len() >= AUTH_THROTTLE_ADDRESSES_MAX {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, (s, _))| *s)
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(ip).or_insert((now_ms, 0));
        if now_ms >= entry.0 + THROTTLE_WINDOW_MS {
            *entry = (now_ms, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_refuses_past_the_limit_until_the_window_ends() {
        let throttle = AuthThrottle::default();
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(throttle.refused_for_ms(ip, 1_000, 3), None);
            throttle.failed(ip, 1_000);
        }
        assert_eq!(throttle.refused_for_ms(ip, 1_500, 3), Some(59_500));
        let other: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(throttle.refused_for_ms(other, 1_500, 3), None);
        assert_eq!(throttle.refused_for_ms(ip, 61_000, 3), None);
        throttle.failed(ip, 61_000);
        assert_eq!(throttle.refused_for_ms(ip, 61_001, 3), None);
        // IPv6 addresses of one /64 count together.
        let a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        for _ in 0..3 {
            throttle.failed(a, 1_000);
        }
        assert!(throttle.refused_for_ms(b, 1_000, 3).is_some());
        assert_eq!(throttle.refused_for_ms(c, 1_000, 3), None);
    }

    #[test]
    fn functions_never_see_nor_set_the_session_cookie() {
        let mut request = http::HeaderMap::new();
        request.append(
            http::header::COOKIE,
            "theme=dark; eddy_session=eddy_abc; lang=fr"
                .parse()
                .unwrap(),
        );
        request.append(
            http::header::COOKIE,
            "eddy_session=eddy_def".parse().unwrap(),
        );
        request.append(http::header::COOKIE, "cart=3".parse().unwrap());
        assert_eq!(session_cookies(&request), ["eddy_abc", "eddy_def"]);
        remove_session_cookie(&mut request);
        let left: Vec<&str> = request
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["theme=dark; lang=fr", "cart=3"]);
        assert!(session_cookies(&request).is_empty());
        // A header that is not UTF-8 still loses it.
        let mut odd = http::HeaderMap::new();
        odd.append(
            http::header::COOKIE,
            http::HeaderValue::from_bytes(b"a=\xff; eddy_session=eddy_x").unwrap(),
        );
        remove_session_cookie(&mut odd);
        let left = String::from_utf8_lossy(odd[http::header::COOKIE].as_bytes()).into_owned();
        assert!(!left.contains("eddy_session"), "{left}");

        let mut response = http::HeaderMap::new();
        response.append(
            http::header::SET_COOKIE,
            "eddy_session=planted; Path=/v1".parse().unwrap(),
        );
        response.append(http::header::SET_COOKIE, "id=1; Path=/".parse().unwrap());
        response.append(
            http::header::SET_COOKIE,
            " eddy_session =x; Path=/".parse().unwrap(),
        );
        response.append(
            http::header::SET_COOKIE,
            "=eddy_session=x; Path=/v1".parse().unwrap(),
        );
        remove_session_set_cookie(&mut response);
        let left: Vec<&str> = response
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["id=1; Path=/"]);
    }

    #[test]
    fn scopes_limit_named_targets_and_roles_limit_permissions() {
        let caller = Caller {
            name: "ci".into(),
            role: Role::Deployer,
            functions: vec!["api".into()],
            queues: Vec::new(),
            secrets: vec!["stripe".into()],
        };
        assert_eq!(
            caller.denies_function(Permission::FunctionsWrite, "api"),
            None
        );
        let denied = caller
            .denies_function(Permission::FunctionsWrite, "web")
            .unwrap();
        assert!(
            denied.contains("functions:write") && denied.contains("`web`"),
            "{denied}"
        );
        assert_eq!(caller.denies_queue(Permission::QueuesWrite, "jobs"), None);
        let queues = Caller {
            queues: vec!["jobs".into()],
            ..caller.clone()
        };
        assert_eq!(
            queues.denies_queue(Permission::QueuesWrite, "jobs-dlq"),
            None
        );
        assert!(
            queues
                .denies_queue(Permission::QueuesWrite, "mail-dlq")
                .is_some()
        );
        assert!(
            queues
                .denies(Permission::QueuesWrite, Target::Queue, None)
                .is_some()
        );
        assert_eq!(
            rule_of("HEAD", "/v1/functions").map(|r| r.permission),
            Some(Permission::FunctionsRead)
        );
        assert!(
            caller
                .denies(Permission::TokensManage, Target::None, None)
                .unwrap()
                .contains("tokens:manage")
        );
        assert_eq!(caller.denies_secret("stripe"), None);
        assert!(caller.denies_secret("db").is_some());
    }
}
