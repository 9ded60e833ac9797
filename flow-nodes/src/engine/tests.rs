//! Engine tests: whole graphs run on a tokio runtime, observed through the tap and metrics.

use super::*;
use crate::compiled::{CompiledNode, Edge};
use serde_json::{Value, json};
use tokio::sync::mpsc::error::TrySendError;

fn node(id: &str, kind: &str, config: Value, inputs: u32, outputs: u32) -> CompiledNode {
    CompiledNode::by_hand(id, kind, config, inputs, outputs)
}

fn edge(from: usize, to: usize) -> Edge {
    Edge::first_ports(from, to)
}

fn sink(id: &str) -> CompiledNode {
    node(id, "debug", json!({"active": false}), 1, 0)
}

fn tag(id: &str, topic: &str) -> CompiledNode {
    node(
        id,
        "change",
        json!({"rules": [{"action": "set", "property": "topic", "value": topic}]}),
        1,
        1,
    )
}

fn tapped(flow: CompiledFlow, opts: EngineOptions) -> (RunningFlow, mpsc::Receiver<TapEvent>) {
    let (tx, rx) = mpsc::channel(10_000);
    let f = Engine::start(
        flow,
        EngineOptions {
            tap: Some(tx),
            ..opts
        },
    )
    .unwrap();
    (f, rx)
}

/// A custom kind that panics on the payload "boom" and forwards everything else.
struct Bomb;

impl Process for Bomb {
    fn process(&mut self, msg: Msg, out: &mut Emit<'_>) -> Result<(), nodes::NodeError> {
        if msg.payload.as_str() == Some("boom") {
            panic!("boom payload");
        }
        if msg.payload.as_str() == Some("bad") {
            return Err(nodes::NodeError::Message("bad payload".into()));
        }
        out.emit(0, msg);
        Ok(())
    }
}

#[tokio::test]
async fn fan_out_shares_the_payload() {
    let flow = CompiledFlow {
        nodes: vec![tag("t", "x"), sink("a"), sink("b")],
        edges: vec![edge(0, 1), edge(0, 2)],
    };
    let (f, mut tap) = tapped(flow, EngineOptions::default());
    let original = Msg::new(json!({"big": vec![7u8; 10_000]}));
    f.inject("t", original.clone()).await.unwrap();
    let a = tap.recv().await.unwrap();
    let b = tap.recv().await.unwrap();
    assert_ne!(a.node_id, b.node_id);
    assert!(
        Arc::ptr_eq(&a.msg.payload, &b.msg.payload),
        "fan-out copied the payload"
    );
    assert!(Arc::ptr_eq(&a.msg.payload, &original.payload));
    assert_eq!(&*a.msg.topic, "x");
    let r = f.stop(Duration::from_secs(1)).await;
    assert!(r.drained);
    assert_eq!(r.metrics.node("t").unwrap().msgs_out, 1);
}

#[tokio::test]
async fn fan_in_merges_two_branches() {
    let flow = CompiledFlow {
        nodes: vec![tag("l", "left"), tag("r", "right"), sink("s")],
        edges: vec![edge(0, 2), edge(1, 2)],
    };
    let (f, mut tap) = tapped(flow, EngineOptions::default());
    for i in 0..10 {
        f.inject("l", Msg::new(json!(i))).await.unwrap();
        f.inject("r", Msg::new(json!(i))).await.unwrap();
    }
    let mut topics = Vec::new();
    for _ in 0..20 {
        topics.push(tap.recv().await.unwrap().msg.topic.to_string());
    }
    assert_eq!(topics.iter().filter(|t| *t == "left").count(), 10);
    assert_eq!(topics.iter().filter(|t| *t == "right").count(), 10);
    let r = f.stop(Duration::from_secs(1)).await;
    assert_eq!(r.metrics.node("s").unwrap().msgs_in, 20);
}

#[tokio::test(start_paused = true)]
async fn a_stuck_node_backpressures_with_a_bounded_queue() {
    // The delay node holds 5 messages for an hour and, at its bound, stops reading.
    let flow = CompiledFlow {
        nodes: vec![
            node("d", "delay", json!({"delay": 3_600_000, "queue": 5}), 1, 1),
            sink("s"),
        ],
        edges: vec![edge(0, 1)],
    };
    let opts = EngineOptions {
        channel_batches: 4,
        ..Default::default()
    };
    let f = Engine::start(flow, opts).unwrap();
    let input = f.input("d").unwrap();
    let mut accepted = 0;
    for _ in 0..1000 {
        match input.try_send(vec![Msg::new(json!(1))]) {
            Ok(()) => accepted += 1,
            Err(TrySendError::Full(_)) => {
                // Let the node pull what it can, then try again; stop when it is truly stuck.
                tokio::task::yield_now().await;
                if input.try_send(vec![Msg::new(json!(1))]).is_err() {
                    break;
                }
                accepted += 1;
            }
            Err(TrySendError::Closed(_)) => panic!("closed"),
        }
        tokio::task::yield_now().await;
    }
    // Queue (5) + one staged batch (1) + channel (4), nothing more.
    assert!(accepted <= 5 + 1 + 4, "accepted {accepted} messages");
    assert!(accepted >= 5, "accepted only {accepted}");
    drop(input);
    let r = f.stop(Duration::from_millis(50)).await;
    assert!(!r.drained);
    // The stuck node is aborted, and with it whatever waited on it downstream.
    assert!(r.aborted.contains(&"d".to_string()), "{:?}", r.aborted);
}

