//! Admission on real loopback swarms: an outsider (its own key, no certificate, or one signed
//! by another key) reaches no Floe protocol — no chunk, no gossip — and is counted; enrolled
//! peers exchange artifacts and gossip; a device without a certificate gets one from a
//! coordinator's issuer in exchange for its signed report; the connection bound never refuses
//! a coordinator.

use super::admission::{Admission, IssueRequest, Issuer};
use super::fabric_tests::{Started, key, start_with_config};
use super::store::MemStore;
use super::{FabricConfig, FabricEvent, Topic};
use ed25519_dalek::SigningKey;
use floe_wire::proto::membership::{self, Role};
use floe_wire::proto::{Fixed, TrustedKey};
use libp2p::Multiaddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LIFETIME: u64 = 3600;

fn coordinator_key() -> SigningKey {
    SigningKey::from_bytes(&[77; 32])
}

fn trusted(key: &SigningKey) -> TrustedKey {
    TrustedKey::new(Fixed(key.verifying_key().to_bytes()))
}

/// The ed25519 public key of test node `n` (its peer id's).
fn public(n: u8) -> [u8; 32] {
    key(n).public().try_into_ed25519().unwrap().to_bytes()
}

fn cert(signer: &SigningKey, n: u8, role: Role) -> Vec<u8> {
    let now = floe_wire::clock::unix_secs();
    membership::issue(signer, Fixed(public(n)), role, now, LIFETIME).unwrap()
}

fn config(bootstrap: Vec<Multiaddr>, admission: Option<Admission>) -> FabricConfig {
    FabricConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        admission,
        ..FabricConfig::default()
    }
}

/// Admission for node `n`: certificates checked against the coordinator key, and `n`'s own
/// certificate signed by `signer` when given.
fn member(n: u8, signer: Option<&SigningKey>, role: Role) -> Admission {
    let mut a = Admission::new(trusted(&coordinator_key()));
    a.certificate = signer.map(|s| cert(s, n, role));
    a.timeout = Duration::from_secs(2);
    a
}

/// A coordinator's issuer that enrolls a device whose report is `b"enroll me"` and refuses
/// every other peer without a valid certificate.
fn issuer() -> Issuer {
    Arc::new(|request| match request {
        IssueRequest::Own { public_key } => Ok(Some(
            membership::issue(
                &coordinator_key(),
                Fixed(public_key),
                Role::Coordinator,
                floe_wire::clock::unix_secs(),
                LIFETIME,
            )
            .unwrap(),
        )),
        IssueRequest::Peer {
            public_key,
            presented,
            report,
            ..
        } => {
            if presented.is_some() {
                return Ok(None);
            }
            if report.as_deref() != Some(b"enroll me".as_slice()) {
                return Err("not enrolled".into());
            }
            Ok(Some(
                membership::issue(
                    &coordinator_key(),
                    Fixed(public_key),
                    Role::Device,
                    floe_wire::clock::unix_secs(),
                    LIFETIME,
                )
                .map_err(|e| e.to_string())?,
            ))
        }
    })
}

async fn start(n: u8, config: FabricConfig, cancel: &CancellationToken) -> Started {
    start_with_config(n, config, None, Box::new(MemStore::default()), cancel).await
}

