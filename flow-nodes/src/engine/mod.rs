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

mod metrics;

pub(crate) use metrics::NodeMetrics;
pub use metrics::{FlowMetrics, NodeStats};

use crate::compiled::{CompiledFlow, CompiledNode};
use crate::msg::Msg;
use crate::nodes::{self, SysfsReader};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A batch of messages, the unit that moves through channels.
pub type Batch = Vec<Msg>;

/// Why a flow could not start or take input.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The graph does not hold together (an edge names a node or port that does not exist).
    #[error("graph: {0}")]
    Graph(String),
    /// A node's kind is not one the engine knows.
    #[error("node {node}: unknown node kind `{kind}`")]
    UnknownKind {
        /// The node id.
        node: String,
        /// The kind as written.
        kind: String,
    },
    /// A node's config does not fit its kind.
    #[error("node {node} ({kind}): config: {message}")]
    Config {
        /// The node id.
        node: String,
        /// The node kind.
        kind: String,
        /// What is wrong.
        message: String,
    },
    /// A node failed to start (it could not claim a device or port it needs).
    #[error("node {node}: start: {message}")]
    Start {
        /// The node id.
        node: String,
        /// What failed.
        message: String,
    },
    /// Starting needs a tokio runtime and none is running on this thread.
    #[error("start: the engine must be started from inside a tokio runtime")]
    NoRuntime,
    /// A test input named a node that does not exist or has no input.
    #[error("inject: {0}")]
    Inject(String),
    /// The node's input is closed: the flow is stopping or the node has ended.
    #[error("inject: node {0} no longer takes input")]
    Closed(String),
}

/// A message a sink node delivered (or would have published, when outputs are muted).
#[derive(Debug, Clone)]
pub struct TapEvent {
    /// The sink node's id.
    pub node_id: Arc<str>,
    /// The message.
    pub msg: Msg,
    /// False when the node did not publish because outputs are muted.
    pub published: bool,
    /// When the sink handled it.
    pub at: Instant,
}

/// A node kind supplied by the embedder (benchmarks, tests, extensions): a synchronous
/// per-message function. Return `Err` to count an error; panics are caught and counted too.
pub trait Process: Send + 'static {
    /// Handles one message; send results with [`Emit::emit`].
    fn process(&mut self, msg: Msg, out: &mut Emit<'_>) -> Result<(), nodes::NodeError>;
}

/// Builds a [`Process`] node from its compiled description.
pub type ProcessFactory =
    Arc<dyn Fn(&CompiledNode) -> Result<Box<dyn Process>, String> + Send + Sync>;

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
            reader: Arc::new(nodes::FsReader),
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

/// Reports sink deliveries to the tap, dropping and counting when it is full.
#[derive(Clone, Debug)]
pub(crate) struct Tap {
    tx: Option<mpsc::Sender<TapEvent>>,
    dropped: Arc<AtomicU64>,
    node: Arc<str>,
}

