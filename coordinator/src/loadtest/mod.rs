//! A device simulator that drives a real coordinator the way real devices do: `floe loadtest`.
//!
//! Why: the coordinator's cost per report, its latency and its memory at fleet scale cannot be
//! measured with a dozen real daemons, and 100 000 real devices cannot exist here. Each
//! [`VirtualDevice`] has a real ed25519 key, is allowlisted through the REST API, sends signed
//! [`DeviceReport`](floe_wire::proto::DeviceReport)s to `POST /api/v1/devices/{id}/report`,
//! reads its directive from `GET /api/v1/devices/{id}/directive`, carries it out step by step
//! (stage, switch, commit, rollback) and reports the result, exactly as `floed` does over
//! HTTP. Some devices can be told to fail their stage, to turn unhealthy after the switch, or
//! to go offline after enrolling.
//!
//! Shape: one min-heap of (due time, device, epoch) behind a mutex and `in_flight` worker
//! threads sharing one HTTP connection pool, so at most `in_flight` device requests are
//! outstanding. A device reports every `period` on average (first reports spread evenly over
//! one period), and every `active_period` while it is in the middle of a deployment. Real
//! devices hear a new directive at once over the fabric (gossip); the simulator cannot, so a
//! push thread stands in for it: every `push_period` it follows `GET /directives/feed` (each
//! newly issued directive once, with the signed post the fabric would carry), hands each post
//! to its device, and makes those with news due now, so they report the outcome at once. A
//! device whose report's answer says it is behind fetches its directive itself when the push
//! has brought it nothing for 5 s, and always without the push (no token or no
//! `push_period`), as `floed` does over HTTP alone. A
//! device's entries in the
//! heap carry its epoch, and only the newest counts, so a device is never driven by two
//! workers at once and the heap holds at most two entries per device. Memory is the devices
//! plus one latency histogram of fixed size; the run is bounded by its duration.

mod device;
mod stats;

pub use device::{Behaviour, DirectiveError, Outcome, VirtualDevice};
pub use stats::{LoadStats, Snapshot};

use floe_wire::proto::TrustStore;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The largest fleet one run simulates.
pub const MAX_DEVICES: usize = 200_000;
/// The most concurrent requests.
pub const MAX_IN_FLIGHT: usize = 256;
/// The most bytes read from one reply.
const MAX_REPLY: u64 = 64 * 1024;
/// How long a device that is behind waits for the push before it fetches its directive.
const FETCH_AFTER: Duration = Duration::from_secs(5);
/// Per-request time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a load test could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting is out of range.
    #[error("{field}: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Allowlisting a device failed.
    #[error("allowlisting device {device}: HTTP {status}: {body}")]
    Allow {
        /// The device id.
        device: String,
        /// The HTTP status (0 when the request did not get through).
        status: u16,
        /// The reply, or the transport error.
        body: String,
    },
    /// A worker thread could not be started.
    #[error("starting a worker thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// What a run simulates.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The coordinator, `http://host:port`.
    pub server: String,
    /// The API token (needed to allowlist devices).
    pub token: Option<String>,
    /// How many devices.
    pub devices: usize,
    /// Mean time between two reports of one idle device.
    pub period: Duration,
    /// Time between two reports of a device in the middle of a deployment.
    pub active_period: Duration,
    /// How many requests may be outstanding at once.
    pub in_flight: usize,
    /// Share of devices that fail their stage.
    pub fail_rate: f64,
    /// Share of devices that turn unhealthy on the new release.
    pub unhealthy_rate: f64,
    /// Share of devices that go offline after enrolling.
    pub offline_rate: f64,
    /// Device types, assigned round-robin.
    pub device_types: Vec<String>,
    /// Regions, assigned round-robin.
    pub regions: Vec<String>,
    /// Seed of the device keys and behaviours (a run is repeatable).
    pub seed: u64,
    /// The coordinator's trust store, to verify directives as devices do.
    pub trust: Option<TrustStore>,
    /// How often the stand-in for the fabric's push asks whom to tell (needs the token);
    /// `None`: devices learn of directives only when they report.
    pub push_period: Option<Duration>,
}

