//! What devices and the coordinator say to each other besides manifests and directives: the
//! device's signed status report, and the post that carries a directive with its manifest.
//!
//! The device is the source of truth about itself (DESIGN.md): its report says which release
//! each slot holds, which directive generation it has reached and how that went, and its
//! health. The report is signed with the device's own key (the same ed25519 key as its libp2p
//! peer id), so the coordinator can tell a device's word from a relay's, and so enrollment can
//! bind a device id to a public key once and check every later report against it.
//!
//! A [`DirectivePost`] is what travels on `floe/directive/1` and in direct replies: the signed
//! directive and the signed manifest it names, so a device that has never seen the artifact
//! can verify it and fetch its chunks with nothing else. The post itself is not signed; both
//! halves are, by different keys (coordinator and release), and each is checked over its exact
//! bytes before use.

use super::bytes::{ByteBuf, PublicKeyBytes};
use super::cbor::{self, CborError};
use super::directive::{Action, MAX_DIRECTIVE_BYTES};
use super::envelope::{ENVELOPE_OVERHEAD, Envelope, Payload, SignedError, TrustedKey, open};
use super::manifest::{MAX_MANIFEST_BYTES, check_name};
use crate::text::{
    MAX_ARCH_BYTES, MAX_DEVICE_TYPE_BYTES, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES,
    MAX_REGION_BYTES,
};
use serde::{Deserialize, Serialize};

/// The report schema this code writes and reads.
pub const REPORT_SCHEMA: u32 = 1;
/// The largest encoded report payload.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;
/// The post schema this code writes and reads.
pub const POST_SCHEMA: u32 = 1;
/// The largest directive post: a directive envelope plus a manifest envelope.
///
/// Posts travel on gossip, whose messages the fabric caps at 16 KiB; 14 KiB leaves room for
/// gossipsub's framing. A flow manifest is a few hundred bytes, and a 64 MiB artifact in 1 MiB
/// chunks has a manifest of about 2.5 KiB, so this bounds artifacts at roughly 300 chunks.
pub const MAX_POST_BYTES: usize = 14 * 1024;
/// Most labels a device reports.
pub const MAX_LABELS: usize = crate::text::MAX_LABELS;
/// Longest free-text detail in a report.
pub const MAX_DETAIL_BYTES: usize = 512;

/// A label of the device (`site=north`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// What the device is, from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// Hardware type (`rpi4`, `jetson-nano`).
    pub device_type: String,
    /// CPU architecture (`aarch64`, `armv7`, `x86_64`).
    pub arch: String,
    /// Deployment region.
    pub region: String,
    /// Labels, sorted by key, keys unique.
    pub labels: Vec<Label>,
    /// The floed version.
    pub runtime_version: String,
}

/// What one slot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotInfo {
    /// `blue` or `green`.
    pub slot: String,
    /// The artifact name (flow id).
    pub name: String,
    /// Its release number.
    pub release: u64,
    /// Its semantic version.
    pub version: String,
}

/// How the device is getting on with a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// Accepted and being carried out (fetching, smoke test, trial).
    Working,
    /// Carried out: staged (stage), switched and healthy through its trial (switch), committed
    /// (commit), back on the earlier release (rollback).
    Done,
    /// Could not be carried out (fetch, verify, smoke test, refused); the device is unchanged.
    Failed,
    /// The device switched, the new release misbehaved, and the device went back to its
    /// previous slot by itself.
    RolledBack,
}

impl Progress {
    /// Every progress value.
    pub const ALL: [Progress; 4] = [
        Progress::Working,
        Progress::Done,
        Progress::Failed,
        Progress::RolledBack,
    ];

    /// The name this value has on the wire, in records and in audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Progress::Working => "working",
            Progress::Done => "done",
            Progress::Failed => "failed",
            Progress::RolledBack => "rolled_back",
        }
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Progress {
    type Err = super::directive::UnknownName;

    fn from_str(s: &str) -> Result<Progress, Self::Err> {
        Progress::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| super::directive::UnknownName::new("progress", s))
    }
}

