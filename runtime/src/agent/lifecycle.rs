//! The pure decisions of the slot lifecycle: what to do at start-up given the persisted row
//! (resume, finish or undo an interrupted step, and the crash-loop guard), and how a trial
//! ends. No I/O and no clock: the caller passes the time and the facts it observed, and carries
//! out the plan.
//!
//! The crash-loop guard follows the reference's trigger "device restarts > 3 in 5 minutes" as
//! the issue states it: the restart counter is persisted (empty) before the switch, every start
//! that finds a slot on trial appends its time, and when `crash_loop_restarts` (3) of them fall
//! within `crash_loop_window` (5 minutes) floed starts on the last known good slot instead.

use std::time::{Duration, Instant};

use crate::config::TrialConfig;
use crate::health::Status;
use crate::slots::{SlotError, SlotName};
use crate::state::{Lifecycle, Phase};

/// An audit note the plan asks to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The audit action.
    pub action: &'static str,
    /// The audit outcome.
    pub outcome: &'static str,
    /// Detail.
    pub detail: String,
}

fn note(action: &'static str, outcome: &'static str, detail: String) -> Note {
    Note {
        action,
        outcome,
        detail,
    }
}

/// What to do at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The lifecycle row to persist (with the notes) before acting.
    pub lifecycle: Lifecycle,
    /// Point `active` here if it does not already.
    pub relink: Option<SlotName>,
    /// Start this slot's flow.
    pub run: Option<SlotName>,
    /// The slot whose staging was interrupted: its content is unknown and must be emptied.
    pub forget: Option<SlotName>,
    /// The started slot is on trial (the trial restarts its `min_ready` clock).
    pub trial: bool,
    /// What to record.
    pub notes: Vec<Note>,
}

/// Decides how to start. `link` is where `active` points; `verify` says whether a slot's files
/// match their hashes (Err carries the reason); `now_ms` is the wall-clock time.
pub fn recover(
    l: &Lifecycle,
    link: Option<SlotName>,
    verify: &dyn Fn(SlotName) -> Result<(), SlotError>,
    now_ms: i64,
    cfg: &TrialConfig,
) -> Recovery {
    let mut notes = Vec::new();
    let version = l.target_version.clone().unwrap_or_default();
    let mut forget = None;
    match (l.phase, l.target) {
        (Phase::Staging, Some(t)) => {
            notes.push(note(
                "stage",
                "interrupted",
                format!("staging {version} into {t} was interrupted; slot emptied"),
            ));
            forget = Some(t);
        }
        (Phase::Smoke, Some(t)) => notes.push(note(
            "smoke",
            "interrupted",
            format!(
                "smoke test of {version} in {t} was interrupted; staying on the last known good"
            ),
        )),
        (Phase::RollingBack, Some(t)) => notes.push(note(
            "rollback",
            "resumed",
            format!("finishing the rollback from {t} ({version}) after a restart"),
        )),
        (Phase::Switching | Phase::Trial, Some(t)) => {
            let mut boots = l.trial_boots.clone();
            boots.push(now_ms);
            let window = i64::try_from(cfg.crash_loop_window.as_millis()).unwrap_or(i64::MAX);
            let recent = boots.iter().filter(|&&b| now_ms - b <= window).count();
            let rollback_reason = if let Err(why) = verify(t) {
                Some(format!(
                    "trial slot {t} ({version}) failed verification after a restart: {why}"
                ))
            } else if recent >= cfg.crash_loop_restarts as usize {
                Some(format!(
                    "crash loop: {recent} restarts within {}s while {t} ({version}) was on trial",
                    cfg.crash_loop_window.as_secs()
                ))
            } else {
                None
            };
            if let Some(reason) = rollback_reason {
                notes.push(note("rollback", "automatic", reason));
            } else {
                notes.push(note(
                    "trial",
                    "resumed",
                    format!(
                        "restart {recent} of {} allowed while {t} ({version}) is on trial",
                        cfg.crash_loop_restarts
                    ),
                ));
                let lifecycle = Lifecycle {
                    phase: Phase::Trial,
                    last_good: l.last_good,
                    target: Some(t),
                    target_version: l.target_version.clone(),
                    since_ms: now_ms,
                    trial_boots: boots,
                };
                return Recovery {
                    lifecycle,
                    relink: Some(t),
                    run: Some(t),
                    forget: None,
                    trial: true,
                    notes,
                };
            }
        }
        (Phase::Idle, _) => {}
        (phase, None) => notes.push(note(
            "recover",
            "inconsistent",
            format!(
                "phase {} without a target slot; returning to idle",
                phase.as_str()
            ),
        )),
    }
    // Everything else ends on the last known good slot, if it is still sound.
    let run = match l.last_good {
        Some(g) => {
            match verify(g) {
                Ok(()) => Some(g),
                Err(why) => {
                    notes.push(note(
                    "recover",
                    "refused",
                    format!("last known good slot {g} failed verification and is not activated: {why}"),
                ));
                    None
                }
            }
        }
        None => None,
    };
    let relink = match (run, link) {
        (Some(g), Some(cur)) if g == cur => None,
        (Some(g), _) => Some(g),
        (None, _) => None,
    };
    Recovery {
        lifecycle: Lifecycle::idle(l.last_good, now_ms),
        relink,
        run,
        forget,
        trial: false,
        notes,
    }
}

