//! HTML escaping for text that came from outside (alert names, reasons,
//! tokens) before it goes into a page or an email.

/// Escapes text for HTML element and attribute content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for Slack `mrkdwn` (and a message's fallback `text`): Slack
/// turns `<url|label>`, `<!channel>` and `<@U…>` into links and mentions, so
/// `&`, `<` and `>` in text from outside become `&amp;`, `&lt;`, `&gt;`
/// (Slack's "Escaping text" rule). Nothing else needs escaping.
pub fn escape_slack(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
