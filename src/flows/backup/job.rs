//! `GET /api/cron/backups`: runs the backup checks for the configured
//! provider, audits the result, and opens an incident (scope `database`,
//! notified) while any check fails; resolves it once all pass again.

use serde_json::{json, Value};

use crate::core::backup::{check, CheckResult, DestructiveMigration};
use crate::core::clock::Timestamp;
use crate::core::policy::BackupProvider;
use crate::core::policy::Policy;
use crate::core::secret::Secret;
use crate::flows::evaluate::INCIDENT_KIND;
use crate::flows::notify::{Message, Notifier};
use crate::integrations::backup::neon::Neon;
use crate::integrations::backup::pg_dump::PgDumpDir;
use crate::integrations::backup::BackupAccess;
use crate::integrations::backup::BackupSource;
use crate::store::{Doc, DocFilter, Store, StoreResult};

/// What the job reads from the configuration.
pub struct Inputs<'a> {
    /// Provider credentials and locations.
    pub access: &'a BackupAccess,
    pub policy: &'a Policy,
    /// The app's database, to list applied migrations.
    pub app_database_url: Option<&'a Secret>,
}

/// The provider the policy names, if it is configured.
pub fn source(
    config: &Inputs<'_>,
    http: &reqwest::Client,
) -> Result<Option<Box<dyn BackupSource>>, String> {
    let b = &config.access;
    match config.policy.database.backup.provider {
        BackupProvider::None => Ok(None),
        BackupProvider::PgDump => {
            let dir = b
                .dir
                .clone()
                .ok_or("database.backup.provider is pg_dump but BACKUP_DIR is not set")?;
            Ok(Some(Box::new(PgDumpDir { dir })))
        }
        BackupProvider::Neon => {
            let (Some(key), Some(project)) = (b.neon_api_key.clone(), b.neon_project_id.clone())
            else {
                return Err("database.backup.provider is neon but NEON_API_KEY / NEON_PROJECT_ID are not set".into());
            };
            Ok(Some(Box::new(Neon {
                http: http.clone(),
                base: b.neon_api_base.clone(),
                api_key: key,
                project_id: project,
            })))
        }
        BackupProvider::S3 => {
            let (Some(endpoint), Some(bucket), Some(access_key), Some(secret_key)) = (
                b.s3_endpoint.clone(),
                b.s3_bucket.clone(),
                b.s3_access_key.clone(),
                b.s3_secret_key.clone(),
            ) else {
                return Err("database.backup.provider is s3 but S3_ENDPOINT / S3_BUCKET / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not all set".into());
            };
            Ok(Some(Box::new(crate::integrations::backup::s3::S3 {
                http: http.clone(),
                endpoint,
                bucket,
                prefix: b.s3_prefix.clone(),
                region: b.s3_region.clone(),
                access_key,
                secret_key,
            })))
        }
    }
}

/// Applied migrations whose up or down script destroys data.
async fn destructive_applied(config: &Inputs<'_>) -> Result<Vec<DestructiveMigration>, String> {
    let Some(url) = config.app_database_url else {
        return Ok(Vec::new());
    };
    let db = &config.policy.database;
    let files = crate::integrations::migrations::read_dir(
        std::path::Path::new(&db.migrations_dir),
        &db.down_file,
    )
    .map_err(|e| format!("{}: {e}", db.migrations_dir))?;
    let client = crate::integrations::app_database::connect(url.expose())
        .await
        .map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "SELECT migration_name, (extract(epoch from finished_at) * 1000)::int8 FROM _prisma_migrations
             WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            let m = files.iter().find(|m| m.name == name)?;
            let destroys = !crate::core::sql::destructive(&m.up_sql).is_empty()
                || m.down_sql
                    .as_deref()
                    .is_some_and(|d| !crate::core::sql::destructive(d).is_empty());
            destroys.then(|| DestructiveMigration {
                name,
                applied_at: Timestamp::from_millis(r.get(1)),
            })
        })
        .collect())
}

