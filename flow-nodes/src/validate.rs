//! Validation of flow definitions at two levels: draft (structure only) and complete (what it
//! takes to publish or run).
//!
//! Why it is shaped this way:
//! - Every problem is reported at once, each naming its subject (`node n2`, `connection 1`,
//!   `variable threshold`, `flow`) and the field at fault. An operator fixing a flow by hand
//!   should not have to run the validator once per mistake. So the document is first parsed
//!   into a generic JSON value and then walked by hand, instead of being deserialized with
//!   serde (which stops at the first error).
//! - Untrusted bytes are capped before anything else looks at them: at most
//!   [`MAX_INPUT_BYTES`] bytes, nested at most [`MAX_DEPTH`] deep (a linear, non-recursive
//!   pre-scan, so a 10 000-deep document cannot reach the recursive parser), and variable
//!   substitution may add at most [`MAX_EXPANSION_BYTES`] bytes, so a small flow cannot expand
//!   into a huge one.
//! - Drafts are work in progress: at the draft level a missing required field is tolerated,
//!   but everything that is present must be right (type, range, syntax), and the graph must be
//!   sound. The complete level adds the missing fields.
//! - The validator and the engine share one description of the node kinds ([`crate::kinds`]),
//!   and [`compile`] hands the engine typed, defaulted, substituted configs with durations
//!   already in milliseconds, so the engine never re-interprets what the validator accepted.

mod config;
mod shape;
mod vars;

use crate::compiled::{CompiledFlow, CompiledNode, Edge};
use crate::def::Flow;
use crate::kinds::{self, Outputs};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The largest flow document accepted, in bytes (4 MiB).
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;
/// The deepest nesting of arrays and objects accepted, counting the top-level object as 1.
pub const MAX_DEPTH: usize = 64;
/// How many bytes variable substitution may add to a flow in total (16 MiB).
pub const MAX_EXPANSION_BYTES: usize = 16 * 1024 * 1024;
/// The most problems listed for one flow; beyond it a last problem says how many were left out.
pub const MAX_PROBLEMS: usize = 1000;

/// How much a flow must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Structure only: node types known, ids unique, connections resolve, variables parse,
    /// present config fields right; missing required config fields are tolerated.
    Draft,
    /// Everything needed to publish or run: every node's config complete or defaulted.
    Complete,
}

/// One problem found in a flow, naming where it is and which field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What the problem is about: `node n2`, `connection 3`, `variable threshold`, `flow`.
    pub subject: String,
    /// The field at fault (`config.topic`, `target`, `value` …), empty when it is the subject.
    pub field: String,
    /// A sentence that says what is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    /// One line: `node n2: config.rules: ...`, or `subject: message` without a field.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.subject, self.message)
        } else {
            write!(f, "{}: {}: {}", self.subject, self.field, self.message)
        }
    }
}

/// Why a flow was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    /// The bytes are not a flow document at all (not JSON, too large, too deep, wrong shape).
    #[error("{0}")]
    Input(InputError),
    /// The document parsed but has problems; all of them are listed.
    #[error("{} problem(s) in the flow", .0.len())]
    Problems(Vec<Problem>),
}

/// Why bytes are not a JSON document the validator can look at.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Too large, nested too deep, or not the shape of a flow document.
    #[error("{0}")]
    Refused(String),
    /// Not JSON, or cut short; names what was being parsed.
    #[error("{what} {}: {source}", json_fault(source))]
    Json {
        /// What was parsed ("the flow document", "the value").
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// How a JSON parse failure is put to a person.
fn json_fault(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "is truncated",
        serde_json::error::Category::Io => "could not be read",
        _ => "is not valid JSON",
    }
}

