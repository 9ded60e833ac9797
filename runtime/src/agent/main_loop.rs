//! The daemon's main loop: one task owns the [`Agent`] and waits on a closed [`Event`] set in
//! one biased select, shutdown first, then commands, then the health tick.
//!
//! Shutdown comes first so a stop request is never starved by a busy command queue. The tick
//! drives health sampling, trial verdicts, the published report and the systemd watchdog ping:
//! if the loop ever blocks (a flow that hangs the thread, a wedged disk), the pings stop and
//! systemd restarts floed, which the crash-loop guard counts. An installation's reply is held
//! until its trial ends, so `floed install` returns the real outcome.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::runner::FlowRunner;
use super::{Agent, AgentError, Outcome};
use crate::http::{Command, Published};

/// What the loop waits for.
#[derive(Debug)]
enum Event {
    /// Stop: stop the flow and return.
    Shutdown,
    /// A control command, or None when every sender is gone.
    Command(Option<Command>),
    /// Time to sample health.
    Tick,
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
    let mut pending: Option<oneshot::Sender<Result<Outcome, String>>> = None;
    let mut commands_open = true;
    publish(&agent, &io.publish);
    loop {
        let event = tokio::select! {
            biased;
            _ = io.shutdown.cancelled() => Event::Shutdown,
            c = io.commands.recv(), if commands_open => Event::Command(c),
            _ = ticker.tick() => Event::Tick,
        };
        match event {
            Event::Shutdown => break,
            Event::Command(None) => commands_open = false,
            Event::Command(Some(cmd)) => {
                handle_command(&mut agent, cmd, &mut pending).await;
                publish(&agent, &io.publish);
            }
            Event::Tick => {
                match agent.tick().await {
                    Ok(Some(outcome)) => {
                        if let Some(reply) = pending.take() {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "health tick failed"),
                }
                publish(&agent, &io.publish);
                notice(Notice::Alive);
            }
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

async fn handle_command<R>(
    agent: &mut Agent<R>,
    cmd: Command,
    pending: &mut Option<oneshot::Sender<Result<Outcome, String>>>,
) where
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
            if result.is_ok()
                && let Some(p) = pending.take()
            {
                let _ = p.send(Err(format!("rolled back by {actor}: {reason}")));
            }
            let _ = reply.send(result.map_err(|e| e.to_string()));
        }
        Command::Status { reply } => {
            let _ = reply.send(agent.status(20).map_err(|e| e.to_string()));
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
