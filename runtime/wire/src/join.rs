//! The join document: everything a fresh device needs to become part of a fleet, in one
//! copy-pasteable string (`floe enroll-token create --join` writes it, `floed join` reads it).
//!
//! It carries the coordinator's REST addresses (where the device sends its first, enrolling
//! report), the coordinator's fabric addresses with their peer ids (the device's bootstrap
//! peers), the trust store file exactly as the coordinator holds it (the keys whose signatures
//! the device will accept), a one-time enrollment token and the token's expiry. It carries no
//! long-lived secret: the token is spent by the first report, and fabric credentials, if a
//! fleet uses them, reach the device later over an authenticated channel.
//!
//! When the coordinator serves its REST API over TLS the document also carries the pin of its
//! certificate (`tls_pin`: the SHA-256 of the leaf certificate's DER, the fingerprint `floe
//! serve` prints and the CLI's `--pin` takes), and every coordinator address is `https://`:
//! `floed join` then accepts exactly that certificate. The field is optional and left out when
//! absent, so documents without it keep their encoding and older strings still parse.
//!
//! The text form is `floe-join:1:` followed by the base64url (no padding) of the canonical CBOR
//! of [`JoinDoc`]. The version is in the prefix as well as in the document, so an older `floed`
//! says "version 2 is not supported" instead of a decoding error. Decoding caps the text before
//! anything is allocated, pre-scans the CBOR, requires the canonical form, checks every field
//! and the expiry against the caller's clock, and names the field at fault.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::proto::cbor::{self, CborError};
use crate::proto::{ByteBuf, Envelope, Fixed, SignedError, TrustStore};

/// The prefix of a join string, before its version.
pub const JOIN_PREFIX: &str = "floe-join:";
/// The version of the join document this crate writes and reads.
pub const JOIN_VERSION: u32 = 1;
/// The longest join string accepted (64 KiB of text; a typical one is under 1 KiB).
pub const MAX_JOIN_TEXT: usize = 64 * 1024;
/// Most coordinator REST addresses, and most fabric addresses, one document lists.
pub const MAX_ADDRS: usize = 16;
/// The longest address (URL or multiaddress) accepted.
pub const MAX_ADDR_LEN: usize = 512;
/// The longest enrollment token accepted (the device's config refuses longer ones too).
pub const MAX_TOKEN_LEN: usize = 128;

/// Why a join string was refused.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The text does not start with `floe-join:`.
    #[error("not a join string: it must start with `{JOIN_PREFIX}`")]
    Prefix,
    /// The text is longer than [`MAX_JOIN_TEXT`].
    #[error("the join string is {found} bytes, more than the {MAX_JOIN_TEXT} allowed")]
    TooLong {
        /// Its length.
        found: usize,
    },
    /// The version after the prefix is not one this build reads.
    #[error(
        "join string version {found:?} is not supported (this floed reads version {JOIN_VERSION})"
    )]
    Version {
        /// What the string says.
        found: String,
    },
    /// The payload is not base64url.
    #[error("the join string is damaged (not base64url): {0}")]
    Base64(#[source] base64::DecodeError),
    /// The payload is not a canonical join document.
    #[error("the join string is damaged (not a join document): {0}")]
    Decode(#[source] CborError),
    /// Encoding failed (only for values that cannot be CBOR at all).
    #[error("encoding the join document: {0}")]
    Encode(#[source] CborError),
    /// The embedded trust store does not parse or is not valid.
    #[error("the join string's trust store is invalid: {0}")]
    Trust(#[source] SignedError),
    /// A field has a value that is not acceptable.
    #[error("join document field `{field}`: {message}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The token expired before the document was used.
    #[error(
        "the join string expired {ago_s} s ago (its one-time token too); create a new one with `floe enroll-token create --join`"
    )]
    Expired {
        /// How long ago, in seconds.
        ago_s: u64,
    },
}

/// What a device needs to join a fleet. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinDoc {
    /// Always [`JOIN_VERSION`].
    pub version: u32,
    /// The coordinator's REST base URLs (`http://host:port`), tried in order.
    pub coordinators: Vec<String>,
    /// The coordinator's fabric multiaddresses, each ending in `/p2p/<peer id>`.
    pub fabric: Vec<String>,
    /// The trust store file (`trust.cbor`: an envelope holding a [`TrustStore`]) byte for byte.
    pub trust: ByteBuf,
    /// The one-time enrollment token.
    pub token: String,
    /// When the token expires, in Unix milliseconds.
    pub expires_at_ms: u64,
    /// The SHA-256 of the coordinator's TLS leaf certificate (DER), when it serves https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_pin: Option<Fixed<32>>,
}

