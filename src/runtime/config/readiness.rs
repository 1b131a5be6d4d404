//! Readiness: a configuration that is valid but would make the guard decide
//! nothing — approval required with nobody listed, approvers no configured
//! channel reaches. Health fails on these and `check-config` exits 1, while
//! intake and the other routes keep working (signals are not dropped over a
//! missing approver).

use crate::core::policy::{approver_channel, ApprovalMode, ChannelKind};
use crate::runtime::config::{Config, ConfigError};

impl Config {
    /// Every readiness problem, keyed like policy errors.
    pub fn readiness(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        for (name, env) in &self.policy.environments {
            let key = format!("{} environments.{name}.approvers", self.policy_source);
            if env.approval == ApprovalMode::Required && env.approvers.is_empty() {
                problems.push(ConfigError::new(
                    key.clone(),
                    "approval is required but nobody is listed: a critical incident would wait for a decision nobody is asked for",
                ));
            }
            for a in &env.approvers {
                if let Some(needed) = approver_channel(a) {
                    if let Err(why) = self.reaches(needed) {
                        problems.push(ConfigError::new(
                            key.clone(),
                            format!("{a} is not reachable: {why}"),
                        ));
                    }
                }
            }
        }
        problems
    }

    /// Whether a configured channel delivers approval links to approvers of
    /// kind `needed`; otherwise what is missing.
    fn reaches(&self, needed: ChannelKind) -> Result<(), String> {
        let order = &self.policy.channels.order;
        if order.contains(&ChannelKind::Console) {
            return Ok(());
        }
        let n = &self.notify;
        let (name, missing): (&str, Vec<&str>) = match needed {
            ChannelKind::Email => (
                "email",
                [
                    ("RESEND_API_KEY", n.resend_api_key.is_some()),
                    ("EMAIL_FROM", n.email_from.is_some()),
                ]
                .into_iter()
                .filter(|(_, set)| !set)
                .map(|(k, _)| k)
                .collect(),
            ),
            ChannelKind::Sms => (
                "sms",
                [
                    ("TWILIO_ACCOUNT_SID", n.twilio_account_sid.is_some()),
                    ("TWILIO_AUTH_TOKEN", n.twilio_auth_token.is_some()),
                    ("TWILIO_FROM", n.twilio_from.is_some()),
                ]
                .into_iter()
                .filter(|(_, set)| !set)
                .map(|(k, _)| k)
                .collect(),
            ),
            ChannelKind::Slack => (
                "slack",
                [
                    ("SLACK_WEBHOOK_URL", n.slack_webhook_url.is_some()),
                    // Without it the Approve button's callback cannot be verified.
                    ("SLACK_SIGNING_SECRET", n.slack_signing_secret.is_some()),
                ]
                .into_iter()
                .filter(|(_, set)| !set)
                .map(|(k, _)| k)
                .collect(),
            ),
            ChannelKind::Console => return Ok(()),
        };
        let mut why = Vec::new();
        if !order.contains(&needed) {
            why.push(format!("\"{name}\" is not in channels.order"));
        }
        if !missing.is_empty() {
            why.push(format!("{} not set", missing.join(", ")));
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join(" and "))
        }
    }
}
