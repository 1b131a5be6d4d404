//! A local server following Vercel's documented REST contract for Instant
//! Rollback: `POST /v9/projects/{id}/rollback/{deploymentId}` → 201 (no
//! body), `GET /v9/projects/{id}` → `lastAliasRequest`, bearer auth, error
//! bodies `{"error": {"code", "message"}}`, and scripted 429 (`Retry-After`)
//! or 5xx answers to exercise retries.

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

#[derive(Default)]
pub struct State {
    /// Statuses to answer the next rollback POSTs with before succeeding (e.g. 429, 503).
    pub rollback_failures: Vec<u16>,
    /// Every rollback request received: (path, query).
    pub rollback_calls: Vec<(String, String)>,
    /// Successful (201) rollback requests.
    pub accepted: u32,
    pub last_alias: Option<serde_json::Value>,
    /// Polls of the project left before the alias job reports `succeeded`.
    pub polls_until_done: u32,
    /// Report the job as failed instead.
    pub job_fails: bool,
    pub project_gets: u32,
    /// Project environment variables (`{id, key, value, type, target}`).
    pub envs: Vec<serde_json::Value>,
    /// Env writes received: (method, path, body).
    pub env_writes: Vec<(String, String, serde_json::Value)>,
    /// Queries of every env list call.
    pub env_list_queries: Vec<String>,
    /// What production serves (`targets.production.id`); `dpl_bad` when unset.
    /// A succeeded rollback job moves it to the job's target.
    pub production: Option<String>,
    /// `readyState` per deployment for `GET /v13/deployments/{id}`; READY
    /// when unlisted, 404 for `dpl_unknown`.
    pub ready_states: Vec<(String, String)>,
}