impl JoinDoc {
    /// The join string: `floe-join:1:` and the base64url of the document's CBOR. The document
    /// is checked first, so a string this writes is one [`JoinDoc::decode`] accepts until it
    /// expires.
    pub fn encode(&self) -> Result<String, JoinError> {
        self.check()?;
        let bytes = cbor::encode(self).map_err(JoinError::Encode)?;
        let text = format!(
            "{JOIN_PREFIX}{JOIN_VERSION}:{}",
            URL_SAFE_NO_PAD.encode(bytes)
        );
        if text.len() > MAX_JOIN_TEXT {
            return Err(JoinError::TooLong { found: text.len() });
        }
        Ok(text)
    }

    /// Reads a join string (surrounding whitespace ignored) and checks it, including that it
    /// has not expired at `now_ms`.
    pub fn decode(text: &str, now_ms: u64) -> Result<JoinDoc, JoinError> {
        if text.len() > MAX_JOIN_TEXT {
            return Err(JoinError::TooLong { found: text.len() });
        }
        let text = text.trim();
        let rest = text.strip_prefix(JOIN_PREFIX).ok_or(JoinError::Prefix)?;
        let (version, payload) = rest.split_once(':').ok_or_else(|| JoinError::Version {
            found: rest.chars().take(8).collect(),
        })?;
        if version != JOIN_VERSION.to_string() {
            return Err(JoinError::Version {
                found: version.chars().take(8).collect(),
            });
        }
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(JoinError::Base64)?;
        let doc: JoinDoc =
            cbor::decode_canonical(&bytes, MAX_JOIN_TEXT).map_err(JoinError::Decode)?;
        doc.check()?;
        if doc.expires_at_ms <= now_ms {
            return Err(JoinError::Expired {
                ago_s: (now_ms - doc.expires_at_ms) / 1000,
            });
        }
        Ok(doc)
    }

    /// The trust store the document carries (checked).
    pub fn trust_store(&self) -> Result<TrustStore, JoinError> {
        trust_from_file_bytes(&self.trust.0)
    }

    /// The pin as `floe serve` prints it (`sha256:` and 64 hex digits), if there is one.
    pub fn tls_pin_text(&self) -> Option<String> {
        self.tls_pin.map(|p| format!("sha256:{}", hex::encode(p.0)))
    }

    /// The peer ids named by the fabric addresses (the text after `/p2p/`), in order.
    pub fn fabric_peers(&self) -> Vec<&str> {
        self.fabric.iter().filter_map(|a| peer_of(a)).collect()
    }

    /// Checks every field except the expiry.
    fn check(&self) -> Result<(), JoinError> {
        let field = |field, message: String| JoinError::Field { field, message };
        if self.version != JOIN_VERSION {
            return Err(JoinError::Version {
                found: self.version.to_string(),
            });
        }
        if self.coordinators.is_empty() || self.coordinators.len() > MAX_ADDRS {
            return Err(field(
                "coordinators",
                format!(
                    "must list 1 to {MAX_ADDRS} REST addresses, found {}",
                    self.coordinators.len()
                ),
            ));
        }
        for (i, url) in self.coordinators.iter().enumerate() {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            let ok = url.len() <= MAX_ADDR_LEN
                && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
                && !url.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(field(
                    "coordinators",
                    format!(
                        "entry {i} `{}` is not an http(s)://host:port URL",
                        short(url)
                    ),
                ));
            }
        }
        if self.tls_pin.is_some()
            && let Some(i) = self
                .coordinators
                .iter()
                .position(|u| !u.starts_with("https://"))
        {
            return Err(field(
                "coordinators",
                format!(
                    "entry {i} `{}` is not https:// although the document pins the coordinator's certificate",
                    short(&self.coordinators[i])
                ),
            ));
        }
        if self.fabric.is_empty() || self.fabric.len() > MAX_ADDRS {
            return Err(field(
                "fabric",
                format!(
                    "must list 1 to {MAX_ADDRS} fabric addresses, found {}",
                    self.fabric.len()
                ),
            ));
        }
        for (i, addr) in self.fabric.iter().enumerate() {
            let ok = addr.len() <= MAX_ADDR_LEN
                && addr.starts_with('/')
                && peer_of(addr).is_some()
                && !addr.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(field(
                    "fabric",
                    format!(
                        "entry {i} `{}` is not a multiaddress ending in /p2p/<peer id>",
                        short(addr)
                    ),
                ));
            }
        }
        if self.token.is_empty()
            || self.token.len() > MAX_TOKEN_LEN
            || self
                .token
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(field(
                "token",
                format!("must be 1 to {MAX_TOKEN_LEN} characters without spaces"),
            ));
        }
        self.trust_store()?;
        Ok(())
    }
}

