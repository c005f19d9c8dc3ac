//! The tables of the queue database (`queues.db`), as the migrations that build them.

/// Schema changes, applied in order; entry `i` moves `user_version` from `i` to `i + 1`.
/// Never edit an entry once released; append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE queues (
    name                  TEXT PRIMARY KEY,
    dead_letter_of        TEXT REFERENCES queues (name) ON DELETE CASCADE,
    idempotency_window_ms INTEGER NOT NULL,
    created_at_ms         INTEGER NOT NULL
) STRICT;

-- One consumer per queue; `settings` is ConsumerSettings as JSON.
CREATE TABLE consumers (
    queue    TEXT PRIMARY KEY REFERENCES queues (name) ON DELETE CASCADE,
    settings TEXT NOT NULL
) STRICT;

-- `ce_id` is NULL while the message is in the queue it was published to (its id is then
-- 'm' || id); a dead-lettered or redriven copy keeps the original id there.
CREATE TABLE messages (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    queue                TEXT NOT NULL REFERENCES queues (name) ON DELETE CASCADE,
    ce_id                TEXT,
    body                 BLOB NOT NULL,
    content_type         TEXT NOT NULL,
    enqueued_at_ms       INTEGER NOT NULL,
    first_enqueued_at_ms INTEGER NOT NULL,
    attempts             INTEGER NOT NULL,
    visible_at_ms        INTEGER NOT NULL,
    leased               INTEGER NOT NULL,
    last_error           TEXT
) STRICT;
CREATE INDEX messages_ready ON messages (queue, visible_at_ms, id);

CREATE TABLE idempotency (
    queue         TEXT NOT NULL REFERENCES queues (name) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX idempotency_expiry ON idempotency (expires_at_ms);

CREATE TABLE queue_counters (
    queue           TEXT PRIMARY KEY REFERENCES queues (name) ON DELETE CASCADE,
    delivered       INTEGER NOT NULL,
    succeeded       INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL,
    dead_lettered   INTEGER NOT NULL
) STRICT;
"#,
    r#"
-- The last tick of each function's cron schedule that was claimed (run, or skipped by its
-- policy): a tick at or before it never runs.
CREATE TABLE schedules (
    function     TEXT PRIMARY KEY,
    last_tick_ms INTEGER NOT NULL
) STRICT;
"#,
    r#"
-- Bytes of message bodies each queue holds, kept by triggers in the same transaction as the
-- messages themselves, so a publish checks the queue's byte quota without a scan.
ALTER TABLE queues ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE queues SET bytes =
    (SELECT COALESCE(SUM(length(body)), 0) FROM messages WHERE messages.queue = queues.name);
CREATE TRIGGER messages_bytes_insert AFTER INSERT ON messages BEGIN
    UPDATE queues SET bytes = bytes + length(NEW.body) WHERE name = NEW.queue;
END;
CREATE TRIGGER messages_bytes_delete AFTER DELETE ON messages BEGIN
    UPDATE queues SET bytes = bytes - length(OLD.body) WHERE name = OLD.queue;
END;
CREATE TRIGGER messages_bytes_move AFTER UPDATE OF queue ON messages
WHEN OLD.queue <> NEW.queue BEGIN
    UPDATE queues SET bytes = bytes - length(OLD.body) WHERE name = OLD.queue;
    UPDATE queues SET bytes = bytes + length(NEW.body) WHERE name = NEW.queue;
END;
"#,
    r#"
-- Ticks claimed and not yet finished, each under a lease: one whose lease ended unfinished
-- (its runner died) is claimed again.
CREATE TABLE running_ticks (
    function       TEXT NOT NULL,
    tick_ms        INTEGER NOT NULL,
    lease_until_ms INTEGER NOT NULL,
    PRIMARY KEY (function, tick_ms)
) STRICT;
"#,
];
