//! `mqtt_out` and `mqtt_in` through rumqttc.
//!
//! Each node owns one client and drives its event loop in a task of its own. The loop
//! reconnects on every failure with exponential backoff (100 ms doubling to 5 s, reset after a
//! successful connection), and reports the link state in the node's metrics.
//!
//! `mqtt_out` hands messages to the client's request channel, whose capacity is the node's
//! `buffer`. While the link is up, a full channel makes the node wait (backpressure); while it is
//! down, the channel is the buffer that holds messages for the next connection, and a message
//! that does not fit is dropped, counted in the node's `dropped` metric and logged: never
//! silently. When a connection breaks, rumqttc moves unacknowledged and queued requests into its
//! `pending` list and clears that list when the broker has no session for the client; the loop
//! therefore keeps those requests itself (bounded by `buffer`, overflow counted) and puts them
//! back once the next connection is up, so a broker restart does not lose them.
//!
//! TLS (`mqtts://`) uses rustls with the ring provider, with the roots from `ca_file` or the
//! system's trust store.

use crate::msg::Msg;
use crate::task::NodeIo;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS, Request,
    TlsConfiguration, Transport,
};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest MQTT packet accepted or sent.
const MAX_PACKET: usize = 1 << 20;

/// The connection fields `mqtt_out` and `mqtt_in` share (NODES.md), read once for both.
#[derive(Debug, Deserialize)]
pub(crate) struct ConnConfig {
    broker: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
    /// Milliseconds (compiled).
    #[serde(default = "default_keep_alive")]
    keep_alive: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MqttOutConfig {
    #[serde(flatten)]
    conn: ConnConfig,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(default = "default_buffer")]
    buffer: usize,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MqttInConfig {
    #[serde(flatten)]
    conn: ConnConfig,
    topic: String,
    #[serde(default)]
    qos: u8,
}

fn default_keep_alive() -> u64 {
    30_000
}
fn default_buffer() -> usize {
    1000
}

fn qos(q: u8) -> Result<QoS, String> {
    match q {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        other => Err(format!("qos: {other} is not 0, 1 or 2")),
    }
}

/// Splits `mqtt://host:port` / `mqtts://host:port` into (tls, host, port).
pub(crate) fn parse_broker(url: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else {
        return Err(format!(
            "broker: `{url}` must start with mqtt:// or mqtts://"
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(format!(
            "broker: `{url}` must be scheme://host[:port] with nothing after"
        ));
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(h) = rest.strip_prefix('[') {
        // An IPv6 literal: [::1]:1883.
        let (h, tail) = h
            .split_once(']')
            .ok_or_else(|| format!("broker: `{url}` has an unclosed ["))?;
        match tail.strip_prefix(':') {
            Some(p) => (h.to_string(), p),
            None if tail.is_empty() => (h.to_string(), ""),
            None => return Err(format!("broker: `{url}` is malformed")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (rest.to_string(), ""),
        }
    };
    if host.is_empty() {
        return Err(format!("broker: `{url}` has no host"));
    }
    let port = if port.is_empty() {
        default_port
    } else {
        port.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("broker: `{url}` has an invalid port"))?
    };
    Ok((tls, host, port))
}

/// Settings shared by both MQTT kinds.
#[derive(Debug, Clone)]
struct Conn {
    url: String,
    tls: bool,
    host: String,
    port: u16,
    client_id: String,
    username: Option<String>,
    password: Option<String>,
    ca_file: Option<String>,
    keep_alive: Duration,
}

impl Conn {
    fn new(node_id: &str, cfg: ConnConfig) -> Result<Self, String> {
        let ConnConfig {
            broker,
            client_id,
            username,
            password,
            ca_file,
            keep_alive: keep_alive_ms,
        } = cfg;
        let broker = broker.as_str();
        let (tls, host, port) = parse_broker(broker)?;
        if keep_alive_ms != 0 && keep_alive_ms < 1000 {
            return Err(format!(
                "keep_alive: {keep_alive_ms} ms; MQTT keep-alive is 0 (off) or at least 1 s"
            ));
        }
        if password.is_some() && username.is_none() {
            return Err("password: set without a username".to_string());
        }
        if ca_file.is_some() && !tls {
            return Err("ca_file: only used with an mqtts:// broker".to_string());
        }
        Ok(Conn {
            url: broker.to_string(),
            tls,
            host,
            port,
            client_id: client_id.unwrap_or_else(|| format!("floe-{node_id}")),
            username,
            password,
            ca_file,
            keep_alive: Duration::from_millis(keep_alive_ms),
        })
    }

    fn options(&self) -> Result<MqttOptions, String> {
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive);
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some(u) = &self.username {
            o.set_credentials(u.clone(), self.password.clone().unwrap_or_default());
        }
        if self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(self.tls_config()?),
            )));
        }
        Ok(o)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("ca_file: {path}: {e}"))?;
                let mut reader = std::io::BufReader::new(pem.as_slice());
                for cert in rustls_pemfile::certs(&mut reader) {
                    let cert = cert.map_err(|e| format!("ca_file: {path}: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("ca_file: {path}: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!("ca_file: {path}: no PEM certificate in it"));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err("no system trust roots found; set ca_file".to_string());
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(cfg)
    }
}