/// The peer id at the end of a multiaddress (`…/p2p/<id>`), if it ends in one.
fn peer_of(addr: &str) -> Option<&str> {
    let (_, id) = addr.rsplit_once("/p2p/")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(id)
}

/// The first 64 characters of `s`, for error messages about untrusted text.
fn short(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Parses the bytes of a trust store file (an envelope holding a [`TrustStore`]) and checks
/// the store, as [`crate::artifact::keys::load_trust`] does for a file on disk.
pub fn trust_from_file_bytes(bytes: &[u8]) -> Result<TrustStore, JoinError> {
    let envelope = Envelope::from_bytes::<TrustStore>(bytes).map_err(JoinError::Trust)?;
    let store: TrustStore = cbor::decode_canonical(
        &envelope.payload.0,
        <TrustStore as crate::proto::Payload>::MAX_BYTES,
    )
    .map_err(|e| JoinError::Trust(SignedError::Decode(e)))?;
    crate::proto::Payload::check(&store).map_err(|m| JoinError::Trust(SignedError::Check(m)))?;
    Ok(store)
}

/// Whether two trust stores belong to the same fleet: they share at least one key (a release
/// key or the coordinator key). A signed rotation keeps a key in common with its predecessor
/// unless every key was replaced at once, so a rotated fleet is still recognised.
pub fn same_fleet(a: &TrustStore, b: &TrustStore) -> bool {
    let keys = |t: &TrustStore| {
        let mut k: Vec<[u8; 32]> = t.release_keys.iter().map(|k| k.public.0).collect();
        k.push(t.coordinator_key.public.0);
        k
    };
    let theirs = keys(b);
    keys(a).iter().any(|k| theirs.contains(k))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::proto::TrustedKey;

    fn trust(seed: u8) -> (TrustStore, Vec<u8>) {
        let release = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let coord = ed25519_dalek::SigningKey::from_bytes(&[seed.wrapping_add(1); 32]);
        let store = TrustStore::new(
            vec![TrustedKey::new(Fixed(release.verifying_key().to_bytes()))],
            TrustedKey::new(Fixed(coord.verifying_key().to_bytes())),
        );
        let bytes = Envelope::sign(&store, &[]).unwrap().to_bytes().unwrap();
        (store, bytes)
    }

    const PEER: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    fn doc() -> JoinDoc {
        JoinDoc {
            version: JOIN_VERSION,
            coordinators: vec!["http://10.0.0.2:7300".into()],
            fabric: vec![format!("/ip4/10.0.0.2/tcp/7301/p2p/{PEER}")],
            trust: ByteBuf(trust(7).1),
            token: "c0ffee".into(),
            expires_at_ms: 2_000_000,
            tls_pin: None,
        }
    }

    #[test]
    fn a_join_string_round_trips_and_is_compact() {
        let d = doc();
        let text = d.encode().unwrap();
        assert!(text.starts_with("floe-join:1:"), "{text}");
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:".contains(&b)),
            "copy-pasteable: {text}"
        );
        assert!(text.len() < 1024, "{} bytes", text.len());
        let back = JoinDoc::decode(&format!("  {text}\n"), 1_000_000).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.trust_store().unwrap(), trust(7).0);
        assert_eq!(back.fabric_peers(), vec![PEER]);
    }

    #[test]
    fn expired_damaged_and_foreign_strings_are_named() {
        let text = doc().encode().unwrap();
        let err = JoinDoc::decode(&text, 2_000_000 + 61_000).unwrap_err();
        assert!(matches!(err, JoinError::Expired { ago_s: 61 }), "{err}");
        assert!(err.to_string().contains("expired"), "{err}");

        let err = JoinDoc::decode("hello", 0).unwrap_err();
        assert!(matches!(err, JoinError::Prefix), "{err}");
        let err = JoinDoc::decode(&text.replace("floe-join:1:", "floe-join:2:"), 0).unwrap_err();
        assert!(err.to_string().contains("version \"2\""), "{err}");
        let err = JoinDoc::decode("floe-join:1:***", 0).unwrap_err();
        assert!(matches!(err, JoinError::Base64(_)), "{err}");
        // A truncated copy (the usual paste accident) is damaged, not a panic.
        let cut = &text[..text.len() - 10];
        let err = JoinDoc::decode(cut, 0).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        let huge = "a".repeat(MAX_JOIN_TEXT + 1);
        assert!(matches!(
            JoinDoc::decode(&huge, 0).unwrap_err(),
            JoinError::TooLong { .. }
        ));
    }

    #[test]
    fn bad_fields_are_refused_on_both_sides_naming_the_field() {
        type Mutation = fn(&mut JoinDoc);
        let cases: Vec<(&str, Mutation)> = vec![
            ("coordinators", |d| d.coordinators.clear()),
            ("coordinators", |d| d.coordinators = vec!["ftp://x".into()]),
            ("fabric", |d| d.fabric = vec!["/ip4/1.2.3.4/tcp/1".into()]),
            ("fabric", |d| d.fabric = vec![String::new(); 17]),
            ("token", |d| d.token = "a b".into()),
            ("token", |d| d.token = "x".repeat(129)),
        ];
        for (field, mutate) in cases {
            let mut d = doc();
            mutate(&mut d);
            let err = d.encode().unwrap_err();
            assert!(
                matches!(&err, JoinError::Field { field: f, .. } if *f == field),
                "{field}: {err}"
            );
            // The same document smuggled past `encode` is refused by `decode`.
            let raw = format!(
                "floe-join:1:{}",
                URL_SAFE_NO_PAD.encode(cbor::encode(&d).unwrap())
            );
            let err = JoinDoc::decode(&raw, 0).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
        let mut d = doc();
        d.trust = ByteBuf(b"not a trust store".to_vec());
        assert!(matches!(d.encode().unwrap_err(), JoinError::Trust(_)));
    }

    #[test]
    fn a_pinned_document_round_trips_needs_https_and_an_unpinned_one_keeps_its_bytes() {
        // The encoding of a document without a pin is what it was before the field existed:
        // the same six keys, so strings made by an older `floe` still decode.
        let plain = cbor::encode(&doc()).unwrap();
        let value: ciborium::Value = ciborium::de::from_reader(plain.as_slice()).unwrap();
        assert_eq!(value.as_map().unwrap().len(), 6, "{value:?}");
        let mut d = doc();
        d.coordinators = vec!["https://10.0.0.2:7300".into()];
        d.tls_pin = Some(Fixed([0xab; 32]));
        let text = d.encode().unwrap();
        let back = JoinDoc::decode(&text, 1_000_000).unwrap();
        assert_eq!(back, d);
        assert_eq!(
            back.tls_pin_text().unwrap(),
            format!("sha256:{}", "ab".repeat(32))
        );
        // A pin with a plain-http address would be a downgrade: refused on both sides.
        d.coordinators.push("http://10.0.0.3:7300".into());
        let err = d.encode().unwrap_err();
        assert!(
            matches!(
                &err,
                JoinError::Field {
                    field: "coordinators",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("entry 1"), "{err}");
        let raw = format!(
            "floe-join:1:{}",
            URL_SAFE_NO_PAD.encode(cbor::encode(&d).unwrap())
        );
        assert!(JoinDoc::decode(&raw, 0).is_err());
    }

    #[test]
    fn fleets_are_told_apart_by_their_keys() {
        let (a, _) = trust(1);
        let (b, _) = trust(50);
        assert!(same_fleet(&a, &a));
        assert!(!same_fleet(&a, &b));
        // A store that kept the coordinator key but rotated the release key is the same fleet.
        let mut rotated = b.clone();
        rotated.coordinator_key = a.coordinator_key.clone();
        assert!(same_fleet(&a, &rotated));
    }
}