#[tokio::test]
async fn a_panicking_node_is_isolated_and_counted() {
    let flow = CompiledFlow {
        nodes: vec![node("x", "bomb", json!({}), 1, 1), sink("s")],
        edges: vec![edge(0, 1)],
    };
    let factory: ProcessFactory = Arc::new(|_| Ok(Box::new(Bomb) as Box<dyn Process>));
    let opts = EngineOptions {
        custom: vec![("bomb".into(), factory)],
        ..Default::default()
    };
    let (f, mut tap) = tapped(flow, opts);
    for p in [
        json!(1),
        json!("boom"),
        json!("bad"),
        json!(2),
        json!("boom"),
        json!(3),
    ] {
        f.inject("x", Msg::new(p)).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(tap.recv().await.unwrap().msg.payload.as_i64().unwrap());
    }
    assert_eq!(got, vec![1, 2, 3]);
    let h = f.health();
    assert!(h.running, "{h:?}");
    let x = h.nodes.iter().find(|n| n.id == "x").unwrap();
    assert_eq!((x.panics, x.errors), (2, 1));
    let m = f.metrics();
    assert!(
        m.node("x")
            .unwrap()
            .last_error
            .as_deref()
            .unwrap()
            .contains("boom payload")
    );
    let r = f.stop(Duration::from_secs(1)).await;
    assert!(r.drained && r.panicked.is_empty());
}

#[tokio::test]
async fn stop_drains_in_flight_messages() {
    let flow = CompiledFlow {
        nodes: vec![
            node(
                "sw",
                "switch",
                json!({"rules": [{"op": "gte", "value": 0}]}),
                1,
                1,
            ),
            tag("t", "done"),
            sink("s"),
        ],
        edges: vec![edge(0, 1), edge(1, 2)],
    };
    let f = Engine::start(flow, EngineOptions::default()).unwrap();
    for chunk in 0..40 {
        let batch = (0..250).map(|i| Msg::new(json!(chunk * 250 + i))).collect();
        f.inject_batch("sw", batch).await.unwrap();
    }
    let r = f.stop(Duration::from_secs(5)).await;
    assert!(r.drained, "{r:?}");
    assert_eq!(r.metrics.node("s").unwrap().msgs_in, 10_000);
    let sw = r.metrics.node("sw").unwrap();
    assert!(sw.p50.is_some() && sw.p99 >= sw.p50);
}

#[tokio::test(start_paused = true)]
async fn stop_gives_up_at_the_deadline() {
    let flow = CompiledFlow {
        nodes: vec![
            node("d", "delay", json!({"delay": 3_600_000}), 1, 1),
            sink("s"),
        ],
        edges: vec![edge(0, 1)],
    };
    let f = Engine::start(flow, EngineOptions::default()).unwrap();
    f.inject("d", Msg::new(json!(1))).await.unwrap();
    let t0 = tokio::time::Instant::now();
    let r = f.stop(Duration::from_millis(200)).await;
    assert!(tokio::time::Instant::now() - t0 <= Duration::from_millis(250));
    assert!(!r.drained);
    // The stuck node is aborted, and with it whatever waited on it downstream.
    assert!(r.aborted.contains(&"d".to_string()), "{:?}", r.aborted);
}

