//! The tables of the Postgres backend, as versioned migrations, and how several nodes apply
//! them at once.
//!
//! # Rolling upgrades: expand, then contract
//!
//! Each migration says which builds still work with the schema it leaves
//! (`compatible_from`: the oldest `SCHEMA_VERSION` that does). A migration that only adds
//! (a table, a nullable or defaulted column, an index) keeps the earlier value, so nodes of
//! the previous release keep running beside upgraded ones. A migration that removes or
//! changes what an older build reads raises it, and ships only once no such build runs (the
//! release after the expand). A node refuses to start on a schema whose `compatible_from` is
//! newer than itself, and says so; it runs on a newer schema that still admits it.
//!
//! # Several nodes at once
//!
//! Every node migrates when it opens the stores. The whole run holds a transaction-scoped
//! advisory lock keyed by the schema's name, so one node applies the migrations and the
//! others, waiting, find them applied. Each migration is one transaction with its record in
//! `eddy_schema`: it is applied whole or not at all.

use tokio_postgres::Client;

use super::locks;
use crate::store::now_ms;
use crate::{Result, StoreError};

/// One schema change.
struct Migration {
    sql: &'static str,
    /// The oldest schema version a build may have and still work with the schema this
    /// migration leaves.
    compatible_from: usize,
}

/// Schema changes, applied in order; entry `i` moves the version from `i` to `i + 1`. Never
/// edit an entry once released; append a new one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        compatible_from: 1,
        sql: r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE components (
    digest TEXT PRIMARY KEY,
    bytes  BYTEA NOT NULL
);

