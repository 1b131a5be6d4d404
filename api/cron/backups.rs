//! Vercel function: GET /api/cron/backups — Vercel cron: backup checks.
//! Thin by design: all behaviour lives in the `rollback_guard` library.

use rollback_guard::runtime::vercel;
use vercel_runtime::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = vercel::init();
    run(service_fn(move |req, state| {
        vercel::handle(app.clone(), req, state)
    }))
    .await
}
