//! `floed join`: turning a join string into this device's configuration.
//!
//! The configuration file is edited, not replaced: keys an operator or a package set (the
//! health thresholds, `http_listen`, the comments of the packaged `/etc/floe/floed.toml`) stay as
//! they are, and only what joining a fleet decides is written: `bootstrap_peers` (the
//! coordinator's fabric addresses), `enroll_token` (while the device is not yet known to be
//! enrolled), and what the operator passed on the command line (`device_type`, `region`,
//! labels, `data_dir`, `listen`). `arch` and `listen` get defaults when the file has none. The
//! result is parsed with [`Config::parse`] before anything is written, so `floed join` never
//! leaves a file the daemon refuses.
//!
//! A device belongs to one fleet: the fleet is recognised by its trust store
//! ([`floe_wire::join::same_fleet`]). Joining another fleet while a trust store of a different
//! one is installed is refused unless forced; joining the same fleet again is a no-op apart from
//! a fresh token, which is what makes the command idempotent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use floe_wire::join::JoinDoc;
use floe_wire::proto::report::REPORT_SCHEMA;
use floe_wire::proto::{DeviceReport, Envelope, Facts, Fixed, Label, TrustStore};
use toml_edit::{Array, DocumentMut, Item, Table, value};

use crate::config::{Config, ConfigError};

/// The fabric listen address a joined device gets when its file names none: every interface,
/// the coordinator's default port, so peers on the LAN can fetch chunks from it.
pub const DEFAULT_JOIN_LISTEN: &str = "/ip4/0.0.0.0/tcp/7301";

/// Why a configuration could not be made from a join string.
#[derive(Debug, thiserror::Error)]
pub enum JoinConfigError {
    /// The existing file is not TOML.
    #[error("the existing config file {path} is not valid TOML: {source}")]
    Existing {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: toml_edit::TomlError,
    },
    /// The file names no device type and none was given.
    #[error(
        "{path} names no `device_type`; pass --device-type (for example raspberry-pi-4 or jetson-orin-nano)"
    )]
    DeviceType {
        /// The file.
        path: PathBuf,
    },
    /// A key the join sets holds something other than what it must (a table, say).
    #[error("config key `{key}` in {path} is not a {expected}; fix or remove it first")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// The edited file would not load.
    #[error("the joined configuration would be refused: {0}")]
    Invalid(#[source] ConfigError),
}

/// What the operator passed to `floed join` besides the string.
#[derive(Debug, Clone, Default)]
pub struct JoinSettings {
    /// `device_type` to set.
    pub device_type: Option<String>,
    /// `region` to set.
    pub region: Option<String>,
    /// Labels to set (others are kept).
    pub labels: BTreeMap<String, String>,
    /// `data_dir` to set.
    pub data_dir: Option<PathBuf>,
    /// `listen` to set (replacing the file's).
    pub listen: Vec<String>,
}

/// The configuration text and its checked form after joining.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The new file content.
    pub text: String,
    /// What the daemon will load from it.
    pub config: Config,
}

fn string_array(items: &[String]) -> Item {
    let mut a = Array::new();
    for s in items {
        a.push(s.as_str());
    }
    value(a)
}

