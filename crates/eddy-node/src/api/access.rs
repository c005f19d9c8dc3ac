//! Access to the control API: who the bearer token is, whether its role and scopes allow the
//! route (each route's permission is declared once, in `auth::ROUTES`), the slowdown of
//! clients that keep failing to authenticate, the audit trail of every change, and the
//! routes that manage tokens and read the trail. The model is `docs/security.md`.

use std::net::{IpAddr, Ipv4Addr};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use eddy_parse::api::{AuditQuery, CreateToken};
use eddy_parse::responses::{
    AuditEntry, AuditPage, ErrorBody, SessionInfo, TokenCreated, TokenInfo, TokenList,
};
use eddy_store::{NewAuditEntry, StoreError, TokenRecord};

use super::{ApiState, rfc3339};
use crate::auth::{
    BOOTSTRAP_TOKEN_NAME, Caller, Role, SESSION_COOKIE, Target, new_token, rule_of,
    session_cookies, token_hash,
};
use crate::error::ApiError;

/// How often a token's last use is written at most (milliseconds): `eddy token ls` shows
/// it to the minute, and a busy pipeline does not write on every call.
const TOKEN_TOUCH_INTERVAL_MS: i64 = 60_000;
/// Entries returned by one `GET /v1/audit` at most.
const AUDIT_ENTRIES_PER_CALL_MAX: usize = 1000;
/// Most of an error answer read to record its message in the audit trail.
const AUDIT_ERROR_BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest message kept in an audit entry's outcome.
const AUDIT_OUTCOME_CHARS_MAX: usize = 500;

/// The token and audit routes, merged under `/v1`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{name}", delete(remove_token))
        .route("/audit", get(audit))
        .route("/session", get(session).post(sign_in).delete(sign_out))
}

/// Every request of the control API passes here first, routed or not (so an unknown path
/// or method reveals nothing without a token): slow down a client that keeps failing,
/// find who the bearer token is, and hand the [`Caller`] on.
pub async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let now_ms = state.parts.clock.now_ms();
    let ip = client_ip(&request);
    let max = state.limits.auth_failures_per_minute_max;
    if let Some(wait_ms) = state.throttle.refused_for_ms(ip, now_ms, max) {
        let seconds = (wait_ms + 999) / 1000;
        let mut answer = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "auth_throttled",
            format!(
                "{ip} failed to authenticate {max} times this minute (limits.auth_failures_per_minute_max); retry in {seconds} s"
            ),
        )
        .into_response();
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return answer;
    }
    // The bearer token, else the console's session cookie.
    let bearer = bearer(request.headers()).map(str::to_owned);
    let by_cookie = bearer.is_none();
    let presented = match bearer {
        Some(token) => token,
        None => {
            let mut cookies = session_cookies(request.headers());
            if cookies.len() > 1 {
                // Another page on this host name set one (cookies are not kept apart by
                // port): which is the console's cannot be told.
                let answer = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    format!(
                        "{} `{SESSION_COOKIE}` cookies came with this request: a page on this host name set one beside the console's; sign in again, and serve the admin listener under a host name of its own",
                        cookies.len()
                    ),
                )
                .into_response();
                return signed_out(answer, state.tls);
            }
            cookies.pop().unwrap_or_default()
        }
    };
    match identify(&state, &presented, now_ms).await {
        Ok(caller) => {
            if by_cookie
                && is_change(request.method())
                && let Some(reason) = cross_site(request.headers())
            {
                let described = describe(&request);
                tracing::warn!(%ip, request = %described, token = %caller.name, "refused a cookie-signed change: {reason}");
                let answer = ApiError::new(StatusCode::FORBIDDEN, "cross_site_request", reason)
                    .into_response();
                return record(&state, &caller.name, ip, &described, "-", now_ms, answer).await;
            }
            request.extensions_mut().insert(caller);
            request.extensions_mut().insert(Presented(presented));
            next.run(request).await
        }
        Err(refused) => {
            let described = describe(&request);
            if refused.status == StatusCode::UNAUTHORIZED {
                state.throttle.failed(ip, now_ms);
                tracing::warn!(%ip, request = %described, "refused a control API call: {}", refused.message);
            }
            let mut answer = refused.into_response();
            if by_cookie && !presented.is_empty() && answer.status() == StatusCode::UNAUTHORIZED {
                // A cookie that no longer signs in (its token was revoked or expired) is
                // cleared, so the browser stops presenting it.
                answer = signed_out(answer, state.tls);
            }
            if is_change(request.method()) {
                return record(&state, "-", ip, &described, "-", now_ms, answer).await;
            }
            answer
        }
    }
}

