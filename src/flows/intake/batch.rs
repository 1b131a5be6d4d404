//! Group commit for intake: concurrent deliveries in one instance are
//! recorded together, in one store call ([`Store::ingest`]: one transaction
//! and one commit on Postgres), instead of one commit each. A delivery is
//! answered only after its batch is durable; a failed batch fails every
//! delivery in it (and, being one transaction, records none of them), so
//! each sender retries.
//!
//! There is no waiting window: a batch starts as soon as the store is
//! free, with whatever deliveries are queued, up to [`MAX_BATCH`]. Alone, a
//! delivery is written at once; under load, deliveries queue while a batch
//! commits and go together in the next.
//!
//! Up to [`WRITERS`] batches are in flight at once, so one batch's round
//! trip and commit overlap the next one's writing. A second batch starts
//! only with [`MIN_OVERLAP`] deliveries, though: started with whatever was
//! queued the moment the first left, it was a single delivery in about a
//! third of all batches, each paying a whole commit. Waiting costs such a
//! delivery at most the first batch's round trip, which it would have
//! waited for anyway with one writer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::core::clock::{Clock, Timestamp};
use crate::store::{Ingest, Store, StoreError, StoreResult};

/// Most deliveries in one store call.
pub const MAX_BATCH: usize = 256;
/// Batches in flight at once. Two overlap one batch's round trip and
/// commit with the next one's writing; with Postgres's batch as one
/// statement, a third only split the queue into smaller batches (more
/// commits, more database work per delivery: 1, 2 and 3 writers alternated
/// in one `cargo bench --bench guard` run gave 13.6k, 15.0k and 14.7k
/// alerts/s, and 2 used the least Postgres CPU per alert; with
/// [`MIN_OVERLAP`], 3 still gave less than 2).
pub const WRITERS: usize = 2;
/// Deliveries it takes to start a batch while another is in flight.
/// Alternated in one `cargo bench --bench guard` run (32 clients), 1, 4, 8,
/// 12 and 16 gave on Postgres about 18.1k, 18.6k, 19.1k, 20.8k and 21.0k
/// alerts/s (about 41, 39, 38, 34 and 32 µs of Postgres CPU per alert), and
/// on Redis 31-32k at 1 against 31-35k at 12 and 16; 24 was slower again
/// (18.5k). At lower concurrency a second batch rarely starts, and one
/// writer is enough.
pub const MIN_OVERLAP: usize = 12;
/// Deliveries waiting for a batch; beyond this, submitters wait their turn.
const QUEUE: usize = 4 * MAX_BATCH;

/// Where batches are recorded: the store (one [`Store::ingest`] call per
/// batch), or in tests a stand-in that holds batches in flight.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    async fn ingest(
        &self,
        batch: &[Ingest],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<Vec<bool>>;
}

struct StoreSink(Arc<dyn Store>);

#[async_trait]
impl Sink for StoreSink {
    async fn ingest(
        &self,
        batch: &[Ingest],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        self.0.ingest(batch, now, ttl).await
    }
}

/// What the batcher has written so far: how many batches, deliveries and
/// microseconds of store calls (from sending a batch to its answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub batches: u64,
    pub deliveries: u64,
    pub store_micros: u64,
}

impl BatchStats {
    /// What was written between `earlier` and `self`.
    pub fn since(&self, earlier: &BatchStats) -> BatchStats {
        BatchStats {
            batches: self.batches - earlier.batches,
            deliveries: self.deliveries - earlier.deliveries,
            store_micros: self.store_micros - earlier.store_micros,
        }
    }
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    deliveries: AtomicU64,
    store_micros: AtomicU64,
}

impl Counters {
    fn add(&self, deliveries: usize, took: Duration) {
        self.batches.fetch_add(1, Relaxed);
        self.deliveries.fetch_add(deliveries as u64, Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.store_micros.fetch_add(micros, Relaxed);
    }
}

struct Job {
    item: Ingest,
    reply: oneshot::Sender<StoreResult<bool>>,
}

/// The instance's intake writer.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl Batcher {
    /// Starts the worker on the current Tokio runtime.
    pub fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self::start_with(Arc::new(StoreSink(store)), clock, ttl)
    }

    /// Starts the worker recording into `sink`.
    pub fn start_with(sink: Arc<dyn Sink>, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(rx, sink, Arc::clone(&counters), clock, ttl));
        Self { tx, counters }
    }

    /// What this batcher has written so far.
    pub fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.counters.batches.load(Relaxed),
            deliveries: self.counters.deliveries.load(Relaxed),
            store_micros: self.counters.store_micros.load(Relaxed),
        }
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

