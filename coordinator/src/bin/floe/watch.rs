//! `floe deploy status ID --watch`: live progress of a deployment.
//!
//! The watch refreshes when the coordinator's event stream says the deployment changed
//! (`nudge`: at once on an event, at least every 2 s), and falls back to polling when the
//! stream is not there. A refresh fetches `GET /deployments/:id` (polls: every 500 ms by default; in line mode also the first
//! page of `GET /deployments/:id/targets`, at most [`MAX_WATCHED_TARGETS`]) and shows, on a terminal,
//! one indicatif bar per stage (canary, wave, batch: devices done out of devices in the stage,
//! with that stage's counts by target status) under a header line with the status, the current
//! stage, the phase and the counts over all targets. Gate verdicts are printed above the bars
//! once each as they land. When standard output is not a terminal (a pipe, a CI log), it prints
//! one line per change instead, so logs stay readable and diffable.
//!
//! The deployment object counts its targets overall and per stage, so bars and counts cost one
//! request however large the fleet; per-target lines follow the first page of targets only.
//!
//! Everything shown is computed by plain functions of the deployment JSON (`stage_progress`,
//! `header_line`, `gate_line`, `frame`, `Changes::update`); the loop only polls and draws, which
//! keeps the renderers testable from fixtures in the contract's shape.
//!
//! Bounds: the set of gate verdicts already printed holds at most [`MAX_GATES_SEEN`] keys;
//! beyond it, further verdicts are still counted in the header but no longer printed. Failed
//! polls are retried at most [`MAX_POLL_FAILURES`] times in a row (a coordinator restart takes a
//! few seconds); an API error (404, 401) ends the watch at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use floe_coordinator::client::{Client, ClientError, Deployment, Gate, Target};
use floe_coordinator::contract::{DeploymentStatus, TargetCounts, TargetStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::explain;

/// Default poll interval.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
/// Most gate verdicts remembered as printed.
pub(crate) const MAX_GATES_SEEN: usize = 10_000;
/// Most targets whose status changes are printed one line each (the first page of targets).
pub(crate) const MAX_WATCHED_TARGETS: usize = 1000;
/// Consecutive failed polls (connection or transfer errors) before the watch gives up.
pub(crate) const MAX_POLL_FAILURES: u32 = 20;

/// Target statuses in the order they are shown.
pub(crate) const STATUS_ORDER: [&str; 8] = [
    "success",
    "deploying",
    "pending",
    "offline",
    "failed",
    "rolled_back",
    "skipped",
    "quarantined",
];

/// Whether a target status is final for its stage (the device will not move again in this
/// deployment unless it is rolled back). Offline is not final: offline devices are queued and
/// caught up when they return.
fn is_done(status: &str) -> bool {
    status
        .parse::<TargetStatus>()
        .is_ok_and(TargetStatus::is_terminal)
}

/// Counts by target status, in [`STATUS_ORDER`] (unknown statuses after, by name).
pub(crate) type Counts = BTreeMap<(usize, String), u64>;

fn count_key(status: &str) -> (usize, String) {
    let rank = STATUS_ORDER
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUS_ORDER.len());
    (rank, status.to_string())
}

/// `success 3 · deploying 1 · pending 8` (statuses with a zero count left out).
pub(crate) fn counts_text(counts: &Counts) -> String {
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|((_, s), n)| format!("{s} {n}"))
        .collect();
    if parts.is_empty() {
        "no targets".to_string()
    } else {
        parts.join(" · ")
    }
}

/// Counts by status from the contract's counts.
fn counts_of(c: &TargetCounts) -> Counts {
    let mut counts = Counts::new();
    for status in TargetStatus::ALL {
        let n = c.get(*status);
        if n > 0 {
            counts.insert(count_key(status.as_str()), n);
        }
    }
    counts
}

/// Counts over all targets.
pub(crate) fn all_counts(d: &Deployment) -> Counts {
    counts_of(&d.target_counts)
}

