//! End-to-end in network namespaces: four devices on shaped links (bandwidth, delay, loss)
//! exchange one artifact. Needs root and iproute2; otherwise it prints why and passes without
//! running. Traffic stays inside namespaces the test made; they are deleted on exit.

use anyhow::Result;
use floe_tests::fabric::{Node, NodeOpts, write_artifact};
use floe_tests::netns::{LinkShape, NetnsFleet, unavailable};
use std::time::Duration;

#[test]
fn devices_on_shaped_links_all_receive_the_artifact() -> Result<()> {
    if let Some(reason) = unavailable() {
        println!("skipping the network-namespace test: {reason}");
        return Ok(());
    }
    let shape = LinkShape {
        mbit: 40,
        delay_ms: 5,
        loss_pct: 0.1,
    };
    let fleet = NetnsFleet::create(4, shape)?;
    let tmp = tempfile::tempdir()?;
    let art = tmp.path().join("art.bin");
    let data = write_artifact(&art, 4 * 1024 * 1024, 5)?;
    let start = |i: usize, opts: NodeOpts| {
        Node::start(NodeOpts {
            data_dir: tmp.path().join(format!("d{i}")),
            listen: Some(format!("/ip4/{}/tcp/0", fleet.addr(i))),
            netns: Some(fleet.devices()[i].clone()),
            ..opts
        })
    };
    let seed = start(
        0,
        NodeOpts {
            seed_raw: Some(art.clone()),
            chunk_size: Some(256 * 1024),
            ..NodeOpts::default()
        },
    )?;
    let id = seed.wait_for(Duration::from_secs(30), |e| e["event"] == "seeded")?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let nodes: Vec<Node> = (1..4)
        .map(|i| {
            start(
                i,
                NodeOpts {
                    bootstrap: vec![seed.addr.clone()],
                    fetch: Some(id.clone()),
                    ..NodeOpts::default()
                },
            )
        })
        .collect::<Result<_>>()?;
    for node in &nodes {
        let done = node.wait_complete(&id, Duration::from_secs(90))?;
        let got = std::fs::read(done["path"].as_str().unwrap_or_default())?;
        assert!(got == data, "a device exported different bytes");
        // 4 MiB over a 40 Mbit/s link takes at least 0.8 s: the shaping is really there.
        assert!(done["elapsed_ms"].as_u64().unwrap_or(0) >= 400, "{done}");
    }
    // Without netem the loss comes from the harness's own filters: they really dropped
    // packets (about 0.1 % of some 20 000), and the transfer completed all the same.
    if fleet.loss_filtered() {
        let lost = fleet.filtered_losses()?;
        assert!(lost > 0, "the loss filters dropped nothing");
        println!("packets dropped by the loss filters: {lost}");
    }
    drop(nodes);
    drop(seed);
    drop(fleet);
    Ok(())
}
