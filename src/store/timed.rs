//! Bounded store calls: every operation of the wrapped store gives up after
//! `operation` and every connect after `connect`, answering
//! [`StoreError::Unavailable`] (a 503 with `Retry-After` on the web), so an
//! outage or a server that accepts but never answers cannot hang a request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Deployment, Doc, DocFilter, DocWrite, Migration, RollupRow, Store, StoreError, StoreResult,
};
use crate::core::audit::{AuditEntry, AuditRecord};
use crate::core::clock::Timestamp;

/// How long the store may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreTimeouts {
    /// Connecting (and the handshake).
    pub connect: Duration,
    /// One operation.
    pub operation: Duration,
}

impl Default for StoreTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            operation: Duration::from_secs(5),
        }
    }
}

/// Runs `f`, or fails with `Unavailable` after `limit`.
pub async fn bounded<T>(
    limit: Duration,
    what: &str,
    f: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(format!(
            "the store did not answer {what} within {} ms",
            limit.as_millis()
        ))),
    }
}

/// A store whose every operation is bounded.
pub struct TimedStore {
    inner: Arc<dyn Store>,
    limit: Duration,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn Store>, operation: Duration) -> Self {
        Self {
            inner,
            limit: operation,
        }
    }
}

#[async_trait]
impl Store for TimedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> StoreResult<()> {
        bounded(self.limit, "a ping", self.inner.ping()).await
    }
    async fn migrate(&self) -> StoreResult<Migration> {
        // Schema changes may take longer than one operation.
        bounded(self.limit * 6, "a migration", self.inner.migrate()).await
    }
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        bounded(
            self.limit,
            "a lease",
            self.inner.try_acquire_lease(name, holder, now, ttl),
        )
        .await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        bounded(
            self.limit,
            "a lease release",
            self.inner.release_lease(name, holder),
        )
        .await
    }
    async fn claim_once(
        &self,
        scope: &str,
        key: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        bounded(
            self.limit,
            "a claim",
            self.inner.claim_once(scope, key, now, ttl),
        )
        .await
    }
    async fn release_claim(&self, scope: &str, key: &str) -> StoreResult<()> {
        bounded(
            self.limit,
            "a claim release",
            self.inner.release_claim(scope, key),
        )
        .await
    }
    async fn put_doc(&self, doc: &Doc, expected: Option<i64>) -> StoreResult<DocWrite> {
        bounded(self.limit, "a write", self.inner.put_doc(doc, expected)).await
    }
    async fn get_doc(&self, kind: &str, id: &str) -> StoreResult<Option<Doc>> {
        bounded(self.limit, "a read", self.inner.get_doc(kind, id)).await
    }
    async fn list_docs(
        &self,
        kind: &str,
        filter: &DocFilter,
        limit: usize,
    ) -> StoreResult<Vec<Doc>> {
        bounded(
            self.limit,
            "a list",
            self.inner.list_docs(kind, filter, limit),
        )
        .await
    }
    async fn add_rollup(
        &self,
        environment: &str,
        deployment: &str,
        minute: i64,
        values: &[(String, f64)],
    ) -> StoreResult<()> {
        bounded(
            self.limit,
            "a rollup write",
            self.inner
                .add_rollup(environment, deployment, minute, values),
        )
        .await
    }
    fn batches_ingest(&self) -> bool {
        self.inner.batches_ingest()
    }

    async fn prune_claims(&self, now: Timestamp, limit: usize) -> StoreResult<u64> {
        bounded(
            self.limit,
            "pruning claims",
            self.inner.prune_claims(now, limit),
        )
        .await
    }

    async fn ingest(
        &self,
        batch: &[super::Ingest],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        bounded(
            self.limit,
            "an intake batch",
            self.inner.ingest(batch, now, ttl),
        )
        .await
    }

    async fn add_rollups_once(
        &self,
        scope: &str,
        key: &str,
        adds: &[super::RollupAdd],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        bounded(
            self.limit,
            "a rollup write",
            self.inner.add_rollups_once(scope, key, adds, now, ttl),
        )
        .await
    }
    async fn rollups(
        &self,
        environment: &str,
        deployment: &str,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<RollupRow>> {
        bounded(
            self.limit,
            "a rollup read",
            self.inner.rollups(environment, deployment, from, to),
        )
        .await
    }
    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<AuditRecord> {
        bounded(
            self.limit,
            "an audit append",
            self.inner.append_audit(entry),
        )
        .await
    }
    async fn audit_after(&self, after: i64, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        bounded(
            self.limit,
            "an audit read",
            self.inner.audit_after(after, limit),
        )
        .await
    }
    async fn audit_tail(&self, n: usize) -> StoreResult<Vec<AuditRecord>> {
        bounded(self.limit, "an audit read", self.inner.audit_tail(n)).await
    }
    async fn audit_of(&self, subjects: &[String], limit: usize) -> StoreResult<Vec<AuditRecord>> {
        bounded(
            self.limit,
            "an audit read",
            self.inner.audit_of(subjects, limit),
        )
        .await
    }
    async fn upsert_deployment(&self, d: &Deployment) -> StoreResult<()> {
        bounded(
            self.limit,
            "a deployment write",
            self.inner.upsert_deployment(d),
        )
        .await
    }
    async fn deployment(&self, id: &str) -> StoreResult<Option<Deployment>> {
        bounded(self.limit, "a deployment read", self.inner.deployment(id)).await
    }
    async fn recent_deployments(
        &self,
        environment: &str,
        limit: usize,
    ) -> StoreResult<Vec<Deployment>> {
        bounded(
            self.limit,
            "a deployment list",
            self.inner.recent_deployments(environment, limit),
        )
        .await
    }
    async fn set_last_known_good(&self, environment: &str, deployment_id: &str) -> StoreResult<()> {
        bounded(
            self.limit,
            "a write",
            self.inner.set_last_known_good(environment, deployment_id),
        )
        .await
    }
    async fn last_known_good(&self, environment: &str) -> StoreResult<Option<Deployment>> {
        bounded(
            self.limit,
            "a read",
            self.inner.last_known_good(environment),
        )
        .await
    }
}