/// One stage's progress: what a bar shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageProgress {
    /// The stage index.
    pub(crate) index: u32,
    /// Its name (`canary`, `wave-1`, `batch-2` …).
    pub(crate) name: String,
    /// Devices in a final status.
    pub(crate) done: u64,
    /// Devices in the stage.
    pub(crate) total: u64,
    /// Counts by status in the stage.
    pub(crate) counts: Counts,
}

/// The progress of every stage, from the stages' counts.
pub(crate) fn stage_progress(d: &Deployment) -> Vec<StageProgress> {
    d.stages
        .iter()
        .map(|stage| {
            let counts = counts_of(&stage.counts);
            let total = stage.counts.total().max(u64::from(stage.size));
            let done = counts
                .iter()
                .filter(|((_, s), _)| is_done(s))
                .map(|(_, n)| n)
                .sum();
            StageProgress {
                index: stage.index,
                name: if stage.name.is_empty() {
                    format!("stage {}", stage.index)
                } else {
                    stage.name.clone()
                },
                done,
                total,
                counts,
            }
        })
        .collect()
}

/// `dep_… running · stage 2/3 wave-1 · soaking · awaiting approval`.
pub(crate) fn header_line(d: &Deployment) -> String {
    let mut parts = vec![format!("{} {}", d.id, d.status)];
    if !d.stages.is_empty() {
        let cur = d.current_stage;
        let name = d
            .stages
            .iter()
            .find(|s| s.index == cur)
            .map(|s| s.name.as_str())
            .unwrap_or("");
        let of = d.stages.len().max(cur as usize + 1);
        if name.is_empty() {
            parts.push(format!("stage {}/{of}", cur + 1));
        } else {
            parts.push(format!("stage {}/{of} {name}", cur + 1));
        }
    }
    if !d.phase.is_empty() {
        parts.push(d.phase.clone());
    }
    if d.awaiting_approval {
        parts.push("awaiting approval".to_string());
    }
    parts.join(" · ")
}

/// One gate verdict as a line: `gate canary (stage 0): PASS · all checks pass · error_rate
/// 0.0000 ≤ 0.0100 ok, …`.
pub(crate) fn gate_line(g: &Gate) -> String {
    let mut line = format!(
        "gate {} (stage {}): {}",
        g.gate,
        g.stage,
        g.verdict.as_str().to_uppercase()
    );
    if !g.reason.is_empty() {
        line.push_str(&format!(" · {}", g.reason));
    }
    if !g.checks.is_empty() {
        let checks: Vec<String> = g
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{} {:.4} / {:.4} {}",
                    c.name,
                    c.value,
                    c.limit,
                    crate::gates_view::check_word(c)
                )
            })
            .collect();
        line.push_str(&format!(" · {}", checks.join(", ")));
    }
    if let Some(s) = crate::gates_view::summary_text(g) {
        line.push_str(&format!(" · {s}"));
    }
    line
}

/// The bar of one stage as text (`canary      [####------] 1/4 success 1 · pending 3`), the
/// same numbers the indicatif bar shows, for tests and for plain frames.
pub(crate) fn bar_line(s: &StageProgress, width: usize) -> String {
    let filled = if s.total == 0 {
        width
    } else {
        ((s.done as usize) * width) / (s.total as usize)
    };
    format!(
        "{:<12} [{}{}] {}/{} {}",
        s.name,
        "#".repeat(filled.min(width)),
        "-".repeat(width.saturating_sub(filled)),
        s.done,
        s.total,
        counts_text(&s.counts)
    )
}

/// A whole frame as text: the header, the overall counts and one bar per stage.
pub(crate) fn frame(d: &Deployment) -> String {
    let mut out = format!("{}\n  {}\n", header_line(d), counts_text(&all_counts(d)));
    for s in stage_progress(d) {
        out.push_str("  ");
        out.push_str(&bar_line(&s, 20));
        out.push('\n');
    }
    out
}

/// The line printed when the watch ends.
pub(crate) fn final_line(d: &Deployment) -> String {
    let reason = if d.status_reason.is_empty() {
        String::new()
    } else {
        format!(": {}", d.status_reason)
    };
    format!(
        "deployment {} {}{reason} ({} of {} completed, {} failed, {} offline, {} rolled back)",
        d.id,
        d.status,
        d.completed_targets,
        d.total_targets,
        d.failed_targets,
        d.offline_targets,
        d.rolled_back_targets
    )
}

