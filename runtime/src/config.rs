//! The daemon's configuration file (`/etc/floe/floed.toml` by default).
//!
//! The file is TOML and every key is optional except `device_type`; `arch` defaults to the
//! architecture `floed` was built for ([`floe_wire::artifact::native_arch`]), so one packaged file fits every
//! architecture. Unknown keys are refused rather than ignored, because a misspelled
//! key that silently falls back to a default is how a field device ends up with a 60-second
//! trial instead of the intended 600. Every error names the key that is wrong.
//!
//! The defaults quote the reference documents: `min_ready_seconds = 60`,
//! `failure_threshold = 3` (rolling update parameters), the crash-loop guard of 3 restarts in
//! 5 minutes (automatic rollback triggers) and memory above 90% as unhealthy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use floe_wire::artifact::native_arch;
use floe_wire::text::{
    MAX_ARCH_BYTES, MAX_DEVICE_TYPE_BYTES, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_LABELS,
    MAX_REGION_BYTES, check_text, check_var_name, check_var_value,
};
use serde::Deserialize;

mod http;
#[cfg(test)]
mod http_tests;
pub use http::{MAX_DEVICE_CONNECTIONS, MAX_TIMEOUT_MS as MAX_HTTP_TIMEOUT_MS};

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/floe/floed.toml";
/// The data directory when the file does not name one.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/floe";
/// The local HTTP endpoint (`/health`, `/metrics`) when the file does not name one.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9100";

/// The longest a trial may last (`trial.min_ready_seconds`): one week.
pub const MAX_MIN_READY_SECONDS: u64 = 7 * 24 * 3600;
/// The longest any other setting counted in seconds may be (fetch timeout, crash-loop window,
/// heartbeat staleness): one day.
pub const MAX_SECONDS: u64 = 24 * 3600;
/// The longest any setting counted in milliseconds may be (intervals and timeouts): one hour.
pub const MAX_MILLIS: u64 = 3600 * 1000;
/// The most a count (failure threshold, crash-loop restarts) may be.
pub const MAX_COUNT: u32 = 10_000;
/// Temperature limits must lie in this range of degrees Celsius (and be numbers: NaN is refused).
pub const TEMPERATURE_RANGE: std::ops::RangeInclusive<f64> = -100.0..=250.0;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a key has the wrong type or is unknown.
    #[error("config file {path}: {}", one_line(&.source.to_string()))]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error, which names the key and the line.
        source: toml::de::Error,
    },
    /// A key parsed but its value is not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// The TOML parser's multi-line message on one line, for logs and `floed` errors.
fn one_line(message: &str) -> String {
    message.trim().replace('\n', " ")
}

/// The largest `max_peers` accepted.
const MAX_PEERS_LIMIT: u32 = 1024;

