//! Fabric admission: only enrolled devices and coordinators take part.
//!
//! Every peer holds a membership certificate (`floe_wire::proto::membership`): its own public
//! key and role, signed by the coordinator key, with an expiry. When a connection is
//! established, each side sends the other a [`Hello`] on `/floe/admit/1` carrying its
//! certificate, and checks the one it receives against the trust store's coordinator key, the
//! connection's authenticated peer key and the clock. Until both checks passed, the
//! connection's Floe protocols stay shut ([`crate::gate`]); a peer that shows no valid
//! certificate, or none within [`Admission::timeout`], is disconnected, counted
//! ([`crate::node::FabricStats`]) and logged.
//!
//! Where certificates come from: a coordinator has an [`Issuer`]. A device without a valid
//! certificate (a new one, or one offline past its expiry) sends its newest signed status
//! report with its Hello instead; a coordinator hands it to the issuer, which takes it like
//! any report (enrollment token or allowlist, the device id the hex of the key that signed it
//! and of the connection's peer key) and answers with a fresh certificate in the [`Welcome`].
//! The channel is authenticated both ways: the connection by the peer keys (noise), the
//! report by the device key, the certificate by the coordinator key. A device renews its
//! certificate the same way with a coordinator once half its life has passed; other devices
//! never issue.
//!
//! Nothing here lists the fleet: a peer holds its own certificate and the coordinator's public
//! key, whatever the number of devices.

use crate::wire::{read_frame, write_frame};
use floe_wire::proto::membership::Membership;
use floe_wire::proto::{ByteBuf, TrustedKey, cbor};
use futures::{AsyncRead, AsyncWrite};
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The protocol name; the trailing number is the wire version.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/floe/admit/1");
/// The schema of [`Hello`] and [`Welcome`].
pub const ADMIT_SCHEMA: u32 = 1;
/// Largest Hello or Welcome (a certificate and a signed report of at most 16 KiB).
pub const MAX_ADMIT_BYTES: usize = 24 * 1024;
/// Longest refusal reason sent to a peer.
pub const MAX_REASON: usize = 200;
/// Most issuer calls in flight at once; a Hello beyond them is refused as busy.
pub const MAX_ISSUING: usize = 16;
/// How long one admission exchange may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a peer sends when a connection is established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Always [`ADMIT_SCHEMA`].
    pub schema: u32,
    /// Its membership certificate, if it has one.
    pub cert: Option<ByteBuf>,
    /// Its newest signed status report, when it asks a coordinator for a certificate.
    pub report: Option<ByteBuf>,
}

/// The answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// Always [`ADMIT_SCHEMA`].
    pub schema: u32,
    /// Whether the sender is admitted.
    pub admitted: bool,
    /// A fresh certificate for the sender of the Hello (from a coordinator).
    pub cert: Option<ByteBuf>,
    /// Why not, for a person (at most [`MAX_REASON`] bytes).
    pub reason: String,
}

impl Welcome {
    /// A refusal saying why (cut to [`MAX_REASON`] bytes).
    pub fn refused(reason: &str) -> Self {
        let mut reason = reason.to_string();
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self {
            schema: ADMIT_SCHEMA,
            admitted: false,
            cert: None,
            reason,
        }
    }

    /// An admission, with a fresh certificate or none.
    pub fn admitted(cert: Option<Vec<u8>>) -> Self {
        Self {
            schema: ADMIT_SCHEMA,
            admitted: true,
            cert: cert.map(ByteBuf),
            reason: String::new(),
        }
    }
}

/// What the issuer is asked.
#[derive(Debug, Clone)]
pub enum IssueRequest {
    /// A certificate for this node itself (a coordinator renewing its own).
    Own {
        /// Our public key.
        public_key: [u8; 32],
    },
    /// Whether `peer` is admitted, and a fresh certificate for it when it needs one.
    Peer {
        /// The connection's authenticated peer.
        peer: PeerId,
        /// Its public key (its peer id's).
        public_key: [u8; 32],
        /// The certificate it showed, already checked (None: none, or not valid).
        presented: Option<Membership>,
        /// The signed report it sent, not checked yet.
        report: Option<Vec<u8>>,
    },
}

