//! The MQTT nodes against a real Mosquitto on a loopback port: QoS 0/1/2, retain, the message's
//! topic, mqtt_in, the bounded buffer while the broker is down, and reconnection after a broker
//! restart.

// Test code: helpers outside #[test] functions may unwrap and panic like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use floe_flow::compiled::{CompiledFlow, CompiledNode, Edge};
use floe_flow::engine::{Engine, EngineOptions, RunningFlow, TapEvent};
use floe_flow::msg::Msg;
use floe_tests::net::free_port;
use floe_tests::{Mosquitto, Subscription, mosquitto_available, publish};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn node(id: &str, kind: &str, config: Value, inputs: u32, outputs: u32) -> CompiledNode {
    let Value::Object(config) = config else {
        panic!("object")
    };
    CompiledNode {
        id: id.into(),
        kind: kind.into(),
        name: id.into(),
        config,
        outputs,
        inputs,
    }
}

fn single(n: CompiledNode) -> CompiledFlow {
    CompiledFlow {
        nodes: vec![n],
        edges: vec![],
    }
}

macro_rules! need_mosquitto {
    () => {
        if !mosquitto_available() {
            eprintln!("skipping: {} is not installed", floe_tests::MOSQUITTO);
            return;
        }
    };
}

/// Waits until the node reports its broker link as `up`.
async fn wait_link(f: &RunningFlow, id: &str, up: bool) {
    let until = Instant::now() + Duration::from_secs(15);
    while f.metrics().node(id).and_then(|n| n.connected) != Some(up) {
        assert!(
            Instant::now() < until,
            "node {id} never became connected={up}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_with_qos_retain_and_the_messages_topic() {
    need_mosquitto!();
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let sub = blocking(move || Subscription::start(port, "floe/t/#"))
        .await
        .unwrap();
    let url = broker.url();
    let flow = CompiledFlow {
        nodes: vec![
            node(
                "q0",
                "mqtt_out",
                json!({"broker": url, "topic": "floe/t/fixed", "qos": 0}),
                1,
                0,
            ),
            node("q1", "mqtt_out", json!({"broker": url, "qos": 1}), 1, 0),
            node(
                "q2",
                "mqtt_out",
                json!({"broker": url, "topic": "floe/t/retained", "qos": 2, "retain": true}),
                1,
                0,
            ),
        ],
        edges: vec![],
    };
    let f = Engine::start(flow, EngineOptions::default()).unwrap();
    for id in ["q0", "q1", "q2"] {
        wait_link(&f, id, true).await;
    }
    f.inject(
        "q0",
        Msg::with_topic(json!({"temperature": 31.2}), "ignored"),
    )
    .await
    .unwrap();
    f.inject(
        "q1",
        Msg::with_topic(json!("plain text"), "floe/t/from-msg"),
    )
    .await
    .unwrap();
    f.inject("q2", Msg::new(json!(42))).await.unwrap();
    let mut got = blocking(move || sub.take(3, Duration::from_secs(10)))
        .await
        .unwrap();
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(
        (got[0].topic.as_str(), got[0].payload.as_str()),
        ("floe/t/fixed", r#"{"temperature":31.2}"#)
    );
    assert_eq!(
        (got[1].topic.as_str(), got[1].payload.as_str()),
        ("floe/t/from-msg", "plain text")
    );
    assert_eq!(
        (got[2].topic.as_str(), got[2].payload.as_str()),
        ("floe/t/retained", "42")
    );
    let report = f.stop(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(report.metrics.node("q1").unwrap().msgs_out, 1);

    // A subscriber that arrives later still gets the retained message, flagged as retained.
    let late = blocking(move || {
        let s = Subscription::start(port, "floe/t/retained").unwrap();
        s.next(Duration::from_secs(5))
    })
    .await
    .expect("retained message");
    assert_eq!((late.payload.as_str(), late.retain), ("42", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_any_topic_is_an_error_and_muted_outputs_do_not_publish() {
    need_mosquitto!();
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let sub = blocking(move || Subscription::start(port, "floe/#"))
        .await
        .unwrap();
    let (tx, mut tap) = mpsc::channel::<TapEvent>(16);
    let opts = EngineOptions {
        mute_outputs: true,
        tap: Some(tx),
        ..Default::default()
    };
    let muted = node(
        "o",
        "mqtt_out",
        json!({"broker": broker.url(), "topic": "floe/muted"}),
        1,
        0,
    );
    let f = Engine::start(single(muted), opts).unwrap();
    f.inject("o", Msg::new(json!(1))).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), tap.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!ev.published);
    f.stop(Duration::from_secs(2)).await;
    let nothing = blocking(move || sub.next(Duration::from_millis(500))).await;
    assert_eq!(nothing, None, "a muted mqtt_out published");

    let plain = node("o", "mqtt_out", json!({"broker": broker.url()}), 1, 0);
    let f = Engine::start(single(plain), EngineOptions::default()).unwrap();
    f.inject("o", Msg::new(json!(1))).await.unwrap();
    let r = f.stop(Duration::from_secs(5)).await;
    let o = r.metrics.node("o").unwrap();
    assert_eq!((o.errors, o.msgs_out), (1, 0));
    assert!(o.last_error.as_deref().unwrap().contains("no topic"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_in_receives_json_and_text() {
    need_mosquitto!();
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let (tx, mut tap) = mpsc::channel::<TapEvent>(64);
    let flow = CompiledFlow {
        nodes: vec![
            node(
                "in",
                "mqtt_in",
                json!({"broker": broker.url(), "topic": "floe/in/#", "qos": 1}),
                0,
                1,
            ),
            node("s", "debug", json!({"property": "msg"}), 1, 0),
        ],
        edges: vec![Edge {
            from: 0,
            output: 0,
            to: 1,
            input: 0,
        }],
    };
    let opts = EngineOptions {
        tap: Some(tx),
        ..Default::default()
    };
    let f = Engine::start(flow, opts).unwrap();
    wait_link(&f, "in", true).await;
    // The subscription follows the connection by a moment: publish until the first arrives.
    let until = Instant::now() + Duration::from_secs(10);
    let first = loop {
        assert!(Instant::now() < until, "mqtt_in never received");
        blocking(move || publish(port, "floe/in/a", r#"{"a":1}"#))
            .await
            .unwrap();
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), tap.recv()).await {
            break ev;
        }
    };
    assert_eq!(
        (&*first.msg.topic, &*first.msg.payload),
        ("floe/in/a", &json!({"a": 1}))
    );
    blocking(move || publish(port, "floe/in/b/c", "hello"))
        .await
        .unwrap();
    let ev = loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), tap.recv())
            .await
            .unwrap()
            .unwrap();
        if &*ev.msg.topic != "floe/in/a" {
            break ev;
        }
    };
    assert_eq!(
        (&*ev.msg.topic, &*ev.msg.payload),
        ("floe/in/b/c", &json!("hello"))
    );
    let r = f.stop(Duration::from_secs(3)).await;
    assert!(r.drained, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_buffers_up_to_the_bound_counts_overflow_and_delivers_when_it_comes_up() {
    need_mosquitto!();
    let port = free_port().unwrap();
    // Each message goes to a topic of its own and is retained, so the check below does not
    // depend on subscribing before the node reconnects.
    let cfg = json!({"broker": format!("mqtt://127.0.0.1:{port}"), "qos": 1, "retain": true, "buffer": 5});
    let f = Engine::start(
        single(node("o", "mqtt_out", cfg, 1, 0)),
        EngineOptions::default(),
    )
    .unwrap();
    wait_link(&f, "o", false).await;
    for i in 0..20 {
        let topic = format!("floe/buffered/{i:02}");
        f.inject("o", Msg::with_topic(json!(i), &topic))
            .await
            .unwrap();
    }
    let until = Instant::now() + Duration::from_secs(5);
    while f.metrics().node("o").unwrap().dropped < 15 {
        assert!(Instant::now() < until, "{:?}", f.metrics().node("o"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let o = f.metrics().node("o").cloned().unwrap();
    assert_eq!((o.msgs_in, o.dropped), (20, 15));
    let broker = blocking(move || Mosquitto::start_on(port)).await.unwrap();
    wait_link(&f, "o", true).await;
    let r = f.stop(Duration::from_secs(5)).await;
    assert!(r.drained);
    let sub = blocking(move || Subscription::start(port, "floe/buffered/#"))
        .await
        .unwrap();
    let mut got = blocking(move || sub.take(5, Duration::from_secs(10)))
        .await
        .unwrap();
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    let payloads: Vec<&str> = got.iter().map(|s| s.payload.as_str()).collect();
    assert_eq!(payloads, vec!["0", "1", "2", "3", "4"]);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_broker_restarts() {
    need_mosquitto!();
    let mut broker = Mosquitto::start().unwrap();
    let port = broker.port();
    // Retained messages on topics of their own: what the broker holds after the restart can be
    // checked without racing the node's reconnection.
    let cfg = json!({"broker": broker.url(), "qos": 1, "retain": true, "keep_alive": 1000});
    let f = Engine::start(
        single(node("o", "mqtt_out", cfg, 1, 0)),
        EngineOptions::default(),
    )
    .unwrap();
    wait_link(&f, "o", true).await;
    let sub = blocking(move || Subscription::start(port, "floe/restart/#"))
        .await
        .unwrap();
    f.inject("o", Msg::with_topic(json!("before"), "floe/restart/0"))
        .await
        .unwrap();
    let seen = blocking(move || sub.next(Duration::from_secs(5))).await;
    assert_eq!(seen.unwrap().payload, "before");

    broker.stop();
    wait_link(&f, "o", false).await;
    f.inject("o", Msg::with_topic(json!("during-1"), "floe/restart/1"))
        .await
        .unwrap();
    f.inject("o", Msg::with_topic(json!("during-2"), "floe/restart/2"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let broker = blocking(move || {
        broker.restart().unwrap();
        broker
    })
    .await;
    wait_link(&f, "o", true).await;
    f.inject("o", Msg::with_topic(json!("after"), "floe/restart/3"))
        .await
        .unwrap();
    let r = f.stop(Duration::from_secs(5)).await;
    assert!(r.drained);
    assert_eq!(r.metrics.node("o").unwrap().dropped, 0);
    // The restarted broker (no persistence) holds exactly what was published after it came
    // back: the two buffered messages and the one after.
    let sub = blocking(move || Subscription::start(port, "floe/restart/#"))
        .await
        .unwrap();
    let mut got = blocking(move || sub.take(3, Duration::from_secs(10)))
        .await
        .unwrap();
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    let payloads: Vec<&str> = got.iter().map(|s| s.payload.as_str()).collect();
    assert_eq!(payloads, vec!["during-1", "during-2", "after"]);
    drop(broker);
}