/// The file as written, before defaults and checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    device_type: Option<String>,
    arch: Option<String>,
    region: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    listen: Vec<String>,
    http_listen: Option<String>,
    #[serde(default)]
    bootstrap_peers: Vec<String>,
    trust_store: Option<PathBuf>,
    mdns: Option<bool>,
    max_peers: Option<u32>,
    heartbeat_interval_ms: Option<u64>,
    fetch_timeout_seconds: Option<u64>,
    enroll_token: Option<String>,
    operator_group: Option<String>,
    #[serde(default)]
    dev: RawDev,
    #[serde(default)]
    trial: RawTrial,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    vars: BTreeMap<String, toml::Value>,
    #[serde(default)]
    http: http::RawHttp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDev {
    allow_unsigned_install: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrial {
    min_ready_seconds: Option<u64>,
    check_interval_ms: Option<u64>,
    failure_threshold: Option<u32>,
    start_timeout_ms: Option<u64>,
    smoke_timeout_ms: Option<u64>,
    stop_timeout_ms: Option<u64>,
    crash_loop_restarts: Option<u32>,
    crash_loop_window_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    max_error_rate: Option<f64>,
    memory_unhealthy_percent: Option<f64>,
    disk_degraded_percent: Option<f64>,
    disk_unhealthy_percent: Option<f64>,
    cpu_degraded_percent: Option<f64>,
    temperature_degraded_celsius: Option<f64>,
    temperature_unhealthy_celsius: Option<f64>,
    heartbeat_stale_seconds: Option<u64>,
    proc_root: Option<PathBuf>,
    sys_root: Option<PathBuf>,
}

/// The trial and crash-loop settings of the slot lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialConfig {
    /// How long health must hold after a switch before the new slot is committed.
    pub min_ready: Duration,
    /// How often the trial samples health.
    pub check_interval: Duration,
    /// Consecutive failing samples that end a trial in a rollback.
    pub failure_threshold: u32,
    /// How long a new flow may take to start before it counts as hung.
    pub start_timeout: Duration,
    /// How long the smoke test waits for the muted flow to report healthy.
    pub smoke_timeout: Duration,
    /// How long a flow is given to stop before it is abandoned.
    pub stop_timeout: Duration,
    /// Restarts while on trial that trigger the automatic rollback.
    pub crash_loop_restarts: u32,
    /// The window in which those restarts must fall.
    pub crash_loop_window: Duration,
}

impl Default for TrialConfig {
    fn default() -> Self {
        TrialConfig {
            min_ready: Duration::from_secs(60),
            check_interval: Duration::from_secs(1),
            failure_threshold: 3,
            start_timeout: Duration::from_secs(10),
            smoke_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(2),
            crash_loop_restarts: 3,
            crash_loop_window: Duration::from_secs(300),
        }
    }
}

/// Thresholds of the health layers and where the system layer reads from.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Errors per processed message above which a node makes the application unhealthy.
    pub max_error_rate: f64,
    /// Memory use (percent) at or above which the system layer is unhealthy.
    pub memory_unhealthy_percent: f64,
    /// Disk use (percent) at or above which the system layer is degraded.
    pub disk_degraded_percent: f64,
    /// Disk use (percent) at or above which the system layer is unhealthy.
    pub disk_unhealthy_percent: f64,
    /// CPU use (percent) at or above which the system layer is degraded.
    pub cpu_degraded_percent: f64,
    /// Temperature at or above which the system layer is degraded.
    pub temperature_degraded_celsius: f64,
    /// Temperature at or above which the system layer is unhealthy.
    pub temperature_unhealthy_celsius: f64,
    /// Heartbeat age after which connectivity is degraded.
    pub heartbeat_stale: Duration,
    /// Root of the proc filesystem (tests point it at a temp dir).
    pub proc_root: PathBuf,
    /// Root of the sys filesystem (tests point it at a temp dir).
    pub sys_root: PathBuf,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            max_error_rate: 0.05,
            memory_unhealthy_percent: 90.0,
            disk_degraded_percent: 90.0,
            disk_unhealthy_percent: 98.0,
            cpu_degraded_percent: 95.0,
            temperature_degraded_celsius: 75.0,
            temperature_unhealthy_celsius: 85.0,
            heartbeat_stale: Duration::from_secs(120),
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

/// How the device takes part in the fabric: discovery, its report heartbeat, fetch patience and
/// enrollment.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSettings {
    /// LAN discovery with mDNS (key `mdns`, default off: only when configured).
    pub mdns: bool,
    /// Most fabric connections of peers that are not coordinators (key `max_peers`, default
    /// 8, 1 to 1024). Connections to the coordinators (the bootstrap peers) are never refused.
    /// Each peer costs resident memory; 8 keeps `floed` within its budget on a Raspberry Pi.
    pub max_peers: u32,
    /// How often the signed status report is published even when nothing changed (key
    /// `heartbeat_interval_ms`, default 10 s).
    pub heartbeat_interval: Duration,
    /// How long a staging fetch may take before the stage directive fails (key
    /// `fetch_timeout_seconds`, default 300 s).
    pub fetch_timeout: Duration,
    /// The one-time enrollment token sent in reports until the coordinator accepts the device
    /// (key `enroll_token`).
    pub enroll_token: Option<String>,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            mdns: false,
            max_peers: 8,
            heartbeat_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(300),
            enroll_token: None,
        }
    }
}

