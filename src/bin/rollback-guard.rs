//! `rollback-guard`: the local dev server and operator CLI.
//!
//! - `rollback-guard serve [--host 127.0.0.1] [--port 3000]`: every route on one port.
//! - `rollback-guard check-config`: validates the environment and the policy file.
//! - `rollback-guard migrate`: creates or upgrades the store schema.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use rollback_guard::app::App;
use rollback_guard::config::Config;

#[derive(Parser)]
#[command(
    name = "rollback-guard",
    version,
    about = "Detect bad Vercel deployments and roll them back with approval"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every route on one port (local development).
    Serve {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to bind; 0 picks a free one.
        #[arg(long, env = "PORT", default_value_t = 3000)]
        port: u16,
    },
    /// Validate the environment and the policy file, then print a summary.
    CheckConfig {
        /// Policy file to check instead of $ROLLBACK_GUARD_POLICY / ./rollback-guard.toml.
        #[arg(long)]
        policy: Option<String>,
    },
    /// Create or upgrade the guard's schema in the configured store.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    rollback_guard::telemetry::init();
    match Cli::parse().command {
        Command::Serve { host, port } => serve(&host, port).await,
        Command::CheckConfig { policy } => check_config(policy),
        Command::Migrate => migrate().await,
    }
}

async fn serve(host: &str, port: u16) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind((host, port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot bind {host}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = Arc::new(App::from_env());
    if let Some(errs) = app.config_errors() {
        eprintln!("warning: configuration is invalid; only /api/health answers normally:\n{errs}");
    }
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("rollback-guard listening on http://{addr}  (try: curl http://{addr}/api/health)");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match rollback_guard::server::serve(listener, app, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(policy: Option<String>) -> ExitCode {
    let lookup = move |k: &str| match (k, &policy) {
        ("ROLLBACK_GUARD_POLICY", Some(p)) => Some(p.clone()),
        ("ROLLBACK_GUARD_POLICY_TOML", Some(_)) => None,
        _ => std::env::var(k).ok(),
    };
    match Config::from_lookup(&lookup) {
        Ok(c) => {
            println!("configuration OK");
            println!("  store:    {} — {}", c.store.backend(), c.store.describe());
            println!("  policy:   {}", c.policy_source);
            println!(
                "  environments: {}",
                c.policy
                    .environments
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("  probes:   {}", c.policy.probes.len());
            for w in c.warnings() {
                println!("  warning:  {w}");
            }
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("configuration is invalid ({} problem(s)):", errs.0.len());
            for e in &errs.0 {
                eprintln!("  {}: {}", e.key, e.detail);
            }
            ExitCode::from(2)
        }
    }
}

async fn migrate() -> ExitCode {
    let app = App::from_env();
    if let Some(errs) = app.config_errors() {
        eprintln!("configuration is invalid:\n{errs}");
        return ExitCode::from(2);
    }
    match app.store().await {
        Ok(s) => {
            println!("{} store is at the current schema", s.backend());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
