//! Adapter from `vercel_runtime` to the shared router. Each `api/*.rs`
//! function's `main` is [`main`]: `run(service_fn(...))` around [`handle`],
//! instantiated once here in the library rather than once per function, so
//! Vercel's ten builds compile the runtime's generic server stack once and
//! each function only links. The app state is built once per instance and
//! reused across warm invocations.

use std::sync::Arc;

use vercel_runtime::{run, service_fn, AppState, Error, Request, Response, ResponseBody};

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

/// A Vercel function's whole `main`: a Tokio runtime serving [`handle`].
pub fn main() -> Result<(), Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let app = init();
            run(service_fn(move |req, state| {
                handle(app.clone(), req, state)
            }))
            .await
        })
}
