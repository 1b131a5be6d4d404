//! `GET /api/cron/evaluate`: for every environment with a current deployment,
//! fold its rollups over the sustained window (never raw events), compare it
//! with the previous deployment, apply the rules, move the incident through
//! its lifecycle, and write every decision to the audit log. A deployment
//! that stays healthy for a full window becomes the last known good one.

use std::time::Duration;

use serde_json::{json, Value};

use crate::core::clock::Timestamp;
use crate::core::detect::incident::{transition, OpenIncident, Transition};
use crate::core::detect::verdict::{evaluate, Evidence, FiringAlert, Level, Verdict};
use crate::core::detect::window::{minute_of, Window};
use crate::core::policy::Rules;
use crate::flows::intake::ALERT_KIND;
use crate::flows::registry::{self, Current};
use crate::store::{Doc, DocFilter, DocWrite, Store, StoreError, StoreResult};

/// Document kind of incidents.
pub const INCIDENT_KIND: &str = "incident";
/// How far back the previous deployment's traffic is taken as the baseline.
pub const BASELINE_SPAN: Duration = Duration::from_secs(3600);

/// What one environment's evaluation concluded.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub environment: String,
    pub deployment: String,
    pub verdict: Verdict,
    pub incident: Option<(String, &'static str)>,
}

/// Evaluates every environment that has a current deployment.
pub async fn run(store: &dyn Store, rules: &Rules, now: Timestamp) -> StoreResult<Vec<Outcome>> {
    let currents = store
        .list_docs("current_deployment", &DocFilter::default(), 1000)
        .await?;
    let mut out = Vec::new();
    for doc in currents {
        let Some(current) = registry::current(store, &doc.id).await? else {
            continue;
        };
        out.push(evaluate_environment(store, rules, &doc.id, &current, now).await?);
    }
    Ok(out)
}

async fn window(
    store: &dyn Store,
    env: &str,
    deployment: &str,
    from: Timestamp,
    to: Timestamp,
) -> StoreResult<Window> {
    let rows = store
        .rollups(
            env,
            deployment,
            minute_of(from.as_millis()),
            minute_of(to.as_millis()) + 1,
        )
        .await?;
    Ok(Window::from_rows(&rows))
}

/// Gathers the evidence for one environment's current deployment.
pub async fn gather(
    store: &dyn Store,
    rules: &Rules,
    env: &str,
    current: &Current,
    now: Timestamp,
) -> StoreResult<Evidence> {
    let dep = &current.deployment_id;
    let from = now.minus(rules.sustained).max(current.since);
    let current_window = window(store, env, dep, from, now).await?;
    let baseline = match &current.previous_id {
        Some(prev) => {
            let w = window(
                store,
                env,
                prev,
                current.since.minus(BASELINE_SPAN),
                current.since.minus(Duration::from_millis(1)),
            )
            .await?;
            (w.requests > 0 || w.latency.count() > 0).then_some(w)
        }
        None => None,
    };
    let mut alerts = Vec::new();
    let scopes: &[&str] = if env == "production" {
        &[env, "unknown"]
    } else {
        &[env]
    };
    for scope in scopes {
        let filter = DocFilter {
            scope: Some((*scope).to_string()),
            status: Some("firing".into()),
        };
        for a in store.list_docs(ALERT_KIND, &filter, 500).await? {
            let b = &a.body;
            // Only alerts that started after this deployment went live (with a minute of slack)
            // and, when labelled with a deployment, only this one's.
            let first_seen = b.get("first_seen").and_then(Value::as_i64).unwrap_or(0);
            let labelled = b.get("deployment").and_then(Value::as_str);
            if first_seen + 60_000 < current.since.as_millis() || labelled.is_some_and(|d| d != dep)
            {
                continue;
            }
            alerts.push(FiringAlert {
                source: b
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                name: b
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                severity: b
                    .get("severity")
                    .and_then(Value::as_str)
                    .unwrap_or("warning")
                    .to_string(),
            });
        }
    }
    Ok(Evidence {
        current: current_window,
        observed_for: Duration::from_millis(
            (now.as_millis() - current.since.as_millis()).max(0) as u64
        ),
        baseline,
        consecutive_probe_failures: crate::flows::probe::consecutive_failures(store, env, dep)
            .await?,
        firing_alerts: alerts,
    })
}

/// JSON form of a verdict, for incidents, audit and responses.
pub fn verdict_json(v: &Verdict) -> Value {
    json!({
        "level": v.level.as_str(),
        "findings": v.findings.iter().map(|f| json!({"rule": f.rule, "level": f.level.as_str(), "summary": f.summary, "evidence": f.evidence})).collect::<Vec<_>>(),
    })
}

async fn evaluate_environment(
    store: &dyn Store,
    rules: &Rules,
    env: &str,
    current: &Current,
    now: Timestamp,
) -> StoreResult<Outcome> {
    let dep = current.deployment_id.clone();
    let evidence = gather(store, rules, env, current, now).await?;
    let verdict = evaluate(&evidence, rules);
    let verdict_value = verdict_json(&verdict);
    crate::store::audit(
        store,
        now,
        "cron:evaluate",
        "evaluation",
        &dep,
        json!({"environment": env, "baseline": current.previous_id, "verdict": verdict_value}),
    )
    .await?;

    let incident = update_incident(store, rules, env, &dep, &verdict, &verdict_value, now).await?;
    if verdict.level == Level::Ok && evidence.observed_for >= rules.sustained {
        let lkg = store.last_known_good(env).await?;
        if lkg.as_ref().is_none_or(|d| d.id != dep) && store.deployment(&dep).await?.is_some() {
            store.set_last_known_good(env, &dep).await?;
            crate::store::audit(
                store,
                now,
                "cron:evaluate",
                "last_known_good_set",
                &dep,
                json!({"environment": env, "replaces": lkg.map(|d| d.id)}),
            )
            .await?;
        }
    }
    Ok(Outcome {
        environment: env.to_string(),
        deployment: dep,
        verdict,
        incident,
    })
}