/// Then every routed request: check the route's declared permission and the token's scope,
/// run it, and record a change in the audit trail.
pub async fn authorize(
    State(state): State<ApiState>,
    matched: Option<MatchedPath>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let now_ms = state.parts.clock.now_ms();
    let ip = client_ip(&request);
    let method = request.method().clone();
    let described = describe(&request);
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let rule = matched
        .as_ref()
        .and_then(|m| rule_of(method.as_str(), m.as_str()));
    let Some(rule) = rule else {
        // Fail closed: a route added without a declared permission serves nobody.
        return ApiError::forbidden(format!(
            "{described} declares no permission; this is a bug in eddy"
        ))
        .into_response();
    };
    let name = params.as_ref().ok().and_then(|params| {
        params
            .iter()
            .find(|(key, _)| *key == "name")
            .map(|(_, value)| value.to_owned())
    });
    let action = rule.permission.name();
    let denied = caller.denies(
        rule.permission,
        rule.target,
        name.as_deref().filter(|_| rule.target != Target::None),
    );
    if !(is_change(&method) && rule.permission.audited()) {
        return match denied {
            Some(reason) => ApiError::forbidden(reason).into_response(),
            None => next.run(request).await,
        };
    }
    // A change runs to its end and into the audit trail in a task of its own: a client
    // that disconnects cannot make a change happen unrecorded.
    let changes = state.changes.clone();
    let recorder = (state.clone(), caller.name.clone(), described.clone());
    let run = async move {
        let answer = match denied {
            Some(reason) => ApiError::forbidden(reason).into_response(),
            None => next.run(request).await,
        };
        record(&state, &caller.name, ip, &described, action, now_ms, answer).await
    };
    match changes.spawn(run).await {
        Ok(answer) => answer,
        Err(e) => {
            // The handler panicked: still recorded, as failed.
            let (state, token, described) = recorder;
            let answer = ApiError::internal("a control API change failed", e).into_response();
            record(&state, &token, ip, &described, action, now_ms, answer).await
        }
    }
}

/// The header every change signed in by the session cookie must carry. A page of another
/// site can send it only with the node's CORS consent, which the node never gives.
pub const CONSOLE_HEADER: &str = "x-eddy-console";

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Why a change signed in by the session cookie may have been sent by another site's page
/// (CSRF), or `None`: it must carry the console's header, and what the browser says of its
/// origin (`Origin`, `Sec-Fetch-Site`) must be this node.
fn cross_site(headers: &axum::http::HeaderMap) -> Option<String> {
    if headers.get(CONSOLE_HEADER).is_none_or(|v| v != "1") {
        return Some(format!(
            "a change signed in with the console's session cookie must carry the header `{CONSOLE_HEADER}: 1` (the console sends it; another site's page cannot); scripts and the CLI use `authorization: Bearer <token>`"
        ));
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && site != "same-origin"
    {
        return Some(format!(
            "the browser says this change came from a {} page; the console's session signs only the console's own changes",
            site.to_str().unwrap_or("foreign")
        ));
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| authority);
        if authority.is_none() || authority != host {
            return Some(format!(
                "the change came from origin `{}`, not this node's `{}`",
                origin.to_str().unwrap_or("?"),
                host.unwrap_or("?")
            ));
        }
    }
    None
}

