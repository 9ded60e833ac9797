//! `floe enroll-token create --join`: a join string (or file) a device enrolls with in one
//! command, `floed join <string or file>`.
//!
//! The string holds the coordinator's REST address (where the device sends its enrolling
//! report), its fabric addresses with their peer ids (the device's bootstrap peers), the device
//! trust store, a fresh one-time token and its expiry; the format is `floe_wire::join`. The
//! fabric addresses and the trust store come from the coordinator (`GET /join-info`), the REST
//! address is the one this CLI talks to unless `--coordinator-url` names others (the CLI may
//! reach the coordinator on loopback while devices reach it on the LAN).
//!
//! A coordinator serving https gives the pin of its certificate with the join information; the
//! string carries it, and every REST address in it must then be `https://` (an `http://`
//! `--coordinator-url` is refused: the coordinator does not serve plain HTTP, and a device
//! must not be told to try).

use std::path::Path;

use anyhow::{Context, Result, bail};
use floe_coordinator::client::{Client, EnrollToken, JoinInfo};
use floe_wire::join::JoinDoc;
use floe_wire::proto::ByteBuf;

use crate::config::call;

/// What `--join` was asked for.
#[derive(Debug, Default)]
pub(crate) struct JoinOptions {
    /// Write the join string to this file (mode 0600) instead of stdout.
    pub(crate) out: Option<std::path::PathBuf>,
    /// REST addresses devices use; default the CLI's own server.
    pub(crate) coordinator_urls: Vec<String>,
    /// Fabric addresses devices bootstrap to; default the coordinator's own.
    pub(crate) fabric_addrs: Vec<String>,
}

/// Whether a multiaddress or URL names a loopback or unspecified host, which a device on
/// another machine cannot reach.
fn local_only(addr: &str) -> bool {
    let Some(rest) = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
    else {
        return addr.starts_with("/ip4/127.")
            || addr.starts_with("/ip4/0.0.0.0/")
            || addr.starts_with("/ip6/::1/")
            || addr.starts_with("/ip6/::/")
            || addr.starts_with("/dns/localhost/");
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split(['/', ':']).next().unwrap_or(""),
    };
    host == "localhost"
        || host == "::1"
        || host == "::"
        || host == "0.0.0.0"
        || host.starts_with("127.")
}

/// The fabric addresses a join string lists: the coordinator's, without loopback ones when it
/// has others (a device elsewhere cannot dial 127.0.0.1; a test fleet on one host has only
/// loopback ones and keeps them).
fn pick_fabric(all: Vec<String>) -> Vec<String> {
    let reachable: Vec<String> = all.iter().filter(|a| !local_only(a)).cloned().collect();
    if reachable.is_empty() { all } else { reachable }
}

/// Builds the join document from the coordinator's answers.
fn build(
    info: JoinInfo,
    token: EnrollToken,
    client_server: &str,
    opts: &JoinOptions,
) -> Result<JoinDoc> {
    let trust =
        hex::decode(info.trust_store.trim()).context("the coordinator's trust store is not hex")?;
    let fabric = if opts.fabric_addrs.is_empty() {
        pick_fabric(info.fabric)
    } else {
        opts.fabric_addrs.clone()
    };
    let coordinators = if opts.coordinator_urls.is_empty() {
        vec![client_server.to_string()]
    } else {
        opts.coordinator_urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect()
    };
    let tls_pin = match info.tls_pin.as_deref() {
        None => None,
        Some(pin) => {
            let bytes = floe_coordinator::tls::pin::parse_pin(pin)
                .map_err(|e| anyhow::anyhow!("the coordinator's certificate pin: {e}"))?;
            if let Some(plain) = coordinators.iter().find(|u| !u.starts_with("https://")) {
                bail!(
                    "the coordinator serves https only, so devices cannot enroll at {plain}: give --coordinator-url https://<address devices reach>:<port>"
                );
            }
            Some(floe_wire::proto::Fixed(bytes))
        }
    };
    if token.expires_at_ms == 0 {
        bail!("the coordinator did not say when the token expires (an older `floe serve`?)");
    }
    Ok(JoinDoc {
        version: floe_wire::join::JOIN_VERSION,
        coordinators,
        fabric,
        trust: ByteBuf(trust),
        token: token.token,
        expires_at_ms: token.expires_at_ms,
        tls_pin,
    })
}

