//! Paging over HTTP against a real service: every list pages in a stable order, a client that
//! follows the cursors sees every record that existed when it started exactly once even while
//! new records arrive, and pages are bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::contract_tests::{TestServer, published_flow};
use crate::client::{Client, DeviceFilter, Method};
use crate::contract::{AuditPage, DeploymentInput, DevicePage, TargetPage};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Allowlists `n` devices in one batch, keys from `seed` on (ids are the keys' hex; `_prefix`
/// only names the group at the call site); returns their ids.
fn allow(c: &Client, _prefix: &str, n: usize, seed: u8) -> Vec<String> {
    let ids: Vec<String> = (0..n)
        .map(|i| {
            let key = ed25519_dalek::SigningKey::from_bytes(&[seed.wrapping_add(i as u8); 32]);
            hex::encode(key.verifying_key().to_bytes())
        })
        .collect();
    let devices: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "public_key": id, "type": "rpi4", "region": "eu"}))
        .collect();
    c.call(
        Method::Post,
        "/devices/batch",
        Some(&json!({ "devices": devices })),
    )
    .unwrap();
    ids
}

fn deploy(c: &Client, flow: &str, targets: &[String]) -> String {
    let body = DeploymentInput {
        flow_id: flow.into(),
        strategy: "rolling".into(),
        target_devices: Some(targets.to_vec()),
        selector: None,
        config: Default::default(),
    };
    let d: Value = c.create_deployment(&body).unwrap().json().unwrap();
    d["id"].as_str().unwrap().to_string()
}

fn page<T: serde::de::DeserializeOwned>(c: &Client, url: &str) -> T {
    c.call(Method::Get, url, None).unwrap().json().unwrap()
}

fn with_cursor(base: &str, cursor: &Option<String>) -> String {
    match cursor {
        Some(c) => format!("{base}&cursor={c}"),
        None => base.to_string(),
    }
}

fn blocking<F: FnOnce(&Client) + Send + 'static>(f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = TestServer::start().await;
        let c = server.client();
        tokio::task::spawn_blocking(move || f(&c)).await.unwrap();
        server.stop().await;
    });
}

#[test]
fn devices_page_by_id_and_new_devices_never_duplicate_or_hide_old_ones() {
    blocking(|c| {
        let mut before = allow(c, "m", 23, 1);
        before.sort();
        let mut seen: Vec<String> = Vec::new();
        let mut cursor = None;
        let mut round = 0;
        loop {
            let p: DevicePage = page(c, &with_cursor("/devices?limit=5", &cursor));
            assert!(p.devices.len() <= 5);
            seen.extend(p.devices.iter().map(|d| d.id.clone()));
            // New devices arrive between pages, before and after the cursor.
            round += 1;
            allow(c, &format!("a{round}"), 1, 100 + round);
            allow(c, &format!("z{round}"), 1, 150 + round);
            match p.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "a device was listed twice: {seen:?}"
        );
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "pages are in id order");
        for id in &before {
            assert!(seen.contains(id), "{id} was never listed");
        }
        // The iterator sees the same, and the last page says so with a null `next`.
        let all = c.devices(&DeviceFilter::default(), Some(7)).all().unwrap();
        let ids: Vec<String> = all.iter().map(|d| d.id.clone()).collect();
        let mut want: Vec<String> = ids.clone();
        want.sort();
        want.dedup();
        assert_eq!(ids, want);
        assert!(ids.len() >= before.len() + 2 * round as usize);
        // Filters apply before paging: a page is full of matching devices only.
        let p: DevicePage = page(c, "/devices?limit=3&region=eu&online=false");
        assert_eq!(p.devices.len(), 3);
        assert!(p.next.is_some());
    });
}

#[test]
fn audit_pages_newest_first_and_entries_added_meanwhile_stay_out_of_later_pages() {
    blocking(|c| {
        for i in 0..12 {
            allow(c, &format!("d{i}"), 1, i);
            c.create_enroll_token(None).unwrap();
        }
        let snapshot: AuditPage = page(c, "/audit?limit=1000");
        assert!(snapshot.next.is_none());
        assert!(snapshot.entries.len() >= 12, "{}", snapshot.entries.len());
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let p: AuditPage = page(c, &with_cursor("/audit?limit=4", &cursor));
            assert!(p.entries.len() <= 4);
            seen.extend(p.entries);
            // More actions, newer than every page still to come.
            published_flow(c);
            match p.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, snapshot.entries);
        let all = c.audit_entries(None, None, Some(3)).all().unwrap();
        assert!(all.len() > snapshot.entries.len());
    });
}

#[test]
fn deployments_page_in_creation_order_and_targets_in_plan_order() {
    blocking(|c| {
        let flow = published_flow(c);
        let ids = allow(c, "t", 40, 1);
        // Seven one-device deployments, then paging with more created between pages.
        let mut created: Vec<String> = ids[..7]
            .iter()
            .map(|d| deploy(c, &flow, std::slice::from_ref(d)))
            .collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut next_device = 7;
        loop {
            let p: crate::contract::DeploymentPage =
                page(c, &with_cursor("/deployments?limit=3", &cursor));
            assert!(p.deployments.len() <= 3);
            seen.extend(p.deployments.iter().map(|d| d.id.clone()));
            created.push(deploy(c, &flow, &ids[next_device..=next_device]));
            next_device += 1;
            match p.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        // Creation order, each once, and the ones created while paging came last.
        assert_eq!(seen[..7], created[..7]);
        let tail: Vec<&String> = seen[7..].iter().collect();
        assert!(tail.iter().all(|id| created[7..].contains(id)), "{seen:?}");
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len());
        // A status filter pages too.
        let pending: crate::contract::DeploymentPage =
            page(c, "/deployments?status=pending&limit=1000");
        assert_eq!(pending.deployments.len(), created.len());
        let e = c
            .call(Method::Get, "/deployments?status=done", None)
            .unwrap_err();
        assert!(e.to_string().contains("done"), "{e}");

        // One large deployment's targets page in plan order, bounded, without gaps.
        let big = deploy(c, &flow, &ids[next_device..]);
        let total = ids.len() - next_device;
        let mut targets = Vec::new();
        let mut cursor = None;
        loop {
            let p: TargetPage = page(
                c,
                &with_cursor(&format!("/deployments/{big}/targets?limit=4"), &cursor),
            );
            assert_eq!(p.total as usize, total);
            assert!(p.targets.len() <= 4);
            targets.extend(p.targets);
            match p.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(targets.len(), total);
        let unique: BTreeSet<&String> = targets.iter().map(|t| &t.device_id).collect();
        assert_eq!(unique.len(), total);
        let via_iter = c.targets(&big, Some(1000)).all().unwrap();
        assert_eq!(via_iter, targets);
        // A cursor of one deployment's targets is refused by another's.
        let first: TargetPage = page(c, &format!("/deployments/{big}/targets?limit=1"));
        let theirs = first.next.unwrap();
        let other = &created[0];
        let e = c
            .call(
                Method::Get,
                &format!("/deployments/{other}/targets?cursor={theirs}"),
                None,
            )
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        assert!(e.to_string().contains("cursor"), "{e}");
        // The deployment object counts its targets instead of listing them.
        let d: Value = c.get_deployment(&big).unwrap().json().unwrap();
        assert_eq!(d["total_targets"], total);
        assert_eq!(d["target_counts"]["pending"], total);
        assert!(d.get("targets").is_none());
        assert_eq!(
            d["stages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["counts"]["pending"].as_u64().unwrap())
                .sum::<u64>(),
            total as u64
        );
    });
}
