//! The coordinator service: one task that owns the store, the device registry and the rollout
//! engines of every unfinished deployment, and drives them with the clock.
//!
//! Why it is shaped this way (DESIGN.md, "Async shape"):
//! - One owner. Every change to flows, devices and deployments happens inside [`Core`] on the
//!   actor task, so there is no lock and no ordering question between a REST call, a device
//!   report and an engine timeout. The actor waits on a closed [`Event`] set in one `biased`
//!   select: shutdown first, then jobs, then the timer.
//! - Plain synchronous handlers. A job is a closure run against `&mut Core` with the current
//!   time; it replies through its own oneshot. [`ServiceHandle`] is the cloneable front that
//!   REST handlers and the fabric glue use.
//! - Time is an input. The engines never read the clock: the actor passes unix milliseconds
//!   from `SystemTime` into every job and tick, and sleeps until the earliest
//!   `poll_timeout` of any engine (or the next offline check).
//! - Owned parts. [`Core`] only routes: the registry (devices, tokens, online state), flows
//!   and publishing, deployments (the engines and every write their steps make), directives
//!   and the outbox, and audit each live in their own file and talk through narrow methods.
//!   Pure translations sit beside them: `ingest` (report → engine inputs), `strategy`
//!   (request → engine settings), `model` (the requests and documents; the REST layer
//!   re-exports the request types, so the arrow is api → service only).
//! - Every engine step is persisted. After each handled input the engine's whole state, the
//!   directives it emitted (as signed desired directives with store-allocated generations),
//!   gate verdicts and audit lines are written in ONE transaction (the deployments part). If the
//!   write fails the engine is restored to its state before the input, so memory never runs
//!   ahead of the disk; the input is lost, which is safe because devices re-report and timers
//!   fire again.
//! - Reads that need only committed data do not queue behind the actor. Listing flows, a
//!   flow and the audit log ([`reads`]) run on read-only connections of the same database
//!   ([`ServiceHandle::read`]), so they answer while the actor is busy (a 100 000-target start
//!   holds it for more than a second). They see the last commit, which every write the actor
//!   answered has reached. The ingest counters are atomics beside the queue.
//! - Bounds. The job channel holds [`JOB_QUEUE`] jobs (senders wait at the bound); at most
//!   [`MAX_ACTIVE_DEPLOYMENTS`] deployments are unfinished at once and at most [`MAX_DEVICES`]
//!   devices are registered, at most [`MAX_OPEN_TOKENS`] enrollment tokens are open (all
//!   refused with a conflict beyond); gate history keeps the last [`MAX_GATES`] verdicts. The
//!   audit log is append-only by design and grows with the operator's actions and the
//!   deployments' decisions (never with per-report traffic).

pub mod api_tokens;
mod audit;
mod baselines;
mod canary_facts;
mod core;
mod deployments;
mod directives;
pub mod events;
mod flows;
mod hooks;
mod hygiene;
mod incident_report;
mod incidents;
mod ingest;
pub mod model;
mod names;
pub mod pending;
#[cfg(test)]
mod preflight_tests;
pub mod reads;
mod registry;
mod rollups;
mod smoke;
mod strategy;
mod trigger_config;
pub mod vars;
mod vault;
pub use vault::SECRETS_KEY_FILE;
pub mod webhooks;

pub use self::core::Core;
pub use self::deployments::preflight::{
    ITEMS as PREFLIGHT_ITEMS, PreflightSettings, StartOutcome, phase_name, state_block,
};
pub use self::hooks::MAX_HOOKS;
pub use self::ingest::{events_for, health_input};
pub use self::model::{
    ArtifactBlob, ArtifactSummary, DEFAULT_OFFLINE_AFTER, DeploymentDoc, GateRecord, IngestStatus,
    Outgoing, ServiceConfig, TargetTrack,
};
pub use self::rollups::RollupCounters;
pub use self::strategy::{config_json, strategy_config};
use self::webhooks::Webhooks;

