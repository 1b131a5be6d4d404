//! `rollback-guard`: the local dev server and operator CLI.
//!
//! - `rollback-guard serve [--host 127.0.0.1] [--port 3000]`: every route on one port.
//! - `rollback-guard check-config`: validates the environment and the policy file.
//! - `rollback-guard migrate`: creates or upgrades the store schema.
//! - `rollback-guard status | incidents | rollback | approve`: operate a running guard
//!   (`--url` / `$ROLLBACK_GUARD_URL`, `$OPERATOR_TOKEN`); changes need `--yes`.
//! - `rollback-guard migrations check`: every Prisma migration has a down script.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use rollback_guard::cli;
use rollback_guard::runtime::app::App;
use rollback_guard::runtime::config::Config;

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
        /// Do not run the crons of ./vercel.json against this server.
        #[arg(long)]
        no_crons: bool,
    },
    /// Validate the environment and the policy file, then print a summary.
    CheckConfig {
        /// Policy file to check instead of $ROLLBACK_GUARD_POLICY / ./rollback-guard.toml.
        #[arg(long)]
        policy: Option<String>,
    },
    /// Create or upgrade the guard's schema in the configured store.
    Migrate,
    /// Health and open incidents of a running guard.
    Status(Remote),
    /// Incidents of a running guard (one in full with --id).
    Incidents {
        #[command(flatten)]
        remote: Remote,
        /// One incident in full.
        #[arg(long)]
        id: Option<String>,
        /// open, resolved or closed
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        /// At most this many (1-500, default 50).
        #[arg(long)]
        limit: Option<u32>,
        /// The API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Roll an environment back now: shows the plan, acts only with --yes.
    Rollback {
        #[command(flatten)]
        remote: Remote,
        #[arg(long, default_value = "production")]
        environment: String,
        /// Deployment to roll back to (default: last known good).
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        yes: bool,
    },
    /// Approve (or --reject) from an approval link or token: shows it, acts only with --yes.
    Approve {
        #[command(flatten)]
        remote: Remote,
        link_or_token: String,
        #[arg(long)]
        reject: bool,
        #[arg(long)]
        yes: bool,
    },
    /// Take or verify pg_dump backups of the app's database (APP_DATABASE_URL, BACKUP_DIR).
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Check the Prisma migrations folder.
    Migrations {
        #[command(subcommand)]
        command: MigrationsCommand,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Dump the app's database now.
    Create {
        /// Label it as the backup taken before this migration.
        #[arg(long)]
        pre_migration: Option<String>,
    },
    /// Restore a dump into a scratch database, check it, record a receipt.
    Verify {
        /// The dump; default: the newest file in BACKUP_DIR.
        #[arg(long)]
        file: Option<String>,
    },
}

#[derive(Subcommand)]
enum MigrationsCommand {
    /// Every migration has a down script, and each down script's hazards
    /// (destroys data, may fail, cannot run in one transaction, unchecked)
    /// with the objects they touch; exits 1 unless every down is safe.
    Check {
        /// Default: the policy's database.migrations_dir.
        #[arg(long)]
        dir: Option<String>,
        /// Print the report as JSON (for CI).
        #[arg(long)]
        json: bool,
    },
}

/// Where the running guard is.
#[derive(clap::Args)]
struct Remote {
    /// Base URL of the guard.
    #[arg(
        long,
        env = "ROLLBACK_GUARD_URL",
        default_value = "http://127.0.0.1:3000"
    )]
    url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    rollback_guard::runtime::telemetry::init();
    match Cli::parse().command {
        Command::Serve {
            host,
            port,
            no_crons,
        } => serve(&host, port, !no_crons).await,
        Command::CheckConfig { policy } => check_config(policy).await,
        Command::Migrate => migrate().await,
        Command::Status(r) => match guard(&r) {
            Ok(g) => print(cli::status(&g).await),
            Err(e) => print(cli::fail(e)),
        },
        Command::Incidents {
            remote,
            id,
            status,
            environment,
            limit,
            json,
        } => {
            let q = cli::IncidentQuery {
                id: id.as_deref(),
                status: status.as_deref(),
                environment: environment.as_deref(),
                limit,
                json,
            };
            match guard(&remote) {
                Ok(g) => print(cli::incidents(&g, &q).await),
                Err(e) => print(cli::fail(e)),
            }
        }
        Command::Rollback {
            remote,
            environment,
            target,
            reason,
            yes,
        } => match guard(&remote) {
            Ok(g) => print(
                cli::rollback(&g, &environment, target.as_deref(), reason.as_deref(), yes).await,
            ),
            Err(e) => print(cli::fail(e)),
        },
        Command::Approve {
            remote,
            link_or_token,
            reject,
            yes,
        } => match guard(&remote) {
            Ok(g) => print(cli::approve(&g, &link_or_token, reject, yes).await),
            Err(e) => print(cli::fail(e)),
        },
        Command::Backup { command } => backup(command).await,
        Command::Migrations {
            command: MigrationsCommand::Check { dir, json },
        } => {
            let policy = Config::from_env()
                .map(|c| c.policy.database)
                .unwrap_or_default();
            let dir = dir.unwrap_or(policy.migrations_dir);
            print(cli::migrations_check(
                std::path::Path::new(&dir),
                &policy.down_file,
                json,
            ))
        }
    }
}

