//! Fault injection for the end-to-end abuse tests and the benchmark: ways for a node to
//! misbehave on purpose, and the raw gossipsub writer the IWANT flood needs.
//!
//! Why it is a module of its own behind the `fault-injection` feature: an honest node must not
//! be able to do any of this, so release builds of `floed` do not even contain it. The tests
//! build `floed` with the feature and drive it through `floed fabric`'s hidden flags and its
//! `flood` command; `flood.rs` carries the floods out on the swarm.

use libp2p::request_response;

/// Fault injection for the end-to-end tests: ways for a node to misbehave on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Publish undecodable messages on the announce topic.
    GarbageGossip,
    /// Publish messages larger than every honest node's gossip limit.
    OversizedGossip,
    /// Subscribe to many topics nobody uses.
    Subscriptions,
    /// Ask every peer for chunks that do not exist.
    UnknownChunks,
    /// Send every peer gossipsub IWANT requests for message ids it never had: `count` RPCs of
    /// [`IWANT_IDS_PER_RPC`] ids each (at most [`MAX_IWANT_RPCS`]), back to back on one raw
    /// `/meshsub/1.1.0` stream per peer. (Gossipsub keeps one inbound stream per connection and
    /// drops the previous one for a new one, so one stream carries the whole flood.)
    Iwant,
}

/// Message ids in one fault-injection IWANT RPC (it stays under the gossip size limit).
pub const IWANT_IDS_PER_RPC: usize = 400;
/// Most IWANT RPCs one flood sends to one peer (about 14 KiB each).
pub const MAX_IWANT_RPCS: u32 = 2000;

/// Encodes one gossipsub RPC holding one IWANT control message for `ids`, framed as gossipsub
/// frames it (an unsigned-varint length, then the protobuf bytes). Fault injection only.
pub(super) fn iwant_rpc(ids: &[[u8; 32]]) -> Vec<u8> {
    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    fn field(tag: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        varint(body.len(), out);
        out.extend_from_slice(body);
    }
    let mut iwant = Vec::with_capacity(ids.len() * 34);
    for id in ids {
        // ControlIWant.message_ids = 1 (bytes).
        field(0x0a, id, &mut iwant);
    }
    let mut control = Vec::new();
    // ControlMessage.iwant = 2.
    field(0x12, &iwant, &mut control);
    let mut rpc = Vec::new();
    // RPC.control = 3.
    field(0x1a, &control, &mut rpc);
    let mut framed = Vec::with_capacity(rpc.len() + 4);
    varint(rpc.len(), &mut framed);
    framed.extend_from_slice(&rpc);
    framed
}

/// Fault injection only: writes raw bytes on an outbound gossipsub stream and expects no
/// answer. Honest nodes never enable it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RawRpcCodec;

#[async_trait::async_trait]
impl request_response::Codec for RawRpcCodec {
    type Protocol = libp2p::StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &Self::Protocol, _: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Err(std::io::Error::other("outbound only"))
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> std::io::Result<()>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        use futures::AsyncReadExt;
        let mut one = [0u8; 1];
        let _ = io.read(&mut one).await?;
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        use futures::AsyncWriteExt;
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        _: &mut T,
        _: (),
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        Ok(())
    }
}
