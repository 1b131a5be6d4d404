//! Approval requests as stored documents (one per incident), the links sent
//! to each approver, and recording a decision: token verified, bound fields
//! checked, quorum rules applied, nonce consumed atomically, decision written
//! with compare-and-set so two approvers deciding at once are both counted.

use std::time::Duration;

use serde_json::{json, Value};

use crate::core::approval::quorum::{self, Decision, DecisionError, State};
use crate::core::approval::token::SigningKey;
use crate::core::approval::token::{self, Claims, TokenError};
use crate::core::audit::AuditEntry;
use crate::core::clock::Timestamp;
use crate::core::policy::{Environment, TimeoutAction};
use crate::flows::execute::Plan;
use crate::store::{Doc, DocFilter, DocWrite, Store, StoreError, StoreResult};

/// Document kind of approval requests.
pub const APPROVAL_KIND: &str = "approval";
/// Claim scope of consumed nonces.
const NONCE_SCOPE: &str = "approval_nonce";

/// Why a decision could not be recorded. Each maps to a page and a 4xx.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("this approval request does not exist")]
    UnknownRequest,
    #[error("the link does not match this approval request")]
    Mismatch,
    #[error(transparent)]
    Decision(#[from] DecisionError),
    #[error("this link has already been used")]
    Replayed,
    #[error("approval links cannot be issued: APPROVAL_SIGNING_KEYS is not set")]
    NoKeys,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request as the page and the rules see it.
#[derive(Clone, Debug)]
pub struct ApprovalView {
    pub id: String,
    pub version: i64,
    pub state: State,
    pub rules: quorum::Request,
    pub body: Value,
}

fn view(d: &Doc) -> ApprovalView {
    let b = &d.body;
    let strings = |k: &str| {
        b[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let decisions = b["decisions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| {
                    Some((
                        d["approver"].as_str()?.to_string(),
                        Decision::parse(d["decision"].as_str()?)?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let state = State::parse(&d.status).unwrap_or(State::Pending);
    ApprovalView {
        id: d.id.clone(),
        version: d.version,
        state,
        rules: quorum::Request {
            state,
            approvers: strings("approvers"),
            quorum: b["quorum"].as_u64().unwrap_or(1) as u32,
            requested_by: b["requested_by"].as_str().unwrap_or("system").to_string(),
            expires_at: Timestamp::from_millis(b["expires_at"].as_i64().unwrap_or(0)),
            decisions,
        },
        body: b.clone(),
    }
}

/// Loads a request.
pub async fn load(store: &dyn Store, id: &str) -> StoreResult<Option<ApprovalView>> {
    Ok(store.get_doc(APPROVAL_KIND, id).await?.map(|d| view(&d)))
}

/// Opens the approval request for a plan (once per incident). The same
/// write records that the approvers still have to be notified
/// (`notification.status = "pending"`), so a crash or a failing provider
/// never loses the notice: [`crate::flows::decide`] sends it, and re-sends
/// with backoff until a channel delivers. Returns the request and whether
/// this call created it.
pub async fn open(
    store: &dyn Store,
    keys: &[SigningKey],
    plan: &Plan,
    description: &Value,
    env: &Environment,
    evidence: &Value,
    now: Timestamp,
) -> Result<(ApprovalView, bool), ApproveError> {
    keys.first().ok_or(ApproveError::NoKeys)?;
    let id = approval_id(&plan.incident_id);
    let expires_at = now.plus(env.approval_timeout);
    let doc = Doc {
        kind: APPROVAL_KIND.into(),
        id: id.clone(),
        version: 0,
        scope: plan.environment.clone(),
        status: State::Pending.as_str().into(),
        updated_at: now,
        body: json!({
            "incident_id": plan.incident_id, "environment": plan.environment, "action": "rollback",
            "from_deployment": plan.from_deployment, "target_deployment": plan.target_deployment,
            "reason": plan.reason, "evidence": evidence, "approvers": env.approvers, "quorum": env.quorum,
            "requested_by": plan.requested_by, "created_at": now.as_millis(), "expires_at": expires_at.as_millis(),
            "on_timeout": match env.on_timeout { TimeoutAction::Rollback => "rollback", TimeoutAction::HoldAndEscalate => "hold_and_escalate" },
            "decisions": [],
            "notification": {"status": "pending", "attempts": 0, "next_at": now.as_millis()},
            "migrations": plan.migrations, "plan": description,
        }),
    };
    if store.put_doc(&doc, None).await? == DocWrite::Conflict {
        let existing = load(store, &id)
            .await?
            .ok_or(ApproveError::UnknownRequest)?;
        return Ok((existing, false));
    }
    store
        .append_audit(AuditEntry {
            at: now,
            actor: "system".into(),
            action: "approval_requested".into(),
            subject: id.clone(),
            detail: json!({"incident_id": plan.incident_id, "approvers": env.approvers, "quorum": env.quorum, "target_deployment": plan.target_deployment, "expires_at": expires_at.as_millis()}),
        })
        .await?;
    Ok((view(&doc_with_version(doc, 1)), true))
}

/// The approval request id of an incident.
pub fn approval_id(incident_id: &str) -> String {
    format!("apr_{incident_id}")
}

/// One fresh link per approver, valid until the request expires. Links are
/// never stored: a re-send mints new ones (each approver still decides once).
pub fn mint_links(
    keys: &[SigningKey],
    view: &ApprovalView,
    base_url: &str,
    now: Timestamp,
) -> Result<Vec<(String, String)>, ApproveError> {
    let key = keys.first().ok_or(ApproveError::NoKeys)?;
    let b = &view.body;
    let ttl = (view.rules.expires_at.as_millis() - now.as_millis()) / 1000;
    if ttl <= 0 {
        return Ok(Vec::new());
    }
    Ok(view
        .rules
        .approvers
        .iter()
        .map(|who| {
            let claims = Claims::new(
                &view.id,
                b["incident_id"].as_str().unwrap_or_default(),
                "rollback",
                who,
                b["target_deployment"].as_str().unwrap_or_default(),
                now,
                ttl,
                rand::random(),
            );
            (
                who.clone(),
                format!(
                    "{}/api/approve?token={}",
                    base_url.trim_end_matches('/'),
                    token::mint(key, &claims)
                ),
            )
        })
        .collect())
}

/// Rewrites a request's body field `key` (compare-and-set, re-reading on
/// concurrent writes, e.g. a decision landing at the same time).
pub async fn set_field(
    store: &dyn Store,
    id: &str,
    key: &str,
    value: Value,
    now: Timestamp,
) -> StoreResult<()> {
    crate::store::update_doc(store, APPROVAL_KIND, id, |d| {
        d.body[key] = value.clone();
        d.updated_at = now;
        true
    })
    .await?;
    Ok(())
}

/// Requests in `state`, newest first (at most `limit`).
pub async fn in_state(
    store: &dyn Store,
    state: State,
    limit: usize,
) -> StoreResult<Vec<ApprovalView>> {
    let filter = DocFilter {
        scope: None,
        status: Some(state.as_str().into()),
    };
    Ok(store
        .list_docs(APPROVAL_KIND, &filter, limit)
        .await?
        .iter()
        .map(view)
        .collect())
}

fn doc_with_version(mut d: Doc, v: i64) -> Doc {
    d.version = v;
    d
}

/// Verifies a link for display (GET): nothing is consumed or recorded.
pub async fn inspect(
    store: &dyn Store,
    keys: &[SigningKey],
    token: &str,
    now: Timestamp,
) -> Result<(Claims, ApprovalView), ApproveError> {
    let claims = token::verify(keys, token, now)?;
    let req = load(store, &claims.request)
        .await?
        .ok_or(ApproveError::UnknownRequest)?;
    if req.body["incident_id"] != claims.incident
        || req.body["target_deployment"] != claims.target
        || claims.action != "rollback"
    {
        return Err(ApproveError::Mismatch);
    }
    Ok((claims, req))
}

/// Records a decision from a link (POST). Returns the request after it.
pub async fn decide(
    store: &dyn Store,
    keys: &[SigningKey],
    token: &str,
    decision: Decision,
    client: &Value,
    now: Timestamp,
) -> Result<ApprovalView, ApproveError> {
    let (claims, mut req) = inspect(store, keys, token, now).await?;
    quorum::apply(&req.rules, &claims.approver, decision, now)?;
    let ttl = Duration::from_secs((claims.exp - now.as_millis() / 1000).max(60) as u64 + 3600);
    if !store
        .claim_once(NONCE_SCOPE, &claims.nonce, now, ttl)
        .await?
    {
        return Err(ApproveError::Replayed);
    }
    let result = record(store, &mut req, &claims.approver, decision, client, now).await;
    if result.is_err() {
        // Nothing was recorded: let the approver try the same link again.
        let _ = store.release_claim(NONCE_SCOPE, &claims.nonce).await;
    }
    result
}

/// Applies and writes a decision, re-reading on concurrent writes.
pub async fn record(
    store: &dyn Store,
    req: &mut ApprovalView,
    approver: &str,
    decision: Decision,
    client: &Value,
    now: Timestamp,
) -> Result<ApprovalView, ApproveError> {
    for _ in 0..20 {
        let state = quorum::apply(&req.rules, approver, decision, now)?;
        let mut body = req.body.clone();
        body["decisions"]
            .as_array_mut()
            .ok_or_else(|| StoreError::Corrupt("approval decisions".into()))?
            .push(json!({"approver": approver, "decision": decision.as_str(), "at": now.as_millis(), "client": client}));
        let doc = Doc {
            kind: APPROVAL_KIND.into(),
            id: req.id.clone(),
            version: 0,
            scope: body["environment"].as_str().unwrap_or("").into(),
            status: state.as_str().into(),
            updated_at: now,
            body,
        };
        match store.put_doc(&doc, Some(req.version)).await? {
            DocWrite::Written(v) => {
                store
                    .append_audit(AuditEntry {
                        at: now,
                        actor: format!("approver:{approver}"),
                        action: format!("approval_{}", decision.as_str()),
                        subject: req.id.clone(),
                        detail: json!({"state": state.as_str(), "client": client}),
                    })
                    .await?;
                return Ok(view(&doc_with_version(doc, v)));
            }
            DocWrite::Conflict => {
                *req = load(store, &req.id)
                    .await?
                    .ok_or(ApproveError::UnknownRequest)?
            }
        }
    }
    Err(StoreError::Contention(format!("approval {}", req.id)).into())
}

/// Marks pending requests past their expiry as expired; returns them.
pub async fn expire_due(store: &dyn Store, now: Timestamp) -> StoreResult<Vec<ApprovalView>> {
    let filter = DocFilter {
        scope: None,
        status: Some(State::Pending.as_str().into()),
    };
    let mut expired = Vec::new();
    for d in store.list_docs(APPROVAL_KIND, &filter, 200).await? {
        let v = view(&d);
        if now <= v.rules.expires_at {
            continue;
        }
        let doc = Doc {
            status: State::Expired.as_str().into(),
            updated_at: now,
            ..d.clone()
        };
        if let DocWrite::Written(version) = store.put_doc(&doc, Some(d.version)).await? {
            store
                .append_audit(AuditEntry {
                    at: now,
                    actor: "cron:evaluate".into(),
                    action: "approval_expired".into(),
                    subject: d.id.clone(),
                    detail: json!({"on_timeout": d.body["on_timeout"], "decisions": d.body["decisions"]}),
                })
                .await?;
            expired.push(view(&doc_with_version(doc, version)));
        }
    }
    Ok(expired)
}

/// The rollback plan an approval request stands for.
pub fn plan_of(
    view: &ApprovalView,
    requested_by: String,
    reason: Option<String>,
    dry_run: bool,
) -> Plan {
    let b = &view.body;
    let field = |k: &str| b[k].as_str().unwrap_or_default().to_string();
    Plan {
        environment: field("environment"),
        incident_id: field("incident_id"),
        from_deployment: field("from_deployment"),
        target_deployment: field("target_deployment"),
        requested_by,
        reason: reason.unwrap_or_else(|| field("reason")),
        dry_run,
        // Exactly the migrations the approvers were shown.
        migrations: b["migrations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