/// The running mqtt_out node.
#[derive(Debug)]
pub(crate) struct MqttOutNode {
    conn: Conn,
    topic: String,
    qos: QoS,
    retain: bool,
    buffer: usize,
}

impl MqttOutNode {
    pub(crate) fn new(node_id: &str, cfg: MqttOutConfig) -> Result<Self, String> {
        let conn = Conn::new(node_id, cfg.conn)?;
        if !(1..=100_000).contains(&cfg.buffer) {
            return Err(format!("buffer: {} is outside 1..=100000", cfg.buffer));
        }
        if cfg.topic.contains(['+', '#']) {
            return Err(format!(
                "topic: `{}` has a wildcard; a publish topic cannot",
                cfg.topic
            ));
        }
        // Build the options once now, so a TLS problem is a start error, not a run-time one.
        conn.options()?;
        Ok(MqttOutNode {
            conn,
            topic: cfg.topic,
            qos: qos(cfg.qos)?,
            retain: cfg.retain,
            buffer: cfg.buffer,
        })
    }

    fn encode(&self, msg: &Msg) -> Result<(String, Vec<u8>), String> {
        let topic = if self.topic.is_empty() {
            if msg.topic.is_empty() {
                return Err("no topic: the node has none and the message has none".to_string());
            }
            if msg.topic.contains(['+', '#']) {
                return Err(format!("message topic `{}` has a wildcard", msg.topic));
            }
            msg.topic.to_string()
        } else {
            self.topic.clone()
        };
        let body = match &*msg.payload {
            Value::String(s) => s.clone().into_bytes(),
            other => serde_json::to_vec(other).map_err(|e| format!("payload: {e}"))?,
        };
        Ok((topic, body))
    }

    pub(crate) async fn run(self, mut io: NodeIo) {
        let Some(mut rx) = io.input.take() else {
            return;
        };
        if io.mute {
            // Smoke-test mode: everything but the publish.
            while let Some(batch) = rx.recv().await {
                io.metrics.msgs_in.fetch_add(batch.len() as u64, Relaxed);
                for msg in batch {
                    match self.encode(&msg) {
                        Ok(_) => io.tap.send(&msg, false),
                        Err(e) => io.error(e),
                    }
                }
            }
            return;
        }
        let opts = match self.conn.options() {
            Ok(o) => o,
            Err(e) => {
                io.error(e);
                return;
            }
        };
        let (client, eventloop) = AsyncClient::new(opts, self.buffer);
        let connected = Arc::new(AtomicBool::new(false));
        let closing = CancellationToken::new();
        let driver = tokio::spawn(drive(
            eventloop,
            Driver {
                node: io.id.clone(),
                url: self.conn.url.clone(),
                metrics: io.metrics.clone(),
                connected: connected.clone(),
                stop: closing.clone(),
                keep: self.buffer,
                subscribe: None,
            },
            None,
        ));
        let mut overflow_logged = 0u64;
        while let Some(batch) = rx.recv().await {
            io.metrics.msgs_in.fetch_add(batch.len() as u64, Relaxed);
            for msg in batch {
                let (topic, body) = match self.encode(&msg) {
                    Ok(x) => x,
                    Err(e) => {
                        io.error(e);
                        continue;
                    }
                };
                let handed = if connected.load(Relaxed) {
                    client
                        .publish(topic, self.qos, self.retain, body)
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    match client.try_publish(topic, self.qos, self.retain, body) {
                        Ok(()) => Ok(()),
                        Err(rumqttc::ClientError::TryRequest(_)) => {
                            let n = io.metrics.dropped.fetch_add(1, Relaxed) + 1;
                            // Log the first overflow and then every thousandth, so a long outage
                            // is reported without flooding the journal.
                            if n == 1 || n >= overflow_logged + 1000 {
                                overflow_logged = n;
                                tracing::warn!(node = %io.id, dropped_total = n, buffer = self.buffer,
                                    "broker unreachable and buffer full; dropping messages");
                            }
                            continue;
                        }
                        Err(e) => Err(e.to_string()),
                    }
                };
                match handed {
                    Ok(()) => {
                        io.metrics.msgs_out.fetch_add(1, Relaxed);
                        io.tap.send(&msg, true);
                    }
                    Err(e) => io.error(format!("publish: {e}")),
                }
            }
        }
        // Input closed: ask for a clean disconnect behind the queued publishes, and let the
        // driver deliver them. The engine's stop deadline bounds this wait.
        closing.cancel();
        if connected.load(Relaxed) {
            let _ = client.try_disconnect();
        }
        drop(client);
        let _ = driver.await;
    }
}