impl LoadConfig {
    /// Defaults: 30 s between reports, 1 s while deploying, 16 in flight, nobody failing.
    pub fn new(server: &str, devices: usize) -> LoadConfig {
        LoadConfig {
            server: server.trim_end_matches('/').to_string(),
            token: None,
            devices,
            period: Duration::from_secs(30),
            active_period: Duration::from_secs(1),
            in_flight: 16,
            fail_rate: 0.0,
            unhealthy_rate: 0.0,
            offline_rate: 0.0,
            device_types: vec!["rpi4".into(), "jetson-nano".into(), "gateway".into()],
            regions: vec!["eu".into(), "us".into()],
            seed: 1,
            trust: None,
            push_period: Some(Duration::from_millis(500)),
        }
    }

    fn check(&self) -> Result<(), LoadError> {
        let bad = |field, message: String| Err(LoadError::Config { field, message });
        if self.devices == 0 || self.devices > MAX_DEVICES {
            return bad("devices", format!("must be 1 to {MAX_DEVICES}"));
        }
        if self.in_flight == 0 || self.in_flight > MAX_IN_FLIGHT {
            return bad("in_flight", format!("must be 1 to {MAX_IN_FLIGHT}"));
        }
        if self.period.is_zero() || self.active_period.is_zero() {
            return bad("period", "periods must be above zero".into());
        }
        for (field, rate) in [
            ("fail_rate", self.fail_rate),
            ("unhealthy_rate", self.unhealthy_rate),
            ("offline_rate", self.offline_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return bad(field, format!("{rate} is not a share between 0 and 1"));
            }
        }
        if self.fail_rate + self.unhealthy_rate + self.offline_rate > 1.0 {
            return bad("fail_rate", "the three rates add up to more than 1".into());
        }
        if self.device_types.is_empty() || self.regions.is_empty() {
            return bad("device_types", "at least one device type and region".into());
        }
        if !self.server.starts_with("http://") {
            return bad(
                "server",
                format!("{:?} is not an http:// address", self.server),
            );
        }
        Ok(())
    }
}

/// SplitMix64: the seeded stream the keys and behaviours come from.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A simulated fleet and the coordinator it talks to.
#[derive(Debug)]
pub struct Fleet {
    config: LoadConfig,
    devices: Vec<Mutex<VirtualDevice>>,
    /// Device id → index.
    index: HashMap<String, u32>,
    /// Each device's newest heap entry; older ones are dropped when popped.
    epochs: Vec<AtomicU32>,
    /// When the push last handed each device a post (µs since the run's start; 0: not in
    /// this run).
    poked: Vec<AtomicU64>,
    agent: ureq::Agent,
}

/// One page of `GET /directives/feed`.
#[derive(serde::Deserialize)]
struct FeedPage {
    devices: Vec<FeedPost>,
    cursor: String,
}

#[derive(serde::Deserialize)]
struct FeedPost {
    device_id: String,
    generation: u64,
    post: String,
}

/// The schedule: (due µs since the run's start, device index, epoch), earliest first.
type Schedule = Mutex<BinaryHeap<Reverse<(u64, u32, u32)>>>;