/// Edits `existing` (the current file, if any) for `doc`. With `token` the one-time token is
/// written (`enroll_token`), without it removed (the device is enrolled already).
pub fn render_config(
    existing: Option<&str>,
    path: &Path,
    doc: &JoinDoc,
    settings: &JoinSettings,
    token: bool,
) -> Result<Joined, JoinConfigError> {
    let mut file: DocumentMut = match existing {
        Some(text) => text.parse().map_err(|source| JoinConfigError::Existing {
            path: path.to_path_buf(),
            source,
        })?,
        None => DocumentMut::new(),
    };
    let shape = |key, expected| JoinConfigError::Shape {
        path: path.to_path_buf(),
        key,
        expected,
    };
    if let Some(d) = &settings.data_dir {
        file["data_dir"] = value(d.to_string_lossy().as_ref());
    }
    if let Some(t) = &settings.device_type {
        file["device_type"] = value(t.as_str());
    } else if !file.contains_key("device_type") {
        return Err(JoinConfigError::DeviceType {
            path: path.to_path_buf(),
        });
    }
    if !file.contains_key("arch") {
        file["arch"] = value(floe_wire::artifact::native_arch());
    }
    if let Some(r) = &settings.region {
        file["region"] = value(r.as_str());
    }
    if !settings.listen.is_empty() {
        file["listen"] = string_array(&settings.listen);
    } else if !file.contains_key("listen") {
        file["listen"] = string_array(&[DEFAULT_JOIN_LISTEN.to_string()]);
    }
    file["bootstrap_peers"] = string_array(&doc.fabric);
    if token {
        file["enroll_token"] = value(doc.token.as_str());
    } else {
        file.remove("enroll_token");
    }
    if !settings.labels.is_empty() {
        if !file.contains_key("labels") {
            file["labels"] = Item::Table(Table::new());
        }
        let labels = file["labels"]
            .as_table_like_mut()
            .ok_or_else(|| shape("labels", "table"))?;
        for (k, v) in &settings.labels {
            labels.insert(k, value(v.as_str()));
        }
    }
    let text = match existing {
        Some(_) => file.to_string(),
        None => format!(
            "# Written by `floed join`; edit freely (floed join keeps what it does not set).\n{file}"
        ),
    };
    let config = Config::parse(&text, path, None).map_err(JoinConfigError::Invalid)?;
    Ok(Joined { text, config })
}

/// Whether the trust store installed at `installed` (if any) is another fleet's than `doc`'s.
/// `Ok(None)` when nothing is installed; `Ok(Some(true))` for the same fleet.
pub fn installed_fleet(
    installed: &Path,
    joining: &TrustStore,
) -> Result<Option<bool>, floe_wire::artifact::keys::KeyError> {
    let file = if installed.is_dir() {
        installed.join(floe_wire::artifact::keys::TRUST_FILE)
    } else {
        installed.to_path_buf()
    };
    if !file.exists() {
        return Ok(None);
    }
    let current = floe_wire::artifact::keys::load_trust(installed)?;
    Ok(Some(floe_wire::join::same_fleet(&current, joining)))
}

