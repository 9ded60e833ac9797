//! The engine-backed [`FlowRunner`]: reads the slot's flow definition, compiles it with the
//! same validator the coordinator uses, and runs it on the floe-flow engine.
//!
//! Node panics are caught by the engine and counted; they reach the health layer both as
//! errors (so the error rate sees them) and as restarts (so a node that keeps falling over
//! reads as a crash loop).
//!
//! Three things the engine alone does not give the agent are added here:
//! - **Hang detection.** A node stuck inside a call that never returns (a wedged driver) does
//!   not end its task and counts no error, so counters alone read as "idle". A node is
//!   therefore judged by progress: when messages wait in its input and it has not taken any
//!   for `stuck_after`, it is holding one it cannot finish, and the flow reads as not running
//!   (an immediate rollback trigger on trial). An idle node has an empty input and is never
//!   stuck.
//! - **Per-slot MQTT client ids.** A broker drops the older of two connections with the same
//!   client id, so the smoke test of the standby slot would knock the live flow off its broker.
//!   Each slot's flow gets its own ids: a configured `client_id` gets `-<slot>` appended; the
//!   default becomes `floe-<device>-<node>-<slot>` (the device id shortened to 12 characters).
//! - **Sink outputs for the smoke test.** A muted flow gets its own bounded tap, which the
//!   smoke test drains to check the outputs its manifest expects.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use floe_flow::compiled::CompiledFlow;
use floe_flow::engine::{Engine, EngineOptions, RunningFlow as EngineRunning, TapEvent};
use floe_flow::msg::Msg;
use tokio::sync::mpsc;

use super::runner::{FlowRunner, RunnerError, RunningFlow, SinkOutput, StartSpec, effective_vars};
use crate::health::{AppSnapshot, NodeCounters};
use crate::slots::SlotName;

/// The largest flow definition read from a slot (bytes).
pub const MAX_FLOW_BYTES: u64 = 4 << 20;

/// How many sink outputs a muted (smoke-test) flow keeps for the smoke test; beyond it the
/// engine drops and counts them.
pub const SMOKE_TAP_CAPACITY: usize = 1024;

/// How many characters of the device id the default MQTT client ids carry.
const CLIENT_ID_DEVICE_CHARS: usize = 12;

/// Starts slot flows on the floe-flow engine.
#[derive(Debug, Clone, Default)]
pub struct EngineRunner {
    /// Receives what sink nodes emit (the switch benchmark measures gaps with it). Bounded by
    /// its creator; the engine drops and counts events when it is full. Live flows only: a
    /// muted flow's outputs go to its own smoke-test tap.
    pub tap: Option<mpsc::Sender<TapEvent>>,
}

/// A flow running on the engine.
#[derive(Debug)]
pub struct EngineFlow {
    running: EngineRunning,
    version: String,
    outputs: Option<mpsc::Receiver<TapEvent>>,
    progress: Mutex<Progress>,
}

/// What the hang detector remembers between snapshots: per node with an input, the input
/// count it last saw and since when it has not moved. One entry per node of the flow, so it
/// is bounded by the flow's size.
#[derive(Debug)]
struct Progress {
    stuck_after: Duration,
    /// Per node (by id): the node ids its outputs feed.
    targets: HashMap<String, Vec<String>>,
    /// Kinds that hold messages on purpose (`delay`) and are never judged stuck.
    exempt: Vec<String>,
    nodes: HashMap<String, (u64, Instant)>,
}

/// One node as the hang detector sees it in a snapshot.
#[derive(Debug, Clone, PartialEq)]
struct NodeObs {
    id: String,
    /// Messages the node has taken so far.
    received: u64,
    /// Messages wait in its input.
    waiting: bool,
    /// The input of a node it feeds is full: it is held up by backpressure, not stuck.
    blocked_downstream: bool,
}

impl Progress {
    /// Judges one snapshot: the nodes that have taken nothing for `stuck_after` while input
    /// waits and nothing downstream holds them up, with how long. Pure: `now` comes in.
    fn judge(&mut self, obs: &[NodeObs], now: Instant) -> Vec<(String, Duration)> {
        let mut stuck = Vec::new();
        for o in obs {
            let entry = self.nodes.entry(o.id.clone()).or_insert((o.received, now));
            if entry.0 != o.received || !o.waiting || o.blocked_downstream {
                *entry = (o.received, now);
                continue;
            }
            let held = now.saturating_duration_since(entry.1);
            if held >= self.stuck_after {
                stuck.push((o.id.clone(), held));
            }
        }
        stuck
    }
}