/// Developer settings. Each one weakens a guarantee, so each is off by default and every use is
/// audited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevSettings {
    /// `floed install DIR` of an unsigned staged directory (key `dev.allow_unsigned_install`).
    /// Off: only signed `.floe` bundles install, verified against the trust store, with
    /// anti-rollback and expiry checked.
    pub allow_unsigned_install: bool,
}

/// The checked configuration of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where slots, the database and the identity key live.
    pub data_dir: PathBuf,
    /// The device type (`raspberry-pi-4`, `jetson-orin-nano` …), used by rollout selection.
    pub device_type: String,
    /// The CPU architecture (`aarch64`, `armv7` …); by default the one `floed` was built for.
    pub arch: String,
    /// The region the device is in, if any.
    pub region: Option<String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// libp2p listen multiaddresses.
    pub listen: Vec<String>,
    /// The local HTTP endpoint for `/health` and `/metrics`.
    pub http_listen: SocketAddr,
    /// That endpoint's connection caps and timeouts (table `[http]`).
    pub http_limits: floe_httpd::Limits,
    /// libp2p bootstrap peers.
    pub bootstrap_peers: Vec<String>,
    /// The directory of trusted release and coordinator keys.
    pub trust_store: PathBuf,
    /// Slot lifecycle settings.
    pub trial: TrialConfig,
    /// Health thresholds.
    pub health: HealthConfig,
    /// Fabric participation (discovery, heartbeat, enrollment).
    pub link: LinkSettings,
    /// The group whose members may install and roll back over the control socket, besides
    /// root and the daemon's own user (key `operator_group`; none by default).
    pub operator_group: Option<String>,
    /// Developer settings (table `[dev]`), all off by default.
    pub dev: DevSettings,
    /// Local values of flow variables (table `[vars]`, name → value as text): they override
    /// the values the coordinator delivers and the flow's defaults, for the names the running
    /// flow declares (other names are ignored).
    pub vars: BTreeMap<String, String>,
}

