//! The event bus: typed events the service emits at its state changes (deployment status and
//! stage, gate verdicts, target transitions, devices online, offline and their health level,
//! stuck deployments), kept in a bounded ring for clients that resume, and fanned out to
//! subscribers (the SSE stream, webhooks) without the service ever waiting on them.
//!
//! Why it is shaped this way:
//! - The service stages events while it works ([`EventSink::emit`]) and publishes them only
//!   after the step's transaction committed ([`EventSink::flush`], called by the actor after
//!   each job, batch and tick); a batch that fails to commit discards them
//!   ([`EventSink::discard`]), so no event describes a change the store does not hold.
//! - Publishing is a short lock on the ring (push, pop the oldest past its capacity) and a
//!   `watch` wakeup: O(events), never a wait on a reader, never unbounded memory. A step that
//!   stages more events than the ring keeps publishes one `reset` instead of them.
//! - Ids grow by one per event and start at the process's start time in ms × 1000, so they
//!   keep growing across restarts. Events do not survive a restart (the ring is memory only):
//!   a `Last-Event-ID` older than the ring, or from a future the process has not reached, is
//!   answered with a `reset` event, and the client reloads state from the REST API.
//! - Each subscriber has a forwarder task that copies matching events from the ring into the
//!   subscriber's bounded channel with `try_send`: a subscriber whose channel is full (it does
//!   not read) is dropped at once and counted; the forwarder itself never falls behind the ring
//!   because it never waits on anyone.

use crate::contract::{Event, EventKind, KindFilter};
use crate::store::rfc3339;
use floe_rollout::Millis;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{mpsc, watch};

/// Events kept for clients that resume (default of [`super::ServiceConfig::event_ring`]).
pub const DEFAULT_EVENT_RING: usize = 10_000;
/// Events a subscriber may have waiting before it is dropped.
pub const CLIENT_BUFFER: usize = 1024;
/// Events a forwarder copies per lock of the ring.
const FORWARD_BATCH: usize = 256;

/// What the bus counts since start (read by `/metrics` without the actor).
#[derive(Debug, Default)]
pub struct EventStats {
    /// Subscribers connected now.
    pub subscribers: AtomicU64,
    /// Subscribers dropped because their buffer was full.
    pub dropped_clients: AtomicU64,
    /// Events published.
    pub published: AtomicU64,
    /// Gate verdicts published: pass, wait, fail, caution.
    pub gate_verdicts: [AtomicU64; 4],
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<Event>>,
    /// The id the next event gets.
    next_id: u64,
}

/// The bus: the ring, the wakeup and the counters. Shared by the service (publishing) and the
/// API (subscribing) behind an `Arc`.
#[derive(Debug)]
pub struct EventBus {
    ring: Mutex<Ring>,
    wake: watch::Sender<u64>,
    capacity: usize,
    stats: EventStats,
}

/// Where a subscriber starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next event published.
    Now,
    /// After the event with this id (a resume: `Last-Event-ID` or `?after=`).
    After(u64),
}

/// What [`EventBus::since`] found.
#[derive(Debug)]
pub enum Since {
    /// The events after the position asked for (up to the limit), oldest first.
    Events(Vec<Arc<Event>>),
    /// The position is no longer (or not yet) in the ring; the newest id is given.
    Gap(u64),
}

/// Which events a subscriber wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Kinds (or prefixes).
    pub kinds: KindFilter,
    /// Only events naming this deployment.
    pub deployment: Option<String>,
}

impl Filter {
    /// Whether `e` passes (a `reset` always does).
    pub fn matches(&self, e: &Event) -> bool {
        if e.kind == EventKind::Reset {
            return true;
        }
        if let Some(d) = &self.deployment
            && e.deployment_id.as_deref() != Some(d.as_str())
        {
            return false;
        }
        self.kinds.matches(e.kind)
    }
}

/// A subscriber's end: events arrive on `events`; when it closes, the subscriber was dropped
/// (full buffer) or the bus is gone.
#[derive(Debug)]
pub struct Subscription {
    /// The events, in id order.
    pub events: mpsc::Receiver<Arc<Event>>,
}

