//! A store that is down, or accepts connections and never answers, costs a
//! request a bounded time (2 s connect, 5 s per operation by default) and
//! answers 503 with `Retry-After`, so webhook senders retry instead of timing
//! out. On all three backends, and after a mid-run outage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollback_guard::integrations::clock::SystemClock;
use rollback_guard::runtime::app::App;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::helpers::{config, TestApp};
use super::senders::{post_generic, GENERIC};

/// Accepts connections and never says a word.
async fn silent_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    port
}

async fn app(vars: &[(&str, &str)]) -> TestApp {
    let mut all = vec![("GENERIC_WEBHOOK_SECRET", GENERIC)];
    all.extend_from_slice(vars);
    TestApp::serve(App::new(Ok(config(&all)), Arc::new(SystemClock))).await
}

/// A signed delivery answers 503 + Retry-After within `max`.
async fn refused_within(app: &TestApp, max: Duration, case: &str) {
    let started = Instant::now();
    let res = post_generic(
        app,
        &format!("msg_{}", rand::random::<u32>()),
        &serde_json::json!({"metrics": {"requests": 1}}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(res.status(), 503, "{case}");
    assert!(res.headers().contains_key("retry-after"), "{case}");
    assert!(took < max, "{case}: took {took:?}");
}

#[tokio::test]
async fn redis_down_or_silent_answers_503_quickly() {
    let closed = format!("redis://127.0.0.1:{}", crate::helpers::free_port());
    refused_within(
        &app(&[("REDIS_URL", &closed)]).await,
        Duration::from_secs(5),
        "redis closed port",
    )
    .await;
    let silent = format!("redis://127.0.0.1:{}", silent_server().await);
    refused_within(
        &app(&[("REDIS_URL", &silent)]).await,
        Duration::from_secs(5),
        "redis silent",
    )
    .await;
}

#[tokio::test]
async fn postgres_down_or_silent_answers_503_quickly() {
    let closed = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        crate::helpers::free_port()
    );
    refused_within(
        &app(&[("DATABASE_URL", &closed)]).await,
        Duration::from_secs(5),
        "postgres closed port",
    )
    .await;
    let silent = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        silent_server().await
    );
    refused_within(
        &app(&[("DATABASE_URL", &silent)]).await,
        Duration::from_secs(5),
        "postgres silent",
    )
    .await;
}

#[tokio::test]
async fn a_locked_sqlite_file_answers_503_within_the_operation_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guard.db");
    let path_s = path.display().to_string();
    let app = app(&[
        ("ROLLBACK_GUARD_SQLITE_PATH", &path_s),
        ("STORE_OPERATION_TIMEOUT", "1s"),
    ])
    .await;
    // Connect and migrate first, then someone else holds an exclusive lock.
    assert_eq!(
        post_generic(
            &app,
            "msg_ok",
            &serde_json::json!({"metrics": {"requests": 1}})
        )
        .await
        .status(),
        202
    );
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    refused_within(&app, Duration::from_secs(3), "sqlite locked").await;
    locker.execute_batch("COMMIT").unwrap();
}

/// Forwards to the real Redis until told to go silent.
async fn switchable_proxy(target: &str) -> (u16, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let on = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&on);
    let target = target.to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let flag = Arc::clone(&flag);
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&target).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let f1 = Arc::clone(&flag);
                let up = tokio::spawn(async move {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || !f1.load(Ordering::SeqCst) {
                            // Silent: swallow the request, never answer.
                            if n == 0 {
                                break;
                            }
                            continue;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut buf = [0u8; 8192];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = up.await;
            });
        }
    });
    (port, on)
}

#[tokio::test]
async fn a_redis_that_goes_silent_mid_run_costs_one_bounded_request() {
    let real = super::helpers::redis_url();
    let hostport = real
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let (port, on) = switchable_proxy(&hostport).await;
    let url = format!("redis://127.0.0.1:{port}");
    let prefix = format!("rg_{}:", rand::random::<u32>());
    let app = app(&[("REDIS_URL", &url), ("REDIS_KEY_PREFIX", &prefix)]).await;
    assert_eq!(
        post_generic(
            &app,
            "msg_before",
            &serde_json::json!({"metrics": {"requests": 1}})
        )
        .await
        .status(),
        202
    );
    on.store(false, Ordering::SeqCst);
    refused_within(&app, Duration::from_secs(8), "redis silent mid-run").await;
    refused_within(&app, Duration::from_secs(8), "redis still silent").await;
}

#[tokio::test]
async fn an_app_database_that_never_answers_does_not_stall_rollback_planning() {
    use super::seed::deploy;
    let silent = format!("postgres://app@127.0.0.1:{}/app", silent_server().await);
    let app = TestApp::spawn(
        super::helpers::Backend::Sqlite,
        &[
            ("OPERATOR_TOKEN", "operator-token-0123456789"),
            ("APP_DATABASE_URL", &silent),
        ],
    )
    .await;
    let s = app.store().clone();
    let now = rollback_guard::core::clock::Clock::now(&SystemClock).as_millis();
    deploy(s.as_ref(), "production", "dpl_good", now - 3_600_000).await;
    deploy(s.as_ref(), "production", "dpl_bad", now - 60_000).await;
    let started = Instant::now();
    let res = app
        .client
        .post(app.url("/api/rollback"))
        .bearer_auth("operator-token-0123456789")
        .json(&serde_json::json!({"environment": "production", "preview": true}))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(res.status(), 200);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let plan = super::helpers::json(res).await["plan"].clone();
    // The plan says why there is no database step.
    assert!(
        plan["database"].as_str().unwrap().contains("handshake"),
        "{plan}"
    );
}
