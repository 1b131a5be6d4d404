//! The source tree keeps the architecture: every `src/` module imports only
//! modules of its own room or of a room below it, there are no import cycles,
//! and `core` does no I/O and reads neither the clock nor the environment.
//! Read from the files themselves, so a new `use` that breaks a rule fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which rooms (or single modules) each room may import.
const ALLOWED: &[(&str, &[&str])] = &[
    ("core", &["core"]),
    ("integrations", &["core", "integrations"]),
    // The store's Postgres backend connects with `integrations::postgres`.
    ("store", &["core", "integrations::postgres", "store"]),
    ("flows", &["core", "integrations", "store", "flows"]),
    // Handlers receive the wired state (`App`, `Config`); nothing else of `runtime`.
    (
        "web",
        &[
            "core",
            "integrations",
            "store",
            "flows",
            "web",
            "runtime::app",
            "runtime::config",
        ],
    ),
    (
        "runtime",
        &["core", "integrations", "store", "flows", "web", "runtime"],
    ),
    ("cli", &["core", "integrations", "cli"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module path (`flows::execute::code`) -> file, for every file under `src/`
/// except the binaries and `lib.rs`.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    let mut mods = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src()).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts[0] == "bin" || parts == ["lib"] {
            continue;
        }
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        mods.insert(parts.join("::"), f);
    }
    mods
}

/// The source without comments and without `#[cfg(test)]` modules' bodies
/// (tests may reach anywhere).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::a::b::C` paths, with `crate::{x, y::z}` groups expanded.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                if !item.is_empty() {
                    out.push(ident_path(item));
                }
            }
        } else {
            out.push(ident_path(rest));
        }
    }
    out
}

fn ident_path(s: &str) -> String {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s[..end].trim_end_matches(':').to_string()
}

/// The longest module that `path` names.
fn resolve<'a>(mods: &'a BTreeMap<String, PathBuf>, path: &str) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| mods.get_key_value(&parts[..n].join("::")).map(|(k, _)| k))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, file) in &mods {
        let code = code_of(file);
        let mut deps = BTreeSet::new();
        for p in crate_paths(&code) {
            if let Some(target) = resolve(&mods, &p) {
                // A module naming its own descendants (`mod x;` items) is not an import.
                if target != m && !target.starts_with(&format!("{m}::")) {
                    deps.insert(target.clone());
                }
            }
        }
        // `super::x` inside a module file means its parent's child `x`.
        let parent: Vec<&str> = m.split("::").collect();
        let parent = parent[..parent.len() - 1].join("::");
        let mut rest = code.as_str();
        while let Some(i) = rest.find("super::") {
            rest = &rest[i + "super::".len()..];
            let child = ident_path(rest);
            let full = if parent.is_empty() {
                child
            } else {
                format!("{parent}::{child}")
            };
            if let Some(target) = resolve(&mods, &full) {
                if target != m {
                    deps.insert(target.clone());
                }
            }
        }
        edges.insert(m.clone(), deps);
    }
    edges
}

fn allowed(from: &str, to: &str) -> bool {
    let room = from.split("::").next().unwrap();
    let Some((_, rules)) = ALLOWED.iter().find(|(r, _)| *r == room) else {
        return false;
    };
    rules
        .iter()
        .any(|r| to == *r || to.starts_with(&format!("{r}::")))
}

#[test]
fn every_module_lives_in_a_room_of_the_target_layout() {
    let rooms: BTreeSet<&str> = ALLOWED.iter().map(|(r, _)| *r).collect();
    let stray: Vec<String> = modules()
        .into_keys()
        .filter(|m| !rooms.contains(m.split("::").next().unwrap()))
        .collect();
    assert!(
        stray.is_empty(),
        "modules outside runtime/web/flows/core/store/integrations/cli: {stray:?}"
    );
}

#[test]
fn imports_point_down_only() {
    let mut wrong = Vec::new();
    for (from, deps) in graph() {
        for to in deps {
            if !allowed(&from, &to) {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways: {wrong:#?}"
    );
}

#[test]
fn there_are_no_import_cycles() {
    let g = graph();
    // Depth-first search with colours; a grey target is a back edge (a cycle).
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        cycles: &mut Vec<String>,
    ) {
        colour.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            match colour.get(d.as_str()).copied().unwrap_or(0) {
                0 => visit(d, g, colour, stack, cycles),
                1 => {
                    let start = stack.iter().position(|s| s == d).unwrap();
                    cycles.push(format!("{} -> {d}", stack[start..].join(" -> ")));
                }
                _ => {}
            }
        }
        stack.pop();
        colour.insert(m.to_string(), 2);
    }
    let mut colour = BTreeMap::new();
    let mut cycles = Vec::new();
    for m in g.keys() {
        if colour.get(m.as_str()).copied().unwrap_or(0) == 0 {
            visit(m, &g, &mut colour, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn core_does_no_io_and_reads_no_clock_or_environment() {
    const FORBIDDEN: &[&str] = &[
        "std::fs",
        "tokio::",
        "std::env",
        "env::var",
        "SystemTime",
        "Instant::now",
        "reqwest",
        "tokio_postgres",
        "rand::",
        "std::net",
        "std::process",
    ];
    let mut found = Vec::new();
    for (m, file) in modules() {
        if !m.starts_with("core") {
            continue;
        }
        let code = code_of(&file);
        for f in FORBIDDEN {
            if code.contains(f) {
                found.push(format!("{m}: {f}"));
            }
        }
    }
    assert!(found.is_empty(), "I/O, clock or env in core: {found:?}");
}

#[test]
fn the_checker_sees_a_violation() {
    // The rules above are only worth something if they can fail.
    assert!(!allowed("core::detect", "store"));
    assert!(!allowed("flows::decide", "runtime::app"));
    assert!(!allowed("web::dashboard", "runtime::server"));
    assert!(allowed("web::dashboard", "runtime::app"));
    assert_eq!(
        crate_paths("use crate::{core::clock::Timestamp, store};"),
        vec!["core::clock::Timestamp".to_string(), "store".to_string()]
    );
}
