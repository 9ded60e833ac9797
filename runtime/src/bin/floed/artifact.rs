//! `floed artifact …`: device-side artifact commands.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use floe_wire::artifact::{self, ChunkStore, keys};
use floe_wire::proto::{Manifest, Verified};
use std::path::PathBuf;
use std::process::ExitCode;

/// Artifact subcommands. Bundles are built with `floe artifact build` (the release side);
/// floed verifies and imports them.
#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactCommand {
    /// Verify a bundle: signatures against the trust store, every chunk, the payload digest and
    /// the expiry. Exit 0 with a one-line summary when valid, exit 1 with the reason otherwise.
    Verify {
        /// The bundle file (`X.floe`).
        bundle: PathBuf,
        /// The trust directory holding `trust.cbor`.
        #[arg(long)]
        trust: PathBuf,
    },
    /// Verify a bundle and store its chunks in the data directory's chunk store (resumable;
    /// chunks already held are not written again).
    Import {
        /// The bundle file.
        bundle: PathBuf,
        /// The trust directory holding `trust.cbor`.
        #[arg(long)]
        trust: PathBuf,
        /// The device data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn summary(verified: &Verified<Manifest>) -> String {
    let m = &verified.value;
    let signers: Vec<String> = verified.signers.iter().map(|id| id.to_hex()).collect();
    format!(
        "ok: {} {} release {}, {} bytes in {} chunks, {} files, manifest sha256 {}, signed by {}",
        m.name,
        m.version,
        m.release,
        m.size,
        m.chunks.len(),
        m.files.len(),
        verified.digest,
        signers.join(",")
    )
}

fn check_fresh(verified: &Verified<Manifest>) -> Result<()> {
    let now = floe_wire::clock::unix_secs();
    if now >= verified.value.expires {
        bail!(
            "manifest expired: valid until {}, now is {now}",
            verified.value.expires
        );
    }
    Ok(())
}

pub(crate) fn run(command: ArtifactCommand) -> Result<ExitCode> {
    match command {
        ArtifactCommand::Verify { bundle, trust } => {
            let trust = keys::load_trust(&trust).context("loading the trust store")?;
            let verified = artifact::verify_file(&bundle, &trust)
                .with_context(|| format!("{} is not valid", bundle.display()))?;
            check_fresh(&verified).with_context(|| format!("{} is not valid", bundle.display()))?;
            outln!("{}", summary(&verified));
            Ok(ExitCode::SUCCESS)
        }
        ArtifactCommand::Import {
            bundle,
            trust,
            data_dir,
        } => {
            let trust = keys::load_trust(&trust).context("loading the trust store")?;
            let store = ChunkStore::open(&data_dir).context("opening the chunk store")?;
            let verified = artifact::import(&bundle, &trust, &store)
                .with_context(|| format!("importing {}", bundle.display()))?;
            check_fresh(&verified)?;
            outln!("{}", summary(&verified));
            Ok(ExitCode::SUCCESS)
        }
    }
}
