//! Reading the generic JSON value into the definition's shape, one field at a time, so that a
//! wrong field is a named problem and the walk goes on to find the others.

use super::Problems;
use crate::def::{Connection, Flow, Node, VarType, Variable};
use crate::kinds::truncate;
use serde_json::{Map, Value};

/// The longest node id accepted, in bytes.
pub(crate) const MAX_ID_LEN: usize = 256;

/// A node as read, with the parts that were unreadable left out.
#[derive(Debug)]
pub(crate) struct RawNode {
    pub(crate) index: usize,
    pub(crate) id: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) name: String,
    pub(crate) config: Value,
    pub(crate) x: f64,
    pub(crate) y: f64,
}

impl RawNode {
    /// `node <id>`, or `node #<index>` when the id is unusable.
    pub(crate) fn subject(&self) -> String {
        match self.id.as_deref() {
            Some(id) => format!("node {id}"),
            None => format!("node #{}", self.index),
        }
    }
}

/// A connection as read.
#[derive(Debug)]
pub(crate) struct RawConn {
    pub(crate) index: usize,
    pub(crate) source: Option<String>,
    pub(crate) target: Option<String>,
    pub(crate) output: Option<u32>,
    pub(crate) input: Option<u32>,
}

/// A variable as read.
#[derive(Debug)]
pub(crate) struct RawVar {
    pub(crate) index: usize,
    pub(crate) name: Option<String>,
    pub(crate) ty: Option<VarType>,
    pub(crate) value: Option<String>,
    /// Declared `"secret": true`: no value in the document.
    pub(crate) secret: bool,
}

impl RawVar {
    /// `variable <name>`, or `variable #<index>` when the name is unusable.
    pub(crate) fn subject(&self) -> String {
        match self.name.as_deref() {
            Some(name) => format!("variable {name}"),
            None => format!("variable #{}", self.index),
        }
    }
}

/// A whole flow as read.
#[derive(Debug)]
pub(crate) struct RawFlow {
    pub(crate) nodes: Vec<RawNode>,
    pub(crate) connections: Vec<RawConn>,
    pub(crate) variables: Vec<RawVar>,
}

impl RawFlow {
    /// The definition. Only called when no problem was found, so every field is present; an
    /// absent one would be a bug in the reader and shows as an empty value, never a panic.
    pub(crate) fn into_flow(self) -> Flow {
        Flow {
            nodes: self
                .nodes
                .into_iter()
                .map(|n| Node {
                    id: n.id.unwrap_or_default(),
                    kind: n.kind.unwrap_or_default(),
                    name: n.name,
                    config: n.config,
                    x: n.x,
                    y: n.y,
                })
                .collect(),
            connections: self
                .connections
                .into_iter()
                .map(|c| Connection {
                    source: c.source.unwrap_or_default(),
                    target: c.target.unwrap_or_default(),
                    output: c.output,
                    input: c.input,
                })
                .collect(),
            variables: self
                .variables
                .into_iter()
                .map(|v| Variable {
                    name: v.name.unwrap_or_default(),
                    var_type: v.ty.unwrap_or(VarType::String),
                    value: if v.secret {
                        v.value
                    } else {
                        Some(v.value.unwrap_or_default())
                    },
                    secret: v.secret,
                })
                .collect(),
        }
    }
}

/// Reads the document. Only a document that is not an object at all is an input error; every
/// other deviation is a problem.
pub(crate) fn read(value: &Value, problems: &mut Problems) -> Result<RawFlow, String> {
    let Value::Object(top) = value else {
        return Err(format!(
            "the flow document must be a JSON object with `nodes`, `connections` and `variables`, not {}",
            describe(value)
        ));
    };
    unknown_fields(
        top,
        &["nodes", "connections", "variables"],
        "flow",
        "",
        problems,
    );

    let mut flow = RawFlow {
        nodes: Vec::new(),
        connections: Vec::new(),
        variables: Vec::new(),
    };
    for (i, item) in array(top, "nodes", problems).iter().enumerate() {
        flow.nodes.push(read_node(i, item, problems));
    }
    for (i, item) in array(top, "connections", problems).iter().enumerate() {
        flow.connections.push(read_conn(i, item, problems));
    }
    for (i, item) in array(top, "variables", problems).iter().enumerate() {
        flow.variables.push(read_var(i, item, problems));
    }
    Ok(flow)
}

fn array<'a>(top: &'a Map<String, Value>, key: &str, problems: &mut Problems) -> &'a [Value] {
    match top.get(key) {
        None => &[],
        Some(Value::Array(items)) => items,
        Some(other) => {
            problems.push(
                "flow",
                key,
                format!("must be an array, not {}", describe(other)),
            );
            &[]
        }
    }
}