/// The running mqtt_in node.
#[derive(Debug)]
pub(crate) struct MqttInNode {
    conn: Conn,
    topic: String,
    qos: QoS,
}

impl MqttInNode {
    pub(crate) fn new(node_id: &str, cfg: MqttInConfig) -> Result<Self, String> {
        let conn = Conn::new(node_id, cfg.conn)?;
        if cfg.topic.is_empty() {
            return Err("topic: a topic filter is required".to_string());
        }
        conn.options()?;
        Ok(MqttInNode {
            conn,
            topic: cfg.topic,
            qos: qos(cfg.qos)?,
        })
    }

    pub(crate) async fn run(self, mut io: NodeIo) {
        let opts = match self.conn.options() {
            Ok(o) => o,
            Err(e) => {
                io.error(e);
                return;
            }
        };
        let (client, eventloop) = AsyncClient::new(opts, 16);
        let driver = Driver {
            node: io.id.clone(),
            url: self.conn.url.clone(),
            metrics: io.metrics.clone(),
            connected: Arc::new(AtomicBool::new(false)),
            stop: io.cancel.clone(),
            keep: 16,
            subscribe: Some((client.clone(), self.topic.clone(), self.qos)),
        };
        drive(eventloop, driver, Some(&mut io)).await;
        let _ = client.try_disconnect();
    }
}

struct Driver {
    node: Arc<str>,
    url: String,
    metrics: Arc<crate::task::NodeMetrics>,
    connected: Arc<AtomicBool>,
    /// For mqtt_out: the node's input closed. For mqtt_in: the flow stops.
    stop: CancellationToken,
    /// Most requests kept across a reconnect.
    keep: usize,
    subscribe: Option<(AsyncClient, String, QoS)>,
}

