//! The one router. Every Vercel function (`api/*.rs`), the local dev server
//! and the tests send requests through [`handle_incoming`] (streaming body,
//! limit enforced) or [`handle`] (body already in memory).

pub mod alerts;
pub mod approve;
mod auth;
pub mod cron;
pub mod dashboard;
pub mod error;
mod health;
pub mod incidents;
pub mod operator;
pub mod respond;
mod routes;
pub mod slack;

use bytes::Bytes;
use http::{header, Method};
use http_body_util::BodyExt;

use crate::runtime::app::App;
use crate::web::error::ApiError;
pub use respond::{json_response, Request, Response};
pub use routes::{Route, ROUTES};

/// Reads the body (refusing more than the configured limit) and dispatches.
pub async fn handle_incoming<B>(app: &App, req: http::Request<B>) -> Response
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = app
        .config()
        .map(|c| c.body_limit)
        .unwrap_or(crate::runtime::config::DEFAULT_BODY_LIMIT);
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
    routed(app, route, req)?.await
}

/// A route's own future, on the heap.
type Routed<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, ApiError>> + Send + 'a>>;

/// The chosen route's future, boxed. A request's future is moved (copied
/// whole) into its connection task; unboxed, every request, a health check
/// or an alert, carried and copied the state of the largest route (34 KB,
/// a rollback), which was the biggest single cost of alert intake.
fn routed(app: &App, route: Route, req: Request) -> Result<Routed<'_>, ApiError> {
    let post = req.method() == Method::POST;
    // One arm per route, so a new route cannot be forgotten here.
    Ok(match route {
        // Health must answer even when the configuration is invalid.
        Route::Health => {
            let head = req.method() == Method::HEAD;
            Box::pin(async move { Ok(health::get(app, head).await) })
        }
        // Each alert source and approval link carries its own authentication.
        Route::Alerts => Box::pin(alerts::handle(app, req)),
        Route::Approve if post => Box::pin(crate::web::approve::post(app, req)),
        Route::Approve => Box::pin(crate::web::approve::get(app, req)),
        Route::SlackActions => Box::pin(crate::web::slack::actions(app, req)),
        Route::Dashboard if post => {
            Box::pin(async move { crate::web::dashboard::post(app, &req).await })
        }
        Route::Dashboard => Box::pin(async move { crate::web::dashboard::get(app, &req).await }),
        Route::CronProbe | Route::CronEvaluate | Route::CronBackups => {
            auth::require_bearer(&req, app.config()?.cron_secret.as_ref(), "CRON_SECRET")?;
            match route {
                Route::CronProbe => Box::pin(crate::web::cron::probe(app)),
                Route::CronEvaluate => {
                    Box::pin(async move { crate::web::cron::evaluate(app, &req).await })
                }
                _ => Box::pin(crate::web::cron::backups(app)),
            }
        }
        Route::Incidents | Route::Rollback => {
            auth::require_bearer(
                &req,
                app.config()?.operator_token.as_ref(),
                "OPERATOR_TOKEN",
            )?;
            if route == Route::Incidents {
                Box::pin(async move { crate::web::incidents::get(app, &req).await })
            } else {
                Box::pin(crate::web::operator::rollback(app, req))
            }
        }
    })
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
