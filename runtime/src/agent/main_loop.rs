//! The daemon's main loop: one task owns the [`Agent`] and waits on a closed [`Event`] set in
//! one biased select, shutdown first, then commands, then the health tick.
//!
//! Shutdown comes first so a stop request is never starved by a busy command queue. The tick
//! drives health sampling, trial verdicts, the published report and the systemd watchdog ping:
//! if the loop ever blocks (a flow that hangs the thread, a wedged disk), the pings stop and
//! systemd restarts floed, which the crash-loop guard counts. An installation's reply is held
//! until its trial ends, so `floed install` returns the real outcome.
//!
//! When the daemon runs on the fabric, two more inputs join the select: the link inbox
//! (directive posts from gossip or from the coordinator's direct answer to a report, and the
//! end of a staging fetch) and the report heartbeat. A
//! fetch never runs in the loop: it is its own task, and its end comes back through the inbox
//! as an event, so health ticks and watchdog pings go on while chunks arrive. The signed report
//! is handed to a publisher task through a `watch` (only the newest report matters, so the
//! hand-over is bounded at one and the newer report wins) on every heartbeat and at once when
//! what it says changes: applied progress, slots, trial, health level.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::directive::{AcceptedPost, DirectiveStep, FetchError, RefusalMemory};
use super::runner::FlowRunner;
use super::{Agent, AgentError};
use crate::control::{Command, Outcome, Published, Reply};
use floe_fabric::{ArtifactId, Fabric};
use floe_wire::clock::{unix_ms, unix_secs};
use floe_wire::proto::{DeviceReport, Envelope, SystemSummary};

/// What the loop waits for.
#[derive(Debug)]
enum Event {
    /// Stop: stop the flow and return.
    Shutdown,
    /// A control command, or None when every sender is gone.
    Command(Option<Command>),
    /// Something from the fabric (None when the inbox closed).
    Link(Option<LinkInput>),
    /// Time to sample health.
    Tick,
    /// Time to publish the report even if nothing changed.
    Heartbeat,
}

/// What the fabric side hands the loop.
#[derive(Debug)]
pub enum LinkInput {
    /// A directive post's exact bytes (accepted by the gossip validator, or rejected by it and
    /// passed on so the refusal is audited).
    Post(Vec<u8>),
    /// The fabric holds every chunk of this artifact.
    Fetched(ArtifactId),
    /// Starting the fetch of this artifact failed.
    FetchFailed(ArtifactId, FetchError),
    /// The fabric is now connected to this many peers.
    Peers(usize),
}

/// Capacity of the link inbox. Posts beyond it are dropped and counted by the sender (the
/// coordinator re-posts until it sees the report, so a dropped post is sent again).
pub const LINK_INBOX: usize = 64;

/// The loop's connection to the fabric.
#[derive(Debug)]
pub struct LinkIo {
    /// The fabric handle (fetches).
    pub fabric: Fabric,
    /// Posts and fetch completions.
    pub inbox: mpsc::Receiver<LinkInput>,
    /// A sender into the same inbox, for the fetch tasks.
    pub inbox_tx: mpsc::Sender<LinkInput>,
    /// The device identity that signs reports.
    pub key: SigningKey,
    /// Where signed reports go for the publisher task.
    pub reports: watch::Sender<Option<Vec<u8>>>,
}

/// A staging fetch in progress.
#[derive(Debug)]
struct Fetching {
    id: ArtifactId,
    post: AcceptedPost,
    deadline: Instant,
}

/// The loop's fabric-side state.
#[derive(Debug)]
struct LinkState {
    io: LinkIo,
    fetching: Option<Fetching>,
    /// The newest verified directive post that had to wait for a trial to end. Gossip does
    /// not deliver the same bytes twice, so the device keeps it and takes it up itself once
    /// the trial is over (it is checked again then: a newer post replaces it).
    deferred: Option<Vec<u8>>,
    refusals: RefusalMemory,
    last_seq: u64,
    last_fingerprint: Option<DeviceReport>,
}

/// Side effects the loop asks of its host (the systemd notifications in the daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The loop is alive (a watchdog ping).
    Alive,
}