#[tokio::test(start_paused = true)]
async fn inject_fires_once_after_its_delay_then_every_interval() {
    let flow = CompiledFlow {
        nodes: vec![
            node(
                "i",
                "inject",
                json!({"payload": {"v": 1}, "topic": "tick", "once": true, "once_delay": 100, "interval": 1000}),
                0,
                1,
            ),
            sink("s"),
        ],
        edges: vec![edge(0, 1)],
    };
    let (f, mut tap) = tapped(flow, EngineOptions::default());
    let t0 = tokio::time::Instant::now();
    let mut at = Vec::new();
    for _ in 0..3 {
        let ev = tap.recv().await.unwrap();
        assert_eq!(*ev.msg.payload, json!({"v": 1}));
        assert_eq!(&*ev.msg.topic, "tick");
        at.push((tokio::time::Instant::now() - t0).as_millis());
    }
    assert_eq!(at, vec![100, 1100, 2100]);
    f.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn inject_without_once_waits_one_interval_and_defaults_to_a_timestamp() {
    let flow = CompiledFlow {
        nodes: vec![
            node("i", "inject", json!({"once": false, "interval": 500}), 0, 1),
            sink("s"),
        ],
        edges: vec![edge(0, 1)],
    };
    let (f, mut tap) = tapped(flow, EngineOptions::default());
    let t0 = tokio::time::Instant::now();
    let ev = tap.recv().await.unwrap();
    assert_eq!((tokio::time::Instant::now() - t0).as_millis(), 500);
    assert!(ev.msg.payload.as_u64().unwrap() > 1_600_000_000_000);
    f.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn sensor_and_simulated_dht_run_in_a_flow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("temp1_input");
    std::fs::write(&path, "41500\n").unwrap();
    let flow = CompiledFlow {
        nodes: vec![
            node(
                "t",
                "sensor",
                json!({"path": path, "scale": 0.001, "offset": 1.0, "interval": 20, "topic": "cpu"}),
                0,
                1,
            ),
            node(
                "h",
                "dht",
                json!({"simulate": true, "interval": 20, "topic": "room"}),
                0,
                1,
            ),
            sink("s"),
        ],
        edges: vec![edge(0, 2), edge(1, 2)],
    };
    let (f, mut tap) = tapped(flow, EngineOptions::default());
    let (mut cpu, mut room) = (Vec::new(), Vec::new());
    while cpu.len() < 2 || room.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), tap.recv())
            .await
            .unwrap()
            .unwrap();
        match &*ev.msg.topic {
            "cpu" => cpu.push((*ev.msg.payload).clone()),
            "room" => room.push((*ev.msg.payload).clone()),
            other => panic!("unexpected topic {other}"),
        }
    }
    assert_eq!(cpu[0], json!(42.5));
    for (k, r) in room.iter().take(3).enumerate() {
        let want = nodes::simulated_reading(k as u64, 20);
        assert_eq!(
            *r,
            json!({"temperature": want.temperature, "humidity": want.humidity})
        );
    }
    f.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn bad_flows_fail_to_start_with_the_node_named() {
    let unknown = CompiledFlow {
        nodes: vec![node("n9", "teleport", json!({}), 1, 1)],
        edges: vec![],
    };
    let e = Engine::start(unknown, EngineOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("n9") && e.contains("teleport"), "{e}");
    let bad = CompiledFlow {
        nodes: vec![node("sw", "switch", json!({"rules": "gt 30"}), 1, 1)],
        edges: vec![],
    };
    let e = Engine::start(bad, EngineOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node sw (switch): config") && e.contains("invalid type"),
        "{e}"
    );
    let dangling = CompiledFlow {
        nodes: vec![sink("s")],
        edges: vec![edge(0, 3)],
    };
    assert!(matches!(
        Engine::start(dangling, EngineOptions::default()),
        Err(EngineError::Graph(_))
    ));
    let port = CompiledFlow {
        nodes: vec![tag("t", "x"), sink("s")],
        edges: vec![Edge {
            from: 0,
            output: 1,
            to: 1,
            input: 0,
        }],
    };
    let e = Engine::start(port, EngineOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("output port 1"), "{e}");
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let flow = CompiledFlow {
        nodes: vec![sink("s")],
        edges: vec![],
    };
    assert!(matches!(
        Engine::start(flow, EngineOptions::default()),
        Err(EngineError::NoRuntime)
    ));
}

#[tokio::test]
async fn a_full_tap_drops_and_counts() {
    let flow = CompiledFlow {
        nodes: vec![sink("s")],
        edges: vec![],
    };
    let (tx, _rx) = mpsc::channel(2);
    let f = Engine::start(
        flow,
        EngineOptions {
            tap: Some(tx),
            ..Default::default()
        },
    )
    .unwrap();
    f.inject_batch("s", (0..10).map(|i| Msg::new(json!(i))).collect())
        .await
        .unwrap();
    let r = f.stop(Duration::from_secs(1)).await;
    assert_eq!(r.metrics.tap_dropped, 8);
    let e = Engine::start(
        CompiledFlow {
            nodes: vec![sink("s")],
            edges: vec![],
        },
        EngineOptions::default(),
    )
    .unwrap();
    assert!(matches!(
        e.inject("nope", Msg::default()).await,
        Err(EngineError::Inject(_))
    ));
    e.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn dropping_a_running_flow_ends_its_tasks() {
    let flow = CompiledFlow {
        nodes: vec![
            node("i", "inject", json!({"payload": 1, "interval": 100}), 0, 1),
            sink("s"),
        ],
        edges: vec![edge(0, 1)],
    };
    let (f, mut tap) = tapped(flow, EngineOptions::default());
    assert!(tap.recv().await.is_some());
    drop(f);
    // With every task gone, the tap's senders are gone too and the channel ends.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while tap.recv().await.is_some() {}
    })
    .await;
    assert!(
        rest.is_ok(),
        "tasks kept running after the flow was dropped"
    );
}
