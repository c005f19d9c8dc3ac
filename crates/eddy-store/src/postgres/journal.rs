//! Group commit of a node's queue operations on Postgres: what the SQLite journal does for
//! one file, done for one node's share of the cluster.
//!
//! Publishes, claims and settlements go to one task per node (the journal). It takes every
//! operation waiting (up to `JOURNAL_OPS_PER_COMMIT_MAX`), runs them one after another in
//! one transaction, adds their tally changes to the node's rows once, commits once and only
//! then answers each caller. One commit (one WAL flush) and one write of each tally row serve
//! the whole group. Before, every claim and settlement was a transaction of its own that
//! locked its node's tally row from its update to its commit, so the node's operations on a
//! queue waited for each other's WAL flushes one by one.
//!
//! **Failures.** An operation fails without harming the group only where it fails before it
//! writes, without a statement failing (a queue that does not exist, a depth or byte limit):
//! the operations are written to check first. A statement that fails aborts a Postgres
//! transaction, and a group's commit may fail (a deadlock with another node, say); then the
//! journal runs each operation of the group again in a transaction of its own, so each gets
//! its own answer and none is lost. A store that cannot be reached fails the whole group
//! with that answer.
//!
//! **Lock order.** Within a group, claims and settlements run first and publishes last, in
//! queue-name order, so two nodes' groups take the queue rows that publishes lock in the
//! same order. Where they still wait for each other, Postgres finds the deadlock and the
//! retry one by one above resolves it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::pool_error;
use super::queues::{Delta, claim_in, publish_in, settle_in, tally};
use crate::queues::{
    Claimed, JOURNAL_OPS_PER_COMMIT_MAX, JOURNAL_QUEUE_OPS_MAX, NewMessage, Published, QueueLimits,
    Settle,
};
use crate::{Result, StoreError};

/// An operation the journal runs.
pub(super) enum Request {
    Publish {
        queue: String,
        messages: Vec<NewMessage>,
        limits: QueueLimits,
    },
    Claim {
        queue: String,
        n: u32,
        lease_until_ms: i64,
    },
    Settle {
        queue: String,
        settlements: Vec<Settle>,
    },
}

impl Request {
    /// Where the operation runs in its group: claims and settlements first, then publishes
    /// by queue name (see "Lock order").
    fn order(&self) -> (bool, &str) {
        match self {
            Request::Publish { queue, .. } => (true, queue),
            Request::Claim { .. } | Request::Settle { .. } => (false, ""),
        }
    }
}

/// What an operation answers.
pub(super) enum Reply {
    Published(Vec<Published>),
    Claimed(Vec<Claimed>, Option<i64>),
    Settled,
}

struct Op {
    request: Request,
    reply: oneshot::Sender<Result<Reply>>,
}

/// The way to a node's journal.
#[derive(Clone)]
pub(super) struct Journal {
    ops: mpsc::Sender<Op>,
    /// Transactions the journal has committed.
    pub(super) commits: Arc<AtomicU64>,
}

impl Journal {
    /// Starts the journal of `node` on `pool`; it stops when the last handle is dropped.
    pub(super) fn start(pool: Pool, node: Arc<str>) -> Journal {
        let (ops, rx) = mpsc::channel(JOURNAL_QUEUE_OPS_MAX);
        let commits = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(pool, node, rx, commits.clone()));
        Journal { ops, commits }
    }

    /// Runs `request` in the next group and answers once that group has committed. Past
    /// `JOURNAL_QUEUE_OPS_MAX` operations waiting, waits for room (backpressure).
    pub(super) async fn submit(&self, request: Request) -> Result<Reply> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the queue journal stopped".into());
        self.ops
            .send(Op { request, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(pool: Pool, node: Arc<str>, mut rx: mpsc::Receiver<Op>, commits: Arc<AtomicU64>) {
    let mut ops = Vec::new();
    while rx.recv_many(&mut ops, JOURNAL_OPS_PER_COMMIT_MAX).await > 0 {
        // A stable sort: operations of one kind keep their arrival order.
        ops.sort_by(|a, b| a.request.order().cmp(&b.request.order()));
        let requests: Vec<&Request> = ops.iter().map(|op| &op.request).collect();
        let answers = match group(&pool, &node, &requests, &commits).await {
            Ok(answers) => answers,
            Err(e) if e.is_unavailable() => {
                let said = e.to_string();
                requests
                    .iter()
                    .map(|_| Err(StoreError::Unavailable(said.clone())))
                    .collect()
            }
            Err(e) if requests.len() == 1 => vec![Err(e)],
            // A statement failed or the commit did: each alone, for its own answer.
            Err(_) => {
                let mut answers = Vec::with_capacity(requests.len());
                for request in &requests {
                    answers.push(match group(&pool, &node, &[request], &commits).await {
                        Ok(mut one) => one.pop().unwrap_or_else(|| Ok(Reply::Settled)),
                        Err(e) => Err(e),
                    });
                }
                answers
            }
        };
        for (op, answer) in ops.drain(..).zip(answers) {
            let _ = op.reply.send(answer);
        }
    }
}

/// Runs `requests` in one transaction and commits it. `Err` when a statement or the commit
/// failed (nothing of the group is stored); otherwise each request's answer, an error for
/// those that failed before writing.
async fn group(
    pool: &Pool,
    node: &str,
    requests: &[&Request],
    commits: &AtomicU64,
) -> Result<Vec<Result<Reply>>> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await?;
    let mut deltas: BTreeMap<String, Delta> = BTreeMap::new();
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        let answer = match request {
            Request::Publish {
                queue,
                messages,
                limits,
            } => publish_in(&tx, &mut deltas, queue, messages, *limits)
                .await
                .map(Reply::Published),
            Request::Claim {
                queue,
                n,
                lease_until_ms,
            } => claim_in(&tx, node, &mut deltas, queue, *n, *lease_until_ms)
                .await
                .map(|(claimed, next)| Reply::Claimed(claimed, next)),
            Request::Settle { queue, settlements } => {
                settle_in(&tx, &mut deltas, queue, settlements)
                    .await
                    .map(|()| Reply::Settled)
            }
        };
        match answer {
            // Refused before writing anything: the transaction goes on.
            Err(
                e @ (StoreError::NotFound { .. }
                | StoreError::DepthLimit { .. }
                | StoreError::BytesLimit { .. }),
            ) => answers.push(Err(e)),
            Err(e) => return Err(e),
            Ok(reply) => answers.push(Ok(reply)),
        }
    }
    tally(&tx, node, &deltas).await?;
    tx.commit().await?;
    commits.fetch_add(1, Ordering::Relaxed);
    Ok(answers)
}
