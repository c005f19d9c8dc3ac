//! The Postgres store shared by several nodes, each a `PgStores` of its own name on one
//! schema: what the conformance suite (one node at a time) cannot show.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestSchema;
use eddy_store::postgres::{PgStores, SCHEMA_VERSION};
use eddy_store::{NewMessage, QueueBackend, QueueLimits, Result, Settle, StoreError};

/// A lease no test reaches.
const FAR: i64 = i64::MAX / 2;

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    since.as_millis() as i64
}

fn message(body: &str, key: Option<&str>) -> NewMessage {
    NewMessage {
        body: body.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        idempotency_key: key.map(str::to_owned),
    }
}

async fn nodes(schema: &TestSchema, names: &[&str]) -> Result<Vec<PgStores>> {
    let mut opened = Vec::new();
    for name in names {
        opened.push(schema.open(name, common::CONNECTIONS_PER_NODE).await?);
    }
    Ok(opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_claiming_one_queue_never_get_the_same_message() -> Result<()> {
    const MESSAGES: usize = 300;
    let schema = TestSchema::new("claims").await;
    let all = nodes(&schema, &["a", "b", "c"]).await?;
    all[0].create_queue("jobs", 0).await?;
    let batch: Vec<NewMessage> = (0..MESSAGES)
        .map(|i| message(&format!("m{i}"), None))
        .collect();
    all[0].publish("jobs", batch, QueueLimits::NONE).await?;
    let mut workers = tokio::task::JoinSet::new();
    for node in &all {
        let node = node.clone();
        workers.spawn(async move {
            let mut bodies = Vec::new();
            loop {
                let (claimed, _) = node.claim("jobs", 7, FAR).await?;
                if claimed.is_empty() {
                    return Ok::<_, StoreError>(bodies);
                }
                let acks = claimed
                    .iter()
                    .map(|c| Settle::Ack {
                        row: c.row,
                        lease_until_ms: FAR,
                    })
                    .collect();
                node.settle("jobs", acks).await?;
                bodies.extend(claimed.into_iter().map(|c| c.body));
            }
        });
    }
    let mut seen = BTreeSet::new();
    let mut delivered = 0;
    for bodies in workers.join_all().await {
        for body in bodies? {
            delivered += 1;
            assert!(seen.insert(body), "a message was delivered twice");
        }
    }
    assert_eq!((delivered, seen.len()), (MESSAGES, MESSAGES));
    let counts = all[1].counts("jobs").await?;
    assert_eq!(
        (
            counts.depth,
            counts.bytes,
            counts.delivered,
            counts.succeeded
        ),
        (0, 0, MESSAGES as u64, MESSAGES as u64)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_recovers_only_the_leases_of_the_node_that_restarted() -> Result<()> {
    let schema = TestSchema::new("leases").await;
    let mut all = nodes(&schema, &["a", "b"]).await?;
    all[0].create_queue("jobs", 0).await?;
    all[0]
        .publish(
            "jobs",
            vec![message("1", None), message("2", None)],
            QueueLimits::NONE,
        )
        .await?;
    let (held_by_a, _) = all[0].claim("jobs", 1, FAR).await?;
    let (held_by_b, _) = all[1].claim("jobs", 1, FAR).await?;
    assert_eq!((held_by_a.len(), held_by_b.len()), (1, 1));
    // b restarts: its message comes back; a's stays held by a.
    drop(all.pop());
    let b = schema.open("b", common::CONNECTIONS_PER_NODE).await?;
    let (again, _) = b.claim("jobs", 10, FAR).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, held_by_b[0].body);
    assert_eq!(again[0].attempt, 2);
    let peeked = b.peek("jobs", 10).await?;
    let a_held = peeked
        .iter()
        .find(|m| m.id == held_by_a[0].id)
        .expect("a's message is still there");
    assert!(a_held.in_flight, "another node's restart took a's lease");
    // a settles its lease as usual.
    all[0]
        .settle(
            "jobs",
            vec![Settle::Ack {
                row: held_by_a[0].row,
                lease_until_ms: FAR,
            }],
        )
        .await?;
    assert_eq!(b.counts("jobs").await?.succeeded, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_settlement_from_a_lost_lease_changes_nothing_on_another_node() -> Result<()> {
    let schema = TestSchema::new("fencing").await;
    let all = nodes(&schema, &["a", "b"]).await?;
    all[0].create_queue("jobs", 0).await?;
    all[0]
        .publish("jobs", vec![message("x", None)], QueueLimits::NONE)
        .await?;
    // a's lease is already over when it is taken: b may claim the message at once.
    let (lost, _) = all[0].claim("jobs", 1, 0).await?;
    let (taken, _) = all[1].claim("jobs", 1, FAR).await?;
    assert_eq!(taken.len(), 1, "the lapsed lease was not claimable");
    all[0]
        .settle(
            "jobs",
            vec![Settle::Ack {
                row: lost[0].row,
                lease_until_ms: 0,
            }],
        )
        .await?;
    let counts = all[1].counts("jobs").await?;
    assert_eq!(
        (counts.depth, counts.in_flight, counts.succeeded),
        (1, 1, 0)
    );
    all[1]
        .settle(
            "jobs",
            vec![Settle::Ack {
                row: taken[0].row,
                lease_until_ms: FAR,
            }],
        )
        .await?;
    let counts = all[0].counts("jobs").await?;
    assert_eq!(
        (counts.depth, counts.succeeded, counts.delivered),
        (0, 1, 2)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_from_several_nodes_keep_the_depth_limit_and_keys_exactly() -> Result<()> {
    const DEPTH_MAX: u64 = 50;
    let schema = TestSchema::new("depth").await;
    let all = nodes(&schema, &["a", "b", "c"]).await?;
    all[0].create_queue("jobs", 3_600_000).await?;
    let limits = QueueLimits {
        depth_max: DEPTH_MAX,
        bytes_max: u64::MAX,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (n, node) in all.iter().enumerate() {
        for i in 0..40 {
            let node = node.clone();
            tasks.spawn(async move {
                let body = format!("{n}-{i}");
                node.publish("jobs", vec![message(&body, None)], limits)
                    .await
            });
        }
    }
    let (mut stored, mut refused) = (0, 0);
    for result in tasks.join_all().await {
        match result {
            Ok(_) => stored += 1,
            Err(StoreError::DepthLimit { .. }) => refused += 1,
            Err(e) => return Err(e),
        }
    }
    assert_eq!((stored, refused), (DEPTH_MAX, 120 - DEPTH_MAX));
    assert_eq!(all[2].counts("jobs").await?.depth, DEPTH_MAX);

    // One idempotency key published through every node at once is enqueued once.
    all[0].purge("jobs").await?;
    let mut tasks = tokio::task::JoinSet::new();
    for node in &all {
        for _ in 0..5 {
            let node = node.clone();
            tasks.spawn(async move {
                node.publish("jobs", vec![message("once", Some("k"))], QueueLimits::NONE)
                    .await
            });
        }
    }
    let answers = tasks.join_all().await;
    let mut ids = BTreeSet::new();
    let mut fresh = 0;
    for answer in answers {
        let published = answer?;
        ids.insert(published[0].id.clone());
        fresh += usize::from(!published[0].duplicate);
    }
    assert_eq!((ids.len(), fresh), (1, 1), "{ids:?}");
    assert_eq!(all[1].counts("jobs").await?.depth, 1);
    Ok(())
}

/// `limits.store_connections_max`: a node with one connection serves many concurrent calls,
/// each waiting its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_serves_many_concurrent_calls() -> Result<()> {
    let schema = TestSchema::new("pool").await;
    let node = schema.open("a", 1).await?;
    node.create_queue("jobs", 0).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let node = node.clone();
        tasks.spawn(async move {
            node.publish(
                "jobs",
                vec![message(&i.to_string(), None)],
                QueueLimits::NONE,
            )
            .await?;
            node.claim("jobs", 1, FAR).await
        });
    }
    let claimed: usize = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.map(|(c, _)| c.len()))
        .sum::<Result<usize>>()?;
    assert_eq!(claimed, 32);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_once() -> Result<()> {
    let schema = TestSchema::new("migrate").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..6 {
        let name = schema.name.clone();
        tasks.spawn(async move {
            let mut options = eddy_store::postgres::PgOptions::new(common::url(), format!("n{i}"));
            options.schema = Some(name);
            PgStores::open(&options).await
        });
    }
    let opened = tasks
        .join_all()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let state = opened[0].schema_state().await?;
    assert_eq!(state.version, SCHEMA_VERSION);
    Ok(())
}

/// Expand, then contract: a node runs on a newer schema that still admits it, and refuses
/// one that no longer does, saying to upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_used_while_it_admits_this_build() -> Result<()> {
    let schema = TestSchema::new("upgrade").await;
    drop(schema.open("a", 2).await?);
    let v = SCHEMA_VERSION as i64;
    // An expand migration of a later release: this build still works with it.
    schema
        .sql(&format!(
            "INSERT INTO eddy_schema VALUES ({}, {v}, 0)",
            v + 1
        ))
        .await;
    let node = schema.open("a", 2).await?;
    assert_eq!(node.schema_state().await?.version, SCHEMA_VERSION + 1);
    drop(node);
    // A contract migration: builds before it may no longer run.
    schema
        .sql(&format!(
            "INSERT INTO eddy_schema VALUES ({}, {}, 0)",
            v + 2,
            v + 1
        ))
        .await;
    match schema.open("a", 2).await {
        Err(StoreError::Corrupt(message)) => {
            assert!(message.contains("upgrade this node"), "{message}")
        }
        Err(e) => panic!("the wrong error: {e}"),
        Ok(_) => panic!("a build the schema no longer admits opened it"),
    }
    Ok(())
}

/// A cut to the database is reported as the store being unavailable, not as corrupt data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut options =
        eddy_store::postgres::PgOptions::new(format!("postgres://x@127.0.0.1:{port}/x"), "a");
    options.connect_timeout_ms = 200;
    let started = std::time::Instant::now();
    let Err(e) = PgStores::open(&options).await else {
        panic!("opened a store that never answers");
    };
    assert!(e.is_unavailable(), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(silent);
}

/// Artifacts are kept per component and engine as given, replaced by a later put, dropped
/// for a component not stored, and deleted with their component.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_belong_to_a_component_and_an_engine() -> Result<()> {
    use eddy_store::{ArtifactStore, FunctionStore};
    let schema = TestSchema::new("artifacts").await;
    let node = schema.open("a", 2).await?;
    let bytes = b"component".to_vec();
    let digest = eddy_store::component_digest(&bytes);
    node.put_artifact(&digest, "x86", b"code".to_vec(), b"mac".to_vec())
        .await?;
    assert_eq!(
        node.artifact(&digest, "x86").await?,
        None,
        "kept without its component"
    );
    node.put_component(&digest, bytes).await?;
    node.put_artifact(&digest, "x86", b"code".to_vec(), b"mac".to_vec())
        .await?;
    node.put_artifact(&digest, "arm", b"other".to_vec(), b"mac2".to_vec())
        .await?;
    assert_eq!(
        node.artifact(&digest, "x86").await?,
        Some((b"code".to_vec(), b"mac".to_vec()))
    );
    node.put_artifact(&digest, "x86", b"new".to_vec(), b"mac3".to_vec())
        .await?;
    assert_eq!(
        node.artifact(&digest, "x86").await?,
        Some((b"new".to_vec(), b"mac3".to_vec()))
    );
    assert_eq!(
        node.artifact(&digest, "arm").await?,
        Some((b"other".to_vec(), b"mac2".to_vec()))
    );
    // A function using the component, removed: the component goes, and its artifacts.
    let version = eddy_store::NewVersion {
        function: "f".into(),
        digest: digest.clone(),
        size_bytes: 9,
        config: eddy_store::VersionConfig {
            route: "/f".into(),
            memory_bytes_max: 1 << 20,
            timeout_ms: 1000,
            env: Default::default(),
            secrets: Default::default(),
            allow_outbound: vec![],
            max_concurrency: None,
            max_queue: None,
            max_wait_ms: None,
            reserved_concurrency: 0,
            reuse: None,
            publish: vec![],
            schedule: None,
            websocket: false,
        },
        created_at_ms: 1,
    };
    node.create_version(version, None).await?;
    assert!(node.remove_function("f").await?);
    assert_eq!(node.artifact(&digest, "x86").await?, None);
    assert_eq!(node.artifact(&digest, "arm").await?, None);
    Ok(())
}

/// A single SQLite node's state moves into an empty Postgres store whole; a second copy
/// into the same store is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_nodes_state_copies_into_postgres() -> Result<()> {
    use eddy_store::copy::copy_all;
    use eddy_store::{NewInvocation, NewVersion, QueueStore, Rollup, Store, Stores, VersionConfig};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (db, qdb) = (dir.path().join("eddy.db"), dir.path().join("queues.db"));
    let from = tokio::task::spawn_blocking(move || {
        Ok::<_, StoreError>(Stores::sqlite(Store::open(&db)?, QueueStore::open(&qdb)?))
    })
    .await
    .expect("opening SQLite")?;
    let config = |route: &str| VersionConfig {
        route: route.into(),
        memory_bytes_max: 1 << 20,
        timeout_ms: 1000,
        env: [("K".to_owned(), "v".to_owned())].into(),
        secrets: Default::default(),
        allow_outbound: vec![],
        max_concurrency: None,
        max_queue: None,
        max_wait_ms: None,
        reserved_concurrency: 0,
        reuse: None,
        publish: vec![],
        schedule: None,
        websocket: false,
    };
    for (i, body) in [b"one".as_slice(), b"two"].into_iter().enumerate() {
        let new = NewVersion {
            function: "f".into(),
            digest: eddy_store::component_digest(body),
            size_bytes: body.len() as u64,
            config: config(&format!("/f{i}")),
            created_at_ms: 10 + i as i64,
        };
        from.functions
            .create_version(new, Some(body.to_vec()))
            .await?;
    }
    from.functions.set_live_version("f", 1).await?;
    from.token.set_admin_token_hash("hash").await?;
    let invocation = |log: &str| NewInvocation {
        function: "f".into(),
        version: 1,
        at_ms: now_ms(),
        method: "GET".into(),
        path: "/f0".into(),
        status: 200,
        outcome: "ok".into(),
        duration_us: 5,
        cpu_us: 1,
        instantiate_us: None,
        memory_bytes_peak: 0,
        request_bytes: 0,
        response_bytes: 2,
        log: log.into(),
        node: "single".into(),
    };
    from.invocations
        .append_invocations(vec![invocation("a"), invocation("b")], Default::default())
        .await?;
    let rollup = Rollup {
        invocations: 2,
        wall_us: 10,
        ..Rollup::default()
    };
    from.invocations
        .add_rollups(vec![("f".into(), 60_000, rollup.clone())], 0)
        .await?;
    from.cost.put_price_sheet("mine", "x = 1", 5).await?;
    from.cost.put_budget("", "{\"monthly_usd\": 5}").await?;
    from.cost
        .set_budget_alerted("", "{\"monthly_usd\": 5}", "2026-12", 50.0)
        .await?;
    from.queues.create_queue("jobs", 60_000).await?;
    from.queues
        .publish(
            "jobs",
            vec![message("1", None), message("2", None)],
            QueueLimits::NONE,
        )
        .await?;
    from.queues.claim("jobs", 1, FAR).await?;
    from.ticks.last_tick("f", 1_000).await?;
    from.ticks.claim_tick("f", 2_000, FAR).await?;
    let token = eddy_store::TokenRecord {
        name: "ci".into(),
        hash: "h".into(),
        role: "deployer".into(),
        functions: vec!["f".into()],
        queues: vec![],
        secrets: vec!["s".into()],
        created_at_ms: 1,
        expires_at_ms: Some(99),
        last_used_at_ms: Some(2),
    };
    from.access.create_token(token.clone()).await?;
    from.access
        .put_secret("s", "k1", vec![1; 24], vec![7], 10)
        .await?;
    from.access
        .put_secret("s", "k2", vec![2; 24], vec![8], 20)
        .await?;
    let entry = eddy_store::NewAuditEntry {
        at_ms: 5,
        token: "admin".into(),
        source: "127.0.0.1".into(),
        request: "POST /v1/tokens".into(),
        action: "tokens:manage".into(),
        status: 201,
        outcome: "ok".into(),
    };
    from.access.append_audit(entry.clone(), 0).await?;

    let schema = TestSchema::new("copy").await;
    let to = schema.open("a", 4).await?.stores();
    let copied = copy_all(&from, &to).await?;
    assert_eq!(
        (
            copied.functions,
            copied.versions,
            copied.invocations,
            copied.rollup_minutes
        ),
        (1, 2, 2, 1)
    );
    assert_eq!(
        (copied.queues, copied.messages, copied.schedules),
        (1, 2, 1)
    );
    assert!(copied.token);
    let f = to.functions.function("f").await?.expect("copied");
    assert_eq!((f.live.version, f.version_count), (1, 2));
    assert_eq!(f.live.config, config("/f0"));
    assert_eq!(to.token.admin_token_hash().await?.as_deref(), Some("hash"));
    let logs: Vec<String> = to
        .invocations
        .invocations_tail("f", 10)
        .await?
        .into_iter()
        .map(|r| r.invocation.log)
        .collect();
    assert_eq!(logs, ["a", "b"]);
    assert_eq!(
        to.invocations.rollups("f", 0).await?,
        vec![(60_000, rollup)]
    );
    assert_eq!(
        to.cost.price_sheets().await?,
        vec![("mine".into(), "x = 1".into())]
    );
    let budget = to.cost.budget("").await?.expect("copied");
    assert_eq!(
        (budget.alerted_month.as_str(), budget.alerted_percent),
        ("2026-12", 50.0)
    );
    let counts = to.queues.counts("jobs").await?;
    assert_eq!(
        (counts.depth, counts.ready),
        (2, 2),
        "the in-flight message is ready again"
    );
    assert_eq!(to.ticks.last_tick("f", 9_000).await?, 2_000);
    // Access: tokens, every version of every secret as sealed, the audit trail.
    assert_eq!(
        (copied.tokens, copied.secrets, copied.audit_entries),
        (1, 2, 1)
    );
    assert_eq!(to.access.tokens().await?, vec![token]);
    assert_eq!(to.access.secrets().await?, from.access.secrets().await?);
    let trail = to.access.audit(0, 0, 10).await?;
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].entry, entry);
    match copy_all(&from, &to).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("empty"), "{message}"),
        other => panic!("a second copy was not refused: {other:?}"),
    }
    Ok(())
}