impl Invalid {
    /// The problems, or none when the input itself was refused.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Invalid::Input(_) => &[],
            Invalid::Problems(list) => list,
        }
    }

    /// A human report: one line per problem (`node n2: config.rules: …`), or the input error.
    pub fn report(&self) -> String {
        match self {
            Invalid::Input(e) => e.to_string(),
            Invalid::Problems(list) => list
                .iter()
                .map(Problem::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// Checks that `text` parses as a value of a variable declared with type `ty` (what a
/// per-device value of a flow variable must do before a deployment delivers it); the message
/// says why not.
pub fn check_variable_value(ty: crate::def::VarType, text: &str) -> Result<(), String> {
    vars::parse_value(ty, text).map(|_| ())
}

/// Parses and validates a flow document at `level`, returning the definition as written.
///
/// A variable declared secret has no value here: the config fields that refer to it are
/// checked when a device compiles the flow with its own value ([`compile_with_values`]).
pub fn check(bytes: &[u8], level: Level) -> Result<Flow, Invalid> {
    analyse(
        bytes,
        level,
        &[],
        Undeclared::Refuse,
        vars::Secrets::Deferred,
    )
    .map(|(flow, _)| flow)
}

/// Parses, validates at the complete level, and resolves a flow for the engine. `overrides`
/// replace variable values by name (as `floed run --var name=value` does) before validation;
/// an override for a variable the flow does not declare is a problem.
///
/// The result has every documented config field with its default (optional fields without a
/// default stay absent), every `${variable}` replaced by its typed value, durations as integer
/// milliseconds, `inputs`/`outputs` per node, and connections as node indices.
pub fn compile(bytes: &[u8], overrides: &[(String, String)]) -> Result<CompiledFlow, Invalid> {
    compile_inner(bytes, overrides, Undeclared::Refuse)
}

/// [`compile`] for values that were set for a device rather than for this flow (a device's
/// values from its coordinator and its local config): a value for a variable the flow does
/// not declare is ignored instead of refused. Values for declared variables must still parse
/// as their declared type.
pub fn compile_with_values(
    bytes: &[u8],
    values: &[(String, String)],
) -> Result<CompiledFlow, Invalid> {
    compile_inner(bytes, values, Undeclared::Ignore)
}

/// What an override for a variable the flow does not declare is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undeclared {
    /// A problem.
    Refuse,
    /// Nothing.
    Ignore,
}

fn compile_inner(
    bytes: &[u8],
    overrides: &[(String, String)],
    undeclared: Undeclared,
) -> Result<CompiledFlow, Invalid> {
    let (flow, resolved) = analyse(
        bytes,
        Level::Complete,
        overrides,
        undeclared,
        vars::Secrets::Required,
    )?;
    let mut nodes = Vec::with_capacity(flow.nodes.len());
    let mut index = HashMap::with_capacity(flow.nodes.len());
    for (i, (node, res)) in flow.nodes.iter().zip(resolved.nodes).enumerate() {
        index.insert(node.id.as_str(), i);
        nodes.push(CompiledNode {
            id: node.id.clone(),
            kind: node.kind.clone(),
            name: node.name.clone(),
            config: res.config,
            outputs: res.outputs,
            inputs: res.inputs,
        });
    }
    let mut edges = Vec::with_capacity(flow.connections.len());
    for conn in &flow.connections {
        // Validation passed, so both ends exist; a miss here would be a validator bug, and it
        // is reported as a problem rather than a panic.
        match (
            index.get(conn.source.as_str()),
            index.get(conn.target.as_str()),
        ) {
            (Some(&from), Some(&to)) => edges.push(Edge {
                from,
                output: conn.output.unwrap_or(0),
                to,
                input: conn.input.unwrap_or(0),
            }),
            _ => {
                return Err(Invalid::Problems(vec![Problem {
                    subject: "flow".to_string(),
                    field: "connections".to_string(),
                    message: "internal error: a validated connection did not resolve".to_string(),
                }]));
            }
        }
    }
    Ok(CompiledFlow { nodes, edges })
}

/// Reads a flow file without ever holding more than [`MAX_INPUT_BYTES`] + 1 bytes of it, so a
/// huge file is refused cheaply. A file over the cap gives an error of kind `InvalidData`.
pub fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is larger than the {MAX_INPUT_BYTES}-byte limit for a flow"),
        ));
    }
    Ok(bytes)
}

