//! rollback-guard: watches a Vercel production app, detects bad deployments,
//! asks a human to approve a rollback through signed links, and executes it.
//!
//! # Layout
//! The pipeline signals -> verdict -> decision -> plan -> action, by room:
//! - [`runtime`]: wiring. App state, typed config (the only env reader), the
//!   local server, the Vercel adapter, telemetry.
//! - [`web`]: the HTTP surface. Router, auth, the one error -> status mapping,
//!   one handler module per route.
//! - [`flows`]: what happens over time. Intake, probe, evaluate, decide,
//!   approval requests, execute (code / config / database steps), backups, notify.
//! - [`core`]: pure. Policy, detection, approval tokens and quorum, audit
//!   chain, backup checks, durations, time values. No I/O, clock or env.
//! - [`store`]: the `Store` contract and its backends (Postgres, Redis, SQLite).
//! - [`integrations`]: outbound clients, each behind a trait (Vercel REST,
//!   backup providers, the app's Postgres and migrations folder).
//! - [`cli`]: operator commands.
//!
//! # Arrows
//! `runtime` -> `web` -> `flows` -> `integrations` / `store` -> `core`;
//! `cli` uses `web`'s contract over HTTP and the local layers directly. A
//! module never imports one above it, and there are no import cycles
//! (`tests/api/layout.rs` checks both).

pub mod cli;
pub mod core;
pub mod flows;
pub mod integrations;
pub mod runtime;
pub mod store;
pub mod web;
