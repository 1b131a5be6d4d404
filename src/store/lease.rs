//! Cron idempotency: Vercel may deliver a cron event twice or start a run
//! while the previous one is still going. A job runs only while its lease is
//! held; a second caller gets [`LeaseOutcome::Busy`] and does nothing.

use std::future::Future;
use std::time::Duration;

use crate::core::clock::Clock;
use crate::store::{Store, StoreResult};

/// What happened to a leased job.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseOutcome<T> {
    /// The lease was taken and the job ran to completion.
    Ran(T),
    /// Another run holds the lease; the job did not run.
    Busy,
}

/// A random holder id, unique per run.
pub fn new_holder() -> String {
    format!("run_{:032x}", rand::random::<u128>())
}

/// Runs `job` only if lease `name` can be taken for `ttl`; releases it
/// afterwards. While the job runs the holder renews the lease every third of
/// `ttl` (a heartbeat), so a long job keeps it and a crashed holder's lease
/// frees within `ttl`. If release fails the lease simply expires.
pub async fn run_exclusive<T, F>(
    store: &dyn Store,
    clock: &dyn Clock,
    name: &str,
    ttl: Duration,
    job: F,
) -> StoreResult<LeaseOutcome<T>>
where
    F: Future<Output = T>,
{
    let holder = new_holder();
    if !store
        .try_acquire_lease(name, &holder, clock.now(), ttl)
        .await?
    {
        tracing::info!(lease = name, "lease busy; skipping run");
        return Ok(LeaseOutcome::Busy);
    }
    let heartbeat = async {
        loop {
            tokio::time::sleep(ttl / 3).await;
            match store
                .try_acquire_lease(name, &holder, clock.now(), ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::error!(lease = name, "lease lost to another holder"),
                Err(e) => tracing::warn!(lease = name, error = %e, "lease renewal failed"),
            }
        }
    };
    let out = tokio::select! {
        out = job => out,
        never = heartbeat => never,
    };
    if let Err(e) = store.release_lease(name, &holder).await {
        tracing::warn!(lease = name, error = %e, "lease release failed; it will expire on its own");
    }
    Ok(LeaseOutcome::Ran(out))
}