/// `GET /v1/session`: who is signed in, with what permissions (the console shows only the
/// actions they allow).
async fn session(axum::Extension(caller): axum::Extension<Caller>) -> Json<SessionInfo> {
    Json(session_info(caller))
}

fn session_info(caller: Caller) -> SessionInfo {
    SessionInfo {
        permissions: crate::auth::Permission::ALL
            .into_iter()
            .filter(|p| caller.role.allows(*p))
            .map(|p| p.name().to_owned())
            .collect(),
        name: caller.name,
        role: caller.role.name().to_owned(),
        functions: caller.functions,
        queues: caller.queues,
        secrets: caller.secrets,
    }
}

/// `POST /v1/session` with `authorization: Bearer <token>`: the answer sets the session
/// cookie holding that token.
async fn sign_in(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return ApiError::bad_request(
            "sign in with the token in `authorization: Bearer <token>`; the session cookie cannot open another session",
        )
        .into_response();
    };
    // RFC 6265's cookie-octet: what a cookie value may hold. Tokens the node makes always
    // fit; an operator's own admin token (`--admin-token-file`) may not.
    let fits = token
        .bytes()
        .all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E));
    let cookie = session_cookie(token, "", state.tls).filter(|_| fits);
    let Some(cookie) = cookie else {
        return ApiError::bad_request(
            "this token holds characters a cookie cannot carry (a space, `\"`, `,`, `;` or `\\`): the console cannot keep it; use the API with `authorization: Bearer`, or give the node a token of letters and digits",
        )
        .into_response();
    };
    let mut answer = Json(session_info(caller)).into_response();
    answer.headers_mut().insert(header::SET_COOKIE, cookie);
    answer
}

/// `DELETE /v1/session`: the answer clears the session cookie.
async fn sign_out(State(state): State<ApiState>) -> Response {
    signed_out(StatusCode::NO_CONTENT.into_response(), state.tls)
}

/// `answer`, clearing the session cookie.
fn signed_out(mut answer: Response, tls: bool) -> Response {
    if let Some(cookie) = session_cookie("", "; Max-Age=0", tls) {
        answer.headers_mut().append(header::SET_COOKIE, cookie);
    }
    answer
}

/// The `Set-Cookie` value of the session cookie holding `value`.
fn session_cookie(value: &str, attributes: &str, tls: bool) -> Option<HeaderValue> {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/{attributes}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// `METHOD /path` as the client sent it (the router strips `/v1` before the middleware).
fn describe(request: &Request) -> String {
    let path = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or(request.uri().path(), |uri| uri.0.path());
    format!("{} {path}", request.method())
}

fn is_change(method: &Method) -> bool {
    method != Method::GET && method != Method::HEAD
}

fn client_ip(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<crate::listener::Peer>()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.ip())
}

/// The token a call was authenticated with, for a call that lasts (a live log stream) to
/// check that it still signs in.
#[derive(Clone)]
pub struct Presented(pub String);

/// Who `presented` is: the bootstrap admin, or a stored token that has not expired.
pub(super) async fn identify(
    state: &ApiState,
    presented: &str,
    now_ms: i64,
) -> Result<Caller, ApiError> {
    if presented.is_empty() {
        return Err(ApiError::unauthorized());
    }
    if state.token.matches(presented) {
        return Ok(Caller::bootstrap());
    }
    let Some(token) = state
        .parts
        .stores
        .access
        .token_by_hash(&token_hash(presented))
        .await?
    else {
        return Err(ApiError::unauthorized());
    };
    if let Some(expired) = token.expires_at_ms.filter(|at| *at <= now_ms) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "token `{}` expired at {}; ask an admin for a new one (`eddy token create`)",
                token.name,
                rfc3339(expired)
            ),
        ));
    }
    let Some(role) = Role::parse(&token.role) else {
        return Err(ApiError::internal(
            "a stored token has an unknown role",
            format!("token `{}` has role `{}`", token.name, token.role),
        ));
    };
    if token
        .last_used_at_ms
        .is_none_or(|at| now_ms - at >= TOKEN_TOUCH_INTERVAL_MS)
    {
        let access = state.parts.stores.access.clone();
        let name = token.name.clone();
        tokio::spawn(async move {
            if let Err(e) = access.touch_token(&name, now_ms).await {
                tracing::debug!(error = %e, token = %name, "could not record a token's last use");
            }
        });
    }
    Ok(Caller {
        name: token.name,
        role,
        functions: token.functions,
        queues: token.queues,
        secrets: token.secrets,
    })
}

