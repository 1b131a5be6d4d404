//! Wiring: the application state shared by every request, typed
//! configuration (the only reader of environment variables), the local
//! server, the Vercel adapter, telemetry and the process allocator.

mod alloc;
pub mod app;
pub mod config;
pub mod console;
pub mod local_crons;
pub mod server;
pub mod telemetry;
pub mod vercel;
