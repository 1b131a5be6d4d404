//! The `Store` contract, run against every backend. Each case is written once
//! in `cases` and instantiated per backend by the `contract!` macro.

use super::helpers::{Backend, TestStore};

mod cases {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Duration;

    use rollback_guard::core::audit::{verify_chain, AuditEntry, GENESIS_HASH};
    use rollback_guard::core::clock::Timestamp;
    use rollback_guard::store::{
        Deployment, DeploymentState, Doc, DocFilter, DocWrite, RollupRow, Store, StoreError,
    };
    use serde_json::json;

    use super::TestStore;

    const T0: Timestamp = Timestamp::from_millis(1_764_000_000_000);
    const MIN: Duration = Duration::from_secs(60);

    fn entry(action: &str, detail: serde_json::Value) -> AuditEntry {
        AuditEntry {
            at: T0,
            actor: "test".into(),
            action: action.into(),
            subject: "subj".into(),
            detail,
        }
    }

    fn deployment(id: &str, env: &str, created_ms: i64) -> Deployment {
        Deployment {
            id: id.into(),
            environment: env.into(),
            url: format!("{id}.vercel.app"),
            state: DeploymentState::Ready,
            git_sha: Some("abc123".into()),
            created_at: Timestamp::from_millis(created_ms),
            updated_at: Timestamp::from_millis(created_ms + 5),
            meta: json!({"branch": "main", "n": 1}),
        }
    }

    pub async fn ping_and_migrate_are_idempotent(t: &TestStore) {
        t.store.ping().await.unwrap();
        // Already migrated when the test store was made: nothing to do.
        let v1 = t.store.migrate().await.unwrap();
        let v2 = t.store.migrate().await.unwrap();
        assert_eq!(v1, v2);
        assert_eq!(v1.from, v1.to);
        assert!(v1.to >= 1);
    }

    pub async fn concurrent_migrations_from_fresh_connections_all_succeed(t: &TestStore) {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let s = t.reopen().await;
            tasks.push(tokio::spawn(async move { s.migrate().await }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn lease_is_exclusive_until_it_expires(t: &TestStore) {
        let s = &t.store;
        assert!(s
            .try_acquire_lease("cron:evaluate", "a", T0, MIN)
            .await
            .unwrap());
        assert!(!s
            .try_acquire_lease("cron:evaluate", "b", T0.plus(Duration::from_secs(59)), MIN)
            .await
            .unwrap());
        assert!(
            s.try_acquire_lease("cron:probe", "b", T0, MIN)
                .await
                .unwrap(),
            "leases are per name"
        );
        // The holder may renew.
        assert!(s
            .try_acquire_lease("cron:evaluate", "a", T0.plus(Duration::from_secs(30)), MIN)
            .await
            .unwrap());
        assert!(!s
            .try_acquire_lease("cron:evaluate", "b", T0.plus(Duration::from_secs(80)), MIN)
            .await
            .unwrap());
        // After the renewed expiry (T0+90s) another holder gets it.
        assert!(s
            .try_acquire_lease("cron:evaluate", "b", T0.plus(Duration::from_secs(90)), MIN)
            .await
            .unwrap());
    }

    pub async fn only_the_holder_releases_a_lease(t: &TestStore) {
        let s = &t.store;
        assert!(s.try_acquire_lease("l", "a", T0, MIN).await.unwrap());
        assert!(!s.release_lease("l", "b").await.unwrap());
        assert!(!s.try_acquire_lease("l", "b", T0, MIN).await.unwrap());
        assert!(s.release_lease("l", "a").await.unwrap());
        assert!(
            !s.release_lease("l", "a").await.unwrap(),
            "second release is a no-op"
        );
        assert!(s.try_acquire_lease("l", "b", T0, MIN).await.unwrap());
    }

    pub async fn exactly_one_of_many_racing_holders_gets_a_lease(t: &TestStore) {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s: Arc<dyn Store> = if i % 2 == 0 {
                Arc::clone(&t.store)
            } else {
                t.reopen().await
            };
            tasks.push(tokio::spawn(async move {
                s.try_acquire_lease("race", &format!("h{i}"), T0, MIN)
                    .await
                    .unwrap()
            }));
        }
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap());
        }
        assert_eq!(winners, 1);
    }

    pub async fn claim_once_accepts_a_key_once_per_scope_until_expiry(t: &TestStore) {
        let s = &t.store;
        assert!(s.claim_once("sentry", "delivery-1", T0, MIN).await.unwrap());
        assert!(!s
            .claim_once(
                "sentry",
                "delivery-1",
                T0.plus(Duration::from_secs(10)),
                MIN
            )
            .await
            .unwrap());
        assert!(
            s.claim_once("vercel", "delivery-1", T0, MIN).await.unwrap(),
            "scopes are independent"
        );
        assert!(s.claim_once("sentry", "delivery-2", T0, MIN).await.unwrap());
        assert!(
            s.claim_once("sentry", "delivery-1", T0.plus(MIN), MIN)
                .await
                .unwrap(),
            "expired claims can be made again"
        );
    }

