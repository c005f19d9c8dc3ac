//! Control-API errors: a stable code, a message for people, and the HTTP status; the
//! domain's `Problem`s become these here, at the HTTP layer.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_parse::responses::{ErrorBody, ErrorDetail};
use eddy_runtime::DeployError;
use eddy_store::StoreError;

use crate::problem::{Kind, Problem};

/// An error the control API returns as `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token from <state-dir>/admin-token",
        )
    }

    /// The token is known but lacks what the route needs; the message names the permission.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn limit(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", message)
    }

    /// A fault of the node: the detail goes to the log, the caller gets a generic message.
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; the node's log has the details"),
        )
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> ApiError {
        let status = match p.kind {
            Kind::Invalid => StatusCode::BAD_REQUEST,
            Kind::Limit | Kind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Full => StatusCode::INSUFFICIENT_STORAGE,
            Kind::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, p.code, p.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        Problem::from(e).into()
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> ApiError {
        Problem::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
