//! The real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) as
//! the webhook sender: alerts pushed into its API arrive at our intake with
//! its bearer token, grouped and deduplicated its way, and resolve.
//! `ALERTMANAGER_BIN` overrides the binary path.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rollback_guard::store::Store;
use serde_json::json;

use super::helpers::{Backend, TestApp};

const TOKEN: &str = "alertmanager-token-0123456789";

struct Alertmanager {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_alertmanager(webhook: &str) -> Alertmanager {
    let bin = std::env::var("ALERTMANAGER_BIN")
        .unwrap_or_else(|_| "/usr/bin/prometheus-alertmanager".into());
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin} not found: install Debian's prometheus-alertmanager (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
route:
  receiver: guard
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: guard
    webhook_configs:
      - url: '{webhook}'
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: '{TOKEN}'
"#
    );
    std::fs::write(dir.path().join("am.yml"), config).unwrap();
    let port = crate::helpers::free_port();
    let child = tokio::process::Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("am.yml").display()
        ))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start alertmanager");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if client
            .get(format!("{url}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Alertmanager {
                child,
                url,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("alertmanager did not become ready");
}

async fn wait_for_status(store: &dyn Store, id: &str, status: &str) -> rollback_guard::store::Doc {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(d) = store.get_doc("alert", id).await.unwrap() {
            if d.status == status {
                return d;
            }
        }
        assert!(
            Instant::now() < deadline,
            "alert {id} never became {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_alertmanager_delivers_firing_and_resolved_alerts() {
    let app = TestApp::spawn(Backend::Postgres, &[("ALERTMANAGER_TOKEN", TOKEN)]).await;
    let am = start_alertmanager(&app.url("/api/alerts?source=alertmanager")).await;
    let client = reqwest::Client::new();
    let alert = |ends_at: Option<String>| {
        let mut a = json!({
            "labels": {"alertname": "HighErrorRate", "severity": "critical", "environment": "production", "service": "shop"},
            "annotations": {"summary": "5xx above 5% for 5m"},
            "generatorURL": "http://prometheus/graph?g0.expr=errors"
        });
        if let Some(e) = ends_at {
            a["endsAt"] = json!(e);
        }
        json!([a])
    };
    let res = client
        .post(format!("{}/api/v2/alerts", am.url))
        .json(&alert(None))
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success(),
        "alertmanager refused the alert: {}",
        res.status()
    );

    // Alertmanager computes the fingerprint from the label set; find the doc by listing.
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let docs = app
            .store()
            .list_docs("alert", &Default::default(), 10)
            .await
            .unwrap();
        if let Some(d) = docs.into_iter().find(|d| d.id.starts_with("alertmanager:")) {
            break d.id;
        }
        assert!(Instant::now() < deadline, "no delivery from alertmanager");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let firing = wait_for_status(app.store().as_ref(), &id, "firing").await;
    assert_eq!(firing.scope, "production");
    assert_eq!(firing.body["name"], "HighErrorRate");
    assert_eq!(firing.body["severity"], "critical");
    assert_eq!(
        id.len(),
        "alertmanager:".len() + 16,
        "fingerprint is 16 hex digits: {id}"
    );

    let past = "2020-01-01T00:00:00Z".to_string();
    client
        .post(format!("{}/api/v2/alerts", am.url))
        .json(&alert(Some(past)))
        .send()
        .await
        .unwrap();
    wait_for_status(app.store().as_ref(), &id, "resolved").await;
}