use crate::store::{DEFAULT_CALLER, ReadPool, Store, StoreError};
use floe_rollout::Millis;
use floe_wire::clock::unix_ms;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Jobs waiting for the actor; senders wait when it is full (backpressure).
pub const JOB_QUEUE: usize = 256;
/// Device reports waiting for the actor. A report that finds the queue full is refused at
/// once ([`ServiceError::Busy`], HTTP 503) and counted: devices report again on their next
/// heartbeat, and a flood must not hold API calls or memory.
pub const INGEST_QUEUE: usize = 4096;
/// Most reports applied in one transaction.
pub const INGEST_BATCH: usize = 512;
/// Unfinished deployments at once.
pub const MAX_ACTIVE_DEPLOYMENTS: usize = 64;
/// Registered devices.
pub const MAX_DEVICES: usize = 100_000;
/// Unused, unexpired enrollment tokens at once (more are refused with a conflict).
pub const MAX_OPEN_TOKENS: u64 = 10_000;
/// Gate verdicts kept per deployment (oldest dropped).
pub const MAX_GATES: usize = 256;
/// How often offline devices are looked for.
pub const OFFLINE_CHECK: Millis = 1_000;
/// Most devices marked offline in one tick (one transaction); the rest wait for the next tick,
/// so a whole fleet falling silent at once never holds the actor for long.
pub const OFFLINE_BATCH: usize = 4096;
/// Read-only database connections for the reads that do not need the actor ([`reads`]).
pub const READERS: usize = 4;

/// Why a service call failed. The REST layer maps each variant to its status.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The named thing does not exist (404).
    #[error("{what} {id} does not exist")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The state does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    /// A value does not validate (422); `field` is the path at fault.
    #[error("{field}: {message}")]
    Validation {
        /// The path at fault (`config.batch_delay`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// A device request did not prove it comes from the device (401).
    #[error("device not authenticated: {0}")]
    Unauthenticated(String),
    /// A device report was refused (enrollment, key mismatch).
    #[error("report refused: {0}")]
    Refused(String),
    /// The report queue is full (503): report again later.
    #[error("the coordinator is busy: {INGEST_QUEUE} reports are waiting; report again later")]
    Busy,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something inside the coordinator is inconsistent (a record it needs is gone).
    #[error("{0}")]
    Internal(String),
    /// The OS random source failed (ids, tokens, seeds).
    #[error("the OS random source failed: {source}")]
    Random {
        /// Why.
        #[source]
        source: getrandom::Error,
    },
    /// A file operation failed (the bundle directory).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Building or reading back an artifact bundle failed.
    #[error("{what}: {source}")]
    Bundle {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: floe_wire::artifact::BundleError,
    },
    /// Signing, encoding or opening a directive envelope failed.
    #[error("{what}: {source}")]
    Signed {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: floe_wire::proto::SignedError,
    },
    /// Encoding a directive post failed.
    #[error("{what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why.
        #[source]
        source: floe_wire::proto::CborError,
    },
    /// A value did not encode as JSON.
    #[error("{what}: {source}")]
    Json {
        /// What was being encoded.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A stored directive post does not decode.
    #[error("stored directive post: {source}")]
    StoredPost {
        /// Why.
        #[source]
        source: floe_wire::proto::PostError,
    },
    /// A stored manifest digest is not hex.
    #[error("stored manifest digest: {source}")]
    Digest {
        /// Why.
        #[source]
        source: hex::FromHexError,
    },
    /// The service has stopped.
    #[error("the coordinator service has stopped")]
    Closed,
}

/// A random hex string of `bytes` bytes (ids, tokens, seeds).
pub fn random_token(bytes: usize) -> Result<String, ServiceError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|source| ServiceError::Random { source })?;
    Ok(hex::encode(buf))
}

/// A validation error at `field`.
fn validation(field: impl Into<String>, message: impl Into<String>) -> ServiceError {
    ServiceError::Validation {
        field: field.into(),
        message: message.into(),
    }
}

/// Maps a JSON (de)serialisation failure of a stored document to a store error.
fn json_err(what: &'static str) -> impl FnOnce(serde_json::Error) -> ServiceError {
    move |source| ServiceError::Store(StoreError::Document { what, source })
}

tokio::task_local! {
    /// Who the current request is (`token:<name>`): set by the REST layer's authentication
    /// around the whole handler, read by [`ServiceHandle::call`] so every change the handler
    /// asks for is audited under that name.
    static CALLER: Arc<str>;
}

/// Runs `fut` with `caller` (`token:<name>`) as the audit actor of every service call it makes.
pub async fn with_caller<F: std::future::Future>(caller: Arc<str>, fut: F) -> F::Output {
    CALLER.scope(caller, fut).await
}

/// The caller of the current task, if [`with_caller`] set one.
pub fn current_caller() -> Option<Arc<str>> {
    CALLER.try_with(Arc::clone).ok()
}

/// A job: runs on the actor against the core with the current time.
type Job = Box<dyn FnOnce(&mut Core, Millis) + Send>;

/// What the actor waits for.
enum Event {
    /// Shut down.
    Shutdown,
    /// A job (None: every handle is gone).
    Job(Option<Job>),
    /// Device reports (empty: every handle is gone).
    Reports(usize),
    /// The timer fired.
    Tick,
}

