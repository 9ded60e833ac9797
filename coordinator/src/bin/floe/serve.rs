//! `floe serve`: the coordinator service and its REST API. This file only parses the
//! arguments and runs [`floe_coordinator::server::start`] until SIGINT or SIGTERM.

use anyhow::{Context, Result};
use clap::Args;
use floe_coordinator::server::{self, ServerConfig};
use floe_rollout::parse_duration;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// `floe serve` options.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// Data directory (default: $XDG_DATA_HOME/floe or ~/.local/share/floe).
    #[arg(long, env = "FLOE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A device silent for this long counts as offline (several of its report periods: floed
    /// reports every 10 s by default, large fleets every 30 s).
    #[arg(long, default_value = "90s")]
    offline_after: String,
    /// How long the fleet's health rollups (per device group, one per minute) are kept.
    #[arg(long, default_value = "24h")]
    health_retention: String,
    /// How long a rolled-back device has to report healthy on its previous version (after
    /// it: unhealthy, or unverified when silent).
    #[arg(long, default_value = "5m")]
    rollback_verify_timeout: String,
    /// How long a signed directive stays valid.
    #[arg(long, default_value = "1h")]
    directive_ttl: String,
    /// The pre-deployment checklist (003): `enforce` stops a start when an item fails and is
    /// not overridden; `warn` records and audits the result and starts anyway (labs, demos).
    #[arg(long, value_parser = ["enforce", "warn"], default_value = "enforce")]
    preflight: String,
    /// A target whose last report is older than this fails the checklist's connectivity item.
    #[arg(long, default_value = "5m")]
    preflight_heartbeat: String,
    /// Fabric (libp2p) listen addresses; devices bootstrap to them. The addresses actually
    /// bound, with the coordinator's peer id, are written to DIR/fabric-addrs. Loopback
    /// unless configured: give the site's address (or /ip4/0.0.0.0/tcp/7301) for devices.
    #[arg(long = "fabric-listen", default_value = "/ip4/127.0.0.1/tcp/7301")]
    fabric_listen: Vec<String>,
    /// Peers to dial at start (multiaddrs ending in /p2p/<peer id>).
    #[arg(long = "fabric-bootstrap")]
    fabric_bootstrap: Vec<String>,
    /// Announce the fabric on the LAN with mDNS (off unless given).
    #[arg(long)]
    mdns: bool,
    /// mDNS is off by default; kept so older scripts still start.
    #[arg(long, hide = true)]
    no_mdns: bool,
    /// How often directives devices still have to apply are posted again.
    #[arg(long, default_value = "2s")]
    republish: String,
    /// The REST API's most open connections. At the cap a new connection replaces the one
    /// idle longest; requests being handled are never cut (see ARCHITECTURE.md).
    #[arg(long, default_value_t = floe_httpd::Limits::coordinator().max_connections)]
    max_connections: usize,
    /// The most open REST connections of one client IP address (1 to --max-connections);
    /// more are closed at accept, before a byte is read. Default 64, or --max-connections
    /// when that is lower.
    #[arg(long)]
    max_connections_per_addr: Option<usize>,
    /// How long a REST client may take to send a request head.
    #[arg(long, default_value = "10s")]
    header_timeout: String,
    /// How long a kept-alive REST connection may wait for its next request.
    #[arg(long, default_value = "30s")]
    idle_timeout: String,
    /// How long a REST request may take, reading its body included (503 after it).
    #[arg(long, default_value = "60s")]
    request_timeout: String,
    /// Events kept in memory for event-stream clients that resume with Last-Event-ID.
    #[arg(long, default_value_t = floe_coordinator::service::events::DEFAULT_EVENT_RING as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    event_ring: u64,
    /// Attempts per webhook delivery (retried after 1 s, 2 s, 4 s ... up to 60 s) before the
    /// event is given up.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=20))]
    hook_max_attempts: u32,
    /// A PEM file of certificates an https webhook receiver's chain must end in (a private
    /// CA); without it, the system's roots.
    #[arg(long, value_name = "PEM")]
    hook_ca: Option<PathBuf>,
    /// Each API token's sustained rate, in requests per second (0: unlimited); over it the
    /// API answers 429 with Retry-After. Device report routes are not counted.
    #[arg(long, default_value_t = floe_coordinator::api::ratelimit::DEFAULT_RATE)]
    rate_limit: u32,
    /// How many requests an API token may make at once after an idle spell.
    #[arg(long, default_value_t = floe_coordinator::api::ratelimit::DEFAULT_BURST)]
    rate_burst: u32,
    /// Serve the REST API over https with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Failed authentications (unknown, revoked or expired tokens) a client address may make
    /// per second once its burst is spent (0: unlimited); past it, 429 with Retry-After.
    #[arg(long, default_value_t = floe_coordinator::api::ratelimit::DEFAULT_AUTH_FAILURES.per_sec)]
    auth_fail_limit: u32,
    /// How many failed authentications a client address may make at once.
    #[arg(long, default_value_t = floe_coordinator::api::ratelimit::DEFAULT_AUTH_FAILURES.burst)]
    auth_fail_burst: u32,
    /// Serve https with a self-signed certificate made at first start and kept in
    /// DATA_DIR/tls/ (its fingerprint is printed; clients pin it with `floe --pin`).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls_self_signed: bool,
    /// A host name or address the self-signed certificate must carry besides localhost, the
    /// loopback addresses and this host's name (repeat for more; read at first start only).
    #[arg(long = "tls-name", value_name = "NAME", requires = "tls_self_signed")]
    tls_names: Vec<String>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn parse_addrs(what: &str, list: &[String]) -> Result<Vec<libp2p::Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse::<libp2p::Multiaddr>()
                .with_context(|| format!("{what}: `{a}` is not a multiaddr"))
        })
        .collect()
}