    pub async fn exactly_one_of_many_racing_claims_wins(t: &TestStore) {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s: Arc<dyn Store> = if i % 2 == 0 {
                Arc::clone(&t.store)
            } else {
                t.reopen().await
            };
            tasks.push(tokio::spawn(async move {
                s.claim_once("nonce", "n-1", T0, MIN).await.unwrap()
            }));
        }
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap());
        }
        assert_eq!(winners, 1);
    }

    pub async fn audit_log_is_sequenced_and_chained(t: &TestStore) {
        let s = &t.store;
        let a = s.append_audit(entry("first", json!({}))).await.unwrap();
        let b = s
            .append_audit(entry("second", json!({"x": 1})))
            .await
            .unwrap();
        let c = s.append_audit(entry("third", json!(null))).await.unwrap();
        assert_eq!((a.seq, b.seq, c.seq), (1, 2, 3));
        assert_eq!(a.prev_hash, GENESIS_HASH);
        assert_eq!(b.prev_hash, a.hash);
        let all = s.audit_after(0, 100).await.unwrap();
        assert_eq!(all, vec![a.clone(), b.clone(), c.clone()]);
        verify_chain((0, GENESIS_HASH), &all).unwrap();
        assert_eq!(s.audit_after(1, 1).await.unwrap(), vec![b.clone()]);
        assert_eq!(s.audit_after(3, 10).await.unwrap(), vec![]);
        assert_eq!(s.audit_after(0, 0).await.unwrap(), vec![]);
    }

    pub async fn audit_details_round_trip_exactly(t: &TestStore) {
        let detail = json!({
            "nested": {"list": [1, 2.5, -3, 1e21], "empty": {}},
            // Values whose shortest decimal form needs all 17 digits must survive exactly.
            "floats": [0.1 + 0.2, 1.0 / 3.0, 2.2250738585072014e-308, 1.7976931348623157e308, 7.0e-21 / 3.0],
            "text": "naïve — \"quoted\" \n newline 🚀",
            "big": 9_007_199_254_740_993u64,
            "null": null,
            "flag": true
        });
        let rec = t
            .store
            .append_audit(entry("evidence", detail.clone()))
            .await
            .unwrap();
        let back = t.reopen().await.audit_after(0, 1).await.unwrap();
        assert_eq!(back[0].entry.detail, detail);
        assert_eq!(back[0], rec);
        verify_chain((0, GENESIS_HASH), &back).unwrap();
    }

    pub async fn concurrent_appends_from_many_connections_keep_one_chain(t: &TestStore) {
        let mut tasks = Vec::new();
        for i in 0..24 {
            let s: Arc<dyn Store> = if i % 3 == 0 {
                Arc::clone(&t.store)
            } else {
                t.reopen().await
            };
            tasks.push(tokio::spawn(async move {
                s.append_audit(entry(&format!("a{i}"), json!({"i": i})))
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let all = t.store.audit_after(0, 100).await.unwrap();
        assert_eq!(all.len(), 24);
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=24).collect::<Vec<_>>()
        );
        verify_chain((0, GENESIS_HASH), &all).unwrap();
        let actions: BTreeSet<_> = all.iter().map(|r| r.entry.action.clone()).collect();
        assert_eq!(actions.len(), 24, "no append lost or duplicated");
    }

    pub async fn deployments_upsert_and_read_back(t: &TestStore) {
        let s = &t.store;
        assert_eq!(s.deployment("dpl_missing").await.unwrap(), None);
        let mut d = deployment("dpl_1", "production", 1_000);
        s.upsert_deployment(&d).await.unwrap();
        assert_eq!(s.deployment("dpl_1").await.unwrap(), Some(d.clone()));
        d.state = DeploymentState::Promoted;
        d.git_sha = None;
        d.meta = json!({"promoted_by": "ci"});
        s.upsert_deployment(&d).await.unwrap();
        assert_eq!(s.deployment("dpl_1").await.unwrap(), Some(d));
    }

    pub async fn recent_deployments_are_newest_first_per_environment(t: &TestStore) {
        let s = &t.store;
        for (id, env, ms) in [
            ("dpl_a", "production", 1_000),
            ("dpl_b", "production", 3_000),
            ("dpl_c", "production", 2_000),
            ("dpl_p", "preview", 5_000),
            ("dpl_d", "production", 3_000),
        ] {
            s.upsert_deployment(&deployment(id, env, ms)).await.unwrap();
        }
        let ids = |v: Vec<Deployment>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
        // Equal creation times are ordered by id, descending.
        assert_eq!(
            ids(s.recent_deployments("production", 10).await.unwrap()),
            ["dpl_d", "dpl_b", "dpl_c", "dpl_a"]
        );
        assert_eq!(
            ids(s.recent_deployments("production", 2).await.unwrap()),
            ["dpl_d", "dpl_b"]
        );
        assert_eq!(
            ids(s.recent_deployments("preview", 10).await.unwrap()),
            ["dpl_p"]
        );
        assert!(s
            .recent_deployments("staging", 10)
            .await
            .unwrap()
            .is_empty());
        // Moving a deployment to another environment moves it in the listings.
        s.upsert_deployment(&deployment("dpl_p", "production", 4_000))
            .await
            .unwrap();
        assert!(s
            .recent_deployments("preview", 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            ids(s.recent_deployments("production", 1).await.unwrap()),
            ["dpl_p"]
        );
    }

    pub async fn last_known_good_tracks_one_deployment_per_environment(t: &TestStore) {
        let s = &t.store;
        assert_eq!(s.last_known_good("production").await.unwrap(), None);
        match s.set_last_known_good("production", "dpl_unknown").await {
            Err(StoreError::NotFound(_)) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }
        let a = deployment("dpl_a", "production", 1_000);
        let b = deployment("dpl_b", "production", 2_000);
        s.upsert_deployment(&a).await.unwrap();
        s.upsert_deployment(&b).await.unwrap();
        s.set_last_known_good("production", "dpl_a").await.unwrap();
        assert_eq!(s.last_known_good("production").await.unwrap(), Some(a));
        s.set_last_known_good("production", "dpl_b").await.unwrap();
        assert_eq!(s.last_known_good("production").await.unwrap(), Some(b));
        assert_eq!(s.last_known_good("staging").await.unwrap(), None);
    }

    fn doc(id: &str, scope: &str, status: &str, updated_ms: i64, body: serde_json::Value) -> Doc {
        Doc {
            kind: "incident".into(),
            id: id.into(),
            version: 0,
            scope: scope.into(),
            status: status.into(),
            updated_at: Timestamp::from_millis(updated_ms),
            body,
        }
    }

    pub async fn released_claims_can_be_made_again(t: &TestStore) {
        let s = &t.store;
        assert!(s.claim_once("sentry", "d1", T0, MIN).await.unwrap());
        s.release_claim("sentry", "d1").await.unwrap();
        assert!(s.claim_once("sentry", "d1", T0, MIN).await.unwrap());
        s.release_claim("sentry", "never-claimed").await.unwrap();
    }

    pub async fn documents_are_written_with_compare_and_set(t: &TestStore) {
        let s = &t.store;
        let body =
            json!({"level": "critical", "evidence": {"rate": 0.125, "n": 400}, "tags": ["a", "ü"]});
        assert_eq!(
            s.put_doc(
                &doc("inc_1", "production", "open", 1_000, body.clone()),
                None
            )
            .await
            .unwrap(),
            DocWrite::Written(1)
        );
        assert_eq!(
            s.put_doc(&doc("inc_1", "production", "open", 1_000, json!({})), None)
                .await
                .unwrap(),
            DocWrite::Conflict,
            "create is create-only"
        );
        let got = s.get_doc("incident", "inc_1").await.unwrap().unwrap();
        assert_eq!(
            (
                got.version,
                got.scope.as_str(),
                got.status.as_str(),
                got.body.clone()
            ),
            (1, "production", "open", body)
        );
        assert_eq!(got.updated_at, Timestamp::from_millis(1_000));

        assert_eq!(
            s.put_doc(
                &doc("inc_1", "production", "resolved", 2_000, json!({"x": 1})),
                Some(1)
            )
            .await
            .unwrap(),
            DocWrite::Written(2)
        );
        assert_eq!(
            s.put_doc(
                &doc("inc_1", "production", "open", 3_000, json!({"x": 2})),
                Some(1)
            )
            .await
            .unwrap(),
            DocWrite::Conflict,
            "stale version loses"
        );
        assert_eq!(
            s.put_doc(
                &doc("inc_404", "production", "open", 3_000, json!({})),
                Some(1)
            )
            .await
            .unwrap(),
            DocWrite::Conflict
        );
        let got = s.get_doc("incident", "inc_1").await.unwrap().unwrap();
        assert_eq!(
            (got.version, got.status.as_str(), got.body.clone()),
            (2, "resolved", json!({"x": 1}))
        );
        assert_eq!(s.get_doc("incident", "inc_404").await.unwrap(), None);
        assert_eq!(
            s.get_doc("other_kind", "inc_1").await.unwrap(),
            None,
            "ids are per kind"
        );
    }

    pub async fn exactly_one_of_many_racing_document_updates_wins(t: &TestStore) {
        t.store
            .put_doc(&doc("inc_r", "production", "open", 1, json!({})), None)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..12 {
            let s: Arc<dyn Store> = if i % 2 == 0 {
                Arc::clone(&t.store)
            } else {
                t.reopen().await
            };
            tasks.push(tokio::spawn(async move {
                s.put_doc(
                    &doc("inc_r", "production", "executing", 2, json!({"winner": i})),
                    Some(1),
                )
                .await
                .unwrap()
            }));
        }
        let mut written = 0;
        for task in tasks {
            written += usize::from(task.await.unwrap() == DocWrite::Written(2));
        }
        assert_eq!(written, 1);
    }

    pub async fn documents_list_by_scope_and_status_newest_first(t: &TestStore) {
        // Alert states too: a store may index them differently (Postgres and
        // Redis keep fewer listing indexes for them), but lists them alike.
        for kind in ["incident", "alert"] {
            documents_of_a_kind_list_by_scope_and_status_newest_first(t, kind).await;
        }
        // Past a page of newer documents that do not match (Redis pages
        // through alert states when it filters them).
        for i in 0..150 {
            let mut d = doc(&format!("bulk{i}"), "bulk", "open", 1_000 + i, json!({}));
            d.kind = "alert".into();
            t.store.put_doc(&d, None).await.unwrap();
        }
        let staging = DocFilter {
            scope: Some("staging".into()),
            status: None,
        };
        let listed = t.store.list_docs("alert", &staging, 1).await.unwrap();
        assert_eq!(
            listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        assert!(t
            .store
            .list_docs("probe", &DocFilter::default(), 10)
            .await
            .unwrap()
            .is_empty());
    }

    async fn documents_of_a_kind_list_by_scope_and_status_newest_first(t: &TestStore, kind: &str) {
        let s = &t.store;
        let doc = |id, scope, status, ms, body| Doc {
            kind: kind.into(),
            ..doc(id, scope, status, ms, body)
        };
        for (id, scope, status, ms) in [
            ("a", "production", "open", 10),
            ("b", "production", "resolved", 30),
            ("c", "staging", "open", 20),
            ("d", "production", "open", 40),
        ] {
            s.put_doc(&doc(id, scope, status, ms, json!({"id": id})), None)
                .await
                .unwrap();
        }
        let ids = |v: Vec<Doc>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
        let f = |scope: Option<&str>, status: Option<&str>| DocFilter {
            scope: scope.map(Into::into),
            status: status.map(Into::into),
        };
        assert_eq!(
            ids(s.list_docs(kind, &f(None, None), 10).await.unwrap()),
            ["d", "b", "c", "a"]
        );
        assert_eq!(
            ids(s.list_docs(kind, &f(None, None), 2).await.unwrap()),
            ["d", "b"]
        );
        assert_eq!(
            ids(s
                .list_docs(kind, &f(Some("production"), None), 10)
                .await
                .unwrap()),
            ["d", "b", "a"]
        );
        assert_eq!(
            ids(s.list_docs(kind, &f(None, Some("open")), 10).await.unwrap()),
            ["d", "c", "a"]
        );
        assert_eq!(
            ids(s
                .list_docs(kind, &f(Some("production"), Some("open")), 10)
                .await
                .unwrap()),
            ["d", "a"]
        );
        // A status change moves the document between listings.
        s.put_doc(&doc("a", "production", "resolved", 50, json!({})), Some(1))
            .await
            .unwrap();
        assert_eq!(
            ids(s
                .list_docs(kind, &f(Some("production"), Some("open")), 10)
                .await
                .unwrap()),
            ["d"]
        );
        assert_eq!(
            ids(s
                .list_docs(kind, &f(None, Some("resolved")), 10)
                .await
                .unwrap()),
            ["a", "b"]
        );
        // A limit under what matches, where the newest documents do not.
        assert_eq!(
            ids(s
                .list_docs(kind, &f(Some("staging"), None), 1)
                .await
                .unwrap()),
            ["c"]
        );
    }

    pub async fn audit_tails_and_subject_trails_read_only_what_they_return(t: &TestStore) {
        let s = &t.store;
        assert!(s.audit_tail(5).await.unwrap().is_empty());
        for i in 0..30 {
            let subject = if i % 3 == 0 {
                "inc_a"
            } else if i % 3 == 1 {
                "apr_inc_a"
            } else {
                "other"
            };
            let mut e = entry("noted", json!({"i": i}));
            e.subject = subject.into();
            s.append_audit(e).await.unwrap();
        }
        let tail = s.audit_tail(4).await.unwrap();
        assert_eq!(
            tail.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [27, 28, 29, 30]
        );
        // The tail's own links verify from its first record's predecessor.
        rollback_guard::core::audit::verify_chain((tail[0].seq - 1, &tail[0].prev_hash), &tail)
            .unwrap();
        let trail = s
            .audit_of(&["inc_a".to_string(), "apr_inc_a".to_string()], 5)
            .await
            .unwrap();
        assert_eq!(
            trail.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [23, 25, 26, 28, 29]
        );
        assert!(trail.iter().all(|r| r.entry.subject != "other"));
        let all = s.audit_of(&["other".to_string()], 100).await.unwrap();
        assert_eq!(all.len(), 10);
        assert!(s
            .audit_of(&["nobody".to_string()], 10)
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn rollups_of_one_delivery_are_added_once_and_together(t: &TestStore) {
        use rollback_guard::store::RollupAdd;
        let s = &t.store;
        let add = |dep: &str, minute: i64, requests: f64, max: f64| RollupAdd {
            environment: "production".into(),
            deployment: dep.into(),
            minute,
            values: vec![
                ("requests".into(), requests),
                ("requests".into(), 1.0),
                ("max:memory_pct".into(), max),
            ],
        };
        let delivery = [add("dpl_a", 100, 10.0, 40.0), add("dpl_b", 101, 20.0, 70.0)];
        assert!(s
            .add_rollups_once("intake", "d1", &delivery, T0, MIN)
            .await
            .unwrap());
        // The same delivery again (a retry) adds nothing.
        assert!(!s
            .add_rollups_once("intake", "d1", &delivery, T0, MIN)
            .await
            .unwrap());
        // Another delivery adds.
        assert!(s
            .add_rollups_once("intake", "d2", &[add("dpl_a", 100, 5.0, 90.0)], T0, MIN)
            .await
            .unwrap());
        let value = |rows: Vec<rollback_guard::store::RollupRow>, name: &str| {
            rows.iter().find(|r| r.name == name).map(|r| r.value)
        };
        let a = s.rollups("production", "dpl_a", 100, 101).await.unwrap();
        assert_eq!(value(a.clone(), "requests"), Some(17.0));
        assert_eq!(value(a, "max:memory_pct"), Some(90.0));
        let b = s.rollups("production", "dpl_b", 100, 102).await.unwrap();
        assert_eq!(value(b.clone(), "requests"), Some(21.0));
        assert_eq!(value(b, "max:memory_pct"), Some(70.0));
        // After the claim expires the key can count again (a new delivery).
        let later = rollback_guard::core::clock::Timestamp::from_millis(T0.as_millis() + 120_000);
        assert!(s
            .add_rollups_once("intake", "d1", &delivery, later, MIN)
            .await
            .unwrap());
    }

    pub async fn rollups_add_counters_and_keep_maxima(t: &TestStore) {
        let s = &t.store;
        let v = |pairs: &[(&str, f64)]| {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), *v))
                .collect::<Vec<_>>()
        };
        s.add_rollup(
            "production",
            "dpl_1",
            100,
            &v(&[
                ("requests", 10.0),
                ("errors_5xx", 1.0),
                ("max:memory_pct", 55.0),
            ]),
        )
        .await
        .unwrap();
        s.add_rollup(
            "production",
            "dpl_1",
            100,
            &v(&[
                ("requests", 5.0),
                ("requests", 1.0),
                ("max:memory_pct", 40.0),
                ("lat:12", 3.0),
            ]),
        )
        .await
        .unwrap();
        s.add_rollup(
            "production",
            "dpl_1",
            101,
            &v(&[("requests", 7.0), ("max:memory_pct", 70.5)]),
        )
        .await
        .unwrap();
        s.add_rollup("production", "dpl_1", 105, &v(&[("requests", 1.0)]))
            .await
            .unwrap();
        s.add_rollup("production", "dpl_2", 100, &v(&[("requests", 99.0)]))
            .await
            .unwrap();
        s.add_rollup("staging", "dpl_1", 100, &v(&[("requests", 42.0)]))
            .await
            .unwrap();
        s.add_rollup("production", "dpl_1", 100, &[]).await.unwrap();

        let rows = s.rollups("production", "dpl_1", 100, 105).await.unwrap();
        let row = |m: i64, n: &str, v: f64| RollupRow {
            minute: m,
            name: n.into(),
            value: v,
        };
        assert_eq!(
            rows,
            vec![
                row(100, "errors_5xx", 1.0),
                row(100, "lat:12", 3.0),
                row(100, "max:memory_pct", 55.0),
                row(100, "requests", 16.0),
                row(101, "max:memory_pct", 70.5),
                row(101, "requests", 7.0),
            ]
        );
        assert_eq!(
            s.rollups("production", "dpl_1", 105, 106).await.unwrap(),
            vec![row(105, "requests", 1.0)]
        );
        assert!(s
            .rollups("production", "dpl_1", 0, 100)
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn concurrent_rollup_increments_are_not_lost(t: &TestStore) {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let s: Arc<dyn Store> = if i % 2 == 0 {
                Arc::clone(&t.store)
            } else {
                t.reopen().await
            };
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    s.add_rollup(
                        "production",
                        "dpl_c",
                        7,
                        &[
                            ("requests".into(), 1.0),
                            ("max:memory_pct".into(), f64::from(i)),
                        ],
                    )
                    .await
                    .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let rows = t.store.rollups("production", "dpl_c", 7, 8).await.unwrap();
        let get = |n: &str| rows.iter().find(|r| r.name == n).map(|r| r.value);
        assert_eq!(get("requests"), Some(100.0));
        assert_eq!(get("max:memory_pct"), Some(19.0));
    }

    pub async fn data_survives_a_new_connection(t: &TestStore) {
        t.store
            .upsert_deployment(&deployment("dpl_x", "production", 7))
            .await
            .unwrap();
        t.store
            .append_audit(entry("kept", json!({})))
            .await
            .unwrap();
        assert!(t.store.claim_once("s", "k", T0, MIN).await.unwrap());
        let fresh = t.reopen().await;
        assert!(fresh.deployment("dpl_x").await.unwrap().is_some());
        assert_eq!(fresh.audit_after(0, 10).await.unwrap().len(), 1);
        assert!(!fresh.claim_once("s", "k", T0, MIN).await.unwrap());
    }

    fn ingest_item(
        key: &str,
        dep: &str,
        requests: f64,
        alerts: Vec<rollback_guard::store::AlertWrite>,
    ) -> rollback_guard::store::Ingest {
        rollback_guard::store::Ingest {
            scope: "intake:test".into(),
            key: key.into(),
            rollups: vec![rollback_guard::store::RollupAdd {
                environment: "production".into(),
                deployment: dep.into(),
                minute: 100,
                values: vec![
                    ("requests".into(), requests),
                    ("max:memory_pct".into(), requests),
                ],
            }],
            alerts,
        }
    }

    fn alert(id: &str, firing: bool, at: i64) -> rollback_guard::store::AlertWrite {
        rollback_guard::store::AlertWrite {
            id: id.into(),
            environment: "production".into(),
            firing,
            at,
            body: rollback_guard::store::JsonText::of(
                &serde_json::json!({"source": "test", "name": id, "severity": "critical"}),
            )
            .unwrap(),
        }
    }

    async fn requests(t: &TestStore, dep: &str) -> (Option<f64>, Option<f64>) {
        let rows = t.store.rollups("production", dep, 100, 101).await.unwrap();
        let v = |n: &str| rows.iter().find(|r| r.name == n).map(|r| r.value);
        (v("requests"), v("max:memory_pct"))
    }

    pub async fn ingest_records_batches_and_counts_each_delivery_once(t: &TestStore) {
        let s = &t.store;
        // Within one batch: the first of equal keys is the delivery, the second its duplicate.
        let batch = [
            ingest_item("d1", "dpl_a", 10.0, vec![alert("x", true, 1_000)]),
            ingest_item("d2", "dpl_a", 5.0, vec![]),
            ingest_item("d1", "dpl_a", 10.0, vec![alert("x", true, 1_000)]),
        ];
        assert_eq!(
            s.ingest(&batch, T0, MIN).await.unwrap(),
            [true, true, false]
        );
        assert_eq!(requests(t, "dpl_a").await, (Some(15.0), Some(10.0)));
        // Duplicates split across batches: d2 again (a retry) with a new d3.
        // Only d3 writes: neither the retry's counters nor its alert.
        let batch = [
            ingest_item("d2", "dpl_a", 5.0, vec![alert("w", true, 1_500)]),
            ingest_item("d3", "dpl_b", 7.0, vec![alert("v", true, 1_500)]),
        ];
        assert_eq!(s.ingest(&batch, T0, MIN).await.unwrap(), [false, true]);
        assert_eq!(requests(t, "dpl_a").await, (Some(15.0), Some(10.0)));
        assert_eq!(requests(t, "dpl_b").await, (Some(7.0), Some(7.0)));
        assert!(s.get_doc("alert", "w").await.unwrap().is_none());
        assert!(s.get_doc("alert", "v").await.unwrap().is_some());
        // A whole batch of retries records nothing.
        let batch = [
            ingest_item("d3", "dpl_b", 7.0, vec![]),
            ingest_item("d1", "dpl_a", 10.0, vec![]),
        ];
        assert_eq!(s.ingest(&batch, T0, MIN).await.unwrap(), [false, false]);
        assert_eq!(requests(t, "dpl_b").await, (Some(7.0), Some(7.0)));
        // Past the dedupe window a key is a new delivery again.
        let later = Timestamp::from_millis(T0.as_millis() + 2 * 60_000);
        let batch = [ingest_item("d3", "dpl_b", 7.0, vec![])];
        assert_eq!(s.ingest(&batch, later, MIN).await.unwrap(), [true]);
        assert_eq!(requests(t, "dpl_b").await, (Some(14.0), Some(7.0)));
        // An empty batch is nothing.
        assert!(s.ingest(&[], T0, MIN).await.unwrap().is_empty());
        // The alert was stored like any alert state.
        let x = s.get_doc("alert", "x").await.unwrap().unwrap();
        assert_eq!(
            (x.scope.as_str(), x.status.as_str()),
            ("production", "firing")
        );
        assert_eq!(x.version, 1);
        assert_eq!(x.body["first_seen"], 1_000);
        assert_eq!(x.body["last_seen"], 1_000);
        assert_eq!(x.body["name"], "x");
        // Bodies round-trip exactly (empty arrays stay arrays, floats stay floats)
        // and alert states are listed like any document.
        let mut odd = alert("z", true, 9_000);
        let detail = serde_json::json!({"labels": [], "ratio": 1.5, "note": "a/b \"q\" ü"});
        let mut body = odd.body.to_value();
        body["detail"] = detail.clone();
        odd.body = rollback_guard::store::JsonText::of(&body).unwrap();
        s.ingest(
            &[ingest_item("d4", "dpl_c", 1.0, vec![odd.clone()])],
            T0,
            MIN,
        )
        .await
        .unwrap();
        let z = s.get_doc("alert", "z").await.unwrap().unwrap();
        assert_eq!(z.body["detail"], detail);
        // And again as an update of the stored state, which keeps first_seen.
        let mut again = odd.clone();
        again.at = 9_500;
        s.ingest(&[ingest_item("d5", "dpl_c", 1.0, vec![again])], T0, MIN)
            .await
            .unwrap();
        let z = s.get_doc("alert", "z").await.unwrap().unwrap();
        assert_eq!(z.body["detail"], detail);
        assert_eq!(
            (z.body["first_seen"].as_i64(), z.body["last_seen"].as_i64()),
            (Some(9_000), Some(9_500))
        );
        let firing = s
            .list_docs(
                "alert",
                &rollback_guard::store::DocFilter {
                    scope: Some("production".into()),
                    status: Some("firing".into()),
                },
                10,
            )
            .await
            .unwrap();
        let ids: BTreeSet<&str> = firing.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, BTreeSet::from(["v", "x", "z"]));
        for (scope, status) in [
            (Some("production"), None),
            (None, Some("firing")),
            (None, None),
        ] {
            let filter = rollback_guard::store::DocFilter {
                scope: scope.map(Into::into),
                status: status.map(Into::into),
            };
            let listed = s.list_docs("alert", &filter, 10).await.unwrap();
            let ids: BTreeSet<&str> = listed.iter().map(|d| d.id.as_str()).collect();
            assert_eq!(ids, BTreeSet::from(["v", "x", "z"]), "{scope:?} {status:?}");
        }
    }

    /// Alert intake's usual batch: deliveries that write alerts and no
    /// counters (Postgres records them with a statement of their own).
    pub async fn batches_of_alerts_alone_record_each_delivery_once(t: &TestStore) {
        let s = &t.store;
        let only = |key: &str, alerts| rollback_guard::store::Ingest {
            scope: "intake:test".into(),
            key: key.into(),
            rollups: vec![],
            alerts,
        };
        // Within one batch, the copy's write (resolving p) is not applied.
        let batch = [
            only("e1", vec![alert("p", true, 1_000)]),
            only("e2", vec![alert("q", true, 1_000)]),
            only("e1", vec![alert("p", false, 1_100)]),
        ];
        assert_eq!(
            s.ingest(&batch, T0, MIN).await.unwrap(),
            [true, true, false]
        );
        // A retry of e2 beside a new e3: only e3 writes.
        let batch = [
            only("e2", vec![alert("q", false, 2_000)]),
            only("e3", vec![alert("r", true, 2_000), alert("p", true, 2_000)]),
        ];
        assert_eq!(s.ingest(&batch, T0, MIN).await.unwrap(), [false, true]);
        let state = |id: &'static str| async move {
            let d = s.get_doc("alert", id).await.unwrap().unwrap();
            let seen = |k: &str| d.body[k].as_i64().unwrap();
            (d.status, seen("first_seen"), seen("last_seen"))
        };
        assert_eq!(state("p").await, ("firing".into(), 1_000, 2_000));
        assert_eq!(state("q").await, ("firing".into(), 1_000, 1_000));
        assert_eq!(state("r").await, ("firing".into(), 2_000, 2_000));
        // A delivery that writes nothing is still recorded once.
        assert_eq!(
            s.ingest(&[only("e4", vec![])], T0, MIN).await.unwrap(),
            [true]
        );
        assert_eq!(
            s.ingest(&[only("e4", vec![])], T0, MIN).await.unwrap(),
            [false]
        );
        // No counter was written along the way.
        assert!(s
            .rollups("production", "dpl_a", 0, i64::MAX)
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn ingested_alerts_keep_first_seen_while_firing_in_and_across_batches(t: &TestStore) {
        let s = &t.store;
        // Stored firing since 1 000; a batch with two more firing writes keeps it.
        s.ingest(
            &[ingest_item(
                "a1",
                "dpl_a",
                1.0,
                vec![alert("y", true, 1_000)],
            )],
            T0,
            MIN,
        )
        .await
        .unwrap();
        let read = s.get_doc("alert", "y").await.unwrap().unwrap();
        let batch = [
            ingest_item("a2", "dpl_a", 1.0, vec![alert("y", true, 2_000)]),
            ingest_item("a3", "dpl_a", 1.0, vec![alert("y", true, 3_000)]),
        ];
        s.ingest(&batch, T0, MIN).await.unwrap();
        let y = s.get_doc("alert", "y").await.unwrap().unwrap();
        assert_eq!(
            (y.body["first_seen"].as_i64(), y.body["last_seen"].as_i64()),
            (Some(1_000), Some(3_000))
        );
        // Read again after a later write, a state has a later version
        // (Postgres folds one batch's writes of an alert into one, and the
        // writes logged between two reads; the others count each).
        assert!(
            y.version > read.version,
            "{} after {}",
            y.version,
            read.version
        );
        // Read again with nothing written since, it has the same version.
        assert_eq!(
            s.get_doc("alert", "y").await.unwrap().unwrap().version,
            y.version
        );
        assert_eq!(y.body["name"].as_str(), Some("y"));
        // Resolved then firing again in one batch: a new episode starts at the re-fire.
        let batch = [
            ingest_item("a4", "dpl_a", 1.0, vec![alert("y", false, 4_000)]),
            ingest_item("a5", "dpl_a", 1.0, vec![alert("y", true, 5_000)]),
        ];
        s.ingest(&batch, T0, MIN).await.unwrap();
        let y = s.get_doc("alert", "y").await.unwrap().unwrap();
        assert_eq!(y.status, "firing");
        assert_eq!(
            (y.body["first_seen"].as_i64(), y.body["last_seen"].as_i64()),
            (Some(5_000), Some(5_000))
        );
        // Stored resolved, firing again in the next batch: starts anew too.
        s.ingest(
            &[ingest_item(
                "a6",
                "dpl_a",
                1.0,
                vec![alert("y", false, 6_000)],
            )],
            T0,
            MIN,
        )
        .await
        .unwrap();
        s.ingest(
            &[ingest_item(
                "a7",
                "dpl_a",
                1.0,
                vec![alert("y", true, 7_000)],
            )],
            T0,
            MIN,
        )
        .await
        .unwrap();
        let y = s.get_doc("alert", "y").await.unwrap().unwrap();
        assert_eq!(y.body["first_seen"].as_i64(), Some(7_000));
    }

    /// Long runs of alert writes, in one batch or one delivery, leave the
    /// states their writes leave one by one (Redis and Postgres log them
    /// and fold the log in steps when alert states are read).
    pub async fn long_runs_of_alert_writes_leave_the_states_of_their_writes(t: &TestStore) {
        let s = &t.store;
        // 2,500 deliveries in one batch, each a write of one alert, which
        // is resolved once early on.
        let batch: Vec<_> = (1..=2_500)
            .map(|i| {
                let a = alert("long", i != 100, i);
                ingest_item(&format!("l{i}"), "dpl_a", 1.0, vec![a])
            })
            .collect();
        let taken = s.ingest(&batch, T0, MIN).await.unwrap();
        assert!(taken.iter().all(|t| *t));
        // One delivery carrying 1,500 alerts.
        let many = (0..1_500)
            .map(|i| alert(&format!("m{i:04}"), true, 5_000))
            .collect();
        let one = ingest_item("many", "dpl_b", 1.0, many);
        assert_eq!(s.ingest(&[one], T0, MIN).await.unwrap(), [true]);
        let long = s.get_doc("alert", "long").await.unwrap().unwrap();
        assert_eq!(long.status, "firing");
        assert_eq!(
            (
                long.body["first_seen"].as_i64(),
                long.body["last_seen"].as_i64()
            ),
            (Some(101), Some(2_500))
        );
        let filter = DocFilter {
            scope: Some("production".into()),
            status: Some("firing".into()),
        };
        let firing = s.list_docs("alert", &filter, 2_000).await.unwrap();
        let ids: BTreeSet<&str> = firing.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), 1_501);
        assert!(ids.contains("long") && ids.contains("m0000") && ids.contains("m1499"));
    }

    /// Intake from several instances while others read alert states (each
    /// read folds the alert log where a backend keeps one): no batch and no
    /// read fails, and every alert ends in the state its last write left.
    /// Each writer writes its own alerts, one batch after another, so the
    /// last write of each alert is known.
    pub async fn alert_states_read_during_intake_end_as_their_writes_left_them(t: &TestStore) {
        const WRITERS: usize = 3;
        const BATCHES: i64 = 40;
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let s = t.reopen().await;
            tasks.push(tokio::spawn(async move {
                for b in 1..=BATCHES {
                    let batch: Vec<_> = (0..5)
                        .map(|a| {
                            let id = format!("w{w}-a{a}");
                            let write = alert(&id, b != 7, b * 10);
                            ingest_item(&format!("w{w}-b{b}-a{a}"), "dpl_a", 1.0, vec![write])
                        })
                        .collect();
                    s.ingest(&batch, T0, MIN).await.unwrap();
                }
            }));
        }
        for r in 0..2 {
            let s = t.reopen().await;
            tasks.push(tokio::spawn(async move {
                for i in 0..30 {
                    if (i + r) % 2 == 0 {
                        s.list_docs("alert", &DocFilter::default(), 100)
                            .await
                            .unwrap();
                    } else {
                        s.get_doc("alert", "w0-a0").await.unwrap();
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for w in 0..WRITERS {
            for a in 0..5 {
                let id = format!("w{w}-a{a}");
                let d = t.store.get_doc("alert", &id).await.unwrap().unwrap();
                assert_eq!(d.status, "firing", "{id}");
                // Resolved at the 7th write, firing again from the 8th.
                assert_eq!(
                    (d.body["first_seen"].as_i64(), d.body["last_seen"].as_i64()),
                    (Some(80), Some(BATCHES * 10)),
                    "{id}"
                );
            }
        }
    }

    pub async fn expired_claims_are_pruned_in_bounded_steps(t: &TestStore) {
        let s = &t.store;
        // Five claims that expire after a minute, one that lasts a day.
        for k in 0..5 {
            assert!(s.claim_once("p", &format!("k{k}"), T0, MIN).await.unwrap());
        }
        assert!(s
            .claim_once("p", "long", T0, Duration::from_secs(86_400))
            .await
            .unwrap());
        let later = Timestamp::from_millis(T0.as_millis() + 120_000);
        // Bounded: at most `limit` per call; stores whose claims expire on
        // their own (Redis) have nothing to prune.
        let first = s.prune_claims(later, 3).await.unwrap();
        let rest = s.prune_claims(later, 100).await.unwrap();
        assert!(first <= 3, "{first}");
        let expected = match t.config {
            rollback_guard::store::StoreConfig::Redis { .. } => 0,
            _ => 5,
        };
        assert_eq!(first + rest, expected, "{first} + {rest}");
        assert_eq!(s.prune_claims(later, 100).await.unwrap(), 0);
        // The live claim is kept; pruned keys can be claimed anew.
        assert!(!s.claim_once("p", "long", later, MIN).await.unwrap());
        assert!(s.claim_once("p", "k0", later, MIN).await.unwrap());
    }
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let t = super::TestStore::new(super::Backend::Sqlite).await;
                super::cases::$case(&t).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let t = super::TestStore::new(super::Backend::Postgres).await;
                super::cases::$case(&t).await;
            })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let t = super::TestStore::new(super::Backend::Redis).await;
                super::cases::$case(&t).await;
            })*
        }
    };
}

contract!(
    ping_and_migrate_are_idempotent,
    concurrent_migrations_from_fresh_connections_all_succeed,
    lease_is_exclusive_until_it_expires,
    only_the_holder_releases_a_lease,
    exactly_one_of_many_racing_holders_gets_a_lease,
    claim_once_accepts_a_key_once_per_scope_until_expiry,
    exactly_one_of_many_racing_claims_wins,
    audit_log_is_sequenced_and_chained,
    audit_details_round_trip_exactly,
    concurrent_appends_from_many_connections_keep_one_chain,
    deployments_upsert_and_read_back,
    recent_deployments_are_newest_first_per_environment,
    last_known_good_tracks_one_deployment_per_environment,
    data_survives_a_new_connection,
    released_claims_can_be_made_again,
    documents_are_written_with_compare_and_set,
    exactly_one_of_many_racing_document_updates_wins,
    documents_list_by_scope_and_status_newest_first,
    rollups_add_counters_and_keep_maxima,
    rollups_of_one_delivery_are_added_once_and_together,
    audit_tails_and_subject_trails_read_only_what_they_return,
    concurrent_rollup_increments_are_not_lost,
    ingest_records_batches_and_counts_each_delivery_once,
    batches_of_alerts_alone_record_each_delivery_once,
    ingested_alerts_keep_first_seen_while_firing_in_and_across_batches,
    long_runs_of_alert_writes_leave_the_states_of_their_writes,
    alert_states_read_during_intake_end_as_their_writes_left_them,
    expired_claims_are_pruned_in_bounded_steps,
);

/// A delivery `key` of 10 requests to `env`/dpl_a in minute 100.
fn counted(key: &str, env: &str) -> rollback_guard::store::Ingest {
    rollback_guard::store::Ingest {
        scope: "intake:test".into(),
        key: key.into(),
        rollups: vec![rollback_guard::store::RollupAdd {
            environment: env.into(),
            deployment: "dpl_a".into(),
            minute: 100,
            values: vec![("requests".into(), 10.0)],
        }],
        alerts: vec![],
    }
}

/// A fresh Postgres test store, with what tests that reach past the store
/// need: its URL (to open other sessions) and its schema.
async fn postgres_store() -> (TestStore, String, String) {
    let t = TestStore::new(Backend::Postgres).await;
    let rollback_guard::store::StoreConfig::Postgres { url, schema } = t.config.clone() else {
        unreachable!()
    };
    (t, url.expose().to_string(), schema)
}

/// Another session on the test database (another instance's batch, an
/// operator, the server's own view).
async fn session(url: &str) -> tokio_postgres::Client {
    rollback_guard::integrations::app_database::connect(url)
        .await
        .unwrap()
}

/// After a failed batch of k1 and k2 recorded nothing: both retries are
/// taken, a second retry is a duplicate, and the counter holds 20 once.
async fn retries_are_taken_and_count_once(
    t: &TestStore,
    now: rollback_guard::core::clock::Timestamp,
    ttl: std::time::Duration,
) {
    let again = [counted("k1", "production"), counted("k2", "production")];
    assert_eq!(
        t.store.ingest(&again, now, ttl).await.unwrap(),
        [true, true]
    );
    assert_eq!(
        t.store.ingest(&again, now, ttl).await.unwrap(),
        [false, false]
    );
    let rows = t
        .store
        .rollups("production", "dpl_a", 100, 101)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].value, 20.0);
}

