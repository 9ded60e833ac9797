//! End-to-end: a fleet of real `floed fabric` processes on loopback exchanging one signed
//! bundle.
//!
//! Every test makes a release key, a trust store and a `.floe` bundle with the real `floe` CLI.
//! The seed verifies and imports the bundle; the others fetch its chunks from every peer that
//! has them, get the manifest from the announcement or by asking a peer directly, and rebuild
//! the bundle, which must be byte-identical to the original and verify against the trust store.
//! Nodes start with temp data dirs and mDNS off, and find each other through bootstrap addresses
//! and Kademlia, so concurrent runs never see each other.

use anyhow::Result;
use floe_tests::fabric::{Bundle, Node, NodeOpts, signed_bundle};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

const CHUNK: u32 = 64 * 1024;
const WAIT: Duration = Duration::from_secs(60);

fn bundle(dir: &Path, payload_len: usize, seed: u64) -> Result<Bundle> {
    signed_bundle(&dir.join("release"), payload_len, seed, CHUNK)
}

fn seed_node(dir: &Path, bundle: &Bundle, fault_corrupt: bool) -> Result<(Node, String)> {
    let node = Node::start(NodeOpts {
        data_dir: dir.to_path_buf(),
        seed: Some(bundle.path.clone()),
        trust: Some(bundle.trust.clone()),
        fault_corrupt,
        ..NodeOpts::default()
    })?;
    let seeded = node.wait_for(WAIT, |e| e["event"] == "seeded")?;
    let id = seeded["id"].as_str().unwrap_or_default().to_string();
    Ok((node, id))
}

fn fetcher(dir: &Path, bootstrap: &[&Node], id: &str, bundle: &Bundle) -> Result<Node> {
    Node::start(NodeOpts {
        data_dir: dir.to_path_buf(),
        bootstrap: bootstrap.iter().map(|n| n.addr.clone()).collect(),
        fetch: Some(id.to_string()),
        trust: Some(bundle.trust.clone()),
        ..NodeOpts::default()
    })
}

/// The rebuilt bundle must be byte-identical to the signed one and verified by the node.
fn assert_identical(node: &Node, id: &str, bundle: &Bundle) -> Result<serde_json::Value> {
    let done = node.wait_complete(id, WAIT)?;
    let path = done["path"].as_str().unwrap_or_default();
    let got = std::fs::read(path)?;
    assert!(
        got == bundle.bytes,
        "node {} rebuilt a different bundle ({path})",
        node.peer_id
    );
    assert_eq!(done["verified"], true, "{done}");
    Ok(done)
}

fn chunk_sources(node: &Node) -> HashSet<String> {
    node.events()
        .iter()
        .filter(|e| e["event"] == "chunk")
        .filter_map(|e| e["from"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_seeded_artifact_reaches_all_five_nodes_from_many_peers() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let art = bundle(tmp.path(), 6 * 1024 * 1024 + 123, 1)?;
    let (seed, id) = seed_node(&tmp.path().join("seed"), &art, false)?;
    let nodes: Vec<Node> = (0..4)
        .map(|i| fetcher(&tmp.path().join(format!("n{i}")), &[&seed], &id, &art))
        .collect::<Result<_>>()?;
    let mut from_peers = 0;
    for node in &nodes {
        assert_identical(node, &id, &art)?;
        if chunk_sources(node).iter().any(|p| *p != seed.peer_id) {
            from_peers += 1;
        }
    }
    // The point of the fabric: chunks also came from devices, not only from the seed.
    assert!(from_peers >= 1, "every chunk came from the seed");
    Ok(())
}

#[test]
fn a_peer_serving_corrupt_chunks_is_banned_and_the_artifact_completes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let art = bundle(tmp.path(), 4 * 1024 * 1024, 2)?;
    let (seed, id) = seed_node(&tmp.path().join("seed"), &art, false)?;
    let (liar, liar_id) = seed_node(&tmp.path().join("liar"), &art, true)?;
    assert_eq!(id, liar_id);
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            fetcher(
                &tmp.path().join(format!("n{i}")),
                &[&liar, &seed],
                &id,
                &art,
            )
        })
        .collect::<Result<_>>()?;
    for node in &nodes {
        assert_identical(node, &id, &art)?;
        assert!(
            !chunk_sources(node).contains(&liar.peer_id),
            "a chunk from the corrupting peer was accepted"
        );
    }
    let banned = nodes
        .iter()
        .filter(|n| {
            n.events().iter().any(|e| {
                e["event"] == "banned"
                    && e["peer"] == liar.peer_id.as_str()
                    && e["reason"] == "served a corrupt chunk"
            })
        })
        .count();
    assert!(banned >= 1, "no node banned the corrupting peer");
    Ok(())
}

