//! The errors of the engine and of its nodes, shared by both so that neither module has to
//! import the other to name a failure.

use crate::msg::PathError;
use std::io;
use std::path::PathBuf;

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
/// Why a node failed on one message or one read. Counted in the node's metrics; the node goes
/// on.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A property path could not be read or written.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The message does not carry what the node needs (no topic for `mqtt_out` …).
    #[error("message: {0}")]
    Message(String),
    /// A device or file held something unusable (not a number, an implausible reading …).
    #[error("read: {0}")]
    Read(String),
    /// Reading a device or file failed.
    #[error("read: {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading a device attribute failed, after retrying driver errors.
    #[error("read: {}: {source} (after {retries} retries)", path.display())]
    ReadRetried {
        /// The attribute file.
        path: PathBuf,
        /// How many retries were made.
        retries: u32,
        /// The last OS error.
        #[source]
        source: io::Error,
    },
    /// The blocking task that reads a file failed (it panicked or was cancelled).
    #[error("read: {}: reader task failed: {source}", path.display())]
    ReaderTask {
        /// The file.
        path: PathBuf,
        /// Why the task ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Handing a message to the MQTT client failed.
    #[error("publish: {0}")]
    Publish(String),
}