/// Polls the event loop until told to stop: reconnects with backoff, keeps pending publishes
/// across reconnects, and (for `mqtt_in`) emits received publishes through `io`.
async fn drive(mut el: EventLoop, d: Driver, mut io: Option<&mut NodeIo>) {
    let mut backoff = BACKOFF_START;
    let mut saved: Vec<Request> = Vec::new();
    let is_in = io.is_some();
    loop {
        let ev = tokio::select! {
            biased;
            // An mqtt_in node stops at once; an mqtt_out node keeps polling until its
            // disconnect has gone out (handled below) or the link is down.
            _ = d.stop.cancelled(), if is_in => break,
            ev = el.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                d.connected.store(true, Relaxed);
                d.metrics.set_connected(true);
                backoff = BACKOFF_START;
                tracing::info!(node = %d.node, broker = %d.url, session = ack.session_present, "mqtt connected");
                if !saved.is_empty() {
                    // Requests rumqttc would have cleared with the old session go first.
                    let mut restored: std::collections::VecDeque<Request> =
                        saved.drain(..).collect();
                    restored.extend(el.pending.drain(..));
                    el.pending = restored;
                }
                if let Some((client, topic, q)) = &d.subscribe
                    && let Err(e) = client.try_subscribe(topic.clone(), *q)
                {
                    d.metrics.error(format!("subscribe {topic}: {e}"));
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if let Some(io) = io.as_deref_mut() {
                    let payload = match serde_json::from_slice::<Value>(&p.payload) {
                        Ok(v) => v,
                        Err(_) => Value::String(String::from_utf8_lossy(&p.payload).into_owned()),
                    };
                    let msg = Msg {
                        payload: Arc::new(payload),
                        topic: Arc::from(p.topic.as_str()),
                        props: None,
                    };
                    io.out.push(0, msg);
                    io.out.flush().await;
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => break,
            Err(e) => {
                if d.connected.swap(false, Relaxed) {
                    tracing::warn!(node = %d.node, broker = %d.url, error = %e, "mqtt connection lost; reconnecting");
                } else {
                    tracing::debug!(node = %d.node, broker = %d.url, error = %e, "mqtt connect failed");
                }
                d.metrics.set_connected(false);
                saved.extend(
                    el.pending
                        .drain(..)
                        .filter(|r| matches!(r, Request::Publish(_))),
                );
                if saved.len() > d.keep {
                    let over = saved.len() - d.keep;
                    saved.drain(..over);
                    d.metrics.dropped.fetch_add(over as u64, Relaxed);
                    tracing::warn!(node = %d.node, dropped = over, "mqtt: pending publishes beyond the buffer dropped");
                }
                if d.stop.is_cancelled() {
                    let lost = saved.len() as u64;
                    if lost > 0 {
                        d.metrics.dropped.fetch_add(lost, Relaxed);
                        tracing::warn!(node = %d.node, lost, "stopping while the broker is unreachable; undelivered messages dropped");
                    }
                    break;
                }
                tokio::select! {
                    biased;
                    _ = d.stop.cancelled() => {
                        if is_in { break; }
                    }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    d.connected.store(false, Relaxed);
    d.metrics.set_connected(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker("mqtt://127.0.0.1:1884").unwrap(),
            (false, "127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_broker("mqtts://broker.local").unwrap(),
            (true, "broker.local".into(), 8883)
        );
        assert_eq!(
            parse_broker("mqtt://[::1]:1883").unwrap(),
            (false, "::1".into(), 1883)
        );
        assert!(parse_broker("http://x").unwrap_err().contains("mqtt://"));
        assert!(parse_broker("mqtt://x:0").unwrap_err().contains("port"));
        assert!(parse_broker("mqtt://x:99999").unwrap_err().contains("port"));
        assert!(parse_broker("mqtt://x/path").is_err());
        assert!(parse_broker("mqtt://").is_err());
    }

    #[test]
    fn config_errors_are_clear() {
        let out = |v: Value| MqttOutNode::new("n3", serde_json::from_value(v).unwrap());
        assert!(
            out(serde_json::json!({"broker": "mqtt://h", "qos": 3}))
                .unwrap_err()
                .contains("qos")
        );
        assert!(
            out(serde_json::json!({"broker": "mqtt://h", "keep_alive": 500}))
                .unwrap_err()
                .contains("keep_alive")
        );
        assert!(
            out(serde_json::json!({"broker": "mqtt://h", "buffer": 0}))
                .unwrap_err()
                .contains("buffer")
        );
        assert!(
            out(serde_json::json!({"broker": "mqtt://h", "topic": "a/#"}))
                .unwrap_err()
                .contains("wildcard")
        );
        assert!(
            out(serde_json::json!({"broker": "mqtts://h", "ca_file": "/nonexistent/ca.pem"}))
                .unwrap_err()
                .contains("ca_file")
        );
        let n = out(serde_json::json!({"broker": "mqtt://h"})).unwrap();
        assert_eq!(n.conn.client_id, "floe-n3");
    }

    #[test]
    fn payload_encoding_and_topic_choice() {
        let n = MqttOutNode::new(
            "n",
            serde_json::from_value(serde_json::json!({"broker": "mqtt://h"})).unwrap(),
        )
        .unwrap();
        let (t, b) = n
            .encode(&Msg::with_topic(serde_json::json!({"t": 1}), "a/b"))
            .unwrap();
        assert_eq!(
            (t.as_str(), b.as_slice()),
            ("a/b", br#"{"t":1}"#.as_slice())
        );
        let (_, b) = n
            .encode(&Msg::with_topic(serde_json::json!("plain"), "a"))
            .unwrap();
        assert_eq!(b, b"plain");
        assert!(
            n.encode(&Msg::new(serde_json::json!(1)))
                .unwrap_err()
                .contains("no topic")
        );
    }
}