/// Postgres records a batch in one transaction: a statement failing half-way
/// (here a NUL byte, which Postgres text refuses, in the second delivery)
/// leaves none of the batch recorded, claims included, so every sender's
/// retry is taken and counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_postgres_batch_records_none_of_its_deliveries() {
    use rollback_guard::core::clock::Timestamp;
    let t = TestStore::new(Backend::Postgres).await;
    let now = Timestamp::from_millis(1_764_000_000_000);
    let ttl = std::time::Duration::from_secs(60);
    let item = counted;
    let bad = [item("k1", "production"), item("k2", "prod\0uction")];
    assert!(t.store.ingest(&bad, now, ttl).await.is_err());
    assert!(t
        .store
        .rollups("production", "dpl_a", 100, 101)
        .await
        .unwrap()
        .is_empty());
    // The retries are taken, and count once.
    retries_are_taken_and_count_once(&t, now, ttl).await;
}

/// A crash in the middle of a Postgres batch (its connection killed after
/// the claims were written, while the counters wait on a lock) leaves
/// nothing: the claims were never committed, so every retry is taken and
/// counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_batch_killed_mid_way_leaves_nothing_and_its_retry_counts_once() {
    use rollback_guard::core::clock::Timestamp;
    let (t, url, schema) = postgres_store().await;
    let now = Timestamp::from_millis(1_764_000_000_000);
    let ttl = std::time::Duration::from_secs(60);
    let item = |key: &str| counted(key, "production");
    // Another session holds the counter's row, uncommitted: the batch's
    // counter write waits there, after its claims.
    let blocker = session(&url).await;
    blocker
        .batch_execute(&format!(
            "BEGIN; INSERT INTO \"{schema}\".rollups VALUES ('production', 'dpl_a', 100, 'requests', 0)"
        ))
        .await
        .unwrap();
    let store = t.store.clone();
    let batch =
        tokio::spawn(async move { store.ingest(&[item("k1"), item("k2")], now, ttl).await });
    let killer = session(&url).await;
    let mut killed = false;
    for _ in 0..100 {
        let rows = killer
            .query(
                // (The batch's statement names its schema early; `query`
                // holds only its first 1 kB.)
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0 AND pid <> pg_backend_pid()",
                &[&format!("\"{schema}\"")],
            )
            .await
            .unwrap();
        if !rows.is_empty() {
            killed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(killed, "the batch never waited on the counter row");
    let first = batch.await.unwrap();
    assert!(first.is_err(), "a killed batch reports failure");
    blocker.batch_execute("ROLLBACK").await.unwrap();
    // Nothing of it stayed; the retries are taken and count once each.
    retries_are_taken_and_count_once(&t, now, ttl).await;
}

/// Both ways of recording a Postgres batch (one statement when every
/// delivery is new; claims first when one is a retry) lock rows in the same
/// order, claims, then counters (alert writes are appended to the alert
/// log and lock nothing), so a batch of each way that share a counter and
/// an alert wait for each other instead of deadlocking, and both alert
/// writes land. Staged: another session holds the counter; the careful
/// batch waits on it (its claims done, its alert not yet written); then the
/// one-statement batch arrives and waits on the counter too. (When alert
/// states were upserted in the batch, a one-statement batch writing its
/// alert before its counter would have held the alert the careful batch
/// needed next: a deadlock, and a 503 for one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batches_of_either_way_lock_rows_in_one_order() {
    use rollback_guard::core::clock::Timestamp;
    use rollback_guard::store::AlertWrite;
    let (t, url, schema) = postgres_store().await;
    let now = Timestamp::from_millis(1_764_000_000_000);
    let ttl = std::time::Duration::from_secs(60);
    let with_alert = |key: &str, alert: &str, at: i64| {
        let mut i = counted(key, "production");
        i.alerts.push(AlertWrite {
            id: alert.into(),
            environment: "production".into(),
            firing: true,
            at,
            body: rollback_guard::store::JsonText::of(&serde_json::json!({"name": alert})).unwrap(),
        });
        i
    };
    // r1 is recorded, so a batch holding it again goes the careful way.
    assert_eq!(
        t.store
            .ingest(&[counted("r1", "production")], now, ttl)
            .await
            .unwrap(),
        [true]
    );
    let blocker = session(&url).await;
    // Which batch takes the counter first once it is free is up to
    // Postgres; a few rounds make the wrong order's deadlock all but certain.
    for round in 0..5 {
        let (n1, n2, x) = (
            format!("n1-{round}"),
            format!("n2-{round}"),
            format!("x{round}"),
        );
        blocker
            .batch_execute(&format!(
                "BEGIN; UPDATE \"{schema}\".rollups SET value = value WHERE deployment = 'dpl_a'"
            ))
            .await
            .unwrap();
        let store = t.store.clone();
        let batch = [counted("r1", "production"), with_alert(&n1, &x, 1_000)];
        let careful = tokio::spawn(async move { store.ingest(&batch, now, ttl).await });
        assert!(
            sessions_waiting_on_locks(&url, &schema, 1).await,
            "the careful batch waits on the counter"
        );
        let store = t.store.clone();
        let batch = [with_alert(&n2, &x, 2_000)];
        let one_statement = tokio::spawn(async move { store.ingest(&batch, now, ttl).await });
        assert!(
            sessions_waiting_on_locks(&url, &schema, 2).await,
            "the one-statement batch waits too"
        );
        blocker.batch_execute("COMMIT").await.unwrap();
        assert_eq!(careful.await.unwrap().unwrap(), [false, true]);
        assert_eq!(one_statement.await.unwrap().unwrap(), [true]);
        let rows = t
            .store
            .rollups("production", "dpl_a", 100, 101)
            .await
            .unwrap();
        let once_each = 10.0 + 20.0 * f64::from(round + 1);
        assert_eq!(
            rows[0].value, once_each,
            "r1 once, n1 and n2 of each round once"
        );
        // Both batches wrote the alert, in either order: firing since the
        // first write, last seen at the second.
        let x = t.store.get_doc("alert", &x).await.unwrap().unwrap();
        let seen = [&x.body["first_seen"], &x.body["last_seen"]].map(|v| v.as_i64().unwrap());
        assert!(
            seen == [1_000, 2_000] || seen == [2_000, 1_000],
            "both batches wrote the alert: {seen:?}"
        );
    }
}

