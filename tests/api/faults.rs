//! Fault injection at every step boundary: a store that fails its Nth write
//! (once) under the whole approve-and-roll-back path, for every N a clean
//! run makes, on all three backends. After the fault the world recovers the
//! way production does (the evaluate cron runs; the approver retries their
//! link if the page asked them to), and each run must end with exactly one
//! rollback requested from Vercel, the execution succeeded, the incident
//! closed, and an audit chain that verifies. Nothing is lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rollback_guard::core::audit::{AuditEntry, AuditRecord};
use rollback_guard::core::clock::{Clock, Timestamp};
use rollback_guard::integrations::clock::SystemClock;
use rollback_guard::runtime::app::App;
use rollback_guard::runtime::config::Config;
use rollback_guard::store::{
    Deployment, Doc, DocFilter, DocWrite, RollupRow, Store, StoreError, StoreResult,
};

use super::fake_http;
use super::fake_vercel::{self, State};
use super::helpers::{config, Backend, TestApp, TestStore};
use super::seed::{traffic, CRON};

/// Delegates to `inner`, failing the `fail_at`-th write (counting from 1; 0 never).
pub struct FaultyStore {
    pub inner: Arc<dyn Store>,
    pub writes: AtomicUsize,
    pub fail_at: usize,
    /// Audit records returned by reads (to check request paths stay bounded).
    pub audit_read: AtomicUsize,
}

impl FaultyStore {
    pub fn over(inner: Arc<dyn Store>, fail_at: usize) -> Self {
        Self {
            inner,
            writes: AtomicUsize::new(0),
            fail_at,
            audit_read: AtomicUsize::new(0),
        }
    }
}

