//! Application-aware health, in the four layers of the reference's "Health Check Layers":
//!
//! 1. connectivity: how long ago the coordinator and the peers were last heard from;
//! 2. system: CPU, memory, disk and temperature, read from `/proc`, `statvfs` and
//!    `/sys/class/thermal` (roots are injectable so tests feed simulated files);
//! 3. application: the flow runs, its version is the expected one, per-node error rates over a
//!    sliding window, node restarts and crash loops;
//! 4. functional: the outcome of the flow's own smoke test.
//!
//! The reference is blunt about why: "A device that responds to ping but serves garbage results
//! is not healthy." So the application and functional layers decide trials, and connectivity
//! can at worst make a device `degraded` ("offline is not failed").
//!
//! Evaluation is a pure function of samples and thresholds ([`evaluate`]); only
//! [`SystemProbe::sample`] touches the filesystem. The report has the reference's shape,
//! `{"status":"healthy|degraded|unhealthy","version":"…","checks":{…}}`, and is what the local
//! HTTP endpoint serves and what the agent sends to the coordinator.

mod system;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use system::read_small;
pub use system::{
    SystemProbe, SystemSample, THROTTLED_PATH, parse_meminfo, parse_proc_stat, parse_throttled,
};

use floe_wire::proto::SystemSummary;
use floe_wire::proto::report::TEMPERATURE_MC_RANGE;
use serde::Serialize;

use crate::config::HealthConfig;

/// A health status, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything within bounds.
    Healthy,
    /// Working, but something needs attention.
    Degraded,
    /// Not doing its job.
    Unhealthy,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }

    fn gauge(self) -> u8 {
        match self {
            Status::Healthy => 0,
            Status::Degraded => 1,
            Status::Unhealthy => 2,
        }
    }
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The verdict.
    pub status: Status,
    /// What was observed, in words.
    pub detail: String,
    /// The measured value, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

impl Check {
    fn new(status: Status, detail: impl Into<String>, value: Option<f64>) -> Check {
        Check {
            status,
            detail: detail.into(),
            value,
        }
    }
}

/// The health report in the reference's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The worst status of all checks (connectivity capped at degraded).
    pub status: Status,
    /// The version the active slot runs.
    pub version: String,
    /// Every check by `layer.name`.
    pub checks: BTreeMap<String, Check>,
}

impl HealthReport {
    /// A report for a daemon that has not sampled anything yet.
    pub fn starting(version: &str) -> HealthReport {
        let mut checks = BTreeMap::new();
        checks.insert(
            "application.flow".to_string(),
            Check::new(Status::Unhealthy, "starting", None),
        );
        HealthReport {
            status: Status::Unhealthy,
            version: version.to_string(),
            checks,
        }
    }

    /// The worst status of the application and functional layers: what decides a trial.
    pub fn application_status(&self) -> Status {
        self.checks
            .iter()
            .filter(|(k, _)| k.starts_with("application.") || k.starts_with("functional."))
            .map(|(_, c)| c.status)
            .max()
            .unwrap_or(Status::Healthy)
    }

