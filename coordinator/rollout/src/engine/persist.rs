//! The persisted form of the engine: one flat record, field for field the layout the engine
//! had before its state was grouped into sub-states, so a coordinator upgraded in the middle
//! of a deployment loads the state it stored and goes on with the same future.
//!
//! Layout 2 (issue 15) adds `layout` and `gates` (the gates' windows, captured baselines and
//! CAUTION bookkeeping) at the end; a layout-1 state has neither and loads with empty windows
//! and the plan's per-type baselines, so a deployment stored before the change goes on (its
//! gates wait until reports fill their windows).
//!
//! Serializing borrows the engine ([`StateRef`]), so persisting a million-device deployment
//! after every input copies nothing; deserializing builds a [`State`] and moves its parts into
//! the sub-states.

use super::device::Dev;
use super::triggers::Signals;
use super::types::{Action, DeploymentStatus, StageResult, Verdict};
use super::window::GateState;
use super::{Dispatch, GroupAgg, Health, Machine, Phase, RollbackSweep, Rollout, Sweeps, Timers};
use crate::Millis;
use crate::plan::Plan;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::VecDeque;

/// The engine's persisted fields, borrowed.
#[derive(Serialize)]
struct StateRef<'a> {
    plan: &'a Plan,
    status: DeploymentStatus,
    phase: Phase,
    created_at: Millis,
    started_at: Option<Millis>,
    ended_at: Option<Millis>,
    now: Millis,
    devs: &'a [Dev],
    stage: u32,
    cursor: u32,
    high_water: u32,
    stage_inflight: u32,
    inflight: u32,
    deadlines: &'a VecDeque<(u32, Millis)>,
    catchup: &'a VecDeque<u32>,
    unreachable: &'a VecDeque<(u32, Millis)>,
    restarts_recent: &'a VecDeque<(u32, Millis)>,
    commits: &'a VecDeque<u32>,
    commit_cursor: u32,
    final_cursor: u32,
    rollback: &'a Option<RollbackSweep>,
    queue: &'a VecDeque<Action>,
    groups: &'a [GroupAgg],
    stages: &'a [StageResult],
    next_check: Option<Millis>,
    trend_last: Option<f64>,
    trend_rises: u8,
    last_gate: Option<(u32, Verdict)>,
    pause_reason: &'a Option<String>,
    status_reason: &'a str,
    last_action: &'a str,
    offline_pending: u32,
    active: u64,
    mem_warn: u64,
    health_delta: Option<[f64; 3]>,
    completion_verdict: Option<Verdict>,
    layout: u32,
    gates: &'a GateState,
    /// Left out while empty, so states without system figures keep their stored layout.
    #[serde(skip_serializing_if = "Signals::is_empty_ref")]
    signals: &'a Signals,
}

/// The layout this engine writes.
pub(super) const LAYOUT: u32 = 2;

fn layout_one() -> u32 {
    1
}

/// The engine's persisted fields, owned.
#[derive(Deserialize)]
pub(super) struct State {
    plan: Plan,
    status: DeploymentStatus,
    phase: Phase,
    created_at: Millis,
    started_at: Option<Millis>,
    ended_at: Option<Millis>,
    now: Millis,
    devs: Vec<Dev>,
    stage: u32,
    cursor: u32,
    high_water: u32,
    stage_inflight: u32,
    inflight: u32,
    deadlines: VecDeque<(u32, Millis)>,
    catchup: VecDeque<u32>,
    unreachable: VecDeque<(u32, Millis)>,
    restarts_recent: VecDeque<(u32, Millis)>,
    commits: VecDeque<u32>,
    commit_cursor: u32,
    final_cursor: u32,
    rollback: Option<RollbackSweep>,
    queue: VecDeque<Action>,
    groups: Vec<GroupAgg>,
    stages: Vec<StageResult>,
    next_check: Option<Millis>,
    trend_last: Option<f64>,
    trend_rises: u8,
    last_gate: Option<(u32, Verdict)>,
    pause_reason: Option<String>,
    status_reason: String,
    last_action: String,
    offline_pending: u32,
    active: u64,
    mem_warn: u64,
    health_delta: Option<[f64; 3]>,
    completion_verdict: Option<Verdict>,
    /// 1 when absent (states written before the field).
    #[serde(default = "layout_one")]
    layout: u32,
    #[serde(default)]
    gates: GateState,
    /// Absent in states stored before the system-figure triggers.
    #[serde(default)]
    signals: Signals,
}

