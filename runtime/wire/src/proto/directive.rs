//! Coordinator-signed directives: what one device should do next.
//!
//! Directives are desired state, not commands: each carries a per-device generation that only
//! grows, and a device applies the newest one it has verified. They are signed with the
//! coordinator key from the device's trust store, in the same [`Envelope`](super::Envelope)
//! as manifests.

use super::bytes::Digest;
use super::envelope::{Payload, Verified};
use super::manifest::check_name;
use super::sealed::{SEAL_OVERHEAD, SealedValue};
use crate::text::{check_var_name, check_var_value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The directive schema this code writes and reads.
pub const DIRECTIVE_SCHEMA: u32 = 1;
/// The largest encoded directive.
pub const MAX_DIRECTIVE_BYTES: usize = 4096;
/// Most flow variable values one directive carries.
pub const MAX_DIRECTIVE_VARS: usize = 16;
/// The most bytes of variable names and values together in one directive, so a directive
/// with every value still fits [`MAX_DIRECTIVE_BYTES`] (and a post fits one gossip message).
pub const MAX_DIRECTIVE_VARS_BYTES: usize = 2048;

/// What the device should do with the named artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Fetch, verify and install into the standby slot.
    Stage,
    /// Make the staged slot active.
    Switch,
    /// Keep the active slot; the previous one may be reused.
    Commit,
    /// Return to the named (earlier) release; lifts anti-rollback for exactly that release.
    Rollback,
}

impl Action {
    /// Every action, in lifecycle order.
    pub const ALL: [Action; 4] = [
        Action::Stage,
        Action::Switch,
        Action::Commit,
        Action::Rollback,
    ];

    /// The name this action has on the wire, in records and in audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stage => "stage",
            Action::Switch => "switch",
            Action::Commit => "commit",
            Action::Rollback => "rollback",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Action, UnknownName> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownName::new("action", s))
    }
}

/// A name that is not one of an enum's names (from `FromStr` on the proto enums).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {found:?}")]
pub struct UnknownName {
    /// What kind of name it should have been ("action", "progress" …).
    pub what: &'static str,
    /// The name found (at most 64 characters of it).
    pub found: String,
}

impl UnknownName {
    pub(crate) fn new(what: &'static str, found: &str) -> UnknownName {
        UnknownName {
            what,
            found: found.chars().take(64).collect(),
        }
    }
}

/// The artifact a directive is about, pinned by manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRef {
    /// The artifact name (the flow id).
    pub name: String,
    /// Its release number.
    pub release: u64,
    /// SHA-256 of the manifest's exact bytes.
    pub manifest_sha256: Digest,
}

/// One coordinator directive for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directive {
    /// Always [`DIRECTIVE_SCHEMA`].
    pub schema: u32,
    /// The device it is for.
    pub device_id: String,
    /// Per-device generation; only grows.
    pub generation: u64,
    /// What to do.
    pub action: Action,
    /// The artifact concerned.
    pub artifact: ArtifactRef,
    /// When it was issued, unix seconds.
    pub issued_at: u64,
    /// When it stops being valid, unix seconds.
    pub expires: u64,
    /// The device's values for the flow's variables (name → value as text), resolved by the
    /// coordinator for this device (device value over group value); a Stage carries them and
    /// the device runs the staged flow with them. Absent on the wire when empty, so
    /// directives without values keep their encoding.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The device's values of secret variables, each sealed to this device's key
    /// ([`super::sealed`]); never in clear on the wire. A name is in `vars` or here, not both;
    /// both count towards [`MAX_DIRECTIVE_VARS`] and [`MAX_DIRECTIVE_VARS_BYTES`]. Absent on
    /// the wire when empty (directives without secrets keep their encoding).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_vars: BTreeMap<String, SealedValue>,
}

/// Checks a set of variable values a directive may carry: at most [`MAX_DIRECTIVE_VARS`],
/// names and values by the text rules, at most [`MAX_DIRECTIVE_VARS_BYTES`] in all. The
/// error names the variable.
pub fn check_directive_vars(vars: &BTreeMap<String, String>) -> Result<(), String> {
    if vars.len() > MAX_DIRECTIVE_VARS {
        return Err(format!(
            "{} variable values, at most {MAX_DIRECTIVE_VARS} allowed",
            vars.len()
        ));
    }
    let mut total = 0usize;
    for (name, value) in vars {
        check_var_name("variable name", name).map_err(|e| e.to_string())?;
        check_var_value(&format!("variable {name}"), value).map_err(|e| e.to_string())?;
        total = total.saturating_add(name.len()).saturating_add(value.len());
    }
    if total > MAX_DIRECTIVE_VARS_BYTES {
        return Err(format!(
            "variable names and values are {total} bytes, at most {MAX_DIRECTIVE_VARS_BYTES} allowed"
        ));
    }
    Ok(())
}

