//! Tests of the store: migrations, the one-writer transaction, generations, tokens, audit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn audit_line(n: u64, dep: Option<&str>) -> AuditRecord {
    AuditRecord {
        at: n,
        actor: "api".into(),
        action: "test".into(),
        device_id: None,
        deployment_id: dep.map(str::to_string),
        outcome: "ok".into(),
        detail: format!("line {n}"),
    }
}

#[test]
fn migrations_apply_once_and_the_journal_is_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("floe.db");
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        store.put_token("t", 10).unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
    assert!(
        store.take_token("t", "dev", 5).unwrap(),
        "data survives a reopen"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("floe.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::Schema { found: 99, .. })
    ));
}

#[test]
fn a_failed_transaction_leaves_nothing_behind() {
    let store = Store::in_memory().unwrap();
    let result: Result<(), StoreError> = store.atomically(|s| {
        s.audit(&audit_line(1, None))?;
        s.next_generation("dev")?;
        // A second artifact with the same name and release violates the unique key.
        let a = ArtifactRecord {
            flow_id: "f1".into(),
            name: "n".into(),
            release: 1,
            version: "1.1.0".into(),
            manifest_sha256: "00".into(),
            size: 1,
            chunk_size: 4096,
            bundle_path: "/x".into(),
            manifest: vec![1],
            payload: vec![2],
            created_at: 0,
        };
        s.put_artifact(&a)?;
        s.put_artifact(&ArtifactRecord {
            flow_id: "f2".into(),
            ..a
        })
    });
    assert!(result.is_err());
    let all = AuditFilter {
        limit: 10,
        ..AuditFilter::default()
    };
    assert!(store.audit_entries(&all).unwrap().is_empty());
    assert!(store.generations().unwrap().is_empty());
    assert!(store.artifacts().unwrap().is_empty());
}

#[test]
fn generations_only_grow_and_tokens_are_used_once() {
    let store = Store::in_memory().unwrap();
    assert_eq!(store.next_generation("a").unwrap(), 1);
    assert_eq!(store.next_generation("a").unwrap(), 2);
    assert_eq!(store.next_generation("b").unwrap(), 1);
    // Deployment create reads every device's highest generation in one scan.
    let all = store.generations().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all.get("a"), Some(&2));
    assert_eq!(all.get("b"), Some(&1));
    assert_eq!(all.get("c"), None);
    store.put_token("tok", 1_000).unwrap();
    assert!(
        !store.take_token("tok", "a", 1_000).unwrap(),
        "expired at its time"
    );
    assert!(store.take_token("tok", "a", 999).unwrap());
    assert!(!store.take_token("tok", "b", 999).unwrap(), "used once");
    assert!(!store.take_token("nope", "b", 0).unwrap());
}

#[test]
fn audit_is_filtered_and_newest_first() {
    let store = Store::in_memory().unwrap();
    for n in 0..5 {
        store
            .audit(&audit_line(
                n,
                if n % 2 == 0 { Some("dep_1") } else { None },
            ))
            .unwrap();
    }
    let dep = store
        .audit_entries(&AuditFilter {
            limit: 2,
            deployment_id: Some("dep_1".into()),
            device_id: None,
            before: None,
        })
        .unwrap();
    assert_eq!(dep.iter().map(|a| a.at).collect::<Vec<_>>(), [4, 2]);
}

#[test]
fn flows_round_trip_and_versions_count_per_lineage() {
    let store = Store::in_memory().unwrap();
    let f = FlowRecord {
        id: "flow_a".into(),
        name: "A".into(),
        description: String::new(),
        tags: vec!["t".into()],
        state: crate::contract::FlowState::Draft,
        version: 1,
        lineage: "flow_a".into(),
        parent_id: None,
        definition: serde_json::json!({"nodes": []}),
        created_at: 1,
        updated_at: 1,
        published_at: None,
        archived_at: None,
    };
    store.put_flow(&f).unwrap();
    store
        .put_flow(&FlowRecord {
            id: "flow_b".into(),
            version: 2,
            ..f.clone()
        })
        .unwrap();
    assert_eq!(store.flow("flow_a").unwrap().unwrap(), f);
    assert_eq!(store.latest_version("flow_a").unwrap(), 2);
    assert!(store.delete_flow("flow_a").unwrap());
    assert!(store.flow("flow_a").unwrap().is_none());
}

#[test]
fn timestamps_are_rfc3339_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(rfc3339(1_763_780_645_000), "2025-11-22T03:04:05.000Z");
}
