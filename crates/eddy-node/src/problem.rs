//! Domain errors: what went wrong in a node operation (a deploy check, a rollback, a queue
//! publish, a cost query), with no HTTP in them. The control API, ingress and platform
//! layers map each `Kind` to a status (`error::ApiError`); the domain never picks one.

use eddy_runtime::DeployError;
use eddy_store::StoreError;

/// The kind of a problem, which decides how a caller is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or breaks a rule.
    Invalid,
    /// The request is over one of the node's limits (named in the message).
    Limit,
    /// What it names does not exist.
    NotFound,
    /// It conflicts with the state (a route taken, a queue that exists).
    Conflict,
    /// A body or component is larger than a limit allows.
    TooLarge,
    /// Understood, but refused for what it is (a component that is not a valid one).
    Unprocessable,
    /// Durable storage is full, or at its configured bound.
    Full,
    /// Busy right now; the same request may succeed in a moment.
    Busy,
    /// A fault of the node; the detail went to the log.
    Internal,
}

/// A failed domain operation: its kind, a stable code and a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Problem {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Problem {
        Problem::new(Kind::Invalid, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Problem {
        Problem::new(Kind::NotFound, "not_found", message)
    }

    pub fn limit(message: impl Into<String>) -> Problem {
        Problem::new(Kind::Limit, "limit_exceeded", message)
    }

    /// A fault of the node: the detail goes to the log, the caller gets a generic message.
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> Problem {
        tracing::error!(error = %detail, "{context}");
        Problem::new(
            Kind::Internal,
            "internal",
            format!("{context}; the node's log has the details"),
        )
    }
}

impl From<crate::schedule::ScheduleError> for Problem {
    fn from(e: crate::schedule::ScheduleError) -> Problem {
        Problem::invalid(e.to_string())
    }
}

impl From<crate::admission::ReservationDoesNotFit> for Problem {
    fn from(e: crate::admission::ReservationDoesNotFit) -> Problem {
        Problem::limit(e.to_string())
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        match e {
            StoreError::RouteTaken { route, function } => Problem::new(
                Kind::Conflict,
                "route_taken",
                format!(
                    "route {route} is already served by function `{function}`; choose another --route or remove `{function}` first"
                ),
            ),
            StoreError::NotFound { what } => Problem::not_found(format!("no {what}")),
            other => Problem::internal("the store failed", other),
        }
    }
}

impl From<DeployError> for Problem {
    fn from(e: DeployError) -> Problem {
        if e.is_node_fault() {
            return Problem::internal("compiling the component failed", e);
        }
        let code = match e.limit() {
            Some(_) => "component_limit",
            None => "invalid_component",
        };
        let kind = match e.limit() {
            Some(_) => Kind::Limit,
            None => Kind::Unprocessable,
        };
        Problem::new(kind, code, e.to_string())
    }
}
