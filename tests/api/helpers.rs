//! Test harness: stores on every backend with per-test isolation, and the
//! real HTTP server on port 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rollback_guard::core::clock::Clock;
use rollback_guard::core::secret::Secret;
use rollback_guard::integrations::clock::SystemClock;
use rollback_guard::runtime::app::App;
use rollback_guard::runtime::config::{Config, StoreConfig};
use rollback_guard::store::{self, PostgresStore, RedisStore, Store};

pub fn pg_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A loopback port nothing listens on now: for a server a test starts on
/// it, or for a peer that refuses connections.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A unique lowercase name for a schema, key prefix or file.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
    Redis,
}

/// A migrated store in its own schema / prefix / file, removed on drop
/// (even when the test panics).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub config: StoreConfig,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    pub async fn new(backend: Backend) -> Self {
        let (config, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                (
                    StoreConfig::Sqlite {
                        path: dir.path().join("guard.db"),
                    },
                    Some(dir),
                )
            }
            Backend::Postgres => (
                StoreConfig::Postgres {
                    url: Secret::new(pg_url()),
                    schema: unique("rg_test"),
                },
                None,
            ),
            Backend::Redis => (
                StoreConfig::Redis {
                    url: Secret::new(redis_url()),
                    prefix: format!("{}:", unique("rgtest")),
                },
                None,
            ),
        };
        let store = store::connect(&config).await.unwrap_or_else(|e| {
            panic!("{backend:?} store must be reachable for this test (see tests/api/main.rs): {e}")
        });
        store.migrate().await.expect("migrate");
        Self {
            store,
            config,
            _dir: dir,
        }
    }

    /// A second, independent connection to the same data.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        let s = store::connect(&self.config).await.expect("reconnect");
        s.migrate().await.expect("migrate again");
        s
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let config = self.config.clone();
        // Drop cannot be async; clean up on a separate thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                match config {
                    StoreConfig::Postgres { url, schema } => {
                        if let Ok(s) = PostgresStore::connect(
                            url.expose(),
                            &schema,
                            std::time::Duration::from_secs(5),
                        ) {
                            let _ = s.drop_schema().await;
                        }
                    }
                    StoreConfig::Redis { url, prefix } => {
                        if let Ok(s) =
                            RedisStore::connect(url.expose(), &prefix, Default::default()).await
                        {
                            let _ = s.delete_all().await;
                        }
                    }
                    StoreConfig::Sqlite { .. } => {}
                }
            });
        })
        .join();
    }
}

/// Config from explicit variables only; the policy is the built-in default
/// unless `ROLLBACK_GUARD_POLICY_TOML` is given.
pub fn config(vars: &[(&str, &str)]) -> Config {
    try_config(vars).unwrap_or_else(|e| panic!("test config invalid: {e}"))
}

pub fn try_config(
    vars: &[(&str, &str)],
) -> Result<Config, rollback_guard::runtime::config::ConfigErrors> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(&move |k| {
        map.get(k)
            .cloned()
            .or_else(|| (k == "ROLLBACK_GUARD_POLICY_TOML").then(String::new))
    })
}

/// The real server on 127.0.0.1:0, stopped on drop.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The store the app uses (when spawned on a test store).
    pub store: Option<TestStore>,
}

impl TestApp {
    /// Serves an app on `backend` with the given extra variables.
    pub async fn spawn(backend: Backend, vars: &[(&str, &str)]) -> Self {
        let ts = TestStore::new(backend).await;
        let mut cfg = config(vars);
        cfg.store = ts.config.clone();
        let app = App::with_store(cfg, Arc::clone(&ts.store), Arc::new(SystemClock));
        let mut t = Self::serve(app).await;
        t.store = Some(ts);
        t
    }

    /// Like [`spawn`](Self::spawn), with a clock the test controls.
    pub async fn spawn_with_clock(
        backend: Backend,
        vars: &[(&str, &str)],
        clock: Arc<dyn Clock>,
    ) -> Self {
        let ts = TestStore::new(backend).await;
        let mut cfg = config(vars);
        cfg.store = ts.config.clone();
        let app = App::with_store(cfg, Arc::clone(&ts.store), clock);
        let mut t = Self::serve(app).await;
        t.store = Some(ts);
        t
    }

    /// Serves an already-built app.
    pub async fn serve(app: App) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(rollback_guard::runtime::server::serve(
            listener,
            Arc::new(app),
            async {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            store: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The app's store.
    pub fn store(&self) -> &std::sync::Arc<dyn Store> {
        &self
            .store
            .as_ref()
            .expect("spawned with a test store")
            .store
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The real clock, for tests that need a `&dyn Clock`.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// Reads a JSON body, failing the test with the raw text when it is not JSON.
pub async fn json(res: reqwest::Response) -> serde_json::Value {
    let text = res.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// What a fake upstream answers.
#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub body: &'static str,
    pub delay: std::time::Duration,
}

/// A real HTTP server on 127.0.0.1:0 answering each path with a canned
/// response; returns its base URL. Lives until the test's runtime ends.
pub async fn fake_upstream(routes: Vec<(&'static str, Canned)>) -> String {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let routes = Arc::clone(&routes);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let routes = Arc::clone(&routes);
                        async move {
                            let canned = routes
                                .iter()
                                .find(|(p, _)| *p == req.uri().path())
                                .map(|(_, c)| c.clone());
                            let c = canned.unwrap_or(Canned {
                                status: 404,
                                body: "no route",
                                delay: std::time::Duration::ZERO,
                            });
                            tokio::time::sleep(c.delay).await;
                            let mut res = hyper::Response::new(Full::new(
                                bytes::Bytes::from_static(c.body.as_bytes()),
                            ));
                            *res.status_mut() = hyper::StatusCode::from_u16(c.status).unwrap();
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}
