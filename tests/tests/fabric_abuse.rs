//! End-to-end: a node that floods garbage or oversized gossip, thousands of subscriptions,
//! IWANT requests, or requests for unknown chunks is penalised (banned by every honest node,
//! for that reason), and the honest nodes' memory stays bounded while their own gossip still
//! flows. One test per kind of flood, so each penalty is shown on its own.

use anyhow::Result;
use floe_tests::fabric::{Node, NodeOpts};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn rss(node: &mut Node) -> Result<u64> {
    Ok(node.stats()?["rss_kib"].as_u64().unwrap_or(0))
}

/// Three honest nodes and an attacker connected to all of them; the attacker floods with
/// `command`, and every honest node must ban it for `reason`, stay within 64 MiB of its memory
/// before the flood, and still pass its own gossip on afterwards.
fn flood_is_banned(command: &str, reason: &str) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let first = Node::start(NodeOpts {
        data_dir: tmp.path().join("h0"),
        ..NodeOpts::default()
    })?;
    let mut honest = vec![first];
    for i in 1..3 {
        let node = Node::start(NodeOpts {
            data_dir: tmp.path().join(format!("h{i}")),
            bootstrap: vec![honest[0].addr.clone()],
            ..NodeOpts::default()
        })?;
        honest.push(node);
    }
    let mut attacker = Node::start(NodeOpts {
        data_dir: tmp.path().join("attacker"),
        bootstrap: honest.iter().map(|n| n.addr.clone()).collect(),
        // Lifts the attacker's own limits (gossip size, topics) and enables the raw gossipsub
        // writer the IWANT flood uses.
        fault_corrupt: true,
        ..NodeOpts::default()
    })?;
    for node in &honest {
        node.wait_for(WAIT, |e| {
            e["event"] == "peer_connected" && e["peer"] == attacker.peer_id.as_str()
        })?;
    }
    // Honest gossip first: the mesh is built and the message caches hold something.
    let from = honest[2].event_count();
    honest[0].send("ping")?;
    honest[2].wait_for_nth(WAIT, from, |e| {
        e["event"] == "gossip" && e["topic"] == "floe/health/1"
    })?;
    let before: Vec<u64> = honest.iter_mut().map(rss).collect::<Result<_>>()?;

    // The attacker keeps at it: a flood sent before it has heard a node's subscriptions (just
    // after connecting) misses that node, so it floods again every few seconds until every
    // honest node has banned it.
    attacker.send(command)?;
    let deadline = std::time::Instant::now() + WAIT;
    let attacker_id = attacker.peer_id.clone();
    for node in &honest {
        let banned =
            |e: &serde_json::Value| e["event"] == "banned" && e["peer"] == attacker_id.as_str();
        let ban = loop {
            match node.wait_for(Duration::from_secs(3), banned) {
                Ok(ban) => break ban,
                Err(_) if std::time::Instant::now() < deadline => attacker.send(command)?,
                Err(err) => {
                    let events = node.events();
                    let tail: Vec<String> = events
                        .iter()
                        .rev()
                        .take(15)
                        .map(|e| e.to_string())
                        .collect();
                    anyhow::bail!("{command}: {err:#}; last events: {tail:#?}");
                }
            }
        };
        assert_eq!(
            ban["reason"].as_str().unwrap_or_default(),
            reason,
            "{command}: banned for the wrong reason"
        );
    }
    for (node, before) in honest.iter_mut().zip(before) {
        let stats = node.stats()?;
        let after = stats["rss_kib"].as_u64().unwrap_or(u64::MAX);
        assert!(
            after < before + 64 * 1024,
            "{command}: rss grew from {before} KiB to {after} KiB"
        );
        assert_eq!(stats["banned"].as_u64(), Some(1), "{command}");
    }
    // Honest gossip still flows after the attack.
    let from = honest[1].event_count();
    honest[2].send("ping")?;
    honest[1].wait_for_nth(WAIT, from, |e| {
        e["event"] == "gossip" && e["topic"] == "floe/health/1"
    })?;
    Ok(())
}

#[test]
fn garbage_gossip_is_rejected_and_its_sender_banned() -> Result<()> {
    flood_is_banned("flood garbage 400", "invalid gossip")
}

#[test]
fn oversized_gossip_is_invalid_and_its_sender_banned() -> Result<()> {
    // 100 KiB messages: over the 17 KiB a topic allows, under the 128 KiB an RPC may be, so
    // gossipsub decodes them, marks them invalid and the fabric counts the strikes.
    flood_is_banned("flood oversized 50", "invalid gossip")
}

#[test]
fn thousands_of_subscriptions_get_their_sender_banned() -> Result<()> {
    flood_is_banned("flood subscriptions 5000", "subscription flood")
}

#[test]
fn an_iwant_flood_for_unknown_ids_gets_its_sender_banned() -> Result<()> {
    // 300 RPCs of 400 ids each on one stream to each honest node: 120 000 unknown ids, far
    // more than the 6000 ids a peer may ask for at once.
    flood_is_banned("flood iwant 300", "IWANT flood")
}

#[test]
fn requests_for_unknown_chunks_get_their_sender_banned() -> Result<()> {
    flood_is_banned("flood unknown 400", "requests for unknown chunks")
}