/// Checks a directive's sealed values together with its clear ones (`vars`, already checked by
/// [`check_directive_vars`]): valid names, none also in `vars`, each at most a sealed
/// [`MAX_VAR_VALUE_BYTES`](crate::text::MAX_VAR_VALUE_BYTES) value, and the count and bytes
/// of both within [`MAX_DIRECTIVE_VARS`] and [`MAX_DIRECTIVE_VARS_BYTES`]. The error names the
/// variable.
pub fn check_directive_secrets(
    vars: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, SealedValue>,
) -> Result<(), String> {
    if secrets.is_empty() {
        return Ok(());
    }
    let count = vars.len().saturating_add(secrets.len());
    if count > MAX_DIRECTIVE_VARS {
        return Err(format!(
            "{count} variable values (with secret ones), at most {MAX_DIRECTIVE_VARS} allowed"
        ));
    }
    let max_sealed = crate::text::MAX_VAR_VALUE_BYTES + SEAL_OVERHEAD;
    let mut total = vars.iter().fold(0usize, |t, (k, v)| {
        t.saturating_add(k.len()).saturating_add(v.len())
    });
    for (name, sealed) in secrets {
        check_var_name("secret variable name", name).map_err(|e| e.to_string())?;
        if vars.contains_key(name) {
            return Err(format!(
                "variable {name} has both a clear and a secret value"
            ));
        }
        if sealed.0.len() < SEAL_OVERHEAD || sealed.0.len() > max_sealed {
            return Err(format!(
                "secret variable {name}: sealed value is {} bytes, {SEAL_OVERHEAD} to {max_sealed} allowed",
                sealed.0.len()
            ));
        }
        total = total
            .saturating_add(name.len())
            .saturating_add(sealed.0.len());
    }
    if total > MAX_DIRECTIVE_VARS_BYTES {
        return Err(format!(
            "variable names and values (secret ones sealed) are {total} bytes, at most {MAX_DIRECTIVE_VARS_BYTES} allowed"
        ));
    }
    Ok(())
}

impl Payload for Directive {
    const KIND: &'static str = "directive";
    const MAX_BYTES: usize = MAX_DIRECTIVE_BYTES;

    fn check(&self) -> Result<(), String> {
        if self.schema != DIRECTIVE_SCHEMA {
            return Err(format!(
                "directive schema {} is not supported (expected {DIRECTIVE_SCHEMA})",
                self.schema
            ));
        }
        if self.device_id.is_empty() || self.device_id.len() > 128 {
            return Err("device_id must be 1 to 128 bytes".to_string());
        }
        check_name("artifact name", &self.artifact.name)?;
        check_directive_vars(&self.vars)?;
        check_directive_secrets(&self.vars, &self.secret_vars)?;
        if self.expires <= self.issued_at {
            return Err(format!(
                "expires ({}) is not after issued_at ({})",
                self.expires, self.issued_at
            ));
        }
        Ok(())
    }
}

/// Why a verified directive is not applied on this device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveRefusal {
    /// It names another device.
    #[error("directive is for device {found:?}, expected {expected:?}")]
    Device {
        /// This device's id.
        expected: String,
        /// The directive's device id.
        found: String,
    },
    /// It is not newer than the one already applied.
    #[error("directive generation {found} is not newer than applied generation {expected}")]
    Stale {
        /// The generation already applied.
        expected: u64,
        /// The directive's generation.
        found: u64,
    },
    /// It expired.
    #[error("directive expired: valid until {expires}, now is {now}")]
    Expired {
        /// The directive's expiry.
        expires: u64,
        /// The device's clock.
        now: u64,
    },
}

/// Decides whether a directive (already signature-checked against the coordinator key) is
/// the next one this device applies: it must name this device, be newer than the generation
/// applied so far, and not have expired at `now`.
pub fn accept_directive(
    directive: &Verified<Directive>,
    device_id: &str,
    applied_generation: Option<u64>,
    now: u64,
) -> Result<(), DirectiveRefusal> {
    let d = &directive.value;
    if d.device_id != device_id {
        return Err(DirectiveRefusal::Device {
            expected: device_id.to_string(),
            found: d.device_id.clone(),
        });
    }
    if let Some(applied) = applied_generation
        && d.generation <= applied
    {
        return Err(DirectiveRefusal::Stale {
            expected: applied,
            found: d.generation,
        });
    }
    if now >= d.expires {
        return Err(DirectiveRefusal::Expired {
            expires: d.expires,
            now,
        });
    }
    Ok(())
}
