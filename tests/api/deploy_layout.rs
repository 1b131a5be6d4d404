//! The deploy layout stays consistent: every function file is a `[[bin]]`,
//! every route has a function, and every cron in vercel.json targets a cron route.

use rollback_guard::web::{Route, ROUTES};

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn every_route_has_a_function_file_declared_as_a_bin() {
    let cargo: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let bins: Vec<String> = cargo["bin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["path"].as_str().unwrap().to_string())
        .collect();
    for (_, path) in ROUTES {
        let file = format!("{}.rs", path.trim_start_matches('/'));
        assert!(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(&file)
                .exists(),
            "{file} missing"
        );
        assert!(
            bins.contains(&file),
            "{file} is not a [[bin]] in Cargo.toml"
        );
    }
    assert!(
        !std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/main.rs")
            .exists(),
        "src/main.rs switches Vercel to a one-function preset"
    );
}

#[test]
fn vercel_crons_target_cron_routes_and_functions_bundle_the_policy() {
    let v: serde_json::Value = serde_json::from_str(&read("vercel.json")).unwrap();
    let crons = v["crons"].as_array().unwrap();
    let paths: Vec<&str> = crons.iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["/api/cron/probe", "/api/cron/evaluate", "/api/cron/backups"]
    );
    for p in paths {
        assert!(
            Route::find(p).is_some_and(Route::is_cron),
            "{p} is not a cron route"
        );
    }
    assert_eq!(
        v["functions"]["api/**/*.rs"]["includeFiles"],
        "rollback-guard.toml"
    );
}

#[test]
fn the_declared_msrv_covers_every_dependency() {
    // Every resolved crate's own rust-version must be at most ours, or
    // `rust-version` promises a toolchain the lock file cannot build with.
    // The platform Vercel builds for (and this machine): the resolve of other
    // platforms' crates (Windows console support) is not in an offline cache.
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = |v: &str| -> Vec<u32> {
        let mut parts: Vec<u32> = v.split('.').map(|p| p.parse().unwrap_or(0)).collect();
        parts.resize(3, 0);
        parts
    };
    let ours = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rollback-guard")
        .and_then(|p| p["rust_version"].as_str())
        .expect("rust-version is declared")
        .to_string();
    let newer: Vec<String> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            (version(v) > version(&ours))
                .then(|| format!("{} {} needs {v}", p["name"], p["version"]))
        })
        .collect();
    assert!(newer.is_empty(), "rust-version {ours} is below: {newer:?}");
}