impl Config {
    /// Reads and checks the file at `path`; `data_dir_override` (from `--data-dir`) wins over
    /// the file's `data_dir`.
    pub fn load(path: &Path, data_dir_override: Option<&Path>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path, data_dir_override)
    }

    /// Parses and checks configuration text; `origin` names it in errors.
    pub fn parse(
        text: &str,
        origin: &Path,
        data_dir_override: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_path_buf(),
            source,
        })?;
        Config::check(raw, data_dir_override)
    }

    /// A configuration for a device with only a data directory, used by the local commands when
    /// no config file exists (for example `floed status --data-dir DIR` on a bench).
    pub fn minimal(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_path_buf(),
            device_type: "unknown".to_string(),
            arch: floe_wire::artifact::native_arch().to_string(),
            region: None,
            labels: BTreeMap::new(),
            listen: Vec::new(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            http_limits: floe_httpd::Limits::device(),
            bootstrap_peers: Vec::new(),
            trust_store: data_dir.join("trust"),
            trial: TrialConfig::default(),
            health: HealthConfig::default(),
            link: LinkSettings::default(),
            operator_group: None,
            dev: DevSettings::default(),
            vars: BTreeMap::new(),
        }
    }

    fn check(raw: RawConfig, data_dir_override: Option<&Path>) -> Result<Config, ConfigError> {
        let data_dir = data_dir_override
            .map(Path::to_path_buf)
            .or(raw.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if !data_dir.is_absolute() {
            return Err(invalid("data_dir", "must be an absolute path"));
        }
        let device_type = required_text("device_type", raw.device_type, MAX_DEVICE_TYPE_BYTES)?;
        let arch = match raw.arch {
            None => native_arch().to_string(),
            some => required_text("arch", some, MAX_ARCH_BYTES)?,
        };
        if let Some(region) = &raw.region {
            text("region", region, MAX_REGION_BYTES)?;
        }
        if raw.labels.len() > MAX_LABELS {
            return Err(invalid(
                "labels",
                &format!("{} labels, at most {MAX_LABELS} allowed", raw.labels.len()),
            ));
        }
        for (k, v) in &raw.labels {
            if k.is_empty() {
                return Err(invalid("labels", "a label key is empty"));
            }
            text("labels", k, MAX_LABEL_KEY_BYTES)?;
            text("labels", v, MAX_LABEL_VALUE_BYTES)?;
        }
        let http_text = raw
            .http_listen
            .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_string());
        let http_listen: SocketAddr = http_text.parse().map_err(|e| {
            invalid(
                "http_listen",
                &format!("`{http_text}` is not ip:port ({e})"),
            )
        })?;
        for (i, addr) in raw.listen.iter().enumerate() {
            if !addr.starts_with('/') {
                return Err(invalid(
                    "listen",
                    &format!("entry {i} `{addr}` is not a multiaddress (must start with `/`)"),
                ));
            }
        }
        for (i, addr) in raw.bootstrap_peers.iter().enumerate() {
            if !addr.starts_with('/') || !addr.contains("/p2p/") {
                return Err(invalid(
                    "bootstrap_peers",
                    &format!("entry {i} `{addr}` is not a multiaddress ending in /p2p/<peer id>"),
                ));
            }
        }
        let trust_store = raw.trust_store.unwrap_or_else(|| data_dir.join("trust"));
        let d = TrialConfig::default();
        let t = raw.trial;
        let trial = TrialConfig {
            min_ready: Duration::from_secs(bounded(
                "trial.min_ready_seconds",
                t.min_ready_seconds,
                d.min_ready.as_secs(),
                0,
                MAX_MIN_READY_SECONDS,
            )?),
            check_interval: positive_ms(
                "trial.check_interval_ms",
                t.check_interval_ms,
                d.check_interval,
            )?,
            failure_threshold: count(
                "trial.failure_threshold",
                t.failure_threshold,
                d.failure_threshold,
            )?,
            start_timeout: positive_ms(
                "trial.start_timeout_ms",
                t.start_timeout_ms,
                d.start_timeout,
            )?,
            smoke_timeout: positive_ms(
                "trial.smoke_timeout_ms",
                t.smoke_timeout_ms,
                d.smoke_timeout,
            )?,
            stop_timeout: positive_ms("trial.stop_timeout_ms", t.stop_timeout_ms, d.stop_timeout)?,
            crash_loop_restarts: count(
                "trial.crash_loop_restarts",
                t.crash_loop_restarts,
                d.crash_loop_restarts,
            )?,
            crash_loop_window: Duration::from_secs(bounded(
                "trial.crash_loop_window_seconds",
                t.crash_loop_window_seconds,
                d.crash_loop_window.as_secs(),
                1,
                MAX_SECONDS,
            )?),
        };
        let hd = HealthConfig::default();
        let h = raw.health;
        let health = HealthConfig {
            max_error_rate: fraction("health.max_error_rate", h.max_error_rate, hd.max_error_rate)?,
            memory_unhealthy_percent: percent(
                "health.memory_unhealthy_percent",
                h.memory_unhealthy_percent,
                hd.memory_unhealthy_percent,
            )?,
            disk_degraded_percent: percent(
                "health.disk_degraded_percent",
                h.disk_degraded_percent,
                hd.disk_degraded_percent,
            )?,
            disk_unhealthy_percent: percent(
                "health.disk_unhealthy_percent",
                h.disk_unhealthy_percent,
                hd.disk_unhealthy_percent,
            )?,
            cpu_degraded_percent: percent(
                "health.cpu_degraded_percent",
                h.cpu_degraded_percent,
                hd.cpu_degraded_percent,
            )?,
            temperature_degraded_celsius: celsius(
                "health.temperature_degraded_celsius",
                h.temperature_degraded_celsius,
                hd.temperature_degraded_celsius,
            )?,
            temperature_unhealthy_celsius: celsius(
                "health.temperature_unhealthy_celsius",
                h.temperature_unhealthy_celsius,
                hd.temperature_unhealthy_celsius,
            )?,
            heartbeat_stale: Duration::from_secs(bounded(
                "health.heartbeat_stale_seconds",
                h.heartbeat_stale_seconds,
                hd.heartbeat_stale.as_secs(),
                1,
                MAX_SECONDS,
            )?),
            proc_root: h.proc_root.unwrap_or(hd.proc_root),
            sys_root: h.sys_root.unwrap_or(hd.sys_root),
        };
        if health.disk_degraded_percent > health.disk_unhealthy_percent {
            return Err(invalid(
                "health.disk_degraded_percent",
                "must not exceed health.disk_unhealthy_percent",
            ));
        }
        if health.temperature_degraded_celsius > health.temperature_unhealthy_celsius {
            return Err(invalid(
                "health.temperature_degraded_celsius",
                "must not exceed health.temperature_unhealthy_celsius",
            ));
        }
        let ld = LinkSettings::default();
        if let Some(token) = &raw.enroll_token
            && (token.is_empty() || token.len() > 128 || token.chars().any(char::is_control))
        {
            return Err(invalid(
                "enroll_token",
                "must be 1 to 128 characters without control characters",
            ));
        }
        let operator_group = match raw.operator_group {
            Some(g)
                if g.is_empty()
                    || g.len() > 32
                    || !g
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                return Err(invalid(
                    "operator_group",
                    "must be a group name of 1 to 32 letters, digits, '_' or '-'",
                ));
            }
            g => g,
        };
        let max_peers = match raw.max_peers {
            Some(n) if !(1..=MAX_PEERS_LIMIT).contains(&n) => {
                return Err(invalid(
                    "max_peers",
                    &format!("{n} is not between 1 and {MAX_PEERS_LIMIT}"),
                ));
            }
            Some(n) => n,
            None => ld.max_peers,
        };
        let link = LinkSettings {
            mdns: raw.mdns.unwrap_or(ld.mdns),
            max_peers,
            heartbeat_interval: positive_ms(
                "heartbeat_interval_ms",
                raw.heartbeat_interval_ms,
                ld.heartbeat_interval,
            )?,
            fetch_timeout: Duration::from_secs(bounded(
                "fetch_timeout_seconds",
                raw.fetch_timeout_seconds,
                ld.fetch_timeout.as_secs(),
                1,
                MAX_SECONDS,
            )?),
            enroll_token: raw.enroll_token,
        };
        Ok(Config {
            data_dir,
            device_type,
            arch,
            region: raw.region,
            labels: raw.labels,
            listen: raw.listen,
            http_listen,
            http_limits: http::limits(raw.http).map_err(|e| invalid(e.key, &e.message))?,
            bootstrap_peers: raw.bootstrap_peers,
            trust_store,
            trial,
            health,
            link,
            operator_group,
            dev: DevSettings {
                allow_unsigned_install: raw.dev.allow_unsigned_install.unwrap_or(false),
            },
            vars: local_vars(raw.vars)?,
        })
    }
}