impl Serialize for Rollout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (m, d, t, h, w) = (
            &self.machine,
            &self.dispatch,
            &self.timers,
            &self.health,
            &self.sweeps,
        );
        StateRef {
            plan: &self.plan,
            status: m.status,
            phase: m.phase,
            created_at: m.created_at,
            started_at: m.started_at,
            ended_at: m.ended_at,
            now: self.now,
            devs: &self.devs,
            stage: m.stage,
            cursor: d.cursor,
            high_water: d.high_water,
            stage_inflight: d.stage_inflight,
            inflight: d.inflight,
            deadlines: &t.deadlines,
            catchup: &d.catchup,
            unreachable: &t.unreachable,
            restarts_recent: &h.restarts_recent,
            commits: &d.commits,
            commit_cursor: d.commit_cursor,
            final_cursor: w.final_cursor,
            rollback: &w.rollback,
            queue: &self.queue,
            groups: &h.groups,
            stages: &m.stages,
            next_check: t.next_check,
            trend_last: h.trend_last,
            trend_rises: h.trend_rises,
            last_gate: m.last_gate,
            pause_reason: &m.pause_reason,
            status_reason: &m.status_reason,
            last_action: &m.last_action,
            offline_pending: d.offline_pending,
            active: h.active,
            mem_warn: h.mem_warn,
            health_delta: h.health_delta,
            completion_verdict: m.completion_verdict,
            layout: LAYOUT,
            gates: &h.gates,
            signals: &self.signals,
        }
        .serialize(s)
    }
}

impl From<State> for Rollout {
    fn from(s: State) -> Rollout {
        let mut gates = s.gates;
        if s.layout < 2 || gates.judges.is_empty() {
            gates.rebuild(&s.plan);
            // Count the devices already in the running aggregates (once, at load).
            for (i, d) in s.devs.iter().enumerate() {
                if d.flags & super::device::F_REPORTED != 0 {
                    let t = s.plan.device_type[i];
                    let g = gates.group_of(t, s.plan.device_region[i]);
                    gates.reporting_changed(g, true);
                }
            }
        }
        Rollout {
            plan: s.plan,
            now: s.now,
            devs: s.devs,
            queue: s.queue,
            machine: Machine {
                status: s.status,
                phase: s.phase,
                created_at: s.created_at,
                started_at: s.started_at,
                ended_at: s.ended_at,
                stage: s.stage,
                stages: s.stages,
                last_gate: s.last_gate,
                pause_reason: s.pause_reason,
                status_reason: s.status_reason,
                last_action: s.last_action,
                completion_verdict: s.completion_verdict,
            },
            dispatch: Dispatch {
                cursor: s.cursor,
                high_water: s.high_water,
                stage_inflight: s.stage_inflight,
                inflight: s.inflight,
                catchup: s.catchup,
                commits: s.commits,
                commit_cursor: s.commit_cursor,
                offline_pending: s.offline_pending,
            },
            timers: Timers {
                deadlines: s.deadlines,
                unreachable: s.unreachable,
                next_check: s.next_check,
            },
            health: Health {
                groups: s.groups,
                restarts_recent: s.restarts_recent,
                trend_last: s.trend_last,
                trend_rises: s.trend_rises,
                active: s.active,
                mem_warn: s.mem_warn,
                health_delta: s.health_delta,
                gates,
            },
            sweeps: Sweeps {
                rollback: s.rollback,
                final_cursor: s.final_cursor,
            },
            signals: s.signals,
        }
    }
}
