//! An embedded MQTT broker (rumqttd) on a loopback port, so that `floed demo` runs with nothing
//! installed.
//!
//! rumqttd runs its router and listener on threads of its own and offers no way to stop them;
//! the broker therefore lives until the process exits, which is what a demo needs. It is built
//! with default features off (no TLS, no websockets) and listens on 127.0.0.1 only.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No free loopback port could be found.
    #[error("bind: finding a free loopback port: {0}")]
    Bind(#[source] std::io::Error),
    /// The broker thread could not be spawned.
    #[error("spawn: starting the broker thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The broker did not accept connections in time.
    #[error("ready: the broker did not accept connections on {0} within {1:?}")]
    NotReady(SocketAddr, Duration),
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    _thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts a broker on a free port of 127.0.0.1 and waits until it accepts connections.
    pub fn start() -> Result<EmbeddedBroker, BrokerError> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(BrokerError::Bind)?
            .port();
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// Starts a broker listening on `addr` and waits until it accepts connections.
    pub fn start_on(addr: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
        let config = config(addr);
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded MQTT broker stopped");
                }
            })
            .map_err(BrokerError::Spawn)?;
        let wait = Duration::from_secs(5);
        let until = Instant::now() + wait;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() >= until {
                return Err(BrokerError::NotReady(addr, wait));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::debug!(%addr, "embedded MQTT broker ready");
        Ok(EmbeddedBroker {
            addr,
            _thread: thread,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker URL for flow configs: `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

fn config(addr: SocketAddr) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: 1 << 20,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4-loopback".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = rumqttd::RouterConfig {
        max_connections: 64,
        max_outgoing_packet_count: 200,
        max_segment_size: 1 << 20,
        max_segment_count: 10,
        ..Default::default()
    };
    rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_loopback_port_and_accepts_connections() {
        let b = EmbeddedBroker::start().unwrap();
        assert!(b.addr().ip().is_loopback());
        assert!(b.url().starts_with("mqtt://127.0.0.1:"));
        assert!(TcpStream::connect(b.addr()).is_ok());
    }
}
