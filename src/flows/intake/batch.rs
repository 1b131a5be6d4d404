//! Group commit for intake: concurrent deliveries in one instance are
//! recorded together, in one store call ([`Store::ingest`]: one transaction
//! and one commit on Postgres), instead of one commit each. A delivery is
//! answered only after its batch is durable; a failed batch fails every
//! delivery in it (and, being one transaction, records none of them), so
//! each sender retries.
//!
//! There is no waiting window: the worker takes whatever deliveries are
//! queued when it is free, up to [`MAX_BATCH`]. Alone, a delivery is written
//! at once; under load, deliveries queue while the previous batch commits
//! and go together in the next. Latency never grows to fill a batch.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::core::clock::Clock;
use crate::store::{Ingest, Store, StoreError, StoreResult};

/// Most deliveries in one store call.
pub const MAX_BATCH: usize = 256;
/// Batches in flight at once. Two overlap one batch's round trip and
/// commit with the next one's writing; with Postgres's batch as one
/// statement, a third only split the queue into smaller batches (more
/// commits, more database work per delivery: 1, 2 and 3 writers alternated
/// in one `cargo bench --bench guard` run gave 13.6k, 15.0k and 14.7k
/// alerts/s, and 2 used the least Postgres CPU per alert).
const WRITERS: usize = 2;
/// Deliveries waiting for a batch; beyond this, submitters wait their turn.
const QUEUE: usize = 4 * MAX_BATCH;

struct Job {
    item: Ingest,
    reply: oneshot::Sender<StoreResult<bool>>,
}

/// The instance's intake writer.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the worker on the current Tokio runtime.
    pub fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        // A few writers share the queue: while one batch commits, the next
        // is already being written (the round trips overlap; each batch is
        // still one transaction).
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(run(
                Arc::clone(&rx),
                Arc::clone(&store),
                Arc::clone(&clock),
                ttl,
            ));
        }
        Self { tx }
    }

    /// Records `item` with whatever else is queued; `Ok(false)` when its
    /// claim was taken already (a duplicate delivery).
    pub async fn submit(&self, item: Ingest) -> StoreResult<bool> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { item, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the intake writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the intake writer dropped the delivery".into()))?
    }
}

async fn run(
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        // Only the taking is serialised; writing happens outside the lock.
        let n = rx.lock().await.recv_many(&mut jobs, MAX_BATCH).await;
        if n == 0 {
            break;
        }
        let items: Vec<Ingest> = jobs
            .iter_mut()
            .map(|j| std::mem::take(&mut j.item))
            .collect();
        let result = store.ingest(&items, clock.now(), ttl).await;
        match result {
            Ok(taken) if taken.len() == jobs.len() => {
                for (job, t) in jobs.drain(..).zip(taken) {
                    let _ = job.reply.send(Ok(t));
                }
            }
            Ok(taken) => {
                let e = format!(
                    "the store answered {} of {} deliveries",
                    taken.len(),
                    jobs.len()
                );
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Corrupt(e.clone())));
                }
            }
            Err(e) => {
                // Every delivery of the batch is refused alike; senders retry.
                let text = e.to_string();
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(same_kind(&e, &text)));
                }
            }
        }
    }
}

/// `e` again, for each delivery of a failed batch.
fn same_kind(e: &StoreError, text: &str) -> StoreError {
    match e {
        StoreError::Unavailable(_) => StoreError::Unavailable(text.into()),
        StoreError::Query(_) => StoreError::Query(text.into()),
        StoreError::Corrupt(_) => StoreError::Corrupt(text.into()),
        StoreError::NotFound(_) => StoreError::NotFound(text.into()),
        StoreError::Contention(_) => StoreError::Contention(text.into()),
    }
}
