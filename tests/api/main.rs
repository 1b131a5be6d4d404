//! One integration test binary (faster to link than one per file).
//! Postgres and Redis tests need the servers named by `TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); each test gets a
//! fresh schema / key prefix and removes it afterwards.

mod alertmanager;
mod approval;
mod audit_flood;
mod backups;
mod browser;
mod check_config;
mod cli;
mod config_rollback;
mod crash;
mod dashboard;
mod database_rollback;
mod deploy_layout;
mod detection;
mod e2e_browser;
mod executor;
mod fake_http;
mod fake_vercel;
mod faults;
mod functions;
mod fuzz;
mod health;
mod helpers;
mod incidents_api;
mod intake;
mod layout;
mod lease;
mod operator_and_slack;
mod routing;
mod seed;
mod senders;
mod sql_hazards;
mod store_contract;
mod store_timeouts;
mod walkthrough;
