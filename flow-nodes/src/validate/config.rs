//! Checking one node's `config` against its kind, substituting variables and applying
//! defaults, so that a node that passes has its compiled config ready.

use super::shape::{describe, unknown_fields};
use super::vars::{self, Lookup, Piece, Table};
use super::{Level, Problems, parse_json};
use crate::def::VarType;
use crate::kinds::{
    self, CHANGE_ACTIONS, FieldDefault, FieldType, KindSpec, Outputs, SWITCH_OPS, TYPE_NAMES,
    VALUE_TYPES, format_ms,
};
use serde_json::{Map, Value};

/// What checking one node needs and where its problems go.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) level: Level,
    pub(crate) vars: &'a Table,
    pub(crate) problems: &'a mut Problems,
    /// What variable substitution may still add to the flow.
    pub(crate) budget: &'a mut Budget,
    /// `node <id>`.
    pub(crate) subject: String,
    pub(crate) node_id: String,
}

/// How many bytes variable substitution may still add to the whole flow. Once exceeded, it is
/// reported once and every later substitution fails quietly.
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) left: usize,
    pub(crate) exceeded: bool,
}

/// The outcome for one node.
#[derive(Debug)]
pub(crate) struct NodeResult {
    /// The compiled config; complete only when the node had no problems.
    pub(crate) config: Map<String, Value>,
    /// Output ports (a switch whose rules are unknown counts 0).
    pub(crate) outputs: u32,
    /// For a switch, the number of rules when `rules` is an array.
    pub(crate) rule_count: Option<u32>,
}

/// Where a resolved value came from, for messages.
#[derive(Debug)]
struct Origin {
    name: String,
    ty: VarType,
}

impl<'a> Ctx<'a> {
    fn problem(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(self.subject.clone(), field, message);
    }

    fn missing_ok(&self) -> bool {
        self.level == Level::Draft
    }

    /// Substitutes variables in `raw`; `None` when a problem was reported (or the variable
    /// itself is broken, which its own declaration already reported).
    fn resolve(&mut self, field: &str, raw: &Value) -> Option<(Value, Option<Origin>)> {
        match raw {
            Value::String(s) if s.contains("${") => self.resolve_str(field, s),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.resolve(&format!("{field}[{i}]"), item) {
                        Some((v, _)) => out.push(v),
                        None => ok = false,
                    }
                }
                ok.then_some((Value::Array(out), None))
            }
            Value::Object(map) => {
                let mut out = Map::new();
                let mut ok = true;
                for (key, item) in map {
                    match self.resolve(&format!("{field}.{key}"), item) {
                        Some((v, _)) => {
                            out.insert(key.clone(), v);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some((Value::Object(out), None))
            }
            other => Some((other.clone(), None)),
        }
    }

    fn resolve_str(&mut self, field: &str, s: &str) -> Option<(Value, Option<Origin>)> {
        let pieces = match vars::split(s) {
            Ok(p) => p,
            Err(message) => {
                self.problem(field, message);
                return None;
            }
        };
        if let [Piece::Var(name)] = pieces.as_slice() {
            let entry = self.lookup(field, name)?;
            let (value, ty) = (entry.value.clone(), entry.ty);
            self.charge(field, entry.text.len())?;
            return Some((
                value,
                Some(Origin {
                    name: (*name).to_string(),
                    ty,
                }),
            ));
        }
        let mut out = String::new();
        let mut ok = true;
        for piece in &pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => match self.lookup(field, name) {
                    Some(entry) => {
                        if out.len() + entry.text.len() > self.budget.left {
                            self.charge(field, usize::MAX)?;
                        }
                        out.push_str(&entry.text);
                    }
                    None => ok = false,
                },
            }
        }
        if !ok {
            return None;
        }
        self.charge(field, out.len())?;
        Some((Value::String(out), None))
    }

    fn lookup(&mut self, field: &str, name: &str) -> Option<&'a vars::Entry> {
        // Copy the reference out of `self` so that reporting a problem can borrow it mutably.
        let table: &'a Table = self.vars;
        match table.get(name) {
            Lookup::Found(entry) => Some(entry),
            Lookup::Unusable => None,
            Lookup::Undefined => {
                self.problem(field, format!("refers to the undefined variable `{name}`"));
                None
            }
        }
    }

    fn charge(&mut self, field: &str, bytes: usize) -> Option<()> {
        if self.budget.exceeded {
            return None;
        }
        if bytes > self.budget.left {
            self.problem(
                field,
                format!(
                    "variable substitution would add more than {} bytes to the flow",
                    super::MAX_EXPANSION_BYTES
                ),
            );
            self.budget.exceeded = true;
            return None;
        }
        self.budget.left -= bytes;
        Some(())
    }
}