fn default_data_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("floe"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/floe"))
}

/// The server's settings from the arguments.
fn config(args: ServeArgs) -> Result<ServerConfig> {
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let mut config = ServerConfig::new(data_dir);
    config.listen = args.listen;
    config.offline_after = parse_duration(&args.offline_after).context("--offline-after")?;
    config.health_retention =
        parse_duration(&args.health_retention).context("--health-retention")?;
    config.directive_ttl = parse_duration(&args.directive_ttl).context("--directive-ttl")?;
    config.preflight.enforce = args.preflight == "enforce";
    config.preflight.heartbeat_within =
        parse_duration(&args.preflight_heartbeat).context("--preflight-heartbeat")?;
    config.rollback_verify_timeout =
        parse_duration(&args.rollback_verify_timeout).context("--rollback-verify-timeout")?;
    config.republish =
        std::time::Duration::from_millis(parse_duration(&args.republish).context("--republish")?);
    config.fabric_listen = parse_addrs("--fabric-listen", &args.fabric_listen)?;
    config.fabric_bootstrap = parse_addrs("--fabric-bootstrap", &args.fabric_bootstrap)?;
    config.mdns = args.mdns && !args.no_mdns;
    let ms = |flag: &str, v: &str| -> Result<std::time::Duration> {
        Ok(std::time::Duration::from_millis(
            parse_duration(v).with_context(|| flag.to_string())?,
        ))
    };
    config.event_ring = usize::try_from(args.event_ring).context("--event-ring")?;
    config.hook_attempts = args.hook_max_attempts;
    config.hook_ca = args.hook_ca.clone();
    config.api.rate = floe_coordinator::api::ratelimit::RateLimit {
        per_sec: args.rate_limit,
        burst: args.rate_burst,
    };
    config
        .api
        .rate
        .check()
        .map_err(|e| anyhow::anyhow!("--{}", e.replace('_', "-")))?;
    config.api.auth_failures = floe_coordinator::api::ratelimit::RateLimit {
        per_sec: args.auth_fail_limit,
        burst: args.auth_fail_burst,
    };
    config.api.auth_failures.check().map_err(|e| {
        anyhow::anyhow!(
            "--{}",
            e.replace("rate_limit", "auth_fail_limit")
                .replace("rate_burst", "auth_fail_burst")
                .replace('_', "-")
        )
    })?;
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(server::TlsFiles { cert, key });
    }
    if args.tls_self_signed {
        config.tls_self_signed = Some(args.tls_names);
    }
    config.http.max_connections = args.max_connections;
    config.http.max_connections_per_addr = args.max_connections_per_addr.unwrap_or(
        floe_httpd::Limits::coordinator()
            .max_connections_per_addr
            .min(args.max_connections),
    );
    config.http.header_timeout = ms("--header-timeout", &args.header_timeout)?;
    config.http.idle_timeout = ms("--idle-timeout", &args.idle_timeout)?;
    config.http.request_timeout = ms("--request-timeout", &args.request_timeout)?;
    config.http.check().map_err(|e| {
        let message = e
            .message
            .replace("max_connections (", "--max-connections (");
        anyhow::anyhow!("--{}: {message}", e.setting.replace('_', "-"))
    })?;
    Ok(config)
}

