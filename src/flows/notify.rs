//! Delivering a notification: the first channel in the policy's order that
//! delivers wins; a failing channel falls back to the next, and every
//! attempt is audited. The channels themselves are [`crate::integrations::notify`].

use serde_json::json;

use crate::core::audit::AuditEntry;
use crate::core::clock::Timestamp;
use crate::core::policy::ChannelKind;
use crate::integrations::notify::channels_from_config;
pub use crate::integrations::notify::{Channel, Link, Message, NotifyConfig, NotifyError};
use crate::store::{Store, StoreResult};

/// The configured channels, in the policy's order.
pub struct Notifier {
    channels: Vec<Box<dyn Channel>>,
}

impl Notifier {
    /// Builds the channels that have credentials, ordered by `order`.
    pub fn from_config(cfg: &NotifyConfig, order: &[ChannelKind]) -> Self {
        Self::new(channels_from_config(cfg, order))
    }

    /// Channels from explicit parts (tests, custom wiring).
    pub fn new(channels: Vec<Box<dyn Channel>>) -> Self {
        Self { channels }
    }

    /// Tries each channel in order until one delivers; audits every attempt.
    /// Returns the channel that delivered, if any.
    pub async fn deliver(
        &self,
        store: &dyn Store,
        subject: &str,
        msg: &Message,
        now: Timestamp,
    ) -> StoreResult<Option<ChannelKind>> {
        for ch in &self.channels {
            let kind = ch.kind();
            let result = ch.send(msg).await;
            let (action, detail) = match &result {
                Ok(ids) => (
                    "notification_sent",
                    json!({"channel": kind, "ids": ids, "subject": msg.subject}),
                ),
                Err(e) => (
                    "notification_failed",
                    json!({"channel": kind, "error": e.to_string(), "subject": msg.subject}),
                ),
            };
            store
                .append_audit(AuditEntry {
                    at: now,
                    actor: "notifier".into(),
                    action: action.into(),
                    subject: subject.into(),
                    detail,
                })
                .await?;
            if result.is_ok() {
                return Ok(Some(kind));
            }
            tracing::warn!(channel = ?kind, "notification failed; trying the next channel");
        }
        if self.channels.is_empty() {
            store
                .append_audit(AuditEntry {
                    at: now,
                    actor: "notifier".into(),
                    action: "notification_skipped".into(),
                    subject: subject.into(),
                    detail: json!({"reason": "no channel is configured"}),
                })
                .await?;
        }
        Ok(None)
    }
}