/// Refuses input that is too large or too deeply nested, before any parser sees it.
///
/// The depth scan is a single loop over the bytes that tracks whether it is inside a string,
/// so brackets in string values do not count and nothing recurses.
pub(crate) fn precheck(bytes: &[u8], what: &str) -> Result<(), String> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(format!(
            "{what} is {} bytes, larger than the {MAX_INPUT_BYTES}-byte limit",
            bytes.len()
        ));
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "{what} nests arrays and objects more than {MAX_DEPTH} levels deep (at byte {i})"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses capped bytes into a JSON value, naming truncation and syntax errors plainly.
pub(crate) fn parse_json(
    bytes: &[u8],
    what: &'static str,
) -> Result<serde_json::Value, InputError> {
    precheck(bytes, what).map_err(InputError::Refused)?;
    serde_json::from_slice(bytes).map_err(|source| InputError::Json { what, source })
}

/// The resolved form of one node, produced by a successful analysis.
#[derive(Debug)]
struct ResolvedNode {
    config: serde_json::Map<String, serde_json::Value>,
    outputs: u32,
    inputs: u32,
}

#[derive(Debug)]
struct Resolved {
    nodes: Vec<ResolvedNode>,
}

/// A bounded list of problems.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<Problem>,
    left_out: usize,
}

impl Problems {
    pub(crate) fn push(
        &mut self,
        subject: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(Problem {
                subject: subject.into(),
                field: field.into(),
                message: message.into(),
            });
        } else {
            self.left_out += 1;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len() + self.left_out
    }

    fn into_vec(mut self) -> Vec<Problem> {
        if self.left_out > 0 {
            self.list.push(Problem {
                subject: "flow".to_string(),
                field: String::new(),
                message: format!(
                    "{} further problem(s) not listed (at most {MAX_PROBLEMS} are)",
                    self.left_out
                ),
            });
        }
        self.list
    }
}

