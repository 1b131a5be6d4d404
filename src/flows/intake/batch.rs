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
//!
//! A copy of a delivery (both replicas of an Alertmanager HA pair send
//! every notification) is answered here when the batcher knows its claim
//! (see [`super::recent`]): at once as a duplicate while the claim this
//! instance recorded is held, or, while the first copy's batch is in
//! flight, when that batch ends (a duplicate if it recorded the delivery;
//! else the copy goes to the store). Alternated in `cargo bench --bench
//! guard`'s HA pair run, Postgres went from 16.1-16.6k to 23.8-25.1k
//! requests/s (81-88 to 57-60 µs of CPU per request, all processes), and
//! the database's log no longer shows a claim conflict per copy; Redis,
//! whose script answered copies cheaply already, stayed at about 41k.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use foldhash::fast::RandomState;
use tokio::sync::{mpsc, oneshot};

use super::recent::{Recent, KEPT};
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
/// [`WRITERS`] at once (see the module docs for when one starts). A copy
/// of a delivery this instance recorded, or is recording, is answered here
/// (see [`super::recent`]): at once while the claim it recorded is held,
/// or, while the first copy's batch is in flight, when that batch ends.
async fn run(
    mut rx: mpsc::Receiver<Job>,
    sink: Arc<dyn Sink>,
    counters: Arc<Counters>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
) {
    let mut queued: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut known = Known {
        recent: Recent::with_capacity(KEPT),
        flying: HashMap::default(),
        hasher: RandomState::default(),
        held: Vec::new(),
    };
    let mut open = true;
    loop {
        let start = !queued.is_empty()
            && (in_flight.is_empty() || (in_flight.len() < WRITERS && queued.len() >= MIN_OVERLAP));
        if start {
            let jobs = std::mem::replace(&mut queued, Vec::with_capacity(MAX_BATCH));
            let keys: Vec<u64> = jobs
                .iter()
                .map(|j| known.hash(&j.item.scope, &j.item.key))
                .collect();
            let (sink, counters) = (Arc::clone(&sink), Arc::clone(&counters));
            let id = in_flight
                .spawn(write(jobs, sink, counters, clock.now(), ttl))
                .id();
            for h in keys {
                known.flying.insert(h, id);
            }
            continue;
        }
        if !open && queued.is_empty() && in_flight.is_empty() && known.held.is_empty() {
            return;
        }
        let room = MAX_BATCH - queued.len();
        tokio::select! {
            n = rx.recv_many(&mut queued, room), if open && room > 0 => {
                open = n > 0;
                let from = queued.len() - n;
                known.sort(&mut queued, from, clock.now());
            }
            Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                // A batch that panicked dropped its replies (its senders get
                // 503) and recorded nothing known: its held copies go to the
                // store.
                let (id, done) = match done {
                    Ok((id, done)) => (id, Some(done)),
                    Err(e) => (e.id(), None),
                };
                known.flying.retain(|_, batch| *batch != id);
                if let Some(done) = done {
                    known.record(done);
                }
                known.release_held(&mut queued, clock.now());
            }
        }
    }
}

/// What the batcher knows of claims without the store (see
/// [`super::recent`]), and the copies it holds back meanwhile.
struct Known {
    /// Claims this instance recorded, until they end.
    recent: Recent,
    /// Claims in a batch in flight, by a hash of the claim ([`Self::hash`]),
    /// with the batch's task. A hash is enough: a delivery whose hash
    /// matches is only held back until that batch ends, and then sorted
    /// again, against the claims `recent` knows exactly; a collision delays
    /// it by one batch and changes no answer.
    flying: HashMap<u64, tokio::task::Id, RandomState>,
    hasher: RandomState,
    /// Copies of a delivery in flight, waiting for its batch to end.
    held: Vec<Job>,
}

impl Known {
    fn hash(&self, scope: &str, key: &str) -> u64 {
        self.hasher.hash_one((scope, key))
    }

    /// Answers the jobs of `queued[from..]` whose claim this instance holds
    /// (duplicates) and holds back those whose claim is in flight; the rest
    /// keep their order (a batch folds an alert's states in arrival order).
    fn sort(&mut self, queued: &mut Vec<Job>, from: usize, now: Timestamp) {
        if from == queued.len() {
            return;
        }
        let arrived: Vec<Job> = queued.drain(from..).collect();
        for job in arrived {
            let (scope, key) = (&job.item.scope, &job.item.key);
            if self.recent.holds(scope, key, now) {
                let _ = job.reply.send(Ok(false));
            } else if self.flying.contains_key(&self.hash(scope, key)) {
                self.held.push(job);
            } else {
                queued.push(job);
            }
        }
    }

    /// A batch ended: the claims it took are known until they end.
    fn record(&mut self, done: BatchDone) {
        let Some(taken) = done.taken else { return };
        for ((scope, key), took) in done.claims.into_iter().zip(taken) {
            if took {
                self.recent.insert(scope, key, done.until);
            }
        }
    }

    /// After a batch ended: the copies it held back are answered (their
    /// delivery was recorded) or go to the store (it was not).
    fn release_held(&mut self, queued: &mut Vec<Job>, now: Timestamp) {
        let from = queued.len();
        queued.append(&mut self.held);
        self.sort(queued, from, now);
    }
}

