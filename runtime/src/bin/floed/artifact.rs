//! `floed artifact …`: device-side artifact commands.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use floe_runtime::artifact::{self, ChunkStore, keys};
use floe_runtime::proto::{Manifest, Verified};
use std::path::PathBuf;
use std::process::ExitCode;

/// The largest flow document accepted, in bytes.
const MAX_FLOW_BYTES: u64 = 4 << 20;

/// Artifact subcommands. Parsed once at start-up, so the size of the build variant does not
/// matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactCommand {
    /// Build a signed bundle on a workstation or an air-gapped site: the flow (which must pass
    /// complete validation with this floed's node kinds), optional files, and an optional smoke
    /// test that devices run before switching to the version.
    Build {
        /// The flow definition (JSON).
        #[arg(long)]
        flow: PathBuf,
        /// The semantic version (`1.2.0`).
        #[arg(long)]
        version: String,
        /// The release signing key (`floe.key` or its directory); repeat for k-of-n.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// A directory of extra files (models, configs) to include.
        #[arg(long)]
        files: Option<PathBuf>,
        /// The bundle to write (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
        /// The artifact name (the flow id); default: the flow file's stem.
        #[arg(long)]
        name: Option<String>,
        /// The release number; default: the current unix time, which grows build to build.
        #[arg(long)]
        release: Option<u64>,
        /// An allowed architecture; repeat. Default: aarch64, armv7 and x86_64.
        #[arg(long = "arch")]
        archs: Vec<String>,
        /// Days until the manifest expires.
        #[arg(long, default_value_t = 90)]
        expires_in_days: u64,
        /// A smoke-test file (JSON: `inject` and `expect` lists of `{node, payload}`, and
        /// `timeout_ms`), carried in the signed manifest.
        #[arg(long)]
        smoke_test: Option<PathBuf>,
    },
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

fn now() -> Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs())
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
    let now = now()?;
    if now >= verified.value.expires {
        bail!(
            "manifest expired: valid until {}, now is {now}",
            verified.value.expires
        );
    }
    Ok(())
}

fn read_flow(path: &std::path::Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_FLOW_BYTES {
        bail!(
            "{} is {len} bytes, more than the {MAX_FLOW_BYTES} allowed for a flow",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if let Err(invalid) = floe_flow::validate::check(&bytes, floe_flow::Level::Complete) {
        bail!(
            "{} does not pass complete validation:\n{}",
            path.display(),
            invalid.report()
        );
    }
    Ok(bytes)
}

pub(crate) fn run(command: ArtifactCommand) -> Result<ExitCode> {
    match command {
        ArtifactCommand::Build {
            flow,
            version,
            keys: key_paths,
            files,
            out,
            name,
            release,
            archs,
            expires_in_days,
            smoke_test,
        } => {
            let bytes = read_flow(&flow)?;
            let name = match name {
                Some(name) => name,
                None => flow
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
                    .context("the flow file has no usable name; pass --name")?,
            };
            let created = now()?;
            let expires = created.saturating_add(expires_in_days.saturating_mul(86_400));
            let mut spec = artifact::BuildSpec::new(
                &name,
                &version,
                release.unwrap_or(created),
                created,
                expires,
            );
            if !archs.is_empty() {
                spec.archs = archs;
            }
            if let Some(path) = smoke_test {
                let text =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                spec.smoke_test = Some(
                    artifact::bundle::smoke_test_from_json(&text).with_context(|| {
                        format!("{} is not a usable smoke test", path.display())
                    })?,
                );
            }
            let signing: Vec<_> = key_paths
                .iter()
                .map(|p| {
                    keys::load_signing_key(p)
                        .with_context(|| format!("reading key {}", p.display()))
                })
                .collect::<Result<_>>()?;
            let refs: Vec<_> = signing.iter().collect();
            let manifest = artifact::build(&spec, &bytes, files.as_deref(), &refs, &out)
                .with_context(|| format!("building {}", out.display()))?;
            println!(
                "wrote {}: {} {} release {}, {} bytes, {} files, smoke test: {}",
                out.display(),
                manifest.name,
                manifest.version,
                manifest.release,
                manifest.size,
                manifest.files.len(),
                manifest.smoke_test.as_ref().map_or_else(
                    || "none".to_string(),
                    |s| format!(
                        "{} inputs, {} expected outputs",
                        s.inject.len(),
                        s.expect.len()
                    )
                )
            );
            Ok(ExitCode::SUCCESS)
        }
        ArtifactCommand::Verify { bundle, trust } => {
            let trust = keys::load_trust(&trust).context("loading the trust store")?;
            let verified = artifact::verify_file(&bundle, &trust)
                .with_context(|| format!("{} is not valid", bundle.display()))?;
            check_fresh(&verified).with_context(|| format!("{} is not valid", bundle.display()))?;
            println!("{}", summary(&verified));
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
            println!("{}", summary(&verified));
            Ok(ExitCode::SUCCESS)
        }
    }
}
