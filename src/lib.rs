//! rollback-guard: watches a Vercel production app, detects bad deployments,
//! asks a human to approve a rollback through signed links, and executes it.
//!
//! # Layout
//! - [`config`]: the only reader of environment variables; typed [`config::Config`]
//!   plus the TOML [`policy`] file.
//! - [`policy`]: the operator's policy (environments, probes, rules, channels,
//!   database) with the seed's default thresholds. Pure data plus validation.
//! - [`clock`]: time as an injected dependency; the pure core never reads the clock.
//! - [`audit`]: the hash chain over the append-only audit log (pure).
//! - [`store`]: the `Store` contract and its three backends (Postgres, Redis, SQLite).
//! - [`lease`]: cron idempotency on top of store leases.
//! - [`app`]: application-wide state shared by every request.
//! - [`http`]: the one router used by every Vercel function, the dev server and tests.
//! - [`error`]: `ApiError` and every mapping from module errors to HTTP.
//! - [`server`]: the local HTTP server (dev and tests); [`vercel`]: the adapter
//!   from `vercel_runtime` requests to the router.
//!
//! # Architecture invariants
//! - `policy`, `audit`, `duration` do no I/O and never read the clock or the environment.
//! - Only `config` reads environment variables (and `telemetry`, for `RUST_LOG` and `VERCEL`).
//! - Only `error` decides HTTP status codes for module errors.

pub mod app;
pub mod app_database;
pub mod approve;
pub mod audit;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod config_snapshot;
pub mod cron;
pub mod dashboard;
pub mod decide;
pub mod detect;
pub mod duration;
pub mod error;
pub mod evaluate;
pub mod execute;
pub mod execute_db;
pub mod http;
pub mod incidents;
pub mod intake;
pub mod lease;
pub mod migrations;
pub mod notify;
pub mod operator;
pub mod policy;
pub mod probe;
pub mod registry;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod vercel;
pub mod vercel_api;