/// How a trial stands after one health sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep watching.
    Continue,
    /// Healthy for `min_ready`: commit.
    Commit,
    /// Roll back, with the reason.
    RollBack(String),
}

/// Tracks one trial in monotonic time.
#[derive(Debug, Clone)]
pub struct TrialTracker {
    started: Instant,
    failures: u32,
}

impl TrialTracker {
    /// A trial that started at `now`.
    pub fn new(now: Instant) -> TrialTracker {
        TrialTracker {
            started: now,
            failures: 0,
        }
    }

    /// How long the trial has run.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Judges one sample: `running` is whether the flow runs at all, `app` the worst status of
    /// the application and functional layers, `problems` what is wrong in words.
    ///
    /// A flow that stopped is rolled back at once (the reference's immediate triggers); an
    /// unhealthy flow after `failure_threshold` consecutive failing samples (its rolling
    /// update `failure_threshold: 3`). A degraded sample neither fails nor resets the count.
    /// The commit needs `min_ready` of trial time and a last sample that was not failing.
    pub fn judge(
        &mut self,
        now: Instant,
        running: bool,
        app: Status,
        problems: &str,
        cfg: &TrialConfig,
    ) -> Verdict {
        if !running {
            return Verdict::RollBack(format!("the new flow stopped: {problems}"));
        }
        match app {
            Status::Unhealthy => {
                self.failures += 1;
                if self.failures >= cfg.failure_threshold {
                    return Verdict::RollBack(format!(
                        "unhealthy for {} consecutive checks: {problems}",
                        self.failures
                    ));
                }
                return Verdict::Continue;
            }
            Status::Healthy => self.failures = 0,
            Status::Degraded => {}
        }
        if self.failures == 0 && self.elapsed(now) >= cfg.min_ready {
            Verdict::Commit
        } else {
            Verdict::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TrialConfig {
        TrialConfig::default()
    }

    fn row(phase: Phase, boots: Vec<i64>) -> Lifecycle {
        Lifecycle {
            phase,
            last_good: Some(SlotName::Blue),
            target: Some(SlotName::Green),
            target_version: Some("2.0".into()),
            since_ms: 0,
            trial_boots: boots,
        }
    }

    fn ok(_: SlotName) -> Result<(), SlotError> {
        Ok(())
    }

    #[test]
    fn idle_runs_last_good_and_fixes_the_link() {
        let mut l = row(Phase::Idle, vec![]);
        l.target = None;
        let r = recover(&l, Some(SlotName::Green), &ok, 10, &cfg());
        assert_eq!(r.run, Some(SlotName::Blue));
        assert_eq!(r.relink, Some(SlotName::Blue));
        let r = recover(&l, Some(SlotName::Blue), &ok, 10, &cfg());
        assert_eq!(r.relink, None);
        assert!(r.notes.is_empty());
    }

    #[test]
    fn fresh_device_runs_nothing() {
        let r = recover(&Lifecycle::fresh(0), None, &ok, 10, &cfg());
        assert_eq!(r.run, None);
        assert_eq!(r.relink, None);
    }

    #[test]
    fn interrupted_staging_forgets_the_slot_and_smoke_keeps_it() {
        let r = recover(
            &row(Phase::Staging, vec![]),
            Some(SlotName::Blue),
            &ok,
            10,
            &cfg(),
        );
        assert_eq!(r.forget, Some(SlotName::Green));
        assert_eq!(r.run, Some(SlotName::Blue));
        assert_eq!(r.lifecycle.phase, Phase::Idle);
        let r = recover(
            &row(Phase::Smoke, vec![]),
            Some(SlotName::Blue),
            &ok,
            10,
            &cfg(),
        );
        assert_eq!(r.forget, None);
        assert_eq!(r.run, Some(SlotName::Blue));
    }

    #[test]
    fn trial_resumes_until_the_third_restart_in_five_minutes() {
        let c = cfg();
        let r1 = recover(
            &row(Phase::Switching, vec![]),
            Some(SlotName::Blue),
            &ok,
            1_000,
            &c,
        );
        assert!(r1.trial);
        assert_eq!(r1.run, Some(SlotName::Green));
        assert_eq!(r1.relink, Some(SlotName::Green));
        assert_eq!(r1.lifecycle.trial_boots, vec![1_000]);
        let r2 = recover(&r1.lifecycle, Some(SlotName::Green), &ok, 2_000, &c);
        assert!(r2.trial);
        let r3 = recover(&r2.lifecycle, Some(SlotName::Green), &ok, 3_000, &c);
        assert!(!r3.trial);
        assert_eq!(r3.run, Some(SlotName::Blue));
        assert_eq!(r3.relink, Some(SlotName::Blue));
        assert_eq!(r3.lifecycle.phase, Phase::Idle);
        assert_eq!(r3.lifecycle.last_good, Some(SlotName::Blue));
        assert!(r3.notes[0].detail.contains("crash loop"), "{:?}", r3.notes);
    }

    #[test]
    fn restarts_spread_beyond_the_window_do_not_trip_the_guard() {
        let c = cfg();
        let l = row(Phase::Trial, vec![0, 200_000]);
        let r = recover(&l, Some(SlotName::Green), &ok, 400_000, &c);
        assert!(r.trial, "{:?}", r.notes);
    }

    #[test]
    fn unverifiable_slots_are_never_activated() {
        let bad_green = |s: SlotName| {
            if s == SlotName::Green {
                Err(SlotError::HashMismatch {
                    slot: s,
                    file: "flow.json".into(),
                })
            } else {
                Ok(())
            }
        };
        let r = recover(
            &row(Phase::Trial, vec![]),
            Some(SlotName::Green),
            &bad_green,
            10,
            &cfg(),
        );
        assert_eq!(r.run, Some(SlotName::Blue));
        let mut l = row(Phase::Idle, vec![]);
        l.last_good = Some(SlotName::Green);
        let r = recover(&l, Some(SlotName::Green), &bad_green, 10, &cfg());
        assert_eq!(r.run, None);
        assert_eq!(r.notes[0].outcome, "refused");
    }

    #[test]
    fn judge_commits_after_min_ready_and_rolls_back_on_failures() {
        let c = TrialConfig {
            min_ready: Duration::from_secs(10),
            ..cfg()
        };
        let t0 = Instant::now();
        let mut t = TrialTracker::new(t0);
        assert_eq!(
            t.judge(t0 + Duration::from_secs(5), true, Status::Healthy, "", &c),
            Verdict::Continue
        );
        assert_eq!(
            t.judge(t0 + Duration::from_secs(10), true, Status::Healthy, "", &c),
            Verdict::Commit
        );

        let mut t = TrialTracker::new(t0);
        for i in 1..3 {
            assert_eq!(
                t.judge(
                    t0 + Duration::from_secs(i),
                    true,
                    Status::Unhealthy,
                    "x",
                    &c
                ),
                Verdict::Continue
            );
        }
        assert!(matches!(
            t.judge(
                t0 + Duration::from_secs(3),
                true,
                Status::Unhealthy,
                "x",
                &c
            ),
            Verdict::RollBack(_)
        ));

        let mut t = TrialTracker::new(t0);
        assert!(
            matches!(t.judge(t0, false, Status::Unhealthy, "panicked", &c), Verdict::RollBack(r) if r.contains("panicked"))
        );

        // A failure followed by a healthy sample resets the count but a failing last sample
        // blocks the commit.
        let mut t = TrialTracker::new(t0);
        assert_eq!(
            t.judge(
                t0 + Duration::from_secs(11),
                true,
                Status::Unhealthy,
                "x",
                &c
            ),
            Verdict::Continue
        );
        assert_eq!(
            t.judge(t0 + Duration::from_secs(12), true, Status::Healthy, "", &c),
            Verdict::Commit
        );
    }
}
