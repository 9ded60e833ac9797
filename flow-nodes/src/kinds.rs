//! The node kinds Floe knows and the shape of each kind's `config`, as data.
//!
//! NODES.md is the human contract; this module is the same contract in a form code can walk.
//! The validator checks definitions against it, and the engine can use the same helpers
//! ([`parse_duration_ms`], [`compile_regex`], [`check_property_path`] …) so that what the
//! validator accepts and what the engine runs can never drift apart.

use serde_json::Value;

/// The longest regular expression a `switch` rule may carry, in bytes.
pub const MAX_REGEX_LEN: usize = 1024;
/// The compiled-size limit handed to regex-lite, so a short pattern cannot expand into a huge
/// automaton (`a{1000}{1000}`).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// How deeply groups and repetitions may nest in a pattern.
pub const REGEX_NEST_LIMIT: u32 = 32;
/// The longest duration any field accepts: 30 days, in milliseconds. Longer values are almost
/// certainly a unit mistake, and the cap keeps every duration far from integer overflow.
pub const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;
/// The longest property path, in bytes.
pub const MAX_PATH_LEN: usize = 256;
/// The longest MQTT topic, in bytes (the MQTT protocol's own limit).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The description of one node kind.
#[derive(Debug)]
pub struct KindSpec {
    /// The kind's name as written in a node's `type`.
    pub name: &'static str,
    /// Sources have no input port; every other kind has exactly one (port 0).
    pub source: bool,
    /// How many output ports the kind has.
    pub outputs: Outputs,
    /// Every config field the kind accepts; any other field is an error.
    pub fields: &'static [FieldSpec],
}

impl KindSpec {
    /// The number of input ports (0 for sources, 1 otherwise).
    pub fn inputs(&self) -> u32 {
        if self.source { 0 } else { 1 }
    }

    /// The spec of one config field, if the kind has it.
    pub fn field(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// How many output ports a kind has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outputs {
    /// A sink (`debug`, `mqtt_out`): no output.
    None,
    /// One output, port 0.
    One,
    /// One output per entry of `config.rules` (`switch`).
    PerRule,
}

/// One config field of a kind.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// The field's name in `config`.
    pub name: &'static str,
    /// What values it accepts.
    pub ty: FieldType,
    /// What happens when it is absent.
    pub default: FieldDefault,
}

/// The values a config field accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldType {
    /// Any JSON value.
    Any,
    /// Any string.
    String,
    /// A dotted message property path (`payload.temperature`).
    PropertyPath,
    /// A file system path: a non-empty string without NUL bytes.
    FilePath,
    /// `true` or `false`.
    Bool,
    /// A duration (see [`parse_duration_ms`]) of at least `min_ms`; compiled to milliseconds.
    Duration {
        /// The smallest accepted value in milliseconds.
        min_ms: u64,
    },
    /// An integer in `min..=max`.
    Integer {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// Any finite number.
    Number,
    /// A finite number greater than zero.
    PositiveNumber,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    BrokerUrl,
    /// An MQTT topic to publish to: no wildcards, may be empty.
    TopicName,
    /// An MQTT topic filter to subscribe to: `+` and `#` allowed where MQTT allows them.
    TopicFilter,
    /// The `switch` rule list.
    SwitchRules,
    /// The `change` rule list.
    ChangeRules,
}

/// What a config field is when it is absent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldDefault {
    /// Must be present for a flow to pass complete validation.
    Required,
    /// May be absent; it then stays absent in the compiled config and the engine applies the
    /// documented behaviour (for example `inject.payload`: the current time).
    Optional,
    /// A string default.
    Str(&'static str),
    /// A boolean default.
    Bool(bool),
    /// An integer default.
    Int(i64),
    /// A number default.
    Number(f64),
    /// A duration default, in milliseconds (NODES.md writes it with a unit).
    DurationMs(u64),
    /// `"floe-<node id>"`.
    ClientId,
}

