//! The control API of secrets: set (the value in the body, sealed before it is stored),
//! list (names, versions, dates and users, never a value), remove, and re-key. The model is
//! `docs/security.md#secrets`.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use eddy_parse::responses::{Rekeyed, SecretInfo, SecretList, SecretSet};

use super::{ApiState, rfc3339};
use crate::error::ApiError;

/// The secret routes, merged under `/v1`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/secrets", get(list_secrets))
        .route(
            "/secrets/{name}",
            put(set_secret)
                .delete(remove_secret)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/secrets/rekey", post(rekey))
}

/// A secret's name: 1-63 characters of `A-Z a-z 0-9 _ -`, starting with a letter.
pub fn validate_secret_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && name != "rekey";
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "secret name `{name}` is invalid: use 1-63 characters of A-Z, a-z, 0-9, `_` and `-`, starting with a letter (and not `rekey`)"
        )))
    }
}

async fn set_secret(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<SecretSet>, ApiError> {
    validate_secret_name(&name)?;
    let max = state.limits.secret_bytes_max as u64;
    let value = crate::queues::read_limited(body, max, "secret_bytes_max").await?;
    let value = String::from_utf8(value.to_vec()).map_err(|_| {
        ApiError::bad_request(
            "a secret's value must be UTF-8 text: it becomes an environment variable",
        )
    })?;
    if value.is_empty() || value.contains('\0') {
        return Err(ApiError::bad_request(
            "a secret's value must be non-empty and hold no NUL byte",
        ));
    }
    let now_ms = state.parts.clock.now_ms();
    let version = state.secrets.set(&name, &value, now_ms).await?;
    tracing::info!(secret = %name, version, "secret set");
    Ok(Json(SecretSet { name, version }))
}

/// Which live versions bind which secret: secret name → `function (VARIABLE, version N)`.
/// (An older version that binds a removed secret is refused if rolled back to: its pin
/// names the secret's creation time, which a secret set again does not have.)
async fn users(state: &ApiState) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for function in state.parts.stores.functions.list_functions().await? {
        for (variable, binding) in &function.live.config.secrets {
            users.entry(binding.name.clone()).or_default().push(format!(
                "{} ({variable}, version {})",
                function.name, binding.version
            ));
        }
    }
    Ok(users)
}

async fn list_secrets(State(state): State<ApiState>) -> Result<Json<SecretList>, ApiError> {
    let mut users = users(&state).await?;
    let mut secrets: Vec<SecretInfo> = Vec::new();
    for sealed in state.parts.stores.access.secrets().await? {
        match secrets.last_mut() {
            Some(last) if last.name == sealed.name => {
                last.version = sealed.version;
                last.versions += 1;
                last.updated_at = rfc3339(sealed.created_at_ms);
            }
            _ => secrets.push(SecretInfo {
                used_by: users.remove(&sealed.name).unwrap_or_default(),
                name: sealed.name,
                version: sealed.version,
                versions: 1,
                created_at: rfc3339(sealed.created_at_ms),
                updated_at: rfc3339(sealed.created_at_ms),
            }),
        }
    }
    Ok(Json(SecretList { secrets }))
}

async fn remove_secret(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if let Some(users) = users(&state).await?.remove(&name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "secret_in_use",
            format!(
                "secret `{name}` is bound by {}: deploy those without it (or remove them) first",
                users.join(", ")
            ),
        ));
    }
    if !state.parts.stores.access.remove_secret(&name).await? {
        return Err(ApiError::not_found(format!(
            "no secret `{name}`; see `eddy secret ls`"
        )));
    }
    tracing::info!(secret = %name, "secret removed");
    Ok((StatusCode::OK, Json(serde_json::json!({ "removed": name }))))
}

async fn rekey(State(state): State<ApiState>) -> Result<Json<Rekeyed>, ApiError> {
    let done = state.secrets.rekey().await?;
    tracing::info!(
        resealed = done.resealed,
        key = state.secrets.key_id().unwrap_or_default(),
        "secrets sealed again under the current key"
    );
    Ok(Json(Rekeyed {
        resealed: done.resealed,
        current: done.current,
    }))
}