/// Checks a node's config and builds its compiled form.
pub(crate) fn check_node(ctx: &mut Ctx<'_>, spec: &KindSpec, config: &Value) -> NodeResult {
    let fixed_outputs = match spec.outputs {
        Outputs::None => 0,
        Outputs::One | Outputs::PerRule => 1,
    };
    let mut result = NodeResult {
        config: Map::new(),
        outputs: fixed_outputs,
        rule_count: None,
    };
    let Value::Object(obj) = config else {
        ctx.problem(
            "config",
            format!("must be an object, not {}", describe(config)),
        );
        result.outputs = if spec.outputs == Outputs::PerRule {
            0
        } else {
            fixed_outputs
        };
        return result;
    };
    let names: Vec<&str> = spec.fields.iter().map(|f| f.name).collect();
    let subject = ctx.subject.clone();
    unknown_fields(obj, &names, &subject, "config.", ctx.problems);

    for field in spec.fields {
        let path = format!("config.{}", field.name);
        let Some(raw) = obj.get(field.name) else {
            match field.default {
                FieldDefault::Required if !ctx.missing_ok() => ctx.problem(
                    path,
                    format!("missing; a {} node needs it (see NODES.md)", spec.name),
                ),
                other => {
                    if let Some(v) = other.value(&ctx.node_id) {
                        result.config.insert(field.name.to_string(), v);
                    }
                }
            }
            continue;
        };
        let value = match field.ty {
            FieldType::SwitchRules => {
                // The rule count gives the output ports. Take it from the list as written when
                // it is one (so ports can be checked even when a rule has a problem), else from
                // the list a json variable gave.
                if let Value::Array(items) = raw {
                    result.rule_count = u32::try_from(items.len()).ok();
                }
                let resolved = ctx.resolve(&path, raw);
                if let Some((Value::Array(items), _)) = &resolved {
                    result.rule_count = u32::try_from(items.len()).ok();
                }
                resolved.and_then(|(v, _)| switch_rules(ctx, &path, &v))
            }
            FieldType::ChangeRules => {
                ctx.resolve(&path, raw).and_then(|(v, _)| change_rules(ctx, &path, &v))
            }
            ty => ctx.resolve(&path, raw).and_then(|(v, origin)| {
                match typed(ty, &v) {
                    Ok(v) => Some(v),
                    Err(message) => {
                        let message = match origin {
                            Some(o) => format!(
                                "`${{{name}}}` is the {ty} variable `{name}`, but {field}: {message}",
                                name = o.name,
                                ty = vars::type_name(o.ty),
                                field = field.name,
                            ),
                            None => message,
                        };
                        ctx.problem(path.clone(), message);
                        None
                    }
                }
            }),
        };
        if let Some(v) = value {
            result.config.insert(field.name.to_string(), v);
        }
    }

    kind_rules(ctx, spec, obj, &result.config);
    if spec.outputs == Outputs::PerRule {
        result.outputs = result.rule_count.unwrap_or(0);
    }
    result
}

/// Rules that involve more than one field.
fn kind_rules(
    ctx: &mut Ctx<'_>,
    spec: &KindSpec,
    raw: &Map<String, Value>,
    out: &Map<String, Value>,
) {
    match spec.name {
        "inject" => {
            let once = out.get("once").and_then(Value::as_bool);
            if once == Some(false) && !raw.contains_key("interval") && !ctx.missing_ok() {
                ctx.problem(
                    "config.interval",
                    "missing: with `once` false and no interval the node would never fire",
                );
            }
        }
        "dht" => {
            let model = out.get("model").and_then(Value::as_str);
            let interval = out.get("interval").and_then(Value::as_u64);
            // The sampling limit belongs to the hardware; a simulated sensor has none.
            let simulated = out.get("simulate").and_then(Value::as_bool) == Some(true);
            if let (Some(model), Some(ms), false) = (model, interval, simulated) {
                let min = if model == "dht11" { 1000 } else { 2000 };
                if raw.contains_key("interval") && ms < min {
                    ctx.problem(
                        "config.interval",
                        format!(
                            "out of range: {} is shorter than the {} minimum of {} (a sensor limit)",
                            format_ms(ms),
                            model,
                            format_ms(min)
                        ),
                    );
                }
            }
        }
        _ => {}
    }
}