/// The whole pipeline: cap, parse, check the shape, the variables, each node and each
/// connection, collecting every problem.
fn analyse(
    bytes: &[u8],
    level: Level,
    overrides: &[(String, String)],
    undeclared: Undeclared,
    secrets: vars::Secrets,
) -> Result<(Flow, Resolved), Invalid> {
    let value = parse_json(bytes, "the flow document").map_err(Invalid::Input)?;
    let mut problems = Problems::default();
    let mut raw = shape::read(&value, &mut problems)
        .map_err(|message| Invalid::Input(InputError::Refused(message)))?;

    for (name, text) in overrides {
        let mut found = false;
        for var in raw.variables.iter_mut() {
            if var.name.as_deref() == Some(name.as_str()) {
                var.value = Some(text.clone());
                found = true;
            }
        }
        if !found && undeclared == Undeclared::Refuse {
            problems.push(
                format!("variable {name}"),
                "",
                "an override was given for a variable the flow does not declare",
            );
        }
    }

    if raw.nodes.is_empty() {
        problems.push(
            "flow",
            "nodes",
            "the flow is empty; it needs at least one node",
        );
    }

    let table = vars::check(&raw.variables, secrets, &mut problems);
    let mut budget = config::Budget {
        left: MAX_EXPANSION_BYTES,
        exceeded: false,
    };

    // Node ids: unique and indexed, the first occurrence wins.
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(raw.nodes.len());
    for (i, node) in raw.nodes.iter().enumerate() {
        if let Some(id) = node.id.as_deref() {
            if let Some(&first) = ids.get(id) {
                problems.push(
                    node.subject(),
                    "id",
                    format!("duplicate id: node #{first} already uses `{id}`"),
                );
            } else {
                ids.insert(id, i);
            }
        }
    }

    // Node configs.
    let mut resolved: Vec<Option<config::NodeResult>> = Vec::with_capacity(raw.nodes.len());
    for node in &raw.nodes {
        let Some(kind) = node.kind.as_deref() else {
            resolved.push(None);
            continue;
        };
        let Some(spec) = kinds::lookup(kind) else {
            problems.push(
                node.subject(),
                "type",
                format!(
                    "unknown node type `{}`; known types are {}",
                    kinds::truncate(kind, 40),
                    kinds::kind_names().join(", ")
                ),
            );
            resolved.push(None);
            continue;
        };
        let mut ctx = config::Ctx {
            level,
            vars: &table,
            problems: &mut problems,
            budget: &mut budget,
            subject: node.subject(),
            node_id: node.id.clone().unwrap_or_default(),
        };
        resolved.push(Some(config::check_node(&mut ctx, spec, &node.config)));
    }

    // Connections.
    // Bounded by the number of connections, which the input cap bounds.
    let mut seen_edges: HashMap<(usize, u32, usize, u32), usize> = HashMap::new();
    for conn in &raw.connections {
        let subject = format!("connection {}", conn.index);
        let mut ends = [None, None];
        for (slot, (field, id)) in [("source", &conn.source), ("target", &conn.target)]
            .into_iter()
            .enumerate()
        {
            let Some(id) = id.as_deref() else { continue };
            match ids.get(id) {
                Some(&i) => ends[slot] = Some(i),
                None => problems.push(
                    subject.clone(),
                    field,
                    format!(
                        "dangling connection: no node has the id `{}`",
                        kinds::truncate(id, 60)
                    ),
                ),
            }
        }
        let output = conn.output.unwrap_or(0);
        let input = conn.input.unwrap_or(0);
        let source_spec =
            ends[0].and_then(|i| Some((i, kinds::lookup(raw.nodes[i].kind.as_deref()?)?)));
        if let Some((from, spec)) = source_spec {
            let outputs = match spec.outputs {
                Outputs::None => Some(0),
                Outputs::One => Some(1),
                Outputs::PerRule => resolved[from].as_ref().and_then(|r| r.rule_count),
            };
            match outputs {
                Some(0) => problems.push(
                    subject.clone(),
                    "source",
                    format!(
                        "node `{}` is a {} node, which has no output",
                        raw.nodes[from].id.as_deref().unwrap_or_default(),
                        spec.name
                    ),
                ),
                Some(n) if output >= n => problems.push(
                    subject.clone(),
                    "output",
                    format!(
                        "port out of range: node `{}` ({}) has {n} output(s), numbered from 0, so output {output} does not exist",
                        raw.nodes[from].id.as_deref().unwrap_or_default(),
                        spec.name
                    ),
                ),
                // Unknown (a switch whose rules are not written yet): nothing to check.
                _ => {}
            }
        }
        let target_spec =
            ends[1].and_then(|i| Some((i, kinds::lookup(raw.nodes[i].kind.as_deref()?)?)));
        if let Some((to, spec)) = target_spec {
            if spec.source {
                problems.push(
                    subject.clone(),
                    "target",
                    format!(
                        "node `{}` is a {} node, a source with no input",
                        raw.nodes[to].id.as_deref().unwrap_or_default(),
                        spec.name
                    ),
                );
            } else if input >= spec.inputs() {
                problems.push(
                    subject.clone(),
                    "input",
                    format!(
                        "port out of range: node `{}` ({}) has {} input(s), numbered from 0, so input {input} does not exist",
                        raw.nodes[to].id.as_deref().unwrap_or_default(),
                        spec.name,
                        spec.inputs()
                    ),
                );
            }
        }
        if let [Some(from), Some(to)] = ends {
            let key = (from, output, to, input);
            if let Some(first) = seen_edges.get(&key) {
                problems.push(
                    subject,
                    "",
                    format!("duplicate of connection {first}: messages would be delivered twice"),
                );
            } else {
                seen_edges.insert(key, conn.index);
            }
        }
    }

    if problems.len() > 0 {
        return Err(Invalid::Problems(problems.into_vec()));
    }

    // No problems: every node resolved and every raw field is present.
    let flow = raw.into_flow();
    let mut nodes = Vec::with_capacity(resolved.len());
    for (node, res) in flow.nodes.iter().zip(resolved) {
        let Some(res) = res else {
            return Err(internal("a node without problems did not resolve"));
        };
        let inputs = kinds::lookup(&node.kind).map_or(0, |s| s.inputs());
        nodes.push(ResolvedNode {
            config: res.config,
            outputs: res.outputs,
            inputs,
        });
    }
    if nodes.len() != flow.nodes.len() {
        return Err(internal("node count changed while resolving"));
    }
    Ok((flow, Resolved { nodes }))
}

fn internal(what: &str) -> Invalid {
    Invalid::Problems(vec![Problem {
        subject: "flow".to_string(),
        field: String::new(),
        message: format!("internal error: {what}"),
    }])
}

#[cfg(test)]
mod secret_tests;
#[cfg(test)]
mod tests;