impl FieldDefault {
    /// The default as the JSON value compiled config carries, `None` when there is none.
    pub fn value(&self, node_id: &str) -> Option<Value> {
        match *self {
            FieldDefault::Required | FieldDefault::Optional => None,
            FieldDefault::Str(s) => Some(Value::from(s)),
            FieldDefault::Bool(b) => Some(Value::from(b)),
            FieldDefault::Int(i) => Some(Value::from(i)),
            FieldDefault::Number(n) => Some(Value::from(n)),
            FieldDefault::DurationMs(ms) => Some(Value::from(ms)),
            FieldDefault::ClientId => Some(Value::from(format!("floe-{node_id}"))),
        }
    }
}

/// The operators of a `switch` rule.
pub const SWITCH_OPS: &[&str] = &[
    "eq", "neq", "lt", "lte", "gt", "gte", "between", "contains", "regex", "true", "false", "null",
    "not_null", "type_is", "else",
];
/// The type names a `type_is` rule accepts.
pub const TYPE_NAMES: &[&str] = &["number", "string", "boolean", "object", "array", "null"];
/// The actions of a `change` rule.
pub const CHANGE_ACTIONS: &[&str] = &["set", "change", "delete", "move"];
/// The `value_type`s of a `change` rule's `set` action.
pub const VALUE_TYPES: &[&str] = &["literal", "variable", "property", "json"];

const MQTT_COMMON_TAIL: [FieldSpec; 6] = [
    FieldSpec {
        name: "client_id",
        ty: FieldType::String,
        default: FieldDefault::ClientId,
    },
    FieldSpec {
        name: "username",
        ty: FieldType::String,
        default: FieldDefault::Optional,
    },
    FieldSpec {
        name: "password",
        ty: FieldType::String,
        default: FieldDefault::Optional,
    },
    FieldSpec {
        name: "ca_file",
        ty: FieldType::FilePath,
        default: FieldDefault::Optional,
    },
    FieldSpec {
        name: "keep_alive",
        ty: FieldType::Duration { min_ms: 1000 },
        default: FieldDefault::DurationMs(30_000),
    },
    FieldSpec {
        name: "qos",
        ty: FieldType::Integer { min: 0, max: 2 },
        default: FieldDefault::Int(0),
    },
];