/// Checks a resolved value against a field type and returns its compiled form.
fn typed(ty: FieldType, v: &Value) -> Result<Value, String> {
    let wrong = |expected: &str| format!("must be {expected}, not {}", describe(v));
    match ty {
        FieldType::Any => Ok(v.clone()),
        FieldType::String => v.as_str().map(Value::from).ok_or_else(|| wrong("a string")),
        FieldType::Bool => v
            .as_bool()
            .map(Value::from)
            .ok_or_else(|| wrong("true or false")),
        FieldType::PropertyPath => {
            let s = v
                .as_str()
                .ok_or_else(|| wrong("a property path such as \"payload.temperature\""))?;
            kinds::check_property_path(s)?;
            Ok(v.clone())
        }
        FieldType::FilePath => {
            let s = v.as_str().ok_or_else(|| wrong("a path"))?;
            kinds::check_file_path(s)?;
            Ok(v.clone())
        }
        FieldType::Duration { min_ms } => {
            let ms = kinds::parse_duration_ms(v)?;
            if ms < min_ms {
                return Err(format!(
                    "out of range: {} is shorter than the minimum of {}",
                    format_ms(ms),
                    format_ms(min_ms)
                ));
            }
            Ok(Value::from(ms))
        }
        FieldType::Integer { min, max } => {
            let expected = format!("an integer from {min} to {max}");
            let n = integer(v).ok_or_else(|| wrong(&expected))?;
            if n < min || n > max {
                return Err(format!("out of range: {n} is not {expected}"));
            }
            Ok(Value::from(n))
        }
        FieldType::Number => match v {
            Value::Number(_) => Ok(v.clone()),
            _ => Err(wrong("a number")),
        },
        FieldType::PositiveNumber => match v.as_f64() {
            Some(f) if f > 0.0 => Ok(v.clone()),
            Some(_) => Err("out of range: must be greater than 0".to_string()),
            None => Err(wrong("a number greater than 0")),
        },
        FieldType::Enum(options) => match v.as_str() {
            Some(s) if options.contains(&s) => Ok(v.clone()),
            Some(s) => Err(format!(
                "`{}` is not one of {}",
                kinds::truncate(s, 40),
                options.join(", ")
            )),
            None => Err(wrong(&format!("one of {}", options.join(", ")))),
        },
        FieldType::BrokerUrl => {
            let s = v
                .as_str()
                .ok_or_else(|| wrong("an mqtt:// or mqtts:// URL"))?;
            kinds::check_broker_url(s)?;
            Ok(v.clone())
        }
        FieldType::TopicName => {
            let s = v.as_str().ok_or_else(|| wrong("a topic"))?;
            kinds::check_topic_name(s)?;
            Ok(v.clone())
        }
        FieldType::TopicFilter => {
            let s = v.as_str().ok_or_else(|| wrong("a topic filter"))?;
            kinds::check_topic_filter(s)?;
            Ok(v.clone())
        }
        // Rule lists are checked by their own walkers; reaching here is a spec mistake.
        FieldType::SwitchRules | FieldType::ChangeRules => Err("is a rule list".to_string()),
    }
}

