//! Plain data types passed in and out of the store, and the invocation retention limits.

use std::collections::BTreeMap;

/// Newest invocation records kept per function (count).
pub const INVOCATIONS_PER_FUNCTION_MAX: usize = 1000;
/// Invocation records older than this are deleted (milliseconds; 7 days).
pub const INVOCATION_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// How many invocation records are kept, applied after each appended batch.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Newest records kept per function; older ones are deleted.
    pub invocations_per_function_max: usize,
    /// Records whose `at_ms` is older than now minus this many milliseconds are deleted.
    pub retention_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            invocations_per_function_max: INVOCATIONS_PER_FUNCTION_MAX,
            retention_ms: INVOCATION_RETENTION_MS,
        }
    }
}

/// What a deploy asks for; stored as JSON in the version row.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VersionConfig {
    /// HTTP path prefix the version serves, e.g. `/hello`.
    pub route: String,
    /// Largest linear memory an instance may grow to (bytes).
    pub memory_bytes_max: u64,
    /// Wall-clock limit of one request (milliseconds).
    pub timeout_ms: u64,
    /// Environment variables given to the component.
    pub env: BTreeMap<String, String>,
}

/// A version to create with [`crate::Store::create_version`].
#[derive(Clone, Debug, PartialEq)]
pub struct NewVersion {
    /// Function name; the function is created if missing.
    pub function: String,
    /// Component digest, `sha256:<hex>`.
    pub digest: String,
    /// Size of the component (bytes).
    pub size_bytes: u64,
    /// Deploy configuration.
    pub config: VersionConfig,
    /// Creation time (unix milliseconds); also becomes the function's `updated_at_ms`.
    pub created_at_ms: i64,
}

/// One immutable, numbered version of a function.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionRecord {
    /// Function name.
    pub function: String,
    /// Version number, 1 for the first; never reused within a function.
    pub version: u32,
    /// Component digest, `sha256:<hex>`.
    pub digest: String,
    /// Size of the component (bytes).
    pub size_bytes: u64,
    /// Deploy configuration.
    pub config: VersionConfig,
    /// Creation time (unix milliseconds).
    pub created_at_ms: i64,
}

/// A function and its live version.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionRecord {
    /// Function name.
    pub name: String,
    /// The version being served.
    pub live: VersionRecord,
    /// How many versions the function has.
    pub version_count: u32,
    /// When the live version last changed (unix milliseconds).
    pub updated_at_ms: i64,
}

/// An invocation record to append with [`crate::Store::append_invocations`].
#[derive(Clone, Debug, PartialEq)]
pub struct NewInvocation {
    /// Function name.
    pub function: String,
    /// Version that handled the request.
    pub version: u32,
    /// When the request arrived (unix milliseconds).
    pub at_ms: i64,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// How the invocation ended, e.g. `ok`, `trap`, `timeout`.
    pub outcome: String,
    /// Time spent handling the request (microseconds).
    pub duration_us: u64,
    /// Captured stdout and stderr.
    pub log: String,
}

/// A stored invocation record: what was appended, with the id it was stored under.
#[derive(Clone, Debug, PartialEq)]
pub struct InvocationRecord {
    /// Increasing id, unique across functions; used as a cursor.
    pub id: i64,
    /// The record as it was appended.
    pub invocation: NewInvocation,
}
