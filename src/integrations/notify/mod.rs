//! Notifications. Each channel is a real HTTP client behind [`Channel`]:
//! Slack incoming webhook (with Approve/Reject buttons answered at
//! `/api/slack/actions`), email through Resend (`Idempotency-Key` so a retry
//! never mails twice), SMS through Twilio's Messages API; and [`console`],
//! which prints to stdout for local use. A notification goes to the first
//! channel in the policy's order that delivers
//! ([`crate::flows::notify::Notifier`] falls back and audits).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::core::html::escape_slack;
use crate::core::policy::ChannelKind;
use crate::core::secret::Secret;

pub mod console;

/// Notification channel credentials.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    pub slack_webhook_url: Option<Secret>,
    pub slack_signing_secret: Option<Secret>,
    pub resend_api_key: Option<Secret>,
    pub email_from: Option<String>,
    pub twilio_account_sid: Option<String>,
    pub twilio_auth_token: Option<Secret>,
    pub twilio_from: Option<String>,
    /// Overridable for tests; default `https://api.resend.com`.
    pub resend_api_base: url::Url,
    /// Overridable for tests; default `https://api.twilio.com`.
    pub twilio_api_base: url::Url,
}

/// One approver's personal link.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    pub approver: String,
    pub url: String,
}

/// What to tell people.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub subject: String,
    pub text: String,
    /// Approval request id, when the message asks for a decision (Slack buttons).
    pub request_id: Option<String>,
    /// Personal links: emailed to `…@…` approvers, texted to `+…` approvers.
    pub links: Vec<Link>,
    /// Informational recipients (no links).
    pub email_to: Vec<String>,
    pub sms_to: Vec<String>,
    /// Stable key for provider-side dedupe.
    pub idempotency_key: String,
}

/// A channel failure.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{channel} is not configured")]
    NotConfigured { channel: &'static str },
    #[error("{channel} has no recipient for this message")]
    NoRecipient { channel: &'static str },
    #[error("{channel} answered {status}: {detail}")]
    Rejected {
        channel: &'static str,
        status: u16,
        detail: String,
    },
    #[error("{channel} unreachable: {detail}")]
    Unreachable {
        channel: &'static str,
        detail: String,
    },
}

/// A notification channel.
#[async_trait]
pub trait Channel: Send + Sync {
    fn kind(&self) -> ChannelKind;
    /// Delivers; returns provider message ids.
    async fn send(&self, msg: &Message) -> Result<Vec<String>, NotifyError>;
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("rollback-guard/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("static client configuration")
}

/// Sends, retrying once on 429/5xx after `Retry-After` (at most 5 s).
async fn send(channel: &'static str, req: reqwest::RequestBuilder) -> Result<Value, NotifyError> {
    let mut attempt = req.try_clone();
    let mut current = Some(req);
    for i in 0..2 {
        let Some(r) = current.take() else { break };
        let res = r.send().await.map_err(|e| NotifyError::Unreachable {
            channel,
            detail: e.without_url().to_string(),
        })?;
        let status = res.status().as_u16();
        let wait = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::integrations::vercel::parse_retry_after);
        let text = res.text().await.unwrap_or_default();
        if status < 300 {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)));
        }
        if i == 0 && (status == 429 || status >= 500) {
            if let Some(next) = attempt.take() {
                tokio::time::sleep(
                    wait.unwrap_or(Duration::from_millis(500))
                        .min(Duration::from_secs(5)),
                )
                .await;
                current = Some(next);
                continue;
            }
        }
        return Err(NotifyError::Rejected {
            channel,
            status,
            detail: text.chars().take(300).collect(),
        });
    }
    Err(NotifyError::Unreachable {
        channel,
        detail: "retry failed".into(),
    })
}

/// Slack incoming webhook.
pub struct Slack {
    http: reqwest::Client,
    webhook: Secret,
}

#[async_trait]
impl Channel for Slack {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Slack
    }

    async fn send(&self, msg: &Message) -> Result<Vec<String>, NotifyError> {
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": msg.subject.chars().take(150).collect::<String>()}}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": escape_slack(&msg.text).chars().take(2900).collect::<String>()}}),
        ];
        if let Some(id) = &msg.request_id {
            blocks.push(json!({"type": "actions", "block_id": "rollback_decision", "elements": [
                {"type": "button", "action_id": "approve", "value": id, "style": "danger", "text": {"type": "plain_text", "text": "Approve rollback"},
                 "confirm": {"title": {"type": "plain_text", "text": "Roll back production?"}, "text": {"type": "plain_text", "text": "This points production at the last known good deployment."},
                             "confirm": {"type": "plain_text", "text": "Roll back"}, "deny": {"type": "plain_text", "text": "Cancel"}}},
                {"type": "button", "action_id": "reject", "value": id, "text": {"type": "plain_text", "text": "Reject"}}
            ]}));
        }
        let fallback = escape_slack(&format!("{}\n{}", msg.subject, msg.text));
        let body = json!({"text": fallback, "blocks": blocks});
        send("slack", self.http.post(self.webhook.expose()).json(&body)).await?;
        Ok(vec!["slack".into()])
    }
}

