//! The engine that runs a complete, validated graph ([`CompiledFlow`]).
//!
//! Shape: every node is one tokio task. Nodes talk through bounded channels that carry
//! *batches* of messages (`Vec<Msg>`, up to [`EngineOptions::batch_size`] each), because moving
//! one message per channel operation costs a wake-up per message and caps the rate far below
//! what a Pi can do. A channel holds at most [`EngineOptions::channel_batches`] batches; a full
//! channel makes the sender wait (backpressure), so no queue grows without bound. Fan-out sends
//! the same batch to every target of a port: messages are reference counted ([`Msg`]), so this
//! copies pointers, never payloads. Fan-in is several senders on one channel.
//!
//! Isolation: a node's per-message work runs inside `catch_unwind`; a panic is counted in the
//! node's metrics and the node goes on with the next message. A node task that dies anyway (an
//! async node's own loop) ends alone: its neighbours see a closed channel and go on.
//!
//! Stop: [`RunningFlow::stop`] cancels the sources and drops the engine's own senders. Each node
//! leaves its loop when its input is closed and empty, after flushing what it still holds, so
//! the closure travels down the graph behind the last messages: in-flight messages are
//! delivered, not lost. Whatever has not finished by the deadline is aborted and named in the
//! [`StopReport`].
//!
//! What a node task runs with (its ports, counters, tap and the [`Process`] trait) lives in
//! the crate-private `task` module, which the node kinds share; this module only wires the
//! graph, spawns the tasks and watches them.

pub use crate::task::{
    Batch, Emit, EngineError, FlowMetrics, NodeStats, Process, ProcessFactory, TapEvent,
};