/// Whether `node` hears any gossip within `wait`.
async fn hears_gossip(node: &mut Started, wait: Duration) -> bool {
    tokio::time::timeout(wait, async {
        loop {
            match node.events.recv().await {
                Some(FabricEvent::Gossip { .. }) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_reach_no_floe_protocol_and_are_counted() {
    let cancel = CancellationToken::new();
    let coord = coordinator_key();
    let rogue = SigningKey::from_bytes(&[66; 32]);
    let mut c_admission = member(40, Some(&coord), Role::Coordinator);
    c_admission.issuer = Some(issuer());
    let c = start(40, config(vec![], Some(c_admission)), &cancel).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let id = c.fabric.seed(data.clone(), 16 * 1024).await.unwrap();

    // An enrolled device fetches the artifact and hears the coordinator's gossip.
    let mut d = start(
        41,
        config(
            vec![c.addr.clone()],
            Some(member(41, Some(&coord), Role::Device)),
        ),
        &cancel,
    )
    .await;
    d.connected(c.fabric.peer_id()).await;
    d.fabric.fetch(id).await.unwrap();
    assert_eq!(d.completed(id).await, data.len() as u64);
    let heard = super::fabric_tests::publish_until_heard(&c.fabric, Topic::Directive, &mut d).await;
    assert!(heard.is_some(), "the admitted device heard no directive");

    // Outsiders: one without admission at all (an open `floed fabric`), one with a
    // certificate signed by another key, one with no certificate and no report.
    let mut open = start(
        42,
        config(vec![c.addr.clone(), d.addr.clone()], None),
        &cancel,
    )
    .await;
    let mut forged = start(
        43,
        config(
            vec![c.addr.clone(), d.addr.clone()],
            Some(member(43, Some(&rogue), Role::Device)),
        ),
        &cancel,
    )
    .await;
    let mut bare = start(
        44,
        config(vec![c.addr.clone()], Some(member(44, None, Role::Device))),
        &cancel,
    )
    .await;
    for outsider in [&open, &forged, &bare] {
        // The fetch starts (the index is asked for) but no peer serves it.
        let _ = outsider.fabric.fetch(id).await;
    }
    for _ in 0..10 {
        let _ = c.fabric.publish(Topic::Directive, b"post".to_vec()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (name, outsider) in [
        ("open", &mut open),
        ("forged", &mut forged),
        ("bare", &mut bare),
    ] {
        assert!(
            !hears_gossip(outsider, Duration::from_millis(500)).await,
            "the {name} outsider heard gossip"
        );
        let seen = outsider.backlog.iter().any(|e| {
            matches!(
                e,
                FabricEvent::ArtifactComplete { .. }
                    | FabricEvent::ChunkReceived { .. }
                    | FabricEvent::Gossip { .. }
            )
        });
        assert!(!seen, "the {name} outsider received data");
        let stats = outsider.fabric.stats().await.unwrap();
        assert_eq!(stats.chunks_served, 0);
    }
    // The forged and bare outsiders were told no; the open one never proved anything and
    // was disconnected at the deadline. Each refusal is counted at the coordinator and at
    // the device.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cs = c.fabric.stats().await.unwrap();
    assert!(cs.admission.refused >= 2, "{:?}", cs.admission);
    assert!(cs.admission.timeouts >= 1, "{:?}", cs.admission);
    assert_eq!(cs.connected_peers, 1, "only the device counts as connected");
    let ds = d.fabric.stats().await.unwrap();
    assert!(
        ds.admission.refused + ds.admission.timeouts >= 2,
        "{:?}",
        ds.admission
    );
    assert!(
        forged
            .fabric
            .stats()
            .await
            .unwrap()
            .admission
            .refused_by_peers
            >= 1
    );
    assert!(c.fabric.connected_peers().await.unwrap() == vec![d.fabric.peer_id()]);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_gets_its_certificate_from_a_coordinator_for_its_report() {
    let cancel = CancellationToken::new();
    let coord = coordinator_key();
    let mut c_admission = member(50, Some(&coord), Role::Coordinator);
    c_admission.issuer = Some(issuer());
    let c = start(50, config(vec![], Some(c_admission)), &cancel).await;
    let (tx, mut stored) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let mut a = member(51, None, Role::Device);
    a.report = Some(Arc::new(|| Some(b"enroll me".to_vec())));
    a.on_certificate = Some(Arc::new(move |bytes| {
        let _ = tx.try_send(bytes);
    }));
    let mut d = start(51, config(vec![c.addr.clone()], Some(a)), &cancel).await;
    d.connected(c.fabric.peer_id()).await;
    let cert = tokio::time::timeout(Duration::from_secs(5), stored.recv())
        .await
        .unwrap()
        .unwrap();
    let now = floe_wire::clock::unix_secs();
    let m = membership::verify(&trusted(&coord), &cert, &Fixed(public(51)), now).unwrap();
    assert_eq!(m.role, Role::Device);
    assert_eq!(d.fabric.stats().await.unwrap().admission.certificates, 1);
    // With it, another device admits it.
    let mut e = start(
        52,
        config(
            vec![d.addr.clone()],
            Some(member(52, Some(&coord), Role::Device)),
        ),
        &cancel,
    )
    .await;
    e.connected(d.fabric.peer_id()).await;
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_bound_refuses_devices_but_never_the_coordinator() {
    let cancel = CancellationToken::new();
    let coord = coordinator_key();
    // The coordinator starts first, so the device knows its address; the device has room for
    // two other peers, and three devices dial it before the coordinator does.
    let mut c_admission = member(60, Some(&coord), Role::Coordinator);
    c_admission.issuer = Some(issuer());
    let c = start(60, config(vec![], Some(c_admission)), &cancel).await;
    let mut bounded = config(vec![], Some(member(61, Some(&coord), Role::Device)));
    // The coordinator is a bootstrap peer of the device, but the device does not dial it:
    // its address is on a port nobody listens on, so only the peer id is known.
    let c_peer = c.fabric.peer_id();
    bounded.bootstrap = vec![
        format!("/ip4/127.0.0.1/tcp/1/p2p/{c_peer}")
            .parse()
            .unwrap(),
    ];
    bounded.max_connections = 2;
    let mut d = start(61, bounded, &cancel).await;
    let mut others = Vec::new();
    for n in 62..65u8 {
        others.push(
            start(
                n,
                config(
                    vec![d.addr.clone()],
                    Some(member(n, Some(&coord), Role::Device)),
                ),
                &cancel,
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = d.fabric.stats().await.unwrap();
    assert_eq!(stats.connected_peers, 2, "{stats:?}");
    assert!(stats.bound_refused >= 1, "{stats:?}");
    // The coordinator dials in above the bound and is admitted.
    c.fabric.dial(d.addr.clone()).await.unwrap();
    d.connected(c_peer).await;
    let peers = d.fabric.connected_peers().await.unwrap();
    assert_eq!(peers.len(), 3, "{peers:?}");
    assert!(peers.contains(&c_peer));
    cancel.cancel();
}

#[test]
fn a_refusal_reason_is_cut_on_a_character_boundary() {
    let long = "é".repeat(300);
    let w = super::admission::Welcome::refused(&long);
    assert!(w.reason.len() <= super::admission::MAX_REASON);
    assert!(!w.admitted);
}
