//! `floe keys …`: release and coordinator key pairs, and device trust stores.

use anyhow::{Context, Result};
use clap::Subcommand;
use floe_wire::artifact::keys;
use floe_wire::proto::{Envelope, KeyId, TrustStore, TrustedKey};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Generate an ed25519 key pair: `DIR/floe.key` (hex seed, mode 0600) and `DIR/floe.pub`
    /// (hex public key). Refuses to overwrite.
    Gen {
        /// The directory to write the key pair into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a device trust store (`DIR/trust.cbor`, version 1) from public keys.
    TrustInit {
        /// A release public key (`.pub` file or key directory); repeat for k-of-n.
        #[arg(long = "release-key", required = true)]
        release_keys: Vec<PathBuf>,
        /// The coordinator's public key (`.pub` file or key directory).
        #[arg(long)]
        coordinator_key: PathBuf,
        /// Distinct release keys that must sign an artifact.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
        /// The trust directory to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the next version of a trust store, signed by the given release keys (which must
    /// meet the threshold of both the current and the new store for devices to accept it).
    TrustRotate {
        /// The current trust directory.
        #[arg(long)]
        current: PathBuf,
        /// The new release public keys.
        #[arg(long = "release-key", required = true)]
        release_keys: Vec<PathBuf>,
        /// The new coordinator public key (default: unchanged).
        #[arg(long)]
        coordinator_key: Option<PathBuf>,
        /// The new threshold.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
        /// Private keys to sign with.
        #[arg(long = "sign-with", required = true)]
        signers: Vec<PathBuf>,
        /// Where to write the signed rotation (a trust store envelope).
        #[arg(long)]
        out: PathBuf,
    },
}

fn trusted(path: &Path) -> Result<TrustedKey> {
    Ok(TrustedKey::new(keys::load_public_key(path).with_context(
        || format!("reading public key {}", path.display()),
    )?))
}

pub(crate) fn run(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Gen { out } => {
            let public = keys::generate(&out).context("generating a key pair")?;
            outln!(
                "wrote {}/{} and {}/{}: key id {}",
                out.display(),
                keys::PRIVATE_KEY_FILE,
                out.display(),
                keys::PUBLIC_KEY_FILE,
                KeyId::of_key(&public)
            );
        }
        KeysCommand::TrustInit {
            release_keys,
            coordinator_key,
            threshold,
            out,
        } => {
            let release_keys = release_keys
                .iter()
                .map(|p| trusted(p))
                .collect::<Result<Vec<_>>>()?;
            let mut store = TrustStore::new(release_keys, trusted(&coordinator_key)?);
            store.threshold = threshold;
            let path = keys::write_trust(&out, &store).context("writing the trust store")?;
            outln!(
                "wrote {}: version 1, {} release key(s), threshold {threshold}",
                path.display(),
                store.release_keys.len()
            );
        }
        KeysCommand::TrustRotate {
            current,
            release_keys,
            coordinator_key,
            threshold,
            signers,
            out,
        } => {
            let current = keys::load_trust(&current).context("loading the current trust store")?;
            let release_keys = release_keys
                .iter()
                .map(|p| trusted(p))
                .collect::<Result<Vec<_>>>()?;
            let coordinator_key = match coordinator_key {
                Some(path) => trusted(&path)?,
                None => current.coordinator_key.clone(),
            };
            let next = TrustStore {
                version: current.version + 1,
                release_keys,
                threshold,
                coordinator_key,
                ..current.clone()
            };
            let signing: Vec<_> = signers
                .iter()
                .map(|p| {
                    keys::load_signing_key(p).with_context(|| format!("reading {}", p.display()))
                })
                .collect::<Result<_>>()?;
            let refs: Vec<_> = signing.iter().collect();
            let envelope = Envelope::sign(&next, &refs).context("signing the trust store")?;
            // Check it the way a device will before handing it out.
            current
                .rotate(&envelope)
                .context("devices would refuse this rotation")?;
            let bytes = envelope.to_bytes().context("encoding")?;
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            outln!(
                "wrote {}: trust store version {}",
                out.display(),
                next.version
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