/// A coordinator's answer to admissions: `Ok(Some(cert))` admits with a fresh certificate
/// for the asker, `Ok(None)` admits on the certificate it showed (refused if it showed none),
/// `Err(reason)` refuses. It runs on the blocking pool, never on the swarm task.
pub type Issuer = Arc<dyn Fn(IssueRequest) -> Result<Option<Vec<u8>>, String> + Send + Sync>;
/// The newest signed status report of this device, for a Hello that asks for a certificate.
pub type ReportSource = Arc<dyn Fn() -> Option<Vec<u8>> + Send + Sync>;
/// Called with each new certificate of ours (a device stores it). Runs on the swarm task:
/// it must not block (spawn the write).
pub type CertificateSink = Arc<dyn Fn(Vec<u8>) + Send + Sync>;

/// How this node takes part in admission.
#[derive(Clone)]
pub struct Admission {
    /// The key every membership certificate must be signed by: the trust store's
    /// coordinator key.
    pub coordinator_key: TrustedKey,
    /// Our certificate at start (a device's stored one), if any; checked before use.
    pub certificate: Option<Vec<u8>>,
    /// A coordinator's issuer; None on devices.
    pub issuer: Option<Issuer>,
    /// A device's newest signed report, sent when it has no valid certificate or renews it.
    pub report: Option<ReportSource>,
    /// Where new certificates of ours go.
    pub on_certificate: Option<CertificateSink>,
    /// How long a connection may stay unadmitted before it is closed.
    pub timeout: Duration,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("coordinator_key", &self.coordinator_key.id)
            .field("certificate", &self.certificate.is_some())
            .field("issuer", &self.issuer.is_some())
            .field("report", &self.report.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Admission {
    /// Admission checking certificates against `coordinator_key`, with nothing else set and
    /// a 10 s timeout.
    pub fn new(coordinator_key: TrustedKey) -> Self {
        Self {
            coordinator_key,
            certificate: None,
            issuer: None,
            report: None,
            on_certificate: None,
            timeout: Duration::from_secs(10),
        }
    }
}

const REQ_HELLO: u8 = 1;
const RES_WELCOME: u8 = 0x81;

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The codec of `/floe/admit/1`: one framed CBOR [`Hello`] each way and one [`Welcome`] back,
/// each capped at [`MAX_ADMIT_BYTES`] before it is read, and decoded canonically.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitCodec;

#[async_trait::async_trait]
impl libp2p::request_response::Codec for AdmitCodec {
    type Protocol = StreamProtocol;
    type Request = Hello;
    type Response = Welcome;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Hello>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, MAX_ADMIT_BYTES as u32).await? {
            (REQ_HELLO, payload) => cbor::decode_canonical(&payload, MAX_ADMIT_BYTES)
                .map_err(|_| invalid("the hello does not decode")),
            _ => Err(invalid("unknown admission request")),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Welcome>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, MAX_ADMIT_BYTES as u32).await? {
            (RES_WELCOME, payload) => cbor::decode_canonical(&payload, MAX_ADMIT_BYTES)
                .map_err(|_| invalid("the welcome does not decode")),
            _ => Err(invalid("unknown admission response")),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Hello,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = cbor::encode(&req).map_err(|_| invalid("the hello does not encode"))?;
        if bytes.len() > MAX_ADMIT_BYTES {
            return Err(invalid("hello too long"));
        }
        write_frame(io, REQ_HELLO, &bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Welcome,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = cbor::encode(&res).map_err(|_| invalid("the welcome does not encode"))?;
        if bytes.len() > MAX_ADMIT_BYTES {
            return Err(invalid("welcome too long"));
        }
        write_frame(io, RES_WELCOME, &bytes).await
    }
}