/// Every node kind, in the order NODES.md lists them.
pub const KINDS: &[KindSpec] = &[
    KindSpec {
        name: "inject",
        source: true,
        outputs: Outputs::One,
        fields: &[
            FieldSpec {
                name: "payload",
                ty: FieldType::Any,
                default: FieldDefault::Optional,
            },
            FieldSpec {
                name: "topic",
                ty: FieldType::String,
                default: FieldDefault::Str(""),
            },
            FieldSpec {
                name: "once",
                ty: FieldType::Bool,
                default: FieldDefault::Bool(true),
            },
            FieldSpec {
                name: "once_delay",
                ty: FieldType::Duration { min_ms: 0 },
                default: FieldDefault::DurationMs(0),
            },
            FieldSpec {
                name: "interval",
                ty: FieldType::Duration { min_ms: 10 },
                default: FieldDefault::Optional,
            },
        ],
    },
    KindSpec {
        name: "dht",
        source: true,
        outputs: Outputs::One,
        fields: &[
            FieldSpec {
                name: "model",
                ty: FieldType::Enum(&["dht11", "dht22"]),
                default: FieldDefault::Str("dht22"),
            },
            FieldSpec {
                name: "device",
                ty: FieldType::FilePath,
                default: FieldDefault::Str("/sys/bus/iio/devices/iio:device0"),
            },
            // The per-model minimum of real hardware (1 s for dht11, 2 s for dht22) is checked
            // by the validator once the model and `simulate` are known; a simulated sensor has
            // only the engine's floor of 10 ms.
            FieldSpec {
                name: "interval",
                ty: FieldType::Duration { min_ms: 10 },
                default: FieldDefault::DurationMs(2000),
            },
            FieldSpec {
                name: "retries",
                ty: FieldType::Integer { min: 0, max: 10 },
                default: FieldDefault::Int(3),
            },
            FieldSpec {
                name: "topic",
                ty: FieldType::String,
                default: FieldDefault::Str("dht"),
            },
            FieldSpec {
                name: "simulate",
                ty: FieldType::Bool,
                default: FieldDefault::Bool(false),
            },
        ],
    },
    KindSpec {
        name: "sensor",
        source: true,
        outputs: Outputs::One,
        fields: &[
            FieldSpec {
                name: "path",
                ty: FieldType::FilePath,
                default: FieldDefault::Required,
            },
            FieldSpec {
                name: "scale",
                ty: FieldType::Number,
                default: FieldDefault::Number(1.0),
            },
            FieldSpec {
                name: "offset",
                ty: FieldType::Number,
                default: FieldDefault::Number(0.0),
            },
            FieldSpec {
                name: "interval",
                ty: FieldType::Duration { min_ms: 10 },
                default: FieldDefault::DurationMs(1000),
            },
            FieldSpec {
                name: "topic",
                ty: FieldType::String,
                default: FieldDefault::Str("sensor"),
            },
        ],
    },
    KindSpec {
        name: "switch",
        source: false,
        outputs: Outputs::PerRule,
        fields: &[
            FieldSpec {
                name: "property",
                ty: FieldType::PropertyPath,
                default: FieldDefault::Str("payload"),
            },
            FieldSpec {
                name: "rules",
                ty: FieldType::SwitchRules,
                default: FieldDefault::Required,
            },
            FieldSpec {
                name: "check_all",
                ty: FieldType::Bool,
                default: FieldDefault::Bool(false),
            },
        ],
    },
    KindSpec {
        name: "change",
        source: false,
        outputs: Outputs::One,
        fields: &[FieldSpec {
            name: "rules",
            ty: FieldType::ChangeRules,
            default: FieldDefault::Required,
        }],
    },
    KindSpec {
        name: "delay",
        source: false,
        outputs: Outputs::One,
        fields: &[
            FieldSpec {
                name: "mode",
                ty: FieldType::Enum(&["delay", "rate"]),
                default: FieldDefault::Str("delay"),
            },
            FieldSpec {
                name: "delay",
                ty: FieldType::Duration { min_ms: 0 },
                default: FieldDefault::DurationMs(1000),
            },
            FieldSpec {
                name: "rate",
                ty: FieldType::PositiveNumber,
                default: FieldDefault::Int(1),
            },
            FieldSpec {
                name: "period",
                ty: FieldType::Duration { min_ms: 1 },
                default: FieldDefault::DurationMs(1000),
            },
            FieldSpec {
                name: "queue",
                ty: FieldType::Integer {
                    min: 1,
                    max: 100_000,
                },
                default: FieldDefault::Int(100),
            },
            FieldSpec {
                name: "drop",
                ty: FieldType::Bool,
                default: FieldDefault::Bool(false),
            },
        ],
    },
    KindSpec {
        name: "debug",
        source: false,
        outputs: Outputs::None,
        fields: &[
            FieldSpec {
                name: "level",
                ty: FieldType::Enum(&["debug", "info", "warn"]),
                default: FieldDefault::Str("info"),
            },
            FieldSpec {
                name: "property",
                ty: FieldType::PropertyPath,
                default: FieldDefault::Str("payload"),
            },
            FieldSpec {
                name: "active",
                ty: FieldType::Bool,
                default: FieldDefault::Bool(true),
            },
        ],
    },
    KindSpec {
        name: "mqtt_out",
        source: false,
        outputs: Outputs::None,
        fields: &[
            FieldSpec {
                name: "broker",
                ty: FieldType::BrokerUrl,
                default: FieldDefault::Required,
            },
            FieldSpec {
                name: "topic",
                ty: FieldType::TopicName,
                default: FieldDefault::Str(""),
            },
            MQTT_COMMON_TAIL[5],
            FieldSpec {
                name: "retain",
                ty: FieldType::Bool,
                default: FieldDefault::Bool(false),
            },
            MQTT_COMMON_TAIL[0],
            MQTT_COMMON_TAIL[1],
            MQTT_COMMON_TAIL[2],
            MQTT_COMMON_TAIL[3],
            MQTT_COMMON_TAIL[4],
            FieldSpec {
                name: "buffer",
                ty: FieldType::Integer {
                    min: 1,
                    max: 100_000,
                },
                default: FieldDefault::Int(1000),
            },
        ],
    },
    KindSpec {
        name: "mqtt_in",
        source: true,
        outputs: Outputs::One,
        fields: &[
            FieldSpec {
                name: "broker",
                ty: FieldType::BrokerUrl,
                default: FieldDefault::Required,
            },
            FieldSpec {
                name: "topic",
                ty: FieldType::TopicFilter,
                default: FieldDefault::Required,
            },
            MQTT_COMMON_TAIL[5],
            MQTT_COMMON_TAIL[0],
            MQTT_COMMON_TAIL[1],
            MQTT_COMMON_TAIL[2],
            MQTT_COMMON_TAIL[3],
            MQTT_COMMON_TAIL[4],
        ],
    },
];

