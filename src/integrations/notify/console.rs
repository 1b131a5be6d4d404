//! The `console` channel: prints each message, with every approver's link,
//! to the process's stdout, so the approval flow can be tried on a laptop
//! without Slack, Resend or Twilio. Local use only: the configuration
//! refuses it on Vercel, where function logs are readable by the whole team
//! and a printed link is a usable approval.

use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Channel, Message, NotifyError};
use crate::core::policy::ChannelKind;

/// Where the console channel writes (stdout, or a buffer in tests).
pub type Sink = Arc<Mutex<dyn Write + Send>>;

/// Prints messages; never fails (a closed stdout is ignored).
pub struct Console {
    sink: Sink,
}

impl Console {
    /// Writes to the process's stdout.
    pub fn stdout() -> Self {
        Self::to(Arc::new(Mutex::new(std::io::stdout())))
    }

    /// Writes to `sink`.
    pub fn to(sink: Sink) -> Self {
        Self { sink }
    }
}

/// The printed form of a message: a banner line, the text, then one line per link.
pub fn render(msg: &Message) -> String {
    let mut out = format!("\n=== notification: {} ===\n{}\n", msg.subject, msg.text);
    for link in &msg.links {
        out.push_str(&format!("  {}: {}\n", link.approver, link.url));
    }
    let cc: Vec<&str> = msg
        .email_to
        .iter()
        .chain(&msg.sms_to)
        .map(String::as_str)
        .collect();
    if !cc.is_empty() {
        out.push_str(&format!("  (for: {})\n", cc.join(", ")));
    }
    out
}

#[async_trait]
impl Channel for Console {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Console
    }

    async fn send(&self, msg: &Message) -> Result<Vec<String>, NotifyError> {
        let text = render(msg);
        if let Ok(mut w) = self.sink.lock() {
            let _ = w.write_all(text.as_bytes()).and_then(|()| w.flush());
        }
        Ok(vec!["console".into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::notify::Link;

    #[tokio::test]
    async fn prints_the_subject_the_text_and_every_approvers_link() {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let console = Console::to(buf.clone());
        let msg = Message {
            subject: "[production] approve rollback to dpl_good?".into(),
            text: "error rate 31% > 5%".into(),
            request_id: Some("apr_1".into()),
            links: vec![Link {
                approver: "alice@example.com".into(),
                url: "http://127.0.0.1:3000/api/approve?token=abc".into(),
            }],
            email_to: vec!["ops@example.com".into()],
            sms_to: vec![],
            idempotency_key: "k".into(),
        };
        assert_eq!(console.send(&msg).await.unwrap(), vec!["console"]);
        let printed = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(
            printed,
            "\n=== notification: [production] approve rollback to dpl_good? ===\nerror rate 31% > 5%\n  alice@example.com: http://127.0.0.1:3000/api/approve?token=abc\n  (for: ops@example.com)\n"
        );
    }
}