/// A batch's end: its claims, in order, which were taken (`None`: the
/// batch failed), and when the taken ones end (`now` plus the window; the
/// store's own end is never earlier).
struct BatchDone {
    claims: Vec<(String, String)>,
    taken: Option<Vec<bool>>,
    until: Timestamp,
}

/// Records `jobs` in one call and answers each.
async fn write(
    mut jobs: Vec<Job>,
    sink: Arc<dyn Sink>,
    counters: Arc<Counters>,
    now: Timestamp,
    ttl: Duration,
) -> BatchDone {
    let items: Vec<Ingest> = jobs
        .iter_mut()
        .map(|j| std::mem::take(&mut j.item))
        .collect();
    let started = std::time::Instant::now();
    let result = sink.ingest(&items, now, ttl).await;
    counters.add(items.len(), started.elapsed());
    let claims = items.into_iter().map(|i| (i.scope, i.key)).collect();
    let taken = match result {
        Ok(taken) if taken.len() == jobs.len() => {
            for (job, t) in jobs.into_iter().zip(&taken) {
                let _ = job.reply.send(Ok(*t));
            }
            Some(taken)
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
            None
        }
        Err(e) => {
            // Every delivery of the batch is refused alike; senders retry.
            let text = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(same_kind(&e, &text)));
            }
            None
        }
    };
    BatchDone {
        claims,
        taken,
        until: now.plus(ttl),
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
        /// The next batch fails (as a store outage would).
        fail_next: std::sync::atomic::AtomicBool,
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
            if self
                .fail_next
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(StoreError::Unavailable("injected".into()));
            }
            Ok(vec![true; batch.len()])
        }
    }

    impl Gate {
        fn new() -> Self {
            Self {
                sizes: Mutex::new(Vec::new()),
                release: Semaphore::new(0),
                fail_next: std::sync::atomic::AtomicBool::new(false),
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

    /// Submits `n` new deliveries (distinct keys).
    fn submit(b: &Arc<Batcher>, n: usize) -> Vec<tokio::task::JoinHandle<StoreResult<bool>>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        (0..n)
            .map(|_| submit_key(b, &format!("k{}", NEXT.fetch_add(1, Relaxed))))
            .collect()
    }

    /// Submits a delivery of `key`.
    fn submit_key(b: &Arc<Batcher>, key: &str) -> tokio::task::JoinHandle<StoreResult<bool>> {
        let b = Arc::clone(b);
        let key = key.to_string();
        tokio::spawn(async move {
            b.submit(Ingest {
                scope: "intake:test".into(),
                key,
                ..Ingest::default()
            })
            .await
        })
    }

    fn batcher(gate: &Arc<Gate>, clock: &Arc<ManualClock>) -> Arc<Batcher> {
        Arc::new(Batcher::start_with(
            Arc::clone(gate) as Arc<dyn Sink>,
            Arc::clone(clock) as Arc<dyn Clock>,
            Duration::from_secs(60),
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_batch_starts_only_with_min_overlap_deliveries() {
        let gate = Arc::new(Gate::new());
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let b = batcher(&gate, &clock);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_of_a_delivery_in_flight_waits_for_it_and_is_a_duplicate_without_the_store() {
        let gate = Arc::new(Gate::new());
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let b = batcher(&gate, &clock);
        let first = submit_key(&b, "ha");
        assert_eq!(gate.started(1).await, [1]);
        // The other replica's copy, while the first is in flight, and
        // enough other deliveries to start a second batch without it.
        let copy = submit_key(&b, "ha");
        let others = submit(&b, MIN_OVERLAP);
        assert_eq!(gate.started(2).await, [1, MIN_OVERLAP]);
        gate.release.add_permits(2);
        assert!(first.await.unwrap().unwrap());
        assert!(!copy.await.unwrap().unwrap(), "the copy is a duplicate");
        for o in others {
            assert!(o.await.unwrap().unwrap());
        }
        // A later copy is answered at once while the claim it recorded is
        // held; once that ends, a copy goes to the store again.
        assert!(!submit_key(&b, "ha").await.unwrap().unwrap());
        assert_eq!(gate.sizes(), [1, MIN_OVERLAP]);
        clock.advance(Duration::from_secs(60));
        let after = submit_key(&b, "ha");
        assert_eq!(gate.started(3).await, [1, MIN_OVERLAP, 1]);
        gate.release.add_permits(1);
        assert!(after.await.unwrap().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_of_a_delivery_whose_batch_failed_goes_to_the_store() {
        let gate = Arc::new(Gate::new());
        gate.fail_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let b = batcher(&gate, &clock);
        let first = submit_key(&b, "ha");
        assert_eq!(gate.started(1).await, [1]);
        let copy = submit_key(&b, "ha");
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.release.add_permits(1);
        assert!(first.await.unwrap().is_err());
        // Held back while the first was in flight, it is tried for real.
        assert_eq!(gate.started(2).await, [1, 1]);
        gate.release.add_permits(1);
        assert!(copy.await.unwrap().unwrap());
    }
}