/// Test-only kinds (NODES.md, "Test-only kinds"): present only with the `fault-nodes` feature,
/// so a release build's validator refuses them as unknown types.
/// The `fault` kind's description for the validator (see NODES.md, "Test-only kinds"); the
/// kind itself runs in `nodes::fault`.
#[cfg(feature = "fault-nodes")]
const FAULT_SPEC: KindSpec = KindSpec {
    name: "fault",
    source: false,
    outputs: Outputs::One,
    fields: &[
        FieldSpec {
            name: "mode",
            ty: FieldType::Enum(FAULT_MODES),
            default: FieldDefault::Required,
        },
        FieldSpec {
            name: "after",
            ty: FieldType::Duration { min_ms: 0 },
            default: FieldDefault::DurationMs(0),
        },
        FieldSpec {
            name: "rate",
            ty: FieldType::Number,
            default: FieldDefault::Number(0.5),
        },
        // `error_ramp`: how long the error rate takes to climb from 0 to `rate`.
        FieldSpec {
            name: "ramp",
            ty: FieldType::Duration { min_ms: 0 },
            default: FieldDefault::DurationMs(0),
        },
    ],
};

/// The behaviours a fault node can pick.
#[cfg(feature = "fault-nodes")]
const FAULT_MODES: &[&str] = &[
    "panic_after",
    "hang_after",
    "error_rate",
    "error_ramp",
    "fail_start_live",
];

#[cfg(feature = "fault-nodes")]
const TEST_KINDS: &[KindSpec] = &[FAULT_SPEC];
#[cfg(not(feature = "fault-nodes"))]
const TEST_KINDS: &[KindSpec] = &[];

/// The spec of a node kind by its `type` name.
pub fn lookup(kind: &str) -> Option<&'static KindSpec> {
    KINDS.iter().chain(TEST_KINDS).find(|k| k.name == kind)
}

/// The names of every kind, for messages.
pub fn kind_names() -> Vec<&'static str> {
    KINDS.iter().chain(TEST_KINDS).map(|k| k.name).collect()
}

/// Parses a duration into milliseconds.
///
/// Accepted forms: a JSON number of seconds (`5`, `0.25`), a string holding one (`"5"`), or a
/// string with a unit: `"250ms"`, `"5s"`, `"5m"`, `"1h"` (decimals allowed: `"1.5s"`). The
/// result is rounded to the nearest millisecond and must not exceed [`MAX_DURATION_MS`].
pub fn parse_duration_ms(value: &Value) -> Result<u64, String> {
    let (number, factor) = match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) => (f, 1000.0),
            None => return Err("is not a usable number".to_string()),
        },
        Value::String(s) => parse_duration_text(s)?,
        _ => {
            return Err(
                "must be a duration such as \"250ms\", \"5s\", \"5m\", \"1h\" or a number of seconds"
                    .to_string(),
            );
        }
    };
    if !number.is_finite() || number < 0.0 {
        return Err("must not be negative".to_string());
    }
    let ms = (number * factor).round();
    // The comparison happens in f64 so that huge values cannot wrap when converted.
    if ms > MAX_DURATION_MS as f64 {
        return Err(format!(
            "is longer than the maximum of {} days",
            MAX_DURATION_MS / (24 * 3600 * 1000)
        ));
    }
    // The value is finite, non-negative and at most MAX_DURATION_MS, so the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(ms as u64)
}