/// The MQTT node kinds, whose `client_id` must differ per slot.
fn is_mqtt(kind: &str) -> bool {
    matches!(kind, "mqtt_in" | "mqtt_out")
}

/// Gives every MQTT node of a flow a client id of its own slot. `configured` holds the ids of
/// the nodes whose definition sets `client_id` explicitly.
pub fn assign_client_ids(
    flow: &mut CompiledFlow,
    configured: &HashMap<String, String>,
    device: &str,
    slot: SlotName,
) {
    let device: String = device.chars().take(CLIENT_ID_DEVICE_CHARS).collect();
    for node in flow.nodes.iter_mut().filter(|n| is_mqtt(&n.kind)) {
        let id = match configured.get(&node.id) {
            Some(base) => format!("{base}-{slot}"),
            None => format!("floe-{device}-{}-{slot}", node.id),
        };
        node.config
            .insert("client_id".to_string(), serde_json::Value::String(id));
    }
}

/// The `client_id`s a flow definition sets explicitly, by node id. Compiled configs carry the
/// default too, so the definition is the only place that tells the two apart. Variables in
/// the value are substituted by the compiled config, which is what is used.
fn configured_client_ids(definition: &[u8], compiled: &CompiledFlow) -> HashMap<String, String> {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(definition) else {
        return HashMap::new();
    };
    let explicit: Vec<&str> = doc["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter(|n| n["config"].get("client_id").is_some())
                .filter_map(|n| n["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    compiled
        .nodes
        .iter()
        .filter(|n| is_mqtt(&n.kind) && explicit.contains(&n.id.as_str()))
        .filter_map(|n| {
            n.config
                .get("client_id")
                .and_then(|v| v.as_str())
                .map(|v| (n.id.clone(), v.to_string()))
        })
        .collect()
}

impl FlowRunner for EngineRunner {
    type Flow = EngineFlow;

    async fn start(&mut self, spec: StartSpec<'_>) -> Result<EngineFlow, RunnerError> {
        let path = spec.slot_dir.join(&spec.record.flow);
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_FLOW_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|source| RunnerError::Read {
                path: path.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_FLOW_BYTES {
            return Err(RunnerError::TooLarge {
                path,
                limit: MAX_FLOW_BYTES,
            });
        }
        // The device's values (delivered with the Stage, under its local `[vars]`) replace
        // the flow's defaults, as `floed run --var` does.
        let values = effective_vars(spec.record, spec.secrets, spec.local_vars);
        let mut compiled = floe_flow::validate::compile_with_values(&bytes, &values)
            .map_err(RunnerError::Invalid)?;
        let configured = configured_client_ids(&bytes, &compiled);
        assign_client_ids(&mut compiled, &configured, spec.device, spec.slot);
        let mut targets: HashMap<String, Vec<String>> = HashMap::new();
        for e in &compiled.edges {
            if let (Some(from), Some(to)) = (compiled.nodes.get(e.from), compiled.nodes.get(e.to)) {
                targets
                    .entry(from.id.clone())
                    .or_default()
                    .push(to.id.clone());
            }
        }
        let exempt = compiled
            .nodes
            .iter()
            .filter(|n| n.kind == "delay")
            .map(|n| n.id.clone())
            .collect();
        let (tap, outputs) = if spec.muted {
            let (tx, rx) = mpsc::channel(SMOKE_TAP_CAPACITY);
            (Some(tx), Some(rx))
        } else {
            (self.tap.clone(), None)
        };
        let opts = EngineOptions {
            mute_outputs: spec.muted,
            tap,
            ..EngineOptions::default()
        };
        let running = Engine::start(compiled, opts).map_err(RunnerError::Start)?;
        Ok(EngineFlow {
            running,
            version: spec.record.version.clone(),
            outputs,
            progress: Mutex::new(Progress {
                stuck_after: spec.stuck_after,
                targets,
                exempt,
                nodes: HashMap::new(),
            }),
        })
    }
}

impl EngineFlow {
    /// The nodes that hold a message they cannot finish (see [`Progress::judge`]).
    fn stuck_nodes(&self, received: &[(String, u64)], now: Instant) -> Vec<(String, Duration)> {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        // Whether a node's input holds anything, and whether it is full; sources have none.
        let input = |id: &str| {
            self.running
                .input(id)
                .ok()
                .map(|tx| (tx.capacity() < tx.max_capacity(), tx.capacity() == 0))
        };
        let obs: Vec<NodeObs> = received
            .iter()
            .filter(|(id, _)| !progress.exempt.contains(id))
            .filter_map(|(id, count)| {
                let (waiting, _) = input(id)?;
                let blocked_downstream = progress
                    .targets
                    .get(id)
                    .is_some_and(|ts| ts.iter().any(|t| input(t).is_some_and(|(_, full)| full)));
                Some(NodeObs {
                    id: id.clone(),
                    received: *count,
                    waiting,
                    blocked_downstream,
                })
            })
            .collect();
        progress.judge(&obs, now)
    }
}

impl RunningFlow for EngineFlow {
    async fn inject(&self, node: &str, payload: serde_json::Value) -> Result<(), RunnerError> {
        self.running
            .inject(node, Msg::new(payload))
            .await
            .map_err(|source| RunnerError::Inject {
                node: node.to_string(),
                source,
            })
    }

    fn snapshot(&self) -> AppSnapshot {
        let health = self.running.health();
        let metrics = self.running.metrics();
        let received: Vec<(String, u64)> = metrics
            .nodes
            .iter()
            .map(|n| (n.id.clone(), n.msgs_in))
            .collect();
        let stuck = self.stuck_nodes(&received, Instant::now());
        let mut reasons = Vec::new();
        if !health.running {
            let ended: Vec<&str> = health
                .nodes
                .iter()
                .filter(|n| n.state != floe_flow::engine::NodeState::Running)
                .map(|n| n.id.as_str())
                .collect();
            reasons.push(format!("node task(s) ended: {}", ended.join(", ")));
        }
        for (id, held) in &stuck {
            reasons.push(format!(
                "node {id} is stuck: it has taken no message for {} ms while input waits (hung)",
                held.as_millis()
            ));
        }
        AppSnapshot {
            running: reasons.is_empty(),
            stopped_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
            version: Some(self.version.clone()),
            nodes: metrics
                .nodes
                .iter()
                .map(|n| NodeCounters {
                    id: n.id.clone(),
                    received: n.msgs_in.max(n.msgs_out),
                    errors: n.errors + n.panics,
                    restarts: n.panics,
                    p95: n.p95,
                })
                .collect(),
        }
    }

    fn drain_outputs(&mut self, max: usize) -> Vec<SinkOutput> {
        let mut out = Vec::new();
        if let Some(rx) = self.outputs.as_mut() {
            while out.len() < max {
                match rx.try_recv() {
                    Ok(ev) => out.push(SinkOutput {
                        node: ev.node_id.to_string(),
                        payload: (*ev.msg.payload).clone(),
                    }),
                    Err(_) => break,
                }
            }
        }
        out
    }

    async fn stop(self, deadline: Duration) {
        let report = self.running.stop(deadline).await;
        if !report.drained {
            tracing::warn!(aborted = ?report.aborted, "flow did not drain before the deadline; abandoned");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn compiled(def: &serde_json::Value) -> CompiledFlow {
        floe_flow::validate::compile(def.to_string().as_bytes(), &[]).unwrap()
    }

    #[test]
    fn each_slot_gets_its_own_mqtt_client_ids() {
        let def = json!({
            "nodes": [
                {"id": "in", "type": "mqtt_in", "name": "In", "config": {"broker": "mqtt://127.0.0.1:1883", "topic": "a/#", "client_id": "plant-7"}},
                {"id": "out", "type": "mqtt_out", "name": "Out", "config": {"broker": "mqtt://127.0.0.1:1883", "topic": "b"}},
                {"id": "log", "type": "debug", "name": "Log", "config": {}}
            ],
            "connections": [{"source": "in", "target": "out"}, {"source": "in", "target": "log"}]
        });
        let bytes = def.to_string().into_bytes();
        let ids = |slot| {
            let mut c = compiled(&def);
            let configured = configured_client_ids(&bytes, &c);
            assign_client_ids(&mut c, &configured, "0123456789abcdef0123", slot);
            c.nodes
                .iter()
                .map(|n| n.config.get("client_id").cloned())
                .collect::<Vec<_>>()
        };
        let blue = ids(SlotName::Blue);
        let green = ids(SlotName::Green);
        assert_eq!(blue[0], Some(json!("plant-7-blue")));
        assert_eq!(blue[1], Some(json!("floe-0123456789ab-out-blue")));
        assert_eq!(blue[2], None, "non-MQTT nodes are untouched");
        assert_eq!(green[0], Some(json!("plant-7-green")));
        assert_eq!(green[1], Some(json!("floe-0123456789ab-out-green")));
    }

    fn obs(id: &str, received: u64, waiting: bool, blocked: bool) -> NodeObs {
        NodeObs {
            id: id.into(),
            received,
            waiting,
            blocked_downstream: blocked,
        }
    }

    #[test]
    fn a_node_that_takes_nothing_while_input_waits_is_stuck_after_the_bound() {
        let mut p = Progress {
            stuck_after: Duration::from_secs(2),
            targets: HashMap::new(),
            exempt: Vec::new(),
            nodes: HashMap::new(),
        };
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // Busy and progressing, then idle (nothing waiting): never stuck.
        assert!(p.judge(&[obs("a", 1, true, false)], at(0)).is_empty());
        assert!(p.judge(&[obs("a", 5, true, false)], at(1500)).is_empty());
        assert!(p.judge(&[obs("a", 5, false, false)], at(4000)).is_empty());
        // Input waits and the count stands still: stuck once the bound has passed.
        assert!(p.judge(&[obs("a", 5, true, false)], at(4100)).is_empty());
        assert!(p.judge(&[obs("a", 5, true, false)], at(5000)).is_empty());
        let s = p.judge(&[obs("a", 5, true, false)], at(6100));
        assert_eq!(s, vec![("a".to_string(), Duration::from_millis(2100))]);
        // Held up by a full target instead: backpressure, not a hang; the clock restarts.
        assert!(p.judge(&[obs("a", 5, true, true)], at(7000)).is_empty());
        assert!(p.judge(&[obs("a", 5, true, false)], at(8000)).is_empty());
        // Progress clears it.
        assert!(p.judge(&[obs("a", 6, true, false)], at(9500)).is_empty());
    }

    #[tokio::test]
    async fn backpressure_from_a_rate_limited_delay_is_not_a_hang() {
        // A `delay` in rate mode holds its queue on purpose and stops reading when it is full;
        // the node feeding it is then held up by backpressure. Neither is stuck.
        let def = json!({
            "nodes": [
                {"id": "fix", "type": "change", "name": "Fix", "config": {"rules": [{"action": "set", "property": "topic", "value": "t"}]}},
                {"id": "slow", "type": "delay", "name": "Slow", "config": {"mode": "rate", "rate": 1, "period": "1h", "queue": 1}},
                {"id": "out", "type": "debug", "name": "Out", "config": {"level": "debug"}}
            ],
            "connections": [{"source": "fix", "target": "slow"}, {"source": "slow", "target": "out"}]
        });
        let c = compiled(&def);
        let running = Engine::start(c, EngineOptions::default()).unwrap();
        let flow = EngineFlow {
            running,
            version: "1".into(),
            outputs: None,
            progress: Mutex::new(Progress {
                stuck_after: Duration::from_millis(100),
                targets: HashMap::from([
                    ("fix".to_string(), vec!["slow".to_string()]),
                    ("slow".to_string(), vec!["out".to_string()]),
                ]),
                exempt: vec!["slow".to_string()],
                nodes: HashMap::new(),
            }),
        };
        let input = flow.running.input("fix").unwrap();
        for i in 0..40 {
            // Bounded: once everything is backed up the send would wait, so stop trying.
            if input.try_send(vec![Msg::new(json!(i))]).is_err() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        drop(input);
        assert!(flow.snapshot().running);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let snap = flow.snapshot();
        assert!(snap.running, "{snap:?}");
        flow.stop(Duration::from_millis(100)).await;
    }
}
