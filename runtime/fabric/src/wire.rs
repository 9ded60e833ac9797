//! The chunk exchange protocol, `/floe/chunk/2`: one request and one response per stream.
//!
//! A chunk response also carries the server's chunk map of that artifact, so a downloader
//! learns what its busiest sources hold without asking (version 1 had to poll every source
//! with `Have` requests, a stream each, several times a second).
//!
//! Framing is a one-byte tag, a 4-byte big-endian length and the payload. Lengths are checked
//! against per-message caps *before* any payload is read, so a peer cannot make us allocate more
//! than [`MAX_RESPONSE`] bytes for one response or [`MAX_REQUEST`] for one request. The codec is
//! hand-written rather than CBOR so a 1 MiB chunk travels as 1 MiB, not as an array of integers.

use super::index::{ArtifactId, ChunkHash, MAX_CHUNK_LEN, MAX_CHUNKS};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use std::io;

/// The protocol name; the trailing number is the wire version.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/floe/chunk/2");
/// Largest request payload (a tag-specific fixed size; 64 bytes covers all).
pub const MAX_REQUEST: u32 = 64;
/// Largest chunk map: one bit per chunk.
pub const MAX_HAVE: u32 = MAX_CHUNKS.div_ceil(8);
/// Largest response payload: one chunk of the largest size with its chunk map, or the largest
/// index.
pub const MAX_RESPONSE: u32 = {
    let idx = 24 + 32 * MAX_CHUNKS;
    let chunk = MAX_CHUNK_LEN + 4 + MAX_HAVE;
    if chunk > idx { chunk } else { idx }
};

/// A request to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Send me the index of this artifact.
    Index(ArtifactId),
    /// Which chunks of this artifact do you hold (and will serve)?
    Have(ArtifactId),
    /// Send me this chunk of this artifact.
    Chunk(ArtifactId, ChunkHash),
}

/// A response from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The index's canonical bytes (checked against the id by the requester).
    Index(Vec<u8>),
    /// A bitfield, bit `i` (MSB first) set when chunk `i` is held.
    Have(Vec<u8>),
    /// The chunk's bytes (verified by the requester), and the server's chunk map of the
    /// artifact (as in [`Response::Have`]) when it sent them.
    Chunk {
        /// The chunk.
        bytes: Vec<u8>,
        /// The server's chunk map; empty when it has none to give.
        have: Vec<u8>,
    },
    /// Not held, or not served in this mode.
    NotFound,
    /// All upload slots are in use; ask someone else or later.
    Busy,
}

const REQ_INDEX: u8 = 1;
const REQ_HAVE: u8 = 2;
const REQ_CHUNK: u8 = 3;
const RES_INDEX: u8 = 0x81;
const RES_HAVE: u8 = 0x82;
const RES_CHUNK: u8 = 0x83;
const RES_NOT_FOUND: u8 = 0x84;
const RES_BUSY: u8 = 0x85;

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

pub(crate) async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    cap: u32,
) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    io.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > cap {
        return Err(invalid("frame longer than the protocol allows"));
    }
    let mut payload = vec![0u8; len as usize];
    io.read_exact(&mut payload).await?;
    Ok((head[0], payload))
}

pub(crate) async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    tag: u8,
    payload: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| invalid("payload too long"))?;
    io.write_all(&[tag]).await?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(payload).await?;
    io.close().await
}

fn hash32(bytes: &[u8]) -> io::Result<[u8; 32]> {
    bytes.try_into().map_err(|_| invalid("expected 32 bytes"))
}

/// Decodes a request payload.
pub fn decode_request(tag: u8, payload: &[u8]) -> io::Result<Request> {
    match tag {
        REQ_INDEX => Ok(Request::Index(hash32(payload)?)),
        REQ_HAVE => Ok(Request::Have(hash32(payload)?)),
        REQ_CHUNK if payload.len() == 64 => Ok(Request::Chunk(
            hash32(&payload[..32])?,
            hash32(&payload[32..])?,
        )),
        _ => Err(invalid("unknown request")),
    }
}

/// The codec plugged into `request_response::Behaviour`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkCodec;

#[async_trait::async_trait]
impl libp2p::request_response::Codec for ChunkCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let (tag, payload) = read_frame(io, MAX_REQUEST).await?;
        decode_request(tag, &payload)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let (tag, payload) = read_frame(io, MAX_RESPONSE).await?;
        match tag {
            RES_INDEX => Ok(Response::Index(payload)),
            RES_HAVE if payload.len() <= (MAX_CHUNKS as usize).div_ceil(8) => {
                Ok(Response::Have(payload))
            }
            RES_CHUNK => decode_chunk(payload),
            RES_NOT_FOUND if payload.is_empty() => Ok(Response::NotFound),
            RES_BUSY if payload.is_empty() => Ok(Response::Busy),
            _ => Err(invalid("unknown or oversized response")),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Request::Index(id) => write_frame(io, REQ_INDEX, &id).await,
            Request::Have(id) => write_frame(io, REQ_HAVE, &id).await,
            Request::Chunk(id, hash) => {
                let mut payload = [0u8; 64];
                payload[..32].copy_from_slice(&id);
                payload[32..].copy_from_slice(&hash);
                write_frame(io, REQ_CHUNK, &payload).await
            }
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match res {
            Response::Index(b) => write_frame(io, RES_INDEX, &b).await,
            Response::Have(b) => write_frame(io, RES_HAVE, &b).await,
            Response::Chunk { bytes, have } => write_chunk(io, &bytes, &have).await,
            Response::NotFound => write_frame(io, RES_NOT_FOUND, &[]).await,
            Response::Busy => write_frame(io, RES_BUSY, &[]).await,
        }
    }
}