fn parse_duration_text(s: &str) -> Result<(f64, f64), String> {
    let bad = || {
        format!(
            "`{}` is not a duration; write it as \"250ms\", \"5s\", \"5m\", \"1h\" or a number of seconds",
            truncate(s, 40)
        )
    };
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    // Only plain decimals: no sign, no exponent, at most one dot, digits on both sides of it.
    let well_formed = !num.is_empty()
        && num.split('.').count() <= 2
        && num.split('.').all(|part| !part.is_empty());
    if !well_formed {
        return Err(bad());
    }
    let number: f64 = num.parse().map_err(|_| bad())?;
    let factor = match unit {
        "ms" => 1.0,
        "" | "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(bad()),
    };
    Ok((number, factor))
}

/// Formats milliseconds the way NODES.md writes durations, for messages.
pub fn format_ms(ms: u64) -> String {
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Compiles a `switch` rule's pattern with the caps every Floe component uses: at most
/// [`MAX_REGEX_LEN`] bytes, [`REGEX_SIZE_LIMIT`] compiled, [`REGEX_NEST_LIMIT`] deep.
pub fn compile_regex(pattern: &str) -> Result<regex_lite::Regex, String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!(
            "the pattern is {} bytes, longer than the limit of {MAX_REGEX_LEN}",
            pattern.len()
        ));
    }
    regex_lite::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| format!("invalid regular expression: {}", one_line(&e.to_string())))
}

/// Checks a dotted message property path: non-empty segments, at most [`MAX_PATH_LEN`] bytes.
pub fn check_property_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the property path is empty".to_string());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!(
            "the property path is longer than {MAX_PATH_LEN} bytes"
        ));
    }
    if path.split('.').any(|seg| seg.trim().is_empty()) {
        return Err(format!(
            "`{}` has an empty segment; write paths like `payload.temperature`",
            truncate(path, 60)
        ));
    }
    Ok(())
}

/// Checks a file system path: non-empty and free of NUL bytes.
pub fn check_file_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path is empty".to_string());
    }
    if path.contains('\0') {
        return Err("the path contains a NUL byte".to_string());
    }
    Ok(())
}

/// Checks an MQTT broker address: `mqtt://host[:port]` or `mqtts://host[:port]` (ports default
/// to 1883 and 8883). IPv6 hosts are written in brackets: `mqtt://[::1]:1883`.
pub fn check_broker_url(url: &str) -> Result<(), String> {
    let shown = truncate(url, 60);
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("mqtts://"))
        .ok_or_else(|| format!("`{shown}` must start with mqtt:// or mqtts://"))?;
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{shown}` has an unclosed `[` around its host"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("`{shown}` has text after its host")),
            },
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !host_ok {
        return Err(format!(
            "`{shown}` has no valid host (write mqtt://host:port)"
        ));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => {
                return Err(format!(
                    "`{shown}` has an invalid port `{}`",
                    truncate(port, 10)
                ));
            }
        }
    }
    Ok(())
}

/// Checks a topic to publish to: no `+` or `#`, no NUL, at most [`MAX_TOPIC_LEN`] bytes.
/// Empty is allowed (the node then uses each message's topic).
pub fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.len() > MAX_TOPIC_LEN {
        return Err(format!("the topic is longer than {MAX_TOPIC_LEN} bytes"));
    }
    if topic.contains(['+', '#']) {
        return Err("a topic to publish to may not contain the wildcards + or #".to_string());
    }
    if topic.contains('\0') {
        return Err("the topic contains a NUL byte".to_string());
    }
    Ok(())
}