async fn backup(command: BackupCommand) -> ExitCode {
    let app = App::from_env();
    let (Ok(config), Ok(store)) = (app.config(), app.store().await) else {
        eprintln!("configuration or store unavailable; run `rollback-guard check-config`");
        return ExitCode::from(2);
    };
    let (Some(url), Some(dir)) = (
        config.app_database_url.as_ref(),
        config.backups.dir.as_ref(),
    ) else {
        eprintln!("APP_DATABASE_URL and BACKUP_DIR must be set");
        return ExitCode::from(2);
    };
    let now = app.clock().now();
    let result = match command {
        BackupCommand::Create { pre_migration } => {
            let label =
                pre_migration.map_or_else(|| "full".to_string(), |m| format!("pre-migration/{m}"));
            rollback_guard::flows::backup::local::create(
                store.as_ref(),
                url.expose(),
                dir,
                &label,
                now,
            )
            .await
            .map(|p| format!("backup written to {}", p.display()))
        }
        BackupCommand::Verify { file } => {
            let file = match file {
                Some(f) => std::path::PathBuf::from(f),
                None => match newest_dump(dir) {
                    Some(f) => f,
                    None => {
                        eprintln!("no dump in {}", dir.display());
                        return ExitCode::FAILURE;
                    }
                },
            };
            rollback_guard::flows::backup::local::verify(store.as_ref(), url.expose(), &file, now)
                .await
                .map(|r| {
                    format!(
                        "verified {}\n{}",
                        file.display(),
                        serde_json::to_string_pretty(&r).unwrap_or_default()
                    )
                })
        }
    };
    match result {
        Ok(text) => {
            rollback_guard::say!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn newest_dump(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dump"))
        .collect();
    files.sort();
    files.pop()
}

fn guard(r: &Remote) -> Result<cli::Guard, String> {
    cli::Guard::new(
        &r.url,
        std::env::var("OPERATOR_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    )
}

fn print(out: cli::Output) -> ExitCode {
    if out.code == 0 {
        // Like print!, but `| head` does not make it panic.
        let text = out.text.strip_suffix('\n').unwrap_or(&out.text);
        if !text.is_empty() {
            rollback_guard::say!("{text}");
        }
    } else {
        eprint!("{}", out.text);
        if !out.text.ends_with('\n') {
            eprintln!();
        }
    }
    ExitCode::from(out.code)
}

async fn serve(host: &str, port: u16, crons: bool) -> ExitCode {
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
    rollback_guard::say!(
        "rollback-guard listening on http://{addr}  (try: curl http://{addr}/api/health)"
    );
    if crons {
        start_local_crons(&addr);
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match rollback_guard::runtime::server::serve(listener, app, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit 0: valid, ready and the store answers. 1: valid but not ready, or
/// the store does not answer. 2: invalid.
async fn check_config(policy: Option<String>) -> ExitCode {
    let flag = policy.is_some();
    let lookup = move |k: &str| match (k, &policy) {
        ("ROLLBACK_GUARD_POLICY", Some(p)) => Some(p.clone()),
        ("ROLLBACK_GUARD_POLICY_TOML", Some(_)) => None,
        _ => std::env::var(k).ok(),
    };
    let c = match Config::from_lookup(&lookup) {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("configuration is invalid ({} problem(s)):", errs.0.len());
            for e in &errs.0 {
                // Named after what the operator typed.
                let key = if flag && e.key == "ROLLBACK_GUARD_POLICY" {
                    "--policy"
                } else {
                    e.key.as_str()
                };
                eprintln!("  {key}: {}", e.detail);
            }
            return ExitCode::from(2);
        }
    };
    let store = match rollback_guard::store::connect_with(&c.store, c.store_timeouts).await {
        Ok(s) => s.ping().await.map(|()| s.backend()),
        Err(e) => Err(e),
    };
    let readiness = c.readiness();
    let ok = store.is_ok() && readiness.is_empty();
    rollback_guard::say!(
        "{}",
        if ok {
            "configuration OK"
        } else {
            "configuration is valid, but the guard is not ready:"
        }
    );
    rollback_guard::say!("  store:    {} — {}", c.store.backend(), c.store.describe());
    match &store {
        Ok(_) => rollback_guard::say!("            reachable"),
        Err(e) => rollback_guard::say!("            NOT reachable: {e}"),
    }
    rollback_guard::say!("  policy:   {}", c.policy_source);
    rollback_guard::say!(
        "  environments: {}",
        c.policy
            .environments
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    rollback_guard::say!("  probes:   {}", c.policy.probes.len());
    for p in &readiness {
        rollback_guard::say!("  problem:  {}: {}", p.key, p.detail);
    }
    for w in c.warnings() {
        rollback_guard::say!("  warning:  {w}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn migrate() -> ExitCode {
    let c = match Config::from_env() {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("configuration is invalid:\n{errs}");
            return ExitCode::from(2);
        }
    };
    let result = match rollback_guard::store::connect_with(&c.store, c.store_timeouts).await {
        Ok(s) => s.migrate().await.map(|m| (s.backend(), m)),
        Err(e) => Err(e),
    };
    match result {
        Ok((backend, m)) if m.from == 0 => {
            rollback_guard::say!("created the {backend} store's schema (version {})", m.to);
            ExitCode::SUCCESS
        }
        Ok((backend, m)) if m.from < m.to => {
            rollback_guard::say!(
                "upgraded the {backend} store's schema from version {} to {}",
                m.from,
                m.to
            );
            ExitCode::SUCCESS
        }
        Ok((backend, m)) => {
            rollback_guard::say!(
                "the {backend} store is at the current schema (version {})",
                m.to
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the crons of ./vercel.json against the local server, saying so.
fn start_local_crons(addr: &str) {
    let Ok(text) = std::fs::read_to_string("vercel.json") else {
        rollback_guard::say!("no ./vercel.json: no crons run (call /api/cron/* yourself)");
        return;
    };
    let crons = match rollback_guard::runtime::local_crons::from_vercel_json(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: crons not run: {e}");
            return;
        }
    };
    let Some(secret) = std::env::var("CRON_SECRET").ok().filter(|s| !s.is_empty()) else {
        rollback_guard::say!(
            "crons from vercel.json not run: set CRON_SECRET (the cron routes refuse without it)"
        );
        return;
    };
    let list: Vec<String> = crons
        .iter()
        .map(|c| format!("{} ({})", c.path, c.schedule))
        .collect();
    rollback_guard::say!(
        "running the crons of vercel.json (--no-crons to turn off): {}",
        list.join(", ")
    );
    tokio::spawn(rollback_guard::runtime::local_crons::run(
        format!("http://{addr}"),
        crons,
        secret,
    ));
}