/// Takes deliveries from `rx` and drives their batches, at most
/// [`WRITERS`] at once (see the module docs for when one starts).
async fn run(
    mut rx: mpsc::Receiver<Job>,
    sink: Arc<dyn Sink>,
    counters: Arc<Counters>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
) {
    let mut queued: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut open = true;
    loop {
        let start = !queued.is_empty()
            && (in_flight.is_empty() || (in_flight.len() < WRITERS && queued.len() >= MIN_OVERLAP));
        if start {
            let jobs = std::mem::replace(&mut queued, Vec::with_capacity(MAX_BATCH));
            let (sink, counters) = (Arc::clone(&sink), Arc::clone(&counters));
            in_flight.spawn(write(jobs, sink, counters, clock.now(), ttl));
            continue;
        }
        if !open && queued.is_empty() && in_flight.is_empty() {
            return;
        }
        let room = MAX_BATCH - queued.len();
        tokio::select! {
            n = rx.recv_many(&mut queued, room), if open && room > 0 => open = n > 0,
            // A batch that panicked dropped its replies: its senders get 503.
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
}

/// Records `jobs` in one call and answers each.
async fn write(
    mut jobs: Vec<Job>,
    sink: Arc<dyn Sink>,
    counters: Arc<Counters>,
    now: Timestamp,
    ttl: Duration,
) {
    let items: Vec<Ingest> = jobs
        .iter_mut()
        .map(|j| std::mem::take(&mut j.item))
        .collect();
    let started = std::time::Instant::now();
    let result = sink.ingest(&items, now, ttl).await;
    counters.add(items.len(), started.elapsed());
    match result {
        Ok(taken) if taken.len() == jobs.len() => {
            for (job, t) in jobs.into_iter().zip(taken) {
                let _ = job.reply.send(Ok(t));
            }
        }
        Ok(taken) => {
            let e = format!(
                "the store answered {} of {} deliveries",
                taken.len(),
                jobs.len()
            );
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Corrupt(e.clone())));
            }
        }
        Err(e) => {
            // Every delivery of the batch is refused alike; senders retry.
            let text = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(same_kind(&e, &text)));
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::core::clock::ManualClock;

    /// Holds every batch until the test releases it; records batch sizes.
    struct Gate {
        sizes: Mutex<Vec<usize>>,
        release: Semaphore,
    }

    #[async_trait]
    impl Sink for Gate {
        async fn ingest(
            &self,
            batch: &[Ingest],
            _now: Timestamp,
            _ttl: Duration,
        ) -> StoreResult<Vec<bool>> {
            self.sizes.lock().unwrap().push(batch.len());
            self.release.acquire().await.unwrap().forget();
            Ok(vec![true; batch.len()])
        }
    }

    impl Gate {
        fn new() -> Self {
            Self {
                sizes: Mutex::new(Vec::new()),
                release: Semaphore::new(0),
            }
        }

        fn sizes(&self) -> Vec<usize> {
            self.sizes.lock().unwrap().clone()
        }

        /// Waits until `n` batches have started.
        async fn started(&self, n: usize) -> Vec<usize> {
            for _ in 0..5_000 {
                if self.sizes.lock().unwrap().len() >= n {
                    return self.sizes();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("{n} batches did not start: {:?}", self.sizes());
        }
    }

    fn submit(b: &Arc<Batcher>, n: usize) -> Vec<tokio::task::JoinHandle<StoreResult<bool>>> {
        (0..n)
            .map(|i| {
                let b = Arc::clone(b);
                tokio::spawn(async move {
                    b.submit(Ingest {
                        key: format!("k{i}"),
                        ..Ingest::default()
                    })
                    .await
                })
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_batch_starts_only_with_min_overlap_deliveries() {
        let gate = Arc::new(Gate::new());
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let b = Arc::new(Batcher::start_with(
            Arc::clone(&gate) as Arc<dyn Sink>,
            clock,
            Duration::from_secs(60),
        ));
        // Alone, a delivery is written at once.
        let mut answers = submit(&b, 1);
        assert_eq!(gate.started(1).await, [1]);
        // While it is in flight, fewer than MIN_OVERLAP wait...
        answers.extend(submit(&b, MIN_OVERLAP - 1));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(gate.sizes(), [1]);
        // ...and one more starts the second batch with all of them.
        answers.extend(submit(&b, 1));
        assert_eq!(gate.started(2).await, [1, MIN_OVERLAP]);
        // With both in flight, later ones queue; when the first commits,
        // one batch is still in flight and two are too few to overlap it.
        answers.extend(submit(&b, 2));
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.release.add_permits(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(gate.sizes(), [1, MIN_OVERLAP]);
        // When nothing is in flight, they go at once, however few.
        gate.release.add_permits(1);
        assert_eq!(gate.started(3).await, [1, MIN_OVERLAP, 2]);
        gate.release.add_permits(1);
        for a in answers {
            assert!(a.await.unwrap().unwrap());
        }
        let stats = b.stats();
        assert_eq!(
            (stats.batches, stats.deliveries),
            (3, 1 + MIN_OVERLAP as u64 + 2)
        );
    }
}
