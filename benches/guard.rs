//! `cargo bench --bench guard`: measured side by side in one run, ratios printed.
//!
//! 1. Intake throughput on loopback: rollback-guard's `/api/alerts` (Postgres
//!    store) vs the real Alertmanager's own `/api/v2/alerts`, same payloads,
//!    same concurrency; with the CPU each side used per alert (/proc).
//! 2. Intake server time (router only, no network): p50/p99 against the 5 ms bar.
//! 3. Evaluation over 1,000,000 stored request signals: `evaluate::run` on
//!    rollups vs a raw-event SQL scan of the same window in the same Postgres.
//!
//! Needs Postgres (`TEST_DATABASE_URL`) and `/usr/bin/prometheus-alertmanager`.
//! Starts by removing what an interrupted run left behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollback_guard::core::clock::{Clock, ManualClock, Timestamp};
use rollback_guard::core::detect::sketch::LatencySketch;
use rollback_guard::core::detect::window::{minute_of, ERRORS_5XX, REQUESTS};
use rollback_guard::core::secret::Secret;
use rollback_guard::runtime::app::App;
use rollback_guard::runtime::config::{Config, StoreConfig};
use rollback_guard::store::{PostgresStore, Store};
use serde_json::json;

const TOKEN: &str = "alertmanager-token-0123456789";
const DRAIN_SECRET: &str = "vercel-drain-secret-0123456789";
/// Lines per log-drain request (Vercel batches a drain's lines).
const DRAIN_LINES: usize = 200;
const DRAIN_REQUESTS: usize = 1_500;
/// Alerts per system and round: a second or two of load each (6,000 was a
/// fifth of a second on Redis, too short for a steady rate).
const PER_ROUND: usize = 29_800;
/// Rounds of the three systems back to back; ratios are their median.
const ROUNDS: usize = 3;
/// Alerts each system gets before measuring (connections, caches).
const WARMUP: usize = 200;
const CONCURRENCY: usize = 32;
const SIGNALS: u64 = 1_000_000;

fn pg_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn config(schema: &str) -> Config {
    let vars = [
        ("ALERTMANAGER_TOKEN", TOKEN),
        ("VERCEL_LOG_DRAIN_SECRET", DRAIN_SECRET),
        ("ROLLBACK_GUARD_POLICY_TOML", ""),
    ];
    let mut c = Config::from_lookup(&|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    c.store = StoreConfig::Postgres {
        url: Secret::new(pg_url()),
        schema: schema.into(),
    };
    c
}

fn alert_body(i: usize) -> serde_json::Value {
    json!({"version": "4", "status": "firing", "groupKey": format!("{{}}:{{alertname=\"A{i}\"}}"), "receiver": "guard",
           "alerts": [{"status": "firing", "labels": {"alertname": format!("A{i}"), "severity": "warning", "environment": "production"},
                       "annotations": {"summary": "bench"}, "startsAt": "2026-11-25T10:00:00Z", "fingerprint": format!("{i:016x}")}]})
}

/// CPU seconds used so far: by this process, by its load generator's
/// threads (see [`loadgen`]), and by every process whose name starts with
/// `server` (read from /proc: Linux; zeros elsewhere). /proc counts in
/// USER_HZ, 100 on Linux whatever the kernel's own tick.
fn cpu_seconds(server: &str) -> (f64, f64, f64) {
    fn ticks(stat: &str) -> Option<(String, f64)> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let t = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some((stat[open + 1..close].to_string(), t / 100.0))
    }
    let stats = |dir: &str| -> Vec<(String, f64)> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                ticks(&stat)
            })
            .collect()
    };
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks(&s))
        .map_or(0.0, |(_, t)| t);
    let of = |list: Vec<(String, f64)>, prefix: &str| -> f64 {
        list.iter()
            .filter(|(comm, _)| comm.starts_with(prefix))
            .map(|(_, t)| t)
            .sum()
    };
    let loadgen = of(stats("/proc/self/task"), LOADGEN);
    (own, loadgen, of(stats("/proc"), server))
}

/// CPU per alert, in µs, while a load ran.
#[derive(Clone, Copy)]
struct Cpu {
    /// This process but its load generator: the guard, in the guard's runs.
    guard: f64,
    loadgen: f64,
    server: f64,
}