/// Whether `n` sessions come to wait on a lock in a statement about
/// `schema` (not another test's) within five seconds.
async fn sessions_waiting_on_locks(url: &str, schema: &str, n: i64) -> bool {
    let watcher = session(url).await;
    for _ in 0..250 {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0",
                &[&format!("\"{schema}\"")],
            )
            .await
            .unwrap()
            .get(0);
        if waiting >= n {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// A delivery claimed by a batch still in flight (here: another session's
/// uncommitted claim) is not seen by a Postgres batch's one statement
/// before it writes; its claim then waits, finds the other's committed, and
/// the statement undoes itself and goes claims-first: the other delivery
/// counts once, the new one once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_batch_racing_another_for_a_claim_counts_each_delivery_once() {
    use rollback_guard::core::clock::Timestamp;
    let (t, url, schema) = postgres_store().await;
    let now = Timestamp::from_millis(1_764_000_000_000);
    let ttl = std::time::Duration::from_secs(60);
    let other = session(&url).await;
    other
        .batch_execute(&format!(
            "BEGIN; INSERT INTO \"{schema}\".once_claims VALUES ('intake:test', 'k1', now() + interval '1 day')"
        ))
        .await
        .unwrap();
    let store = t.store.clone();
    let batch = tokio::spawn(async move {
        store
            .ingest(
                &[counted("k1", "production"), counted("k2", "production")],
                now,
                ttl,
            )
            .await
    });
    assert!(
        sessions_waiting_on_locks(&url, &schema, 1).await,
        "the batch waits on the other claim"
    );
    other.batch_execute("COMMIT").await.unwrap();
    assert_eq!(batch.await.unwrap().unwrap(), [false, true]);
    let rows = t
        .store
        .rollups("production", "dpl_a", 100, 101)
        .await
        .unwrap();
    assert_eq!(rows[0].value, 10.0, "k2 once; k1 is the other batch's");
}

/// Pruning expired claims never waits on a claim an intake batch holds
/// (here: another session's uncommitted renewal of one): it skips it, so
/// it cannot deadlock with a batch taking its claims in key order, and a
/// later run prunes what it skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_postgres_claims_skips_the_ones_a_batch_holds() {
    use rollback_guard::core::clock::Timestamp;
    let (t, url, schema) = postgres_store().await;
    let t0 = Timestamp::from_millis(1_764_000_000_000);
    let minute = std::time::Duration::from_secs(60);
    for k in 0..5 {
        assert!(t
            .store
            .claim_once("p", &format!("k{k}"), t0, minute)
            .await
            .unwrap());
    }
    let batch = session(&url).await;
    batch
        .batch_execute(&format!(
            "BEGIN; UPDATE \"{schema}\".once_claims SET expires_at = expires_at WHERE key = 'k0'"
        ))
        .await
        .unwrap();
    let later = Timestamp::from_millis(t0.as_millis() + 120_000);
    let pruned = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        t.store.prune_claims(later, 100),
    )
    .await
    .expect("pruning waited on a held claim")
    .unwrap();
    assert_eq!(pruned, 4);
    batch.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(t.store.prune_claims(later, 100).await.unwrap(), 1);
}