/// The newest directive the device has verified and accepted, and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applied {
    /// The directive's generation.
    pub generation: u64,
    /// Its action.
    pub action: Action,
    /// The artifact name it was about.
    pub name: String,
    /// The release it was about.
    pub release: u64,
    /// How it is going.
    pub progress: Progress,
    /// A sentence on why, when it failed or rolled back (empty otherwise).
    pub detail: String,
}

/// Overall health as the device's four-layer check rates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthLevel {
    /// Healthy.
    Healthy,
    /// Working but degraded.
    Degraded,
    /// Unhealthy.
    Unhealthy,
}

impl HealthLevel {
    /// The name this level has on the wire and in the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthLevel::Healthy => "healthy",
            HealthLevel::Degraded => "degraded",
            HealthLevel::Unhealthy => "unhealthy",
        }
    }
}

impl std::fmt::Display for HealthLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The health figures a gate needs, as integers so the encoding has one form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSummary {
    /// The overall status.
    pub status: HealthLevel,
    /// Whether a flow is running.
    pub flow_running: bool,
    /// Node error rate over the health window, in parts per million of messages.
    pub error_rate_ppm: u32,
    /// P95 message latency over the window, in microseconds.
    pub p95_us: u32,
    /// Resident memory of floed, in KiB.
    pub memory_kib: u32,
    /// Flow restarts since the last switch (node restarts of the running flow and floed
    /// restarts while on trial; zero again after every switch).
    pub restarts: u32,
    /// The device's system figures (003 health check layer 2, and layer 4's result), absent
    /// when the device sends none. Devices older than the field never send it; a coordinator
    /// older than the field refuses reports that carry it (`deny_unknown_fields`), so the
    /// coordinator is upgraded before the devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemSummary>,
}

/// A device's system figures as integers (one encoding each). Every field is optional: a
/// figure the device could not read (no thermal zone, no throttling counter) is absent, which
/// means unknown, never zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSummary {
    /// CPU use of the whole device since its previous sample, in permille of all cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_permille: Option<u16>,
    /// Memory in use on the whole device (MemTotal − MemAvailable), in permille of MemTotal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_permille: Option<u16>,
    /// The hottest thermal zone, in millidegrees Celsius.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_mc: Option<i32>,
    /// Whether the device is throttled (firmware's throttle flags, or a zone at or above its
    /// passive trip point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled: Option<bool>,
    /// Free space (for unprivileged users) on the data directory's filesystem, in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_mb: Option<u32>,
    /// Used space on the data directory's filesystem, in permille (as `df` computes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_permille: Option<u16>,
    /// The functional check's result for the running version (003 layer 4), absent when no
    /// smoke test ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functional_ok: Option<bool>,
}

/// The coldest and hottest temperature a report may carry, in millidegrees Celsius: beyond
/// these a sensor is broken, and the device leaves the figure out instead.
pub const TEMPERATURE_MC_RANGE: std::ops::RangeInclusive<i32> = -100_000..=200_000;

impl SystemSummary {
    /// Whether it carries no figure at all.
    pub fn is_empty(&self) -> bool {
        *self == SystemSummary::default()
    }

    /// Checks every figure against its range; the error names the field and the value.
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("health.system.cpu_permille", self.cpu_permille),
            ("health.system.memory_permille", self.memory_permille),
            ("health.system.disk_used_permille", self.disk_used_permille),
        ] {
            if let Some(v) = value
                && v > 1000
            {
                return Err(format!("{field} is {v}, at most 1000 (permille)"));
            }
        }
        if let Some(t) = self.temperature_mc
            && !TEMPERATURE_MC_RANGE.contains(&t)
        {
            return Err(format!(
                "health.system.temperature_mc is {t}, outside {}..={} (millidegrees Celsius)",
                TEMPERATURE_MC_RANGE.start(),
                TEMPERATURE_MC_RANGE.end()
            ));
        }
        if self.is_empty() {
            return Err(
                "health.system carries no figure; leave it out instead (one encoding)".into(),
            );
        }
        Ok(())
    }
}

