//! The failure pattern of a deployment, for its incident report (reference 003, "Error
//! Recovery": "Analyze failure pattern: same failure on all devices (artifact issue), specific
//! device type (compatibility issue), random failures (infrastructure issue)").
//!
//! The rule, from the failed devices' distribution against the devices that received the new
//! version (the deployed set):
//! 1. No failed device: [`FailurePattern::None`] (a rollback by an operator or a fleet-wide
//!    trigger with no device failing on its own).
//! 2. At least [`ALL_SHARE`] (90 %) of the deployed devices failed:
//!    [`FailurePattern::AllDevices`] (same failure everywhere: the artifact).
//! 3. Every failed device is of one device type, the deployed set has more than one type, and
//!    at least [`GROUP_SHARE`] (50 %) of the deployed devices of that type failed:
//!    [`FailurePattern::DeviceType`] (compatibility).
//! 4. The same with regions: [`FailurePattern::Region`] (site or network).
//! 5. Otherwise: [`FailurePattern::Random`] (infrastructure, device-specific causes).
//!
//! A device counts as failed when the deployment failed on it, it was quarantined, or (the
//! caller decides) its last report on the new version breached its baseline.
//!
//! Fewer than [`MIN_DEPLOYED`] deployed devices make any pattern indicative only; the finding
//! says so.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Share of the deployed devices that must fail for "all devices".
pub const ALL_SHARE: f64 = 0.9;
/// Share of a type's (or region's) deployed devices that must fail for "one device type"
/// ("one region").
pub const GROUP_SHARE: f64 = 0.5;
/// Deployed devices below which a pattern is indicative only.
pub const MIN_DEPLOYED: u64 = 3;

/// The pattern of the failures.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePattern {
    /// No device failed.
    None,
    /// The same failure on (nearly) all deployed devices: an artifact issue.
    AllDevices,
    /// Failures confined to one device type: a compatibility issue.
    DeviceType,
    /// Failures confined to one region: a site or network issue.
    Region,
    /// Failures scattered across types and regions: an infrastructure issue.
    Random,
}

impl FailurePattern {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePattern::None => "none",
            FailurePattern::AllDevices => "all_devices",
            FailurePattern::DeviceType => "device_type",
            FailurePattern::Region => "region",
            FailurePattern::Random => "random",
        }
    }
}

/// What the classification found.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternFinding {
    /// The pattern.
    pub pattern: FailurePattern,
    /// The device type or region the failures are confined to (for those patterns).
    pub group: Option<String>,
    /// Devices that failed.
    pub failed: u64,
    /// Devices that received the new version.
    pub deployed: u64,
    /// Whether the deployed set is too small (below [`MIN_DEPLOYED`]) for the pattern to be
    /// more than indicative.
    pub indicative_only: bool,
    /// A sentence: the pattern, its evidence and its likely cause.
    pub explanation: String,
}

/// One deployed device: its type, its region and whether it failed.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// Device type.
    pub device_type: &'a str,
    /// Region.
    pub region: &'a str,
    /// Whether the deployment failed on it (failed, or rolled back on its own and
    /// quarantined).
    pub failed: bool,
}