/// Appends the change `answer` answered to the audit trail, then returns `answer`.
async fn record(
    state: &ApiState,
    token: &str,
    ip: IpAddr,
    request: &str,
    action: &str,
    at_ms: i64,
    answer: Response,
) -> Response {
    let status = answer.status();
    let (answer, outcome) = if status.is_success() {
        (answer, "ok".to_owned())
    } else {
        let (mut parts, body) = answer.into_parts();
        let bytes = match axum::body::to_bytes(body, AUDIT_ERROR_BODY_BYTES_MAX).await {
            Ok(bytes) => bytes,
            Err(_) => {
                parts.headers.remove(header::CONTENT_LENGTH);
                Default::default()
            }
        };
        let outcome = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(error) => {
                let mut message = format!("{}: {}", error.error.code, error.error.message);
                if let Some((cut, _)) = message.char_indices().nth(AUDIT_OUTCOME_CHARS_MAX) {
                    message.truncate(cut);
                }
                message
            }
            Err(_) => format!("status {}", status.as_u16()),
        };
        (Response::from_parts(parts, Body::from(bytes)), outcome)
    };
    let keep_after_ms =
        at_ms.saturating_sub(i64::try_from(state.limits.audit_retention_ms).unwrap_or(i64::MAX));
    let entry = NewAuditEntry {
        at_ms,
        token: token.to_owned(),
        source: ip.to_string(),
        request: request.to_owned(),
        action: action.to_owned(),
        status: status.as_u16(),
        outcome,
    };
    if let Err(e) = state
        .parts
        .stores
        .access
        .append_audit(entry, keep_after_ms)
        .await
    {
        tracing::error!(error = %e, token, request, "could not append to the audit trail");
    }
    answer
}

fn info(token: &TokenRecord, now_ms: i64) -> TokenInfo {
    TokenInfo {
        name: token.name.clone(),
        role: token.role.clone(),
        functions: token.functions.clone(),
        queues: token.queues.clone(),
        secrets: token.secrets.clone(),
        created_at: Some(rfc3339(token.created_at_ms)),
        expires_at: token.expires_at_ms.map(rfc3339),
        last_used_at: token.last_used_at_ms.map(rfc3339),
        expired: token.expires_at_ms.is_some_and(|at| at <= now_ms),
        bootstrap: false,
    }
}

async fn list_tokens(State(state): State<ApiState>) -> Result<Json<TokenList>, ApiError> {
    let now_ms = state.parts.clock.now_ms();
    let mut tokens = vec![TokenInfo {
        name: BOOTSTRAP_TOKEN_NAME.to_owned(),
        role: Role::Admin.name().to_owned(),
        functions: Vec::new(),
        queues: Vec::new(),
        secrets: Vec::new(),
        created_at: None,
        expires_at: None,
        last_used_at: None,
        expired: false,
        bootstrap: true,
    }];
    tokens.extend(
        state
            .parts
            .stores
            .access
            .tokens()
            .await?
            .iter()
            .map(|t| info(t, now_ms)),
    );
    Ok(Json(TokenList { tokens }))
}

