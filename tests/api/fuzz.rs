//! Property-based fuzzing of everything that parses outside input: each
//! alert source's payload parser, the signature and timestamp header checks,
//! and approval tokens. Inputs are random bytes and random mutations of the
//! real payloads kept in `tests/fuzz/<source>/`, under random clocks. The
//! property: an answer (Ok or a typed error), never a panic. `PROPTEST_CASES`
//! raises the number of cases (default 512 per property); failures proptest
//! finds are saved under `proptest-regressions/` and replayed first.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use rollback_guard::core::approval::token::{self, SigningKey};
use rollback_guard::core::clock::Timestamp;
use rollback_guard::core::secret::Secret;
use rollback_guard::flows::intake::verify::{check_fresh, standard_webhooks};
use rollback_guard::flows::intake::{self, AlertSecrets, Source};

fn seeds(dir: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(dir);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    out
}

/// A seed with up to 8 random edits (flip, insert, delete, truncate).
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    (
        0..n,
        prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..8),
    )
        .prop_map(move |(i, edits)| {
            let mut s = seeds[i].clone();
            for (op, at, byte) in edits {
                let at = if s.is_empty() { 0 } else { at % s.len() };
                match op % 4 {
                    0 if !s.is_empty() => s[at] = byte,
                    1 => s.insert(at, byte),
                    2 if !s.is_empty() => {
                        s.remove(at);
                    }
                    _ => s.truncate(at),
                }
            }
            s
        })
}

fn bytes(seed_dir: &str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        mutated(seeds(seed_dir)),
    ]
}

fn clock() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        Just(Timestamp::from_millis(1_795_600_800_000)),
        any::<i64>().prop_map(Timestamp::from_millis),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512),
        ..ProptestConfig::default()
    }
}

/// Header values the HTTP layer can deliver: visible ASCII and spaces.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,80}",
        any::<i64>().prop_map(|n| n.to_string()),
        "v1,[A-Za-z0-9+/=]{0,60}( v1,[A-Za-z0-9+/=]{0,60})?",
        "[0-9a-f]{0,70}",
        "v0=[0-9a-f]{64}",
    ]
}

fn secrets() -> AlertSecrets {
    AlertSecrets {
        sentry_client_secret: Some(Secret::new("sentry-client-secret-1")),
        vercel_webhook_secret: Some(Secret::new("vercel-webhook-secret-1")),
        vercel_log_drain_secret: Some(Secret::new("vercel-drain-secret-1")),
        vercel_drain_verify: None,
        grafana_secret: Some(Secret::new("grafana-secret-1")),
        grafana_timestamp_header: Some("x-grafana-alerting-signature-timestamp".into()),
        alertmanager_token: Some(Secret::new("alertmanager-token-0123456789")),
        generic_secret: Some(Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
    }
}

const HEADERS: &[&str] = &[
    "sentry-hook-resource",
    "sentry-hook-timestamp",
    "sentry-hook-signature",
    "x-vercel-signature",
    "x-grafana-alerting-signature",
    "x-grafana-alerting-signature-timestamp",
    "authorization",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

fn headers(values: &[String]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, v) in HEADERS.iter().zip(values) {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    h
}

const SOURCES: &[(Source, &str)] = &[
    (Source::Sentry, "sentry"),
    (Source::Alertmanager, "alertmanager"),
    (Source::Grafana, "grafana"),
    (Source::Vercel, "vercel"),
    (Source::LogDrain, "logdrain"),
    (Source::Generic, "generic"),
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sentry_payloads_never_panic(body in bytes("sentry"), now in clock(), resource in "[a-z_]{0,20}") {
        let _ = intake::sources::sentry::parse(&resource, &body, now);
    }

    #[test]
    fn alertmanager_and_grafana_payloads_never_panic(body in bytes("alertmanager"), g in bytes("grafana"), now in clock()) {
        let _ = intake::sources::alertmanager::parse("alertmanager", &body, now);
        let _ = intake::sources::alertmanager::parse("grafana", &g, now);
    }

    #[test]
    fn vercel_webhooks_never_panic(body in bytes("vercel"), now in clock()) {
        let _ = intake::sources::vercel::parse(&body, now);
        let _ = intake::sources::vercel::delivery_id(&body);
        let _ = intake::sources::vercel::created_at(&body);
    }

    #[test]
    fn log_drain_batches_never_panic(body in bytes("logdrain"), now in clock()) {
        let _ = intake::sources::logdrain::parse(&body, now);
    }

    #[test]
    fn generic_payloads_never_panic(body in bytes("generic"), now in clock()) {
        let _ = intake::sources::generic::parse(&body, now);
    }

    #[test]
    fn every_source_authenticates_and_parses_any_headers_without_panicking(
        which in 0..SOURCES.len(),
        body in prop_oneof![bytes("sentry"), bytes("vercel"), bytes("generic")],
        values in prop::collection::vec(header_value(), HEADERS.len()),
        now in clock(),
    ) {
        let (source, _) = SOURCES[which];
        let h = headers(&values);
        let _ = intake::authenticate(source, &secrets(), &h, &body, now);
        let _ = intake::parse(source, &h, &body, now);
        let _ = intake::dedupe_key(source, &h, &body);
    }

    #[test]
    fn timestamp_and_signature_headers_never_panic(
        ts in header_value(),
        id in header_value(),
        sig in header_value(),
        body in prop::collection::vec(any::<u8>(), 0..256),
        now in clock(),
    ) {
        let _ = check_fresh(&ts, now, "timestamp");
        let _ = standard_webhooks("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &id, &ts, &sig, &body, now);
    }

    #[test]
    fn approval_tokens_never_panic(
        raw in prop_oneof![
            "[ -~]{0,200}",
            mutated(seeds("token")).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
        now in clock(),
    ) {
        let keys = [SigningKey { kid: "k2".into(), key: Secret::new("k2-secret-0123456789-0123456789-abc") }];
        let _ = token::verify(&keys, &raw, now);
    }
}
