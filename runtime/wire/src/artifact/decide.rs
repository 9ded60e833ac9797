//! The install decision: may this verified manifest be installed on this device, now?
//!
//! A pure function of its inputs (the clock comes in as `now`), so every refusal is easy to
//! test and the same rules run on devices and in the coordinator's pre-flight checks. The
//! checks follow the reference's "Artifact Integrity Verification" list (architecture,
//! version, `device.free_disk > artifact.size * 2`, "room for rollback copy") plus TUF-style
//! freshness and anti-rollback. Each refusal is its own variant and says what was expected
//! and what was found.

use crate::proto::cbor::Shared;
use crate::proto::{Action, Directive, Manifest, Verified};

/// This build's CPU architecture in the names manifests use (`aarch64`, `armv7`, `x86_64` …).
///
/// `std::env::consts::ARCH` says `arm` for every 32-bit ARM, but a bundle built for ARMv7
/// (the Raspberry Pi 2 and later in 32-bit mode) runs only there, so manifests name `armv7`
/// and ARMv6 builds (Pi Zero, Pi 1) say `armv6`; other architectures keep Rust's name. The
/// build script reads it off the target triple.
pub const fn native_arch() -> &'static str {
    env!("FLOE_NATIVE_ARCH")
}

/// What the device knows about itself at decision time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// This device's id (rollback directives must name it).
    pub device_id: String,
    /// The CPU architecture (`aarch64`, `armv7`, `x86_64`).
    pub arch: String,
    /// The device type (`rpi4`, `jetson-nano` …).
    pub device_type: String,
    /// The running runtime's semantic version.
    pub runtime_version: String,
    /// Free bytes in the data directory's file system.
    pub free_disk: u64,
    /// The current time, unix seconds.
    pub now: u64,
}

/// Why a manifest may not be installed here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A release number this device has seen before, signed with different content.
    #[error(
        "{name} release {release} was seen before with manifest {seen}, now with {found}: a \
         release number names one content for ever"
    )]
    ReleaseReused {
        /// The artifact name.
        name: String,
        /// The release number.
        release: u64,
        /// The manifest digest seen first (hex).
        seen: String,
        /// The manifest digest offered now (hex).
        found: String,
    },
    /// The manifest says it was created later than the device's clock allows.
    #[error(
        "manifest created in the future: created {created}, now is {now} (at most \
         {MAX_CLOCK_SKEW_SECS} s of clock skew is allowed)"
    )]
    CreatedInFuture {
        /// The manifest's creation time, unix seconds.
        created: u64,
        /// The device's clock.
        now: u64,
    },
    /// The manifest expired.
    #[error("manifest expired: valid until {expires}, now is {now}")]
    Expired {
        /// The manifest's expiry, unix seconds.
        expires: u64,
        /// The device's clock.
        now: u64,
    },
    /// The device's architecture is not listed.
    #[error("wrong architecture: expected one of {expected:?}, found {found:?}")]
    Architecture {
        /// The manifest's list.
        expected: Vec<String>,
        /// This device's architecture.
        found: String,
    },
    /// The device's type is not listed.
    #[error("wrong device type: expected one of {expected:?}, found {found:?}")]
    DeviceType {
        /// The manifest's list.
        expected: Vec<String>,
        /// This device's type.
        found: String,
    },
    /// The runtime is older than the manifest needs.
    #[error("runtime too old: expected at least {expected}, found {found}")]
    RuntimeTooOld {
        /// The manifest's minimum.
        expected: String,
        /// This runtime's version.
        found: String,
    },
    /// Not enough free disk for the artifact and a rollback copy.
    #[error(
        "not enough free disk: expected more than {expected} bytes (twice the artifact), found {found}"
    )]
    DiskSpace {
        /// Twice the artifact's size.
        expected: u64,
        /// Free bytes.
        found: u64,
    },
    /// A lower release than one already installed, with no rollback directive.
    #[error(
        "release {found} of {name} is lower than installed release {expected} and no rollback directive names it"
    )]
    Rollback {
        /// The artifact name.
        name: String,
        /// The highest release installed.
        expected: u64,
        /// The manifest's release.
        found: u64,
    },
    /// A rollback directive was given but does not permit this install.
    #[error("rollback directive does not apply: expected {expected}, found {found}")]
    Directive {
        /// What the directive needed to say.
        expected: String,
        /// What it says.
        found: String,
    },
    /// A version string could not be parsed.
    #[error("{what} {value:?} is not a semantic version")]
    Version {
        /// Which version.
        what: &'static str,
        /// The text.
        value: String,
        /// The parser's error (shared so that a refusal stays `Clone` and comparable).
        #[source]
        source: Shared<semver::Error>,
    },
}

