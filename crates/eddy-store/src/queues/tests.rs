//! The journal's own behaviour: backpressure, a full database, group commit. The contracts of
//! `QueueBackend` are tested by the conformance suite.

use std::time::Duration;

use super::*;

/// Limits of a test about depth (or about neither).
fn depth(depth_max: u64) -> QueueLimits {
    QueueLimits {
        depth_max,
        ..QueueLimits::NONE
    }
}

fn message(body: &str, key: Option<&str>) -> NewMessage {
    NewMessage {
        body: body.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        idempotency_key: key.map(str::to_string),
    }
}

/// While the journal is held up (a slow disk), operations queue up to
/// `JOURNAL_QUEUE_OPS_MAX`; callers past it wait for room instead of queueing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_queue_is_bounded_and_callers_wait_for_room() -> Result<()> {
    let store = std::sync::Arc::new(QueueStore::open_in_memory()?);
    store.create_queue("jobs", 0).await?;
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started, running) = std::sync::mpsc::channel::<()>();
    let blocker = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .run(move |_, _| {
                    let _ = started.send(());
                    let _ = held.recv();
                    Ok(())
                })
                .await
        })
    };
    // The journal is inside the blocker (and has taken nothing else) before any publish.
    tokio::task::spawn_blocking(move || running.recv())
        .await
        .unwrap()
        .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let extra = 5;
    let mut tasks = Vec::new();
    for _ in 0..JOURNAL_QUEUE_OPS_MAX + extra {
        let (store, done) = (store.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            store
                .publish("jobs", vec![message("m", None)], depth(u64::MAX))
                .await?;
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, StoreError>(())
        }));
    }
    // The channel fills to its bound; nothing more is queued and nothing completes.
    while store.jobs.capacity() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.jobs.capacity(), 0);
    assert_eq!(done.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(tasks.iter().filter(|t| !t.is_finished()).count() >= JOURNAL_QUEUE_OPS_MAX + extra);
    release.send(()).unwrap();
    blocker.await.unwrap()?;
    for task in tasks {
        task.await.unwrap()?;
    }
    assert_eq!(
        store.counts("jobs").await?.depth,
        (JOURNAL_QUEUE_OPS_MAX + extra) as u64
    );
    Ok(())
}

/// A full database (here its size limit; a full disk answers the same) loses nothing it
/// acknowledged and acknowledges nothing it lost, however the publishes share commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_reports_exactly_what_it_stored() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(QueueStore::open(&dir.path().join("queues.db"))?);
    store.create_queue("jobs", 0).await?;
    let allowed = store.limit_bytes(512 * 1024).await?;
    assert!(allowed <= 512 * 1024 + 4096, "{allowed}");
    let body = "m".repeat(20_000);
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let store = store.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            store
                .publish("jobs", vec![message(&body, None)], depth(1_000_000))
                .await
        }));
    }
    let mut stored = 0;
    let mut full = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => stored += 1,
            Err(e) if e.is_full() => full += 1,
            Err(e) => panic!("not a full database: {e:?}"),
        }
    }
    assert!(stored > 0 && full > 0, "{stored} stored, {full} full");
    assert_eq!(store.counts("jobs").await?.depth, stored);
    // Nothing is lost on the way back either: the stored ones can be claimed.
    let (claimed, _) = store.claim("jobs", 1000, now_ms() + 60_000).await?;
    assert_eq!(claimed.len() as u64, stored);
    Ok(())
}

#[tokio::test]
async fn concurrent_publishes_share_commits() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let store = QueueStore::open(&dir.path().join("queues.db"))?;
    store.create_queue("jobs", 0).await?;
    let before = store.commits();
    let publishes = (0..2000)
        .map(|i| store.publish("jobs", vec![message(&i.to_string(), None)], depth(10_000)));
    let results = futures::future::join_all(publishes).await;
    assert!(results.iter().all(Result::is_ok));
    let commits = store.commits() - before;
    assert!(
        commits <= 500,
        "2000 concurrent publishes took {commits} commits"
    );
    assert_eq!(store.counts("jobs").await?.depth, 2000);
    Ok(())
}
