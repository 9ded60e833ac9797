//! The `[http]` table of `floed.toml`: the limits of floed's local `/health` and `/metrics`
//! listener (`http_listen`). Every key is optional; the defaults are
//! [`floe_httpd::Limits::device`] (16 connections, 8 per client address, a 5 s header
//! timeout, a 10 s idle timeout, a 5 s request timeout), sized for a monitoring agent or two
//! scraping a small device. A site that scrapes from many hosts, or through a proxy that
//! keeps connections open, raises them here.
//!
//! This module reads nothing from the rest of the configuration: it checks its own table and
//! names the key at fault; `config.rs` turns that into a `ConfigError`.

use std::time::Duration;

use floe_httpd::Limits;
use serde::Deserialize;

/// The most connections `http.max_connections` allows on a device (the server itself takes up
/// to 65 536; a device's descriptors and memory are not the coordinator's).
pub const MAX_DEVICE_CONNECTIONS: usize = 1024;
/// The longest `http.*_timeout_ms` (one minute: a health scrape that needs longer is stuck).
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// `[http]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    max_connections: Option<u64>,
    max_connections_per_addr: Option<u64>,
    header_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
}

/// A key of `[http]` out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyError {
    /// The dotted key (`http.max_connections`).
    pub(crate) key: &'static str,
    /// What is wrong, with the limit.
    pub(crate) message: String,
}

fn err(key: &'static str, message: String) -> KeyError {
    KeyError { key, message }
}

/// A count from 1 to `max`, or `default`.
fn count(key: &'static str, v: Option<u64>, default: usize, max: usize) -> Result<usize, KeyError> {
    match v {
        None => Ok(default),
        Some(0) => Err(err(key, "must be at least 1".into())),
        Some(n) => match usize::try_from(n) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(err(key, format!("{n} is above the limit of {max}"))),
        },
    }
}

/// Milliseconds from 1 to [`MAX_TIMEOUT_MS`], or `default`.
fn millis(key: &'static str, v: Option<u64>, default: Duration) -> Result<Duration, KeyError> {
    match v {
        None => Ok(default),
        Some(0) => Err(err(key, "must be greater than 0".into())),
        Some(ms) if ms > MAX_TIMEOUT_MS => Err(err(
            key,
            format!("{ms} is above the limit of {MAX_TIMEOUT_MS} (one minute)"),
        )),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

/// The listener's limits from `[http]`, checked.
pub(crate) fn limits(raw: RawHttp) -> Result<Limits, KeyError> {
    let d = Limits::device();
    let max_connections = count(
        "http.max_connections",
        raw.max_connections,
        d.max_connections,
        MAX_DEVICE_CONNECTIONS,
    )?;
    // Unset, the per-address cap follows a lowered max_connections rather than exceed it.
    let per_addr_default = d.max_connections_per_addr.min(max_connections);
    let max_connections_per_addr = match raw.max_connections_per_addr {
        Some(n) if n > max_connections as u64 => {
            return Err(err(
                "http.max_connections_per_addr",
                format!("{n} is above http.max_connections ({max_connections})"),
            ));
        }
        v => count(
            "http.max_connections_per_addr",
            v,
            per_addr_default,
            max_connections,
        )?,
    };
    let limits = Limits {
        max_connections,
        max_connections_per_addr,
        header_timeout: millis(
            "http.header_timeout_ms",
            raw.header_timeout_ms,
            d.header_timeout,
        )?,
        idle_timeout: millis("http.idle_timeout_ms", raw.idle_timeout_ms, d.idle_timeout)?,
        request_timeout: millis(
            "http.request_timeout_ms",
            raw.request_timeout_ms,
            d.request_timeout,
        )?,
        ..d
    };
    // The server's own check (a backstop: the bounds above are narrower).
    limits
        .check()
        .map_err(|e| err("http", format!("{}: {}", e.setting, e.message)))?;
    Ok(limits)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(text: &str) -> Result<Limits, KeyError> {
        limits(toml::from_str(text).unwrap())
    }

    #[test]
    fn an_empty_table_gives_the_device_defaults_and_keys_set_them() {
        assert_eq!(parse("").unwrap(), Limits::device());
        let l = parse(
            "max_connections = 64\nmax_connections_per_addr = 4\nheader_timeout_ms = 2000\n\
             idle_timeout_ms = 30000\nrequest_timeout_ms = 9000",
        )
        .unwrap();
        assert_eq!(l.max_connections, 64);
        assert_eq!(l.max_connections_per_addr, 4);
        assert_eq!(l.header_timeout, Duration::from_secs(2));
        assert_eq!(l.idle_timeout, Duration::from_secs(30));
        assert_eq!(l.request_timeout, Duration::from_secs(9));
        // A lowered cap pulls the unset per-address cap down with it.
        let l = parse("max_connections = 4").unwrap();
        assert_eq!((l.max_connections, l.max_connections_per_addr), (4, 4));
    }

    #[test]
    fn out_of_range_values_name_the_key_and_the_limit() {
        let cases = [
            ("max_connections = 0", "http.max_connections", "at least 1"),
            ("max_connections = 1025", "http.max_connections", "1024"),
            (
                "max_connections = 18446744073709551615",
                "http.max_connections",
                "1024",
            ),
            (
                "max_connections_per_addr = 0",
                "http.max_connections_per_addr",
                "at least 1",
            ),
            (
                "max_connections_per_addr = 17",
                "http.max_connections_per_addr",
                "http.max_connections (16)",
            ),
            (
                "header_timeout_ms = 0",
                "http.header_timeout_ms",
                "greater than 0",
            ),
            ("idle_timeout_ms = 60001", "http.idle_timeout_ms", "60000"),
            (
                "request_timeout_ms = 99999999",
                "http.request_timeout_ms",
                "60000",
            ),
        ];
        for (text, key, limit) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key, key, "{text}");
            assert!(e.message.contains(limit), "{text}: {}", e.message);
        }
        assert!(toml::from_str::<RawHttp>("max_conections = 3").is_err());
    }

    #[test]
    fn the_shipped_floed_toml_documents_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/floed.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let table = text.split("\n[http]\n").nth(1).expect("an [http] table");
        let table = table.split("\n[").next().unwrap();
        let uncommented: String = table
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(uncommented.lines().count(), 5, "{uncommented}");
        assert_eq!(parse(&uncommented).unwrap(), Limits::device());
    }
}