/// The signed first report a joining device sends its coordinator: who it is, what it is, and
/// the one-time token. It says nothing about slots or directives, so it is sent only by a
/// device that has never run (the daemon's own reports carry those).
pub fn enrollment_report(
    cfg: &Config,
    key: &SigningKey,
    token: &str,
    now_ms: u64,
) -> Result<Vec<u8>, floe_wire::proto::SignedError> {
    let report = DeviceReport {
        schema: REPORT_SCHEMA,
        device_id: floe_wire::identity::device_id(key),
        public_key: Fixed(key.verifying_key().to_bytes()),
        seq: now_ms,
        facts: Facts {
            device_type: cfg.device_type.clone(),
            arch: cfg.arch.clone(),
            region: cfg.region.clone().unwrap_or_default(),
            labels: cfg
                .labels
                .iter()
                .take(floe_wire::proto::report::MAX_LABELS)
                .map(|(k, v)| Label {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        enroll_token: Some(token.to_string()),
        active: None,
        standby: None,
        last_known_good: None,
        on_trial: false,
        applied: None,
        health: None,
    };
    Envelope::sign(&report, &[key])?.to_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use floe_wire::proto::{ByteBuf, TrustedKey};

    const PEER: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    fn trust(seed: u8) -> (TrustStore, Vec<u8>) {
        let k = |s: u8| {
            TrustedKey::new(Fixed(
                SigningKey::from_bytes(&[s; 32]).verifying_key().to_bytes(),
            ))
        };
        let store = TrustStore::new(vec![k(seed)], k(seed.wrapping_add(1)));
        let bytes = Envelope::sign(&store, &[]).unwrap().to_bytes().unwrap();
        (store, bytes)
    }

    fn doc() -> JoinDoc {
        JoinDoc {
            version: 1,
            coordinators: vec!["http://10.0.0.2:7300".into()],
            fabric: vec![format!("/ip4/10.0.0.2/tcp/7301/p2p/{PEER}")],
            trust: ByteBuf(trust(3).1),
            token: "tok123".into(),
            expires_at_ms: u64::MAX,
            tls_pin: None,
        }
    }

    #[test]
    fn existing_keys_and_comments_stay_and_the_fleet_keys_are_set() {
        let existing = "# the site's settings\ndevice_type = \"rpi4\" # keep me\nhttp_listen = \"127.0.0.1:9200\"\nbootstrap_peers = [\"/ip4/1.1.1.1/tcp/1/p2p/old\"]\n\n[trial]\nmin_ready_seconds = 5\n";
        let settings = JoinSettings {
            data_dir: Some("/tmp/d".into()),
            labels: [("site".to_string(), "north".to_string())].into(),
            ..JoinSettings::default()
        };
        let j =
            render_config(Some(existing), Path::new("f.toml"), &doc(), &settings, true).unwrap();
        assert!(j.text.contains("# the site's settings"), "{}", j.text);
        assert!(j.text.contains("# keep me"), "{}", j.text);
        assert_eq!(j.config.device_type, "rpi4");
        assert_eq!(j.config.http_listen.port(), 9200);
        assert_eq!(j.config.trial.min_ready.as_secs(), 5);
        assert_eq!(j.config.bootstrap_peers, doc().fabric);
        assert_eq!(j.config.link.enroll_token.as_deref(), Some("tok123"));
        assert_eq!(j.config.listen, vec![DEFAULT_JOIN_LISTEN.to_string()]);
        assert_eq!(j.config.labels["site"], "north");
        assert_eq!(j.config.data_dir, Path::new("/tmp/d"));

        // Joining again with the same string changes nothing; once enrolled the token goes.
        let again =
            render_config(Some(&j.text), Path::new("f.toml"), &doc(), &settings, true).unwrap();
        assert_eq!(again.text, j.text);
        let done =
            render_config(Some(&j.text), Path::new("f.toml"), &doc(), &settings, false).unwrap();
        assert_eq!(done.config.link.enroll_token, None);
        assert!(!done.text.contains("tok123"));
    }

    #[test]
    fn a_new_file_needs_a_device_type_and_bad_files_are_named() {
        let err = render_config(
            None,
            Path::new("/etc/floe/floed.toml"),
            &doc(),
            &JoinSettings::default(),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("--device-type"), "{err}");
        let settings = JoinSettings {
            device_type: Some("jetson".into()),
            data_dir: Some("/var/lib/floe".into()),
            ..JoinSettings::default()
        };
        let j = render_config(None, Path::new("x"), &doc(), &settings, true).unwrap();
        assert_eq!(j.config.arch, floe_wire::artifact::native_arch());

        let err = render_config(
            Some("device_type = "),
            Path::new("x"),
            &doc(),
            &settings,
            true,
        )
        .unwrap_err();
        assert!(matches!(err, JoinConfigError::Existing { .. }), "{err}");
        // A file the daemon would refuse after the edit is refused before anything is written.
        let err = render_config(
            Some("no_such_key = 1\n"),
            Path::new("x"),
            &doc(),
            &settings,
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
        let err = render_config(
            Some("labels = 3\n"),
            Path::new("x"),
            &doc(),
            &JoinSettings {
                labels: [("a".to_string(), "b".to_string())].into(),
                ..settings
            },
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("`labels`"), "{err}");
    }

    #[test]
    fn the_installed_trust_store_tells_the_fleet() {
        let dir = tempfile::tempdir().unwrap();
        let (mine, _) = trust(3);
        assert_eq!(installed_fleet(dir.path(), &mine).unwrap(), None);
        floe_wire::artifact::keys::write_trust(dir.path(), &mine).unwrap();
        assert_eq!(installed_fleet(dir.path(), &mine).unwrap(), Some(true));
        assert_eq!(
            installed_fleet(dir.path(), &trust(90).0).unwrap(),
            Some(false)
        );
    }

    #[test]
    fn the_enrollment_report_is_signed_and_carries_the_token() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let settings = JoinSettings {
            device_type: Some("rpi4".into()),
            data_dir: Some("/d".into()),
            ..JoinSettings::default()
        };
        let j = render_config(None, Path::new("x"), &doc(), &settings, true).unwrap();
        let bytes = enrollment_report(&j.config, &key, "tok123", 1_700_000_000_000).unwrap();
        let r = floe_wire::proto::open_report(&bytes).unwrap();
        assert_eq!(r.enroll_token.as_deref(), Some("tok123"));
        assert_eq!(r.device_id, floe_wire::identity::device_id(&key));
        assert_eq!(r.facts.device_type, "rpi4");
        assert_eq!(r.seq, 1_700_000_000_000);
    }
}