/// The exit code for a finished deployment: 0 completed, 1 failed, 2 rolled back.
pub(crate) fn exit_code(d: &Deployment) -> ExitCode {
    match d.status {
        DeploymentStatus::Completed => ExitCode::SUCCESS,
        DeploymentStatus::RolledBack => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

/// What changed between polls, as lines; it remembers the previous poll and the gate verdicts
/// already reported.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    prev: Option<Deployment>,
    /// The status of each watched target at the previous poll.
    prev_targets: HashMap<String, TargetStatus>,
    gates_seen: HashSet<(u32, String, String)>,
}

impl Changes {
    /// New gate verdicts only (what a terminal prints above the bars).
    pub(crate) fn new_gates(&mut self, d: &Deployment) -> Vec<String> {
        let mut out = Vec::new();
        for g in &d.gates {
            let key = (g.stage, g.gate.clone(), g.verdict.as_str().to_string());
            if self.gates_seen.contains(&key) || self.gates_seen.len() >= MAX_GATES_SEEN {
                continue;
            }
            self.gates_seen.insert(key);
            out.push(gate_line(g));
        }
        out
    }

    /// Every change since the previous poll, one line each: the status, the stage, the phase,
    /// approval, each target whose status moved, and new gate verdicts. The first poll
    /// describes the deployment and lists targets that are no longer pending. `targets` are
    /// the watched targets (the first page; see [`MAX_WATCHED_TARGETS`]).
    pub(crate) fn update(&mut self, d: &Deployment, targets: &[Target]) -> Vec<String> {
        let mut out = Vec::new();
        let id = &d.id;
        match &self.prev {
            None => {
                out.push(format!(
                    "{id}: {} ({}), {} targets in {} stages",
                    d.status,
                    d.strategy,
                    d.total_targets,
                    d.stages.len()
                ));
                if !d.stages.is_empty() {
                    let cur = d.current_stage;
                    out.push(format!(
                        "{id}: stage {cur} ({}) current",
                        stage_name(d, cur)
                    ));
                }
                if !d.phase.is_empty() {
                    out.push(format!("{id}: phase {}", d.phase));
                }
                for t in targets.iter().filter(|t| t.status != TargetStatus::Pending) {
                    out.push(target_line(t, None));
                }
            }
            Some(prev) => {
                if prev.status != d.status {
                    let reason = if d.status_reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", d.status_reason)
                    };
                    out.push(format!(
                        "{id}: status {} → {}{reason}",
                        prev.status, d.status
                    ));
                }
                if prev.current_stage != d.current_stage {
                    let cur = d.current_stage;
                    out.push(format!(
                        "{id}: stage {cur} ({}) current",
                        stage_name(d, cur)
                    ));
                }
                if prev.phase != d.phase && !d.phase.is_empty() {
                    out.push(format!("{id}: phase {}", d.phase));
                }
                for t in targets {
                    let old = self.prev_targets.get(&t.device_id).copied();
                    if old != Some(t.status) {
                        out.push(target_line(t, old));
                    }
                }
            }
        }
        let was_waiting = self.prev.as_ref().is_some_and(|p| p.awaiting_approval);
        if d.awaiting_approval && !was_waiting {
            out.push(format!(
                "{id}: awaiting approval (floe deploy approve {id})"
            ));
        }
        out.extend(self.new_gates(d));
        self.prev = Some(d.clone());
        self.prev_targets = targets
            .iter()
            .map(|t| (t.device_id.clone(), t.status))
            .collect();
        out
    }
}

fn stage_name(d: &Deployment, index: u32) -> String {
    d.stages
        .iter()
        .find(|s| s.index == index)
        .map(|s| s.name.clone())
        .unwrap_or_default()
}

