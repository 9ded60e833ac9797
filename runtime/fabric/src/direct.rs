//! The direct protocol, `/floe/direct/1`: one small request and one small response between two
//! peers, for control messages that have one addressee.
//!
//! Why besides gossip: gossip reaches everyone and says nothing back. A device's signed status
//! report is for the coordinator alone, and the answer it wants (its current directive) is for
//! that device alone; flooding both through the mesh would cost every peer bandwidth and still
//! leave the device without a reply. Chunks have their own protocol (`/floe/chunk/2`) because
//! their sizes, slots and scheduling are different; this one is for messages of at most
//! [`MAX_DIRECT_BYTES`] each way.
//!
//! Framing is the chunk protocol's: a one-byte tag, a 4-byte big-endian length, the payload,
//! with the length checked against [`MAX_DIRECT_BYTES`] before anything is allocated. The
//! fabric does not look inside the payload: the application signs and checks it (a status
//! report is signed by the device key, a directive by the coordinator key).
//!
//! Bounds (enforced by the swarm actor, `node/direct_requests.rs`):
//! - [`MAX_DIRECT_BYTES`] (64 KiB) for a request and for a response, both directions;
//! - [`REQUEST_TIMEOUT`] for the whole exchange (libp2p fails the request after it);
//! - [`MAX_OUTBOUND`] requests of ours outstanding in total and [`MAX_OUTBOUND_PER_PEER`] to one
//!   peer; a further [`super::Fabric::request`] fails at once with `Busy`;
//! - [`MAX_HANDLERS`] incoming requests being answered at once and [`MAX_HANDLERS_PER_PEER`]
//!   from one peer; a request beyond either is answered [`DirectResponse::Busy`] at once,
//!   without running the handler.

use super::wire::{read_frame, write_frame};
use futures::{AsyncRead, AsyncWrite};
use libp2p::{PeerId, StreamProtocol};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The protocol name; the trailing number is the wire version.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/floe/direct/1");
/// Largest request and largest response payload (64 KiB): a signed status report (at most
/// 16 KiB) or a directive post (at most 14 KiB) with room to spare.
pub const MAX_DIRECT_BYTES: usize = 64 * 1024;
/// How long one exchange may take, connection setup included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most of our requests outstanding at once, over all peers.
pub const MAX_OUTBOUND: usize = 256;
/// Most of our requests outstanding to one peer.
pub const MAX_OUTBOUND_PER_PEER: usize = 8;
/// Most incoming requests being answered at once (handler calls in flight).
pub const MAX_HANDLERS: usize = 16;
/// Most incoming requests from one peer being answered at once.
pub const MAX_HANDLERS_PER_PEER: usize = 4;

/// The application's answer to incoming direct requests: the asking peer and the exact bytes
/// it sent; `Some(reply)` answers, `None` declines. It runs on a blocking thread, never on the
/// swarm task, so it may read files or verify signatures; a reply longer than
/// [`MAX_DIRECT_BYTES`] is not sent (the peer is told the request was declined).
pub type RequestHandler = Arc<dyn Fn(PeerId, Vec<u8>) -> Option<Vec<u8>> + Send + Sync>;

/// What a peer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectResponse {
    /// The handler's reply.
    Reply(Vec<u8>),
    /// The handler declined (or the peer has no handler, or its reply was too long).
    Declined,
    /// The peer is answering too many requests; ask again later.
    Busy,
}

const REQ_DATA: u8 = 1;
const RES_REPLY: u8 = 0x81;
const RES_DECLINED: u8 = 0x82;
const RES_BUSY: u8 = 0x83;

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The codec plugged into `request_response::Behaviour` for `/floe/direct/1`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectCodec;

