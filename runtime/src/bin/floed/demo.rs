//! `floed demo [--duration 20s]`: the temperature-alert example end to end, with nothing to
//! install. It starts an embedded MQTT broker on a loopback port, runs
//! `examples/temperature-alert.json` with a simulated DHT22 sampled every 500 ms, watches the
//! broker with its own MQTT client and prints every message the flow publishes, then stops the
//! flow cleanly and prints a summary.

use crate::run::{compile, init_tracing, log_metrics, parse_duration, shutdown_signal};
use anyhow::{Context, Result, bail};
use floe_broker::EmbeddedBroker;
use floe_flow::engine::{Engine, EngineOptions};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the demo's simulated sensor is read.
const DEMO_INTERVAL_MS: u64 = 500;

const EXAMPLE: &str = include_str!("../../../../examples/temperature-alert.json");

/// Arguments of `floed demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How long to run before stopping.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
}

pub(crate) fn run(args: DemoArgs) -> Result<ExitCode> {
    // The embedded broker logs every client connection; a demo does not need that.
    init_tracing("warn,rumqttd=off");
    let broker = EmbeddedBroker::start().context("starting the embedded MQTT broker")?;
    let url = broker.url();
    let vars = vec![
        ("simulate".to_string(), "true".to_string()),
        ("interval".to_string(), format!("{DEMO_INTERVAL_MS}ms")),
        ("broker".to_string(), url.clone()),
    ];
    // A simulated sensor has no hardware sampling limit, so the demo reads it every 500 ms and
    // shows alerts within seconds.
    let flow = compile(EXAMPLE.as_bytes(), &vars, "examples/temperature-alert.json")?;
    outln!(
        "floed demo: broker {url}, flow temperature-alert (simulated DHT22 every 500 ms, alert above 30 °C), {:?}",
        args.duration
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    rt.block_on(async move {
        // Watch the broker before the flow starts, so that no alert is missed.
        let mut opts = MqttOptions::new("floe-demo-watch", "127.0.0.1", broker.addr().port());
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(opts, 16);
        client.subscribe("#", QoS::AtLeastOnce).await.context("subscribing")?;
        let subscribed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match subscribed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("watching the embedded broker: {e}"),
            Err(_) => bail!("the embedded broker did not confirm the subscription within 5 s"),
        }
        let seen = Arc::new(AtomicU64::new(0));
        let seen_w = seen.clone();
        let watcher = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        seen_w.fetch_add(1, Ordering::Relaxed);
                        outln!("{} {}", p.topic, String::from_utf8_lossy(&p.payload));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "demo watcher lost the broker");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });

        let started = Instant::now();
        let running = Engine::start(flow, EngineOptions::default()).context("starting the flow")?;
        tokio::select! {
            _ = tokio::time::sleep(args.duration) => {}
            r = shutdown_signal() => { r?; }
        }
        let report = running.stop(Duration::from_secs(5)).await;
        let ran = started.elapsed();
        // Give the watcher a moment to print what the broker is still forwarding.
        let published = report.metrics.node("n3").map(|n| n.msgs_out).unwrap_or(0);
        let until = Instant::now() + Duration::from_secs(2);
        while seen.load(Ordering::Relaxed) < published && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        watcher.abort();
        let readings = report.metrics.node("n1").map(|n| n.msgs_out).unwrap_or(0);
        let received = seen.load(Ordering::Relaxed);
        log_metrics(&report.metrics);
        outln!(
            "demo summary: {readings} readings, {published} alerts published, {received} received from the broker in {:.1}s; stop {}",
            ran.as_secs_f64(),
            if report.drained { "clean (drained)" } else { "forced (deadline passed)" }
        );
        Ok(if report.drained && received >= published { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}
