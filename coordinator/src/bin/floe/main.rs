//! `floe`, the coordinator server and the operator's CLI.

// `out!` and `outln!`: stdout that survives a closed pipe (floe_wire::stdout).
#[macro_use]
extern crate floe_wire;

mod artifact;
mod audit;
mod config;
mod demo;
mod deploy;
mod deploy_ops;
mod device;
mod device_canary;
mod flow;
mod gates_view;
mod health;
mod hooks;
mod incident;
mod join;
mod keys;
mod loadtest;
mod notify;
mod nudge;
mod plan_view;
mod vars;
mod watch;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod serve;
mod sim;
mod system;
mod token;

#[derive(Debug, Parser)]
#[command(name = "floe", version, about = "The Floe coordinator and CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate keys and device trust stores.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Build and inspect signed artifact bundles.
    #[command(subcommand)]
    Artifact(artifact::ArtifactCommand),
    /// Simulate a deployment to a virtual fleet and print the report.
    Sim(sim::SimArgs),
    /// Flows on the coordinator: drafts, publishing, versions.
    Flow(flow::FlowArgs),
    /// Deployments: create, start, pause, resume, approve, roll back, watch, report.
    Deploy(deploy::DeployArgs),
    /// Devices in the registry: list, show, flags, enrollment allowlist.
    Device(device::DeviceArgs),
    /// Groups of devices (a label key=value or a device type): values of flow variables.
    Group(vars::GroupArgs),
    /// One-time enrollment tokens for devices.
    EnrollToken(device::EnrollTokenArgs),
    /// Named API tokens with a role: create, list, revoke, whoami.
    Token(token::TokenArgs),
    /// The coordinator's audit log.
    Audit(audit::AuditArgs),
    /// Webhooks: signed POSTs of live events (deployment status, gates, devices offline …).
    Hook(hooks::HookArgs),
    /// A coordinator, N floed devices and a broker on loopback: deploy, then roll back a
    /// broken version.
    Demo(demo::DemoArgs),
    /// Simulated devices with real keys against a running coordinator: reports, directives,
    /// latency.
    Loadtest(loadtest::LoadtestArgs),
    /// Run the coordinator: REST API, SQLite state, rollout engines.
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Keys(command) => keys::run(command),
        Command::Artifact(command) => artifact::run(command),
        Command::Sim(args) => sim::run(args).map(|()| ExitCode::SUCCESS),
        Command::Flow(args) => flow::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Device(args) => device::run(args),
        Command::Group(args) => vars::run_group(args),
        Command::EnrollToken(args) => device::run_enroll_token(args),
        Command::Token(args) => token::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Hook(args) => hooks::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Loadtest(args) => loadtest::run(args).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
    }
}
