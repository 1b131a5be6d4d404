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
    let post = req.method() == Method::POST;
    // One arm per route, so a new route cannot be forgotten here.
    match route {
        // Health must answer even when the configuration is invalid.
        Route::Health => Ok(health::get(app, req.method() == Method::HEAD).await),
        // Each alert source and approval link carries its own authentication.
        Route::Alerts => alerts::handle(app, req).await,
        Route::Approve if post => crate::web::approve::post(app, req).await,
        Route::Approve => crate::web::approve::get(app, req).await,
        Route::SlackActions => crate::web::slack::actions(app, req).await,
        Route::Dashboard if post => crate::web::dashboard::post(app, &req).await,
        Route::Dashboard => crate::web::dashboard::get(app, &req).await,
        Route::CronProbe | Route::CronEvaluate | Route::CronBackups => {
            auth::require_bearer(&req, app.config()?.cron_secret.as_ref(), "CRON_SECRET")?;
            match route {
                Route::CronProbe => crate::web::cron::probe(app).await,
                Route::CronEvaluate => crate::web::cron::evaluate(app, &req).await,
                _ => crate::web::cron::backups(app).await,
            }
        }
        Route::Incidents | Route::Rollback => {
            auth::require_bearer(
                &req,
                app.config()?.operator_token.as_ref(),
                "OPERATOR_TOKEN",
            )?;
            if route == Route::Incidents {
                crate::web::incidents::get(app, &req).await
            } else {
                crate::web::operator::rollback(app, req).await
            }
        }
    }
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