pub struct FakeVercel {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

pub const TOKEN: &str = "vercel-token-abcdef";
pub const PROJECT: &str = "prj_shop";

fn reply(
    status: u16,
    body: serde_json::Value,
    headers: &[(&str, &str)],
) -> hyper::Response<Full<bytes::Bytes>> {
    let mut b = hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = if body.is_null() {
        bytes::Bytes::new()
    } else {
        bytes::Bytes::from(body.to_string())
    };
    b.body(Full::new(body)).unwrap()
}

/// An env var as the API shows it: sensitive values are write-only (""),
/// encrypted ones are only decrypted when asked for.
fn listed(e: &serde_json::Value, decrypt: bool) -> serde_json::Value {
    let mut e = e.clone();
    match e["type"].as_str() {
        Some("sensitive") => {
            e["value"] = json!("");
            e["decrypted"] = json!(false);
        }
        Some("encrypted") if !decrypt => {
            let v = e["value"].as_str().unwrap_or("").to_string();
            e["value"] = json!(format!("eyJ2IjoxfQ.{}", v.len()));
            e["decrypted"] = json!(false);
        }
        Some("encrypted") => e["decrypted"] = json!(true),
        _ => {}
    }
    e
}

pub async fn start(state: State) -> FakeVercel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(state));
    let shared = Arc::clone(&state);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = Arc::clone(&shared);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let state = Arc::clone(&state);
                        async move {
                            let authorized = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                == Some(&format!("Bearer {TOKEN}"));
                            let path = req.uri().path().to_string();
                            let query = req.uri().query().unwrap_or("").to_string();
                            let method = req.method().clone();
                            let raw = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body: serde_json::Value =
                                serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
                            if !authorized {
                                return Ok::<_, std::convert::Infallible>(reply(
                                    403,
                                    json!({"error": {"code": "forbidden", "message": "Not authorized"}}),
                                    &[],
                                ));
                            }
                            let mut guard = state.lock().unwrap();
                            let s = &mut *guard;
                            let rollback_prefix = format!("/v9/projects/{PROJECT}/rollback/");
                            if method == hyper::Method::POST && path.starts_with(&rollback_prefix) {
                                s.rollback_calls.push((path.clone(), query));
                                if !s.rollback_failures.is_empty() {
                                    let status = s.rollback_failures.remove(0);
                                    let headers: &[(&str, &str)] = if status == 429 {
                                        &[("retry-after", "1")]
                                    } else {
                                        &[]
                                    };
                                    let code = if status == 429 {
                                        "rate_limited"
                                    } else {
                                        "internal_server_error"
                                    };
                                    return Ok(reply(
                                        status,
                                        json!({"error": {"code": code, "message": "try again"}}),
                                        headers,
                                    ));
                                }
                                let target = path.trim_start_matches(&rollback_prefix).to_string();
                                if target == "dpl_unknown" {
                                    return Ok(reply(
                                        404,
                                        json!({"error": {"code": "not_found", "message": "Deployment not found"}}),
                                        &[],
                                    ));
                                }
                                s.accepted += 1;
                                let now = std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .unwrap()
                                    .as_millis() as i64;
                                s.last_alias = Some(
                                    json!({"fromDeploymentId": "dpl_bad", "toDeploymentId": target, "jobStatus": "in-progress", "requestedAt": now, "type": "rollback"}),
                                );
                                return Ok(reply(201, serde_json::Value::Null, &[]));
                            }
                            if path == format!("/v10/projects/{PROJECT}/env")
                                && method == hyper::Method::GET
                            {
                                s.env_list_queries.push(query.clone());
                                // As Vercel lists them: encrypted values stay encrypted
                                // (`decrypted: false`) unless the deprecated decrypt=true
                                // is sent; sensitive values come back as "".
                                let decrypt = query.contains("decrypt=true");
                                let envs: Vec<serde_json::Value> =
                                    s.envs.iter().map(|e| listed(e, decrypt)).collect();
                                return Ok(reply(200, json!({"envs": envs}), &[]));
                            }
                            if let (true, Some(id)) = (
                                method == hyper::Method::GET,
                                path.strip_prefix(&format!("/v1/projects/{PROJECT}/env/")),
                            ) {
                                return Ok(match s.envs.iter().find(|e| e["id"] == id) {
                                    Some(e) => reply(200, listed(e, true), &[]),
                                    None => reply(
                                        404,
                                        json!({"error": {"code": "not_found", "message": "env not found"}}),
                                        &[],
                                    ),
                                });
                            }
                            if path == format!("/v10/projects/{PROJECT}/env")
                                && method == hyper::Method::POST
                            {
                                s.env_writes
                                    .push(("POST".into(), path.clone(), body.clone()));
                                // 201 {created, failed[]}: per-variable failures are in the body.
                                let kind = body["type"].as_str().unwrap_or("");
                                if !["system", "encrypted", "plain", "sensitive"].contains(&kind) {
                                    return Ok(reply(
                                        201,
                                        json!({"created": [], "failed": [{"error": {"code": "invalid_type", "message": format!("type {kind} is not allowed"), "key": body["key"]}}]}),
                                        &[],
                                    ));
                                }
                                let id = format!("env_new_{}", s.envs.len());
                                let mut created = body.clone();
                                created["id"] = json!(id);
                                s.envs.push(created);
                                return Ok(reply(
                                    201,
                                    json!({"created": {"id": id}, "failed": []}),
                                    &[],
                                ));
                            }
                            if let (true, Some(id)) = (
                                method == hyper::Method::PATCH,
                                path.strip_prefix(&format!("/v9/projects/{PROJECT}/env/")),
                            ) {
                                s.env_writes
                                    .push(("PATCH".into(), path.clone(), body.clone()));
                                let id = id.to_string();
                                return Ok(
                                    match s.envs.iter_mut().find(|e| e["id"] == id.as_str()) {
                                        Some(e) => {
                                            e["value"] = body["value"].clone();
                                            reply(200, e.clone(), &[])
                                        }
                                        None => reply(
                                            404,
                                            json!({"error": {"code": "not_found", "message": "env not found"}}),
                                            &[],
                                        ),
                                    },
                                );
                            }
                            if method == hyper::Method::GET
                                && path == format!("/v9/projects/{PROJECT}")
                            {
                                s.project_gets += 1;
                                let (done, fails) = (s.polls_until_done == 0, s.job_fails);
                                if let Some(alias) = s.last_alias.as_mut() {
                                    if done {
                                        alias["jobStatus"] =
                                            json!(if fails { "failed" } else { "succeeded" });
                                        if !fails {
                                            s.production =
                                                alias["toDeploymentId"].as_str().map(String::from);
                                        }
                                    } else {
                                        s.polls_until_done -= 1;
                                    }
                                }
                                let production =
                                    s.production.clone().unwrap_or_else(|| "dpl_bad".into());
                                return Ok(reply(
                                    200,
                                    json!({"id": PROJECT, "name": "shop", "lastAliasRequest": s.last_alias,
                                           "targets": {"production": {"id": production, "readyState": "READY"}}}),
                                    &[],
                                ));
                            }
                            if let (true, Some(id)) = (
                                method == hyper::Method::GET,
                                path.strip_prefix("/v13/deployments/"),
                            ) {
                                if id == "dpl_unknown" {
                                    return Ok(reply(
                                        404,
                                        json!({"error": {"code": "not_found", "message": "Deployment not found"}}),
                                        &[],
                                    ));
                                }
                                let state = s
                                    .ready_states
                                    .iter()
                                    .find(|(d, _)| d == id)
                                    .map_or("READY", |(_, st)| st.as_str());
                                return Ok(reply(
                                    200,
                                    json!({"id": id, "url": format!("{id}.vercel.app"), "readyState": state, "target": "production"}),
                                    &[],
                                ));
                            }
                            Ok(reply(
                                404,
                                json!({"error": {"code": "not_found", "message": "no such endpoint"}}),
                                &[],
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    FakeVercel { url, state }
}

/// Vercel config pointing at the fake.
pub fn config(url: &str) -> rollback_guard::integrations::vercel::VercelConfig {
    rollback_guard::integrations::vercel::VercelConfig {
        token: rollback_guard::core::secret::Secret::new(TOKEN),
        project_id: PROJECT.into(),
        team_id: Some("team_1".into()),
        api_base: url::Url::parse(url).unwrap(),
    }
}