/// An integral JSON number (`2` or `2.0`) as i64.
fn integer(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    let f = v.as_f64()?;
    // Only whole numbers well inside i64's range convert; the cast is then exact.
    #[allow(clippy::cast_possible_truncation)]
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn rule_list<'v>(ctx: &mut Ctx<'_>, path: &str, v: &'v Value) -> Option<&'v Vec<Value>> {
    match v {
        Value::Array(items) if items.is_empty() => {
            ctx.problem(path, "must have at least one rule");
            None
        }
        Value::Array(items) => Some(items),
        other => {
            ctx.problem(
                path,
                format!("must be an array of rules, not {}", describe(other)),
            );
            None
        }
    }
}

/// Checks a resolved `switch` rule list; returns its compiled form when it has no problem.
fn switch_rules(ctx: &mut Ctx<'_>, path: &str, v: &Value) -> Option<Value> {
    let items = rule_list(ctx, path, v)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, rule) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match switch_rule(ctx, &at, rule) {
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    ok.then_some(Value::Array(out))
}

fn switch_rule(ctx: &mut Ctx<'_>, at: &str, rule: &Value) -> Option<Value> {
    let Value::Object(obj) = rule else {
        ctx.problem(
            at,
            format!("a rule must be an object, not {}", describe(rule)),
        );
        return None;
    };
    let subject = ctx.subject.clone();
    let before = ctx.problems.len();
    unknown_fields(
        obj,
        &["op", "value", "value2"],
        &subject,
        &format!("{at}."),
        ctx.problems,
    );
    let op = match obj.get("op") {
        None => {
            if !ctx.missing_ok() {
                ctx.problem(format!("{at}.op"), "missing");
            }
            return None;
        }
        Some(Value::String(op)) if SWITCH_OPS.contains(&op.as_str()) => op.as_str(),
        Some(Value::String(op)) => {
            ctx.problem(
                format!("{at}.op"),
                format!(
                    "unknown op `{}`; known ops are {}",
                    kinds::truncate(op, 40),
                    SWITCH_OPS.join(", ")
                ),
            );
            return None;
        }
        Some(other) => {
            ctx.problem(
                format!("{at}.op"),
                format!("must be a string, not {}", describe(other)),
            );
            return None;
        }
    };
    let needs: &[&str] = match op {
        "between" => &["value", "value2"],
        "eq" | "neq" | "lt" | "lte" | "gt" | "gte" | "contains" | "regex" | "type_is" => &["value"],
        _ => &[],
    };
    for key in ["value", "value2"] {
        let present = obj.contains_key(key);
        if needs.contains(&key) && !present && !ctx.missing_ok() {
            ctx.problem(
                format!("{at}.{key}"),
                format!("missing; op `{op}` needs it"),
            );
        }
        if !needs.contains(&key) && present {
            ctx.problem(format!("{at}.{key}"), format!("op `{op}` takes no {key}"));
        }
    }
    let value = obj.get("value");
    match (op, value) {
        ("lt" | "lte" | "gt" | "gte" | "between", Some(v)) if !(v.is_number() || v.is_string()) => {
            ctx.problem(
                format!("{at}.value"),
                format!(
                    "op `{op}` compares with a number or a string, not {}",
                    describe(v)
                ),
            );
        }
        ("regex", Some(v)) => match v.as_str() {
            Some(pattern) => {
                if let Err(e) = kinds::compile_regex(pattern) {
                    ctx.problem(format!("{at}.value"), e);
                }
            }
            None => ctx.problem(
                format!("{at}.value"),
                format!("op `regex` needs a pattern string, not {}", describe(v)),
            ),
        },
        ("type_is", Some(v)) if !v.as_str().is_some_and(|s| TYPE_NAMES.contains(&s)) => {
            ctx.problem(
                format!("{at}.value"),
                format!("op `type_is` needs one of {}", TYPE_NAMES.join(", ")),
            );
        }
        _ => {}
    }
    if op == "between" {
        if let (Some(a), Some(b)) = (value, obj.get("value2")) {
            let same_kind = (a.is_number() && b.is_number()) || (a.is_string() && b.is_string());
            if !same_kind {
                ctx.problem(
                    format!("{at}.value2"),
                    "op `between` needs value and value2 both numbers or both strings",
                );
            } else if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
                if x > y {
                    ctx.problem(format!("{at}.value2"), "must not be less than value");
                }
            }
        }
    }
    (ctx.problems.len() == before).then(|| rule.clone())
}

/// Checks a resolved `change` rule list; returns its compiled form, with `value_type`
/// `variable` and `json` already turned into literal values.
fn change_rules(ctx: &mut Ctx<'_>, path: &str, v: &Value) -> Option<Value> {
    let items = rule_list(ctx, path, v)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, rule) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match change_rule(ctx, &at, rule) {
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    ok.then_some(Value::Array(out))
}