/// The cloneable front of the service.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    jobs: mpsc::Sender<Job>,
    reports: mpsc::Sender<Ingest>,
    counters: Arc<IngestCounters>,
    published: watch::Receiver<u64>,
    /// The event bus (subscribe without the actor).
    events: Arc<events::EventBus>,
    /// The webhook deliveries (off the actor).
    webhooks: Arc<Webhooks>,
    /// Read-only connections (None for an in-memory store: reads then go through the actor).
    reads: Option<Arc<Reads>>,
    /// Length of one health rollup window.
    health_window: Millis,
}

/// What the ingest path counts since start.
#[derive(Debug, Default)]
struct IngestCounters {
    accepted: AtomicU64,
    refused_busy: AtomicU64,
}

/// The read pool and the permits that bound how many reads run at once (one per connection),
/// so reads wait as tasks, not as blocked threads.
#[derive(Debug)]
struct Reads {
    pool: ReadPool,
    permits: Arc<Semaphore>,
}

/// A verified report waiting for the actor, with where its outcome goes.
type Ingest = (
    floe_wire::proto::DeviceReport,
    oneshot::Sender<Result<u64, ServiceError>>,
);

impl ServiceHandle {
    /// Runs `f` on the actor and returns its result. The audit lines `f` writes name the
    /// caller of the task that called this (see [`with_caller`]; `api` outside one).
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Millis) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let caller = current_caller();
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |core, now| {
            core.set_caller(caller.as_deref().unwrap_or(DEFAULT_CALLER));
            let out = f(core, now);
            core.set_caller(DEFAULT_CALLER);
            let _ = tx.send(out);
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| ServiceError::Closed)?;
        rx.await.map_err(|_| ServiceError::Closed)?
    }

    /// A device's signed report, its signature already checked by the caller: enrollment,
    /// registry update, and the engines fed (see [`Core::device_report`]). Reports are applied
    /// in batches, one transaction each, and this answers once the report's batch is
    /// committed, with the generation of the device's current directive (0: none). A full
    /// queue refuses the report at once with [`ServiceError::Busy`].
    pub async fn device_report(
        &self,
        report: floe_wire::proto::DeviceReport,
    ) -> Result<u64, ServiceError> {
        let (tx, rx) = oneshot::channel();
        match self.reports.try_send((report, tx)) {
            Ok(()) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.refused_busy.fetch_add(1, Ordering::Relaxed);
                return Err(ServiceError::Busy);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ServiceError::Closed),
        }
        rx.await.map_err(|_| ServiceError::Closed)?
    }

    /// Reports refused because the queue was full, since start.
    pub fn refused_busy(&self) -> u64 {
        self.counters.refused_busy.load(Ordering::Relaxed)
    }

    /// The ingest path's counters and queue, read without the actor.
    pub fn ingest_status(&self) -> IngestStatus {
        IngestStatus {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            refused_busy: self.counters.refused_busy.load(Ordering::Relaxed),
            queue_depth: INGEST_QUEUE.saturating_sub(self.reports.capacity()),
            queue_capacity: INGEST_QUEUE,
            batch_max: INGEST_BATCH,
        }
    }

    /// Runs a read-only query `f` against the last committed state without waiting for the
    /// actor: on one of [`READERS`] read-only connections, in one read transaction, on the
    /// blocking pool (see [`ReadPool`]). A store kept in memory has no second connection; its
    /// reads go through the actor.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let Some(reads) = self.reads.clone() else {
            return self.call(move |core, _| f(core.store())).await;
        };
        let permit = reads
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ServiceError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let out = reads.pool.read(f);
            drop(permit);
            out
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("a read did not finish: {e}")))?
    }

    /// The directive posts devices still have to apply. See [`Core::outbox`].
    pub async fn outbox(&self) -> Result<Vec<Outgoing>, ServiceError> {
        self.call(|core, now| core.outbox(now)).await
    }

    /// The current directive post for `device_id` when the device is behind it, for the
    /// answer to a report that came directly. See [`Core::post_for`].
    pub async fn post_for(&self, device_id: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        let device = device_id.to_string();
        self.call(move |core, now| core.post_for(&device, now))
            .await
    }

    /// A fabric membership certificate. See [`Core::membership`].
    pub async fn membership(
        &self,
        public_key: [u8; 32],
        role: floe_wire::proto::Role,
    ) -> Result<Vec<u8>, ServiceError> {
        self.call(move |core, now| core.membership(public_key, role, now))
            .await
    }

    /// Every published artifact, for seeding into the fabric.
    pub async fn artifacts(&self) -> Result<Vec<ArtifactBlob>, ServiceError> {
        self.call(|core, _| core.artifact_blobs()).await
    }

    /// A receiver whose value grows each time an artifact is published.
    pub fn published(&self) -> watch::Receiver<u64> {
        self.published.clone()
    }

    /// The event bus: subscribe to the service's events, read its counters.
    pub fn events(&self) -> &Arc<events::EventBus> {
        &self.events
    }

    /// The webhook runtime: running hooks, their queues and delivery logs.
    pub fn webhooks(&self) -> &Arc<Webhooks> {
        &self.webhooks
    }

    /// Length of one health rollup window (ms).
    pub fn health_window(&self) -> Millis {
        self.health_window
    }
}