use crate::compiled::CompiledFlow;
use crate::msg::Msg;
use crate::nodes;
use crate::task::{FsReader, NodeIo, NodeMetrics, Outputs, SysfsReader, Tap, panic_text};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How to run a flow.
#[derive(Clone)]
pub struct EngineOptions {
    /// Smoke-test mode: `mqtt_out` nodes do not publish (they still count and tap).
    pub mute_outputs: bool,
    /// Receives every message a sink node emits or publishes. Bounded by the caller; when it is
    /// full the event is dropped and counted in [`FlowMetrics::tap_dropped`].
    pub tap: Option<mpsc::Sender<TapEvent>>,
    /// Most messages per batch (default 256).
    pub batch_size: usize,
    /// Most batches waiting in one node's input channel (default 8).
    pub channel_batches: usize,
    /// Reads sysfs and device files for `dht` and `sensor`; tests put a failing reader here.
    pub reader: Arc<dyn SysfsReader>,
    /// Extra node kinds by name, checked before the built-in ones.
    pub custom: Vec<(String, ProcessFactory)>,
    /// Flow variables by name, for `change` rules with `value_type: variable`.
    pub variables: BTreeMap<String, serde_json::Value>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            mute_outputs: false,
            tap: None,
            batch_size: 256,
            channel_batches: 8,
            reader: Arc::new(FsReader),
            custom: Vec::new(),
            variables: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineOptions")
            .field("mute_outputs", &self.mute_outputs)
            .field("tap", &self.tap.is_some())
            .field("batch_size", &self.batch_size)
            .field("channel_batches", &self.channel_batches)
            .field(
                "custom",
                &self
                    .custom
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The entry point.
#[derive(Debug)]
pub struct Engine;

struct NodeSlot {
    id: String,
    kind: String,
    metrics: Arc<NodeMetrics>,
    handle: JoinHandle<()>,
}

/// A flow that is running.
pub struct RunningFlow {
    nodes: Vec<NodeSlot>,
    inputs: HashMap<String, mpsc::Sender<Batch>>,
    cancel: CancellationToken,
    tap_dropped: Arc<AtomicU64>,
    started: Instant,
}

impl fmt::Debug for RunningFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningFlow")
            .field(
                "nodes",
                &self.nodes.iter().map(|n| &n.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The state of one node task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// The task is running.
    Running,
    /// The task has ended (a source that finished, or a node whose input closed).
    Ended,
}

/// Health of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHealth {
    /// The node id.
    pub id: String,
    /// Whether its task runs.
    pub state: NodeState,
    /// Errors counted.
    pub errors: u64,
    /// Panics caught.
    pub panics: u64,
    /// For MQTT nodes, whether the broker connection is up.
    pub connected: Option<bool>,
}

/// Health of a running flow.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowHealth {
    /// True while every node task runs.
    pub running: bool,
    /// Per node, in definition order.
    pub nodes: Vec<NodeHealth>,
    /// Time since start.
    pub uptime: Duration,
}

/// How a stop went.
#[derive(Debug, Clone, PartialEq)]
pub struct StopReport {
    /// True when every node finished within the deadline, so nothing in flight was lost.
    pub drained: bool,
    /// How long stopping took.
    pub elapsed: Duration,
    /// Nodes still running at the deadline, which were aborted.
    pub aborted: Vec<String>,
    /// Nodes whose task ended by panicking.
    pub panicked: Vec<String>,
    /// Final counters.
    pub metrics: FlowMetrics,
}

impl Engine {
    /// Starts every node of a compiled flow. Must be called inside a tokio runtime. Fails, with
    /// nothing started, when a node's config does not fit its kind or the graph is malformed.
    pub fn start(flow: CompiledFlow, opts: EngineOptions) -> Result<RunningFlow, EngineError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EngineError::NoRuntime);
        }
        let batch_size = opts.batch_size.clamp(1, 65_536);
        let channel_batches = opts.channel_batches.clamp(1, 4096);
        let n = flow.nodes.len();
        let mut seen = HashMap::with_capacity(n);
        for (i, node) in flow.nodes.iter().enumerate() {
            if seen.insert(node.id.as_str(), i).is_some() {
                return Err(EngineError::Graph(format!("duplicate node id {}", node.id)));
            }
        }
        for (k, e) in flow.edges.iter().enumerate() {
            let (Some(from), Some(to)) = (flow.nodes.get(e.from), flow.nodes.get(e.to)) else {
                return Err(EngineError::Graph(format!(
                    "edge {k} refers to a node index out of range"
                )));
            };
            if e.output >= from.outputs {
                return Err(EngineError::Graph(format!(
                    "edge {k}: node {} has no output port {}",
                    from.id, e.output
                )));
            }
            if to.inputs == 0 || e.input >= to.inputs {
                return Err(EngineError::Graph(format!(
                    "edge {k}: node {} has no input port {}",
                    to.id, e.input
                )));
            }
        }

        // Channels first, so every node's outputs can hold senders to its targets.
        let mut txs = Vec::with_capacity(n);
        let mut rxs = Vec::with_capacity(n);
        for node in &flow.nodes {
            if node.inputs > 0 {
                let (tx, rx) = mpsc::channel::<Batch>(channel_batches);
                txs.push(Some(tx));
                rxs.push(Some(rx));
            } else {
                txs.push(None);
                rxs.push(None);
            }
        }
        let mut targets: Vec<Vec<Vec<mpsc::Sender<Batch>>>> = flow
            .nodes
            .iter()
            .map(|nd| vec![Vec::new(); nd.outputs as usize])
            .collect();
        for e in &flow.edges {
            if let Some(tx) = &txs[e.to] {
                targets[e.from][e.output as usize].push(tx.clone());
            }
        }

        // Build every node before spawning any, so a config error starts nothing.
        let mut built = Vec::with_capacity(n);
        for node in &flow.nodes {
            let custom = opts.custom.iter().find(|(k, _)| *k == node.kind);
            let b = match custom {
                Some((_, factory)) => {
                    factory(node)
                        .map(nodes::Built::Process)
                        .map_err(|message| EngineError::Config {
                            node: node.id.clone(),
                            kind: node.kind.clone(),
                            message,
                        })?
                }
                None => nodes::build(node, &opts.variables, opts.mute_outputs)?,
            };
            built.push(b);
        }

        let cancel = CancellationToken::new();
        let tap_dropped = Arc::new(AtomicU64::new(0));
        let mut slots = Vec::with_capacity(n);
        for (((node, b), rx), tgs) in flow.nodes.iter().zip(built).zip(rxs).zip(targets) {
            let id: Arc<str> = Arc::from(node.id.as_str());
            let metrics = Arc::new(NodeMetrics::new());
            let io = NodeIo {
                id: id.clone(),
                input: rx,
                out: Outputs::new(tgs, batch_size, metrics.clone()),
                metrics: metrics.clone(),
                cancel: cancel.child_token(),
                tap: Tap::new(opts.tap.clone(), tap_dropped.clone(), id),
                mute: opts.mute_outputs,
                reader: opts.reader.clone(),
            };
            let handle = tokio::spawn(b.run(io));
            slots.push(NodeSlot {
                id: node.id.clone(),
                kind: node.kind.clone(),
                metrics,
                handle,
            });
        }
        let inputs = flow
            .nodes
            .iter()
            .zip(txs)
            .filter_map(|(nd, tx)| tx.map(|t| (nd.id.clone(), t)))
            .collect();
        tracing::debug!(nodes = n, "flow started");
        Ok(RunningFlow {
            nodes: slots,
            inputs,
            cancel,
            tap_dropped,
            started: Instant::now(),
        })
    }
}