/// Checks a topic filter to subscribe to: non-empty, `+` only as a whole level, `#` only as the
/// whole last level.
pub fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("the topic filter is empty".to_string());
    }
    if filter.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "the topic filter is longer than {MAX_TOPIC_LEN} bytes"
        ));
    }
    if filter.contains('\0') {
        return Err("the topic filter contains a NUL byte".to_string());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len().saturating_sub(1);
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != last) {
            return Err(format!(
                "`{}`: `#` must be a whole level and the last one",
                truncate(filter, 60)
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!(
                "`{}`: `+` must be a whole level",
                truncate(filter, 60)
            ));
        }
    }
    Ok(())
}

/// Shortens text for messages, on a character boundary.
pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max_chars).collect();
        out.push('…');
        out
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_parse_to_milliseconds() {
        assert_eq!(parse_duration_ms(&json!("250ms")), Ok(250));
        assert_eq!(parse_duration_ms(&json!("5s")), Ok(5000));
        assert_eq!(parse_duration_ms(&json!("5m")), Ok(300_000));
        assert_eq!(parse_duration_ms(&json!("1h")), Ok(3_600_000));
        assert_eq!(parse_duration_ms(&json!("1.5s")), Ok(1500));
        assert_eq!(parse_duration_ms(&json!("2")), Ok(2000));
        assert_eq!(parse_duration_ms(&json!(0.25)), Ok(250));
        assert_eq!(parse_duration_ms(&json!(0)), Ok(0));
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in [
            json!("5 s"),
            json!("5sec"),
            json!("-5s"),
            json!(".5s"),
            json!("1..5s"),
            json!("s"),
            json!(""),
            json!("1e3s"),
            json!(-1),
            json!(true),
            json!("31d"),
            json!("721h"),
            json!(1e300),
        ] {
            assert!(parse_duration_ms(&bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(parse_duration_ms(&json!("720h")), Ok(MAX_DURATION_MS));
    }

    #[test]
    fn regexes_are_capped() {
        assert!(compile_regex("^a+b$").is_ok());
        assert!(compile_regex("(unclosed").is_err());
        assert!(compile_regex(&"a".repeat(MAX_REGEX_LEN + 1)).is_err());
        assert!(compile_regex("a{1000}{1000}").is_err());
    }

    #[test]
    fn broker_urls() {
        for ok in [
            "mqtt://127.0.0.1:1883",
            "mqtts://broker.example",
            "mqtt://[::1]:1883",
        ] {
            assert_eq!(check_broker_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://x:1",
            "mqtt://",
            "mqtt://host:0",
            "mqtt://host:99999",
            "mqtt://a/b",
        ] {
            assert!(check_broker_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topics() {
        for (filter, ok) in [
            ("a/+/c/#", true),
            ("#", true),
            ("a/#/c", false),
            ("a/b+", false),
            ("", false),
        ] {
            assert_eq!(check_topic_filter(filter).is_ok(), ok, "filter {filter:?}");
        }
        for (name, ok) in [("", true), ("a/b", true), ("a/+", false)] {
            assert_eq!(check_topic_name(name).is_ok(), ok, "name {name:?}");
        }
    }

    #[test]
    fn paths() {
        for (path, ok) in [
            ("payload.temperature", true),
            ("payload..x", false),
            ("", false),
        ] {
            assert_eq!(
                check_property_path(path).is_ok(),
                ok,
                "property path {path:?}"
            );
        }
        assert!(check_file_path("/sys/x").is_ok());
        assert!(check_file_path("").is_err());
    }

    #[test]
    fn every_kind_is_found_and_defaults_have_their_field_type() {
        for kind in KINDS {
            assert_eq!(lookup(kind.name).map(|k| k.name), Some(kind.name));
            for field in kind.fields {
                if let FieldDefault::DurationMs(ms) = field.default {
                    assert!(matches!(field.ty, FieldType::Duration { min_ms } if ms >= min_ms));
                }
            }
        }
        assert!(lookup("nope").is_none());
    }
}