fn target_line(t: &Target, old: Option<TargetStatus>) -> String {
    let stage = format!(" (stage {})", t.stage);
    let detail = if t.detail.is_empty() {
        String::new()
    } else {
        format!(": {}", t.detail)
    };
    match old {
        Some(o) => format!("{}: {o} → {}{stage}{detail}", t.device_id, t.status),
        None => format!("{}: {}{stage}{detail}", t.device_id, t.status),
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// indicatif bars (a terminal).
    Bars,
    /// One line per change (a pipe or a log).
    Lines,
    /// Nothing (the caller prints the result).
    Quiet,
}

/// How to watch.
#[derive(Debug)]
pub(crate) struct WatchOptions<'a> {
    /// Poll interval.
    pub(crate) interval: Duration,
    /// How progress is shown.
    pub(crate) mode: Mode,
    /// Give up (with an error) after this long; `None` waits until the deployment ends.
    pub(crate) limit: Option<Duration>,
    /// Set by a signal handler to stop the watch early (with an error).
    pub(crate) interrupted: Option<&'a AtomicBool>,
    /// Refresh on the coordinator's event stream (`nudge`), polling only without it.
    pub(crate) live: bool,
}

/// Polls until the deployment is terminal and returns its last state.
pub(crate) fn watch(client: &Client, id: &str, opts: &WatchOptions<'_>) -> Result<Deployment> {
    let started = Instant::now();
    let mut changes = Changes::default();
    let mut view = if opts.mode == Mode::Bars {
        Some(Bars::new())
    } else {
        None
    };
    let mut failures = 0u32;
    // Started after the first answer, so a deployment that does not exist costs no stream.
    let mut nudges: Option<crate::nudge::Nudges> = None;
    loop {
        if opts.interrupted.is_some_and(|f| f.load(Ordering::Relaxed)) {
            bail!("interrupted while watching deployment {id}");
        }
        if let Some(limit) = opts.limit {
            if started.elapsed() > limit {
                bail!("deployment {id} did not finish within {limit:?}");
            }
        }
        let d = match client
            .get_deployment(id)
            .and_then(|r| r.json::<Deployment>())
        {
            Ok(d) => {
                failures = 0;
                d
            }
            Err(e @ (ClientError::Connect { .. } | ClientError::Transfer { .. })) => {
                failures += 1;
                if failures >= MAX_POLL_FAILURES {
                    return Err(explain(e, client.has_token()).context(format!(
                        "watching deployment {id}: {failures} polls failed in a row"
                    )));
                }
                std::thread::sleep(opts.interval);
                continue;
            }
            Err(e) => return Err(explain(e, client.has_token())),
        };
        match view.as_mut() {
            Some(bars) => bars.draw(&d, &mut changes),
            None if opts.mode == Mode::Lines => {
                // The watched targets; a failed page only skips the per-target lines of
                // this poll.
                let targets = client
                    .targets(id, Some(MAX_WATCHED_TARGETS))
                    .page(None)
                    .map(|(t, _)| t)
                    .unwrap_or_default();
                for line in changes.update(&d, &targets) {
                    outln!("{line}");
                }
            }
            None => {}
        }
        if d.is_terminal() {
            if let Some(bars) = view.take() {
                bars.finish();
            }
            if opts.mode == Mode::Lines {
                // A log ends with the stages as text, the same numbers the bars show.
                out!("{}", frame(&d));
            }
            return Ok(d);
        }
        if opts.live && nudges.is_none() {
            nudges = Some(crate::nudge::Nudges::start(client, id));
        }
        match &nudges {
            Some(n) => n.wait(opts.interval),
            None => std::thread::sleep(opts.interval),
        }
    }
}

/// The indicatif view: a header bar and one bar per stage, drawn to standard output.
struct Bars {
    multi: MultiProgress,
    header: ProgressBar,
    stages: Vec<ProgressBar>,
    style: Option<ProgressStyle>,
    last_status: Option<DeploymentStatus>,
}

