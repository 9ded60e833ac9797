//! Starting the demo's fleet: the embedded broker, the coordinator as a child with its own
//! data directory, then each device (identity first, since the id is the public key; then its
//! allowlist entry; then the `floed` process), and waiting until every device is online at the
//! coordinator. Kept apart from the scenario in the parent so the scenario reads as what an
//! operator does.

use super::{
    ChildGuard, Client, DemoArgs, DemoDevice, DemoPlan, DeviceFilter, DeviceInput, REGIONS,
    TOKEN_FILE, TYPES, api, copy_trust, device_config, fabric_bootstrap, floed_path, free_port,
    wait_for,
};
use anyhow::{Context, Result};
use floe_broker::EmbeddedBroker;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Everything [`start`] started; dropping it stops the children (daemons, then the
/// coordinator) and then the broker.
pub(super) struct Fleet {
    /// The embedded MQTT broker the flows alert to.
    pub(super) broker: EmbeddedBroker,
    /// The coordinator.
    pub(super) server: ChildGuard,
    /// The device agents.
    pub(super) daemons: Vec<ChildGuard>,
    /// A client with the coordinator's token.
    pub(super) client: Client,
    /// Where everything is.
    pub(super) plan: DemoPlan,
}

/// Starts the broker, the coordinator and every device, and waits until all are online.
pub(super) fn start(args: &DemoArgs, root: &Path) -> Result<Fleet> {
    let floed = floed_path()?;
    let floe = std::env::current_exe().context("locating the floe binary")?;
    let broker = EmbeddedBroker::start().context("starting the embedded MQTT broker")?;
    let server_listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let server_data = root.join("coordinator");
    std::fs::create_dir_all(&server_data)?;
    outln!(
        "floe demo: {} devices, {} with {} soaks, broker {}, coordinator http://{server_listen}",
        args.devices,
        args.strategy,
        args.soak,
        broker.url()
    );

    // The coordinator.
    let mut cmd = Command::new(&floe);
    cmd.arg("serve")
        .arg("--listen")
        .arg(server_listen.to_string())
        .arg("--data-dir")
        .arg(&server_data)
        // Loopback only, a free port, no LAN discovery: the demo stays on this machine.
        .args(["--fabric-listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--offline-after", "5s", "--republish", "1s"])
        // The demo's devices start empty (nothing to roll back to): the checklist is
        // recorded and shown, not enforced.
        .args(["--preflight", "warn"])
        .env("RUST_LOG", "warn");
    let mut server = ChildGuard::spawn("floe serve", cmd, &root.join("coordinator.log"))?;
    tracing::info!(pid = server.id(), "started floe serve");
    let anon = Client::new(&format!("http://{server_listen}"), None)?;
    wait_for(
        "the coordinator's /healthz",
        Duration::from_secs(20),
        &mut [&mut server],
        || anon.healthz().ok(),
    )?;
    let token_path = server_data.join(TOKEN_FILE);
    let token = wait_for(
        "the coordinator's token file",
        Duration::from_secs(5),
        &mut [&mut server],
        || {
            std::fs::read_to_string(&token_path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        },
    )?;
    let client = Client::new(&format!("http://{server_listen}"), Some(token))?;
    let bootstrap = fabric_bootstrap(&server_data, Duration::from_secs(10))?;
    let trust = server_data.join("trust");

    // The devices: identity first (the id is the public key), then the allowlist entry, then
    // the process.
    let mut plan = DemoPlan {
        root: root.to_path_buf(),
        server_listen,
        server_data: server_data.clone(),
        broker_url: broker.url(),
        bootstrap,
        devices: Vec::new(),
        strategy: args.strategy.clone(),
        soak: args.soak.clone(),
    };
    for i in 0..args.devices as usize {
        let data_dir = root.join("devices").join(format!("dev-{i:02}"));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let key = floe_wire::identity::load_or_generate(&data_dir)
            .with_context(|| format!("creating the identity of device {i}"))?;
        copy_trust(&trust, &data_dir.join("trust"))?;
        let dev = DemoDevice {
            id: floe_wire::identity::device_id(&key),
            config: data_dir.join("floed.toml"),
            data_dir,
            http_port: free_port()?,
            device_type: TYPES[i % TYPES.len()].to_string(),
            region: REGIONS[i % REGIONS.len()].to_string(),
        };
        std::fs::write(&dev.config, device_config(&dev, &plan))
            .with_context(|| format!("writing {}", dev.config.display()))?;
        let allow = DeviceInput {
            id: dev.id.clone(),
            public_key: dev.id.clone(),
            device_type: Some(dev.device_type.clone()),
            region: Some(dev.region.clone()),
            labels: [("demo".to_string(), "floe".to_string())].into(),
        };
        api(client.allow_device(&allow), "allowlisting a demo device")?;
        plan.devices.push(dev);
    }
    let mut daemons = Vec::with_capacity(plan.devices.len());
    for (i, dev) in plan.devices.iter().enumerate() {
        let mut cmd = Command::new(&floed);
        cmd.arg("daemon")
            .arg("--config")
            .arg(&dev.config)
            .env("RUST_LOG", "warn,floe_flow=error");
        let guard = ChildGuard::spawn(
            &format!("floed dev-{i:02}"),
            cmd,
            &dev.data_dir.join("floed.log"),
        )?;
        tracing::info!(pid = guard.id(), device = %dev.id, "started floed");
        daemons.push(guard);
    }
    let want = plan.devices.len();
    {
        let mut guards: Vec<&mut ChildGuard> = daemons.iter_mut().collect();
        guards.push(&mut server);
        let mut last = usize::MAX;
        wait_for(
            "every device online at the coordinator",
            Duration::from_secs(30),
            &mut guards,
            || {
                let filter = DeviceFilter {
                    labels: vec!["demo=floe".into()],
                    online: Some(true),
                    ..DeviceFilter::default()
                };
                let n = client
                    .devices(&filter, None)
                    .all()
                    .map(|l| l.len())
                    .unwrap_or(0);
                if n != last {
                    outln!("devices online: {n}/{want}");
                    last = n;
                }
                (n >= want).then_some(())
            },
        )?;
    }

    Ok(Fleet {
        broker,
        server,
        daemons,
        client,
        plan,
    })
}
