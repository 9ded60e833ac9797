//! `floe artifact …`: building and inspecting signed artifact bundles.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use floe_wire::artifact::{self, BuildSpec, BundleReader, keys};
use floe_wire::proto::Manifest;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The largest flow document accepted, in bytes.
const MAX_FLOW_BYTES: u64 = 4 << 20;

/// Artifact subcommands. Parsed once at start-up, so the size of the build variant does not
/// matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactCommand {
    /// Build a signed bundle from a flow (which must pass complete validation) and optional
    /// files.
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
        /// An allowed device type; repeat. Default: any.
        #[arg(long = "device-type")]
        device_types: Vec<String>,
        /// The minimum runtime version. Default: this runtime's version.
        #[arg(long)]
        min_runtime: Option<String>,
        /// Days until the manifest expires.
        #[arg(long, default_value_t = 90)]
        expires_in_days: u64,
        /// Chunk size in bytes. Default: the power of two that cuts the payload into about 512
        /// chunks, at least 128 KiB.
        #[arg(long)]
        chunk_size: Option<u32>,
        /// A smoke-test file (JSON: `inject` and `expect` lists of `{node, payload}`, and
        /// `timeout_ms`), carried in the signed manifest; devices run it before switching.
        #[arg(long)]
        smoke_test: Option<PathBuf>,
    },
    /// Show a bundle's manifest (signatures are shown, not checked; use `floed artifact verify`).
    Inspect {
        /// The bundle file.
        bundle: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn read_flow(path: &Path) -> Result<Vec<u8>> {
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
        let mut message = format!(
            "{} does not pass complete validation: {invalid}",
            path.display()
        );
        if let floe_flow::Invalid::Problems(problems) = &invalid {
            for p in problems {
                message.push_str(&format!("\n  {} {}: {}", p.subject, p.field, p.message));
            }
        }
        bail!(message);
    }
    Ok(bytes)
}

fn manifest_json(reader: &BundleReader, manifest: &Manifest) -> serde_json::Value {
    serde_json::json!({
        "schema": manifest.schema,
        "name": manifest.name,
        "version": manifest.version,
        "release": manifest.release,
        "created": manifest.created,
        "expires": manifest.expires,
        "archs": manifest.archs,
        "device_types": manifest.device_types,
        "min_runtime": manifest.min_runtime,
        "smoke_test": serde_json::to_value(&manifest.smoke_test).unwrap_or(serde_json::Value::Null),
        "size": manifest.size,
        "sha256": manifest.sha256.to_hex(),
        "chunk_size": manifest.chunk_size,
        "chunks": manifest.chunks.iter().map(|c| c.to_hex()).collect::<Vec<_>>(),
        "files": manifest.files.iter().map(|f| serde_json::json!({
            "path": f.path, "size": f.size, "sha256": f.sha256.to_hex(),
        })).collect::<Vec<_>>(),
        "manifest_sha256": floe_wire::proto::Digest::of(&reader.envelope.payload.0).to_hex(),
        "signatures": reader.envelope.signatures.iter().map(|s| s.key_id.to_hex()).collect::<Vec<_>>(),
    })
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
            device_types,
            min_runtime,
            expires_in_days,
            chunk_size,
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
            let created = floe_wire::clock::unix_secs();
            let release = release.unwrap_or(created);
            let expires = created.saturating_add(expires_in_days.saturating_mul(86_400));
            let mut spec = BuildSpec::new(&name, &version, release, created, expires);
            if !archs.is_empty() {
                spec.archs = archs;
            }
            spec.device_types = device_types;
            if let Some(min_runtime) = min_runtime {
                spec.min_runtime = min_runtime;
            }
            spec.chunk_size = chunk_size;
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
            outln!(
                "wrote {}: {} {} release {}, {} bytes, {} chunks, {} files, smoke test: {}",
                out.display(),
                manifest.name,
                manifest.version,
                manifest.release,
                manifest.size,
                manifest.chunks.len(),
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
        }
        ArtifactCommand::Inspect { bundle, json } => {
            let reader = BundleReader::open(&bundle)
                .with_context(|| format!("reading {}", bundle.display()))?;
            let manifest = reader
                .manifest_unverified()
                .with_context(|| format!("reading {}", bundle.display()))?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&manifest_json(&reader, &manifest))?
                );
            } else {
                outln!(
                    "artifact   {} {} (release {})",
                    manifest.name,
                    manifest.version,
                    manifest.release
                );
                outln!(
                    "created    {}  expires {}",
                    manifest.created,
                    manifest.expires
                );
                outln!("archs      {}", manifest.archs.join(", "));
                let types = if manifest.device_types.is_empty() {
                    "any".to_string()
                } else {
                    manifest.device_types.join(", ")
                };
                outln!("devices    {types}");
                outln!("runtime    >= {}", manifest.min_runtime);
                outln!(
                    "payload    {} bytes, sha256 {}",
                    manifest.size,
                    manifest.sha256
                );
                outln!(
                    "chunks     {} x {} bytes",
                    manifest.chunks.len(),
                    manifest.chunk_size
                );
                let ids: Vec<_> = reader
                    .envelope
                    .signatures
                    .iter()
                    .map(|s| s.key_id.to_hex())
                    .collect();
                outln!("signed by  {} (not checked here)", ids.join(", "));
                outln!("files:");
                for f in &manifest.files {
                    outln!("  {:>12}  {}  {}", f.size, f.sha256, f.path);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