/// The loop's connections.
#[derive(Debug)]
pub struct LoopIo {
    /// Control commands (bounded by the sender's channel).
    pub commands: mpsc::Receiver<Command>,
    /// Cancelled to stop.
    pub shutdown: CancellationToken,
    /// Where reports are published for the HTTP endpoints.
    pub publish: watch::Sender<Arc<Published>>,
    /// The fabric, when the daemon takes part in it.
    pub link: Option<LinkIo>,
}

/// Publishes the agent's current report and metrics.
pub fn publish<R: FlowRunner>(agent: &Agent<R>, tx: &watch::Sender<Arc<Published>>)
where
    R::Flow: std::fmt::Debug,
{
    tx.send_replace(Arc::new(Published {
        report: agent.report().clone(),
        metrics: agent.metrics_text(),
    }));
}

/// Runs until shutdown. `notice` is called on every tick (watchdog).
pub async fn run<R, N>(mut agent: Agent<R>, mut io: LoopIo, mut notice: N) -> Result<(), AgentError>
where
    R: FlowRunner,
    R::Flow: std::fmt::Debug,
    N: FnMut(Notice),
{
    let mut ticker = tokio::time::interval(agent.config().trial.check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat = tokio::time::interval(agent.config().link.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<Reply> = None;
    let mut commands_open = true;
    let mut link = io.link.take().map(|io| LinkState {
        io,
        fetching: None,
        deferred: None,
        refusals: RefusalMemory::default(),
        last_seq: 0,
        last_fingerprint: None,
    });
    let mut link_open = link.is_some();
    if let Some(l) = link.as_mut() {
        match agent.resume_directive().await {
            Ok(step) => start_step(&agent, l, step),
            Err(e) => tracing::error!(error = %e, "resuming the applied directive failed"),
        }
    }
    publish(&agent, &io.publish);
    loop {
        let event = tokio::select! {
            biased;
            _ = io.shutdown.cancelled() => Event::Shutdown,
            c = io.commands.recv(), if commands_open => Event::Command(c),
            m = async {
                match link.as_mut() {
                    Some(l) => l.io.inbox.recv().await,
                    None => std::future::pending().await,
                }
            }, if link_open => Event::Link(m),
            _ = ticker.tick() => Event::Tick,
            _ = heartbeat.tick(), if link.is_some() => Event::Heartbeat,
        };
        let mut force_report = false;
        match event {
            Event::Shutdown => break,
            Event::Command(None) => commands_open = false,
            Event::Command(Some(cmd)) => {
                handle_command(&mut agent, cmd, &mut pending).await;
                publish(&agent, &io.publish);
            }
            Event::Link(None) => link_open = false,
            Event::Link(Some(input)) => {
                if let Some(l) = link.as_mut() {
                    handle_link(&mut agent, l, input).await;
                }
                publish(&agent, &io.publish);
            }
            Event::Tick => {
                match agent.tick().await {
                    Ok(Some(outcome)) => {
                        if let Err(e) = agent.on_trial_end(&outcome) {
                            tracing::error!(error = %e, "recording the trial's end failed");
                        }
                        if let Some(reply) = pending.take() {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "health tick failed"),
                }
                if let Some(l) = link.as_mut() {
                    check_fetch_deadline(&mut agent, l).await;
                    if agent.is_idle()
                        && let Some(bytes) = l.deferred.take()
                    {
                        handle_link(&mut agent, l, LinkInput::Post(bytes)).await;
                    }
                }
                publish(&agent, &io.publish);
                notice(Notice::Alive);
            }
            Event::Heartbeat => force_report = true,
        }
        if let Some(l) = link.as_mut() {
            send_report(&agent, l, force_report);
        }
    }
    if let Some(reply) = pending.take() {
        let _ = reply.send(Err(
            "floed is stopping; the trial resumes when it starts again".to_string(),
        ));
    }
    agent.shutdown().await;
    Ok(())
}

async fn handle_link<R>(agent: &mut Agent<R>, link: &mut LinkState, input: LinkInput)
where
    R: FlowRunner,
    R::Flow: std::fmt::Debug,
{
    match input {
        LinkInput::Peers(n) => agent.note_peers(n),
        LinkInput::Post(bytes) => match agent.check_post(&bytes, unix_secs()) {
            Ok(post) if agent.defers(&post) => {
                link.deferred = Some(bytes);
                // Not now: the device is on trial, and staging or switching would overwrite
                // the slot it may still have to roll back to. The coordinator posts the
                // directive again every round; it is accepted once the trial has ended.
                agent.note_coordinator(Instant::now());
                tracing::debug!(
                    generation = post.directive.value.generation,
                    phase = agent.lifecycle_phase(),
                    "directive deferred until the trial ends"
                );
            }
            Ok(post) => {
                link.deferred = None;
                agent.note_coordinator(Instant::now());
                // A newer directive supersedes a stage whose fetch is still running; the fetch
                // may go on in the fabric, but its end no longer stages anything.
                link.fetching = None;
                let generation = post.directive.value.generation;
                match agent.begin_directive(post).await {
                    Ok(step) => start_step(agent, link, step),
                    Err(e) => {
                        tracing::error!(error = %e, generation, "carrying out a directive failed");
                    }
                }
            }
            Err(refusal) if refusal.is_routine() => {
                // Routine refusals come after the coordinator's signature was checked.
                agent.note_coordinator(Instant::now());
                tracing::debug!(%refusal, "directive not for us or already applied");
            }
            Err(refusal) => {
                if link.refusals.first_time(&bytes)
                    && let Err(e) = agent.audit_refusal(&refusal)
                {
                    tracing::error!(error = %e, "auditing a refused directive failed");
                }
            }
        },
        LinkInput::Fetched(id) => {
            if let Some(f) = link.fetching.take_if(|f| f.id == id)
                && let Err(e) = agent.finish_stage(&f.post, Ok(())).await
            {
                tracing::error!(error = %e, "staging a fetched artifact failed");
            }
        }
        LinkInput::FetchFailed(id, why) => {
            if let Some(f) = link.fetching.take_if(|f| f.id == id)
                && let Err(e) = agent.finish_stage(&f.post, Err(why)).await
            {
                tracing::error!(error = %e, "recording a failed fetch failed");
            }
        }
    }
}

/// Starts what a directive step asks for: a fetch runs as its own task and reports back
/// through the inbox.
fn start_step<R>(agent: &Agent<R>, link: &mut LinkState, step: DirectiveStep)
where
    R: FlowRunner,
    R::Flow: std::fmt::Debug,
{
    let DirectiveStep::Fetch { id, post } = step else {
        return;
    };
    let deadline = Instant::now() + agent.config().link.fetch_timeout;
    link.fetching = Some(Fetching {
        id,
        post: *post,
        deadline,
    });
    let fabric = link.io.fabric.clone();
    let tx = link.io.inbox_tx.clone();
    tokio::spawn(async move {
        if let Err(e) = fabric.fetch(id).await {
            let _ = tx.send(LinkInput::FetchFailed(id, e.into())).await;
        }
    });
}

async fn check_fetch_deadline<R>(agent: &mut Agent<R>, link: &mut LinkState)
where
    R: FlowRunner,
    R::Flow: std::fmt::Debug,
{
    let now = Instant::now();
    if let Some(f) = link.fetching.take_if(|f| now >= f.deadline) {
        let why = FetchError::TimedOut {
            secs: agent.config().link.fetch_timeout.as_secs(),
        };
        if let Err(e) = agent.finish_stage(&f.post, Err(why)).await {
            tracing::error!(error = %e, "recording a fetch timeout failed");
        }
    }
}

/// The parts of a report whose change is worth an immediate report: volatile figures (memory,
/// error rate, latency, restarts) are left out, so they only travel with the heartbeat.
fn fingerprint(report: &DeviceReport) -> DeviceReport {
    let mut f = report.clone();
    f.seq = 0;
    if let Some(h) = f.health.as_mut() {
        h.memory_kib = 0;
        h.error_rate_ppm = 0;
        h.p95_us = 0;
        h.restarts = 0;
        // Figures move all the time; throttling and the functional check are news.
        h.system = h.system.map(|s| SystemSummary {
            throttled: s.throttled,
            functional_ok: s.functional_ok,
            ..SystemSummary::default()
        });
    }
    f
}

/// Signs and hands over the report when `force` is set or when what it says changed. The
/// sequence number is the time in milliseconds, kept strictly increasing.
fn send_report<R>(agent: &Agent<R>, link: &mut LinkState, force: bool)
where
    R: FlowRunner,
    R::Flow: std::fmt::Debug,
{
    let now = unix_ms();
    let seq = now.max(link.last_seq.saturating_add(1));
    let report = match agent.device_report(seq, &link.io.key) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "building the report failed");
            return;
        }
    };
    let print = fingerprint(&report);
    if !force && link.last_fingerprint.as_ref() == Some(&print) {
        return;
    }
    match Envelope::sign(&report, &[&link.io.key]).and_then(|e| e.to_bytes()) {
        Ok(bytes) => {
            link.last_seq = seq;
            link.last_fingerprint = Some(print);
            link.io.reports.send_replace(Some(bytes));
        }
        Err(e) => tracing::error!(error = %e, "signing the report failed"),
    }
}