    /// The checks that are not healthy, as `name: detail`, for logs and audit records.
    pub fn problems(&self) -> String {
        self.checks
            .iter()
            .filter(|(_, c)| c.status != Status::Healthy)
            .map(|(k, c)| format!("{k}: {}", c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Layer 1 input: when the device last heard from the network.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Connectivity {
    /// Age of the last coordinator heartbeat; None if never heard.
    pub coordinator_age: Option<Duration>,
    /// Connected peers.
    pub peers: usize,
}

/// Counters of one node, as the engine reports them (monotonic since the flow started).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// The node id.
    pub id: String,
    /// Messages the node received.
    pub received: u64,
    /// Messages that ended in an error.
    pub errors: u64,
    /// Times the node was restarted after a panic.
    pub restarts: u64,
    /// The node's 95th-percentile processing time per message since the flow started (none
    /// before its first message).
    pub p95: Option<Duration>,
}

/// Layer 3 input: what the running flow says about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppSnapshot {
    /// The flow is running.
    pub running: bool,
    /// Why it is not running, when it stopped on its own.
    pub stopped_reason: Option<String>,
    /// The version loaded.
    pub version: Option<String>,
    /// Per-node counters.
    pub nodes: Vec<NodeCounters>,
}

/// Layer 4 input: the smoke test's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Functional {
    /// No smoke test has run for this version.
    NotRun,
    /// The manifest declares no test input; running and healthy was the test.
    NoTestInput,
    /// The smoke test passed.
    Passed,
    /// The smoke test failed, with the reason.
    Failed(String),
}

/// How many application snapshots the error-rate window keeps.
pub const APP_WINDOW: usize = 30;

/// Keeps a bounded window of application snapshots (the oldest is dropped at the bound) so
/// error rates and restarts are measured over recent activity, not since the flow started.
#[derive(Debug, Default)]
pub struct AppWindow {
    samples: VecDeque<AppSnapshot>,
    /// Node restarts since the last [`AppWindow::reset`] (the switch), whatever the window.
    since_reset: u64,
}

/// The application layer's derived figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppAssessment {
    /// The newest snapshot.
    pub latest: AppSnapshot,
    /// The worst node error rate over the window, with the node id.
    pub worst_error_rate: Option<(String, f64)>,
    /// Node restarts over the window (the local crash-loop check).
    pub restarts: u64,
    /// Node restarts since the last switch (what the report's `restarts` carries, with the
    /// daemon's restarts on trial): counted across the window, so it only grows until the
    /// next switch.
    pub restarts_since_switch: u64,
    /// The flow's latency figure: the highest 95th-percentile processing time of any node
    /// (the slowest step a message can meet), none before any node processed a message.
    pub p95: Option<Duration>,
}

impl AppWindow {
    /// Adds a snapshot (dropping the oldest at [`APP_WINDOW`]) and returns the assessment.
    pub fn push(&mut self, snap: AppSnapshot) -> AppAssessment {
        // New restarts since the previous snapshot; a node absent from it (or the first
        // snapshot after a reset, taken from a flow started at the switch) counts whole.
        let prev = self.samples.back();
        let fresh: u64 = snap
            .nodes
            .iter()
            .map(|n| {
                let before = prev
                    .and_then(|p| p.nodes.iter().find(|o| o.id == n.id))
                    .map_or(0, |o| o.restarts);
                n.restarts.saturating_sub(before)
            })
            .sum();
        self.since_reset = self.since_reset.saturating_add(fresh);
        if self.samples.len() >= APP_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(snap);
        self.assess()
    }

    /// Forgets everything (after a switch the counters restart from zero).
    pub fn reset(&mut self) {
        self.samples.clear();
        self.since_reset = 0;
    }

    /// The assessment of the current window.
    pub fn assess(&self) -> AppAssessment {
        let Some(latest) = self.samples.back() else {
            return AppAssessment::default();
        };
        // The baseline is the oldest snapshot in the window; a node absent from it started
        // inside the window, so its whole count is recent.
        let base = if self.samples.len() > 1 {
            self.samples.front()
        } else {
            None
        };
        let mut worst: Option<(String, f64)> = None;
        let mut restarts = 0;
        for n in &latest.nodes {
            let old = base.and_then(|b| b.nodes.iter().find(|o| o.id == n.id));
            let (r0, e0, s0) = old.map_or((0, 0, 0), |o| (o.received, o.errors, o.restarts));
            let received = n.received.saturating_sub(r0);
            let errors = n.errors.saturating_sub(e0);
            restarts += n.restarts.saturating_sub(s0);
            if errors == 0 {
                continue;
            }
            let rate = errors as f64 / received.max(errors) as f64;
            if worst.as_ref().is_none_or(|(_, w)| rate > *w) {
                worst = Some((n.id.clone(), rate));
            }
        }
        let p95 = latest.nodes.iter().filter_map(|n| n.p95).max();
        AppAssessment {
            latest: latest.clone(),
            worst_error_rate: worst,
            restarts,
            restarts_since_switch: self.since_reset,
            p95,
        }
    }
}