/// A device's signed report about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceReport {
    /// Always [`REPORT_SCHEMA`].
    pub schema: u32,
    /// The device id.
    pub device_id: String,
    /// The device's ed25519 public key; the report must be signed by it.
    pub public_key: PublicKeyBytes,
    /// Grows with every report this device sends (unix milliseconds at sending, kept
    /// strictly increasing by the sender), so a replayed or reordered report is recognised.
    pub seq: u64,
    /// What the device is.
    pub facts: Facts,
    /// A one-time enrollment token, sent until the coordinator has accepted the device.
    pub enroll_token: Option<String>,
    /// The slot the device runs now, if any.
    pub active: Option<SlotInfo>,
    /// The other slot, if it holds a release.
    pub standby: Option<SlotInfo>,
    /// The slot the device would fall back to (its last committed release), if any.
    pub last_known_good: Option<SlotInfo>,
    /// Whether the active slot is on trial.
    pub on_trial: bool,
    /// The newest directive accepted, if any.
    pub applied: Option<Applied>,
    /// Health, if the device has sampled it.
    pub health: Option<HealthSummary>,
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    crate::text::check_text(field, value, max).map_err(|e| e.to_string())
}

fn check_slot(field: &str, slot: &SlotInfo) -> Result<(), String> {
    if slot.slot != "blue" && slot.slot != "green" {
        return Err(format!(
            "{field}.slot must be blue or green, not {:?}",
            slot.slot
        ));
    }
    check_name(&format!("{field}.name"), &slot.name)?;
    check_text(&format!("{field}.version"), &slot.version, 64)
}

impl Payload for DeviceReport {
    const KIND: &'static str = "report";
    const MAX_BYTES: usize = MAX_REPORT_BYTES;

    fn check(&self) -> Result<(), String> {
        if self.schema != REPORT_SCHEMA {
            return Err(format!(
                "report schema {} is not supported (expected {REPORT_SCHEMA})",
                self.schema
            ));
        }
        if self.device_id.is_empty() || self.device_id.len() > 128 {
            return Err("device_id must be 1 to 128 bytes".to_string());
        }
        check_text("device_id", &self.device_id, 128)?;
        check_text(
            "facts.device_type",
            &self.facts.device_type,
            MAX_DEVICE_TYPE_BYTES,
        )?;
        check_text("facts.arch", &self.facts.arch, MAX_ARCH_BYTES)?;
        check_text("facts.region", &self.facts.region, MAX_REGION_BYTES)?;
        check_text("facts.runtime_version", &self.facts.runtime_version, 64)?;
        if self.facts.labels.len() > MAX_LABELS {
            return Err(format!(
                "facts.labels has {} entries, at most {MAX_LABELS} allowed",
                self.facts.labels.len()
            ));
        }
        for pair in self.facts.labels.windows(2) {
            if pair[0].key >= pair[1].key {
                return Err(format!(
                    "facts.labels must be sorted by key without repeats ({:?} then {:?})",
                    pair[0].key, pair[1].key
                ));
            }
        }
        for label in &self.facts.labels {
            check_text("facts.labels key", &label.key, MAX_LABEL_KEY_BYTES)?;
            check_text("facts.labels value", &label.value, MAX_LABEL_VALUE_BYTES)?;
        }
        if let Some(token) = &self.enroll_token {
            check_text("enroll_token", token, 128)?;
        }
        for (field, slot) in [
            ("active", &self.active),
            ("standby", &self.standby),
            ("last_known_good", &self.last_known_good),
        ] {
            if let Some(slot) = slot {
                check_slot(field, slot)?;
            }
        }
        if let Some(applied) = &self.applied {
            check_name("applied.name", &applied.name)?;
            check_text("applied.detail", &applied.detail, MAX_DETAIL_BYTES)?;
        }
        if let Some(system) = self.health.as_ref().and_then(|h| h.system.as_ref()) {
            system.check()?;
        }
        Ok(())
    }
}