impl EventBus {
    /// A bus keeping the last `capacity` events (at least 1), numbering from `first_id`.
    pub fn new(capacity: usize, first_id: u64) -> Arc<Self> {
        let first_id = first_id.max(1);
        Arc::new(Self {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.clamp(1, 1 << 16)),
                next_id: first_id,
            }),
            wake: watch::Sender::new(first_id - 1),
            capacity: capacity.max(1),
            stats: EventStats::default(),
        })
    }

    /// How many events the ring keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The counters.
    pub fn stats(&self) -> &EventStats {
        &self.stats
    }

    /// The id of the newest event published (one less than the first id before any).
    pub fn last_id(&self) -> u64 {
        *self.wake.borrow()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding the lock cannot leave the ring half-changed (push and pop
        // are each complete), so a poisoned lock is still usable.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes staged events: numbers them, keeps the last `capacity`, wakes subscribers.
    fn publish(&self, staged: impl IntoIterator<Item = Staged>) {
        let mut last = None;
        {
            let mut ring = self.lock();
            for s in staged {
                let id = ring.next_id;
                ring.next_id += 1;
                if s.kind == EventKind::GateVerdict {
                    let slot = match s.data.get("verdict").and_then(Value::as_str) {
                        Some("pass") => Some(0),
                        Some("wait") => Some(1),
                        Some("fail") => Some(2),
                        Some("caution") => Some(3),
                        _ => None,
                    };
                    if let Some(i) = slot {
                        self.stats.gate_verdicts[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
                ring.events.push_back(Arc::new(Event {
                    id,
                    kind: s.kind,
                    at: rfc3339(s.at),
                    deployment_id: s.deployment_id,
                    device_id: s.device_id,
                    data: s.data,
                }));
                while ring.events.len() > self.capacity {
                    ring.events.pop_front();
                }
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                last = Some(id);
            }
        }
        if let Some(id) = last {
            self.wake.send_replace(id);
        }
    }

    /// Every event the ring keeps, oldest first.
    pub fn kept(&self) -> Vec<Arc<Event>> {
        self.lock().events.iter().cloned().collect()
    }

    /// Up to `limit` events after `after`, or a gap when events after `after` are gone (or
    /// `after` is newer than anything published).
    pub fn since(&self, after: u64, limit: usize) -> Since {
        let ring = self.lock();
        let newest = ring.next_id - 1;
        if after > newest {
            return Since::Gap(newest);
        }
        let Some(oldest) = ring.events.front().map(|e| e.id) else {
            // Nothing kept: only "now" is a position that lost nothing.
            return if after == newest {
                Since::Events(Vec::new())
            } else {
                Since::Gap(newest)
            };
        };
        if after + 1 < oldest {
            return Since::Gap(newest);
        }
        let skip = usize::try_from(after + 1 - oldest).unwrap_or(usize::MAX);
        Since::Events(ring.events.iter().skip(skip).take(limit).cloned().collect())
    }

    /// A new subscriber from `start`, with its own forwarder task on the current runtime and
    /// a channel of `buffer` events (full: the subscriber is dropped and counted).
    pub fn subscribe(
        self: &Arc<Self>,
        start: Start,
        filter: Filter,
        buffer: usize,
    ) -> Subscription {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let wake = self.wake.subscribe();
        let cursor = match start {
            Start::Now => self.last_id(),
            Start::After(id) => id,
        };
        self.stats.subscribers.fetch_add(1, Ordering::Relaxed);
        let bus = Arc::clone(self);
        tokio::spawn(async move {
            bus.forward(cursor, filter, tx, wake).await;
            bus.stats.subscribers.fetch_sub(1, Ordering::Relaxed);
        });
        Subscription { events: rx }
    }

    /// Copies matching events after `cursor` into `tx` until the subscriber goes away or is
    /// dropped for a full buffer.
    async fn forward(
        &self,
        mut cursor: u64,
        filter: Filter,
        tx: mpsc::Sender<Arc<Event>>,
        mut wake: watch::Receiver<u64>,
    ) {
        loop {
            // Seen before reading, so a publish after the read wakes us.
            wake.borrow_and_update();
            let batch = match self.since(cursor, FORWARD_BATCH) {
                Since::Events(v) => v,
                Since::Gap(newest) => {
                    let reset = Arc::new(reset_event(newest, cursor));
                    cursor = newest;
                    vec![reset]
                }
            };
            let full = batch.len() == FORWARD_BATCH;
            for e in batch {
                cursor = cursor.max(e.id);
                if !filter.matches(&e) {
                    continue;
                }
                match tx.try_send(e) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.stats.dropped_clients.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(cursor, "an event subscriber does not read: dropped");
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                changed = wake.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    }
}

/// The `reset` a subscriber gets when its position is gone: it carries the newest id, after
/// which the stream continues.
fn reset_event(newest: u64, asked: u64) -> Event {
    Event {
        id: newest,
        kind: EventKind::Reset,
        at: rfc3339(floe_wire::clock::unix_ms()),
        deployment_id: None,
        device_id: None,
        data: serde_json::json!({
            "reason": format!(
                "events after {asked} are no longer kept (the coordinator keeps the last ones in \
                 memory and restarts empty); reload state, the stream continues after {newest}"
            ),
        }),
    }
}

/// An event staged by the service, published when its step is committed.
#[derive(Debug, Clone)]
struct Staged {
    kind: EventKind,
    at: Millis,
    deployment_id: Option<String>,
    device_id: Option<String>,
    data: Value,
}

/// The service's side of the bus: events staged during a job, published after its commit.
/// Staged events are bounded by the ring's capacity: beyond it the step's events are replaced
/// by one `reset` (the ring could not have kept them for a resuming client anyway).
#[derive(Debug)]
pub struct EventSink {
    bus: Arc<EventBus>,
    pending: Vec<Staged>,
    overflowed: Option<Millis>,
}

impl EventSink {
    /// A sink publishing to `bus`.
    pub fn new(bus: Arc<EventBus>) -> Self {
        Self {
            bus,
            pending: Vec::new(),
            overflowed: None,
        }
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<EventBus> {
        &self.bus
    }

    /// Stages an event.
    pub fn emit(
        &mut self,
        kind: EventKind,
        at: Millis,
        deployment_id: Option<&str>,
        device_id: Option<&str>,
        data: Value,
    ) {
        if self.overflowed.is_some() {
            return;
        }
        if self.pending.len() >= self.bus.capacity {
            self.pending = Vec::new();
            self.overflowed = Some(at);
            return;
        }
        self.pending.push(Staged {
            kind,
            at,
            deployment_id: deployment_id.map(str::to_string),
            device_id: device_id.map(str::to_string),
            data,
        });
    }

    /// The events staged so far, oldest first: (kind, at, deployment, device, data). Read by
    /// the incidents part once the step that staged them committed.
    pub fn staged(
        &self,
    ) -> impl Iterator<Item = (EventKind, Millis, Option<&str>, Option<&str>, &Value)> {
        self.pending.iter().map(|e| {
            (
                e.kind,
                e.at,
                e.deployment_id.as_deref(),
                e.device_id.as_deref(),
                &e.data,
            )
        })
    }

    /// When more events were staged than the ring keeps (they were dropped for one `reset`),
    /// the time of the first one dropped.
    pub fn overflowed_at(&self) -> Option<Millis> {
        self.overflowed
    }

    /// Publishes what was staged (after the commit that made it true).
    pub fn flush(&mut self) {
        if let Some(at) = self.overflowed.take() {
            let n = self.bus.capacity;
            self.bus.publish([Staged {
                kind: EventKind::Reset,
                at,
                deployment_id: None,
                device_id: None,
                data: serde_json::json!({
                    "reason": format!("more than {n} events happened in one step; reload state"),
                }),
            }]);
        }
        if !self.pending.is_empty() {
            let staged = std::mem::take(&mut self.pending);
            self.bus.publish(staged);
        }
    }

    /// Drops what was staged (its transaction did not commit).
    pub fn discard(&mut self) {
        self.pending.clear();
        self.overflowed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sink(capacity: usize) -> EventSink {
        EventSink::new(EventBus::new(capacity, 1000))
    }

    fn emit_n(s: &mut EventSink, n: usize, dep: &str) {
        for i in 0..n {
            s.emit(
                EventKind::TargetTransition,
                1_700_000_000_000 + i as u64,
                Some(dep),
                Some("d1"),
                json!({"from": "pending", "to": "deploying", "i": i}),
            );
        }
    }

    #[test]
    fn ids_grow_and_the_ring_keeps_the_last() {
        let mut s = sink(5);
        emit_n(&mut s, 3, "dep_a");
        assert_eq!(s.bus().last_id(), 999, "nothing published before the flush");
        s.flush();
        assert_eq!(s.bus().last_id(), 1002);
        emit_n(&mut s, 4, "dep_a");
        s.flush();
        let Since::Events(v) = s.bus().since(1001, 100) else {
            panic!("1001 is still kept");
        };
        assert_eq!(
            v.iter().map(|e| e.id).collect::<Vec<_>>(),
            [1002, 1003, 1004, 1005, 1006]
        );
        assert!(matches!(s.bus().since(1000, 100), Since::Gap(1006)));
        assert!(matches!(s.bus().since(2000, 100), Since::Gap(1006)));
        let Since::Events(v) = s.bus().since(1006, 100) else {
            panic!("now is a position");
        };
        assert!(v.is_empty());
        assert_eq!(v.len(), 0);
        let e = &s.bus().since(1005, 1);
        let Since::Events(v) = e else { panic!() };
        assert_eq!(v[0].at, "2023-11-14T22:13:20.003Z");
    }

    #[test]
    fn discard_drops_staged_events_and_overflow_becomes_one_reset() {
        let mut s = sink(4);
        emit_n(&mut s, 2, "dep_a");
        s.discard();
        s.flush();
        assert_eq!(s.bus().last_id(), 999);
        emit_n(&mut s, 9, "dep_a");
        s.flush();
        let Since::Events(v) = s.bus().since(999, 100) else {
            panic!()
        };
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, EventKind::Reset);
    }

    #[tokio::test]
    async fn a_subscriber_gets_matching_events_and_a_resume_gets_the_rest() {
        let mut s = sink(100);
        let bus = Arc::clone(s.bus());
        let filter = Filter {
            kinds: KindFilter::parse("target.").unwrap(),
            deployment: Some("dep_a".into()),
        };
        let mut sub = bus.subscribe(Start::Now, filter.clone(), 16);
        emit_n(&mut s, 3, "dep_a");
        emit_n(&mut s, 2, "dep_b");
        s.emit(EventKind::DeviceOnline, 1, None, Some("d1"), json!({}));
        emit_n(&mut s, 2, "dep_a");
        s.flush();
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(sub.events.recv().await.unwrap().id);
        }
        assert_eq!(got, [1000, 1001, 1002, 1006, 1007]);
        // Resume after the second: exactly the rest, no duplicates.
        let mut again = bus.subscribe(Start::After(1001), filter, 16);
        let mut rest = Vec::new();
        for _ in 0..3 {
            rest.push(again.events.recv().await.unwrap().id);
        }
        assert_eq!(rest, [1002, 1006, 1007]);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), again.events.recv())
                .await
                .is_err(),
            "nothing more"
        );
    }

    #[tokio::test]
    async fn a_resume_from_a_lost_position_gets_a_reset() {
        let mut s = sink(3);
        let bus = Arc::clone(s.bus());
        for _ in 0..4 {
            emit_n(&mut s, 3, "dep_a");
            s.flush();
        }
        // 1000..=1011 published, 1009..=1011 kept.
        let mut sub = bus.subscribe(Start::After(1001), Filter::default(), 16);
        let first = sub.events.recv().await.unwrap();
        assert_eq!(first.kind, EventKind::Reset);
        assert_eq!(first.id, 1011);
        emit_n(&mut s, 1, "dep_a");
        s.flush();
        assert_eq!(sub.events.recv().await.unwrap().id, 1012);
        // A position still kept loses nothing.
        let mut kept = bus.subscribe(Start::After(1009), Filter::default(), 16);
        for id in 1010..=1012 {
            assert_eq!(kept.events.recv().await.unwrap().id, id);
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_dropped_and_counted() {
        let mut s = sink(10_000);
        let bus = Arc::clone(s.bus());
        let mut sub = bus.subscribe(Start::Now, Filter::default(), 8);
        let mut keeps_up = bus.subscribe(Start::Now, Filter::default(), 8);
        assert_eq!(bus.stats().subscribers.load(Ordering::Relaxed), 2);
        for _ in 0..4 {
            emit_n(&mut s, 4, "dep_a");
            s.flush();
            for _ in 0..4 {
                keeps_up.events.recv().await.unwrap();
            }
        }
        // The slow one got its 8 and was dropped after; its channel then closes.
        let mut n = 0;
        while sub.events.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 8);
        assert_eq!(bus.stats().dropped_clients.load(Ordering::Relaxed), 1);
        assert_eq!(bus.stats().subscribers.load(Ordering::Relaxed), 1);
        drop(keeps_up);
        emit_n(&mut s, 1, "dep_a");
        s.flush();
        for _ in 0..100 {
            if bus.stats().subscribers.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(bus.stats().subscribers.load(Ordering::Relaxed), 0);
    }
}