impl Cpu {
    fn total(&self) -> f64 {
        self.guard + self.loadgen + self.server
    }
}

/// Runs `load` and returns its result with the CPU per alert (µs) used
/// meanwhile by this process (split into the load generator and the rest)
/// and by the `server` processes.
async fn with_cpu<T>(
    server: &str,
    alerts: usize,
    load: impl std::future::Future<Output = T>,
) -> (T, Cpu) {
    let (own0, lg0, srv0) = cpu_seconds(server);
    let out = load.await;
    let (own1, lg1, srv1) = cpu_seconds(server);
    let per = |d: f64| d * 1e6 / alerts as f64;
    let cpu = Cpu {
        guard: per((own1 - own0) - (lg1 - lg0)),
        loadgen: per(lg1 - lg0),
        server: per(srv1 - srv0),
    };
    (out, cpu)
}

/// Names of the load generator's threads.
const LOADGEN: &str = "loadgen";

/// The load generator's own runtime, one thread per core (as `wrk -t`):
/// the OS schedules its threads beside the server's, as it would a `wrk`
/// process. On the guard's runtime, the guard's tasks queued behind 32
/// clients' tasks, which no server has in production and Alertmanager did
/// not have here.
fn loadgen() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name(LOADGEN)
            .enable_all()
            .build()
            .expect("the load generator's runtime")
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// One POST as the load generator writes it.
struct Post {
    url: url::Url,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn post(url: &str, body: Vec<u8>) -> Post {
    Post {
        url: url::Url::parse(url).expect("bench url"),
        headers: Vec::new(),
        body,
    }
}

impl Post {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The request as HTTP/1.1 bytes on a kept-alive connection.
    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "POST {}{} HTTP/1.1\r\nhost: {}:{}\r\ncontent-length: {}\r\n",
            self.url.path(),
            self.url
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default(),
            self.url.host_str().unwrap_or("127.0.0.1"),
            self.url.port_or_known_default().unwrap_or(80),
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reads one response from `conn` (`buf` keeps what arrived past it) and
/// returns its status. Enough HTTP/1.1 for these two servers' answers:
/// a status line, headers and a `content-length` body.
async fn read_response(
    conn: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).expect("ascii head");
            let status: u16 = head[9..12].parse().expect("status");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let n = conn.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `n` requests with `CONCURRENCY` workers, each on one kept-alive
/// connection; returns (requests/s, sorted latencies in ms).
///
/// The load generator is a minimal HTTP/1.1 client (as `wrk` is), not
/// reqwest: it shares the machine's two cores with the servers it measures,
/// and reqwest cost about as much CPU per request as Alertmanager itself,
/// which pulled every ratio towards 1.
async fn blast<F, R>(n: usize, make: F) -> (f64, Vec<f64>)
where
    F: Fn(usize) -> R + Send + Sync + 'static,
    R: AsRef<[u8]> + Send,
{
    use tokio::io::AsyncWriteExt;
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = {
        // "POST /path HTTP/1.1\r\nhost: 127.0.0.1:port\r\n..."
        let request = make(0);
        let head = std::str::from_utf8(request.as_ref()).expect("ascii head");
        head.lines()
            .find_map(|l| l.strip_prefix("host: "))
            .expect("a host header")
            .to_string()
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (make, next, addr) = (Arc::clone(&make), Arc::clone(&next), addr.clone());
        tasks.push(loadgen().spawn(async move {
            let mut lat = Vec::new();
            let mut conn: Option<tokio::net::TcpStream> = None;
            let mut buf = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return lat;
                }
                let request = make(i);
                let t = Instant::now();
                // A connection the server closed is opened again, once.
                let mut status = None;
                for _ in 0..2 {
                    if conn.is_none() {
                        let c = tokio::net::TcpStream::connect(&addr)
                            .await
                            .expect("connect");
                        c.set_nodelay(true).unwrap();
                        conn = Some(c);
                        buf.clear();
                    }
                    let c = conn.as_mut().unwrap();
                    let sent = c.write_all(request.as_ref()).await;
                    match sent {
                        Ok(()) => match read_response(c, &mut buf).await {
                            Ok(s) => {
                                status = Some(s);
                                break;
                            }
                            Err(_) => conn = None,
                        },
                        Err(_) => conn = None,
                    }
                }
                let status = status.expect("an answer");
                assert!((200..300).contains(&status), "status {status}");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    (rate, all)
}

async fn start_alertmanager(dir: &std::path::Path) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Routed to a receiver with no integrations: we measure its intake, not its notifier.
    std::fs::write(
        dir.join("am.yml"),
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let child = tokio::process::Command::new("/usr/bin/prometheus-alertmanager")
        .arg(format!("--config.file={}", dir.join("am.yml").display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start /usr/bin/prometheus-alertmanager");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if reqwest::get(format!("{url}/-/ready"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (child, url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("alertmanager did not start");
}

/// Serves the guard on `store`; returns the app and the intake URL.
async fn serve_guard(store: Arc<dyn Store>, schema: &str) -> (Arc<App>, String) {
    let app = Arc::new(App::with_store(
        config(schema),
        store,
        Arc::new(rollback_guard::integrations::clock::SystemClock),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/api/alerts?source=alertmanager",
        listener.local_addr().unwrap()
    );
    tokio::spawn(rollback_guard::runtime::server::serve(
        listener,
        Arc::clone(&app),
        std::future::pending(),
    ));
    (app, url)
}

/// A Vercel log drain request: `DRAIN_LINES` lines of one deployment over a
/// minute, mostly 200s with some 5xx, distinct per `i`.
fn drain_batch(i: usize) -> Vec<u8> {
    let t0 = 1_795_600_800_000i64 + (i as i64 % 30) * 60_000;
    let mut out = String::new();
    for n in 0..DRAIN_LINES {
        let status = if n % 40 == 0 { 502 } else { 200 };
        let line = json!({"id": format!("{i}-{n}"), "deploymentId": "dpl_drain", "source": "lambda",
            "host": "shop.vercel.app", "timestamp": t0 + n as i64 * 100, "projectId": "prj_1",
            "level": if status >= 500 { "error" } else { "info" }, "requestId": format!("r{i}-{n}"),
            "environment": "production", "statusCode": status,
            "proxy": {"statusCode": status, "path": "/api/checkout", "method": "POST", "timestamp": t0 + n as i64 * 100}});
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

/// `pgbench` with `CONCURRENCY` clients, each transaction one durable
/// single-row INSERT: the most commits per second this machine's Postgres
/// gives one-commit-per-request designs. `None` without pgbench.
async fn pgbench_single_row_ceiling(schema: &str) -> Option<f64> {
    let client = rollback_guard::integrations::app_database::connect(&pg_url())
        .await
        .ok()?;
    let table = format!("{schema}.pgbench_rows");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigserial PRIMARY KEY, v float8 NOT NULL)"
        ))
        .await
        .ok()?;
    let dir = tempfile::tempdir().ok()?;
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        format!("INSERT INTO {table} (v) VALUES (random());\n"),
    )
    .ok()?;
    let out = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &CONCURRENCY.to_string(),
            "-j",
            "2",
            "-T",
            "5",
            "-f",
        ])
        .arg(&script)
        .arg(pg_url())
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// One system's intake: its requests, written out before they are sent
/// (as `wrk` does), so the load generator spends its CPU on sending.
struct Target {
    requests: Arc<Vec<Vec<u8>>>,
}

impl Target {
    /// POSTs of `bodies` to `url` with one header.
    fn new(url: &str, bodies: &[Vec<u8>], header: (&'static str, String)) -> Self {
        let requests = bodies
            .iter()
            .map(|b| {
                post(url, b.clone())
                    .header(header.0, header.1.clone())
                    .to_bytes()
            })
            .collect();
        Self {
            requests: Arc::new(requests),
        }
    }

    /// Sends requests `from..from + n`; the rate and the sorted latencies.
    fn run(&self, from: usize, n: usize) -> impl std::future::Future<Output = (f64, Vec<f64>)> {
        let requests = Arc::clone(&self.requests);
        blast(n, move |i| Nth(Arc::clone(&requests), from + i))
    }
}

/// Request `.1` of a shared list.
struct Nth(Arc<Vec<Vec<u8>>>, usize);

impl AsRef<[u8]> for Nth {
    fn as_ref(&self) -> &[u8] {
        &self.0[self.1]
    }
}

/// One measured run: rate, sorted latencies (ms), CPU per alert (µs) of
/// this process and of the server.
struct Run {
    rate: f64,
    lat: Vec<f64>,
    cpu: Cpu,
}

impl Run {
    /// The median rate, latencies pooled, CPU averaged (runs are equal in size).
    fn summary<'a>(runs: impl Iterator<Item = &'a Run>) -> Run {
        let runs: Vec<&Run> = runs.collect();
        let mut lat: Vec<f64> = runs.iter().flat_map(|r| r.lat.iter().copied()).collect();
        lat.sort_by(f64::total_cmp);
        let mean = |f: fn(&Run) -> f64| runs.iter().map(|r| f(r)).sum::<f64>() / runs.len() as f64;
        Run {
            rate: median(runs.iter().map(|r| r.rate).collect()),
            lat,
            cpu: Cpu {
                guard: mean(|r| r.cpu.guard),
                loadgen: mean(|r| r.cpu.loadgen),
                server: mean(|r| r.cpu.server),
            },
        }
    }

    fn line(&self) -> String {
        format!(
            "{:>8.0} alerts/s   p50 {:.2} ms  p99 {:.2} ms",
            self.rate,
            percentile(&self.lat, 0.5),
            percentile(&self.lat, 0.99)
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

async fn bench_intake() {
    let schema = format!("rg_bench_{:08x}", rand::random::<u32>());
    let pg = Arc::new(
        PostgresStore::connect(&pg_url(), &schema, std::time::Duration::from_secs(5)).unwrap(),
    );
    pg.migrate().await.unwrap();
    let (app, guard_url) = serve_guard(pg.clone(), &schema).await;
    let redis_url =
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("{schema}:");
    let redis = Arc::new(
        rollback_guard::store::RedisStore::connect(&redis_url, &prefix, Default::default())
            .await
            .unwrap(),
    );
    let (redis_app, redis_guard_url) = serve_guard(redis.clone(), &schema).await;

    let dir = tempfile::tempdir().unwrap();
    let (_am, am_url) = start_alertmanager(dir.path()).await;
    // Every round sends new alerts to every system: a repeat would be a
    // duplicate to the guard and an update to Alertmanager.
    let total = WARMUP + ROUNDS * PER_ROUND;
    // Then PER_ROUND / 2 more alerts, each sent twice (an Alertmanager HA pair).
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..total + PER_ROUND / 2)
            .map(|i| serde_json::to_vec(&alert_body(i)).unwrap())
            .collect(),
    );
    // Alertmanager's own API takes postable alerts: labels, annotations, times.
    let am_alert = |i: usize| {
        json!([{"labels": {"alertname": format!("A{i}"), "severity": "warning", "environment": "production"},
                "annotations": {"summary": "bench"}}])
    };
    let am_bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..total + PER_ROUND / 2)
            .map(|i| serde_json::to_vec(&am_alert(i)).unwrap())
            .collect(),
    );
    let guard = |url: &str| -> Target {
        Target::new(url, &bodies, ("authorization", format!("Bearer {TOKEN}")))
    };
    let systems = [
        (guard(&guard_url), "postgres"),
        (guard(&redis_guard_url), "redis-server"),
        (
            Target::new(
                &format!("{am_url}/api/v2/alerts"),
                &am_bodies,
                ("content-type", "application/json".into()),
            ),
            // /proc shortens names to 15 characters.
            "prometheus-aler",
        ),
    ];

    // Warm each up (connections, caches), then measure in rounds: each
    // round runs the three back to back, so a ratio compares runs seconds
    // apart, and the machine's drift between rounds shows instead of
    // hiding in one pair of numbers.
    for (target, _) in &systems {
        target.run(0, WARMUP).await;
    }
    let batched_before = [&app, &redis_app].map(|a| a.intake_stats().unwrap_or_default());
    let mut runs: Vec<[Run; 3]> = Vec::new();
    for round in 0..ROUNDS {
        let from = WARMUP + round * PER_ROUND;
        let mut r = Vec::new();
        for (target, server) in &systems {
            let ((rate, lat), cpu) = with_cpu(server, PER_ROUND, target.run(from, PER_ROUND)).await;
            r.push(Run { rate, lat, cpu });
        }
        runs.push(r.try_into().unwrap_or_else(|_| unreachable!()));
    }

    println!(
        "intake on loopback ({ROUNDS} rounds of {PER_ROUND} alerts per system, {CONCURRENCY} concurrent clients, one alert per request)"
    );
    for (i, [pg_run, redis_run, am_run]) in runs.iter().enumerate() {
        println!(
            "  round {}: Postgres {:>6.0}/s  Redis {:>6.0}/s  Alertmanager {:>6.0}/s   ratios {:.2}x  {:.2}x",
            i + 1,
            pg_run.rate,
            redis_run.rate,
            am_run.rate,
            pg_run.rate / am_run.rate,
            redis_run.rate / am_run.rate
        );
    }
    let summary = |k: usize| Run::summary(runs.iter().map(|r| &r[k]));
    let (pg_sum, redis_sum, am_sum) = (summary(0), summary(1), summary(2));
    let ratio = |k: usize| median(runs.iter().map(|r| r[k].rate / r[2].rate).collect());
    println!("  medians of the rounds; latency over all of them:");
    println!(
        "  rollback-guard /api/alerts (Postgres) : {}",
        pg_sum.line()
    );
    println!(
        "  rollback-guard /api/alerts (Redis)    : {}",
        redis_sum.line()
    );
    println!(
        "  alertmanager   /api/v2/alerts         : {}  (in memory, not durable)",
        am_sum.line()
    );
    println!("  ratio guard(Postgres) / alertmanager  : {:.2}x", ratio(0));
    println!("  ratio guard(Redis) / alertmanager     : {:.2}x", ratio(1));
    // Where the CPU goes: this process is split into the load generator's
    // threads and the rest (the guard, in its runs).
    println!("  CPU per alert, µs, over all rounds (guard + load generator + server):");
    for (name, sum, server) in [
        ("Postgres runs    ", &pg_sum, "postgres"),
        ("Redis runs       ", &redis_sum, "redis-server"),
        ("Alertmanager runs", &am_sum, "alertmanager"),
    ] {
        let c = sum.cpu;
        // In Alertmanager's runs the guard is idle: no column for it.
        let (guard, total) = match server {
            "alertmanager" => ("    -".to_string(), c.loadgen + c.server),
            _ => (format!("{:>5.1}", c.guard), c.total()),
        };
        println!(
            "    {name} : {guard} + {:>5.1} + {server} {:>5.1}  = {total:.1}",
            c.loadgen, c.server
        );
    }
    // How the guard's group commit batched (see flows/intake/batch.rs).
    for ((name, a), before) in [("Postgres", &app), ("Redis", &redis_app)]
        .into_iter()
        .zip(&batched_before)
    {
        let b = a.intake_stats().unwrap_or_default().since(before);
        let n = b.batches.max(1) as f64;
        println!(
            "  batches ({name:<8}): {:>6} of {:>5.1} deliveries on average, {:.2} ms each from sending to the store's answer",
            b.batches,
            b.deliveries as f64 / n,
            b.store_micros as f64 / n / 1000.0
        );
    }
    let guard_rate = pg_sum.rate;

    // Both stores append alert writes at intake and fold them into alert
    // states when those are read (store/postgres/alert_log.rs,
    // RedisStore::fold_alert_log): the first read after the rounds folds
    // every alert they sent. Its cost is part of recording an alert, so it
    // is printed beside intake's.
    let stores: [(&str, &str, Arc<dyn Store>); 2] = [
        ("Postgres", "postgres", pg.clone()),
        ("Redis", "redis-server", redis.clone()),
    ];
    for (name, server, store) in stores {
        let started = Instant::now();
        let (listed, cpu) = with_cpu(server, total, async {
            let filter = rollback_guard::store::DocFilter {
                scope: Some("production".into()),
                status: Some("firing".into()),
            };
            store.list_docs("alert", &filter, 1).await.unwrap()
        })
        .await;
        assert_eq!(listed.len(), 1);
        println!(
            "  alert log fold ({name:<8}), at the first read after the rounds: {total} writes in {:>4.0} ms, {:.1} + {server} {:.1} µs of CPU per alert",
            started.elapsed().as_secs_f64() * 1000.0,
            cpu.guard + cpu.loadgen,
            cpu.server
        );
    }

    // An Alertmanager HA pair: both replicas send every notification, so
    // each body arrives twice, back to back. To the guard the second is a
    // duplicate (exact dedupe, 200); to Alertmanager an update.
    let mut ha = Vec::new();
    for (target, server) in &systems {
        let twice = |r: &Vec<Vec<u8>>| -> Arc<Vec<Vec<u8>>> {
            Arc::new((0..PER_ROUND).map(|i| r[total + i / 2].clone()).collect())
        };
        let target = Target {
            requests: twice(&target.requests),
        };
        let ((rate, _), cpu) = with_cpu(server, PER_ROUND, target.run(0, PER_ROUND)).await;
        ha.push((rate, cpu.total()));
    }
    println!(
        "  HA pair, every notification twice (one run of {PER_ROUND} requests): Postgres {:>6.0}/s  Redis {:>6.0}/s  Alertmanager {:>6.0}/s   ratios {:.2}x  {:.2}x",
        ha[0].0,
        ha[1].0,
        ha[2].0,
        ha[0].0 / ha[2].0,
        ha[1].0 / ha[2].0
    );
    println!(
        "    CPU per request, µs, all processes: Postgres runs {:.1}, Redis runs {:.1}, Alertmanager runs {:.1}",
        ha[0].1, ha[1].1, ha[2].1
    );

    let ceiling = pgbench_single_row_ceiling(&schema).await;
    match ceiling {
        Some(tps) => {
            println!("  pgbench, {CONCURRENCY} clients, one durable single-row INSERT per transaction: {tps:>8.0} tx/s (the one-commit-per-delivery ceiling)");
            println!(
                "  ratio guard(Postgres) / pgbench ceiling : {:.2}x",
                guard_rate / tps
            );
        }
        None => println!("  pgbench not available: ceiling not measured"),
    }

    // Log drains: a realistic batch of lines per request, folded in memory
    // into per-minute rollups before one write.
    let drain_url = guard_url.replace("source=alertmanager", "source=logdrain");
    let drains: Arc<Vec<(Vec<u8>, String)>> = Arc::new(
        (0..DRAIN_REQUESTS)
            .map(|i| {
                let body = drain_batch(i);
                let sig = rollback_guard::flows::intake::verify::sign_sha1_hex(
                    DRAIN_SECRET.as_bytes(),
                    &body,
                );
                (body, sig)
            })
            .collect(),
    );
    let d = Arc::clone(&drains);
    let u = drain_url.clone();
    blast(100, move |i| {
        let (body, sig) = &d[DRAIN_REQUESTS - 1 - i];
        post(&u, body.clone())
            .header("x-vercel-signature", sig.as_str())
            .to_bytes()
    })
    .await;
    let d = Arc::clone(&drains);
    let u = drain_url.clone();
    let (drain_rate, drain_lat) = blast(DRAIN_REQUESTS - 100, move |i| {
        let (body, sig) = &d[i];
        post(&u, body.clone())
            .header("x-vercel-signature", sig.as_str())
            .to_bytes()
    })
    .await;
    println!(
        "log drain (Postgres), {DRAIN_LINES}-line NDJSON batches: {drain_rate:>8.0} requests/s = {:.0} lines/s   p50 {:.2} ms  p99 {:.2} ms",
        drain_rate * DRAIN_LINES as f64,
        percentile(&drain_lat, 0.5),
        percentile(&drain_lat, 0.99)
    );

    // Server time only: the router, in process, sequential (what the 5 ms bar is about).
    let mut server = Vec::new();
    for i in 0..2_000 {
        // Alerts no run above sent.
        let body = serde_json::to_vec(&alert_body(total + PER_ROUND + i)).unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri("/api/alerts?source=alertmanager")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(bytes::Bytes::from(body))
            .unwrap();
        let t = Instant::now();
        let res = rollback_guard::web::handle(&app, req).await;
        server.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(res.status(), 202);
    }
    server.sort_by(f64::total_cmp);
    println!("  server time per alert (router + Postgres, no network): p50 {:.2} ms  p99 {:.2} ms  (bar: p99 < 5 ms)", percentile(&server, 0.5), percentile(&server, 0.99));
    delivery_cpu(pg.as_ref()).await;
    pg.drop_schema().await.unwrap();
    redis.delete_all().await.unwrap();
}

/// The guard's own CPU per Alertmanager delivery, step by step, in this
/// process with no I/O: each step over 20,000 bodies in one pass, five
/// times, the median printed. Steadier than the CPU lines of the runs
/// (which the machine's load moves by a fifth from run to run), so a
/// change to one of these steps is measured here.
async fn delivery_cpu(store: &dyn Store) {
    use rollback_guard::flows::intake::{dedupe_key, parse, prepare, Source};
    const BODIES: usize = 20_000;
    let bodies: Vec<Vec<u8>> = (0..BODIES)
        .map(|i| serde_json::to_vec(&alert_body(i)).unwrap())
        .collect();
    let (headers, now) = (
        http::HeaderMap::new(),
        Timestamp::from_millis(1_800_000_000_000),
    );
    let per = |started: Instant| started.elapsed().as_secs_f64() * 1e6 / BODIES as f64;
    let mut passes: [Vec<f64>; 3] = Default::default();
    for _ in 0..5 {
        let started = Instant::now();
        let signals: Vec<_> = bodies
            .iter()
            .map(|b| parse(Source::Alertmanager, &headers, b, now).unwrap())
            .collect();
        passes[0].push(per(started));
        let started = Instant::now();
        let keys: Vec<String> = bodies
            .iter()
            .map(|b| dedupe_key(Source::Alertmanager, &headers, b))
            .collect();
        passes[1].push(per(started));
        let started = Instant::now();
        let mut prepared = Vec::with_capacity(BODIES);
        for s in &signals {
            prepared.push(prepare(store, s, None).await.unwrap());
        }
        passes[2].push(per(started));
        assert!(keys.len() == BODIES && prepared.iter().all(|p| p.alerts.len() == 1));
    }
    let [parsed, keyed, prepared] = passes.map(median);
    println!(
        "  guard CPU per delivery, in process, no I/O (median of 5 passes over {BODIES} bodies): parse {parsed:.2} µs, dedupe key {keyed:.2}, prepare (with the body's JSON text the store sends) {prepared:.2}"
    );
}

async fn bench_evaluation() {
    let schema = format!("rg_bench_{:08x}", rand::random::<u32>());
    let pg = Arc::new(
        PostgresStore::connect(&pg_url(), &schema, std::time::Duration::from_secs(5)).unwrap(),
    );
    pg.migrate().await.unwrap();
    let store: &dyn Store = pg.as_ref();
    // 10 deployments in a row over 24 h in production; 1M requests in all.
    let t0: i64 = 1_795_600_800_000;
    let deployments = 10u64;
    let minutes = 24 * 60u64;
    let per_minute = SIGNALS / minutes;
    let mut raw = String::with_capacity(40 * SIGNALS as usize);
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let loading = Instant::now();
    let mut stored = 0u64;
    for m in 0..minutes {
        let dep = format!("dpl_{}", m * deployments / minutes);
        let n = if m == minutes - 1 {
            SIGNALS - stored
        } else {
            per_minute
        };
        let (mut errors, mut sketch) = (0u64, LatencySketch::default());
        for _ in 0..n {
            let r = next();
            let status = if r % 1000 < 3 { 500 } else { 200 };
            let latency = 20.0 + (r >> 20) as f64 % 400.0;
            errors += u64::from(status >= 500);
            sketch.add(latency);
            let at = t0 + (m as i64) * 60_000 + (r % 60_000) as i64;
            raw.push_str(&format!("production\t{dep}\t{at}\t{status}\t{latency}\n"));
        }
        stored += n;
        let mut counters = vec![
            (REQUESTS.to_string(), n as f64),
            (ERRORS_5XX.to_string(), errors as f64),
        ];
        counters.extend(sketch.to_counters());
        store
            .add_rollup("production", &dep, minute_of(t0) + m as i64, &counters)
            .await
            .unwrap();
    }
    // The registry: dpl_9 is current, dpl_8 before it.
    let since = t0 + (9 * minutes / deployments) as i64 * 60_000;
    rollback_guard::flows::registry::set_current(
        store,
        "production",
        "dpl_8",
        Timestamp::from_millis(since - 3_600_000),
        false,
    )
    .await
    .unwrap();
    rollback_guard::flows::registry::set_current(
        store,
        "production",
        "dpl_9",
        Timestamp::from_millis(since),
        false,
    )
    .await
    .unwrap();

    // The same signals, raw, for the comparison.
    let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.batch_execute(&format!("CREATE TABLE \"{schema}\".raw_events (environment text, deployment text, at_ms bigint, status int, latency_ms float8)")).await.unwrap();
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!("COPY \"{schema}\".raw_events FROM STDIN"))
        .await
        .unwrap();
    use futures_util::SinkExt;
    let mut sink = Box::pin(sink);
    sink.send(bytes::Bytes::from(raw)).await.unwrap();
    sink.as_mut().finish().await.unwrap();
    client.batch_execute(&format!("CREATE INDEX ON \"{schema}\".raw_events (environment, deployment, at_ms); ANALYZE \"{schema}\".raw_events")).await.unwrap();
    println!("\nevaluation over {SIGNALS} stored request signals ({deployments} deployments, 24 h; loaded in {:.1} s)", loading.elapsed().as_secs_f64());

    let now = Timestamp::from_millis(t0 + (minutes as i64) * 60_000);
    let rules = rollback_guard::core::policy::Rules::default();
    let clock = ManualClock::new(now);
    let runs = 30;
    let mut ours = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = rollback_guard::flows::evaluate::run(store, &rules, clock.now())
            .await
            .unwrap();
        ours.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(out.len(), 1);
    }
    // The raw scan computes the same measures over the same windows: the
    // current deployment's last 5 minutes and the previous one's last hour.
    let sql = format!(
        "SELECT deployment, count(*), count(*) FILTER (WHERE status >= 500),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
         FROM \"{schema}\".raw_events
         WHERE environment = 'production' AND ((deployment = 'dpl_9' AND at_ms >= $1) OR (deployment = 'dpl_8' AND at_ms >= $2 AND at_ms < $3))
         GROUP BY deployment"
    );
    let (w_from, b_from) = (now.as_millis() - 300_000, since - 3_600_000);
    let mut naive = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let rows = client
            .query(&sql, &[&w_from, &b_from, &since])
            .await
            .unwrap();
        naive.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(rows.len(), 2);
    }
    let mut full = Vec::new();
    let full_sql = format!("SELECT deployment, count(*), count(*) FILTER (WHERE status >= 500), percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FROM \"{schema}\".raw_events GROUP BY deployment");
    for _ in 0..5 {
        let t = Instant::now();
        client.query(&full_sql, &[]).await.unwrap();
        full.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for v in [&mut ours, &mut naive, &mut full] {
        v.sort_by(f64::total_cmp);
    }
    let (a, b, c) = (
        percentile(&ours, 0.5),
        percentile(&naive, 0.5),
        percentile(&full, 0.5),
    );
    println!("  evaluate::run on rollups (whole pipeline, audit included) : {a:>8.2} ms median of {runs}");
    println!("  raw-event SQL, same windows, indexed                      : {b:>8.2} ms median of {runs}  ({:.1}x ours)", b / a);
    println!("  raw-event SQL, every deployment (full rescan)             : {c:>8.2} ms median of 5   ({:.1}x ours)", c / a);
    pg.drop_schema().await.unwrap();
}

/// Removes what an interrupted run left (each run cleans up after itself
/// only when it ends): its Postgres schemas and Redis keys, all named
/// `rg_bench_…`. Two runs at once would disturb each other's numbers
/// anyway; this is one more reason not to.
async fn remove_leftovers() {
    let client = rollback_guard::integrations::app_database::connect(&pg_url())
        .await
        .expect("the test Postgres");
    let schemas = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, 'rg_bench_')",
            &[],
        )
        .await
        .unwrap();
    for row in &schemas {
        let name: String = row.get(0);
        client
            .batch_execute(&format!("DROP SCHEMA \"{name}\" CASCADE"))
            .await
            .unwrap();
    }
    let redis_url =
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    rollback_guard::store::RedisStore::connect(&redis_url, "rg_bench_", Default::default())
        .await
        .unwrap()
        .delete_all()
        .await
        .unwrap();
    if !schemas.is_empty() {
        println!(
            "removed what {} interrupted run(s) left behind",
            schemas.len()
        );
    }
}

#[tokio::main]
async fn main() {
    remove_leftovers().await;
    // `cargo bench --bench guard -- intake` runs only the intake part.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if only.as_deref().is_none_or(|o| "intake".contains(o)) {
        bench_intake().await;
    }
    if only.as_deref().is_none_or(|o| "evaluation".contains(o)) {
        bench_evaluation().await;
    }
}