/// Runs the checks and records what they found.
pub async fn run(
    store: &dyn Store,
    config: &Inputs<'_>,
    http: &reqwest::Client,
    notifier: &Notifier,
    now: Timestamp,
) -> StoreResult<Value> {
    let results: Vec<CheckResult> = match source(config, http) {
        Ok(None) => return Ok(json!({"skipped": "database.backup.provider is \"none\""})),
        Err(e) => vec![CheckResult {
            check: "provider",
            ok: false,
            detail: json!({"error": e}),
        }],
        Ok(Some(src)) => match (
            src.list().await,
            src.history_window().await,
            destructive_applied(config).await,
        ) {
            (Ok(list), Ok(window), Ok(destructive)) => check(
                &list,
                window,
                &config.policy.database.backup,
                &destructive,
                now,
            ),
            (Err(e), _, _) | (_, Err(e), _) => vec![CheckResult {
                check: "provider",
                ok: false,
                detail: json!({"provider": src.name(), "error": e.to_string()}),
            }],
            (_, _, Err(e)) => vec![CheckResult {
                check: "migrations",
                ok: false,
                detail: json!({"error": e}),
            }],
        },
    };
    let ok = results.iter().all(|r| r.ok);
    let report = json!(results
        .iter()
        .map(|r| json!({"check": r.check, "ok": r.ok, "detail": r.detail}))
        .collect::<Vec<_>>());
    crate::store::audit(
        store,
        now,
        "cron:backups",
        "backup_check",
        "database",
        json!({"ok": ok, "checks": report}),
    )
    .await?;
    let open = store
        .list_docs(
            INCIDENT_KIND,
            &DocFilter {
                scope: Some("database".into()),
                status: Some("open".into()),
            },
            1,
        )
        .await?
        .into_iter()
        .next();
    let incident = match (ok, open) {
        (false, None) => {
            let id = format!("inc_backups_{:012x}", rand::random::<u64>() >> 16);
            let failed: Vec<&CheckResult> = results.iter().filter(|r| !r.ok).collect();
            let findings: Vec<Value> = failed.iter().map(|r| json!({"rule": format!("backup_{}", r.check), "level": "warning", "summary": summary(r), "evidence": r.detail})).collect();
            let doc = Doc {
                kind: INCIDENT_KIND.into(),
                id: id.clone(),
                version: 0,
                scope: "database".into(),
                status: "open".into(),
                updated_at: now,
                body: json!({"kind": "backups", "deployment_id": null, "environment": "database", "level": "warning", "opened_at": now.as_millis(), "verdict": {"level": "warning", "findings": findings}}),
            };
            store.put_doc(&doc, None).await?;
            crate::store::audit(
                store,
                now,
                "cron:backups",
                "incident_opened",
                &id,
                json!({"checks": report}),
            )
            .await?;
            let msg = Message {
                subject: "Backups do not meet the policy".into(),
                text: failed
                    .iter()
                    .map(|r| format!("• {}", summary(r)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                request_id: None,
                links: vec![],
                email_to: config.policy.channels.email_to.clone(),
                sms_to: config.policy.channels.sms_to.clone(),
                idempotency_key: format!("incident/{id}/opened"),
            };
            notifier.deliver(store, &id, &msg, now).await?;
            json!({"id": id, "transition": "incident_opened"})
        }
        (true, Some(d)) => {
            let mut body = d.body.clone();
            body["resolved_at"] = json!(now.as_millis());
            let doc = Doc {
                status: "resolved".into(),
                updated_at: now,
                body,
                ..d.clone()
            };
            store.put_doc(&doc, Some(d.version)).await?;
            crate::store::audit(
                store,
                now,
                "cron:backups",
                "incident_resolved",
                &d.id,
                json!({}),
            )
            .await?;
            json!({"id": d.id, "transition": "incident_resolved"})
        }
        (_, open) => open.map_or(
            Value::Null,
            |d| json!({"id": d.id, "transition": "still_open"}),
        ),
    };
    Ok(json!({"ok": ok, "checks": report, "incident": incident}))
}

fn summary(r: &CheckResult) -> String {
    match r.check {
        "freshness" => match r.detail["age_s"].as_u64() {
            Some(age) => format!(
                "newest full backup is {} h old (limit {} h)",
                age / 3600,
                r.detail["max_age_s"].as_u64().unwrap_or(0) / 3600
            ),
            None => "no usable full backup found".into(),
        },
        "pitr_window" => format!(
            "point-in-time window is {} h, policy needs {} h",
            r.detail["window_s"].as_u64().unwrap_or(0) / 3600,
            r.detail["required_s"].as_u64().unwrap_or(0) / 3600
        ),
        "pre_migration" => format!(
            "destructive migrations without a pre-migration backup: {}",
            r.detail["missing"]
        ),
        _ => format!(
            "{}: {}",
            r.check,
            r.detail["error"].as_str().unwrap_or("failed")
        ),
    }
}