/// Email through Resend's HTTP API.
pub struct Resend {
    http: reqwest::Client,
    base: url::Url,
    key: Secret,
    from: String,
}

#[async_trait]
impl Channel for Resend {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn send(&self, msg: &Message) -> Result<Vec<String>, NotifyError> {
        let mut mails: Vec<(String, String, String)> = msg
            .links
            .iter()
            .filter(|l| l.approver.contains('@'))
            .map(|l| {
                (
                    l.approver.clone(),
                    format!(
                        "{}\n\nReview and decide (the page asks before anything happens):\n{}\n",
                        msg.text, l.url
                    ),
                    format!("{}/{}", msg.idempotency_key, l.approver),
                )
            })
            .collect();
        for to in &msg.email_to {
            if !mails.iter().any(|(a, _, _)| a == to) {
                mails.push((
                    to.clone(),
                    msg.text.clone(),
                    format!("{}/{to}", msg.idempotency_key),
                ));
            }
        }
        if mails.is_empty() {
            return Err(NotifyError::NoRecipient { channel: "email" });
        }
        let url = self
            .base
            .join("/emails")
            .map_err(|e| NotifyError::Unreachable {
                channel: "email",
                detail: e.to_string(),
            })?;
        let mut ids = Vec::new();
        for (to, text, key) in mails {
            let html = format!(
                "<pre style=\"font:14px/1.5 system-ui,sans-serif;white-space:pre-wrap\">{}</pre>",
                crate::core::html::escape(&text)
            );
            let body = json!({"from": self.from, "to": [to], "subject": msg.subject, "text": text, "html": html});
            let req = self
                .http
                .post(url.clone())
                .bearer_auth(self.key.expose())
                .header("idempotency-key", key.chars().take(256).collect::<String>())
                .json(&body);
            let res = send("email", req).await?;
            ids.push(res["id"].as_str().unwrap_or("sent").to_string());
        }
        Ok(ids)
    }
}

/// SMS through Twilio's Messages API.
pub struct Twilio {
    http: reqwest::Client,
    base: url::Url,
    sid: String,
    token: Secret,
    from: String,
}

#[async_trait]
impl Channel for Twilio {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    async fn send(&self, msg: &Message) -> Result<Vec<String>, NotifyError> {
        let mut texts: Vec<(String, String)> = msg
            .links
            .iter()
            .filter(|l| l.approver.starts_with('+'))
            .map(|l| (l.approver.clone(), format!("{}: {}", msg.subject, l.url)))
            .collect();
        for n in &msg.sms_to {
            if !texts.iter().any(|(t, _)| t == n) {
                texts.push((n.clone(), msg.subject.clone()));
            }
        }
        if texts.is_empty() {
            return Err(NotifyError::NoRecipient { channel: "sms" });
        }
        let path = format!("/2010-04-01/Accounts/{}/Messages.json", self.sid);
        let url = self
            .base
            .join(&path)
            .map_err(|e| NotifyError::Unreachable {
                channel: "sms",
                detail: e.to_string(),
            })?;
        let mut ids = Vec::new();
        for (to, body) in texts {
            let req = self
                .http
                .post(url.clone())
                .basic_auth(&self.sid, Some(self.token.expose()))
                .form(&[
                    ("To", to.as_str()),
                    ("From", self.from.as_str()),
                    ("Body", body.as_str()),
                ]);
            let res = send("sms", req).await?;
            ids.push(res["sid"].as_str().unwrap_or("queued").to_string());
        }
        Ok(ids)
    }
}

/// Builds the channels that have credentials, ordered by `order`.
pub fn channels_from_config(cfg: &NotifyConfig, order: &[ChannelKind]) -> Vec<Box<dyn Channel>> {
    let http = http_client();
    let mut channels: Vec<Box<dyn Channel>> = Vec::new();
    for kind in order {
        match kind {
            ChannelKind::Slack => {
                if let Some(webhook) = &cfg.slack_webhook_url {
                    channels.push(Box::new(Slack {
                        http: http.clone(),
                        webhook: webhook.clone(),
                    }));
                }
            }
            ChannelKind::Email => {
                if let (Some(key), Some(from)) = (&cfg.resend_api_key, &cfg.email_from) {
                    channels.push(Box::new(Resend {
                        http: http.clone(),
                        base: cfg.resend_api_base.clone(),
                        key: key.clone(),
                        from: from.clone(),
                    }));
                }
            }
            ChannelKind::Sms => {
                if let (Some(sid), Some(token), Some(from)) = (
                    &cfg.twilio_account_sid,
                    &cfg.twilio_auth_token,
                    &cfg.twilio_from,
                ) {
                    channels.push(Box::new(Twilio {
                        http: http.clone(),
                        base: cfg.twilio_api_base.clone(),
                        sid: sid.clone(),
                        token: token.clone(),
                        from: from.clone(),
                    }));
                }
            }
            ChannelKind::Console => channels.push(Box::new(console::Console::stdout())),
        }
    }
    channels
}
