//! `floed join <string or file>`: one command from a fresh device to a fleet member.
//!
//! In order, so that a refusal leaves nothing half-done: read and check the join string (its
//! expiry too); edit the configuration in memory and check that the daemon would load it; refuse
//! to move a device that holds another fleet's trust store unless `--force`; create the
//! identity if it is missing; enroll by sending the signed first report with the one-time token
//! to the coordinator's REST API (a refusal stops here, before any file is touched; an
//! unreachable coordinator does not, since offline is not failed: the token stays in the
//! configuration and the daemon presents it over the fabric); then write the trust store and
//! the configuration, each atomically; then start `floed.service` when systemd runs and the
//! system configuration was joined, or say how to start the daemon.
//!
//! An `https://` coordinator address is checked with the join string's certificate pin, or
//! with the CA file given with `--ca` (see `floe_runtime::join_tls`); one that cannot be
//! checked is refused before anything is sent, and a certificate other than the pinned one
//! stops the join, naming both fingerprints.
//!
//! The enrolling report describes no slots, so it is sent only by a device that has never run
//! (no state database yet); a device that has run is enrolled by the daemon's own reports, which
//! carry the token until the coordinator accepts it.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use floe_runtime::config::DEFAULT_CONFIG_PATH;
use floe_runtime::join::{JoinSettings, enrollment_report, installed_fleet, render_config};
use floe_runtime::join_tls::{JoinTls, JoinTlsError};
use floe_wire::artifact::keys::TRUST_FILE;
use floe_wire::join::{JoinDoc, MAX_JOIN_TEXT};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;

/// How long one enrollment request may take (connect, send, answer).
const ENROLL_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer read from the coordinator.
const MAX_ANSWER: usize = 64 * 1024;
/// The largest existing configuration file read.
const MAX_CONFIG: u64 = 1 << 20;

/// `floed join` options.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The join string (`floe-join:…`), a file holding it, or `-` for standard input.
    join: String,
    /// The configuration file to write (kept keys are preserved).
    #[arg(long, env = "FLOED_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Sets `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Sets `device_type` (required when the file names none).
    #[arg(long = "device-type")]
    device_type: Option<String>,
    /// Sets `region`.
    #[arg(long)]
    region: Option<String>,
    /// Sets a label K=V (repeatable; other labels are kept).
    #[arg(long = "label", value_name = "K=V", value_parser = label)]
    labels: Vec<(String, String)>,
    /// Sets the fabric `listen` addresses (repeatable; default: the file's, else
    /// /ip4/0.0.0.0/tcp/7301).
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Join even though the device holds another fleet's trust store (it is replaced).
    #[arg(long)]
    force: bool,
    /// Do not start the service, only write the configuration.
    #[arg(long)]
    no_start: bool,
    /// A PEM file of the CA certificate(s) the coordinator's https certificate must chain to:
    /// needed for an https:// address when the join string carries no certificate pin (with a
    /// pin, the certificate must then match both).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not K=V")),
    }
}

