//! One simulated device: a real ed25519 identity, the slots a `floed` would report, and the
//! reaction to each directive a real device would have, without running a flow.
//!
//! The state machine is synchronous and takes time as an input, so the scheduler in
//! [`super`] can drive a hundred thousand of them from a few threads and a unit test can drive
//! one by hand. What it does to each directive follows the device agent:
//! stage fills the standby slot, switch makes it active (on trial until the next report),
//! commit makes the active slot the last known good, rollback returns to the last known good.
//! A device told to fail ([`Behaviour::FailStage`]) refuses to stage, as a device whose smoke
//! test fails would; a [`Behaviour::Unhealthy`] device switches and then reports a 50 % error
//! rate while it runs the new release, so the coordinator's gates see it.

use ed25519_dalek::SigningKey;
use floe_wire::proto::{
    Action, Applied, DeviceReport, Directive, DirectivePost, Envelope, Facts, Fixed, HealthLevel,
    HealthSummary, Label, Progress, SignedError, SlotInfo, SystemSummary, TrustStore, cbor,
};

/// How a simulated device behaves when a deployment reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Carries out every directive and stays healthy.
    Good,
    /// Refuses to stage (as when its smoke test fails).
    FailStage,
    /// Switches, then reports a 50 % error rate while on the new release.
    Unhealthy,
    /// Enrolls with one report and then never speaks again.
    Offline,
}

/// Why a directive post from the coordinator could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DirectiveError {
    /// The post did not decode.
    #[error("the directive post does not decode: {0}")]
    Post(#[source] floe_wire::proto::PostError),
    /// The directive envelope did not decode or verify.
    #[error("the directive does not verify: {0}")]
    Directive(#[source] SignedError),
    /// The directive is for another device.
    #[error("the directive is for device {found}, not {expected}")]
    WrongDevice {
        /// This device.
        expected: String,
        /// The device the directive names.
        found: String,
    },
}

/// What a directive did to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The generation was not newer than the one applied: nothing changed.
    Old,
    /// The directive was carried out (or refused, per the device's behaviour) and the device
    /// has news to report.
    New(Action),
}

/// One simulated device.
#[derive(Debug)]
pub struct VirtualDevice {
    key: SigningKey,
    id: String,
    device_type: String,
    region: String,
    behaviour: Behaviour,
    seq: u64,
    active: Option<SlotInfo>,
    standby: Option<SlotInfo>,
    last_good: Option<SlotInfo>,
    on_trial: bool,
    applied: Option<Applied>,
    system: Option<SystemSummary>,
}