async fn create_token(
    State(state): State<ApiState>,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let Json(request) = body
        .map_err(|e| ApiError::bad_request(format!("invalid token request: {}", e.body_text())))?;
    validate_token_name(&request.name)?;
    let role = Role::parse(&request.role).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown role `{}`: use admin, deployer, reader or publisher",
            request.role
        ))
    })?;
    let scoped =
        !(request.functions.is_empty() && request.queues.is_empty() && request.secrets.is_empty());
    if role == Role::Admin && scoped {
        return Err(ApiError::bad_request(
            "an admin token cannot be scoped: it manages tokens, secrets and budgets, which no scope limits; make a deployer, reader or publisher token instead",
        ));
    }
    for (kind, names) in [
        ("function", &request.functions),
        ("queue", &request.queues),
        ("secret", &request.secrets),
    ] {
        for name in names {
            if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
                return Err(ApiError::bad_request(format!(
                    "`{name}` is not a {kind} name"
                )));
            }
        }
    }
    let now_ms = state.parts.clock.now_ms();
    let expires_at_ms = match request.expires_in_ms {
        Some(0) => return Err(ApiError::bad_request("expires_in_ms must be positive")),
        Some(ms) => Some(now_ms.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))),
        None => None,
    };
    let token = new_token();
    let record = TokenRecord {
        name: request.name,
        hash: token_hash(&token),
        role: role.name().to_owned(),
        functions: request.functions,
        queues: request.queues,
        secrets: request.secrets,
        created_at_ms: now_ms,
        expires_at_ms,
        last_used_at_ms: None,
    };
    state
        .parts
        .stores
        .access
        .create_token(record.clone())
        .await
        .map_err(|e| match e {
            StoreError::AlreadyExists { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "token_exists",
                format!(
                    "a token named `{}` exists; remove it first (`eddy token rm`) or pick another name",
                    record.name
                ),
            ),
            e => e.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token,
            info: info(&record, now_ms),
        }),
    ))
}

fn validate_token_name(name: &str) -> Result<(), ApiError> {
    eddy_parse::routes::validate_name(name).map_err(|_| {
        ApiError::bad_request(format!(
            "token name `{name}` is invalid: use 1-63 characters of a-z, 0-9 and `-`, starting with a letter"
        ))
    })?;
    if name == BOOTSTRAP_TOKEN_NAME {
        return Err(ApiError::bad_request(format!(
            "`{BOOTSTRAP_TOKEN_NAME}` names the bootstrap admin token; pick another name"
        )));
    }
    Ok(())
}

async fn remove_token(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if name == BOOTSTRAP_TOKEN_NAME {
        return Err(ApiError::bad_request(
            "the bootstrap admin token is not revoked with `eddy token rm`: on one node delete <state-dir>/admin-token and restart it; or start the node with --admin-token-file",
        ));
    }
    if !state.parts.stores.access.remove_token(&name).await? {
        return Err(ApiError::not_found(format!(
            "no token `{name}`; see `eddy token ls`"
        )));
    }
    Ok(Json(serde_json::json!({ "removed": name })))
}

async fn audit(
    State(state): State<ApiState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "invalid audit query (since_ms, after, limit): {}",
            e.body_text()
        ))
    })?;
    let since_ms = match query.since_ms {
        Some(ms) => state
            .parts
            .clock
            .now_ms()
            .saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)),
        None => 0,
    };
    let after = query.after.unwrap_or(0);
    let limit = query
        .limit
        .unwrap_or(AUDIT_ENTRIES_PER_CALL_MAX)
        .clamp(1, AUDIT_ENTRIES_PER_CALL_MAX);
    let records = state
        .parts
        .stores
        .access
        .audit(since_ms, after, limit)
        .await?;
    let last_id = records.last().map_or(after, |r| r.id);
    Ok(Json(AuditPage {
        entries: records
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: rfc3339(r.entry.at_ms),
                token: r.entry.token,
                source: r.entry.source,
                request: r.entry.request,
                action: r.entry.action,
                status: r.entry.status,
                outcome: r.entry.outcome,
            })
            .collect(),
        last_id,
    }))
}
