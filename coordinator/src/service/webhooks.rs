//! Webhook deliveries: each hook gets the service's events that match its filters as signed
//! JSON POSTs, in order, off the service actor.
//!
//! Why it is shaped this way:
//! - Two tasks per hook. A collector subscribes to the event bus and moves matching events
//!   into the hook's queue at once (it never waits, so the bus never drops it); the queue is
//!   bounded ([`DeliverySettings::queue`]) and a full queue drops its OLDEST event, counted and
//!   written to the delivery log. A deliverer takes one event at a time and POSTs it until it
//!   is delivered or given up, so a hook's events (and so each deployment's) arrive in order:
//!   an event is never sent before the previous one was delivered or given up.
//! - Retries: a non-2xx answer, a timeout or a refused connection is retried after 1 s, 2 s,
//!   4 s … (doubling, capped at [`DeliverySettings::max_backoff`]) up to
//!   [`DeliverySettings::max_attempts`] attempts, then given up and logged.
//! - Each POST runs on the blocking pool with ureq (the crate's HTTP client; https with rustls,
//!   trusting `floe serve --hook-ca` or the system's roots), with a per-request timeout; the body is the event as the SSE
//!   stream carries it, signed `X-Floe-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
//! - Hooks live in the store (the service writes them); their queues and delivery logs are
//!   memory only and start empty after a restart (events do not survive one either).

use super::events::{EventBus, Filter, Start};
use crate::contract::{Delivery, DeliveryLog, Event, EventKind, Hook, KindFilter};
use crate::store::{HookRecord, rfc3339};
use floe_wire::clock::unix_ms;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Entries kept in each hook's delivery log (oldest dropped).
pub const DELIVERY_LOG: usize = 200;
/// Events a collector may have waiting on the bus (it moves them on at once).
const COLLECT_BUFFER: usize = 4096;
/// Most of a receiver's answer read (then dropped), so a connection can be reused.
const MAX_ANSWER: u64 = 64 * 1024;

/// Certificates an https receiver's chain must end in.
pub type Roots = Arc<Vec<ureq::tls::Certificate<'static>>>;

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Roots for https receivers (`floe serve --hook-ca`); None: the system's.
    pub roots: Option<Roots>,
    /// Attempts per event before it is given up (at least 1).
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles.
    pub base_backoff: Duration,
    /// The longest delay between two attempts.
    pub max_backoff: Duration,
    /// One POST's timeout (connect, send, answer).
    pub timeout: Duration,
    /// Events a hook's queue holds; a full queue drops its oldest.
    pub queue: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            roots: None,
            max_attempts: 6,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            queue: 1000,
        }
    }
}

/// Delivery outcomes since start, over every hook (for `/metrics`).
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Events delivered (a 2xx answer).
    pub delivered: AtomicU64,
    /// Attempts that failed and were retried.
    pub retried: AtomicU64,
    /// Events given up after the last attempt.
    pub gave_up: AtomicU64,
    /// Events dropped from a full queue.
    pub dropped: AtomicU64,
}