/// Starts the actor on the current runtime, on a blocking-pool thread of its own. It stops when
/// `shutdown` is cancelled or every handle is dropped.
pub fn spawn(mut core: Core, shutdown: CancellationToken) -> (ServiceHandle, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Job>(JOB_QUEUE);
    let (reports_tx, mut reports_rx) = mpsc::channel::<Ingest>(INGEST_QUEUE);
    let mut batch: Vec<Ingest> = Vec::with_capacity(INGEST_BATCH);
    let published = core.published_receiver();
    let events = core.event_bus();
    let webhooks = Webhooks::new(Arc::clone(&events), core.delivery_settings());
    match core.store().hooks() {
        Ok(hooks) => hooks.into_iter().for_each(|h| webhooks.start(h)),
        Err(e) => tracing::error!(error = %e, "reading the webhooks; none is delivered to"),
    }
    let actor_webhooks = Arc::clone(&webhooks);
    let health_window = core.health_window();
    let reads = core.store().read_pool(READERS).map(|pool| {
        Arc::new(Reads {
            permits: Arc::new(Semaphore::new(pool.capacity())),
            pool,
        })
    });
    // The actor runs on a thread of its own (the blocking pool's), not on a runtime worker: a
    // long step (a 100 000-target start) would otherwise hold one of the workers the REST
    // handlers and reads need, and tasks queued on that worker would wait for the step.
    let runtime = tokio::runtime::Handle::current();
    let actor = async move {
        // Resume: tick once so timeouts that passed while the coordinator was down fire now.
        core.tick(unix_ms());
        core.flush_events();
        // The offline check is due at a fixed time, not "a second after the last event":
        // jobs (reports, API calls) can arrive more often than that, and a deadline that moved
        // with every job would never come.
        let mut next_check = unix_ms() + OFFLINE_CHECK;
        loop {
            let now = unix_ms();
            let due = core.next_wake(now).min(next_check);
            if due <= now {
                core.tick(now);
                core.flush_events();
                next_check = now + OFFLINE_CHECK;
                continue;
            }
            let sleep = tokio::time::sleep(Duration::from_millis((due - now).max(1)));
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => Event::Shutdown,
                job = rx.recv() => Event::Job(job),
                n = reports_rx.recv_many(&mut batch, INGEST_BATCH) => Event::Reports(n),
                () = sleep => Event::Tick,
            };
            match event {
                Event::Shutdown | Event::Job(None) | Event::Reports(0) => break,
                Event::Reports(_) => {
                    let (reports, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                    match core.ingest(reports, unix_ms()) {
                        Ok(outcomes) => {
                            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                                let _ = reply.send(outcome);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "a batch of reports did not commit");
                            let text = e.to_string();
                            for reply in replies {
                                let _ = reply.send(Err(ServiceError::Internal(text.clone())));
                            }
                        }
                    }
                }
                Event::Job(Some(job)) => job(&mut core, unix_ms()),
                Event::Tick => {
                    let now = unix_ms();
                    core.tick(now);
                    next_check = now + OFFLINE_CHECK;
                }
            }
            // What the event committed is announced now (a failed commit discarded its events).
            core.flush_events();
        }
        actor_webhooks.stop_all();
        tracing::info!("coordinator service stopped");
    };
    let task = tokio::task::spawn_blocking(move || runtime.block_on(actor));
    (
        ServiceHandle {
            jobs: tx,
            reports: reports_tx,
            counters: Arc::new(IngestCounters::default()),
            published,
            events,
            webhooks,
            reads,
            health_window,
        },
        task,
    )
}

#[cfg(test)]
mod baselines_tests;
#[cfg(test)]
mod canary_facts_tests;
#[cfg(test)]
mod rollups_tests;
#[cfg(test)]
mod signals_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod webhooks_tls_tests;