impl Bars {
    fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let header = multi.add(ProgressBar::new_spinner());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
            header.set_style(style);
        }
        header.enable_steady_tick(Duration::from_millis(120));
        // A template error would be a bug in the literal below; the default style is a fine
        // fallback, so it is not an error for the user.
        let style = ProgressStyle::with_template(
            "  {prefix:<12} [{bar:30.cyan/blue}] {pos:>4}/{len:<4} {msg}",
        )
        .ok()
        .map(|s| s.progress_chars("=> "));
        Bars {
            multi,
            header,
            stages: Vec::new(),
            style,
            last_status: None,
        }
    }

    fn draw(&mut self, d: &Deployment, changes: &mut Changes) {
        for line in changes.new_gates(d) {
            let _ = self.multi.println(line);
        }
        if self.last_status != Some(d.status) {
            if self.last_status.is_some() {
                let _ = self.multi.println(format!("{}: status {}", d.id, d.status));
            }
            self.last_status = Some(d.status);
        }
        self.header.set_message(format!(
            "{} · {}",
            header_line(d),
            counts_text(&all_counts(d))
        ));
        for (i, s) in stage_progress(d).into_iter().enumerate() {
            while self.stages.len() <= i {
                let bar = self.multi.add(ProgressBar::new(0));
                if let Some(style) = &self.style {
                    bar.set_style(style.clone());
                }
                self.stages.push(bar);
            }
            if let Some(bar) = self.stages.get(i) {
                bar.set_prefix(s.name.clone());
                bar.set_length(s.total);
                bar.set_position(s.done);
                bar.set_message(counts_text(&s.counts));
            }
        }
    }

    fn finish(self) {
        self.header.finish();
        for bar in &self.stages {
            bar.finish();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    /// The effective config of a canary-waves deployment, in the contract's shape.
    pub(crate) fn config() -> serde_json::Value {
        json!({
            "batch_size": 1, "batch_delay": "0s", "failure_threshold": 5.0,
            "canary_percentage": 10.0, "canary_delay": "30s", "timeout": "10m",
            "switch_delay": "0s", "auto_rollback": true, "health_check": true,
            "require_approval": false, "quorum": 80.0, "offline_grace": "1h",
            "waves": [], "max_parallel": 0
        })
    }

    fn counts(pairs: &[(&str, u64)]) -> serde_json::Value {
        let mut c = json!({"pending": 0, "deploying": 0, "success": 0, "failed": 0,
                           "offline": 0, "skipped": 0, "rolled_back": 0, "quarantined": 0});
        for (k, n) in pairs {
            c[*k] = json!(n);
        }
        c
    }

    /// A canary-waves deployment in the contract's shape: canary done, wave-1 in progress.
    fn running() -> serde_json::Value {
        json!({
            "id": "dep_0a1b2c3d4e", "flow_id": "flow_3f2a9c0d1e",
            "artifact": {"name": "flow_3f2a9c0d1e", "release": 2, "version": "1.2.0", "manifest_sha256": "00"},
            "strategy": "canary-waves", "status": "running", "status_reason": "",
            "total_targets": 5, "completed_targets": 2, "failed_targets": 0, "offline_targets": 1,
            "rolled_back_targets": 0, "skipped_targets": 0, "pending_targets": 2,
            "target_counts": counts(&[("success", 2), ("deploying", 1), ("offline", 1), ("pending", 1)]),
            "current_stage": 1,
            "stages": [
                {"index": 0, "name": "canary", "kind": "canary", "size": 1,
                 "counts": counts(&[("success", 1)]), "devices": ["dev_001"]},
                {"index": 1, "name": "wave-1", "kind": "wave", "size": 3,
                 "counts": counts(&[("success", 1), ("deploying", 1), ("offline", 1)]),
                 "devices": ["dev_002", "dev_003", "dev_004"]},
                {"index": 2, "name": "wave-2", "kind": "wave", "size": 1,
                 "counts": counts(&[("pending", 1)]), "devices": ["dev_005"]}
            ],
            "gates": [
                {"stage": 0, "gate": "canary", "verdict": "pass", "reason": "all checks pass",
                 "checks": [{"name": "error_rate", "value": 0.0, "limit": 0.01, "pass": true}],
                 "at": "2026-11-22T03:00:05Z"}
            ],
            "awaiting_approval": false, "phase": "ROLLOUT", "pause_reason": null,
            "created_at": "2026-11-22T03:00:00Z", "started_at": "2026-11-22T03:00:01Z", "completed_at": null,
            "config": config()
        })
    }

    /// The targets of [`running`].
    fn targets() -> serde_json::Value {
        json!([
            {"device_id": "dev_001", "status": "success", "stage": 0, "generation": 4, "detail": ""},
            {"device_id": "dev_002", "status": "success", "stage": 1, "generation": 4, "detail": ""},
            {"device_id": "dev_003", "status": "deploying", "stage": 1, "generation": 4, "detail": ""},
            {"device_id": "dev_004", "status": "offline", "stage": 1, "generation": 3, "detail": "no report for 12s"},
            {"device_id": "dev_005", "status": "pending", "stage": 2, "generation": 3, "detail": ""}
        ])
    }

    fn dep(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    fn tgt(v: &serde_json::Value) -> Vec<Target> {
        serde_json::from_value(v.clone()).unwrap()
    }

    #[test]
    fn stage_bars_count_done_devices_per_stage() {
        let p = stage_progress(&dep(running()));
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].name.as_str(), p[0].done, p[0].total),
            ("canary", 1, 1)
        );
        // Offline is not done: the device is queued and caught up later.
        assert_eq!(
            (p[1].name.as_str(), p[1].done, p[1].total),
            ("wave-1", 1, 3)
        );
        assert_eq!(
            counts_text(&p[1].counts),
            "success 1 · deploying 1 · offline 1"
        );
        assert_eq!((p[2].done, p[2].total), (0, 1));
    }

    #[test]
    fn a_text_frame() {
        assert_eq!(
            frame(&dep(running())),
            "dep_0a1b2c3d4e running · stage 2/3 wave-1 · ROLLOUT\n\
             \x20 success 2 · deploying 1 · pending 1 · offline 1\n\
             \x20 canary       [####################] 1/1 success 1\n\
             \x20 wave-1       [######--------------] 1/3 success 1 · deploying 1 · offline 1\n\
             \x20 wave-2       [--------------------] 0/1 pending 1\n"
        );
    }

    #[test]
    fn gate_lines() {
        let d = dep(running());
        assert_eq!(
            gate_line(&d.gates[0]),
            "gate canary (stage 0): PASS · all checks pass · error_rate 0.0000 / 0.0100 ok"
        );
    }

    #[test]
    fn one_line_per_change() {
        let mut ch = Changes::default();
        let first = ch.update(&dep(running()), &tgt(&targets()));
        assert_eq!(
            first,
            vec![
                "dep_0a1b2c3d4e: running (canary-waves), 5 targets in 3 stages",
                "dep_0a1b2c3d4e: stage 1 (wave-1) current",
                "dep_0a1b2c3d4e: phase ROLLOUT",
                "dev_001: success (stage 0)",
                "dev_002: success (stage 1)",
                "dev_003: deploying (stage 1)",
                "dev_004: offline (stage 1): no report for 12s",
                "gate canary (stage 0): PASS · all checks pass · error_rate 0.0000 / 0.0100 ok",
            ]
        );
        // Nothing changed: nothing printed, and the gate is not repeated.
        assert!(ch.update(&dep(running()), &tgt(&targets())).is_empty());

        let mut v = running();
        let mut t = targets();
        t[2]["status"] = json!("success");
        t[3]["status"] = json!("success");
        t[3]["detail"] = json!("");
        v["current_stage"] = json!(2);
        v["phase"] = json!("VERIFY");
        v["awaiting_approval"] = json!(true);
        v["gates"].as_array_mut().unwrap().push(json!({
            "stage": 1, "gate": "wave-1", "verdict": "pass", "reason": "", "checks": [], "at": "2026-11-22T03:00:09Z"
        }));
        assert_eq!(
            ch.update(&dep(v.clone()), &tgt(&t)),
            vec![
                "dep_0a1b2c3d4e: stage 2 (wave-2) current",
                "dep_0a1b2c3d4e: phase VERIFY",
                "dev_003: deploying → success (stage 1)",
                "dev_004: offline → success (stage 1)",
                "dep_0a1b2c3d4e: awaiting approval (floe deploy approve dep_0a1b2c3d4e)",
                "gate wave-1 (stage 1): PASS",
            ]
        );

        v["status"] = json!("rolled_back");
        v["status_reason"] = json!("gate wave-2 failed: error_rate 0.2 > 0.05");
        v["awaiting_approval"] = json!(false);
        t[4]["status"] = json!("rolled_back");
        assert_eq!(
            ch.update(&dep(v), &tgt(&t)),
            vec![
                "dep_0a1b2c3d4e: status running → rolled_back (gate wave-2 failed: error_rate 0.2 > 0.05)",
                "dev_005: pending → rolled_back (stage 2)",
            ]
        );
    }

    #[test]
    fn endings_and_exit_codes() {
        let mut v = running();
        v["status"] = json!("completed");
        v["completed_targets"] = json!(5);
        v["offline_targets"] = json!(0);
        let d = dep(v.clone());
        assert!(d.is_terminal());
        assert_eq!(exit_code(&d), ExitCode::SUCCESS);
        assert_eq!(
            final_line(&d),
            "deployment dep_0a1b2c3d4e completed (5 of 5 completed, 0 failed, 0 offline, 0 rolled back)"
        );
        v["status"] = json!("rolled_back");
        v["status_reason"] = json!("canary failed");
        let d = dep(v.clone());
        assert_eq!(exit_code(&d), ExitCode::from(2));
        assert!(final_line(&d).contains("rolled_back: canary failed"));
        v["status"] = json!("failed");
        assert_eq!(exit_code(&dep(v.clone())), ExitCode::FAILURE);
        v["status"] = json!("paused");
        assert!(!dep(v).is_terminal());
    }

    /// A loopback server that answers successive connections with the given (status, body)
    /// pairs, one each, then stops accepting.
    fn sequence(replies: Vec<(u16, String)>) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (status, body) in replies {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                }
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        format!("http://{addr}")
    }

    fn quiet() -> WatchOptions<'static> {
        WatchOptions {
            interval: Duration::from_millis(10),
            mode: Mode::Quiet,
            limit: Some(Duration::from_secs(10)),
            interrupted: None,
            live: false,
        }
    }

    #[test]
    fn the_watch_polls_until_the_deployment_ends() {
        let mut done = running();
        done["status"] = json!("completed");
        let server = sequence(vec![
            (200, running().to_string()),
            (200, running().to_string()),
            (200, done.to_string()),
        ]);
        let client = Client::new(&server, Some("t".into())).unwrap();
        let d = watch(&client, "dep_0a1b2c3d4e", &quiet()).unwrap();
        assert_eq!(d.status, DeploymentStatus::Completed);
    }

    #[test]
    fn the_watch_stops_at_an_api_error_with_the_servers_words() {
        let server = sequence(vec![(
            404,
            r#"{"error":{"code":"not_found","message":"no deployment dep_nope","field":null}}"#
                .into(),
        )]);
        let client = Client::new(&server, Some("t".into())).unwrap();
        let err = watch(&client, "dep_nope", &quiet()).unwrap_err();
        assert_eq!(err.to_string(), "not_found (404): no deployment dep_nope");
    }

    #[test]
    fn the_watch_gives_up_after_repeated_connection_failures_and_honours_interrupts() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let err = watch(&client, "dep_x", &quiet()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("20 polls failed in a row"), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");

        let flag = AtomicBool::new(true);
        let opts = WatchOptions {
            interrupted: Some(&flag),
            ..quiet()
        };
        assert!(
            watch(&client, "dep_x", &opts)
                .unwrap_err()
                .to_string()
                .contains("interrupted")
        );
    }

    #[test]
    fn gate_memory_is_bounded() {
        let mut ch = Changes::default();
        let mut v = running();
        let gates: Vec<serde_json::Value> = (0..(MAX_GATES_SEEN as u32 + 5))
            .map(|i| json!({"stage": i, "gate": "g", "verdict": "wait", "reason": "", "checks": [], "at": ""}))
            .collect();
        v["gates"] = json!(gates);
        let lines = ch.new_gates(&dep(v));
        assert_eq!(lines.len(), MAX_GATES_SEEN);
        assert_eq!(ch.gates_seen.len(), MAX_GATES_SEEN);
    }
}