impl VirtualDevice {
    /// A device whose key is derived from `seed` (so a run is repeatable); its id is the hex
    /// of its public key, as a real device's is.
    pub fn new(seed: [u8; 32], device_type: &str, region: &str, behaviour: Behaviour) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let id = hex::encode(key.verifying_key().to_bytes());
        VirtualDevice {
            key,
            id,
            device_type: device_type.to_string(),
            region: region.to_string(),
            behaviour,
            seq: 0,
            active: None,
            standby: None,
            last_good: None,
            on_trial: false,
            applied: None,
            system: None,
        }
    }

    /// The same device, reporting `system` as its figures (CPU, memory, disk…) in every
    /// report; by default it reports none, as a device older than the figures does.
    pub fn with_system(mut self, system: SystemSummary) -> Self {
        self.system = Some(system);
        self
    }

    /// The device id (hex of the public key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `floe-device-auth` header value that lets it read its own directive at `now`
    /// (unix seconds).
    pub fn directive_auth(&self, now: u64) -> String {
        floe_wire::proto::device_auth::sign_request(
            &self.key,
            "GET",
            &floe_wire::proto::device_auth::directive_path(&self.id),
            now,
        )
    }

    /// The public key in hex, for the allowlist.
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// The device type it reports.
    pub fn device_type(&self) -> &str {
        &self.device_type
    }

    /// The region it reports.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// How it behaves.
    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
    }

    /// The generation of the newest directive applied, 0 before any.
    pub fn generation(&self) -> u64 {
        self.applied.as_ref().map_or(0, |a| a.generation)
    }

    /// The release the device runs, if any.
    pub fn running(&self) -> Option<u64> {
        self.active.as_ref().map(|s| s.release)
    }

    /// Whether the device waits for the rest of a deployment (it has staged or switched and
    /// not yet committed or rolled back), so it should look for its next directive soon.
    pub fn mid_deployment(&self) -> bool {
        self.applied.as_ref().is_some_and(|a| {
            matches!(a.action, Action::Stage | Action::Switch)
                && matches!(a.progress, Progress::Done)
        })
    }

    /// The next signed report, at `now_ms` (unix milliseconds): the sequence number is the
    /// time, kept strictly growing, as `floed` does.
    pub fn report(&mut self, now_ms: u64) -> Result<Vec<u8>, SignedError> {
        self.seq = now_ms.max(self.seq.saturating_add(1));
        let bad = self.behaviour == Behaviour::Unhealthy
            && self.active.is_some()
            && self.active.as_ref().map(|a| a.release)
                != self.last_good.as_ref().map(|l| l.release);
        let report = DeviceReport {
            schema: 1,
            device_id: self.id.clone(),
            public_key: Fixed(self.key.verifying_key().to_bytes()),
            seq: self.seq,
            facts: Facts {
                device_type: self.device_type.clone(),
                arch: "aarch64".into(),
                region: self.region.clone(),
                labels: vec![Label {
                    key: "loadtest".into(),
                    value: "1".into(),
                }],
                runtime_version: env!("CARGO_PKG_VERSION").into(),
            },
            enroll_token: None,
            active: self.active.clone(),
            standby: self.standby.clone(),
            last_known_good: self.last_good.clone(),
            on_trial: self.on_trial,
            applied: self.applied.clone(),
            health: Some(HealthSummary {
                status: if bad {
                    HealthLevel::Unhealthy
                } else {
                    HealthLevel::Healthy
                },
                flow_running: true,
                error_rate_ppm: if bad { 500_000 } else { 0 },
                p95_us: 2_000,
                memory_kib: 12_288,
                restarts: 0,
                system: self.system,
            }),
        };
        // A report after a switch ends the trial, as the agent's does once its checks pass.
        self.on_trial = false;
        Envelope::sign(&report, &[&self.key])?.to_bytes()
    }

    /// Reads a directive post (`GET /devices/{id}/directive`) and carries the directive out if
    /// it is newer than the one applied. With `trust`, the coordinator's signature is checked
    /// as a real device checks it; without, the directive is only decoded.
    pub fn apply_post(
        &mut self,
        bytes: &[u8],
        trust: Option<&TrustStore>,
    ) -> Result<Outcome, DirectiveError> {
        let post = DirectivePost::from_bytes(bytes).map_err(DirectiveError::Post)?;
        let envelope = Envelope::from_bytes::<Directive>(&post.directive.0)
            .map_err(DirectiveError::Directive)?;
        let directive: Directive = match trust {
            Some(t) => {
                t.verify_coordinator::<Directive>(&envelope)
                    .map_err(DirectiveError::Directive)?
                    .value
            }
            None => cbor::decode_canonical(&envelope.payload.0, 4096)
                .map_err(|e| DirectiveError::Directive(SignedError::Decode(e)))?,
        };
        if directive.device_id != self.id {
            return Err(DirectiveError::WrongDevice {
                expected: self.id.clone(),
                found: directive.device_id,
            });
        }
        if directive.generation <= self.generation() {
            return Ok(Outcome::Old);
        }
        let other = match self.active.as_ref().map(|s| s.slot.as_str()) {
            Some("blue") => "green",
            _ => "blue",
        };
        let mut progress = Progress::Done;
        let mut detail = String::new();
        match directive.action {
            Action::Stage if self.behaviour == Behaviour::FailStage => {
                progress = Progress::Failed;
                detail = "smoke test failed (simulated)".into();
            }
            Action::Stage => {
                self.standby = Some(SlotInfo {
                    slot: other.into(),
                    name: directive.artifact.name.clone(),
                    release: directive.artifact.release,
                    version: format!("0.0.{}", directive.artifact.release),
                });
            }
            Action::Switch => {
                if self.standby.is_some() {
                    std::mem::swap(&mut self.active, &mut self.standby);
                    self.on_trial = true;
                } else {
                    progress = Progress::Failed;
                    detail = "nothing staged".into();
                }
            }
            Action::Commit => self.last_good = self.active.clone(),
            Action::Rollback => {
                if self.last_good.is_some() && self.active != self.last_good {
                    self.standby = self.active.take();
                    self.active = self.last_good.clone();
                }
            }
        }
        self.applied = Some(Applied {
            generation: directive.generation,
            action: directive.action,
            name: directive.artifact.name,
            release: directive.artifact.release,
            progress,
            detail,
        });
        Ok(Outcome::New(directive.action))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use floe_wire::proto::{ArtifactRef, ByteBuf, Digest, TrustedKey, open_report};

    fn coordinator() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn trust() -> TrustStore {
        let k = TrustedKey::new(Fixed(coordinator().verifying_key().to_bytes()));
        TrustStore::new(vec![k.clone()], k)
    }

    fn post(device: &str, generation: u64, action: Action, signer: &SigningKey) -> Vec<u8> {
        let directive = Directive {
            schema: 1,
            device_id: device.into(),
            generation,
            action,
            artifact: ArtifactRef {
                name: "flow_a".into(),
                release: 2,
                manifest_sha256: Digest::of(b"m"),
            },
            issued_at: 1_800_000_000,
            expires: 1_800_003_600,
            vars: Default::default(),
            secret_vars: Default::default(),
        };
        let env = Envelope::sign(&directive, &[signer]).unwrap();
        DirectivePost {
            schema: 1,
            directive: ByteBuf(env.to_bytes().unwrap()),
            manifest: ByteBuf(vec![0xa0]),
        }
        .to_bytes()
        .unwrap()
    }

    #[test]
    fn a_device_stages_switches_commits_and_reports_each_step_signed() {
        let mut d = VirtualDevice::new([3; 32], "rpi4", "eu", Behaviour::Good);
        let id = d.id().to_string();
        let t = trust();
        let first = open_report(&d.report(1_000).unwrap()).unwrap();
        assert_eq!(first.device_id, id);
        assert_eq!(hex::encode(first.public_key.0), id);
        assert!(first.active.is_none());
        assert_eq!(
            d.apply_post(&post(&id, 1, Action::Stage, &coordinator()), Some(&t))
                .unwrap(),
            Outcome::New(Action::Stage)
        );
        assert!(d.mid_deployment());
        // The same generation again changes nothing.
        assert_eq!(
            d.apply_post(&post(&id, 1, Action::Stage, &coordinator()), Some(&t))
                .unwrap(),
            Outcome::Old
        );
        d.apply_post(&post(&id, 2, Action::Switch, &coordinator()), Some(&t))
            .unwrap();
        let r = open_report(&d.report(1_000).unwrap()).unwrap();
        assert!(
            r.seq > first.seq,
            "the sequence grows even when the clock does not"
        );
        assert_eq!(r.active.as_ref().map(|s| s.release), Some(2));
        assert!(r.on_trial);
        let applied = r.applied.unwrap();
        assert_eq!((applied.generation, applied.progress), (2, Progress::Done));
        d.apply_post(&post(&id, 3, Action::Commit, &coordinator()), Some(&t))
            .unwrap();
        assert!(!d.mid_deployment());
        let r = open_report(&d.report(2_000).unwrap()).unwrap();
        assert_eq!(r.last_known_good.map(|s| s.release), Some(2));
        assert_eq!(r.health.unwrap().status, HealthLevel::Healthy);
    }

    #[test]
    fn forged_and_misaddressed_directives_are_refused() {
        let mut d = VirtualDevice::new([4; 32], "rpi4", "eu", Behaviour::Good);
        let id = d.id().to_string();
        let forger = SigningKey::from_bytes(&[9; 32]);
        let err = d
            .apply_post(&post(&id, 1, Action::Stage, &forger), Some(&trust()))
            .unwrap_err();
        assert!(matches!(err, DirectiveError::Directive(_)), "{err}");
        let err = d
            .apply_post(
                &post("someone-else", 1, Action::Stage, &coordinator()),
                Some(&trust()),
            )
            .unwrap_err();
        assert!(matches!(err, DirectiveError::WrongDevice { .. }), "{err}");
        assert!(d.apply_post(b"\xff\x00", None).is_err());
        assert_eq!(d.generation(), 0);
    }

    #[test]
    fn failing_and_unhealthy_devices_say_so() {
        let mut fail = VirtualDevice::new([5; 32], "rpi4", "eu", Behaviour::FailStage);
        let id = fail.id().to_string();
        fail.apply_post(&post(&id, 1, Action::Stage, &coordinator()), None)
            .unwrap();
        let r = open_report(&fail.report(1).unwrap()).unwrap();
        assert_eq!(r.applied.unwrap().progress, Progress::Failed);
        assert!(r.standby.is_none());

        let mut sick = VirtualDevice::new([6; 32], "rpi4", "eu", Behaviour::Unhealthy);
        let id = sick.id().to_string();
        sick.apply_post(&post(&id, 1, Action::Stage, &coordinator()), None)
            .unwrap();
        sick.apply_post(&post(&id, 2, Action::Switch, &coordinator()), None)
            .unwrap();
        let h = open_report(&sick.report(1).unwrap())
            .unwrap()
            .health
            .unwrap();
        assert_eq!(h.status, HealthLevel::Unhealthy);
        assert_eq!(h.error_rate_ppm, 500_000);
    }
}