async fn handle_command<R>(agent: &mut Agent<R>, cmd: Command, pending: &mut Option<Reply>)
where
    R: FlowRunner,
    R::Flow: std::fmt::Debug,
{
    match cmd {
        Command::Install {
            source,
            actor,
            reply,
        } => {
            if pending.is_some() {
                let _ = reply.send(Err("an installation is already in progress".to_string()));
                return;
            }
            match install_source(agent, &source, &actor).await {
                Ok(Some(outcome)) => {
                    let _ = reply.send(Ok(outcome));
                }
                Ok(None) => *pending = Some(reply),
                Err(e) => {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
        Command::Rollback {
            actor,
            reason,
            reply,
        } => {
            let result = agent.rollback(&actor, &reason).await;
            // An operator's rollback during a coordinator's trial ends that Switch too.
            if let Ok(outcome) = &result
                && let Err(e) = agent.on_trial_end(outcome)
            {
                tracing::error!(error = %e, "recording the trial's end failed");
            }
            if result.is_ok()
                && let Some(p) = pending.take()
            {
                let _ = p.send(Err(format!("rolled back by {actor}: {reason}")));
            }
            let _ = reply.send(result.map_err(|e| e.to_string()));
        }
    }
}

/// Installs from a path: a signed `.floe` bundle (a file) or a staged directory (a version
/// record and the files it lists).
pub async fn install_source<R>(
    agent: &mut Agent<R>,
    source: &Path,
    actor: &str,
) -> Result<Option<Outcome>, AgentError>
where
    R: FlowRunner,
    R::Flow: std::fmt::Debug,
{
    if source.is_file() {
        agent.install_bundle(source, actor).await
    } else {
        agent.install_dir(source, actor).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use floe_wire::proto::report::REPORT_SCHEMA;
    use floe_wire::proto::{Action, Applied, Facts, Fixed, HealthLevel, HealthSummary, Progress};

    fn report() -> DeviceReport {
        DeviceReport {
            schema: REPORT_SCHEMA,
            device_id: "d".into(),
            public_key: Fixed([0; 32]),
            seq: 1,
            facts: Facts {
                device_type: "rpi4".into(),
                arch: "aarch64".into(),
                region: String::new(),
                labels: Vec::new(),
                runtime_version: "0.1.0".into(),
            },
            enroll_token: None,
            active: None,
            standby: None,
            last_known_good: None,
            on_trial: false,
            applied: Some(Applied {
                generation: 1,
                action: Action::Stage,
                name: "t".into(),
                release: 1,
                progress: Progress::Working,
                detail: String::new(),
            }),
            health: Some(HealthSummary {
                status: HealthLevel::Healthy,
                flow_running: true,
                error_rate_ppm: 0,
                p95_us: 0,
                memory_kib: 9000,
                restarts: 0,
                system: None,
            }),
        }
    }

    #[test]
    fn only_meaningful_changes_trigger_an_immediate_report() {
        let a = report();
        let mut b = report();
        b.seq = 99;
        let h = b.health.as_mut().unwrap();
        h.memory_kib = 9100;
        h.error_rate_ppm = 10;
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.health.as_mut().unwrap().status = HealthLevel::Degraded;
        assert_ne!(fingerprint(&a), fingerprint(&b));
        let mut c = report();
        c.applied.as_mut().unwrap().progress = Progress::Done;
        assert_ne!(fingerprint(&a), fingerprint(&c));
        let mut d = report();
        d.on_trial = true;
        assert_ne!(fingerprint(&a), fingerprint(&d));
    }
}
