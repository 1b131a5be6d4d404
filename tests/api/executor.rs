//! The executor and the real Vercel client against the fake Vercel API:
//! retries honouring Retry-After, polling, dry runs, and crash resumption
//! that never rolls back twice.

use std::sync::Arc;
use std::time::Duration;

use rollback_guard::core::clock::{ManualClock, Timestamp};
use rollback_guard::flows::execute::{self, Limits, Plan, Progress};
use rollback_guard::integrations::clock::SystemClock;
use rollback_guard::integrations::vercel::{Retry, VercelApi, VercelClient};
use rollback_guard::store::Store;
use serde_json::json;

use super::fake_vercel::{self, State};
use super::helpers::{Backend, TestStore};

fn fast_retry() -> Retry {
    Retry {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
    }
}

fn limits() -> Limits {
    Limits {
        poll_every: Duration::from_millis(20),
        wait_budget: Duration::from_secs(10),
        step_timeout: Duration::from_secs(300),
    }
}

fn plan(dry_run: bool) -> Plan {
    Plan {
        environment: "production".into(),
        incident_id: "inc_1".into(),
        from_deployment: "dpl_bad".into(),
        target_deployment: "dpl_good".into(),
        requested_by: "operator".into(),
        reason: "error rate 8% after deploy".into(),
        dry_run,
        migrations: vec![],
    }
}

#[tokio::test]
async fn the_client_retries_429_and_5xx_honouring_retry_after() {
    let fake = fake_vercel::start(State {
        rollback_failures: vec![429, 503],
        ..State::default()
    })
    .await;
    let client = VercelClient::new(fake_vercel::config(&fake.url), fast_retry());
    let started = std::time::Instant::now();
    client
        .request_rollback("dpl_good", "bad deploy")
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    let s = fake.state.lock().unwrap();
    assert_eq!(s.rollback_calls.len(), 3);
    assert_eq!(s.accepted, 1);
    let (path, query) = &s.rollback_calls[2];
    assert_eq!(path, "/v9/projects/prj_shop/rollback/dpl_good");
    assert!(
        query.contains("description=bad+deploy") && query.contains("teamId=team_1"),
        "{query}"
    );
}

#[tokio::test]
async fn the_client_gives_up_after_its_attempts_and_does_not_retry_4xx() {
    let fake = fake_vercel::start(State {
        rollback_failures: vec![500; 4],
        ..State::default()
    })
    .await;
    let client = VercelClient::new(fake_vercel::config(&fake.url), fast_retry());
    let err = client.request_rollback("dpl_good", "x").await.unwrap_err();
    assert!(
        matches!(
            err,
            rollback_guard::integrations::vercel::VercelError::GaveUp(4)
        ),
        "{err}"
    );
    let err = client
        .request_rollback("dpl_unknown", "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404 not_found"), "{err}");
    assert_eq!(
        fake.state.lock().unwrap().rollback_calls.len(),
        5,
        "4 attempts, then one 404 not retried"
    );
    let mut cfg = fake_vercel::config(&fake.url);
    cfg.token = rollback_guard::core::secret::Secret::new("wrong");
    let err = VercelClient::new(cfg, fast_retry())
        .request_rollback("dpl_good", "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403 forbidden"));
}

