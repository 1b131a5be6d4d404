//! What every handler shares to read requests and build answers: the
//! request/response types, JSON and HTML page responses (with the security
//! headers a page carrying a secret link needs), and the public base URL.
//! A leaf: handlers import it, it imports no handler.

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};

use crate::core::html::escape;

/// A request with its body read into memory.
pub type Request = http::Request<Bytes>;
/// A response with an in-memory body.
pub type Response = http::Response<Bytes>;

/// A JSON response with `Cache-Control: no-store` (guard answers are never cacheable).
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    // A value that cannot be JSON (a map with non-string keys) is a bug
    // here, not the client's: answer 500 rather than panic.
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, Bytes::from(bytes)),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(
                br#"{"code":"unserializable","detail":"the answer could not be written as JSON"}"#,
            ),
        ),
    };
    let mut res = http::Response::new(bytes);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// An HTML response with the headers a page carrying a secret link needs.
pub fn html_response(status: StatusCode, title: &str, body_html: &str) -> Response {
    html_page(status, title, body_html, 44)
}

/// [`html_response`] with the page's maximum width in rem (the dashboard is wider).
pub fn html_page(status: StatusCode, title: &str, body_html: &str, max_width_rem: u32) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{}</title><style>{STYLE}main{{max-width:{max_width_rem}rem}}</style></head><body><main>{body_html}</main></body></html>",
        escape(title)
    );
    let mut res = http::Response::new(Bytes::from(page));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    res
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;background:#f6f7f9;color:#1d2330;margin:0}\
main{margin:2rem auto;background:#fff;padding:2rem;border-radius:12px;box-shadow:0 1px 4px #0002}\
h1{font-size:1.4rem;margin-top:0}dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{color:#5a6275}\
dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}.finding{margin:.2rem 0}.critical{color:#b3261e}.warning{color:#8a5a00}\
form{display:flex;gap:1rem;margin-top:1.5rem}button{font-size:1rem;padding:.7rem 1.4rem;border-radius:8px;border:0;cursor:pointer}\
.approve{background:#b3261e;color:#fff}.reject{background:#e4e7ec;color:#1d2330}.note{color:#5a6275;font-size:.9rem}";

/// The public base URL for links: `PUBLIC_BASE_URL`, else this request's host.
pub fn base_url(config: &crate::runtime::config::Config, req: &Request) -> String {
    if let Some(u) = &config.public_base_url {
        return u.as_str().trim_end_matches('/').to_string();
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let local =
        host.starts_with("127.0.0.1") || host.starts_with("localhost") || host.starts_with("[::1]");
    format!("{}://{host}", if local { "http" } else { "https" })
}

/// The first value of query parameter `key`, decoded.
pub fn query(req: &Request, key: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_cannot_be_json_is_a_500_with_a_code_not_a_panic() {
        // JSON object keys must be strings.
        let odd: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let res = json_response(StatusCode::OK, &odd);
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(body["code"], "unserializable");
        let ok = json_response(StatusCode::ACCEPTED, &serde_json::json!({"a": 1}));
        assert_eq!(
            (ok.status(), ok.body().as_ref()),
            (StatusCode::ACCEPTED, &br#"{"a":1}"#[..])
        );
    }
}
