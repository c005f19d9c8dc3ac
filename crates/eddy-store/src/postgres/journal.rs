//! Group commit of a node's queue operations on Postgres: what the SQLite journal does for
//! one file, done for one node's share of the cluster.
//!
//! Publishes, claims and settlements go to one task per node (the journal). It takes every
//! operation waiting (up to `JOURNAL_OPS_PER_COMMIT_MAX`), runs them one after another in
//! one transaction, adds their tally changes to the node's rows once, commits once and only
//! then answers each caller. One commit (one WAL flush) and one write of each tally row serve
//! the whole group; the claims of each queue are one statement, and so are all the
//! acknowledgements, so a group costs a few round trips to Postgres, not a few per
//! operation. Before, every claim and settlement was a transaction of its own that
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
use super::queues::{Delta, ack_many, claim_many, hold_queues, publish_in, settle_in, tally};
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

/// Connections of the pool per journal shard: a node with `store_connections_max`
/// connections runs that many divided by this (1 to `JOURNAL_SHARDS_MAX`) shards, leaving
/// the rest to its other store calls.
const CONNECTIONS_PER_SHARD: usize = 4;
/// Journal shards one node runs at most.
const JOURNAL_SHARDS_MAX: usize = 4;

/// The way to a node's journal: one task per shard, each queue's operations always in the
/// same shard (by its name), so a group waiting on one queue's lock holds up only the
/// queues of its shard, and no two shards write one tally row.
#[derive(Clone)]
pub(super) struct Journal {
    shards: Arc<[mpsc::Sender<Op>]>,
    /// Transactions the journal has committed.
    pub(super) commits: Arc<AtomicU64>,
}

impl Journal {
    /// Starts the journal of `node` on `pool` (of `connections_max` connections); it stops
    /// when the last handle is dropped.
    pub(super) fn start(pool: Pool, node: Arc<str>, connections_max: usize) -> Journal {
        let count = (connections_max / CONNECTIONS_PER_SHARD).clamp(1, JOURNAL_SHARDS_MAX);
        let commits = Arc::new(AtomicU64::new(0));
        let shards = (0..count)
            .map(|_| {
                let (ops, rx) = mpsc::channel(JOURNAL_QUEUE_OPS_MAX / count);
                tokio::spawn(run(pool.clone(), node.clone(), rx, commits.clone()));
                ops
            })
            .collect();
        Journal { shards, commits }
    }