fn change_rule(ctx: &mut Ctx<'_>, at: &str, rule: &Value) -> Option<Value> {
    let Value::Object(obj) = rule else {
        ctx.problem(
            at,
            format!("a rule must be an object, not {}", describe(rule)),
        );
        return None;
    };
    let action = match obj.get("action") {
        None => {
            if !ctx.missing_ok() {
                ctx.problem(format!("{at}.action"), "missing");
            }
            return None;
        }
        Some(Value::String(a)) if CHANGE_ACTIONS.contains(&a.as_str()) => a.as_str(),
        Some(Value::String(a)) => {
            ctx.problem(
                format!("{at}.action"),
                format!(
                    "unknown action `{}`; known actions are {}",
                    kinds::truncate(a, 40),
                    CHANGE_ACTIONS.join(", ")
                ),
            );
            return None;
        }
        Some(other) => {
            ctx.problem(
                format!("{at}.action"),
                format!("must be a string, not {}", describe(other)),
            );
            return None;
        }
    };
    let fields: &[&str] = match action {
        "set" => &["action", "property", "value", "value_type"],
        "change" => &["action", "property", "from", "to"],
        "delete" => &["action", "property"],
        _ => &["action", "property", "to"],
    };
    let subject = ctx.subject.clone();
    let before = ctx.problems.len();
    unknown_fields(obj, fields, &subject, &format!("{at}."), ctx.problems);
    for key in fields.iter().filter(|k| **k != "value_type") {
        if !obj.contains_key(*key) && !ctx.missing_ok() {
            ctx.problem(
                format!("{at}.{key}"),
                format!("missing; action `{action}` needs it"),
            );
        }
    }
    let mut out = obj.clone();
    let path_field = |ctx: &mut Ctx<'_>, key: &str| {
        if let Some(v) = obj.get(key) {
            let res = match v.as_str() {
                Some(s) => kinds::check_property_path(s),
                None => Err(format!(
                    "must be a property path string, not {}",
                    describe(v)
                )),
            };
            if let Err(e) = res {
                ctx.problem(format!("{at}.{key}"), e);
            }
        }
    };
    path_field(ctx, "property");
    if action == "move" {
        path_field(ctx, "to");
    }
    if action == "set" {
        let value_type = match obj.get("value_type") {
            None => "literal",
            Some(Value::String(t)) if VALUE_TYPES.contains(&t.as_str()) => t.as_str(),
            Some(other) => {
                ctx.problem(
                    format!("{at}.value_type"),
                    format!(
                        "must be one of {}, not {}",
                        VALUE_TYPES.join(", "),
                        short(other)
                    ),
                );
                return None;
            }
        };
        out.insert("value_type".to_string(), Value::from(value_type));
        if let Some(v) = obj.get("value") {
            let field = format!("{at}.value");
            match (value_type, v) {
                ("variable", Value::String(name)) => {
                    if let Some(entry) = ctx.lookup(&field, name) {
                        let value = entry.value.clone();
                        let len = entry.text.len();
                        if ctx.charge(&field, len).is_some() {
                            out.insert("value".to_string(), value);
                            out.insert("value_type".to_string(), Value::from("literal"));
                        }
                    }
                }
                ("json", Value::String(text)) => match parse_json(text.as_bytes(), "the value") {
                    Ok(parsed) => {
                        out.insert("value".to_string(), parsed);
                        out.insert("value_type".to_string(), Value::from("literal"));
                    }
                    Err(e) => ctx.problem(field, format!("value_type json: {e}")),
                },
                ("property", Value::String(p)) => {
                    if let Err(e) = kinds::check_property_path(p) {
                        ctx.problem(field, e);
                    }
                }
                ("variable" | "json" | "property", other) => ctx.problem(
                    field,
                    format!(
                        "value_type {value_type} needs a string, not {}",
                        describe(other)
                    ),
                ),
                _ => {}
            }
        }
    }
    (ctx.problems.len() == before).then_some(Value::Object(out))
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{}`", kinds::truncate(s, 40)),
        other => describe(other).to_string(),
    }
}
