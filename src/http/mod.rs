//! The one router. Every Vercel function (`api/*.rs`), the local dev server
//! and the tests send requests through [`handle_incoming`] (streaming body,
//! limit enforced) or [`handle`] (body already in memory).

mod auth;
mod health;
mod routes;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use crate::app::App;
use crate::error::ApiError;
pub use routes::{Route, ROUTES};

/// A request with its body read into memory.
pub type Request = http::Request<Bytes>;
/// A response with an in-memory body.
pub type Response = http::Response<Bytes>;

/// Reads the body (refusing more than the configured limit) and dispatches.
pub async fn handle_incoming<B>(app: &App, req: http::Request<B>) -> Response
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = app
        .config()
        .map(|c| c.body_limit)
        .unwrap_or(crate::config::DEFAULT_BODY_LIMIT);
    let (parts, body) = req.into_parts();
    match read_body(&parts.headers, body, limit).await {
        Ok(bytes) => handle(app, http::Request::from_parts(parts, bytes)).await,
        Err(e) => e.into_response(),
    }
}

/// Dispatches a request whose body is already in memory.
pub async fn handle(app: &App, req: Request) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = match dispatch(app, req).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    };
    tracing::info!(%method, %path, status = res.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    res
}

async fn dispatch(app: &App, req: Request) -> Result<Response, ApiError> {
    let Some(route) = Route::find(req.uri().path()) else {
        return Err(ApiError::not_found());
    };
    if !route.allows(req.method()) {
        return Err(ApiError::method_not_allowed(route.allowed()));
    }
    let post = req.method() == Method::POST;
    // One arm per route, so a new route cannot be forgotten here.
    match route {
        // Health must answer even when the configuration is invalid.
        Route::Health => Ok(health::get(app, req.method() == Method::HEAD).await),
        // Each alert source and approval link carries its own authentication.
        Route::Alerts => crate::intake::handle(app, req).await,
        Route::Approve if post => crate::approve::page::post(app, req).await,
        Route::Approve => crate::approve::page::get(app, req).await,
        Route::SlackActions => crate::approve::slack::actions(app, req).await,
        Route::Dashboard if post => crate::dashboard::post(app, &req).await,
        Route::Dashboard => crate::dashboard::get(app, &req).await,
        Route::CronProbe | Route::CronEvaluate | Route::CronBackups => {
            auth::require_bearer(&req, app.config()?.cron_secret.as_ref(), "CRON_SECRET")?;
            match route {
                Route::CronProbe => crate::cron::probe(app).await,
                Route::CronEvaluate => crate::cron::evaluate(app, &req).await,
                _ => crate::cron::backups(app).await,
            }
        }
        Route::Incidents | Route::Rollback => {
            auth::require_bearer(
                &req,
                app.config()?.operator_token.as_ref(),
                "OPERATOR_TOKEN",
            )?;
            if route == Route::Incidents {
                crate::incidents::get(app, &req).await
            } else {
                crate::operator::rollback(app, req).await
            }
        }
    }
}

/// The public base URL for links: `PUBLIC_BASE_URL`, else this request's host.
pub fn base_url(config: &crate::config::Config, req: &Request) -> String {
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

/// Reads a body up to `limit` bytes; a declared or actual larger body is a 413.
pub async fn read_body<B>(
    headers: &http::HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, ApiError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::payload_too_large(limit))
        }
        Err(e) => Err(ApiError::bad_request(
            "body_unreadable",
            format!("could not read request body: {e}"),
        )),
    }
}

/// A JSON response with `Cache-Control: no-store` (guard answers are never cacheable).
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut res = http::Response::new(Bytes::from(body.to_string()));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