/// Postgres folds its alert log into alert states in chunks, oldest
/// first: a backlog longer than a chunk (here 25,000 logged writes of one
/// alert, resolved once early on) leaves the state its writes leave one by
/// one, and an empty log. The fold across the chunk boundary keeps
/// `first_seen` from the first chunk while the alert stays firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_alert_log_longer_than_a_fold_chunk_folds_in_order() {
    let (t, url, schema) = postgres_store().await;
    let admin = session(&url).await;
    admin
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".alert_log
               (id, scope, status, inherit, first_seen, last_seen, updated_at, body)
             SELECT 'long', 'production', CASE WHEN i = 100 THEN 'resolved' ELSE 'firing' END,
                    true, i, i, to_timestamp(1764000000 + i), json_build_object('n', i)
             FROM generate_series(1, 25000) AS i"
        ))
        .await
        .unwrap();
    let long = t.store.get_doc("alert", "long").await.unwrap().unwrap();
    assert_eq!(long.status, "firing");
    assert_eq!(
        (
            long.body["first_seen"].as_i64(),
            long.body["last_seen"].as_i64()
        ),
        (Some(101), Some(25_000))
    );
    assert_eq!(long.body["n"], 25_000);
    assert_eq!(long.updated_at.as_millis(), (1_764_000_000 + 25_000) * 1000);
    let left: i64 = admin
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".alert_log"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// A Postgres alert log longer than one read's bound can fold (here
/// 400,000 writes of 200,000 alerts, twenty chunks, against a 3 s bound)
/// fails that read with `Unavailable` (a 503) but keeps the chunks it
/// folded: every failed read leaves less to fold, and one finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_read_that_cannot_fold_the_whole_log_in_time_keeps_what_it_folded() {
    let (t, url, schema) = postgres_store().await;
    let admin = session(&url).await;
    let rows = 400_000_i64;
    admin
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".alert_log
               (id, scope, status, inherit, first_seen, last_seen, updated_at, body)
             SELECT 'a' || (i % 200000), 'production', 'firing', true, i, i,
                    to_timestamp(1764000000 + i), '{{}}'
             FROM generate_series(1, {rows}) AS i"
        ))
        .await
        .unwrap();
    let left = || async {
        admin
            .query_one(&format!("SELECT count(*) FROM \"{schema}\".alert_log"), &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let bounded = rollback_guard::store::connect_with(
        &t.config,
        rollback_guard::store::StoreTimeouts {
            connect: std::time::Duration::from_secs(5),
            operation: std::time::Duration::from_secs(3),
        },
    )
    .await
    .unwrap();
    let (mut before, mut failed) = (rows, 0);
    let a1 = loop {
        match bounded.get_doc("alert", "a1").await {
            Ok(doc) => break doc.unwrap(),
            Err(rollback_guard::store::StoreError::Unavailable(_)) => {
                let now = left().await;
                assert!(
                    now < before,
                    "a failed read kept what it folded: {now} of {rows}"
                );
                (before, failed) = (now, failed + 1);
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert!(
        failed > 0,
        "folding 400,000 writes took longer than one 3 s read"
    );
    assert_eq!(left().await, 0);
    assert_eq!(
        (
            a1.body["first_seen"].as_i64(),
            a1.body["last_seen"].as_i64()
        ),
        (Some(1), Some(200_001))
    );
}

/// Alert state `a1` and incident `i1`, both production/open, for the
/// upgrade tests.
async fn put_an_alert_and_an_incident(store: &dyn rollback_guard::store::Store) {
    use rollback_guard::core::clock::Timestamp;
    use rollback_guard::store::Doc;
    for (kind, id) in [("alert", "a1"), ("incident", "i1")] {
        let doc = Doc {
            kind: kind.into(),
            id: id.into(),
            version: 0,
            scope: "production".into(),
            status: "open".into(),
            updated_at: Timestamp::from_millis(1_000),
            body: serde_json::json!({}),
        };
        store.put_doc(&doc, None).await.unwrap();
    }
}

/// A store at schema version 3 (alert states in the full listing index)
/// upgrades to 4 in place: its documents stay, alert states leave the
/// listing index, and every kind is listed as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_at_version_3_upgrades_its_listing_index_in_place() {
    use rollback_guard::store::DocFilter;
    let (t, url, schema) = postgres_store().await;
    let admin = session(&url).await;
    put_an_alert_and_an_incident(t.store.as_ref()).await;
    // Back to version 3's index (and no alert log).
    admin
        .batch_execute(&format!(
            "DROP INDEX \"{schema}\".docs_listing;
             CREATE INDEX docs_listing ON \"{schema}\".docs (kind, scope, status, updated_at DESC, id DESC);
             DROP TABLE \"{schema}\".alert_log;
             ALTER TABLE \"{schema}\".once_claims
                 ALTER COLUMN scope TYPE text COLLATE \"default\",
                 ALTER COLUMN key TYPE text COLLATE \"default\";
             DELETE FROM \"{schema}\".schema_migrations WHERE version > 3;"
        ))
        .await
        .unwrap();
    let m = t.store.migrate().await.unwrap();
    assert_eq!((m.from, m.to), (3, 6));
    let predicate: String = admin
        .query_one(
            "SELECT pg_get_expr(indpred, indrelid) FROM pg_index
             WHERE indexrelid = to_regclass($1)",
            &[&format!("\"{schema}\".docs_listing")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(predicate, "(kind <> 'alert'::text)");
    let filter = DocFilter {
        scope: Some("production".into()),
        status: Some("open".into()),
    };
    for (kind, id) in [("alert", "a1"), ("incident", "i1")] {
        let listed = t.store.list_docs(kind, &filter, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
    }
}

/// A Postgres store at schema version 5 (claims compared by the database's
/// collation, logged bodies as `json`) upgrades to 6 in place: a held claim
/// stays held, an expired one is taken again, a write logged before the
/// upgrade folds as before, and the columns are bytewise text and text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_at_version_5_keeps_its_claims_and_alert_log_through_the_upgrade() {
    use rollback_guard::core::clock::Timestamp;
    let (t, url, schema) = postgres_store().await;
    let admin = session(&url).await;
    let now = Timestamp::from_millis(1_764_000_000_000);
    let day = std::time::Duration::from_secs(86_400);
    let s = t.store.as_ref();
    assert!(s
        .claim_once("intake:alertmanager", "sha256:held", now, day)
        .await
        .unwrap());
    let expired = Timestamp::from_millis(now.as_millis() - 2 * 86_400_000);
    assert!(s
        .claim_once("intake:alertmanager", "sha256:old", expired, day)
        .await
        .unwrap());
    admin
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".once_claims
                 ALTER COLUMN scope TYPE text COLLATE \"default\",
                 ALTER COLUMN key TYPE text COLLATE \"default\";
             ALTER TABLE \"{schema}\".alert_log ALTER COLUMN body TYPE json USING body::json;
             DELETE FROM \"{schema}\".schema_migrations WHERE version > 5;
             INSERT INTO \"{schema}\".alert_log
               (id, scope, status, inherit, first_seen, last_seen, updated_at, body)
             VALUES ('logged', 'production', 'firing', true, 7, 9, to_timestamp(1764000000),
                     '{{\"name\": \"before the upgrade\"}}'::json);"
        ))
        .await
        .unwrap();
    let m = s.migrate().await.unwrap();
    assert_eq!((m.from, m.to), (5, 6));
    let columns: Vec<(String, String, Option<String>)> = admin
        .query(
            "SELECT c.relname::text, a.attname::text, co.collname::text
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_collation co ON co.oid = a.attcollation
             WHERE n.nspname = $1 AND a.attnum > 0
               AND (c.relname, a.attname) IN (('once_claims', 'scope'), ('once_claims', 'key'))
             ORDER BY 1, 2",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let c = |col: &str| {
        (
            "once_claims".to_string(),
            col.to_string(),
            Some("C".to_string()),
        )
    };
    assert_eq!(columns, vec![c("key"), c("scope")]);
    let body_type: String = admin
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attname = 'body'",
            &[&format!("\"{schema}\".alert_log")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(body_type, "text");
    assert!(!s
        .claim_once("intake:alertmanager", "sha256:held", now, day)
        .await
        .unwrap());
    assert!(s
        .claim_once("intake:alertmanager", "sha256:old", now, day)
        .await
        .unwrap());
    let logged = s.get_doc("alert", "logged").await.unwrap().unwrap();
    assert_eq!(logged.body["name"], "before the upgrade");
    assert_eq!(
        (
            logged.body["first_seen"].as_i64(),
            logged.body["last_seen"].as_i64()
        ),
        (Some(7), Some(9))
    );
}

/// A Redis store at schema version 2 (alert states in all four listing
/// indexes) upgrades to 3: the by-scope and by-status indexes of alert
/// states, no longer kept, are deleted; other kinds keep theirs, and alert
/// states list as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_at_version_2_drops_the_alert_indexes_it_no_longer_keeps() {
    use rollback_guard::store::DocFilter;
    let t = TestStore::new(Backend::Redis).await;
    let rollback_guard::store::StoreConfig::Redis { prefix, .. } = &t.config else {
        unreachable!()
    };
    put_an_alert_and_an_incident(t.store.as_ref()).await;
    let client = ::redis::Client::open(super::helpers::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stale = [
        format!("{prefix}docs:alert:s:production"),
        format!("{prefix}docs:alert:t:open"),
    ];
    // Kept: the index alert states still use (and a scope named like one).
    let kept_too = [
        format!("{prefix}docs:alert:st:production|open"),
        format!("{prefix}docs:alert:st:s|open"),
    ];
    let mut back_to_2 = ::redis::pipe();
    for key in stale.iter().chain(&kept_too) {
        back_to_2.zadd(key, "a1", 1_000).ignore();
    }
    back_to_2.set(format!("{prefix}schema_version"), 2).ignore();
    let _: () = back_to_2.query_async(&mut conn).await.unwrap();

    let m = t.store.migrate().await.unwrap();
    assert_eq!((m.from, m.to), (2, 3));
    for key in &stale {
        let exists: bool = ::redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!exists, "{key}");
    }
    for key in kept_too
        .iter()
        .chain([&format!("{prefix}docs:incident:s:production")])
    {
        let exists: bool = ::redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(exists, "{key}");
    }
    for filter in [
        DocFilter {
            scope: Some("production".into()),
            status: None,
        },
        DocFilter {
            scope: None,
            status: Some("open".into()),
        },
    ] {
        for (kind, id) in [("alert", "a1"), ("incident", "i1")] {
            let listed = t.store.list_docs(kind, &filter, 10).await.unwrap();
            assert_eq!(listed.len(), 1, "{kind} {filter:?}");
            assert_eq!(listed[0].id, id);
        }
    }
}

/// A Redis batch is one script, and a script's earlier writes are not undone
/// when it fails: a stored alert state that does not decode must not stop
/// the batch half-way (claims taken, later deliveries unwritten, retries
/// answered as duplicates). It is replaced, and every delivery is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_batch_replaces_an_unreadable_alert_state_instead_of_failing_half_way() {
    let t = TestStore::new(Backend::Redis).await;
    let rollback_guard::store::StoreConfig::Redis { prefix, .. } = &t.config else {
        unreachable!()
    };
    let client = ::redis::Client::open(super::helpers::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("SET")
        .arg(format!("{prefix}doc:alert:broken"))
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let write = |id: &str| rollback_guard::store::AlertWrite {
        id: id.into(),
        environment: "production".into(),
        firing: true,
        at: 5_000,
        body: rollback_guard::store::JsonText::of(
            &serde_json::json!({"source": "test", "name": id}),
        )
        .unwrap(),
    };
    let item = |key: &str, id: &str| rollback_guard::store::Ingest {
        scope: "intake:test".into(),
        key: key.into(),
        rollups: Vec::new(),
        alerts: vec![write(id)],
    };
    let now = rollback_guard::core::clock::Timestamp::from_millis(1_795_600_800_000);
    let ttl = std::time::Duration::from_secs(60);
    let batch = [
        item("k1", "before"),
        item("k2", "broken"),
        item("k3", "after"),
    ];
    assert_eq!(
        t.store.ingest(&batch, now, ttl).await.unwrap(),
        [true, true, true]
    );
    for id in ["before", "broken", "after"] {
        let d = t.store.get_doc("alert", id).await.unwrap().unwrap();
        assert_eq!(
            (d.status.as_str(), d.body["first_seen"].as_i64()),
            ("firing", Some(5_000)),
            "{id}"
        );
    }
}

/// Neon ends idle connections (its compute suspends, its pooler restarts),
/// and a Vercel instance is frozen between requests, so the pool cannot see
/// the end before the next request checks the connection out. That request
/// (an approver's click, a cron) must not fail with a 503: a connection idle
/// for a while is checked before use and replaced if the server ended it.
#[tokio::test(flavor = "current_thread")]
async fn a_pooled_postgres_connection_the_server_ended_while_idle_is_replaced_not_failed() {
    let (t, url, schema) = postgres_store().await;
    t.store.get_doc("incident", "warm").await.unwrap();
    // The server ends the idle pooled connection while this runtime is not
    // running (blocked here, as a frozen instance is): its connection task
    // cannot notice before the next checkout. Past the idle check's threshold.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let killer = session(&url).await;
            let ended = killer
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE state = 'idle' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
                    &[&schema],
                )
                .await
                .unwrap();
            assert_eq!(ended.len(), 1, "the store's one pooled connection");
        });
        std::thread::sleep(std::time::Duration::from_millis(5_500));
    })
    .join()
    .unwrap();
    assert!(t.store.get_doc("incident", "warm").await.unwrap().is_none());
}