/// The system figures a device report carries (the wire's integers): percentages in
/// permille, degrees in millidegrees, free disk in MiB, the functional check's result (absent
/// when no smoke test with test input ran for this version). None when nothing is known.
pub fn system_summary(sys: &SystemSample, functional: &Functional) -> Option<SystemSummary> {
    let permille = |p: Option<f64>| {
        p.filter(|v| v.is_finite())
            .map(|v| (v * 10.0).round().clamp(0.0, 1000.0) as u16)
    };
    let summary = SystemSummary {
        cpu_permille: permille(sys.cpu_percent),
        memory_permille: permille(sys.memory_percent),
        temperature_mc: sys
            .temperature_celsius
            .filter(|t| t.is_finite())
            .map(|t| (t * 1000.0).round())
            .filter(|t| (-1e9..=1e9).contains(t))
            .map(|t| t as i32)
            .filter(|t| TEMPERATURE_MC_RANGE.contains(t)),
        throttled: sys.throttled,
        disk_free_mb: sys
            .disk_free_mb
            .map(|mb| u32::try_from(mb).unwrap_or(u32::MAX)),
        disk_used_permille: permille(sys.disk_percent),
        functional_ok: match functional {
            Functional::Passed => Some(true),
            Functional::Failed(_) => Some(false),
            Functional::NotRun | Functional::NoTestInput => None,
        },
    };
    (!summary.is_empty()).then_some(summary)
}

/// Evaluates all four layers into a report. Pure: every input is a sample.
pub fn evaluate(
    cfg: &HealthConfig,
    version: &str,
    expected_version: Option<&str>,
    conn: &Connectivity,
    sys: &SystemSample,
    app: &AppAssessment,
    functional: &Functional,
) -> HealthReport {
    let mut checks = BTreeMap::new();

    // Layer 1. Offline is not failed: connectivity can only degrade.
    let c = match conn.coordinator_age {
        None if conn.peers == 0 => Check::new(
            Status::Degraded,
            "never heard from the coordinator, no peers",
            None,
        ),
        None => Check::new(
            Status::Healthy,
            format!("{} peers, coordinator not heard yet", conn.peers),
            None,
        ),
        Some(age) if age > cfg.heartbeat_stale => Check::new(
            Status::Degraded,
            format!("coordinator heartbeat {}s old", age.as_secs()),
            Some(age.as_secs_f64()),
        ),
        Some(age) => Check::new(
            Status::Healthy,
            format!(
                "coordinator heartbeat {}s old, {} peers",
                age.as_secs(),
                conn.peers
            ),
            Some(age.as_secs_f64()),
        ),
    };
    checks.insert("connectivity.heartbeat".to_string(), c);

    // Layer 2.
    let level = |v: Option<f64>, degraded: f64, unhealthy: f64, what: &str, unit: &str| match v {
        None => Check::new(Status::Healthy, format!("{what} not available"), None),
        Some(v) if v >= unhealthy => Check::new(
            Status::Unhealthy,
            format!("{what} {v:.1}{unit} >= {unhealthy}{unit}"),
            Some(v),
        ),
        Some(v) if v >= degraded => Check::new(
            Status::Degraded,
            format!("{what} {v:.1}{unit} >= {degraded}{unit}"),
            Some(v),
        ),
        Some(v) => Check::new(Status::Healthy, format!("{what} {v:.1}{unit}"), Some(v)),
    };
    checks.insert(
        "system.cpu".to_string(),
        level(
            sys.cpu_percent,
            cfg.cpu_degraded_percent,
            f64::INFINITY,
            "cpu",
            "%",
        ),
    );
    checks.insert(
        "system.memory".to_string(),
        level(
            sys.memory_percent,
            cfg.memory_unhealthy_percent * 0.9,
            cfg.memory_unhealthy_percent,
            "memory",
            "%",
        ),
    );
    checks.insert(
        "system.disk".to_string(),
        level(
            sys.disk_percent,
            cfg.disk_degraded_percent,
            cfg.disk_unhealthy_percent,
            "disk",
            "%",
        ),
    );
    checks.insert(
        "system.temperature".to_string(),
        level(
            sys.temperature_celsius,
            cfg.temperature_degraded_celsius,
            cfg.temperature_unhealthy_celsius,
            "temperature",
            "C",
        ),
    );

    // Throttling is reported, not judged here: a degraded status would hold a switched device
    // back from verification; the coordinator's thermal triggers and canary gate judge it.
    let throttling = match sys.throttled {
        Some(true) => Check::new(
            Status::Healthy,
            "throttled (firmware flags or a zone at its passive trip point)",
            Some(1.0),
        ),
        Some(false) => Check::new(Status::Healthy, "not throttled", Some(0.0)),
        None => Check::new(Status::Healthy, "throttling not available", None),
    };
    checks.insert("system.throttling".to_string(), throttling);

    // Layer 3.
    let latest = &app.latest;
    let flow = if latest.running {
        Check::new(Status::Healthy, "running", None)
    } else {
        let why = latest.stopped_reason.as_deref().unwrap_or("not running");
        Check::new(Status::Unhealthy, why, None)
    };
    checks.insert("application.flow".to_string(), flow);
    let running_version = latest.version.as_deref().unwrap_or("");
    let ver = match expected_version {
        Some(want) if want != running_version => Check::new(
            Status::Unhealthy,
            format!("running `{running_version}`, expected `{want}`"),
            None,
        ),
        _ => Check::new(
            Status::Healthy,
            format!("running `{running_version}`"),
            None,
        ),
    };
    checks.insert("application.version".to_string(), ver);
    let err = match &app.worst_error_rate {
        Some((node, rate)) if *rate > cfg.max_error_rate => Check::new(
            Status::Unhealthy,
            format!(
                "node {node} error rate {:.1}% > {:.1}%",
                rate * 100.0,
                cfg.max_error_rate * 100.0
            ),
            Some(*rate),
        ),
        Some((node, rate)) => Check::new(
            Status::Healthy,
            format!("worst node {node} error rate {:.1}%", rate * 100.0),
            Some(*rate),
        ),
        None => Check::new(Status::Healthy, "no errors", Some(0.0)),
    };
    checks.insert("application.error_rate".to_string(), err);
    let restarts = match app.restarts {
        0 => Check::new(Status::Healthy, "no node restarts", Some(0.0)),
        n @ 1..=2 => Check::new(
            Status::Degraded,
            format!("{n} node restarts in the window"),
            Some(n as f64),
        ),
        n => Check::new(
            Status::Unhealthy,
            format!("crash loop: {n} node restarts in the window"),
            Some(n as f64),
        ),
    };
    checks.insert("application.restarts".to_string(), restarts);

    // Layer 4.
    let f = match functional {
        Functional::NotRun => {
            Check::new(Status::Healthy, "no smoke test run for this version", None)
        }
        Functional::NoTestInput => Check::new(
            Status::Healthy,
            "no test input declared; started healthy",
            None,
        ),
        Functional::Passed => Check::new(Status::Healthy, "smoke test passed", None),
        Functional::Failed(why) => {
            Check::new(Status::Unhealthy, format!("smoke test failed: {why}"), None)
        }
    };
    checks.insert("functional.smoke".to_string(), f);

    let status = checks
        .values()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Healthy);
    HealthReport {
        status,
        version: version.to_string(),
        checks,
    }
}