fn read_node(index: usize, item: &Value, problems: &mut Problems) -> RawNode {
    let mut node = RawNode {
        index,
        id: None,
        kind: None,
        name: String::new(),
        config: Value::Object(Map::new()),
        x: 0.0,
        y: 0.0,
    };
    let Value::Object(obj) = item else {
        problems.push(
            node.subject(),
            "",
            format!("must be an object, not {}", describe(item)),
        );
        return node;
    };
    // The id comes first so that every later problem can name the node by it.
    let id = required_string(obj, "id", problems, || format!("node #{index}"));
    node.id = match id {
        Some(id) if id.is_empty() => {
            problems.push(node.subject(), "id", "must not be empty");
            None
        }
        Some(id) if id.len() > MAX_ID_LEN => {
            problems.push(
                node.subject(),
                "id",
                format!("is longer than {MAX_ID_LEN} bytes"),
            );
            None
        }
        other => other,
    };
    let subject = node.subject();
    unknown_fields(
        obj,
        &["id", "type", "name", "config", "x", "y"],
        &subject,
        "",
        problems,
    );
    node.kind = required_string(obj, "type", problems, || subject.clone());
    match obj.get("name") {
        None => {}
        Some(Value::String(s)) => node.name = s.clone(),
        Some(other) => problems.push(
            &*subject,
            "name",
            format!("must be a string, not {}", describe(other)),
        ),
    }
    if let Some(config) = obj.get("config") {
        node.config = config.clone();
    }
    for (key, slot) in [("x", &mut node.x), ("y", &mut node.y)] {
        match obj.get(key) {
            None => {}
            Some(Value::Number(n)) => *slot = n.as_f64().unwrap_or(0.0),
            Some(other) => problems.push(
                &*subject,
                key,
                format!("must be a number, not {}", describe(other)),
            ),
        }
    }
    node
}

fn read_conn(index: usize, item: &Value, problems: &mut Problems) -> RawConn {
    let subject = format!("connection {index}");
    let mut conn = RawConn {
        index,
        source: None,
        target: None,
        output: None,
        input: None,
    };
    let Value::Object(obj) = item else {
        problems.push(
            subject,
            "",
            format!("must be an object, not {}", describe(item)),
        );
        return conn;
    };
    unknown_fields(
        obj,
        &["source", "target", "output", "input"],
        &subject,
        "",
        problems,
    );
    conn.source = required_string(obj, "source", problems, || subject.clone());
    conn.target = required_string(obj, "target", problems, || subject.clone());
    for (key, slot) in [("output", &mut conn.output), ("input", &mut conn.input)] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(port) => *slot = Some(port),
                None => problems.push(
                    &*subject,
                    key,
                    format!("must be a port number (0, 1, 2 …), not {}", describe(v)),
                ),
            },
        }
    }
    conn
}

fn read_var(index: usize, item: &Value, problems: &mut Problems) -> RawVar {
    let mut var = RawVar {
        index,
        name: None,
        ty: None,
        value: None,
        secret: false,
    };
    let Value::Object(obj) = item else {
        problems.push(
            var.subject(),
            "",
            format!("must be an object, not {}", describe(item)),
        );
        return var;
    };
    var.name = required_string(obj, "name", problems, || format!("variable #{index}"));
    let subject = var.subject();
    unknown_fields(
        obj,
        &["name", "type", "value", "secret"],
        &subject,
        "",
        problems,
    );
    match obj.get("secret") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => var.secret = true,
        Some(other) => problems.push(
            &*subject,
            "secret",
            format!("must be true or false, not {}", describe(other)),
        ),
    }
    if let Some(ty) = required_string(obj, "type", problems, || subject.clone()) {
        var.ty = match ty.as_str() {
            "number" => Some(VarType::Number),
            "string" => Some(VarType::String),
            "boolean" => Some(VarType::Boolean),
            "json" => Some(VarType::Json),
            other => {
                problems.push(
                    &*subject,
                    "type",
                    format!(
                        "unknown variable type `{}`; use number, string, boolean or json",
                        truncate(other, 40)
                    ),
                );
                None
            }
        };
    }
    match obj.get("value") {
        None if var.secret => {}
        Some(_) if var.secret => problems.push(
            &*subject,
            "value",
            "a secret variable has no value in the flow (the flow is part of the artifact every \
             peer may fetch): set it per device with `floe device vars set <id> --secret \
             name=value` (or a group), or in the device's floed.toml [vars]",
        ),
        None => problems.push(&*subject, "value", "missing"),
        Some(Value::String(s)) => var.value = Some(s.clone()),
        Some(other) => problems.push(
            &*subject,
            "value",
            format!(
                "must be the value written as a string (for example \"30\"), not {}",
                describe(other)
            ),
        ),
    }
    var
}

fn required_string(
    obj: &Map<String, Value>,
    key: &str,
    problems: &mut Problems,
    subject: impl FnOnce() -> String,
) -> Option<String> {
    match obj.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        None => {
            problems.push(subject(), key, "missing");
            None
        }
        Some(other) => {
            problems.push(
                subject(),
                key,
                format!("must be a string, not {}", describe(other)),
            );
            None
        }
    }
}

/// Reports every key of `obj` that is not in `known`, suggesting the closest known name.
pub(crate) fn unknown_fields(
    obj: &Map<String, Value>,
    known: &[&str],
    subject: &str,
    prefix: &str,
    problems: &mut Problems,
) {
    for key in obj.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let hint = match closest(key, known) {
            Some(name) => format!("; did you mean `{name}`?"),
            None => format!("; known fields are {}", known.join(", ")),
        };
        problems.push(
            subject,
            format!("{prefix}{}", truncate(key, 60)),
            format!("unknown field{hint}"),
        );
    }
}

/// The known name within edit distance 2 of `key`, if there is one.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    if key.len() > 64 {
        return None;
    }
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let best = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            cur.push(best);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A short description of a JSON value's type for messages.
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