/// The one group (type or region) every failure is in, if there is one and the deployed set
/// spans more than one group and enough of that group failed.
fn confined<'a>(
    outcomes: &[Outcome<'a>],
    key: impl Fn(&Outcome<'a>) -> &'a str,
) -> Option<(String, u64, u64)> {
    let mut groups: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for o in outcomes {
        let g = groups.entry(key(o)).or_default();
        g.0 += 1;
        if o.failed {
            g.1 += 1;
        }
    }
    if groups.len() < 2 {
        return None;
    }
    let mut failing = groups.iter().filter(|(_, (_, f))| *f > 0);
    let (name, (deployed, failed)) = failing.next()?;
    if failing.next().is_some() {
        return None;
    }
    (*failed as f64 >= GROUP_SHARE * *deployed as f64)
        .then(|| (name.to_string(), *deployed, *failed))
}

/// Classifies the failures of `outcomes` (the deployed devices) by the rule of the module
/// documentation.
pub fn classify(outcomes: &[Outcome<'_>]) -> PatternFinding {
    let deployed = outcomes.len() as u64;
    let failed = outcomes.iter().filter(|o| o.failed).count() as u64;
    let indicative_only = deployed < MIN_DEPLOYED;
    let finding = |pattern, group, explanation: String| PatternFinding {
        pattern,
        group,
        failed,
        deployed,
        indicative_only,
        explanation: if indicative_only && pattern != FailurePattern::None {
            format!(
                "{explanation} (only {deployed} device(s) received the new version: indicative only)"
            )
        } else {
            explanation
        },
    };
    if failed == 0 {
        return finding(
            FailurePattern::None,
            None,
            format!("no device failed on its own ({deployed} received the new version)"),
        );
    }
    if failed as f64 >= ALL_SHARE * deployed as f64 {
        return finding(
            FailurePattern::AllDevices,
            None,
            format!(
                "{failed} of {deployed} deployed devices failed: the same failure on all devices, \
                 likely an artifact issue"
            ),
        );
    }
    if let Some((t, n, f)) = confined(outcomes, |o| o.device_type) {
        return finding(
            FailurePattern::DeviceType,
            Some(t.clone()),
            format!(
                "all {failed} failures are on device type {t} ({f} of its {n} deployed devices); \
                 other types did not fail: likely a compatibility issue"
            ),
        );
    }
    if let Some((r, n, f)) = confined(outcomes, |o| o.region) {
        return finding(
            FailurePattern::Region,
            Some(r.clone()),
            format!(
                "all {failed} failures are in region {r} ({f} of its {n} deployed devices); \
                 other regions did not fail: likely a site or network issue"
            ),
        );
    }
    finding(
        FailurePattern::Random,
        None,
        format!(
            "{failed} of {deployed} deployed devices failed, spread across device types and \
             regions: likely an infrastructure issue"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o<'a>(t: &'a str, r: &'a str, failed: bool) -> Outcome<'a> {
        Outcome {
            device_type: t,
            region: r,
            failed,
        }
    }

    #[test]
    fn no_failure_is_none() {
        let f = classify(&[o("pi", "eu", false), o("pi", "us", false)]);
        assert_eq!(f.pattern, FailurePattern::None);
        assert_eq!((f.failed, f.deployed), (0, 2));
    }

    #[test]
    fn nearly_all_failing_is_all_devices() {
        let mut v: Vec<_> = (0..9).map(|_| o("pi", "eu", true)).collect();
        v.push(o("jetson", "us", false));
        let f = classify(&v);
        assert_eq!(f.pattern, FailurePattern::AllDevices);
        assert!(!f.indicative_only);
        // 8 of 10 is below 90 %: not "all".
        v[0].failed = false;
        assert_ne!(classify(&v).pattern, FailurePattern::AllDevices);
    }

    #[test]
    fn failures_confined_to_one_type_are_device_type() {
        let v = [
            o("pi", "eu", true),
            o("pi", "us", true),
            o("pi", "us", false),
            o("jetson", "eu", false),
            o("jetson", "us", false),
        ];
        let f = classify(&v);
        assert_eq!(f.pattern, FailurePattern::DeviceType);
        assert_eq!(f.group.as_deref(), Some("pi"));
        assert!(f.explanation.contains("2 of its 3"), "{}", f.explanation);
    }

    #[test]
    fn failures_confined_to_one_region_are_region() {
        let v = [
            o("pi", "eu", true),
            o("jetson", "eu", true),
            o("pi", "us", false),
            o("jetson", "us", false),
            o("pi", "us", false),
        ];
        let f = classify(&v);
        assert_eq!(f.pattern, FailurePattern::Region);
        assert_eq!(f.group.as_deref(), Some("eu"));
    }

    #[test]
    fn scattered_or_thin_failures_are_random() {
        // Two types and two regions fail.
        let v = [
            o("pi", "eu", true),
            o("jetson", "us", true),
            o("pi", "us", false),
            o("jetson", "eu", false),
            o("pi", "us", false),
        ];
        assert_eq!(classify(&v).pattern, FailurePattern::Random);
        // One type only, but 1 of its 4 devices: below half, so not that type's fault.
        let v = [
            o("pi", "eu", true),
            o("pi", "us", false),
            o("pi", "us", false),
            o("pi", "eu", false),
            o("jetson", "eu", false),
            o("jetson", "us", false),
        ];
        assert_eq!(classify(&v).pattern, FailurePattern::Random);
    }

    #[test]
    fn a_single_type_fleet_cannot_blame_its_type() {
        let v = [
            o("pi", "eu", true),
            o("pi", "eu", false),
            o("pi", "eu", false),
        ];
        assert_eq!(classify(&v).pattern, FailurePattern::Random);
    }

    #[test]
    fn a_tiny_deployed_set_is_indicative_only() {
        let f = classify(&[o("pi", "eu", true)]);
        assert_eq!(f.pattern, FailurePattern::AllDevices);
        assert!(f.indicative_only);
        assert!(
            f.explanation.contains("indicative only"),
            "{}",
            f.explanation
        );
    }
}