/// Dropping a running flow without [`RunningFlow::stop`] ends it at once: sources are
/// cancelled and every node task is aborted, so no task outlives its flow.
impl Drop for RunningFlow {
    fn drop(&mut self) {
        self.cancel.cancel();
        for slot in &self.nodes {
            slot.handle.abort();
        }
    }
}

impl RunningFlow {
    /// Feeds one message into a node's input, waiting while its channel is full.
    pub async fn inject(&self, node_id: &str, msg: Msg) -> Result<(), EngineError> {
        self.inject_batch(node_id, vec![msg]).await
    }

    /// Feeds a batch of messages into a node's input, waiting while its channel is full.
    pub async fn inject_batch(&self, node_id: &str, batch: Batch) -> Result<(), EngineError> {
        let tx = self.input(node_id)?;
        tx.send(batch)
            .await
            .map_err(|_| EngineError::Closed(node_id.to_string()))
    }

    /// A sender into a node's input, for feeding many batches without a lookup each time. The
    /// caller must drop it for [`RunningFlow::stop`] to drain that node.
    pub fn input(&self, node_id: &str) -> Result<mpsc::Sender<Batch>, EngineError> {
        match self.inputs.get(node_id) {
            Some(tx) => Ok(tx.clone()),
            None if self.nodes.iter().any(|n| n.id == node_id) => Err(EngineError::Inject(
                format!("node {node_id} is a source and has no input"),
            )),
            None => Err(EngineError::Inject(format!("no node with id {node_id}"))),
        }
    }

    /// Every node's counters, read without stopping anything.
    pub fn metrics(&self) -> FlowMetrics {
        FlowMetrics {
            nodes: self
                .nodes
                .iter()
                .map(|s| NodeStats::read(&s.id, &s.kind, &s.metrics))
                .collect(),
            tap_dropped: self.tap_dropped.load(Relaxed),
        }
    }

    /// Whether every node task runs, with errors and panics per node.
    pub fn health(&self) -> FlowHealth {
        let nodes: Vec<NodeHealth> = self
            .nodes
            .iter()
            .map(|s| {
                let st = NodeStats::read(&s.id, &s.kind, &s.metrics);
                NodeHealth {
                    id: s.id.clone(),
                    state: if s.handle.is_finished() {
                        NodeState::Ended
                    } else {
                        NodeState::Running
                    },
                    errors: st.errors,
                    panics: st.panics,
                    connected: st.connected,
                }
            })
            .collect();
        FlowHealth {
            running: nodes.iter().all(|n| n.state == NodeState::Running),
            nodes,
            uptime: self.started.elapsed(),
        }
    }

    /// Stops the flow: sources stop, in-flight messages drain through the graph, and whatever
    /// has not finished by `deadline` is aborted.
    pub async fn stop(mut self, deadline: Duration) -> StopReport {
        let started = Instant::now();
        let nodes = std::mem::take(&mut self.nodes);
        let inputs = std::mem::take(&mut self.inputs);
        let cancel = self.cancel.clone();
        let tap_dropped = self.tap_dropped.clone();
        cancel.cancel();
        drop(inputs);
        let end = tokio::time::Instant::now() + deadline;
        let mut aborted = Vec::new();
        let mut panicked = Vec::new();
        let mut finals = Vec::with_capacity(nodes.len());
        for slot in nodes {
            let NodeSlot {
                id,
                kind,
                metrics,
                mut handle,
            } = slot;
            match tokio::time::timeout_at(end, &mut handle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if e.is_panic() {
                        metrics.panic(panic_text(e.into_panic().as_ref()));
                        panicked.push(id.clone());
                    }
                }
                Err(_) => {
                    handle.abort();
                    aborted.push(id.clone());
                }
            }
            finals.push((id, kind, metrics));
        }
        let metrics = FlowMetrics {
            nodes: finals
                .iter()
                .map(|(id, kind, m)| NodeStats::read(id, kind, m))
                .collect(),
            tap_dropped: tap_dropped.load(Relaxed),
        };
        let report = StopReport {
            drained: aborted.is_empty(),
            elapsed: started.elapsed(),
            aborted,
            panicked,
            metrics,
        };
        tracing::debug!(
            drained = report.drained,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "flow stopped"
        );
        report
    }
}

#[cfg(test)]
mod tests;
