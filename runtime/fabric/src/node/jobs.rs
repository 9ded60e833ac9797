//! Store jobs that ran on tokio's blocking pool, on their way back to the swarm task.
//!
//! Why one type for both kinds: uploads (a chunk read to serve) and downloads (an arrived
//! chunk hashed and stored) report through one channel with room for every job either can
//! have in flight, so a finished job never waits and the task takes them in the order they
//! finished.

use crate::index::ArtifactId;
use crate::store::StoreError;
use crate::wire::Response;
use libp2p::PeerId;
use libp2p::request_response::{InboundRequestId, ResponseChannel};

/// A store job finished on a blocking thread.
pub(super) enum Done {
    /// A chunk to serve was read.
    Read {
        id: ArtifactId,
        request_id: InboundRequestId,
        channel: ResponseChannel<Response>,
        result: Result<Option<Vec<u8>>, StoreError>,
    },
    /// An arrived chunk was hashed and stored (or refused).
    Stored {
        id: ArtifactId,
        chunk: u32,
        peer: PeerId,
        result: Result<(), StoreError>,
    },
}