fn open_state(d: &Doc) -> OpenIncident {
    let b = &d.body;
    OpenIncident {
        level: b
            .get("level")
            .and_then(Value::as_str)
            .and_then(Level::parse)
            .unwrap_or(Level::Warning),
        opened_at: Timestamp::from_millis(b.get("opened_at").and_then(Value::as_i64).unwrap_or(0)),
        clear_since: b
            .get("clear_since")
            .and_then(Value::as_i64)
            .map(Timestamp::from_millis),
    }
}

/// The open incident of a deployment, if any.
pub async fn open_incident(store: &dyn Store, env: &str, dep: &str) -> StoreResult<Option<Doc>> {
    let filter = DocFilter {
        scope: Some(env.into()),
        status: Some("open".into()),
    };
    let docs = store.list_docs(INCIDENT_KIND, &filter, 200).await?;
    Ok(docs
        .into_iter()
        .find(|d| d.body.get("deployment_id").and_then(Value::as_str) == Some(dep)))
}

async fn update_incident(
    store: &dyn Store,
    rules: &Rules,
    env: &str,
    dep: &str,
    verdict: &Verdict,
    verdict_value: &Value,
    now: Timestamp,
) -> StoreResult<Option<(String, &'static str)>> {
    let existing = open_incident(store, env, dep).await?;
    let state = existing.as_ref().map(open_state);
    let t = transition(state.as_ref(), verdict.level, now, rules.sustained);
    let (doc, expected, action) = match (&t, existing) {
        (Transition::None, _) => return Ok(None),
        (Transition::Open { level }, _) => {
            let id = format!("inc_{:016x}", rand::random::<u64>());
            let body = json!({"deployment_id": dep, "environment": env, "level": level.as_str(), "opened_at": now.as_millis(),
                              "clear_since": null, "verdict": verdict_value});
            (
                incident_doc(&id, env, "open", now, body),
                None,
                "incident_opened",
            )
        }
        (
            Transition::Update {
                level,
                escalated,
                clear_since,
            },
            Some(d),
        ) => {
            let mut body = d.body.clone();
            body["level"] = json!(level.as_str());
            body["clear_since"] = json!(clear_since.map(Timestamp::as_millis));
            if verdict.level >= Level::Warning {
                body["verdict"] = verdict_value.clone();
            }
            let action = if *escalated {
                "incident_escalated"
            } else {
                "incident_updated"
            };
            (
                incident_doc(&d.id, env, "open", now, body),
                Some(d.version),
                action,
            )
        }
        (Transition::Resolve, Some(d)) => {
            let mut body = d.body.clone();
            body["resolved_at"] = json!(now.as_millis());
            (
                incident_doc(&d.id, env, "resolved", now, body),
                Some(d.version),
                "incident_resolved",
            )
        }
        (_, None) => {
            return Err(StoreError::Corrupt(
                "incident transition without an open incident".into(),
            ))
        }
    };
    match store.put_doc(&doc, expected).await? {
        DocWrite::Written(_) => {
            if action != "incident_updated" {
                crate::store::audit(store, now, "cron:evaluate", action, &doc.id, json!({"deployment_id": dep, "environment": env, "level": doc.body["level"], "verdict": verdict_value})).await?;
            }
            Ok(Some((doc.id, action)))
        }
        // Someone else (an approval, another run) changed it; the next run sees their version.
        DocWrite::Conflict => Ok(None),
    }
}

/// Records what the rollback of an incident came to. With `close` the
/// incident ends (`closed`, audited once); otherwise it stays open with the
/// outcome attached (a failed or dry-run rollback changed nothing in production).
pub async fn record_outcome(
    store: &dyn Store,
    incident_id: &str,
    outcome: Value,
    close: bool,
    now: Timestamp,
) -> StoreResult<()> {
    // A break-glass rollback has no incident document: nothing to record.
    let mut closed_now = false;
    crate::store::update_doc(store, INCIDENT_KIND, incident_id, |d| {
        d.body["outcome"] = outcome.clone();
        closed_now = close && d.status == "open";
        if closed_now {
            d.body["closed_at"] = json!(now.as_millis());
            d.status = "closed".into();
        }
        d.updated_at = now;
        true
    })
    .await?;
    if closed_now {
        crate::store::audit(
            store,
            now,
            "decider",
            "incident_closed",
            incident_id,
            outcome,
        )
        .await?;
    }
    Ok(())
}

fn incident_doc(id: &str, env: &str, status: &str, now: Timestamp, body: Value) -> Doc {
    Doc {
        kind: INCIDENT_KIND.into(),
        id: id.into(),
        version: 0,
        scope: env.into(),
        status: status.into(),
        updated_at: now,
        body,
    }
}

/// JSON for the cron response.
pub fn to_json(outcomes: &[Outcome]) -> Value {
    json!(outcomes
        .iter()
        .map(|o| json!({"environment": o.environment, "deployment": o.deployment, "level": o.verdict.level.as_str(),
                        "incident": o.incident.as_ref().map(|(id, action)| json!({"id": id, "transition": action}))}))
        .collect::<Vec<_>>())
}