-- `route` is the live version's route, copied here so a unique index can guard it.
CREATE TABLE functions (
    name          TEXT PRIMARY KEY,
    live_version  INTEGER NOT NULL,
    route         TEXT NOT NULL UNIQUE,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE versions (
    function      TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    digest        TEXT NOT NULL REFERENCES components (digest),
    size_bytes    BIGINT NOT NULL,
    config        TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (function, version)
);
CREATE INDEX versions_digest ON versions (digest);

-- The live version must exist; checked at commit so a function and its first version can
-- be inserted in one transaction.
ALTER TABLE functions ADD CONSTRAINT functions_live_version
    FOREIGN KEY (name, live_version) REFERENCES versions (function, version)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE invocations (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    function          TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    version           INTEGER NOT NULL,
    at_ms             BIGINT NOT NULL,
    method            TEXT NOT NULL,
    path              TEXT NOT NULL,
    status            INTEGER NOT NULL,
    outcome           TEXT NOT NULL,
    duration_us       BIGINT NOT NULL,
    log               TEXT NOT NULL,
    cpu_us            BIGINT NOT NULL,
    instantiate_us    BIGINT,
    memory_bytes_peak BIGINT NOT NULL,
    request_bytes     BIGINT NOT NULL,
    response_bytes    BIGINT NOT NULL
);
CREATE INDEX invocations_function_id ON invocations (function, id);
CREATE INDEX invocations_at ON invocations (at_ms);

-- Per-function, per-minute totals. `outcomes` and `latency` are JSON.
CREATE TABLE invocation_minutes (
    function           TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    minute_ms          BIGINT NOT NULL,
    invocations        BIGINT NOT NULL,
    errors             BIGINT NOT NULL,
    rejected           BIGINT NOT NULL,
    cold_starts        BIGINT NOT NULL,
    wall_us            BIGINT NOT NULL,
    cpu_us             BIGINT NOT NULL,
    instantiate_us     BIGINT NOT NULL,
    request_bytes      BIGINT NOT NULL,
    response_bytes     BIGINT NOT NULL,
    memory_bytes_peak  BIGINT NOT NULL,
    outcomes           TEXT NOT NULL,
    latency            TEXT NOT NULL,
    connection_ms      BIGINT NOT NULL,
    billed_ms          BIGINT NOT NULL,
    memory_limit_bytes BIGINT NOT NULL,
    PRIMARY KEY (function, minute_ms)
);
CREATE INDEX invocation_minutes_minute ON invocation_minutes (minute_ms);

CREATE TABLE price_sheets (
    name       TEXT PRIMARY KEY,
    toml       TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE budgets (
    scope           TEXT PRIMARY KEY,
    settings        TEXT NOT NULL,
    alerted_month   TEXT NOT NULL DEFAULT '',
    alerted_percent DOUBLE PRECISION NOT NULL DEFAULT 0
);

CREATE TABLE queues (
    name                  TEXT PRIMARY KEY,
    dead_letter_of        TEXT REFERENCES queues (name) ON DELETE CASCADE,
    idempotency_window_ms BIGINT NOT NULL,
    created_at_ms         BIGINT NOT NULL
);

-- One consumer per queue; `settings` is ConsumerSettings as JSON, `dead_letter` copied out
-- of it so deleting a queue can find the consumers that dead-letter into it.
CREATE TABLE consumers (
    queue       TEXT PRIMARY KEY REFERENCES queues (name) ON DELETE CASCADE,
    settings    TEXT NOT NULL,
    dead_letter TEXT NOT NULL
);
CREATE INDEX consumers_dead_letter ON consumers (dead_letter);

-- `ce_id` is NULL while the message is in the queue it was published to (its id is then
-- 'm' || id); a dead-lettered or redriven copy keeps the original id there. A leased
-- message is held by the node named in `holder` until `visible_at_ms`, its lease's end.
CREATE TABLE messages (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue                TEXT NOT NULL REFERENCES queues (name) ON DELETE CASCADE,
    ce_id                TEXT,
    body                 BYTEA NOT NULL,
    content_type         TEXT NOT NULL,
    enqueued_at_ms       BIGINT NOT NULL,
    first_enqueued_at_ms BIGINT NOT NULL,
    attempts             INTEGER NOT NULL,
    visible_at_ms        BIGINT NOT NULL,
    leased               BOOLEAN NOT NULL,
    holder               TEXT,
    last_error           TEXT
);
CREATE INDEX messages_ready ON messages (queue, visible_at_ms, id);
CREATE INDEX messages_held ON messages (holder) WHERE leased;

CREATE TABLE idempotency (
    queue         TEXT NOT NULL REFERENCES queues (name) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (queue, key)
);
CREATE INDEX idempotency_expiry ON idempotency (queue, expires_at_ms);

-- Each node's share of a queue's depth, bytes and counters: nodes working one queue do not
-- contend for one row; readers sum them.
CREATE TABLE queue_tallies (
    queue           TEXT NOT NULL REFERENCES queues (name) ON DELETE CASCADE,
    node            TEXT NOT NULL,
    depth           BIGINT NOT NULL DEFAULT 0,
    bytes           BIGINT NOT NULL DEFAULT 0,
    delivered       BIGINT NOT NULL DEFAULT 0,
    succeeded       BIGINT NOT NULL DEFAULT 0,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    dead_lettered   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, node)
);

-- The last claimed tick of each function's cron schedule.
CREATE TABLE schedules (
    function     TEXT PRIMARY KEY,
    last_tick_ms BIGINT NOT NULL
);
"#,
    },
    // Expand: builds of schema 1 never read the table, so they run beside this one.
    Migration {
        compatible_from: 1,
        sql: r#"
-- Compiled code shared by the nodes: one artifact per component and engine (CPU class),
-- with the MAC the nodes check under a key the database never holds. Stored out of line
-- and uncompressed (native code compresses poorly; reading it back is the hot path).
CREATE TABLE artifacts (
    digest        TEXT NOT NULL REFERENCES components (digest) ON DELETE CASCADE,
    engine        TEXT NOT NULL,
    bytes         BYTEA NOT NULL,
    mac           BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (digest, engine)
);
ALTER TABLE artifacts ALTER COLUMN bytes SET STORAGE EXTERNAL;
"#,
    },
    // Expand, like the one before.
    Migration {
        compatible_from: 1,
        sql: r#"
-- Ticks claimed and not yet finished, each under a lease: one whose lease ended unfinished
-- (its node died) is claimed again by another node.
CREATE TABLE running_ticks (
    function       TEXT NOT NULL,
    tick_ms        BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL,
    PRIMARY KEY (function, tick_ms)
);

-- WebSocket broadcasts on their way to the other nodes, named by id in a notification;
-- kept a minute.
CREATE TABLE socket_relay (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    origin        TEXT NOT NULL,
    function      TEXT NOT NULL,
    channel       TEXT NOT NULL,
    binary_body   BOOLEAN NOT NULL,
    body          BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX socket_relay_created ON socket_relay (created_at_ms);

-- Each node's latest heartbeat: `eddy nodes`.
CREATE TABLE members (
    name             TEXT PRIMARY KEY,
    version          TEXT NOT NULL,
    public_url       TEXT NOT NULL,
    admin_addr       TEXT NOT NULL,
    started_at_ms    BIGINT NOT NULL,
    seen_at_ms       BIGINT NOT NULL,
    in_flight        BIGINT NOT NULL,
    concurrency_max  BIGINT NOT NULL,
    instances        BIGINT NOT NULL,
    functions        BIGINT NOT NULL,
    stopped          BOOLEAN NOT NULL
);
"#,
    },
    // Expand, like the ones before.
    Migration {
        compatible_from: 1,
        sql: r#"
-- Each node's share of each function's minutes (`invocation_minutes` holds their sums):
-- what `eddy stats` shows per node.
CREATE TABLE node_minutes (
    function    TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    minute_ms   BIGINT NOT NULL,
    node        TEXT NOT NULL,
    invocations BIGINT NOT NULL,
    errors      BIGINT NOT NULL,
    rejected    BIGINT NOT NULL,
    cold_starts BIGINT NOT NULL,
    wall_us     BIGINT NOT NULL,
    cpu_us      BIGINT NOT NULL,
    billed_ms   BIGINT NOT NULL,
    PRIMARY KEY (function, minute_ms, node)
);
CREATE INDEX node_minutes_minute ON node_minutes (minute_ms);

-- Relayed operations on one connection besides broadcasts: `action` is `broadcast`,
-- `send`, `close` (with `close_code`, the body its reason), `join` or `leave` (the channel
-- in the body). An older node reads every row as a broadcast to `channel`, which for all
-- but a broadcast is empty: no connection is in it.
-- The node that ran each invocation.
ALTER TABLE invocations ADD COLUMN node TEXT NOT NULL DEFAULT '';

ALTER TABLE socket_relay
    ADD COLUMN action     TEXT NOT NULL DEFAULT 'broadcast',
    ADD COLUMN connection TEXT,
    ADD COLUMN close_code INTEGER;
"#,
    },
    Migration {
        compatible_from: 1,
        sql: r#"
-- Scoped tokens of the control API (only their hashes), the audit trail of changes, and
-- secrets sealed by the nodes (the store never holds a value in the clear nor the key).
CREATE TABLE tokens (
    name            TEXT PRIMARY KEY,
    hash            TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT,
    last_used_at_ms BIGINT
);
CREATE TABLE audit (
    id      BIGSERIAL PRIMARY KEY,
    at_ms   BIGINT NOT NULL,
    token   TEXT NOT NULL,
    source  TEXT NOT NULL,
    request TEXT NOT NULL,
    action  TEXT NOT NULL,
    status  INTEGER NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at_ms);
CREATE TABLE secrets (
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    key_id        TEXT NOT NULL,
    nonce         BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
"#,
    },
];

/// The schema version this build creates and reads.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Where a database's schema stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaState {
    /// Migrations applied.
    pub version: usize,
    /// The oldest build (by its `SCHEMA_VERSION`) that works with the schema.
    pub compatible_from: usize,
}

const STATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS eddy_schema (
    version         INTEGER PRIMARY KEY,
    compatible_from INTEGER NOT NULL,
    applied_at_ms   BIGINT NOT NULL
)";

/// Applies every migration the database lacks, holding the migration lock of its schema
/// (taken here before `eddy_schema` may exist, so not through `super::lock`).
pub(super) async fn migrate(client: &mut Client) -> Result<()> {
    loop {
        let tx = client.transaction().await?;
        // Waiting for another node's migrations, and a migration itself, may take longer
        // than a store call's statement timeout.
        tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema()), $1)",
            &[&locks::MIGRATIONS],
        )
        .await?;
        tx.batch_execute(STATE_TABLE).await?;
        let state = state(&tx).await?;
        if state.compatible_from > SCHEMA_VERSION {
            tx.rollback().await?;
            return Err(StoreError::Corrupt(format!(
                "the database's schema is at version {} and works only with builds of schema \
                 version {} or later; this build has {SCHEMA_VERSION}: upgrade this node",
                state.version, state.compatible_from
            )));
        }
        let Some(migration) = MIGRATIONS.get(state.version) else {
            return Ok(());
        };
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO eddy_schema (version, compatible_from, applied_at_ms)
             VALUES ($1, $2, $3)",
            &[
                &((state.version + 1) as i32),
                &(migration.compatible_from as i32),
                &now_ms(),
            ],
        )
        .await?;
        tx.commit().await?;
    }
}

/// The schema's state as `eddy_schema` records it (version 0 if it records nothing).
pub(super) async fn state(client: &impl tokio_postgres::GenericClient) -> Result<SchemaState> {
    let exists: bool = client
        .query_one("SELECT to_regclass('eddy_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(SchemaState {
            version: 0,
            compatible_from: 0,
        });
    }
    let row = client
        .query_opt(
            "SELECT version, compatible_from FROM eddy_schema ORDER BY version DESC LIMIT 1",
            &[],
        )
        .await?;
    Ok(match row {
        Some(row) => SchemaState {
            version: row.get::<_, i32>(0) as usize,
            compatible_from: row.get::<_, i32>(1) as usize,
        },
        None => SchemaState {
            version: 0,
            compatible_from: 0,
        },
    })
}