/// Cancels `stop` on SIGINT or SIGTERM.
async fn stop_on_signal(stop: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop.cancel();
}

pub(crate) fn run(args: ServeArgs) -> Result<()> {
    // Logs go to stderr (journald picks them up under systemd); RUST_LOG overrides the level.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let config = config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        if config.tls.is_none()
            && config.tls_self_signed.is_none()
            && !config.listen.ip().is_loopback()
        {
            eprintln!(
                "warning: floe serve listens on {} without TLS: API tokens and directives \
                 cross the network in clear; give --tls-cert and --tls-key, or \
                 --tls-self-signed",
                config.listen
            );
        }
        let server = server::start(config, shutdown.clone()).await?;
        for notice in server.notices() {
            println!("{notice}");
        }
        if server.token_created() {
            // The token itself never goes to stdout: journald would keep it.
            println!(
                "wrote the API token to {} (mode 0600; the CLI on this host reads it there)",
                server.data_dir().join(server::TOKEN_FILE).display()
            );
        }
        for a in server.fabric_addrs() {
            println!("floe serve: fabric on {a}");
        }
        println!(
            "floe serve: listening on {}/api/v1 (data in {})",
            server.url(),
            server.data_dir().display()
        );
        // Up: tell systemd (Type=notify) and keep its watchdog fed while the service answers.
        crate::notify::started(server.service().clone(), shutdown);
        server.wait().await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(extra: &[&str]) -> Result<ServerConfig> {
        let mut argv = vec!["floe", "--data-dir", "/nonexistent/floe-test"];
        argv.extend_from_slice(extra);
        config(Cli::try_parse_from(argv).unwrap().serve)
    }

    #[test]
    fn limit_flags_set_the_rest_limits_and_refuse_what_is_out_of_range() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.http, floe_httpd::Limits::coordinator());
        let c = parse(&[
            "--max-connections",
            "8",
            "--header-timeout",
            "2s",
            "--idle-timeout",
            "1m",
            "--request-timeout",
            "90s",
        ])
        .unwrap();
        assert_eq!(c.http.max_connections, 8);
        assert_eq!(c.http.max_connections_per_addr, 8);
        assert_eq!(c.http.header_timeout, std::time::Duration::from_secs(2));
        assert_eq!(c.http.idle_timeout, std::time::Duration::from_secs(60));
        assert_eq!(c.http.request_timeout, std::time::Duration::from_secs(90));
        let e = parse(&["--max-connections", "0"]).unwrap_err().to_string();
        assert!(
            e.contains("--max-connections") && e.contains("1 to 65536"),
            "{e}"
        );
        let c = parse(&["--max-connections-per-addr", "16"]).unwrap();
        assert_eq!(c.http.max_connections_per_addr, 16);
        for bad in [
            &["--max-connections-per-addr", "0"][..],
            &["--max-connections", "8", "--max-connections-per-addr", "9"],
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("--max-connections-per-addr") && e.contains("1 to --max-connections ("),
                "{e}"
            );
        }
        let e = parse(&["--header-timeout", "0s"]).unwrap_err().to_string();
        assert!(e.contains("--header-timeout"), "{e}");
        let e = parse(&["--idle-timeout", "2h"]).unwrap_err().to_string();
        assert!(e.contains("--idle-timeout") && e.contains("3600s"), "{e}");
        let e = format!("{:#}", parse(&["--request-timeout", "soon"]).unwrap_err());
        assert!(e.contains("--request-timeout"), "{e}");
    }

    #[test]
    fn event_flags_set_the_ring_and_the_attempts_and_refuse_what_is_out_of_range() {
        let c = parse(&[]).unwrap();
        assert_eq!((c.event_ring, c.hook_attempts), (10_000, 6));
        let c = parse(&["--event-ring", "50", "--hook-max-attempts", "2"]).unwrap();
        assert_eq!((c.event_ring, c.hook_attempts), (50, 2));
        assert_eq!(c.hook_ca, None);
        let c = parse(&["--hook-ca", "/etc/floe/hooks-ca.pem"]).unwrap();
        assert_eq!(
            c.hook_ca.as_deref(),
            Some(std::path::Path::new("/etc/floe/hooks-ca.pem"))
        );
        let argv = |extra: &[&'static str]| {
            let mut v = vec!["floe", "--data-dir", "/nonexistent/floe-test"];
            v.extend_from_slice(extra);
            v
        };
        for bad in [
            ["--event-ring", "0"],
            ["--event-ring", "2000000"],
            ["--hook-max-attempts", "0"],
            ["--hook-max-attempts", "21"],
        ] {
            let e = Cli::try_parse_from(argv(&bad)).unwrap_err().to_string();
            assert!(e.contains(bad[0]), "{e}");
        }
    }

    fn c_default_failures() -> floe_coordinator::api::ratelimit::RateLimit {
        parse(&[]).unwrap().api.auth_failures
    }

    #[test]
    fn rate_and_tls_flags_set_the_api_options_and_refuse_what_is_out_of_range() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            c.api.rate,
            floe_coordinator::api::ratelimit::RateLimit::default()
        );
        assert!(c.tls.is_none());
        let c = parse(&[
            "--rate-limit",
            "5",
            "--rate-burst",
            "10",
            "--tls-cert",
            "/c.pem",
            "--tls-key",
            "/k.pem",
        ])
        .unwrap();
        assert_eq!((c.api.rate.per_sec, c.api.rate.burst), (5, 10));
        let tls = c.tls.unwrap();
        assert_eq!((tls.cert, tls.key), ("/c.pem".into(), "/k.pem".into()));
        let e = parse(&["--rate-burst", "0"]).unwrap_err().to_string();
        assert!(e.contains("--rate-burst"), "{e}");
        // Rate 0 is "unlimited": the burst does not matter then.
        assert!(parse(&["--rate-limit", "0", "--rate-burst", "0"]).is_ok());
        // Failed authentications per address: the default, set, and refused when out of range.
        assert_eq!(
            c_default_failures(),
            floe_coordinator::api::ratelimit::DEFAULT_AUTH_FAILURES
        );
        let c = parse(&["--auth-fail-limit", "2", "--auth-fail-burst", "7"]).unwrap();
        assert_eq!(
            (c.api.auth_failures.per_sec, c.api.auth_failures.burst),
            (2, 7)
        );
        let e = parse(&["--auth-fail-burst", "0"]).unwrap_err().to_string();
        assert!(e.contains("--auth-fail-burst"), "{e}");
        // A certificate needs its key.
        let mut argv = vec!["floe", "--data-dir", "/nonexistent/floe-test"];
        argv.extend_from_slice(&["--tls-cert", "/c.pem"]);
        assert!(Cli::try_parse_from(argv).is_err());
    }
}