/// A signed directive with the signed manifest of the artifact it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectivePost {
    /// Always [`POST_SCHEMA`].
    pub schema: u32,
    /// The directive envelope's exact bytes (signed by the coordinator key).
    pub directive: ByteBuf,
    /// The manifest envelope's exact bytes (signed by the release keys).
    pub manifest: ByteBuf,
}

/// Why a post could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The bytes are not a canonical post within the size cap.
    #[error("directive post: {0}")]
    Decode(#[from] CborError),
    /// The post decoded but breaks a rule.
    #[error("directive post: {0}")]
    Invalid(String),
}

impl DirectivePost {
    /// Encodes the post.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CborError> {
        cbor::encode(self)
    }

    /// Decodes a post: size cap first, then the canonical decode, then the schema and the
    /// caps of its two halves. The halves are still unverified envelopes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PostError> {
        let post: DirectivePost = cbor::decode_canonical(bytes, MAX_POST_BYTES)?;
        if post.schema != POST_SCHEMA {
            return Err(PostError::Invalid(format!(
                "schema {} is not supported (expected {POST_SCHEMA})",
                post.schema
            )));
        }
        if post.directive.0.len() > MAX_DIRECTIVE_BYTES + ENVELOPE_OVERHEAD {
            return Err(PostError::Invalid(format!(
                "directive envelope is {} bytes, at most {} allowed",
                post.directive.0.len(),
                MAX_DIRECTIVE_BYTES + ENVELOPE_OVERHEAD
            )));
        }
        if post.manifest.0.len() > MAX_MANIFEST_BYTES + ENVELOPE_OVERHEAD {
            return Err(PostError::Invalid(format!(
                "manifest envelope is {} bytes, at most {} allowed",
                post.manifest.0.len(),
                MAX_MANIFEST_BYTES + ENVELOPE_OVERHEAD
            )));
        }
        Ok(post)
    }
}

/// Opens a device report signed by `key` (the key the receiver already holds for this device,
/// from enrollment or from the sending peer's id): signatures are checked over the exact bytes
/// before the payload is decoded, and the report must name the same key.
pub fn open_report_from(bytes: &[u8], key: &PublicKeyBytes) -> Result<DeviceReport, SignedError> {
    let verified = open::<DeviceReport>(bytes, &[TrustedKey::new(*key)], 1)?;
    if verified.value.public_key != *key {
        return Err(SignedError::Check(format!(
            "report names key {} but is signed by {}",
            verified.value.public_key.to_hex(),
            key.to_hex()
        )));
    }
    Ok(verified.value)
}