impl FaultyStore {
    fn write(&self) -> StoreResult<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at {
            return Err(StoreError::Unavailable(format!(
                "injected fault at write {n}"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FaultyStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn migrate(&self) -> StoreResult<rollback_guard::store::Migration> {
        self.inner.migrate().await
    }
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        self.write()?;
        self.inner.try_acquire_lease(name, holder, now, ttl).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        self.write()?;
        self.inner.release_lease(name, holder).await
    }
    async fn claim_once(
        &self,
        scope: &str,
        key: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        self.write()?;
        self.inner.claim_once(scope, key, now, ttl).await
    }
    async fn release_claim(&self, scope: &str, key: &str) -> StoreResult<()> {
        self.write()?;
        self.inner.release_claim(scope, key).await
    }
    async fn put_doc(&self, doc: &Doc, expected: Option<i64>) -> StoreResult<DocWrite> {
        self.write()?;
        self.inner.put_doc(doc, expected).await
    }
    async fn get_doc(&self, kind: &str, id: &str) -> StoreResult<Option<Doc>> {
        self.inner.get_doc(kind, id).await
    }
    async fn list_docs(
        &self,
        kind: &str,
        filter: &DocFilter,
        limit: usize,
    ) -> StoreResult<Vec<Doc>> {
        self.inner.list_docs(kind, filter, limit).await
    }
    async fn add_rollup(
        &self,
        environment: &str,
        deployment: &str,
        minute: i64,
        values: &[(String, f64)],
    ) -> StoreResult<()> {
        self.write()?;
        self.inner
            .add_rollup(environment, deployment, minute, values)
            .await
    }
    async fn add_rollups_once(
        &self,
        scope: &str,
        key: &str,
        adds: &[rollback_guard::store::RollupAdd],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        self.write()?;
        self.inner
            .add_rollups_once(scope, key, adds, now, ttl)
            .await
    }
    async fn rollups(
        &self,
        environment: &str,
        deployment: &str,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<RollupRow>> {
        self.inner.rollups(environment, deployment, from, to).await
    }
    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<AuditRecord> {
        self.write()?;
        self.inner.append_audit(entry).await
    }
    async fn audit_after(&self, after: i64, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let r = self.inner.audit_after(after, limit).await?;
        self.audit_read.fetch_add(r.len(), Ordering::SeqCst);
        Ok(r)
    }
    async fn audit_tail(&self, n: usize) -> StoreResult<Vec<AuditRecord>> {
        let r = self.inner.audit_tail(n).await?;
        self.audit_read.fetch_add(r.len(), Ordering::SeqCst);
        Ok(r)
    }
    async fn audit_of(&self, subjects: &[String], limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let r = self.inner.audit_of(subjects, limit).await?;
        self.audit_read.fetch_add(r.len(), Ordering::SeqCst);
        Ok(r)
    }
    async fn upsert_deployment(&self, d: &Deployment) -> StoreResult<()> {
        self.write()?;
        self.inner.upsert_deployment(d).await
    }
    async fn deployment(&self, id: &str) -> StoreResult<Option<Deployment>> {
        self.inner.deployment(id).await
    }
    async fn recent_deployments(
        &self,
        environment: &str,
        limit: usize,
    ) -> StoreResult<Vec<Deployment>> {
        self.inner.recent_deployments(environment, limit).await
    }
    async fn set_last_known_good(&self, environment: &str, deployment_id: &str) -> StoreResult<()> {
        self.write()?;
        self.inner
            .set_last_known_good(environment, deployment_id)
            .await
    }
    async fn last_known_good(&self, environment: &str) -> StoreResult<Option<Deployment>> {
        self.inner.last_known_good(environment).await
    }
}

const KEYS: &str = super::approval::KEYS;

/// How production decides in a scenario.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// An approver must confirm by link.
    Approval,
    /// Critical verdicts roll back on their own.
    Auto,
}

fn scenario_config(resend: &str, vercel: &str, mode: Mode) -> Config {
    let policy = match mode {
        Mode::Approval => "[environments.production]\napproval = \"required\"\napprovers = [\"alice@example.com\"]\nquorum = 1\napproval_timeout = \"24h\"\n",
        Mode::Auto => "[environments.production]\napproval = \"auto\"\n",
    };
    config(&[
        ("CRON_SECRET", CRON),
        ("APPROVAL_SIGNING_KEYS", KEYS),
        ("ROLLBACK_GUARD_POLICY_TOML", policy),
        ("RESEND_API_KEY", "re_test_key_123"),
        ("EMAIL_FROM", "Rollback Guard <guard@example.com>"),
        ("RESEND_API_BASE", resend),
        ("VERCEL_TOKEN", fake_vercel::TOKEN),
        ("VERCEL_PROJECT_ID", fake_vercel::PROJECT),
        ("VERCEL_API_BASE", vercel),
    ])
}

/// The newest approval link mailed so far.
fn latest_link(resend: &fake_http::Recorder) -> Option<String> {
    resend
        .requests
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r.path == "/emails" && r.body.contains("api/approve?token="))
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            let text = v["text"].as_str().unwrap().to_string();
            let start = text.find("http://").unwrap();
            text[start..].split_whitespace().next().unwrap().to_string()
        })
}