/// Reads at most `limit` bytes of `r`, refusing more.
fn read_capped(r: impl Read, limit: u64, what: &str) -> Result<String> {
    let mut text = String::new();
    r.take(limit + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {what}"))?;
    if text.len() as u64 > limit {
        bail!("{what} is larger than {limit} bytes");
    }
    Ok(text)
}

/// The join string from the argument: itself, a file, or standard input.
fn join_text(arg: &str) -> Result<String> {
    let limit = MAX_JOIN_TEXT as u64;
    if arg.trim_start().starts_with(floe_wire::join::JOIN_PREFIX) {
        return Ok(arg.to_string());
    }
    if arg == "-" {
        return read_capped(std::io::stdin(), limit, "the join string on standard input");
    }
    let file = std::fs::File::open(arg).with_context(|| {
        format!("`{arg}` is neither a join string (floe-join:…) nor a readable file")
    })?;
    read_capped(file, limit, arg)
}

/// What the coordinator said to the enrolling report.
enum Enrolled {
    /// Accepted.
    Yes(String),
    /// No coordinator could be reached; the daemon will present the token.
    Unreachable(String),
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let text = join_text(&args.join)?;
    let now = floe_wire::clock::unix_ms();
    let doc = JoinDoc::decode(&text, now).context("reading the join string")?;
    let joining = doc.trust_store().context("reading the join string")?;
    let ca_pem = match &args.ca {
        None => None,
        Some(file) => {
            let f = std::fs::File::open(file)
                .with_context(|| format!("reading --ca {}", file.display()))?;
            Some(read_capped(f, MAX_CONFIG, &file.display().to_string())?)
        }
    };
    let ca_name = args.ca.as_ref().map(|p| p.display().to_string());
    let tls = JoinTls::new(
        doc.tls_pin.map(|p| p.0),
        ca_name.as_deref().zip(ca_pem.as_deref().map(str::as_bytes)),
    )?;
    // An https address nothing can check is refused now, before any file is touched.
    for url in &doc.coordinators {
        tls.check_url(url)?;
    }
    let path = std::path::absolute(&args.config)
        .with_context(|| format!("resolving {}", args.config.display()))?;
    let existing = match std::fs::File::open(&path) {
        Ok(f) => Some(read_capped(f, MAX_CONFIG, &path.display().to_string())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let settings = JoinSettings {
        device_type: args.device_type.clone(),
        region: args.region.clone(),
        labels: args.labels.iter().cloned().collect(),
        data_dir: args
            .data_dir
            .as_deref()
            .map(std::path::absolute)
            .transpose()
            .context("resolving --data-dir")?,
        listen: args.listen.clone(),
    };
    let joined = render_config(existing.as_deref(), &path, &doc, &settings, true)?;
    let cfg = joined.config.clone();

    let keep_installed = match installed_fleet(&cfg.trust_store, &joining) {
        Ok(None) => false,
        Ok(Some(true)) => {
            // The same fleet: a store rotated since the string was made is newer; keep it.
            floe_wire::artifact::keys::load_trust(&cfg.trust_store)
                .is_ok_and(|t| t.version > joining.version)
        }
        Ok(Some(false)) if args.force => false,
        Ok(Some(false)) => bail!(
            "this device belongs to another fleet: the trust store in {} shares no key with the join string's; pass --force to move it to this fleet",
            cfg.trust_store.display()
        ),
        Err(e) if args.force => {
            eprintln!("replacing the unreadable trust store ({e})");
            false
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context("the installed trust store cannot be read; pass --force to replace it"));
        }
    };

    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let key = floe_wire::identity::load_or_generate(&cfg.data_dir)
        .context("creating the device identity")?;
    let device = floe_wire::identity::device_id(&key);

    let fresh = !cfg.data_dir.join(floe_runtime::state::DB_FILE).exists();
    let enrolled = if fresh {
        let report = enrollment_report(&cfg, &key, &doc.token, now)
            .context("signing the enrollment report")?;
        Some(enroll(&doc.coordinators, &device, report, &tls)?)
    } else {
        None
    };
    let joined = match &enrolled {
        Some(Enrolled::Yes(_)) => {
            render_config(existing.as_deref(), &path, &doc, &settings, false)?
        }
        _ => joined,
    };

    let owner = data_owner(&cfg.data_dir);
    if !keep_installed {
        write_trust(&cfg.trust_store, &doc.trust.0, owner)?;
    }
    if existing.as_deref() != Some(joined.text.as_str()) {
        write_config(&path, &joined.text, owner)?;
    }
    chown_if_root(
        &cfg.data_dir.join(floe_wire::identity::IDENTITY_FILE),
        owner,
    )?;

    println!(
        "device {device} joined the fleet of {}",
        doc.coordinators.join(", ")
    );
    if let Some(pin) = doc.tls_pin_text() {
        println!("  coordinator certificate {pin} (pinned by the join string)");
    }
    println!("  config {}", path.display());
    println!("  trust store {}", cfg.trust_store.display());
    match &enrolled {
        Some(Enrolled::Yes(url)) => println!("  enrolled at {url}"),
        Some(Enrolled::Unreachable(why)) => println!(
            "  not enrolled yet ({why}); the daemon presents the one-time token in its first report"
        ),
        None => println!(
            "  this device has run before: the daemon presents the one-time token in its next report"
        ),
    }
    Ok(if start(&path, args.no_start) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Sends the enrolling report to each coordinator in turn until one answers.
fn enroll(urls: &[String], device: &str, report: Vec<u8>, tls: &JoinTls) -> Result<Enrolled> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut errors = Vec::new();
    for url in urls {
        match rt.block_on(post_report(url, device, report.clone(), tls)) {
            Ok((status, _)) if (200..300).contains(&status) => {
                return Ok(Enrolled::Yes(url.clone()));
            }
            Ok((status, body)) if (400..500).contains(&status) => {
                bail!(
                    "the coordinator at {url} refused the enrollment ({status}): {}",
                    error_message(&body)
                );
            }
            Ok((status, body)) => errors.push(format!("{url}: {status} {}", error_message(&body))),
            // A certificate that is not the one trusted is a refusal, not an outage.
            Err(e) if untrusted_certificate(&e) => return Err(e),
            Err(e) => errors.push(format!("{url}: {e:#}")),
        }
    }
    Ok(Enrolled::Unreachable(errors.join("; ")))
}

/// Whether `e` is a certificate the device does not trust (a pin mismatch, or a chain that
/// does not end in the `--ca` file), as opposed to a coordinator that cannot be reached.
fn untrusted_certificate(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<JoinTlsError>())
        .any(|t| match t {
            JoinTlsError::PinMismatch { .. } => true,
            JoinTlsError::Handshake { source, .. } => {
                source.kind() == std::io::ErrorKind::InvalidData
            }
            _ => false,
        })
}

/// The `message` of the API's JSON error, or the body as text.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect())
}

/// `POST {base}/api/v1/devices/{device}/report` over HTTP/1.1, in clear for `http://` or
/// over TLS checked by `tls` for `https://`; the status and the body.
async fn post_report(
    base: &str,
    device: &str,
    report: Vec<u8>,
    tls: &JoinTls,
) -> Result<(u16, Vec<u8>)> {
    let (https, authority) = match (base.strip_prefix("http://"), base.strip_prefix("https://")) {
        (Some(a), _) => (false, a),
        (_, Some(a)) => (true, a),
        _ => bail!("`{base}` is not an http:// or https:// address"),
    };
    let authority = authority.trim_end_matches('/');
    let scheme = if https { "https" } else { "http" };
    let uri: hyper::Uri = format!("{scheme}://{authority}/api/v1/devices/{device}/report")
        .parse()
        .with_context(|| format!("`{base}` is not a URL"))?;
    let host = uri.host().context("the URL names no host")?.to_string();
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let req = hyper::Request::post(uri.path())
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/cbor")
        .body(Full::new(Bytes::from(report)))
        .context("building the request")?;
    let work = async {
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        if https {
            let stream = tls.connect(base, &host, addr).await?;
            send(stream, req).await
        } else {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .context("connecting")?;
            send(stream, req).await
        }
    };
    tokio::time::timeout(ENROLL_TIMEOUT, work)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", ENROLL_TIMEOUT.as_secs()))?
}

/// Sends `req` on `stream` and reads the answer (at most [`MAX_ANSWER`] bytes).
async fn send<S>(stream: S, req: hyper::Request<Full<Bytes>>) -> Result<(u16, Vec<u8>)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .context("sending the report")?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body.to_vec()))
}