/// A schema name is an identifier short enough for its notification channels: longer, or
/// with characters an identifier may not hold, it is refused before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_name_too_long_or_not_an_identifier_is_refused() {
    use eddy_store::postgres::{PgOptions, SCHEMA_NAME_BYTES_MAX};
    let long = "s".repeat(SCHEMA_NAME_BYTES_MAX + 1);
    for bad in [long.as_str(), "two words", "drop;table", "9lives"] {
        let mut options = PgOptions::new(common::url(), "a");
        options.schema = Some(bad.to_owned());
        match PgStores::open(&options).await {
            Err(StoreError::Conflict(message)) => {
                assert!(message.contains("schema name"), "{message}")
            }
            Err(e) => panic!("{bad}: the wrong error: {e}"),
            Ok(_) => panic!("{bad}: opened"),
        }
    }
}

/// Publishes, claims and settlements that come at once share transactions (group commit),
/// and each still gets its own answer: a publish to a missing queue, one past the depth
/// limit and one whose statement Postgres refuses (a NUL in a text column aborts the
/// transaction) fail alone; every other operation of their groups is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_at_once_share_commits_and_each_fails_alone() -> Result<()> {
    const MESSAGES: usize = 200;
    let schema = TestSchema::new("groups").await;
    let node = schema.open("a", common::CONNECTIONS_PER_NODE).await?;
    node.create_queue("jobs", 0).await?;
    node.create_queue("small", 0).await?;
    // Every task starts its operation at the same moment.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(MESSAGES + 4));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..MESSAGES {
        let node = node.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let body = i.to_string();
            node.publish("jobs", vec![message(&body, None)], QueueLimits::NONE)
                .await
                .map(|_| "stored")
        });
    }
    let small = QueueLimits {
        depth_max: 1,
        bytes_max: u64::MAX,
    };
    for (queue, content_type, limits) in [
        ("missing", "text/plain", QueueLimits::NONE),
        ("small", "text/plain", small),
        ("small", "text/plain", small),
        ("jobs", "text/\0plain", QueueLimits::NONE),
    ] {
        let node = node.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let refused = NewMessage {
                content_type: content_type.into(),
                ..message("x", None)
            };
            match node.publish(queue, vec![refused], limits).await {
                Ok(_) => Ok("stored"),
                Err(StoreError::NotFound { .. }) => Ok("not found"),
                Err(StoreError::DepthLimit { .. }) => Ok("depth"),
                Err(StoreError::Postgres(_)) => Ok("refused"),
                Err(e) => Err(e),
            }
        });
    }
    let mut answers = std::collections::BTreeMap::new();
    for answer in tasks.join_all().await {
        *answers.entry(answer?).or_insert(0) += 1;
    }
    let expected = [
        ("depth", 1),
        ("not found", 1),
        ("refused", 1),
        ("stored", MESSAGES + 1),
    ];
    assert_eq!(answers, expected.into_iter().collect());
    assert_eq!(node.counts("jobs").await?.depth, MESSAGES as u64);
    assert_eq!(node.counts("small").await?.depth, 1);

    // Claims and acknowledgements at once, too: they share commits. (Counted here, not
    // above, where a group holding the refused statement runs again one by one.)
    let before = node.queue_commits();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(MESSAGES));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..MESSAGES {
        let node = node.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let lease = now_ms() + 60_000;
            let (claimed, _) = node.claim("jobs", 1, lease).await?;
            let acks = claimed
                .iter()
                .map(|c| Settle::Ack {
                    row: c.row,
                    lease_until_ms: lease,
                })
                .collect();
            node.settle("jobs", acks).await?;
            Ok::<_, StoreError>(claimed.len())
        });
    }
    let consumed: usize = tasks.join_all().await.into_iter().sum::<Result<usize>>()?;
    assert_eq!(consumed, MESSAGES);
    let counts = node.counts("jobs").await?;
    assert_eq!((counts.depth, counts.succeeded), (0, MESSAGES as u64));
    // 400 operations; one transaction each would be 400 commits.
    let commits = node.queue_commits() - before;
    assert!(commits < 100, "{commits} commits for 400 operations");
    Ok(())
}