/// One hook's running state.
#[derive(Debug)]
struct Running {
    record: HookRecord,
    queue: Mutex<VecDeque<Arc<Event>>>,
    log: Mutex<VecDeque<Delivery>>,
    dropped: AtomicU64,
    wake: Notify,
    cancel: CancellationToken,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a complete push or pop: a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Running {
    fn view(&self) -> Hook {
        Hook {
            id: self.record.id.clone(),
            url: self.record.url.clone(),
            kinds: self.record.kinds.clone(),
            deployment_id: self.record.deployment_id.clone(),
            created_at: rfc3339(self.record.created_at),
            queued: locked(&self.queue).len() as u64,
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    fn log(&self, entry: Delivery) {
        let mut log = locked(&self.log);
        log.push_back(entry);
        while log.len() > DELIVERY_LOG {
            log.pop_front();
        }
    }
}

/// The webhook runtime: every hook's tasks. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Webhooks {
    bus: Arc<EventBus>,
    settings: DeliverySettings,
    hooks: Mutex<BTreeMap<String, Arc<Running>>>,
    stats: Arc<DeliveryStats>,
}

impl Webhooks {
    /// A runtime delivering `bus`'s events with `settings`.
    pub fn new(bus: Arc<EventBus>, settings: DeliverySettings) -> Arc<Self> {
        Arc::new(Self {
            bus,
            settings,
            hooks: Mutex::new(BTreeMap::new()),
            stats: Arc::new(DeliveryStats::default()),
        })
    }

    /// The outcome counters.
    pub fn stats(&self) -> &DeliveryStats {
        &self.stats
    }

    /// Starts delivering to `record` (its filter was checked when it was created) with the
    /// events published from now on. Must run on a tokio runtime.
    pub fn start(&self, record: HookRecord) {
        let filter = Filter {
            kinds: KindFilter::parse(&record.kinds.join(",")).unwrap_or_default(),
            deployment: record.deployment_id.clone(),
        };
        let running = Arc::new(Running {
            record,
            queue: Mutex::new(VecDeque::new()),
            log: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
        });
        if let Some(old) = locked(&self.hooks).insert(running.record.id.clone(), running.clone()) {
            old.cancel.cancel();
        }
        tokio::spawn(collect(
            Arc::clone(&self.bus),
            filter,
            running.clone(),
            self.settings.queue.max(1),
            Arc::clone(&self.stats),
        ));
        tokio::spawn(deliver(
            running,
            self.settings.clone(),
            Arc::clone(&self.stats),
        ));
    }

    /// Stops a hook's tasks (its queue is dropped); false when it was not running.
    pub fn stop(&self, id: &str) -> bool {
        match locked(&self.hooks).remove(id) {
            Some(r) => {
                r.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops every hook.
    pub fn stop_all(&self) {
        for (_, r) in std::mem::take(&mut *locked(&self.hooks)) {
            r.cancel.cancel();
        }
    }

    /// A running hook's view (queue depth and drops included).
    pub fn view(&self, id: &str) -> Option<Hook> {
        locked(&self.hooks).get(id).map(|r| r.view())
    }

    /// Every running hook, oldest first.
    pub fn list(&self) -> Vec<Hook> {
        let mut v: Vec<(u64, Hook)> = locked(&self.hooks)
            .values()
            .map(|r| (r.record.created_at, r.view()))
            .collect();
        v.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        v.into_iter().map(|(_, h)| h).collect()
    }

    /// A hook's delivery log, newest first.
    pub fn deliveries(&self, id: &str) -> Option<DeliveryLog> {
        let r = locked(&self.hooks).get(id).cloned()?;
        let deliveries = locked(&r.log).iter().rev().cloned().collect();
        Some(DeliveryLog {
            hook_id: id.to_string(),
            deliveries,
        })
    }
}

/// Moves matching events from the bus into the hook's queue, dropping the oldest when full.
async fn collect(
    bus: Arc<EventBus>,
    filter: Filter,
    hook: Arc<Running>,
    capacity: usize,
    stats: Arc<DeliveryStats>,
) {
    let mut start = Start::Now;
    loop {
        let mut sub = bus.subscribe(start, filter.clone(), COLLECT_BUFFER);
        loop {
            let next = tokio::select! {
                () = hook.cancel.cancelled() => return,
                e = sub.events.recv() => e,
            };
            let Some(event) = next else { break };
            start = Start::After(event.id);
            let dropped = {
                let mut q = locked(&hook.queue);
                q.push_back(event);
                if q.len() > capacity {
                    q.pop_front()
                } else {
                    None
                }
            };
            if let Some(old) = dropped {
                hook.dropped.fetch_add(1, Ordering::Relaxed);
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(hook = %hook.record.id, event = old.id, "webhook queue full: oldest event dropped");
                hook.log(entry(
                    &old,
                    0,
                    "dropped",
                    None,
                    Some(format!("the queue of {capacity} events was full")),
                ));
            }
            hook.wake.notify_one();
        }
        // The bus dropped us (we fell more than its buffer behind): subscribe again from the
        // last event taken (a lost position comes back as a `reset`), after a short pause so
        // this loop cannot spin.
        tokio::select! {
            () = hook.cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

fn entry(
    e: &Event,
    attempt: u32,
    outcome: &str,
    status: Option<u16>,
    error: Option<String>,
) -> Delivery {
    Delivery {
        delivery: format!("{}-{attempt}", e.id),
        event_id: e.id,
        kind: e.kind,
        attempt,
        at: rfc3339(unix_ms()),
        outcome: outcome.to_string(),
        status,
        error,
    }
}

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delay before attempt `attempt + 1` (after `attempt` failures).
pub fn backoff(settings: &DeliverySettings, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    settings
        .base_backoff
        .saturating_mul(factor)
        .min(settings.max_backoff)
}

/// Delivers the hook's queue one event at a time, each until delivered or given up.
async fn deliver(hook: Arc<Running>, settings: DeliverySettings, stats: Arc<DeliveryStats>) {
    // https receivers: the configured roots, else the system's (read only for an https URL).
    let roots = match &settings.roots {
        Some(r) => r.as_ref().clone(),
        None if hook.record.url.starts_with("https://") => crate::tls::system_roots(),
        None => Vec::new(),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(settings.timeout))
        .tls_config(crate::tls::config(roots))
        .build()
        .into();
    loop {
        let next = locked(&hook.queue).pop_front();
        let Some(event) = next else {
            tokio::select! {
                () = hook.cancel.cancelled() => return,
                () = hook.wake.notified() => continue,
            }
        };
        let body = match serde_json::to_vec(&*event) {
            Ok(b) => b,
            Err(e) => {
                hook.log(entry(
                    &event,
                    0,
                    "gave_up",
                    None,
                    Some(format!("encoding: {e}")),
                ));
                continue;
            }
        };
        let sig = signature(&hook.record.secret, &body);
        let body = Arc::new(body);
        let max = settings.max_attempts.max(1);
        for attempt in 1..=max {
            let (status, error) =
                post(&agent, &hook.record.url, &event, attempt, &sig, &body).await;
            let ok = status.is_some_and(|s| (200..300).contains(&s));
            let outcome = if ok {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                "delivered"
            } else if attempt == max {
                stats.gave_up.fetch_add(1, Ordering::Relaxed);
                "gave_up"
            } else {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                "failed"
            };
            let error = error.or_else(|| {
                (!ok).then(|| format!("the receiver answered {}", status.unwrap_or(0)))
            });
            hook.log(entry(&event, attempt, outcome, status, error));
            if ok || attempt == max {
                break;
            }
            tokio::select! {
                () = hook.cancel.cancelled() => return,
                () = tokio::time::sleep(backoff(&settings, attempt)) => {}
            }
        }
    }
}

/// One POST on the blocking pool: the receiver's status, or what went wrong.
async fn post(
    agent: &ureq::Agent,
    url: &str,
    event: &Event,
    attempt: u32,
    sig: &str,
    body: &Arc<Vec<u8>>,
) -> (Option<u16>, Option<String>) {
    let agent = agent.clone();
    let url = url.to_string();
    let kind: EventKind = event.kind;
    let delivery = format!("{}-{attempt}", event.id);
    let sig = sig.to_string();
    let body = Arc::clone(body);
    let sent = tokio::task::spawn_blocking(move || {
        let mut answer = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("X-Floe-Event", kind.as_str())
            .header("X-Floe-Delivery", &delivery)
            .header("X-Floe-Signature", &sig)
            .send(body.as_slice())?;
        let status = answer.status().as_u16();
        // Read (a bounded part of) the answer so the connection can be reused; its content
        // does not matter.
        let _ = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec();
        Ok::<u16, ureq::Error>(status)
    })
    .await;
    match sent {
        Ok(Ok(status)) => (Some(status), None),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Err(e) => (None, Some(format!("the delivery task failed: {e}"))),
    }
}

/// Checks a hook URL: `http://` or `https://` with a host (an https receiver's certificate
/// must chain to `floe serve --hook-ca`, else to the system's roots).
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("is longer than 2048 bytes".into());
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err("must start with http:// or https://".into());
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must name a host and contain no spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let s = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = DeliverySettings {
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            ..DeliverySettings::default()
        };
        let d: Vec<u64> = (1..=6).map(|a| backoff(&s, a).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 5, 5, 5]);
        assert_eq!(backoff(&s, 200), Duration::from_secs(5));
    }

    /// A receiver on loopback answering `status` to every POST, recording the event ids.
    async fn receiver(status: u16) -> (String, Arc<Mutex<Vec<u64>>>) {
        use axum::routing::post;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/h",
            post(move |body: axum::body::Bytes| {
                let record = Arc::clone(&record);
                async move {
                    let e: Event = serde_json::from_slice(&body).unwrap();
                    record.lock().unwrap().push(e.id);
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/h"), seen)
    }

    fn hook(url: &str) -> HookRecord {
        HookRecord {
            id: "hook_t".into(),
            url: url.into(),
            kinds: vec![],
            deployment_id: Some("dep_a".into()),
            secret: "s".into(),
            created_at: 0,
        }
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_receiver_is_given_up_after_the_attempts_and_a_full_queue_drops_its_oldest() {
        use super::super::events::EventSink;
        let (url, seen) = receiver(500).await;
        let mut sink = EventSink::new(EventBus::new(1000, 1));
        let settings = DeliverySettings {
            roots: None,
            max_attempts: 2,
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
            queue: 2,
        };
        let hooks = Webhooks::new(Arc::clone(sink.bus()), settings);
        hooks.start(hook(&url));
        // Let the collector subscribe.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..6 {
            // Another deployment's events do not pass the hook's filter.
            let dep = if i == 5 { "dep_b" } else { "dep_a" };
            sink.emit(
                EventKind::DeploymentStatus,
                1000,
                Some(dep),
                None,
                serde_json::json!({"i": i}),
            );
        }
        sink.flush();
        let stats = Arc::clone(&hooks.stats);
        wait_for("every event given up or dropped", || {
            stats.gave_up.load(Ordering::Relaxed) + stats.dropped.load(Ordering::Relaxed) == 5
        })
        .await;
        let log = hooks.deliveries("hook_t").unwrap().deliveries;
        let gave_up: Vec<u64> = log
            .iter()
            .filter(|d| d.outcome == "gave_up")
            .map(|d| d.event_id)
            .collect();
        let dropped = log.iter().filter(|d| d.outcome == "dropped").count() as u64;
        assert_eq!(dropped, stats.dropped.load(Ordering::Relaxed));
        assert!(dropped >= 1, "a queue of 2 cannot hold 5 events: {log:#?}");
        assert_eq!(gave_up.len() as u64 + dropped, 5);
        // Each event given up was tried twice, in order, before the next one's first try.
        let attempts = seen.lock().unwrap().clone();
        let mut want = Vec::new();
        for id in gave_up.iter().rev() {
            want.push(*id);
            want.push(*id);
        }
        assert_eq!(attempts, want, "{log:#?}");
        assert_eq!(hooks.view("hook_t").unwrap().dropped, dropped);
        assert!(hooks.stop("hook_t"));
        assert!(hooks.deliveries("hook_t").is_none());
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(check_url("https://example.com/hook").is_ok());
        assert!(check_url("https:///x").is_err());
        assert!(
            check_url("ftp://x")
                .unwrap_err()
                .contains("http:// or https://")
        );
        assert!(check_url("http:///x").is_err());
        assert!(check_url("http://a b/").is_err());
    }
}