/// The owner of the data directory when it is not root's (the packaged `floe` user), so files
/// `floed join` creates as root stay readable by the daemon.
fn data_owner(data: &Path) -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let meta = std::fs::metadata(data).ok()?;
    (meta.uid() != 0).then_some((meta.uid(), meta.gid()))
}

fn chown_if_root(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .with_context(|| format!("handing {} to uid {uid}", path.display()))?;
    }
    Ok(())
}

/// Writes the trust store file atomically (`trust_store` is a directory, or the file itself
/// when one exists there).
fn write_trust(trust_store: &Path, bytes: &[u8], owner: Option<(u32, u32)>) -> Result<()> {
    let file = if trust_store.is_file() {
        trust_store.to_path_buf()
    } else {
        std::fs::create_dir_all(trust_store)
            .with_context(|| format!("creating {}", trust_store.display()))?;
        chown_if_root(trust_store, owner)?;
        trust_store.join(TRUST_FILE)
    };
    floe_wire::fsutil::write_atomic(&file, bytes, 0o644, true)
        .with_context(|| format!("writing {}", file.display()))?;
    chown_if_root(&file, owner)
}

/// Writes the configuration atomically, keeping an existing file's mode, owner and group. A new
/// file is 0640 and, when root writes it for a packaged daemon, in the daemon's group.
fn write_config(path: &Path, text: &str, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let old = std::fs::metadata(path).ok();
    let mode = old
        .as_ref()
        .map_or(0o640, |m| m.permissions().mode() & 0o7777);
    floe_wire::fsutil::write_atomic(path, text.as_bytes(), mode, true)
        .with_context(|| format!("writing {}", path.display()))?;
    // The temp file was created with the umask applied; set the mode exactly.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    if nix::unistd::geteuid().is_root() {
        let (uid, gid) = match (&old, owner) {
            (Some(m), _) => (m.uid(), m.gid()),
            (None, Some((_, gid))) => (0, gid),
            (None, None) => return Ok(()),
        };
        chown_if_root(path, Some((uid, gid)))?;
    }
    Ok(())
}

/// Starts `floed.service` when systemd runs this machine and the system configuration was
/// joined; otherwise says how to start the daemon. False when systemd failed to start it.
fn start(config: &Path, no_start: bool) -> bool {
    let systemd = Path::new("/run/systemd/system").is_dir();
    let system_config = config == Path::new(DEFAULT_CONFIG_PATH);
    let how = if system_config {
        "sudo systemctl enable --now floed".to_string()
    } else {
        format!("floed daemon --config {}", config.display())
    };
    if no_start || !systemd || !system_config || !nix::unistd::geteuid().is_root() {
        println!("start the daemon with: {how}");
        return true;
    }
    for args in [["enable", "floed.service"], ["restart", "floed.service"]] {
        match std::process::Command::new("systemctl").args(args).status() {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!(
                    "systemctl {} failed ({s}); start it with: {how}",
                    args.join(" ")
                );
                return false;
            }
            Err(e) => {
                eprintln!("cannot run systemctl ({e}); start it with: {how}");
                return false;
            }
        }
    }
    println!("started floed.service");
    true
}