/// Claims of one queue made at once (one statement in a group) each hold their messages
/// under their own lease: each acknowledges what it got with its lease, and a claim given
/// fewer than it asked learns when the next message is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_at_once_each_hold_their_messages_under_their_own_lease() -> Result<()> {
    const CLAIMS: i64 = 8;
    let schema = TestSchema::new("claims").await;
    let node = schema.open("a", common::CONNECTIONS_PER_NODE).await?;
    node.create_queue("jobs", 0).await?;
    let bodies: Vec<NewMessage> = (0..10).map(|i| message(&i.to_string(), None)).collect();
    node.publish("jobs", bodies, QueueLimits::NONE).await?;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLAIMS as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..CLAIMS {
        let node = node.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let lease = now_ms() + 60_000 + k;
            let (claimed, next) = node.claim("jobs", 2, lease).await?;
            Ok::<_, StoreError>((lease, claimed, next))
        });
    }
    let mut rows = BTreeSet::new();
    let mut short = 0;
    for answer in tasks.join_all().await {
        let (lease, claimed, next) = answer?;
        assert!(claimed.len() <= 2);
        if claimed.len() < 2 {
            short += 1;
            // Every message is leased: the next is due when the earliest lease ends.
            assert!(next.is_some(), "a short claim without its next time");
        }
        for c in &claimed {
            assert!(rows.insert(c.row), "message {} claimed twice", c.row);
        }
        // A lease of another claim changes nothing; its own acknowledges.
        let wrong = claimed
            .iter()
            .map(|c| Settle::Ack {
                row: c.row,
                lease_until_ms: lease + 1_000,
            })
            .collect();
        node.settle("jobs", wrong).await?;
        let acks = claimed
            .iter()
            .map(|c| Settle::Ack {
                row: c.row,
                lease_until_ms: lease,
            })
            .collect();
        node.settle("jobs", acks).await?;
    }
    assert_eq!(rows.len(), 10);
    assert_eq!(short, 3, "16 asked for, 10 there: three claims got 0 or 1");
    let counts = node.counts("jobs").await?;
    assert_eq!((counts.depth, counts.succeeded), (0, 10));
    Ok(())
}