/// Most entries of `[vars]`.
pub const MAX_LOCAL_VARS: usize = 64;

/// Checks `[vars]`: names by the flow language's rule, values strings, numbers or booleans
/// (kept as their text) of bounded text.
fn local_vars(raw: BTreeMap<String, toml::Value>) -> Result<BTreeMap<String, String>, ConfigError> {
    if raw.len() > MAX_LOCAL_VARS {
        return Err(invalid(
            "vars",
            &format!("{} entries, at most {MAX_LOCAL_VARS} allowed", raw.len()),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        check_var_name("vars", &name).map_err(|e| invalid("vars", &e.to_string()))?;
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(invalid(
                    "vars",
                    &format!(
                        "vars.{name} is a {}; write a string, a number or a boolean",
                        other.type_str()
                    ),
                ));
            }
        };
        check_var_value(&format!("vars.{name}"), &text)
            .map_err(|e| invalid("vars", &e.to_string()))?;
        out.insert(name, text);
    }
    Ok(out)
}

fn invalid(key: &'static str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.to_string(),
    }
}

/// Free text that ends up in the signed report: the report's own limits, checked at load so a
/// device never starts with a config it cannot sign a report for.
fn text(key: &'static str, value: &str, max: usize) -> Result<(), ConfigError> {
    check_text(key, value, max).map_err(|e| invalid(key, &e.to_string()))
}