impl Fleet {
    /// Creates the devices (keys and behaviours from the seed).
    pub fn new(config: LoadConfig) -> Result<Fleet, LoadError> {
        config.check()?;
        let mut state = config.seed;
        let mut devices = Vec::with_capacity(config.devices);
        for i in 0..config.devices {
            let mut seed = [0u8; 32];
            for chunk in seed.chunks_mut(8) {
                chunk.copy_from_slice(&splitmix(&mut state).to_le_bytes());
            }
            let draw = (splitmix(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
            let behaviour = if draw < config.fail_rate {
                Behaviour::FailStage
            } else if draw < config.fail_rate + config.unhealthy_rate {
                Behaviour::Unhealthy
            } else if draw < config.fail_rate + config.unhealthy_rate + config.offline_rate {
                Behaviour::Offline
            } else {
                Behaviour::Good
            };
            let ty = &config.device_types[i % config.device_types.len()];
            let region = &config.regions[(i / config.device_types.len()) % config.regions.len()];
            devices.push(Mutex::new(VirtualDevice::new(seed, ty, region, behaviour)));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .max_idle_connections(MAX_IN_FLIGHT)
            .max_idle_connections_per_host(MAX_IN_FLIGHT)
            .build()
            .into();
        let index = devices
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.lock().ok().map(|d| (d.id().to_string(), i as u32)))
            .collect();
        let epochs = (0..devices.len()).map(|_| AtomicU32::new(0)).collect();
        let poked = (0..devices.len()).map(|_| AtomicU64::new(0)).collect();
        Ok(Fleet {
            config,
            devices,
            index,
            epochs,
            poked,
            agent,
        })
    }

    /// How many devices have each behaviour: (good, fail stage, unhealthy, offline).
    pub fn behaviours(&self) -> [usize; 4] {
        let mut out = [0; 4];
        for d in &self.devices {
            if let Ok(d) = d.lock() {
                out[d.behaviour() as usize] += 1;
            }
        }
        out
    }

    /// Allowlists every device through `POST /api/v1/devices/batch`, 1 000 per request and
    /// `in_flight` requests at a time. Devices registered already with the same key count as
    /// existing, so a second run reuses a fleet. Returns what the coordinator answered, summed:
    /// (devices created, devices that existed).
    pub fn allow_all(&self) -> Result<(u64, u64), LoadError> {
        const PER_REQUEST: usize = 1000;
        let chunks = self.devices.len().div_ceil(PER_REQUEST);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (created, existing) = (AtomicU64::new(0), AtomicU64::new(0));
        let first_error: Mutex<Option<LoadError>> = Mutex::new(None);
        std::thread::scope(|scope| -> Result<(), LoadError> {
            for _ in 0..self.config.in_flight.min(chunks) {
                std::thread::Builder::new()
                    .spawn_scoped(scope, || {
                        loop {
                            let c = next.fetch_add(1, Ordering::Relaxed);
                            if c >= chunks
                                || first_error.lock().map(|e| e.is_some()).unwrap_or(true)
                            {
                                break;
                            }
                            let end = ((c + 1) * PER_REQUEST).min(self.devices.len());
                            match self.allow_range(c * PER_REQUEST..end) {
                                Ok((c, e)) => {
                                    created.fetch_add(c, Ordering::Relaxed);
                                    existing.fetch_add(e, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    if let Ok(mut slot) = first_error.lock() {
                                        slot.get_or_insert(e);
                                    }
                                }
                            }
                        }
                    })
                    .map_err(LoadError::Spawn)?;
            }
            Ok(())
        })?;
        if let Some(e) = first_error.into_inner().ok().flatten() {
            return Err(e);
        }
        Ok((created.into_inner(), existing.into_inner()))
    }

    /// One `POST /devices/batch`; returns its (created, existing).
    fn allow_range(&self, range: std::ops::Range<usize>) -> Result<(u64, u64), LoadError> {
        let first = range.start;
        let devices: Vec<serde_json::Value> = self.devices[range]
            .iter()
            .filter_map(|d| d.lock().ok())
            .map(|d| {
                serde_json::json!({
                    "id": d.id(),
                    "public_key": d.public_hex(),
                    "type": d.device_type(),
                    "region": d.region(),
                    "labels": {"loadtest": "1"},
                })
            })
            .collect();
        let url = format!("{}/api/v1/devices/batch", self.config.server);
        let mut req = self.agent.post(&url).content_type("application/json");
        if let Some(t) = &self.config.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let body = serde_json::json!({ "devices": devices }).to_string();
        let failed = |status, body| LoadError::Allow {
            device: format!("devices {first}…"),
            status,
            body,
        };
        match req.send(body.as_bytes()) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let text = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_REPLY)
                    .read_to_string()
                    .unwrap_or_default();
                if status >= 300 {
                    return Err(failed(status, text));
                }
                let reply: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| failed(status, format!("{e}: {text}")))?;
                let count = |k: &str| reply[k].as_u64();
                match (count("created"), count("existing")) {
                    (Some(c), Some(e)) => Ok((c, e)),
                    _ => Err(failed(
                        status,
                        format!("no created/existing counts: {text}"),
                    )),
                }
            }
            Err(e) => Err(failed(0, e.to_string())),
        }
    }

    /// Runs the fleet for `duration` (or until `stop` is set), and returns what happened.
    /// `on_tick` is called about once a second from the calling thread with the figures so far
    /// (to print progress, or to stop when a deployment completes).
    pub fn run(
        &self,
        duration: Duration,
        stop: &AtomicBool,
        mut on_tick: impl FnMut(&Snapshot),
    ) -> Result<LoadStats, LoadError> {
        let start = Instant::now();
        let deadline = start + duration;
        for p in &self.poked {
            p.store(0, Ordering::Relaxed);
        }
        let n = self.devices.len() as u64;
        let period = self.config.period.as_micros() as u64;
        // First reports spread evenly over one period, so the rate is flat from the start.
        let heap: Schedule = Mutex::new(
            (0..self.devices.len())
                .map(|i| {
                    let epoch = self.epochs[i].load(Ordering::Relaxed);
                    Reverse((
                        (i as u64).saturating_mul(period) / n.max(1),
                        i as u32,
                        epoch,
                    ))
                })
                .collect(),
        );
        let stats = LoadStats::new();
        let (heap, stats_ref) = (&heap, &stats);
        std::thread::scope(|scope| -> Result<(), LoadError> {
            for _ in 0..self.config.in_flight {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || {
                        self.worker(heap, stats_ref, start, deadline, stop)
                    })
                    .map_err(LoadError::Spawn)?;
            }
            if let (Some(every), Some(_)) = (self.config.push_period, &self.config.token) {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || {
                        self.push(every, heap, stats_ref, start, deadline, stop)
                    })
                    .map_err(LoadError::Spawn)?;
            }
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(
                    (deadline - Instant::now()).as_millis().min(1000) as u64,
                ));
                on_tick(&stats.snapshot(start.elapsed()));
            }
            stop.store(true, Ordering::Relaxed);
            Ok(())
        })?;
        stats.finish(start.elapsed());
        Ok(stats)
    }

    /// The stand-in for the fabric's push: every `every`, it follows the coordinator's
    /// directive feed (`GET /directives/feed`, the signed posts the fabric would carry, each
    /// new one once), hands each post to its device as the fabric would (verified against the
    /// trust store), and makes a device that has news due now, so it reports the outcome at
    /// once as `floed` does.
    fn push(
        &self,
        every: Duration,
        heap: &Schedule,
        stats: &LoadStats,
        start: Instant,
        deadline: Instant,
        stop: &AtomicBool,
    ) {
        const PAGE: usize = 1000;
        let mut cursor: Option<String> = None;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            // At most a thousand pages a round, so a round is bounded whatever the fleet.
            for _ in 0..1000 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let mut url = format!("{}/api/v1/directives/feed?limit={PAGE}", self.config.server);
                if let Some(c) = &cursor {
                    url.push_str(&format!("&since={c}"));
                }
                let mut req = self.agent.get(&url);
                if let Some(t) = &self.config.token {
                    req = req.header("Authorization", &format!("Bearer {t}"));
                }
                let text = req.call().and_then(|mut r| {
                    r.body_mut()
                        .with_config()
                        .limit(16 * 1024 * 1024)
                        .read_to_string()
                });
                let page: FeedPage = match text
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                {
                    Ok(v) => v,
                    Err(e) => {
                        stats.error(&format!("GET directives/feed: {e}"));
                        break;
                    }
                };
                let now_us = start.elapsed().as_micros() as u64;
                let mut due = Vec::new();
                for d in &page.devices {
                    let Some(&i) = self.index.get(&d.device_id) else {
                        continue;
                    };
                    let Ok(mut dev) = self.devices[i as usize].lock() else {
                        continue;
                    };
                    if dev.behaviour() == Behaviour::Offline || d.generation <= dev.generation() {
                        continue;
                    }
                    let Ok(post) = hex::decode(&d.post) else {
                        stats.error("a feed post is not hex");
                        continue;
                    };
                    self.poked[i as usize].store(now_us.max(1), Ordering::Relaxed);
                    match dev.apply_post(&post, self.config.trust.as_ref()) {
                        Ok(Outcome::New(action)) => {
                            stats.directive(action);
                            let epoch = self.epochs[i as usize].fetch_add(1, Ordering::Relaxed) + 1;
                            // Ahead of every heartbeat: a real device acts on its directive at
                            // once whatever the rest of the fleet does, while the simulator's
                            // heartbeats of 100 000 devices can run behind their schedule on a
                            // shared machine (a backlog of the simulator's, not the
                            // coordinator's). Only the step itself jumps the queue: the device's
                            // later reports wait their turn with the others', so heartbeats are
                            // never starved into "offline".
                            due.push(Reverse((0, i, epoch)));
                        }
                        Ok(Outcome::Old) => {}
                        Err(e) => stats.error(&e.to_string()),
                    }
                }
                if let Ok(mut h) = heap.lock() {
                    h.extend(due);
                }
                let full = page.devices.len() == PAGE;
                cursor = Some(page.cursor);
                if !full {
                    break;
                }
            }
            std::thread::sleep(every);
        }
    }

    fn worker(
        &self,
        heap: &Schedule,
        stats: &LoadStats,
        start: Instant,
        deadline: Instant,
        stop: &AtomicBool,
    ) {
        let active = self.config.active_period.as_micros() as u64;
        let period = self.config.period.as_micros() as u64;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let now_us = start.elapsed().as_micros() as u64;
            let next = {
                let Ok(mut h) = heap.lock() else { return };
                match h.peek() {
                    Some(Reverse((due, _, _))) if *due <= now_us => h.pop().map(|Reverse(e)| e),
                    Some(Reverse((due, _, _))) => {
                        let wait = (*due - now_us).min(5_000);
                        drop(h);
                        std::thread::sleep(Duration::from_micros(wait));
                        continue;
                    }
                    None => return,
                }
            };
            let Some((_, index, epoch)) = next else {
                continue;
            };
            let Some(cell) = self.devices.get(index as usize) else {
                continue;
            };
            // An older entry of a device the push made due since: the newer one counts.
            if self.epochs[index as usize].load(Ordering::Relaxed) != epoch {
                continue;
            }
            let next_in = match cell.lock() {
                Ok(mut dev) => self.visit(&mut dev, index, start, stats, active, period),
                Err(_) => None,
            };
            if let Some(after) = next_in {
                let due = start.elapsed().as_micros() as u64 + after;
                if let Ok(mut h) = heap.lock() {
                    // The push may have made the device due while it was visited.
                    let epoch = self.epochs[index as usize].load(Ordering::Relaxed);
                    h.push(Reverse((due, index, epoch)));
                }
            }
        }
    }

    /// One visit of one device: a report, then its directive if the coordinator says it is
    /// behind. Returns when to visit it next (µs from now), or `None` to drop it (offline).
    fn visit(
        &self,
        dev: &mut VirtualDevice,
        index: u32,
        start: Instant,
        stats: &LoadStats,
        active: u64,
        period: u64,
    ) -> Option<u64> {
        let Some(desired) = self.send_report(dev, stats) else {
            return Some(period);
        };
        if dev.behaviour() == Behaviour::Offline {
            return None;
        }
        // The answer names the generation of the device's current directive (when the
        // coordinator sends it); a device that has it already has nothing to fetch.
        // With the push stand-in the post arrives from it, as from the fabric; a device that
        // is behind and has heard nothing for a while fetches it itself, as `floed` does.
        let pushed = self.config.push_period.is_some() && self.config.token.is_some();
        let behind = desired.is_none_or(|g| g > dev.generation())
            && (!pushed || self.quiet_for(index, start, FETCH_AFTER));
        let outcome = if behind {
            self.fetch_directive(dev, stats)
        } else {
            None
        };
        match outcome {
            // News to report: at once, as the agent reports every change.
            Some(Outcome::New(_)) => Some(0),
            _ if dev.mid_deployment() => Some(active),
            _ => Some(period),
        }
    }

    /// Whether the push has handed device `index` nothing for `quiet` (or ever).
    fn quiet_for(&self, index: u32, start: Instant, quiet: Duration) -> bool {
        // 0: nothing pushed in this run, so quiet since the run started.
        let last = self.poked[index as usize].load(Ordering::Relaxed);
        (start.elapsed().as_micros() as u64).saturating_sub(last) >= quiet.as_micros() as u64
    }

    /// Sends one report. `None` when it was not accepted; else the desired generation the
    /// answer carries, if it carries one.
    fn send_report(&self, dev: &mut VirtualDevice, stats: &LoadStats) -> Option<Option<u64>> {
        let now_ms = floe_wire::clock::unix_ms();
        let bytes = match dev.report(now_ms) {
            Ok(b) => b,
            Err(e) => {
                stats.error(&format!("signing a report: {e}"));
                return None;
            }
        };
        let url = format!("{}/api/v1/devices/{}/report", self.config.server, dev.id());
        let t0 = Instant::now();
        let result = self
            .agent
            .post(&url)
            .content_type("application/cbor")
            .send(&bytes[..]);
        let took = t0.elapsed();
        match result {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let desired = resp
                    .headers()
                    .get(crate::api::DESIRED_GENERATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let _ = resp.body_mut().with_config().limit(MAX_REPLY).read_to_vec();
                stats.report(status, took);
                (status < 300).then_some(desired)
            }
            Err(e) => {
                stats.error(&format!("POST report: {e}"));
                None
            }
        }
    }

    fn fetch_directive(&self, dev: &mut VirtualDevice, stats: &LoadStats) -> Option<Outcome> {
        let url = format!(
            "{}/api/v1/devices/{}/directive",
            self.config.server,
            dev.id()
        );
        let auth = dev.directive_auth(floe_wire::clock::unix_secs());
        let mut resp = match self
            .agent
            .get(&url)
            .header(floe_wire::proto::device_auth::DEVICE_AUTH_HEADER, &auth)
            .call()
        {
            Ok(r) => r,
            Err(e) => {
                stats.error(&format!("GET directive: {e}"));
                return None;
            }
        };
        if resp.status().as_u16() != 200 {
            return None;
        }
        let bytes = match resp.body_mut().with_config().limit(MAX_REPLY).read_to_vec() {
            Ok(b) => b,
            Err(e) => {
                stats.error(&format!("reading a directive: {e}"));
                return None;
            }
        };
        match dev.apply_post(&bytes, self.config.trust.as_ref()) {
            Ok(outcome) => {
                if let Outcome::New(action) = outcome {
                    stats.directive(action);
                }
                Some(outcome)
            }
            Err(e) => {
                stats.error(&e.to_string());
                None
            }
        }
    }
}
