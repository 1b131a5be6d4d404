//! Adapter from `vercel_runtime` to the shared router. Each `api/*.rs`
//! function is `run(service_fn(...))` around [`handle`]; the app state is
//! built once per instance and reused across warm invocations.

use std::sync::Arc;

use vercel_runtime::{AppState, Error, Request, Response, ResponseBody};

use crate::runtime::app::App;

/// Builds the shared state for a function instance (logging, config; the
/// store connects lazily on first use).
pub fn init() -> Arc<App> {
    crate::runtime::telemetry::init();
    Arc::new(App::from_env())
}

/// Handles one invocation through the shared router.
pub async fn handle(
    app: Arc<App>,
    req: Request,
    _state: AppState,
) -> Result<Response<ResponseBody>, Error> {
    let res = crate::web::handle_incoming(&app, req).await;
    let (parts, body) = res.into_parts();
    Ok(Response::from_parts(parts, ResponseBody::from(body)))
}