/// Redis forgets scripts (a restart, `SCRIPT FLUSH`, a failover to a
/// replica that never loaded them): a batch then loads the ingest script
/// and is recorded as usual, counters and alert writes included. On a
/// Redis server of its own: scripts are server-wide, and a flush on the
/// shared one races other tests' scripts between their load and their
/// retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_batch_loads_the_ingest_script_when_redis_has_forgotten_it() {
    use rollback_guard::core::clock::Timestamp;
    use rollback_guard::store::{RedisStore, Store};
    let port = crate::helpers::free_port();
    let _server = tokio::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start redis-server");
    let url = format!("redis://127.0.0.1:{port}");
    let client = ::redis::Client::open(url.as_str()).unwrap();
    let mut conn = None;
    for _ in 0..100 {
        if let Ok(c) = client.get_multiplexed_async_connection().await {
            conn = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut conn = conn.expect("redis-server answers");
    let store = RedisStore::connect(&url, "forgets:", Default::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let now = Timestamp::from_millis(1_764_000_000_000);
    let ttl = std::time::Duration::from_secs(60);
    let mut alerted = counted("k1", "production");
    alerted.alerts = vec![rollback_guard::store::AlertWrite {
        id: "forgotten".into(),
        environment: "production".into(),
        firing: true,
        at: 5_000,
        body: rollback_guard::store::JsonText::of(&serde_json::json!({"name": "forgotten"}))
            .unwrap(),
    }];
    let batches = [
        ([alerted, counted("k2", "production")], [true, true]),
        (
            [counted("k1", "production"), counted("k3", "production")],
            [false, true],
        ),
    ];
    for (batch, taken) in batches {
        let _: () = ::redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(store.ingest(&batch, now, ttl).await.unwrap(), taken);
    }
    let rows = store
        .rollups("production", "dpl_a", 100, 101)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].value, 30.0);
    let alert = store.get_doc("alert", "forgotten").await.unwrap().unwrap();
    assert_eq!(alert.status, "firing");
}