/// Creates a token and prints or writes the join string.
pub(crate) fn create(c: &Client, ttl: Option<&str>, opts: &JoinOptions) -> Result<()> {
    // Join information first: a coordinator that cannot be joined spends no token.
    let info: JoinInfo = call(c, |c| c.join_info())?.json()?;
    let token: EnrollToken = call(c, |c| c.create_enroll_token(ttl))?.json()?;
    let expires = token.expires_at.clone();
    let doc = build(info, token, c.server(), opts)?;
    let text = doc.encode().context(
        "the join string would not be valid (check --coordinator-url and --fabric-addr)",
    )?;
    if doc.coordinators.iter().all(|u| local_only(u)) && !doc.fabric.iter().all(|a| local_only(a)) {
        eprintln!(
            "warning: the coordinator address {} is reachable from this machine only; pass --coordinator-url {}://<address devices reach>:<port>",
            doc.coordinators.join(", "),
            if doc.tls_pin.is_some() {
                "https"
            } else {
                "http"
            }
        );
    }
    match &opts.out {
        Some(path) => {
            write_private(path, &text)?;
            eprintln!(
                "wrote the join string to {} (one device, expires {expires}); on the device: sudo floed join {}",
                path.display(),
                path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned()
                )
            );
        }
        None => {
            println!("{text}");
            eprintln!(
                "join string for one device, expires {expires}; on the device: sudo floed join '<the string>'"
            );
        }
    }
    Ok(())
}

/// Writes `text` to `path` atomically with mode 0600 (it holds a token).
fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(b'\n');
    floe_wire::fsutil::write_atomic(path, &bytes, 0o600, true)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn loopback_fabric_addresses_are_dropped_only_when_others_exist() {
        let lo = "/ip4/127.0.0.1/tcp/7301/p2p/12D3KooWA".to_string();
        let lan = "/ip4/192.168.1.5/tcp/7301/p2p/12D3KooWA".to_string();
        assert_eq!(pick_fabric(vec![lo.clone(), lan.clone()]), vec![lan]);
        assert_eq!(pick_fabric(vec![lo.clone()]), vec![lo]);
        assert!(local_only("http://127.0.0.1:7300"));
        assert!(local_only("http://localhost:7300"));
        assert!(!local_only("http://10.1.2.3:7300"));
        assert!(local_only("/ip6/::1/tcp/7301/p2p/x"));
        assert!(local_only("http://[::1]:7300"));
        assert!(!local_only("http://[fd00::2]:7300"));
    }

    fn trust_hex() -> String {
        let k = |s: u8| {
            floe_wire::proto::TrustedKey::new(floe_wire::proto::Fixed(
                ed25519_dalek::SigningKey::from_bytes(&[s; 32])
                    .verifying_key()
                    .to_bytes(),
            ))
        };
        let store = floe_wire::proto::TrustStore::new(vec![k(1)], k(2));
        hex::encode(
            floe_wire::proto::Envelope::sign(&store, &[])
                .unwrap()
                .to_bytes()
                .unwrap(),
        )
    }

    fn token() -> EnrollToken {
        EnrollToken {
            token: "t".into(),
            expires_at: String::new(),
            expires_at_ms: u64::MAX,
        }
    }

    #[test]
    fn a_tls_coordinator_gives_https_addresses_and_its_pin() {
        let pin = format!("sha256:{}", "cd".repeat(32));
        let info = JoinInfo {
            fabric: vec!["/ip4/10.0.0.2/tcp/7301/p2p/12D3KooWA".into()],
            trust_store: trust_hex(),
            tls_pin: Some(pin.clone()),
        };
        let doc = build(
            info.clone(),
            token(),
            "https://10.0.0.2:7300",
            &JoinOptions::default(),
        )
        .unwrap();
        assert_eq!(doc.tls_pin, Some(floe_wire::proto::Fixed([0xcd; 32])));
        assert_eq!(doc.tls_pin_text().unwrap(), pin);
        assert_eq!(doc.coordinators, vec!["https://10.0.0.2:7300"]);
        doc.encode().unwrap();
        // An http:// address for devices is refused, naming it.
        let opts = JoinOptions {
            coordinator_urls: vec!["http://10.0.0.2:7300".into()],
            ..JoinOptions::default()
        };
        let err = build(info.clone(), token(), "https://127.0.0.1:7300", &opts).unwrap_err();
        assert!(
            err.to_string().contains("https only") && err.to_string().contains("http://10.0.0.2"),
            "{err}"
        );
        // A plain coordinator's string has no pin.
        let plain = JoinInfo {
            tls_pin: None,
            ..info
        };
        let doc = build(
            plain,
            token(),
            "http://10.0.0.2:7300",
            &JoinOptions::default(),
        )
        .unwrap();
        assert_eq!(doc.tls_pin, None);
    }

    #[test]
    fn a_coordinator_that_does_not_give_the_expiry_is_refused() {
        let err = build(
            JoinInfo::default(),
            EnrollToken {
                token: "t".into(),
                expires_at: String::new(),
                expires_at_ms: 0,
            },
            "http://127.0.0.1:7300",
            &JoinOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("expires"), "{err}");
    }
}