#[test]
fn a_peer_killed_mid_transfer_does_not_stall_others_and_resumes_after_restart() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let art = bundle(tmp.path(), 8 * 1024 * 1024, 3)?;
    let seed = Node::start(NodeOpts {
        data_dir: tmp.path().join("seed"),
        seed: Some(art.path.clone()),
        trust: Some(art.trust.clone()),
        // One upload slot at the seed stretches the transfer so the kill lands mid-way.
        upload_slots: Some(1),
        ..NodeOpts::default()
    })?;
    let id = seed.wait_for(WAIT, |e| e["event"] == "seeded")?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut victim = fetcher(&tmp.path().join("victim"), &[&seed], &id, &art)?;
    let others: Vec<Node> = (0..3)
        .map(|i| {
            fetcher(
                &tmp.path().join(format!("n{i}")),
                &[&seed, &victim],
                &id,
                &art,
            )
        })
        .collect::<Result<_>>()?;
    // Kill the victim once it holds a few chunks (and so is being asked for them).
    victim.wait_for(WAIT, |e| e["event"] == "chunk")?;
    let held_before_kill = victim
        .events()
        .iter()
        .filter(|e| e["event"] == "chunk")
        .count();
    victim.kill();
    assert!(
        victim.events().iter().all(|e| e["event"] != "complete"),
        "the victim finished before it was killed"
    );
    for node in &others {
        assert_identical(node, &id, &art)?;
    }
    // Restarted with the same data dir, it resumes from the chunks it holds.
    let opts = victim.opts.clone();
    drop(victim);
    let restarted = Node::start(NodeOpts {
        bootstrap: vec![others[0].addr.clone()],
        ..opts
    })?;
    let done = assert_identical(&restarted, &id, &art)?;
    let received = done["received"].as_u64().unwrap_or(u64::MAX);
    assert!(held_before_kill >= 1);
    assert!(
        received < done["bytes"].as_u64().unwrap_or(0),
        "the restart fetched everything again ({received} bytes)"
    );
    Ok(())
}

#[test]
fn a_late_joiner_catches_up_from_peers_after_the_seed_is_gone() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let art = bundle(tmp.path(), 3 * 1024 * 1024, 4)?;
    let (mut seed, id) = seed_node(&tmp.path().join("seed"), &art, false)?;
    let early: Vec<Node> = (0..3)
        .map(|i| fetcher(&tmp.path().join(format!("n{i}")), &[&seed], &id, &art))
        .collect::<Result<_>>()?;
    for node in &early {
        assert_identical(node, &id, &art)?;
    }
    seed.kill();
    let late = fetcher(&tmp.path().join("late"), &[&early[1]], &id, &art)?;
    assert_identical(&late, &id, &art)?;
    assert!(!chunk_sources(&late).contains(&seed.peer_id));
    // The late joiner heard no announcement: it asked a peer for the manifest directly.
    let manifest = late.wait_for(WAIT, |e| e["event"] == "manifest")?;
    assert_ne!(manifest["from"], seed.peer_id.as_str());
    Ok(())
}

#[test]
fn an_announced_bundle_is_verified_fetched_and_rebuilt_by_every_listener() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let art = bundle(tmp.path(), 2 * 1024 * 1024 + 7, 5)?;
    // Listeners first, told nothing but the trust store.
    let first = Node::start(NodeOpts {
        data_dir: tmp.path().join("n0"),
        trust: Some(art.trust.clone()),
        ..NodeOpts::default()
    })?;
    let mut listeners = vec![first];
    for i in 1..3 {
        let node = Node::start(NodeOpts {
            data_dir: tmp.path().join(format!("n{i}")),
            bootstrap: vec![listeners[0].addr.clone()],
            trust: Some(art.trust.clone()),
            ..NodeOpts::default()
        })?;
        listeners.push(node);
    }
    // A stranger's bundle (another release key) is refused at the gossip layer.
    let stranger = signed_bundle(&tmp.path().join("stranger"), 100_000, 6, CHUNK)?;
    let impostor = Node::start(NodeOpts {
        data_dir: tmp.path().join("impostor"),
        bootstrap: listeners.iter().map(|n| n.addr.clone()).collect(),
        seed: Some(stranger.path.clone()),
        trust: Some(stranger.trust.clone()),
        ..NodeOpts::default()
    })?;
    let seed = Node::start(NodeOpts {
        data_dir: tmp.path().join("seed"),
        bootstrap: listeners.iter().map(|n| n.addr.clone()).collect(),
        seed: Some(art.path.clone()),
        trust: Some(art.trust.clone()),
        ..NodeOpts::default()
    })?;
    let id = seed.wait_for(WAIT, |e| e["event"] == "seeded")?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    impostor.wait_for(WAIT, |e| e["event"] == "announced")?;
    for node in &listeners {
        let heard = node.wait_for(WAIT, |e| e["event"] == "announcement")?;
        assert_eq!(heard["id"], id.as_str());
        // Gossipsub names the author, whoever forwarded it.
        assert_eq!(heard["source"], seed.peer_id.as_str());
        assert_identical(node, &id, &art)?;
    }
    // Nobody took the stranger's announcement; someone rejected it.
    let rejected = listeners
        .iter()
        .flat_map(|n| n.events())
        .filter(|e| e["event"] == "gossip_rejected" && e["from"] == impostor.peer_id.as_str())
        .count();
    assert!(rejected >= 1, "the stranger's manifest was not rejected");
    for node in &listeners {
        assert!(
            node.events()
                .iter()
                .all(|e| e["event"] != "announcement" || e["id"] == id.as_str())
        );
    }
    Ok(())
}