async fn approve(app: &TestApp, link: &str) -> u16 {
    let token = link.split("token=").nth(1).unwrap();
    app.client
        .post(app.url("/api/approve"))
        .form(&[("token", token), ("decision", "approve")])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// What the evaluate cron does, without its per-minute claim (the test runs
/// it several times within one minute).
async fn evaluate_now(app: &App, store: &dyn Store, cfg: &Config) {
    let now = SystemClock.now();
    let ctx = app.decide_ctx(store, cfg, "http://127.0.0.1".into());
    let outcomes = rollback_guard::flows::evaluate::run(store, &cfg.policy.rules, now)
        .await
        .unwrap();
    for o in &outcomes {
        rollback_guard::flows::decide::act_on(&ctx, o)
            .await
            .unwrap();
    }
    rollback_guard::flows::decide::housekeeping(&ctx)
        .await
        .unwrap();
}

/// One run with write `fail_at` failing; returns how many writes the faulty
/// phase made.
async fn run(backend: Backend, mode: Mode, fail_at: usize) -> usize {
    let resend = fake_http::start(vec![], (200, r#"{"id":"email_1"}"#)).await;
    let vercel = fake_vercel::start(State::default()).await;
    let ts = TestStore::new(backend).await;
    let healthy = Arc::clone(&ts.store);
    let t0 = SystemClock.now().as_millis() - 6 * 60_000;
    super::approval::bad_deploy(healthy.as_ref(), "production", t0).await;
    // The bad deployment keeps failing while the test runs.
    traffic(
        healthy.as_ref(),
        "production",
        "dpl_bad",
        t0 + 6 * 60_000,
        t0 + 30 * 60_000,
        200.0,
        30.0,
    )
    .await;
    let mut cfg = scenario_config(&resend.url, &vercel.url, mode);
    cfg.store = ts.config.clone();

    // The faulty phase, through HTTP: the evaluate cron, then the approver.
    let faulty = Arc::new(FaultyStore::over(Arc::clone(&healthy), fail_at));
    let app = TestApp::serve(App::with_store(
        cfg.clone(),
        Arc::clone(&faulty) as Arc<dyn Store>,
        Arc::new(SystemClock),
    ))
    .await;
    let _ = app
        .client
        .get(app.url("/api/cron/evaluate"))
        .bearer_auth(CRON)
        .send()
        .await
        .unwrap();
    if let Some(link) = latest_link(&resend) {
        approve(&app, &link).await;
    }
    let writes = faulty.writes.load(Ordering::SeqCst);

    // Recovery: the next evaluate runs; the approver retries if still asked.
    let healthy_app = App::with_store(cfg.clone(), Arc::clone(&healthy), Arc::new(SystemClock));
    let retry_app = TestApp::serve(App::with_store(
        cfg.clone(),
        Arc::clone(&healthy),
        Arc::new(SystemClock),
    ))
    .await;
    for _ in 0..3 {
        evaluate_now(&healthy_app, healthy.as_ref(), &cfg).await;
        let pending = healthy
            .list_docs(
                "approval",
                &DocFilter {
                    scope: None,
                    status: Some("pending".into()),
                },
                10,
            )
            .await
            .unwrap();
        if let (false, Some(link)) = (pending.is_empty(), latest_link(&resend)) {
            approve(&retry_app, &link).await;
        }
    }

    let context = format!("{backend:?} {mode:?}, fault at write {fail_at} of {writes}");
    assert_eq!(
        vercel.state.lock().unwrap().accepted,
        1,
        "exactly one rollback ({context})"
    );
    let incidents = healthy
        .list_docs("incident", &DocFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(incidents.len(), 1, "one incident ({context})");
    let exe = healthy
        .get_doc("execution", &format!("exe_{}", incidents[0].id))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no execution ({context})"));
    assert_eq!(exe.status, "succeeded", "{context}: {}", exe.body);
    assert_eq!(
        incidents[0].status, "closed",
        "{context}: {}",
        incidents[0].body
    );
    let audit = healthy.audit_after(0, 10_000).await.unwrap();
    rollback_guard::core::audit::verify_chain(
        (0, rollback_guard::core::audit::GENESIS_HASH),
        &audit,
    )
    .unwrap();
    writes
}

async fn every_write_boundary(backend: Backend, mode: Mode) {
    let total = run(backend, mode, 0).await;
    assert!(total > 10, "the clean run made only {total} writes");
    for n in 1..=total {
        run(backend, mode, n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_fault_at_any_write_ends_in_exactly_one_rollback_on_sqlite() {
    every_write_boundary(Backend::Sqlite, Mode::Approval).await;
    every_write_boundary(Backend::Sqlite, Mode::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_fault_at_any_write_ends_in_exactly_one_rollback_on_postgres() {
    every_write_boundary(Backend::Postgres, Mode::Approval).await;
    every_write_boundary(Backend::Postgres, Mode::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_fault_at_any_write_ends_in_exactly_one_rollback_on_redis() {
    every_write_boundary(Backend::Redis, Mode::Approval).await;
    every_write_boundary(Backend::Redis, Mode::Auto).await;
}

/// A log drain batch with lines of two deployments (two rollup batches).
fn two_deployment_batch(t: i64) -> String {
    [
        serde_json::json!({"id": "1", "deploymentId": "dpl_a", "source": "lambda", "host": "a.vercel.app", "timestamp": t, "projectId": "prj_1", "level": "info", "requestId": "r1", "statusCode": 200, "proxy": {"statusCode": 200}, "environment": "production"}),
        serde_json::json!({"id": "2", "deploymentId": "dpl_a", "source": "lambda", "host": "a.vercel.app", "timestamp": t + 1, "projectId": "prj_1", "level": "error", "requestId": "r2", "statusCode": 500, "proxy": {"statusCode": 500}, "environment": "production"}),
        serde_json::json!({"id": "3", "deploymentId": "dpl_b", "source": "lambda", "host": "b.vercel.app", "timestamp": t + 2, "projectId": "prj_1", "level": "info", "requestId": "r3", "statusCode": 200, "proxy": {"statusCode": 200}, "environment": "production"}),
    ]
    .iter()
    .map(|l| format!("{l}\n"))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_fails_part_way_is_counted_exactly_once_after_the_retry() {
    let t0 = SystemClock.now().as_millis() - 60_000;
    let body = two_deployment_batch(t0);
    let minute = t0 / 60_000;
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::Redis] {
        let mut fail_at = 1;
        loop {
            let ts = TestStore::new(backend).await;
            let mut cfg = config(&[("VERCEL_LOG_DRAIN_SECRET", "vercel-drain-secret-1")]);
            cfg.store = ts.config.clone();
            let faulty = Arc::new(FaultyStore::over(Arc::clone(&ts.store), fail_at));
            let app = TestApp::serve(App::with_store(
                cfg.clone(),
                Arc::clone(&faulty) as Arc<dyn Store>,
                Arc::new(SystemClock),
            ))
            .await;
            let first = super::senders::post_drain(&app, &body).await.status();
            let writes = faulty.writes.load(Ordering::SeqCst);
            // The sender retries the same delivery after a 503.
            let healthy = TestApp::serve(App::with_store(
                cfg,
                Arc::clone(&ts.store),
                Arc::new(SystemClock),
            ))
            .await;
            let retry = super::senders::post_drain(&healthy, &body).await.status();
            assert!(
                retry.is_success(),
                "{backend:?} fault {fail_at}: retry {retry}"
            );
            for (dep, requests, errors) in [("dpl_a", 2, 1), ("dpl_b", 1, 0)] {
                let w = rollback_guard::core::detect::window::Window::from_rows(
                    &ts.store
                        .rollups("production", dep, minute, minute + 1)
                        .await
                        .unwrap(),
                );
                assert_eq!(
                    (w.requests, w.errors_5xx),
                    (requests, errors),
                    "{backend:?}, fault at write {fail_at} of {writes} (first answer {first})"
                );
            }
            if fail_at > writes {
                break;
            }
            fail_at += 1;
        }
    }
}

/// A deployment webhook goes one at a time: its dedupe claim, then the
/// registry and audit writes. When a write after the claim fails, the claim
/// is withdrawn, so the sender's retry is recorded (once), not dropped as a
/// duplicate of a delivery that never landed.
#[tokio::test]
async fn a_deployment_webhook_that_fails_after_its_claim_is_recorded_on_the_retry() {
    use rollback_guard::flows::intake::record_delivery_once;
    use rollback_guard::flows::intake::signal::{DeploymentEvent, Signal};
    let ts = TestStore::new(Backend::Sqlite).await;
    // Write 1 is the claim; write 2, the first registry write, fails.
    let faulty = FaultyStore::over(Arc::clone(&ts.store), 2);
    let now = SystemClock.now();
    let signals = [Signal::Deployment(DeploymentEvent {
        id: "dpl_retry".into(),
        state: rollback_guard::store::DeploymentState::Ready,
        environment: "production".into(),
        url: "https://dpl-retry.vercel.app".into(),
        git_sha: None,
        at: now,
        event: "deployment.succeeded".into(),
        meta: serde_json::json!({}),
    })];
    let deliver = || record_delivery_once(&faulty, "intake:vercel", "wh_1", &signals, now, None);
    let stored = || async {
        faulty
            .inner
            .deployment("dpl_retry")
            .await
            .unwrap()
            .is_some()
    };
    assert!(
        deliver().await.is_err(),
        "the injected fault fails the delivery"
    );
    assert!(!stored().await);
    let retry = deliver().await.unwrap();
    assert!(retry.is_some(), "the retry is recorded, not a duplicate");
    assert!(stored().await);
    let again = deliver().await.unwrap();
    assert!(
        again.is_none(),
        "a delivery recorded once is a duplicate after"
    );
}
