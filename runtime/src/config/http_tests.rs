#![allow(clippy::unwrap_used, clippy::expect_used)] // A test fails loudly on any broken precondition.

//! `[http]` through the whole configuration: the limits reach `Config::http_limits`, and a
//! bad key is a `ConfigError` naming `http.<key>` and its limit.

use super::Config;
use std::path::Path;
use std::time::Duration;

fn parse(extra: &str) -> Result<Config, super::ConfigError> {
    Config::parse(
        &format!("device_type = \"pi\"\narch = \"aarch64\"\n{extra}"),
        Path::new("floed.toml"),
        None,
    )
}

#[test]
fn the_http_table_sets_the_health_endpoint_limits() {
    assert_eq!(parse("").unwrap().http_limits, floe_httpd::Limits::device());
    let c = parse("[http]\nmax_connections = 32\nidle_timeout_ms = 2500\n").unwrap();
    assert_eq!(c.http_limits.max_connections, 32);
    assert_eq!(c.http_limits.max_connections_per_addr, 8);
    assert_eq!(c.http_limits.idle_timeout, Duration::from_millis(2500));
}

#[test]
fn a_bad_http_key_names_the_key_and_the_limit() {
    let e = parse("[http]\nmax_connections = 2000\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "config key `http.max_connections`: 2000 is above the limit of 1024"
    );
    let e = parse("[http]\nmax_connections = 4\nmax_connections_per_addr = 5\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("http.max_connections_per_addr") && e.contains("(4)"),
        "{e}"
    );
    let e = parse("[http]\nheader_timeout = 5\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("header_timeout"), "{e}");
}