/// Checks that `directive` permits installing release `release` of `name` (and, when given,
/// exactly the manifest with digest `digest`) on `device_id` at `now`.
pub fn check_rollback_directive(
    directive: &Verified<Directive>,
    name: &str,
    release: u64,
    digest: Option<&crate::proto::Digest>,
    device_id: Option<&str>,
    now: Option<u64>,
) -> Result<(), Refusal> {
    let d = &directive.value;
    let mismatch = |expected: String, found: String| Err(Refusal::Directive { expected, found });
    if d.action != Action::Rollback {
        return mismatch(
            "action rollback".into(),
            format!("action {:?}", d.action).to_lowercase(),
        );
    }
    if d.artifact.name != name || d.artifact.release != release {
        return mismatch(
            format!("{name} release {release}"),
            format!("{} release {}", d.artifact.name, d.artifact.release),
        );
    }
    if let Some(digest) = digest
        && &d.artifact.manifest_sha256 != digest
    {
        return mismatch(
            format!("manifest sha256 {digest}"),
            format!("manifest sha256 {}", d.artifact.manifest_sha256),
        );
    }
    if let Some(device_id) = device_id
        && d.device_id != device_id
    {
        return mismatch(
            format!("device {device_id}"),
            format!("device {}", d.device_id),
        );
    }
    if let Some(now) = now
        && now >= d.expires
    {
        return mismatch(
            format!("a directive valid at {now}"),
            format!("one that expired at {}", d.expires),
        );
    }
    Ok(())
}

/// How far ahead of the device's clock a manifest's creation time may be: ten minutes. More
/// means a wrong clock somewhere, or a manifest minted to outlive its stated lifetime.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// Decides whether `manifest` may be installed on the device described by `facts`, given the
/// highest release of the same name installed so far and an optional rollback directive.
pub fn install_decision(
    manifest: &Verified<Manifest>,
    facts: &DeviceFacts,
    highest_installed: Option<u64>,
    rollback: Option<&Verified<Directive>>,
) -> Result<(), Refusal> {
    let m = &manifest.value;
    if m.created > facts.now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(Refusal::CreatedInFuture {
            created: m.created,
            now: facts.now,
        });
    }
    if facts.now >= m.expires {
        return Err(Refusal::Expired {
            expires: m.expires,
            now: facts.now,
        });
    }
    if !m.archs.iter().any(|a| a == &facts.arch) {
        return Err(Refusal::Architecture {
            expected: m.archs.clone(),
            found: facts.arch.clone(),
        });
    }
    if !m.device_types.is_empty() && !m.device_types.iter().any(|t| t == &facts.device_type) {
        return Err(Refusal::DeviceType {
            expected: m.device_types.clone(),
            found: facts.device_type.clone(),
        });
    }
    let parse = |what: &'static str, value: &str| {
        semver::Version::parse(value).map_err(|e| Refusal::Version {
            what,
            value: value.to_string(),
            source: Shared::new(e),
        })
    };
    let required = parse("min_runtime", &m.min_runtime)?;
    let running = parse("runtime_version", &facts.runtime_version)?;
    if running < required {
        return Err(Refusal::RuntimeTooOld {
            expected: m.min_runtime.clone(),
            found: facts.runtime_version.clone(),
        });
    }
    let needed = m.size.saturating_mul(2);
    if facts.free_disk <= needed {
        return Err(Refusal::DiskSpace {
            expected: needed,
            found: facts.free_disk,
        });
    }
    if let Some(highest) = highest_installed
        && m.release < highest
    {
        match rollback {
            None => {
                return Err(Refusal::Rollback {
                    name: m.name.clone(),
                    expected: highest,
                    found: m.release,
                });
            }
            Some(directive) => check_rollback_directive(
                directive,
                &m.name,
                m.release,
                Some(&manifest.digest),
                Some(&facts.device_id),
                Some(facts.now),
            )?,
        }
    }
    Ok(())
}