#[async_trait::async_trait]
impl libp2p::request_response::Codec for DirectCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = DirectResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, MAX_DIRECT_BYTES as u32).await? {
            (REQ_DATA, payload) => Ok(payload),
            _ => Err(invalid("unknown direct request")),
        }
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<DirectResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, MAX_DIRECT_BYTES as u32).await? {
            (RES_REPLY, payload) => Ok(DirectResponse::Reply(payload)),
            (RES_DECLINED, payload) if payload.is_empty() => Ok(DirectResponse::Declined),
            (RES_BUSY, payload) if payload.is_empty() => Ok(DirectResponse::Busy),
            _ => Err(invalid("unknown direct response")),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        if req.len() > MAX_DIRECT_BYTES {
            return Err(invalid("direct request too long"));
        }
        write_frame(io, REQ_DATA, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: DirectResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match res {
            DirectResponse::Reply(b) if b.len() <= MAX_DIRECT_BYTES => {
                write_frame(io, RES_REPLY, &b).await
            }
            DirectResponse::Reply(_) | DirectResponse::Declined => {
                write_frame(io, RES_DECLINED, &[]).await
            }
            DirectResponse::Busy => write_frame(io, RES_BUSY, &[]).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    fn round_trip_response(res: DirectResponse) -> io::Result<DirectResponse> {
        let mut codec = DirectCodec;
        let mut buf = Vec::new();
        block_on(codec.write_response(&PROTOCOL, &mut futures::io::Cursor::new(&mut buf), res))?;
        block_on(codec.read_response(&PROTOCOL, &mut futures::io::Cursor::new(&buf)))
    }

    #[test]
    fn requests_and_responses_round_trip_up_to_the_cap() {
        let mut codec = DirectCodec;
        for len in [0, 1, MAX_DIRECT_BYTES] {
            let req = vec![7u8; len];
            let mut buf = Vec::new();
            block_on(codec.write_request(
                &PROTOCOL,
                &mut futures::io::Cursor::new(&mut buf),
                req.clone(),
            ))
            .unwrap();
            let back = block_on(codec.read_request(&PROTOCOL, &mut futures::io::Cursor::new(&buf)))
                .unwrap();
            assert_eq!(back, req);
        }
        for res in [
            DirectResponse::Reply(vec![1, 2, 3]),
            DirectResponse::Reply(vec![9; MAX_DIRECT_BYTES]),
            DirectResponse::Declined,
            DirectResponse::Busy,
        ] {
            assert_eq!(round_trip_response(res.clone()).unwrap(), res);
        }
    }

    #[test]
    fn oversized_messages_are_refused_both_ways() {
        let mut codec = DirectCodec;
        // Sending: a request over the cap is never written.
        let mut buf = Vec::new();
        assert!(
            block_on(codec.write_request(
                &PROTOCOL,
                &mut futures::io::Cursor::new(&mut buf),
                vec![0; MAX_DIRECT_BYTES + 1],
            ))
            .is_err()
        );
        // Sending: a reply over the cap goes out as Declined, never as an oversized frame.
        assert_eq!(
            round_trip_response(DirectResponse::Reply(vec![0; MAX_DIRECT_BYTES + 1])).unwrap(),
            DirectResponse::Declined
        );
        // Receiving: a header claiming more than the cap is refused before allocation.
        let mut header = vec![REQ_DATA];
        header.extend_from_slice(&(MAX_DIRECT_BYTES as u32 + 1).to_be_bytes());
        let err = block_on(codec.read_request(&PROTOCOL, &mut futures::io::Cursor::new(&header)))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let huge = [RES_REPLY, 0xff, 0xff, 0xff, 0xff];
        assert!(
            block_on(codec.read_response(&PROTOCOL, &mut futures::io::Cursor::new(&huge[..])))
                .is_err()
        );
        // Unknown tags are refused.
        let junk = [0x55, 0, 0, 0, 0];
        assert!(
            block_on(codec.read_request(&PROTOCOL, &mut futures::io::Cursor::new(&junk[..])))
                .is_err()
        );
    }
}