impl Tap {
    pub(crate) fn send(&self, msg: &Msg, published: bool) {
        if let Some(tx) = &self.tx {
            let ev = TapEvent {
                node_id: self.node.clone(),
                msg: msg.clone(),
                published,
                at: Instant::now(),
            };
            if tx.try_send(ev).is_err() {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    pub(crate) fn active(&self) -> bool {
        self.tx.is_some()
    }
}

/// The sending side of a node: one buffer per output port, flushed as batches to every
/// target of the port.
#[derive(Debug)]
pub(crate) struct Outputs {
    targets: Vec<Vec<mpsc::Sender<Batch>>>,
    bufs: Vec<Batch>,
    spare: Vec<Batch>,
    batch_size: usize,
    metrics: Arc<NodeMetrics>,
}

impl Outputs {
    /// Buffers a message for a port; ports without targets discard it.
    pub(crate) fn push(&mut self, port: usize, msg: Msg) {
        if let Some(buf) = self.bufs.get_mut(port) {
            buf.push(msg);
        }
    }

    fn any_full(&self) -> bool {
        self.bufs.iter().any(|b| b.len() >= self.batch_size)
    }

    /// Keeps an emptied input batch to reuse as an output buffer.
    fn recycle(&mut self, mut batch: Batch) {
        if self.spare.len() < 4 && batch.capacity() <= self.batch_size * 2 {
            batch.clear();
            self.spare.push(batch);
        }
    }

    /// Sends every buffered message, waiting while a target's channel is full. Targets that
    /// have ended are skipped.
    pub(crate) async fn flush(&mut self) {
        for port in 0..self.bufs.len() {
            if self.bufs[port].is_empty() {
                continue;
            }
            let fresh = self
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(self.batch_size));
            let batch = std::mem::replace(&mut self.bufs[port], fresh);
            self.metrics.msgs_out.fetch_add(batch.len() as u64, Relaxed);
            let targets = &self.targets[port];
            match targets.len() {
                0 => self.recycle(batch),
                n => {
                    for t in &targets[..n - 1] {
                        let _ = t.send(batch.clone()).await;
                    }
                    let _ = targets[n - 1].send(batch).await;
                }
            }
        }
    }
}

/// What a [`Process`] node uses to send messages and report to the tap.
#[derive(Debug)]
pub struct Emit<'a> {
    out: &'a mut Outputs,
    tap: &'a Tap,
}

impl Emit<'_> {
    /// Sends a message on an output port (0-based). Ports without targets discard it.
    pub fn emit(&mut self, port: usize, msg: Msg) {
        self.out.push(port, msg);
    }

    /// Reports a delivered message to the tap (for sink nodes).
    pub fn tap(&mut self, msg: &Msg) {
        self.tap.send(msg, true);
    }

    /// True when a tap is listening, so a sink can skip work nobody sees.
    pub fn tap_active(&self) -> bool {
        self.tap.active()
    }
}

/// Everything a node task owns.
#[derive(Debug)]
pub(crate) struct NodeIo {
    pub(crate) id: Arc<str>,
    pub(crate) input: Option<mpsc::Receiver<Batch>>,
    pub(crate) out: Outputs,
    pub(crate) metrics: Arc<NodeMetrics>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tap: Tap,
    pub(crate) mute: bool,
    pub(crate) reader: Arc<dyn SysfsReader>,
}

impl NodeIo {
    /// Counts and logs a node error.
    pub(crate) fn error(&self, text: String) {
        tracing::warn!(node = %self.id, error = %text, "node error");
        self.metrics.error(text);
    }
}

/// Runs a synchronous per-message node: receive a batch, process each message inside
/// `catch_unwind`, flush outputs, repeat until the input closes.
pub(crate) async fn run_process(mut node: Box<dyn Process>, mut io: NodeIo) {
    let Some(mut rx) = io.input.take() else {
        return;
    };
    while let Some(mut batch) = rx.recv().await {
        let n = batch.len() as u64;
        if n == 0 {
            continue;
        }
        io.metrics.msgs_in.fetch_add(n, Relaxed);
        let started = Instant::now();
        for msg in batch.drain(..) {
            let mut emit = Emit {
                out: &mut io.out,
                tap: &io.tap,
            };
            match catch_unwind(AssertUnwindSafe(|| node.process(msg, &mut emit))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => io.error(e.to_string()),
                Err(payload) => {
                    let text = panic_text(payload.as_ref());
                    tracing::error!(node = %io.id, panic = %text, "node panicked; it keeps running");
                    io.metrics.panic(text);
                }
            }
            if io.out.any_full() {
                io.out.flush().await;
            }
        }
        io.metrics
            .latency
            .record_n(started.elapsed().as_nanos() as u64 / n, n);
        io.out.recycle(batch);
        io.out.flush().await;
    }
    io.out.flush().await;
}

/// The message of a caught panic.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
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
            let bufs = (0..tgs.len())
                .map(|_| Vec::with_capacity(batch_size))
                .collect();
            let io = NodeIo {
                id: id.clone(),
                input: rx,
                out: Outputs {
                    targets: tgs,
                    bufs,
                    spare: Vec::new(),
                    batch_size,
                    metrics: metrics.clone(),
                },
                metrics: metrics.clone(),
                cancel: cancel.child_token(),
                tap: Tap {
                    tx: opts.tap.clone(),
                    dropped: tap_dropped.clone(),
                    node: id,
                },
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
