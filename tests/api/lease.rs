//! `lease::run_exclusive`: overlapping cron runs do the work once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rollback_guard::store::lease::{run_exclusive, LeaseOutcome};

use super::helpers::{system_clock, Backend, TestStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_execute_the_job_once_and_release_the_lease() {
    let t = TestStore::new(Backend::Postgres).await;
    let clock = system_clock();
    let ran = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();

    let first = {
        let (store, clock, ran) = (Arc::clone(&t.store), Arc::clone(&clock), Arc::clone(&ran));
        tokio::spawn(async move {
            run_exclusive(
                store.as_ref(),
                clock.as_ref(),
                "cron:evaluate",
                Duration::from_secs(60),
                async {
                    ran.fetch_add(1, Ordering::SeqCst);
                    let _ = started_tx.send(());
                    let _ = finish_rx.await;
                },
            )
            .await
            .unwrap()
        })
    };
    started_rx.await.unwrap();
    // A duplicate delivery while the first run is still going does nothing.
    let second = run_exclusive(
        t.store.as_ref(),
        clock.as_ref(),
        "cron:evaluate",
        Duration::from_secs(60),
        async {
            ran.fetch_add(1, Ordering::SeqCst);
        },
    )
    .await
    .unwrap();
    assert_eq!(second, LeaseOutcome::Busy);
    finish_tx.send(()).unwrap();
    assert_eq!(first.await.unwrap(), LeaseOutcome::Ran(()));
    assert_eq!(ran.load(Ordering::SeqCst), 1);

    // Released: the next scheduled run proceeds.
    let third = run_exclusive(
        t.store.as_ref(),
        clock.as_ref(),
        "cron:evaluate",
        Duration::from_secs(60),
        async { 7 },
    )
    .await
    .unwrap();
    assert_eq!(third, LeaseOutcome::Ran(7));
}
