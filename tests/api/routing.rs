//! Router behaviour shared by every route: unknown paths, methods, body
//! limits and cron authentication. Errors are JSON `{code, detail}`.

use super::helpers::{json, Backend, TestApp};

const CRON_SECRET: &str = "cron-secret-0123456789";

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let app = TestApp::spawn(Backend::Sqlite, &[]).await;
    let res = app.get("/api/does-not-exist").await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        json(res).await,
        serde_json::json!({"code": "not_found", "detail": "no such route"})
    );
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let app = TestApp::spawn(Backend::Sqlite, &[]).await;
    let res = app
        .client
        .delete(app.url("/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    assert_eq!(json(res).await["code"], "method_not_allowed");
    let res = app.client.put(app.url("/api/alerts")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, POST");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_whether_declared_or_streamed() {
    let app = TestApp::spawn(Backend::Sqlite, &[("MAX_BODY_BYTES", "2048")]).await;
    let big = vec![b'x'; 4096];
    let res = app
        .client
        .post(app.url("/api/alerts"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(json(res).await["code"], "payload_too_large");

    // Chunked, no Content-Length: the limit is enforced while reading.
    let stream = futures_stream(big);
    let res = app
        .client
        .post(app.url("/api/alerts"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

fn futures_stream(
    data: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(512).map(|c| Ok(c.to_vec())).collect();
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn cron_routes_require_the_cron_secret() {
    let app = TestApp::spawn(Backend::Sqlite, &[("CRON_SECRET", CRON_SECRET)]).await;
    for path in ["/api/cron/probe", "/api/cron/evaluate", "/api/cron/backups"] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 401, "{path} without a token");
        assert_eq!(json(res).await["code"], "unauthorized");

        let res = app
            .client
            .get(app.url(path))
            .bearer_auth("wrong-secret-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path} with a wrong token");

        let res = app
            .client
            .get(app.url(path))
            .bearer_auth(CRON_SECRET)
            .send()
            .await
            .unwrap();
        assert_ne!(res.status(), 401, "{path} with the right token");
    }
}

#[tokio::test]
async fn cron_routes_refuse_everything_when_no_secret_is_configured() {
    let app = TestApp::spawn(Backend::Sqlite, &[]).await;
    let res = app
        .client
        .get(app.url("/api/cron/probe"))
        .bearer_auth("")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(json(res).await["detail"]
        .as_str()
        .unwrap()
        .contains("CRON_SECRET is not configured"));
}

/// Every request's future is moved into the connection task, and a move is
/// a copy of the whole future. Each route's own future is boxed, so the
/// router's stays small: a health check or an alert does not carry (and
/// copy) the state of the largest route, a rollback.
#[tokio::test]
async fn the_routers_future_is_small_whatever_the_largest_route_needs() {
    let ts = super::helpers::TestStore::new(Backend::Sqlite).await;
    let mut cfg = super::helpers::config(&[]);
    cfg.store = ts.config.clone();
    let app = rollback_guard::runtime::app::App::with_store(
        cfg,
        std::sync::Arc::clone(&ts.store),
        super::helpers::system_clock(),
    );
    let in_memory = http::Request::get("/api/health")
        .body(bytes::Bytes::new())
        .unwrap();
    let streamed = http::Request::get("/api/health")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let handle = std::mem::size_of_val(&rollback_guard::web::handle(&app, in_memory));
    let incoming = std::mem::size_of_val(&rollback_guard::web::handle_incoming(&app, streamed));
    eprintln!("router future: handle {handle} bytes, handle_incoming {incoming} bytes");
    // Unboxed, both were 34 KB (the rollback route's state); boxed, about
    // 1.2 and 1.8 KB (the request itself, held by each layer).
    assert!(handle <= 4096, "handle's future is {handle} bytes");
    assert!(
        incoming <= 4096,
        "handle_incoming's future is {incoming} bytes"
    );
}