fn required_text(
    key: &'static str,
    value: Option<String>,
    max: usize,
) -> Result<String, ConfigError> {
    match value {
        None => Err(invalid(key, "is missing")),
        Some(v) if v.trim().is_empty() => Err(invalid(key, "must not be empty")),
        Some(v) => {
            text(key, &v, max)?;
            Ok(v)
        }
    }
}

fn positive_ms(
    key: &'static str,
    value: Option<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        Some(0) => Err(invalid(key, "must be greater than 0")),
        Some(ms) if ms > MAX_MILLIS => Err(invalid(
            key,
            &format!("{ms} is above the limit of {MAX_MILLIS} (one hour)"),
        )),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Ok(default),
    }
}

/// A whole number between `min` and `max` (inclusive), or `default` when the key is absent.
fn bounded(
    key: &'static str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match value {
        Some(v) if v < min => Err(invalid(key, &format!("must be at least {min}"))),
        Some(v) if v > max => Err(invalid(key, &format!("{v} is above the limit of {max}"))),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

fn count(key: &'static str, value: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    match value {
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(n) if n > MAX_COUNT => Err(invalid(
            key,
            &format!("{n} is above the limit of {MAX_COUNT}"),
        )),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

fn celsius(key: &'static str, value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    match value {
        Some(v) if !TEMPERATURE_RANGE.contains(&v) => Err(invalid(
            key,
            &format!(
                "{v} is not a temperature between {} and {} °C",
                TEMPERATURE_RANGE.start(),
                TEMPERATURE_RANGE.end()
            ),
        )),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

fn percent(key: &'static str, value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    match value {
        Some(v) if !(0.0..=100.0).contains(&v) => Err(invalid(
            key,
            &format!("{v} is not a percentage between 0 and 100"),
        )),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

fn fraction(key: &'static str, value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    match value {
        Some(v) if !(0.0..=1.0).contains(&v) => Err(invalid(
            key,
            &format!("{v} is not a fraction between 0 and 1"),
        )),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), None)
    }

    #[test]
    fn local_vars_are_text_numbers_or_booleans_and_bad_ones_name_the_key() {
        let base = "device_type = \"rpi4\"\narch = \"aarch64\"\n";
        assert!(parse(base).unwrap().vars.is_empty());
        let c = parse(&format!(
            "{base}[vars]\nbroker = \"mqtt://10.0.0.1:1883\"\nthreshold = 28\nratio = 0.5\nsimulate = true\n"
        ))
        .unwrap();
        assert_eq!(c.vars["broker"], "mqtt://10.0.0.1:1883");
        assert_eq!(c.vars["threshold"], "28");
        assert_eq!(c.vars["ratio"], "0.5");
        assert_eq!(c.vars["simulate"], "true");
        for (bad, says) in [
            ("topics = [\"a\"]", "vars.topics is a array"),
            ("\"9x\" = \"a\"", "not a valid variable name"),
            ("t = \"a\\u001bb\"", "vars.t contains the control character"),
        ] {
            let err = parse(&format!("{base}[vars]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("vars") && err.contains(says), "{bad}: {err}");
        }
        let long = "x".repeat(257);
        let err = parse(&format!("{base}[vars]\nt = \"{long}\"\n")).unwrap_err();
        assert!(err.to_string().contains("257 bytes, at most 256"), "{err}");
    }

    #[test]
    fn link_keys_default_and_name_the_key_when_wrong() {
        let base = "device_type = \"rpi4\"\narch = \"aarch64\"\n";
        let c = parse(base).unwrap();
        assert!(!c.link.mdns, "mDNS only when configured");
        assert_eq!(c.link.max_peers, 8);
        assert_eq!(c.link.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(c.link.enroll_token, None);
        let c = parse(&format!(
            "{base}mdns = true\nmax_peers = 3\nheartbeat_interval_ms = 500\nenroll_token = \"t-1\"\n"
        ))
        .unwrap();
        assert!(c.link.mdns);
        assert_eq!(c.link.max_peers, 3);
        for bad in ["0", "1025", "-1"] {
            let err = parse(&format!("{base}max_peers = {bad}\n")).unwrap_err();
            assert!(err.to_string().contains("max_peers"), "{err}");
        }
        assert_eq!(c.link.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.link.enroll_token.as_deref(), Some("t-1"));
        let err = parse(&format!("{base}heartbeat_interval_ms = 0\n")).unwrap_err();
        assert!(err.to_string().contains("heartbeat_interval_ms"), "{err}");
        let err = parse(&format!("{base}enroll_token = \"\"\n")).unwrap_err();
        assert!(err.to_string().contains("enroll_token"), "{err}");
    }

    #[test]
    fn full_file_parses_with_defaults_from_the_reference() {
        let cfg = parse(
            r#"
            data_dir = "/srv/floe"
            device_type = "raspberry-pi-4"
            arch = "aarch64"
            region = "eu-west"
            labels = { site = "plant-3" }
            listen = ["/ip4/0.0.0.0/tcp/4001"]
            bootstrap_peers = ["/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWabc"]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/floe"));
        assert_eq!(cfg.trial.min_ready, Duration::from_secs(60));
        assert_eq!(cfg.trial.failure_threshold, 3);
        assert_eq!(cfg.trial.crash_loop_restarts, 3);
        assert_eq!(cfg.trial.crash_loop_window, Duration::from_secs(300));
        assert_eq!(cfg.health.memory_unhealthy_percent, 90.0);
        assert_eq!(cfg.trust_store, PathBuf::from("/srv/floe/trust"));
        assert_eq!(cfg.labels.get("site").map(String::as_str), Some("plant-3"));
    }

    #[test]
    fn huge_durations_and_counts_name_the_key_and_the_limit() {
        let base = "device_type = \"pi\"\narch = \"a\"\n";
        let max = u64::MAX;
        for (text, key, limit) in [
            (
                format!("fetch_timeout_seconds = {}", i64::MAX),
                "fetch_timeout_seconds",
                "86400",
            ),
            (
                format!("[trial]\nmin_ready_seconds = {}", i64::MAX),
                "trial.min_ready_seconds",
                "604800",
            ),
            (
                format!("[trial]\ncrash_loop_window_seconds = {}", i64::MAX),
                "trial.crash_loop_window_seconds",
                "86400",
            ),
            (
                format!("[trial]\ncheck_interval_ms = {}", i64::MAX),
                "trial.check_interval_ms",
                "3600000",
            ),
            (
                format!("[trial]\nfailure_threshold = {}", u32::MAX),
                "trial.failure_threshold",
                "10000",
            ),
            (
                format!("[health]\nheartbeat_stale_seconds = {}", i64::MAX),
                "health.heartbeat_stale_seconds",
                "86400",
            ),
            (
                format!("heartbeat_interval_ms = {}", i64::MAX),
                "heartbeat_interval_ms",
                "3600000",
            ),
        ] {
            let e = parse(&format!("{base}{text}\n")).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(limit), "{text}: {e}");
        }
        // TOML integers are i64; the u64 maximum is refused by the parser naming the key.
        let e = parse(&format!("{base}[trial]\nmin_ready_seconds = {max}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_ready_seconds"), "{e}");
        let c = parse(&format!("{base}[trial]\nmin_ready_seconds = 604800\n")).unwrap();
        assert_eq!(c.trial.min_ready, Duration::from_secs(604_800));
    }

    #[test]
    fn nan_and_infinite_limits_are_refused() {
        let base = "device_type = \"pi\"\narch = \"a\"\n[health]\n";
        for value in ["nan", "inf", "-inf"] {
            for key in [
                "temperature_degraded_celsius",
                "temperature_unhealthy_celsius",
                "memory_unhealthy_percent",
                "max_error_rate",
            ] {
                let e = parse(&format!("{base}{key} = {value}\n"))
                    .unwrap_err()
                    .to_string();
                assert!(e.contains(key), "{key} = {value}: {e}");
            }
        }
    }

    #[test]
    fn text_the_report_cannot_sign_is_refused_at_load() {
        let base = "device_type = \"pi\"\narch = \"a\"\n";
        let long = "r".repeat(65);
        for (text, key) in [
            (format!("region = \"{long}\""), "region"),
            ("region = \"eu\\u001b[2J\"".to_string(), "region"),
            ("region = \"eu\\nwest\"".to_string(), "region"),
            ("labels = { site = \"a\\u0000b\" }".to_string(), "labels"),
            (
                format!("labels = {{ k = \"{}\" }}", "v".repeat(129)),
                "labels",
            ),
        ] {
            let e = parse(&format!("{base}{text}\n")).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
        let e = parse("device_type = \"pi\\u001b\"\narch = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("device_type"), "{e}");
        let many: Vec<String> = (0..33).map(|i| format!("k{i} = \"v\"")).collect();
        let e = parse(&format!("{base}[labels]\n{}\n", many.join("\n")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels") && e.contains("32"), "{e}");
        let ok = format!("{base}region = \"{}\"\n", "r".repeat(64));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn data_dir_override_wins() {
        let cfg = Config::parse(
            "data_dir = \"/a\"\ndevice_type = \"x\"\narch = \"y\"\n",
            Path::new("t"),
            Some(Path::new("/b")),
        )
        .unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/b"));
    }

    #[test]
    fn arch_defaults_to_the_build_but_device_type_is_required() {
        let cfg = parse("device_type = \"pi\"").unwrap();
        assert_eq!(cfg.arch, native_arch());
        let cfg = parse("device_type = \"pi\"\narch = \"armv7\"").unwrap();
        assert_eq!(cfg.arch, "armv7");
        let e = parse("device_type = \"pi\"\narch = \" \"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`arch`"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("arch = \"aarch64\"").unwrap_err().to_string();
        assert!(e.contains("device_type"), "{e}");
        let e = parse("device_type = \"pi\"\narch = \"a\"\nhttp_listen = \"nope\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http_listen"), "{e}");
        let e = parse("device_type = \"pi\"\narch = \"a\"\n[trial]\nfailure_threshold = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("trial.failure_threshold"), "{e}");
        let e = parse("device_type = \"pi\"\narch = \"a\"\nmin_redy = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_redy"), "{e}");
        let e = parse("device_type = \"pi\"\narch = \"a\"\ndata_dir = \"rel\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("data_dir"), "{e}");
        let e = parse("device_type = 3\narch = \"a\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("device_type"), "{e}");
    }
}