    /// Runs `request` in the next group and answers once that group has committed. Past
    /// `JOURNAL_QUEUE_OPS_MAX` operations waiting, waits for room (backpressure).
    pub(super) async fn submit(&self, request: Request) -> Result<Reply> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the queue journal stopped".into());
        let queue = match &request {
            Request::Publish { queue, .. }
            | Request::Claim { queue, .. }
            | Request::Settle { queue, .. } => queue,
        };
        let shard = &self.shards[shard_of(queue, self.shards.len())];
        shard
            .send(Op { request, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The shard of `queue`'s operations (FNV-1a of its name: the same on every run).
fn shard_of(queue: &str, shards: usize) -> usize {
    let hash = queue.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % shards as u64) as usize
}

async fn run(pool: Pool, node: Arc<str>, mut rx: mpsc::Receiver<Op>, commits: Arc<AtomicU64>) {
    let mut ops = Vec::new();
    while rx.recv_many(&mut ops, JOURNAL_OPS_PER_COMMIT_MAX).await > 0 {
        // A stable sort: operations of one kind keep their arrival order.
        ops.sort_by(|a, b| a.request.order().cmp(&b.request.order()));
        let requests: Vec<&Request> = ops.iter().map(|op| &op.request).collect();
        let answers = match group(&pool, &node, &requests, &commits).await {
            Ok(answers) => answers,
            Err(e) if e.is_unavailable() && !e.is_statement_timeout() => {
                let said = e.to_string();
                requests
                    .iter()
                    .map(|_| Err(StoreError::Unavailable(said.clone())))
                    .collect()
            }
            Err(e) if requests.len() == 1 => vec![Err(e)],
            // A statement failed, ran out of time (waiting for a lock another node holds,
            // say) or the commit failed: each alone, for its own answer; once the store is
            // found unreachable, the rest are told at once.
            Err(_) => {
                let mut answers = Vec::with_capacity(requests.len());
                let mut unreachable: Option<String> = None;
                for request in &requests {
                    if let Some(said) = &unreachable {
                        answers.push(Err(StoreError::Unavailable(said.clone())));
                        continue;
                    }
                    answers.push(match group(&pool, &node, &[request], &commits).await {
                        Ok(mut one) => one.pop().unwrap_or_else(|| Ok(Reply::Settled)),
                        Err(e) => {
                            if e.is_unavailable() && !e.is_statement_timeout() {
                                unreachable = Some(e.to_string());
                            }
                            Err(e)
                        }
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
    let mut answers: Vec<Option<Result<Reply>>> = requests.iter().map(|_| None).collect();

    // Claims of each queue in one statement, and every acknowledgement in one.
    let mut claims: BTreeMap<&str, Vec<(usize, u32, i64)>> = BTreeMap::new();
    let mut acks: Vec<(usize, &str, &[Settle])> = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        match request {
            Request::Claim {
                queue,
                n,
                lease_until_ms,
            } => claims
                .entry(queue)
                .or_default()
                .push((i, *n, *lease_until_ms)),
            Request::Settle { queue, settlements }
                if settlements.iter().all(|s| matches!(s, Settle::Ack { .. })) =>
            {
                acks.push((i, queue, settlements))
            }
            _ => {}
        }
    }
    let touched: Vec<&str> = claims
        .keys()
        .copied()
        .chain(acks.iter().map(|a| a.1))
        .collect();
    let held = if touched.is_empty() {
        Default::default()
    } else {
        hold_queues(&tx, &touched).await?
    };
    for (queue, claims) in &claims {
        let each: Vec<(u32, i64)> = claims.iter().map(|c| (c.1, c.2)).collect();
        let claimed = if held.contains(*queue) {
            claim_many(&tx, node, &mut deltas, queue, &each).await?
        } else {
            each.iter().map(|_| (vec![], None)).collect()
        };
        for ((i, _, _), (claimed, next)) in claims.iter().zip(claimed) {
            answers[*i] = Some(Ok(Reply::Claimed(claimed, next)));
        }
    }
    let mut acked: Vec<(&str, i64, i64)> = Vec::new();
    for (i, queue, settlements) in &acks {
        for settlement in *settlements {
            if let Settle::Ack {
                row,
                lease_until_ms,
            } = settlement
            {
                acked.push((queue, *row, *lease_until_ms));
            }
        }
        answers[*i] = Some(Ok(Reply::Settled));
    }
    if !acked.is_empty() {
        ack_many(&tx, &mut deltas, &acked).await?;
    }

    // The rest one by one: publishes (in queue order) and settlements that retry or
    // dead-letter.
    for (request, answer) in requests.iter().zip(answers.iter_mut()) {
        if answer.is_some() {
            continue;
        }
        let done = match request {
            Request::Publish {
                queue,
                messages,
                limits,
            } => publish_in(&tx, &mut deltas, queue, messages, *limits)
                .await
                .map(Reply::Published),
            // Answered above, with the other claims of their queue.
            Request::Claim { .. } => continue,
            Request::Settle { queue, settlements } => {
                settle_in(&tx, &mut deltas, queue, settlements)
                    .await
                    .map(|()| Reply::Settled)
            }
        };
        *answer = Some(match done {
            // Refused before writing anything: the transaction goes on.
            Err(
                e @ (StoreError::NotFound { .. }
                | StoreError::DepthLimit { .. }
                | StoreError::BytesLimit { .. }),
            ) => Err(e),
            Err(e) => return Err(e),
            Ok(reply) => Ok(reply),
        });
    }
    let answers = answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| Err(StoreError::Corrupt("an operation went unanswered".into())))
        })
        .collect();
    tally(&tx, node, &deltas).await?;
    tx.commit().await?;
    commits.fetch_add(1, Ordering::Relaxed);
    Ok(answers)
}
