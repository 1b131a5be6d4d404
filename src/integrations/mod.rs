//! Outbound clients, each behind a small trait with one real implementation:
//! the Vercel REST API, backup providers (pg_dump directory, Neon, S3), the
//! app's own Postgres and its migrations folder.

pub mod app_database;
pub mod backup;
pub mod clock;
pub mod migrations;
pub mod notify;
pub mod postgres;
pub mod vercel;