/// A migration that outlives its bound (here, blocked by another session's
/// lock on a table it alters) is cancelled on the server, not only given
/// up on by the guard: before, the statement went on waiting, and would
/// have held its lock against every later query of the table once it got
/// it. After the error, no backend is left running the migration, and the
/// next migration, the blocker gone, applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_migration_past_its_bound_is_cancelled_on_the_server() {
    use rollback_guard::store::{PostgresStore, Store};
    let (_t, url, schema) = postgres_store().await;
    let admin = session(&url).await;
    admin
        .batch_execute(&format!(
            "DELETE FROM \"{schema}\".schema_migrations WHERE version > 5"
        ))
        .await
        .unwrap();
    let blocker = session(&url).await;
    blocker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{schema}\".once_claims IN ACCESS SHARE MODE"
        ))
        .await
        .unwrap();
    let store = PostgresStore::connect(&url, &schema, std::time::Duration::from_secs(5))
        .unwrap()
        .with_migration_limit(std::time::Duration::from_millis(800));
    let started = std::time::Instant::now();
    let e = store.migrate().await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{e}");
    assert!(e.to_string().contains("cancelled"), "{e}");
    // The cancel is asynchronous: give the server a moment.
    // This schema's migration (other tests migrate schemas of their own).
    let altered = format!("\"{schema}\".once_claims");
    let waiting = || async {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND state = 'active' AND position($1 in query) > 0
                   AND query LIKE '%COLLATE%'",
                &[&altered],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    let mut left = waiting().await;
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        left = waiting().await;
    }
    assert_eq!(left, 0, "the migration still runs on the server");
    blocker.batch_execute("COMMIT").await.unwrap();
    let m = store.migrate().await.unwrap();
    assert_eq!((m.from, m.to), (5, 6));
}
