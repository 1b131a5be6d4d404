//! Vercel function: GET /api/cron/probe — Vercel cron: health probes.
//! Thin by design: all behaviour lives in the `rollback_guard` library, and
//! the function's runtime is instantiated there once for every function.

fn main() -> Result<(), vercel_runtime::Error> {
    rollback_guard::runtime::vercel::main()
}