/// `limits.store_statement_timeout_ms`: a publish waiting on a queue another session holds
/// locked fails once the timeout passes, naming the limit, instead of waiting as long as
/// the lock is held; once the lock is gone the next publish goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_the_timeout_fails_and_the_next_goes_through() -> Result<()> {
    let schema = TestSchema::new("timeout").await;
    let mut options = eddy_store::postgres::PgOptions::new(common::url(), "a");
    options.schema = Some(schema.name.clone());
    options.connections_max = common::CONNECTIONS_PER_NODE;
    options.statement_timeout_ms = 300;
    let node = PgStores::open(&options).await?;
    node.create_queue("jobs", 0).await?;
    // Another session (a stuck node, say) holds the queue's row for three seconds.
    let (client, connection) = tokio_postgres::connect(&common::url(), tokio_postgres::NoTls)
        .await
        .expect("a connection to the test Postgres");
    let driver = tokio::spawn(connection);
    let sql = format!(
        "SET search_path = {}; BEGIN; SELECT 1 FROM queues WHERE name = 'jobs' FOR UPDATE; \
         SELECT pg_sleep(3); COMMIT;",
        schema.name
    );
    let holder = tokio::spawn(async move {
        client.batch_execute(&sql).await.expect("the holder's SQL");
        drop(client);
        let _ = driver.await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let refused = node
        .publish("jobs", vec![message("late", None)], QueueLimits::NONE)
        .await;
    let waited = started.elapsed();
    let Err(e) = refused else {
        panic!("a publish went through a held lock");
    };
    assert!(
        e.to_string().contains("limits.store_statement_timeout_ms"),
        "{e}"
    );
    assert!(waited < Duration::from_millis(2_500), "waited {waited:?}");
    holder.await.unwrap();
    node.publish("jobs", vec![message("on time", None)], QueueLimits::NONE)
        .await?;
    assert_eq!(node.counts("jobs").await?.depth, 1);
    Ok(())
}

/// Relayed WebSocket broadcasts: a batch written by one node reaches every other node once
/// and in order (one transaction for the batch), its origin hears none of its own, and
/// batches two nodes write at once each arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_batches_reach_the_other_nodes_once_and_in_order() -> Result<()> {
    use eddy_store::{RelayAction, RelayedBroadcast, SocketRelay};
    let schema = TestSchema::new("relay").await;
    let all = nodes(&schema, &["a", "b", "c"]).await?;
    let mut at_b = SocketRelay::subscribe(&all[1]);
    let mut at_a = SocketRelay::subscribe(&all[0]);
    // Give each listener time to LISTEN (it bumps the change hints when it has).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let batch = |origin: &str, n: usize| -> Vec<RelayedBroadcast> {
        (0..n)
            .map(|i| RelayedBroadcast {
                origin: origin.into(),
                function: "chat".into(),
                channel: "room".into(),
                binary: false,
                body: format!("{origin}{i}").into_bytes(),
                action: RelayAction::Broadcast,
            })
            .collect()
    };
    let (a, c) = (all[0].clone(), all[2].clone());
    let (from_a, from_c) = tokio::join!(a.relay(batch("a", 5)), c.relay(batch("c", 4)));
    from_a?;
    from_c?;
    let mut heard: Vec<String> = Vec::new();
    while heard.len() < 9 {
        let b = tokio::time::timeout(Duration::from_secs(20), at_b.recv())
            .await
            .expect("every relayed broadcast within 20 s")
            .expect("the relay");
        heard.push(String::from_utf8(b.body).unwrap());
    }
    let of =
        |origin: char| -> Vec<&String> { heard.iter().filter(|h| h.starts_with(origin)).collect() };
    assert_eq!(of('a'), ["a0", "a1", "a2", "a3", "a4"], "{heard:?}");
    assert_eq!(of('c'), ["c0", "c1", "c2", "c3"], "{heard:?}");
    // A hears C's, not its own.
    let mut at_a_heard = Vec::new();
    while at_a_heard.len() < 4 {
        let b = tokio::time::timeout(Duration::from_secs(20), at_a.recv())
            .await
            .expect("C's broadcasts at A within 20 s")
            .expect("the relay");
        at_a_heard.push(b.origin);
    }
    assert_eq!(at_a_heard, ["c", "c", "c", "c"]);
    // And nothing more, at either.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(at_b.try_recv().is_err(), "B heard a broadcast twice");
    assert!(at_a.try_recv().is_err(), "A heard one twice, or its own");
    Ok(())
}