/// Counters the agent keeps about itself, exported beside the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentCounters {
    /// Switches to a new slot.
    pub switches: u64,
    /// Rollbacks (automatic and requested).
    pub rollbacks: u64,
    /// The last switch gap (old flow stopped to new flow started), seconds.
    pub last_switch_gap: Option<f64>,
    /// The daemon's resident memory, bytes.
    pub rss_bytes: Option<u64>,
}

/// The daemon's resident set size from `/proc/self/status`.
pub fn self_rss_bytes() -> Option<u64> {
    let text = read_small(Path::new("/proc/self/status"))?;
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Writes one per-node counter family (help, type, one sample per node).
fn node_counter(
    out: &mut String,
    nodes: &[NodeCounters],
    name: &str,
    help: &str,
    value: impl Fn(&NodeCounters) -> u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for n in nodes {
        let _ = writeln!(
            out,
            "{name}{{node=\"{}\"}} {}",
            escape_label(&n.id),
            value(n)
        );
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The report, the application counters and the agent's counters in Prometheus text format.
pub fn metrics_text(report: &HealthReport, app: &AppAssessment, agent: &AgentCounters) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP floe_health_status Overall health: 0 healthy, 1 degraded, 2 unhealthy."
    );
    let _ = writeln!(out, "# TYPE floe_health_status gauge");
    let _ = writeln!(
        out,
        "floe_health_status{{version=\"{}\"}} {}",
        escape_label(&report.version),
        report.status.gauge()
    );
    let _ = writeln!(
        out,
        "# HELP floe_check_status Per-check health: 0 healthy, 1 degraded, 2 unhealthy."
    );
    let _ = writeln!(out, "# TYPE floe_check_status gauge");
    for (name, c) in &report.checks {
        let _ = writeln!(
            out,
            "floe_check_status{{check=\"{}\"}} {}",
            escape_label(name),
            c.status.gauge()
        );
    }
    let _ = writeln!(out, "# HELP floe_check_value The value a check measured.");
    let _ = writeln!(out, "# TYPE floe_check_value gauge");
    for (name, c) in &report.checks {
        if let Some(v) = c.value {
            let _ = writeln!(
                out,
                "floe_check_value{{check=\"{}\"}} {v}",
                escape_label(name)
            );
        }
    }
    let _ = writeln!(out, "# HELP floe_flow_running 1 when the active flow runs.");
    let _ = writeln!(out, "# TYPE floe_flow_running gauge");
    let _ = writeln!(out, "floe_flow_running {}", u8::from(app.latest.running));
    node_counter(
        &mut out,
        &app.latest.nodes,
        "floe_node_received_total",
        "Messages a node received.",
        |n| n.received,
    );
    node_counter(
        &mut out,
        &app.latest.nodes,
        "floe_node_errors_total",
        "Messages that ended in an error.",
        |n| n.errors,
    );
    let _ = writeln!(out, "# HELP floe_switches_total Switches to a new slot.");
    let _ = writeln!(out, "# TYPE floe_switches_total counter");
    let _ = writeln!(out, "floe_switches_total {}", agent.switches);
    let _ = writeln!(
        out,
        "# HELP floe_rollbacks_total Rollbacks to the last known good slot."
    );
    let _ = writeln!(out, "# TYPE floe_rollbacks_total counter");
    let _ = writeln!(out, "floe_rollbacks_total {}", agent.rollbacks);
    if let Some(gap) = agent.last_switch_gap {
        let _ = writeln!(
            out,
            "# HELP floe_last_switch_gap_seconds Old flow stopped to new flow started."
        );
        let _ = writeln!(out, "# TYPE floe_last_switch_gap_seconds gauge");
        let _ = writeln!(out, "floe_last_switch_gap_seconds {gap}");
    }
    if let Some(rss) = agent.rss_bytes {
        let _ = writeln!(
            out,
            "# HELP floe_process_resident_memory_bytes floed's resident memory."
        );
        let _ = writeln!(out, "# TYPE floe_process_resident_memory_bytes gauge");
        let _ = writeln!(out, "floe_process_resident_memory_bytes {rss}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(running: bool, nodes: &[(&str, u64, u64, u64)]) -> AppSnapshot {
        AppSnapshot {
            running,
            stopped_reason: None,
            version: Some("1.0".into()),
            nodes: nodes
                .iter()
                .map(|(id, r, e, s)| NodeCounters {
                    id: id.to_string(),
                    received: *r,
                    errors: *e,
                    restarts: *s,
                    p95: None,
                })
                .collect(),
        }
    }

    fn eval(a: &AppAssessment, sys: &SystemSample, f: &Functional) -> HealthReport {
        let conn = Connectivity {
            coordinator_age: Some(Duration::from_secs(5)),
            peers: 2,
        };
        evaluate(
            &HealthConfig::default(),
            "1.0",
            Some("1.0"),
            &conn,
            sys,
            a,
            f,
        )
    }

    #[test]
    fn healthy_flow_is_healthy_and_has_the_reference_shape() {
        let mut w = AppWindow::default();
        let a = w.push(app(true, &[("n1", 10, 0, 0)]));
        let r = eval(&a, &SystemSample::default(), &Functional::Passed);
        assert_eq!(r.status, Status::Healthy);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["status"], "healthy");
        assert_eq!(json["version"], "1.0");
        assert_eq!(json["checks"]["application.flow"]["status"], "healthy");
    }

    #[test]
    fn error_rate_over_the_window_makes_it_unhealthy() {
        let mut w = AppWindow::default();
        w.push(app(true, &[("n1", 1000, 0, 0)]));
        // 10 errors in 100 new messages is 10%, above the default 5%, although the lifetime
        // rate is under 1%.
        let a = w.push(app(true, &[("n1", 1100, 10, 0)]));
        let (node, rate) = a.worst_error_rate.clone().unwrap();
        assert_eq!(node, "n1");
        assert!((rate - 0.1).abs() < 1e-9);
        let r = eval(&a, &SystemSample::default(), &Functional::Passed);
        assert_eq!(r.status, Status::Unhealthy);
        assert_eq!(r.application_status(), Status::Unhealthy);
        assert!(r.problems().contains("error rate"));
    }

    #[test]
    fn the_flows_p95_is_its_slowest_nodes() {
        let mut w = AppWindow::default();
        assert_eq!(w.assess().p95, None);
        let mut snap = app(true, &[("a", 10, 0, 0), ("b", 10, 0, 0), ("c", 0, 0, 0)]);
        snap.nodes[0].p95 = Some(Duration::from_micros(300));
        snap.nodes[1].p95 = Some(Duration::from_millis(12));
        // Node c has processed nothing yet: no figure, not a zero.
        assert_eq!(w.push(snap).p95, Some(Duration::from_millis(12)));
    }

    #[test]
    fn restarts_since_the_switch_outlive_the_window_and_reset_at_the_switch() {
        let mut w = AppWindow::default();
        // A flow started at the switch that already restarted a node once.
        assert_eq!(
            w.push(app(true, &[("n1", 0, 0, 1)])).restarts_since_switch,
            1
        );
        w.push(app(true, &[("n1", 5, 0, 3)]));
        // Long after the restarts left the 30-sample window they still count.
        let mut last = AppAssessment::default();
        for i in 0..(APP_WINDOW as u64 * 2) {
            last = w.push(app(true, &[("n1", 10 + i, 0, 3), ("n2", i, 0, 0)]));
        }
        assert_eq!(last.restarts, 0);
        assert_eq!(last.restarts_since_switch, 3);
        // A node that appears with restarts counts whole.
        assert_eq!(
            w.push(app(true, &[("n1", 99, 0, 3), ("n3", 0, 0, 2)]))
                .restarts_since_switch,
            5
        );
        w.reset();
        assert_eq!(
            w.push(app(true, &[("n1", 0, 0, 0)])).restarts_since_switch,
            0
        );
    }

    #[test]
    fn system_summary_is_integers_and_unknown_stays_absent() {
        assert_eq!(
            system_summary(&SystemSample::default(), &Functional::NotRun),
            None
        );
        assert_eq!(
            system_summary(&SystemSample::default(), &Functional::NoTestInput),
            None
        );
        let sys = SystemSample {
            cpu_percent: Some(12.34),
            memory_percent: Some(100.2),
            disk_percent: Some(55.55),
            disk_free_mb: Some(u64::MAX),
            temperature_celsius: Some(61.5),
            throttled: Some(true),
        };
        let s = system_summary(&sys, &Functional::Failed("no output".into())).unwrap();
        assert_eq!(s.cpu_permille, Some(123));
        assert_eq!(s.memory_permille, Some(1000));
        assert_eq!(s.disk_used_permille, Some(556));
        assert_eq!(s.disk_free_mb, Some(u32::MAX));
        assert_eq!(s.temperature_mc, Some(61_500));
        assert_eq!(s.throttled, Some(true));
        assert_eq!(s.functional_ok, Some(false));
        assert!(s.check().is_ok());
        let hot = SystemSample {
            temperature_celsius: Some(f64::NAN),
            ..SystemSample::default()
        };
        assert_eq!(
            system_summary(&hot, &Functional::Passed)
                .unwrap()
                .temperature_mc,
            None
        );
    }

    #[test]
    fn window_is_bounded() {
        let mut w = AppWindow::default();
        for i in 0..(APP_WINDOW as u64 * 3) {
            w.push(app(true, &[("n1", i, 0, 0)]));
        }
        assert_eq!(w.samples.len(), APP_WINDOW);
    }

    #[test]
    fn stopped_flow_wrong_version_restarts_and_failed_smoke_are_unhealthy() {
        let mut w = AppWindow::default();
        let mut snap = app(false, &[]);
        snap.stopped_reason = Some("node n2 panicked".into());
        let a = w.push(snap);
        let r = eval(&a, &SystemSample::default(), &Functional::NotRun);
        assert_eq!(r.checks["application.flow"].status, Status::Unhealthy);
        assert!(r.checks["application.flow"].detail.contains("panicked"));

        let mut w = AppWindow::default();
        let mut snap = app(true, &[]);
        snap.version = Some("0.9".into());
        let r = eval(&w.push(snap), &SystemSample::default(), &Functional::NotRun);
        assert_eq!(r.checks["application.version"].status, Status::Unhealthy);

        let mut w = AppWindow::default();
        w.push(app(true, &[("n1", 0, 0, 0)]));
        let a = w.push(app(true, &[("n1", 0, 0, 3)]));
        let r = eval(&a, &SystemSample::default(), &Functional::NotRun);
        assert_eq!(r.checks["application.restarts"].status, Status::Unhealthy);

        let r = eval(
            &AppWindow::default().push(app(true, &[])),
            &SystemSample::default(),
            &Functional::Failed("no output".into()),
        );
        assert_eq!(r.application_status(), Status::Unhealthy);
    }

    #[test]
    fn offline_only_degrades_and_system_thresholds_apply() {
        let a = AppWindow::default().push(app(true, &[]));
        let r = evaluate(
            &HealthConfig::default(),
            "1.0",
            None,
            &Connectivity::default(),
            &SystemSample::default(),
            &a,
            &Functional::NotRun,
        );
        assert_eq!(r.status, Status::Degraded);
        let sys = SystemSample {
            cpu_percent: Some(10.0),
            memory_percent: Some(95.0),
            disk_percent: Some(50.0),
            temperature_celsius: Some(60.0),
            ..SystemSample::default()
        };
        let r = eval(&a, &sys, &Functional::Passed);
        assert_eq!(r.checks["system.memory"].status, Status::Unhealthy);
        assert_eq!(r.checks["system.throttling"].value, None);
        let throttled = SystemSample {
            throttled: Some(true),
            ..SystemSample::default()
        };
        let t = eval(&a, &throttled, &Functional::Passed);
        assert_eq!(t.checks["system.throttling"].value, Some(1.0));
        assert_eq!(t.status, Status::Healthy);
        assert_eq!(r.status, Status::Unhealthy);
        // The system layer does not decide trials.
        assert_eq!(r.application_status(), Status::Healthy);
    }

    #[test]
    fn probe_reads_simulated_proc_and_sys() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let sys_root = tmp.path().join("sys");
        std::fs::create_dir_all(&proc_root).unwrap();
        std::fs::create_dir_all(sys_root.join("class/thermal/thermal_zone0")).unwrap();
        std::fs::create_dir_all(sys_root.join("class/thermal/thermal_zone1")).unwrap();
        std::fs::write(sys_root.join("class/thermal/thermal_zone0/temp"), "45000\n").unwrap();
        std::fs::write(sys_root.join("class/thermal/thermal_zone1/temp"), "81500\n").unwrap();
        std::fs::write(
            proc_root.join("meminfo"),
            "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n",
        )
        .unwrap();
        std::fs::write(
            proc_root.join("stat"),
            "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n",
        )
        .unwrap();
        let mut p = SystemProbe::new(&proc_root, &sys_root, tmp.path());
        let s = p.sample();
        assert_eq!(s.cpu_percent, None);
        assert_eq!(s.memory_percent, Some(75.0));
        assert_eq!(s.temperature_celsius, Some(81.5));
        assert!(s.disk_percent.is_some());
        // 100 more jiffies, 50 of them idle: 50% busy.
        std::fs::write(proc_root.join("stat"), "cpu  125 0 125 850 0 0 0 0 0 0\n").unwrap();
        assert_eq!(p.sample().cpu_percent, Some(50.0));
        let r = eval(
            &AppWindow::default().push(app(true, &[])),
            &p.sample(),
            &Functional::Passed,
        );
        assert_eq!(r.checks["system.temperature"].status, Status::Degraded);
    }

    #[test]
    fn metrics_text_is_prometheus_shaped() {
        let a = AppWindow::default().push(app(true, &[("n\"1", 5, 1, 0)]));
        let r = eval(&a, &SystemSample::default(), &Functional::Passed);
        let m = metrics_text(
            &r,
            &a,
            &AgentCounters {
                switches: 2,
                ..Default::default()
            },
        );
        assert!(m.contains("floe_health_status{version=\"1.0\"} 2"), "{m}");
        assert!(
            m.contains("floe_node_errors_total{node=\"n\\\"1\"} 1"),
            "{m}"
        );
        assert!(m.contains("floe_switches_total 2"));
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(),
                "{line}"
            );
        }
    }
}
