//! End-to-end: a fleet of real `floed fabric` processes on loopback exchanging one artifact.
//!
//! Every test starts its own nodes with temp data dirs and mDNS off; nodes find each other
//! through bootstrap addresses and Kademlia, so concurrent runs never see each other.

use anyhow::Result;
use floe_tests::fleet::{Node, NodeOpts, write_artifact};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

const CHUNK: u32 = 64 * 1024;
const WAIT: Duration = Duration::from_secs(60);

fn seed_node(dir: &Path, artifact: &Path, fault_corrupt: bool) -> Result<(Node, String)> {
    let node = Node::start(NodeOpts {
        data_dir: dir.to_path_buf(),
        seed: Some(artifact.to_path_buf()),
        chunk_size: Some(CHUNK),
        fault_corrupt,
        ..NodeOpts::default()
    })?;
    let seeded = node.wait_for(WAIT, |e| e["event"] == "seeded")?;
    let id = seeded["id"].as_str().unwrap_or_default().to_string();
    Ok((node, id))
}

fn fetcher(dir: &Path, bootstrap: &[&Node], id: &str) -> Result<Node> {
    Node::start(NodeOpts {
        data_dir: dir.to_path_buf(),
        bootstrap: bootstrap.iter().map(|n| n.addr.clone()).collect(),
        fetch: Some(id.to_string()),
        ..NodeOpts::default()
    })
}

/// The exported file must be byte-identical to the seeded one, and its reported digest too.
fn assert_identical(node: &Node, id: &str, data: &[u8]) -> Result<serde_json::Value> {
    let done = node.wait_complete(id, WAIT)?;
    let path = done["path"].as_str().unwrap_or_default();
    let got = std::fs::read(path)?;
    assert!(
        got == data,
        "node {} exported different bytes",
        node.peer_id
    );
    assert_eq!(done["bytes"].as_u64(), Some(data.len() as u64));
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
    let art = tmp.path().join("art.bin");
    let data = write_artifact(&art, 6 * 1024 * 1024 + 123, 1)?;
    let (seed, id) = seed_node(&tmp.path().join("seed"), &art, false)?;
    let nodes: Vec<Node> = (0..4)
        .map(|i| fetcher(&tmp.path().join(format!("n{i}")), &[&seed], &id))
        .collect::<Result<_>>()?;
    let mut from_peers = 0;
    for node in &nodes {
        assert_identical(node, &id, &data)?;
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
    let art = tmp.path().join("art.bin");
    let data = write_artifact(&art, 4 * 1024 * 1024, 2)?;
    let (seed, id) = seed_node(&tmp.path().join("seed"), &art, false)?;
    let (liar, liar_id) = seed_node(&tmp.path().join("liar"), &art, true)?;
    assert_eq!(id, liar_id);
    let nodes: Vec<Node> = (0..3)
        .map(|i| fetcher(&tmp.path().join(format!("n{i}")), &[&liar, &seed], &id))
        .collect::<Result<_>>()?;
    for node in &nodes {
        assert_identical(node, &id, &data)?;
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
    let art = tmp.path().join("art.bin");
    let data = write_artifact(&art, 8 * 1024 * 1024, 3)?;
    let seed = Node::start(NodeOpts {
        data_dir: tmp.path().join("seed"),
        seed: Some(art.clone()),
        chunk_size: Some(CHUNK),
        // One upload slot at the seed stretches the transfer so the kill lands mid-way.
        upload_slots: Some(1),
        ..NodeOpts::default()
    })?;
    let id = seed.wait_for(WAIT, |e| e["event"] == "seeded")?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut victim = fetcher(&tmp.path().join("victim"), &[&seed], &id)?;
    let others: Vec<Node> = (0..3)
        .map(|i| fetcher(&tmp.path().join(format!("n{i}")), &[&seed, &victim], &id))
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
        assert_identical(node, &id, &data)?;
    }
    // Restarted with the same data dir, it resumes from the chunks it holds.
    let opts = victim.opts.clone();
    drop(victim);
    let restarted = Node::start(NodeOpts {
        bootstrap: vec![others[0].addr.clone()],
        ..opts
    })?;
    let done = assert_identical(&restarted, &id, &data)?;
    let received = done["received"].as_u64().unwrap_or(u64::MAX);
    assert!(held_before_kill >= 1);
    assert!(
        received < data.len() as u64,
        "the restart fetched everything again ({received} bytes)"
    );
    Ok(())
}

#[test]
fn a_late_joiner_catches_up_from_peers_after_the_seed_is_gone() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let art = tmp.path().join("art.bin");
    let data = write_artifact(&art, 3 * 1024 * 1024, 4)?;
    let (mut seed, id) = seed_node(&tmp.path().join("seed"), &art, false)?;
    let early: Vec<Node> = (0..3)
        .map(|i| fetcher(&tmp.path().join(format!("n{i}")), &[&seed], &id))
        .collect::<Result<_>>()?;
    for node in &early {
        assert_identical(node, &id, &data)?;
    }
    seed.kill();
    let late = fetcher(&tmp.path().join("late"), &[&early[1]], &id)?;
    assert_identical(&late, &id, &data)?;
    assert!(!chunk_sources(&late).contains(&seed.peer_id));
    Ok(())
}