/// Writes a chunk response: the chunk, then the server's chunk map, then the map's length as a
/// 4-byte trailer, so the reader can cut the map off the end without moving the chunk.
async fn write_chunk<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
    have: &[u8],
) -> io::Result<()> {
    let map_len = u32::try_from(have.len())
        .ok()
        .filter(|l| *l <= MAX_HAVE)
        .ok_or_else(|| invalid("chunk map too long"))?;
    let len =
        u32::try_from(bytes.len() + have.len() + 4).map_err(|_| invalid("payload too long"))?;
    io.write_all(&[RES_CHUNK]).await?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.write_all(have).await?;
    io.write_all(&map_len.to_be_bytes()).await?;
    io.close().await
}

/// Splits a chunk response's payload: the chunk, the map, and the map's 4-byte length.
fn decode_chunk(mut payload: Vec<u8>) -> io::Result<Response> {
    let n = payload.len();
    let tail: [u8; 4] = n
        .checked_sub(4)
        .and_then(|at| payload.get(at..))
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| invalid("chunk response without its map length"))?;
    let map_len = u32::from_be_bytes(tail);
    if map_len > MAX_HAVE || 4 + map_len as usize > n {
        return Err(invalid("chunk map longer than the protocol allows"));
    }
    let chunk_len = n - 4 - map_len as usize;
    if chunk_len > MAX_CHUNK_LEN as usize {
        return Err(invalid("chunk longer than the protocol allows"));
    }
    let have = payload[chunk_len..n - 4].to_vec();
    payload.truncate(chunk_len);
    Ok(Response::Chunk {
        bytes: payload,
        have,
    })
}

/// Packs a held-chunk vector into a bitfield (MSB first).
pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, b) in bits.iter().enumerate() {
        if *b {
            out[i / 8] |= 0x80 >> (i % 8);
        }
    }
    out
}

/// Unpacks a bitfield for `n` chunks; `None` if its length is wrong.
pub fn unpack_bits(bytes: &[u8], n: usize) -> Option<Vec<bool>> {
    if bytes.len() != n.div_ceil(8) {
        return None;
    }
    Some(
        (0..n)
            .map(|i| bytes[i / 8] & (0x80 >> (i % 8)) != 0)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let mut codec = ChunkCodec;
        for req in [
            Request::Index([1; 32]),
            Request::Have([2; 32]),
            Request::Chunk([3; 32], [4; 32]),
        ] {
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
            Response::Chunk {
                bytes: vec![9; 1000],
                have: vec![0b1010_0000],
            },
            Response::Chunk {
                bytes: vec![7; 10],
                have: Vec::new(),
            },
            Response::Have(vec![0xff]),
            Response::NotFound,
            Response::Busy,
        ] {
            let mut buf = Vec::new();
            block_on(codec.write_response(
                &PROTOCOL,
                &mut futures::io::Cursor::new(&mut buf),
                res.clone(),
            ))
            .unwrap();
            let back =
                block_on(codec.read_response(&PROTOCOL, &mut futures::io::Cursor::new(&buf)))
                    .unwrap();
            assert_eq!(back, res);
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_allocation() {
        let mut codec = ChunkCodec;
        // A response header claiming 4 GiB with no payload behind it.
        let buf = [RES_CHUNK, 0xff, 0xff, 0xff, 0xff];
        let err = block_on(codec.read_response(&PROTOCOL, &mut futures::io::Cursor::new(&buf[..])))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let buf = [REQ_CHUNK, 0, 0, 1, 0];
        assert!(
            block_on(codec.read_request(&PROTOCOL, &mut futures::io::Cursor::new(&buf[..])))
                .is_err()
        );
        assert!(decode_request(REQ_CHUNK, &[0; 63]).is_err());
        // A chunk response whose map length points past its payload, or past the largest map.
        let mut bad = vec![RES_CHUNK, 0, 0, 0, 6, 1, 2, 0, 0, 0, 9];
        assert!(
            block_on(codec.read_response(&PROTOCOL, &mut futures::io::Cursor::new(&bad[..])))
                .is_err()
        );
        bad[7..11].copy_from_slice(&(MAX_HAVE + 1).to_be_bytes());
        assert!(
            block_on(codec.read_response(&PROTOCOL, &mut futures::io::Cursor::new(&bad[..])))
                .is_err()
        );
        let short = [RES_CHUNK, 0, 0, 0, 2, 0, 0];
        assert!(
            block_on(codec.read_response(&PROTOCOL, &mut futures::io::Cursor::new(&short[..])))
                .is_err()
        );
    }

    #[test]
    fn bitfields_pack_and_check_length() {
        let bits = vec![true, false, true, true, false, false, false, false, true];
        let packed = pack_bits(&bits);
        assert_eq!(packed, vec![0b1011_0000, 0b1000_0000]);
        assert_eq!(unpack_bits(&packed, 9).unwrap(), bits);
        assert!(unpack_bits(&packed, 17).is_none());
    }
}