#[tokio::test]
async fn an_execution_rolls_back_polls_until_vercel_succeeds_and_audits_each_step() {
    let t = TestStore::new(Backend::Postgres).await;
    let fake = fake_vercel::start(State {
        rollback_failures: vec![429],
        polls_until_done: 3,
        ..State::default()
    })
    .await;
    let client = VercelClient::new(fake_vercel::config(&fake.url), fast_retry());
    let (id, created) = execute::start(t.store.as_ref(), &plan(false), SystemClock.now_ts())
        .await
        .unwrap();
    assert!(created);
    let progress = execute::drive(t.store.as_ref(), Some(&client), &SystemClock, &id, limits())
        .await
        .unwrap();
    assert_eq!(progress, Progress::Succeeded);
    assert_eq!(fake.state.lock().unwrap().accepted, 1);
    let doc = t.store.get_doc("execution", &id).await.unwrap().unwrap();
    assert_eq!(doc.status, "succeeded");
    assert_eq!(doc.body["steps"][0]["status"], "succeeded");
    let cur = rollback_guard::flows::registry::current(t.store.as_ref(), "production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cur.deployment_id.as_str(), cur.pinned), ("dpl_good", true));
    let actions: Vec<String> = t
        .store
        .audit_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert_eq!(
        actions,
        [
            "rollback_planned",
            "step_started",
            "vercel_rollback_requested",
            "step_succeeded",
            "rollback_succeeded"
        ]
    );
    // Planning the same incident again reuses the execution; driving it again does nothing.
    assert_eq!(
        execute::start(t.store.as_ref(), &plan(false), SystemClock.now_ts())
            .await
            .unwrap(),
        (id.clone(), false)
    );
    assert_eq!(
        execute::drive(t.store.as_ref(), Some(&client), &SystemClock, &id, limits())
            .await
            .unwrap(),
        Progress::Succeeded
    );
    assert_eq!(fake.state.lock().unwrap().accepted, 1);
}

#[tokio::test]
async fn a_crash_after_the_request_resumes_without_a_second_rollback() {
    let t = TestStore::new(Backend::Sqlite).await;
    let fake = fake_vercel::start(State::default()).await;
    let client = VercelClient::new(fake_vercel::config(&fake.url), fast_retry());
    let (id, _) = execute::start(t.store.as_ref(), &plan(false), SystemClock.now_ts())
        .await
        .unwrap();
    // Simulate the crashed run: the step was persisted as running, the request reached Vercel,
    // and the process died before recording anything else.
    let mut doc = t.store.get_doc("execution", &id).await.unwrap().unwrap();
    let started = SystemClock.now_ts().as_millis() - 1_000;
    doc.status = "running".into();
    doc.body["steps"][0]["status"] = json!("running");
    doc.body["steps"][0]["started_at"] = json!(started);
    t.store.put_doc(&doc, Some(doc.version)).await.unwrap();
    client
        .request_rollback("dpl_good", "first attempt")
        .await
        .unwrap();
    assert_eq!(fake.state.lock().unwrap().accepted, 1);

    // The evaluate cron resumes it.
    assert_eq!(
        execute::unfinished(t.store.as_ref()).await.unwrap(),
        vec![id.clone()]
    );
    assert_eq!(
        execute::drive(t.store.as_ref(), Some(&client), &SystemClock, &id, limits())
            .await
            .unwrap(),
        Progress::Succeeded
    );
    assert_eq!(
        fake.state.lock().unwrap().accepted,
        1,
        "the in-flight rollback was adopted, not repeated"
    );
    assert!(execute::unfinished(t.store.as_ref())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_crash_before_the_request_resumes_with_exactly_one_request() {
    let t = TestStore::new(Backend::Redis).await;
    let fake = fake_vercel::start(State::default()).await;
    let client = VercelClient::new(fake_vercel::config(&fake.url), fast_retry());
    let (id, _) = execute::start(t.store.as_ref(), &plan(false), SystemClock.now_ts())
        .await
        .unwrap();
    let mut doc = t.store.get_doc("execution", &id).await.unwrap().unwrap();
    doc.status = "running".into();
    doc.body["steps"][0]["status"] = json!("running");
    doc.body["steps"][0]["started_at"] = json!(SystemClock.now_ts().as_millis());
    t.store.put_doc(&doc, Some(doc.version)).await.unwrap();
    // Two resumptions race (duplicate cron deliveries): the lease lets one drive.
    let (a, b) = tokio::join!(
        execute::drive(t.store.as_ref(), Some(&client), &SystemClock, &id, limits()),
        execute::drive(t.store.as_ref(), Some(&client), &SystemClock, &id, limits()),
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    assert!(outcomes.contains(&Progress::Succeeded), "{outcomes:?}");
    assert_eq!(fake.state.lock().unwrap().accepted, 1);
}

#[tokio::test]
async fn a_failed_vercel_job_fails_the_execution_and_dry_runs_call_nothing() {
    let t = TestStore::new(Backend::Sqlite).await;
    let fake = fake_vercel::start(State {
        job_fails: true,
        ..State::default()
    })
    .await;
    let client = VercelClient::new(fake_vercel::config(&fake.url), fast_retry());
    let (id, _) = execute::start(t.store.as_ref(), &plan(false), SystemClock.now_ts())
        .await
        .unwrap();
    let p = execute::drive(t.store.as_ref(), Some(&client), &SystemClock, &id, limits())
        .await
        .unwrap();
    assert!(
        matches!(p, Progress::Failed(ref e) if e.contains("failed")),
        "{p:?}"
    );

    let t2 = TestStore::new(Backend::Sqlite).await;
    // A dry run checks what it can reach: an unknown target would be refused.
    let (id, _) = execute::start(t2.store.as_ref(), &plan(true), SystemClock.now_ts())
        .await
        .unwrap();
    let refused = execute::drive(t2.store.as_ref(), None, &SystemClock, &id, limits())
        .await
        .unwrap();
    assert!(
        matches!(refused, Progress::Refused(ref e) if e.contains("dpl_good does not exist")),
        "{refused:?}"
    );
    let t2 = TestStore::new(Backend::Sqlite).await;
    let t0 = SystemClock.now_ts().as_millis() - 3_600_000;
    super::seed::deploy(t2.store.as_ref(), "production", "dpl_good", t0).await;
    super::seed::deploy(t2.store.as_ref(), "production", "dpl_bad", t0 + 60_000).await;
    let (id, _) = execute::start(t2.store.as_ref(), &plan(true), SystemClock.now_ts())
        .await
        .unwrap();
    assert_eq!(
        execute::drive(t2.store.as_ref(), None, &SystemClock, &id, limits())
            .await
            .unwrap(),
        Progress::Succeeded
    );
    let doc = t2.store.get_doc("execution", &id).await.unwrap().unwrap();
    assert_eq!(doc.body["steps"][0]["detail"]["dry_run"], true);
    assert_eq!(
        fake.state.lock().unwrap().accepted,
        1,
        "only the first (non-dry) execution called Vercel"
    );
    assert_eq!(
        rollback_guard::flows::registry::current(t2.store.as_ref(), "production")
            .await
            .unwrap()
            .unwrap()
            .deployment_id,
        "dpl_bad",
        "a dry run moves nothing"
    );
}

#[tokio::test]
async fn a_vercel_job_that_never_finishes_times_out() {
    let t = TestStore::new(Backend::Sqlite).await;
    let fake = fake_vercel::start(State {
        polls_until_done: u32::MAX,
        ..State::default()
    })
    .await;
    let client = VercelClient::new(fake_vercel::config(&fake.url), fast_retry());
    let clock = ManualClock::new(Timestamp::from_millis(SystemClock.now_ts().as_millis()));
    let (id, _) = execute::start(t.store.as_ref(), &plan(false), clock.now_ts())
        .await
        .unwrap();
    let short = Limits {
        wait_budget: Duration::from_millis(100),
        ..limits()
    };
    assert_eq!(
        execute::drive(t.store.as_ref(), Some(&client), &clock, &id, short)
            .await
            .unwrap(),
        Progress::InProgress
    );
    clock.advance(Duration::from_secs(301));
    let p = execute::drive(t.store.as_ref(), Some(&client), &clock, &id, short)
        .await
        .unwrap();
    assert!(
        matches!(p, Progress::Failed(ref e) if e.contains("did not finish")),
        "{p:?}"
    );
    assert_eq!(fake.state.lock().unwrap().accepted, 1);
}

/// `Clock::now` without importing the trait everywhere.
trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl<C: rollback_guard::core::clock::Clock> NowTs for C {
    fn now_ts(&self) -> Timestamp {
        self.now()
    }
}

#[allow(dead_code)]
fn _assert_object_safe(_: Arc<dyn VercelApi>, _: Arc<dyn Store>) {}

#[tokio::test]
async fn the_next_plan_never_targets_a_rolled_back_or_failed_deployment() {
    use super::seed::{deploy, deployment_event};
    use rollback_guard::store::DeploymentState;
    let t = TestStore::new(Backend::Sqlite).await;
    let s = t.store.as_ref();
    let t0 = 1_795_600_800_000;
    deploy(s, "production", "dpl_0", t0).await;
    deploy(s, "production", "dpl_1", t0 + 60_000).await;
    deploy(s, "production", "dpl_2", t0 + 120_000).await;
    s.set_last_known_good("production", "dpl_1").await.unwrap();
    // dpl_2 was bad and rolled back to dpl_1 (production pinned there) …
    rollback_guard::flows::registry::set_current(
        s,
        "production",
        "dpl_1",
        Timestamp::from_millis(t0 + 180_000),
        true,
    )
    .await
    .unwrap();
    // … a later build errored …
    deployment_event(
        s,
        "production",
        "dpl_3",
        "deployment.error",
        DeploymentState::Error,
        t0 + 200_000,
    )
    .await;
    // … and now dpl_1 is bad too: the target is dpl_0, never dpl_2 or dpl_3.
    let plan = execute::plan(s, "production", "inc_x", "system", "r", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            plan.from_deployment.as_str(),
            plan.target_deployment.as_str()
        ),
        ("dpl_1", "dpl_0")
    );
    // With nothing healthy left to go back to, there is no plan.
    let only_bad = TestStore::new(Backend::Sqlite).await;
    let s = only_bad.store.as_ref();
    deploy(s, "production", "dpl_a", t0).await;
    deploy(s, "production", "dpl_b", t0 + 60_000).await;
    rollback_guard::flows::registry::set_current(
        s,
        "production",
        "dpl_a",
        Timestamp::from_millis(t0 + 120_000),
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        execute::plan(s, "production", "inc_y", "system", "r", true)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_target_vercel_does_not_have_ready_is_refused_before_anything_is_called() {
    for (target, state, why) in [
        ("dpl_good", Some("ERROR"), "dpl_good is ERROR, not READY"),
        ("dpl_unknown", None, "dpl_unknown does not exist"),
    ] {
        let t = TestStore::new(Backend::Sqlite).await;
        let fake = fake_vercel::start(State {
            ready_states: state
                .map(|s| vec![(target.to_string(), s.to_string())])
                .unwrap_or_default(),
            ..State::default()
        })
        .await;
        let client = VercelClient::new(fake_vercel::config(&fake.url), fast_retry());
        let mut p = plan(false);
        p.target_deployment = target.into();
        let (id, _) = execute::start(t.store.as_ref(), &p, SystemClock.now_ts())
            .await
            .unwrap();
        let progress = execute::drive(t.store.as_ref(), Some(&client), &SystemClock, &id, limits())
            .await
            .unwrap();
        assert!(
            matches!(progress, Progress::Refused(ref e) if e.contains(why)),
            "{progress:?}"
        );
        assert!(fake.state.lock().unwrap().rollback_calls.is_empty());
    }
}