/// Opens a self-certifying report from a device whose key the receiver does not hold yet
/// (enrollment): the payload is decoded (after the size cap and the canonical pre-scan) to
/// learn the key it names, and the report is accepted only if signed by that key. Whether the
/// key may speak for the device id is the receiver's decision (enrollment token or allowlist).
pub fn open_report(bytes: &[u8]) -> Result<DeviceReport, SignedError> {
    let envelope = Envelope::from_bytes::<DeviceReport>(bytes)?;
    let claimed: DeviceReport = cbor::decode_canonical(&envelope.payload.0, MAX_REPORT_BYTES)
        .map_err(SignedError::Decode)?;
    let verified = envelope.verify::<DeviceReport>(&[TrustedKey::new(claimed.public_key)], 1)?;
    Ok(verified.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ArtifactRef, Digest, Directive, Fixed};
    use ed25519_dalek::SigningKey;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn report(k: &SigningKey) -> DeviceReport {
        DeviceReport {
            schema: REPORT_SCHEMA,
            device_id: "dev-001".into(),
            public_key: Fixed(k.verifying_key().to_bytes()),
            seq: 1_700_000_000_000,
            facts: Facts {
                device_type: "rpi4".into(),
                arch: "aarch64".into(),
                region: "eu".into(),
                labels: vec![
                    Label {
                        key: "floor".into(),
                        value: "2".into(),
                    },
                    Label {
                        key: "site".into(),
                        value: "north".into(),
                    },
                ],
                runtime_version: "0.1.0".into(),
            },
            enroll_token: Some("tok".into()),
            active: Some(SlotInfo {
                slot: "blue".into(),
                name: "temperature-alert".into(),
                release: 3,
                version: "1.0.3".into(),
            }),
            standby: None,
            last_known_good: None,
            on_trial: true,
            applied: Some(Applied {
                generation: 7,
                action: Action::Switch,
                name: "temperature-alert".into(),
                release: 3,
                progress: Progress::Working,
                detail: String::new(),
            }),
            health: Some(HealthSummary {
                status: HealthLevel::Healthy,
                flow_running: true,
                error_rate_ppm: 0,
                p95_us: 120,
                memory_kib: 9000,
                restarts: 0,
                system: None,
            }),
        }
    }

    #[test]
    fn signed_report_opens_with_and_without_a_known_key() {
        let k = key(1);
        let r = report(&k);
        let bytes = Envelope::sign(&r, &[&k]).unwrap().to_bytes().unwrap();
        assert_eq!(open_report(&bytes).unwrap(), r);
        assert_eq!(open_report_from(&bytes, &r.public_key).unwrap(), r);
    }

    #[test]
    fn report_signed_by_another_key_is_refused() {
        let k = key(1);
        let other = key(2);
        let r = report(&k);
        // Signed by a key other than the one it names: self-certification fails.
        let bytes = Envelope::sign(&r, &[&other]).unwrap().to_bytes().unwrap();
        assert!(matches!(
            open_report(&bytes),
            Err(SignedError::Threshold { .. })
        ));
        // A receiver that holds the signer's key still refuses a report naming another key.
        let err = open_report_from(&bytes, &Fixed(other.verifying_key().to_bytes())).unwrap_err();
        assert!(err.to_string().contains("names key"), "{err}");
    }

    #[test]
    fn report_rules_name_the_field() {
        let k = key(1);
        let mut r = report(&k);
        r.facts.labels.reverse();
        let err = Envelope::sign(&r, &[&k]).unwrap_err().to_string();
        assert!(err.contains("facts.labels"), "{err}");
        let mut r = report(&k);
        r.active.as_mut().unwrap().slot = "red".into();
        let err = Envelope::sign(&r, &[&k]).unwrap_err().to_string();
        assert!(err.contains("active.slot"), "{err}");
        let mut r = report(&k);
        r.applied.as_mut().unwrap().detail = "x".repeat(MAX_DETAIL_BYTES + 1);
        let err = Envelope::sign(&r, &[&k]).unwrap_err().to_string();
        assert!(err.contains("applied.detail"), "{err}");
    }

    fn figures() -> SystemSummary {
        SystemSummary {
            cpu_permille: Some(125),
            memory_permille: Some(640),
            temperature_mc: Some(61_500),
            throttled: Some(false),
            disk_free_mb: Some(11_000),
            disk_used_permille: Some(300),
            functional_ok: Some(true),
        }
    }

    #[test]
    fn system_figures_round_trip_and_absent_figures_stay_absent() {
        let k = key(1);
        let mut r = report(&k);
        r.health.as_mut().unwrap().system = Some(figures());
        let bytes = Envelope::sign(&r, &[&k]).unwrap().to_bytes().unwrap();
        assert_eq!(open_report(&bytes).unwrap(), r);
        // Only some figures known: the others are absent on the wire and decode as unknown.
        let partial = SystemSummary {
            memory_permille: Some(999),
            ..SystemSummary::default()
        };
        r.health.as_mut().unwrap().system = Some(partial);
        let payload = cbor::encode(&r).unwrap();
        let back: DeviceReport = cbor::decode_canonical(&payload, MAX_REPORT_BYTES).unwrap();
        assert_eq!(back.health.unwrap().system, Some(partial));
        let text = format!(
            "{:?}",
            ciborium::de::from_reader::<ciborium::Value, _>(&payload[..])
        );
        assert!(!text.contains("temperature_mc"), "{text}");
    }

    #[test]
    fn a_report_without_system_figures_encodes_as_before_the_field() {
        // An old device's summary has no `system` key; it must decode on a new coordinator,
        // and a new device that knows no figure sends exactly the old bytes.
        #[derive(Serialize)]
        struct OldSummary {
            status: HealthLevel,
            flow_running: bool,
            error_rate_ppm: u32,
            p95_us: u32,
            memory_kib: u32,
            restarts: u32,
        }
        let old = OldSummary {
            status: HealthLevel::Degraded,
            flow_running: true,
            error_rate_ppm: 12,
            p95_us: 340,
            memory_kib: 8000,
            restarts: 1,
        };
        let bytes = cbor::encode(&old).unwrap();
        let new: HealthSummary = cbor::decode_canonical(&bytes, 1024).unwrap();
        assert_eq!(new.system, None);
        assert_eq!(new.restarts, 1);
        assert_eq!(cbor::encode(&new).unwrap(), bytes);
    }

    #[test]
    fn bad_system_figures_are_refused_naming_the_field() {
        let k = key(1);
        let cases: [(SystemSummary, &str); 5] = [
            (
                SystemSummary {
                    cpu_permille: Some(1001),
                    ..figures()
                },
                "health.system.cpu_permille is 1001",
            ),
            (
                SystemSummary {
                    memory_permille: Some(5000),
                    ..figures()
                },
                "health.system.memory_permille",
            ),
            (
                SystemSummary {
                    disk_used_permille: Some(u16::MAX),
                    ..figures()
                },
                "health.system.disk_used_permille",
            ),
            (
                SystemSummary {
                    temperature_mc: Some(250_000),
                    ..figures()
                },
                "health.system.temperature_mc is 250000",
            ),
            (SystemSummary::default(), "carries no figure"),
        ];
        for (system, want) in cases {
            let mut r = report(&k);
            r.health.as_mut().unwrap().system = Some(system);
            let err = Envelope::sign(&r, &[&k]).unwrap_err().to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
        // A field the decoder does not know is refused (what an old coordinator does to a
        // new device's figures): the coordinator must be upgraded first.
        #[derive(Serialize)]
        struct Future {
            cpu_permille: u16,
            gpu_permille: u16,
        }
        let bytes = cbor::encode(&Future {
            cpu_permille: 1,
            gpu_permille: 2,
        })
        .unwrap();
        let err = cbor::decode_canonical::<SystemSummary>(&bytes, 1024).unwrap_err();
        assert!(err.to_string().contains("gpu_permille"), "{err}");
    }

    #[test]
    fn post_round_trips_and_refuses_oversized_or_foreign_bytes() {
        let k = key(3);
        let directive = Directive {
            schema: crate::proto::directive::DIRECTIVE_SCHEMA,
            device_id: "dev-001".into(),
            generation: 1,
            action: Action::Stage,
            artifact: ArtifactRef {
                name: "temperature-alert".into(),
                release: 1,
                manifest_sha256: Digest::of(b"m"),
            },
            issued_at: 10,
            expires: 20,
            vars: Default::default(),
            secret_vars: Default::default(),
        };
        let env = Envelope::sign(&directive, &[&k])
            .unwrap()
            .to_bytes()
            .unwrap();
        let post = DirectivePost {
            schema: POST_SCHEMA,
            directive: ByteBuf(env),
            manifest: ByteBuf(vec![1, 2, 3]),
        };
        let bytes = post.to_bytes().unwrap();
        assert_eq!(DirectivePost::from_bytes(&bytes).unwrap(), post);
        assert!(matches!(
            DirectivePost::from_bytes(&vec![0u8; MAX_POST_BYTES + 1]),
            Err(PostError::Decode(CborError::TooLarge { .. }))
        ));
        assert!(DirectivePost::from_bytes(b"\xff\x00garbage").is_err());
        let wrong = DirectivePost { schema: 9, ..post };
        let err = DirectivePost::from_bytes(&wrong.to_bytes().unwrap()).unwrap_err();
        assert!(err.to_string().contains("schema 9"), "{err}");
    }
}
