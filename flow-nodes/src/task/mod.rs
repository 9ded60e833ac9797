//! What one node task runs with: its input, its output ports, its counters, the tap, and the
//! trait a per-message node implements.
//!
//! Both the engine and the node kinds need these types: the engine builds a [`NodeIo`] for
//! every node and spawns it, and each kind's loop (in the `nodes` module) reads its input and
//! pushes to its output ports through it. They live here, below both, so that the engine
//! depends on the node kinds only to build and run them, and the node kinds do not depend on
//! the engine at all: the two modules no longer import each other.
//!
//! Shape of a port: one buffer per output port, flushed as a batch to every target of the
//! port. Messages are reference counted ([`Msg`]), so fan-out copies pointers, never payloads.

mod error;
mod metrics;
mod reader;

pub use error::{EngineError, NodeError};
pub(crate) use metrics::NodeMetrics;
pub use metrics::{FlowMetrics, NodeStats};
pub use reader::{FsReader, SysfsReader};

use crate::compiled::CompiledNode;
use crate::msg::Msg;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A batch of messages, the unit that moves through channels.
pub type Batch = Vec<Msg>;

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
    fn process(&mut self, msg: Msg, out: &mut Emit<'_>) -> Result<(), NodeError>;
}

/// Builds a [`Process`] node from its compiled description.
pub type ProcessFactory =
    Arc<dyn Fn(&CompiledNode) -> Result<Box<dyn Process>, String> + Send + Sync>;

/// Reports sink deliveries to the tap, dropping and counting when it is full.
#[derive(Clone, Debug)]
pub(crate) struct Tap {
    tx: Option<mpsc::Sender<TapEvent>>,
    dropped: Arc<AtomicU64>,
    node: Arc<str>,
}

impl Tap {
    /// A tap for one node; `tx` is `None` when nobody listens.
    pub(crate) fn new(
        tx: Option<mpsc::Sender<TapEvent>>,
        dropped: Arc<AtomicU64>,
        node: Arc<str>,
    ) -> Self {
        Tap { tx, dropped, node }
    }

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
    /// Output ports with their targets (one list of senders per port) and empty buffers.
    pub(crate) fn new(
        targets: Vec<Vec<mpsc::Sender<Batch>>>,
        batch_size: usize,
        metrics: Arc<NodeMetrics>,
    ) -> Self {
        let bufs = (0..targets.len())
            .map(|_| Vec::with_capacity(batch_size))
            .collect();
        Outputs {
            targets,
            bufs,
            spare: Vec::new(),
            batch_size,
            metrics,
        }
    }

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
    /// Sends one reading of a polling source (`dht`, `sensor`) on its only port, or counts the
    /// failed read; either way the source goes on polling.
    pub(crate) async fn deliver(
        &mut self,
        reading: Result<serde_json::Value, NodeError>,
        topic: &Arc<str>,
    ) {
        match reading {
            Ok(payload) => {
                let msg = Msg {
                    payload: Arc::new(payload),
                    topic: topic.clone(),
                    props: None,
                };
                self.out.push(0, msg);
                self.out.flush().await;
            }
            Err(e) => self.error(e.to_string()),
        }
    }

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
