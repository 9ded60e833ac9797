//! `switch`: routes a message by rules on one property; rule *i* sends to output port *i*.
//!
//! Comparisons follow Node-RED's habits where they are useful on sensors: ordering operators
//! compare as numbers when both sides are numbers or numeric text (so a rule value `"30"` works
//! on a payload `31.2`), and as text when both sides are text. Rules are compiled once (regexes,
//! numbers, types), so matching one message allocates nothing.

use crate::msg::{Msg, PropPath};
use crate::task::NodeError;
use crate::task::{Emit, Process};
use regex_lite::Regex;
use serde::Deserialize;
use serde_json::Value;
use std::cmp::Ordering;

/// Longest regex pattern accepted, so a flow cannot make the node compile a huge automaton.
const MAX_PATTERN: usize = 1024;

#[derive(Debug, Deserialize)]
pub(crate) struct SwitchConfig {
    #[serde(default = "default_property")]
    property: String,
    rules: Vec<RuleConfig>,
    #[serde(default)]
    check_all: bool,
}

fn default_property() -> String {
    "payload".to_string()
}

#[derive(Debug, Deserialize)]
struct RuleConfig {
    op: String,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    value2: Option<Value>,
}

/// A rule value with its numeric reading precomputed.
#[derive(Debug, Clone)]
struct Operand {
    value: Value,
    num: Option<f64>,
}

impl Operand {
    fn new(value: Value) -> Self {
        let num = as_number(&value);
        Operand { value, num }
    }
}

#[derive(Debug)]
enum Rule {
    Eq(Operand),
    Neq(Operand),
    Lt(Operand),
    Lte(Operand),
    Gt(Operand),
    Gte(Operand),
    Between(Operand, Operand),
    Contains(Value),
    Regex(Regex),
    True,
    False,
    Null,
    NotNull,
    TypeIs(&'static str),
    Else,
}

/// The running switch node.
#[derive(Debug)]
pub struct SwitchNode {
    property: PropPath,
    rules: Vec<Rule>,
    check_all: bool,
    matched: Vec<usize>,
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn type_name(v: Option<&Value>) -> &'static str {
    match v {
        None | Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// Orders a message value against a rule value: numerically when both read as numbers,
/// as text when both are text, otherwise not at all.
fn order(v: &Value, num: Option<f64>, op: &Operand) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (num, op.num) {
        return a.partial_cmp(&b);
    }
    match (v, &op.value) {
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

fn equals(v: &Value, num: Option<f64>, op: &Operand) -> bool {
    // A number on either side compares numerically so that `"30"` equals `30`.
    if (v.is_number() || op.value.is_number())
        && let (Some(a), Some(b)) = (num, op.num)
    {
        return a == b;
    }
    *v == op.value
}

impl SwitchNode {
    pub(crate) fn new(cfg: SwitchConfig) -> Result<Self, String> {
        let property = PropPath::parse(&cfg.property).map_err(|e| format!("property: {e}"))?;
        if cfg.rules.is_empty() {
            return Err("rules: at least one rule is required".to_string());
        }
        let mut rules = Vec::with_capacity(cfg.rules.len());
        for (i, r) in cfg.rules.into_iter().enumerate() {
            let need = |v: Option<Value>, field: &str| {
                v.ok_or_else(|| format!("rules[{i}].{field}: required for op `{}`", r.op))
            };
            let rule = match r.op.as_str() {
                "eq" => Rule::Eq(Operand::new(need(r.value, "value")?)),
                "neq" => Rule::Neq(Operand::new(need(r.value, "value")?)),
                "lt" => Rule::Lt(Operand::new(need(r.value, "value")?)),
                "lte" => Rule::Lte(Operand::new(need(r.value, "value")?)),
                "gt" => Rule::Gt(Operand::new(need(r.value, "value")?)),
                "gte" => Rule::Gte(Operand::new(need(r.value, "value")?)),
                "between" => {
                    let a = Operand::new(need(r.value.clone(), "value")?);
                    let b = Operand::new(need(r.value2.clone(), "value2")?);
                    Rule::Between(a, b)
                }
                "contains" => Rule::Contains(need(r.value, "value")?),
                "regex" => {
                    let Some(Value::String(p)) = r.value else {
                        return Err(format!(
                            "rules[{i}].value: a regex pattern string is required"
                        ));
                    };
                    if p.len() > MAX_PATTERN {
                        return Err(format!(
                            "rules[{i}].value: pattern longer than {MAX_PATTERN} bytes"
                        ));
                    }
                    Rule::Regex(Regex::new(&p).map_err(|e| format!("rules[{i}].value: {e}"))?)
                }
                "true" => Rule::True,
                "false" => Rule::False,
                "null" => Rule::Null,
                "not_null" => Rule::NotNull,
                "type_is" => {
                    let t = match r.value.as_ref().and_then(Value::as_str) {
                        Some("number") => "number",
                        Some("string") => "string",
                        Some("boolean") => "boolean",
                        Some("object") => "object",
                        Some("array") => "array",
                        Some("null") => "null",
                        _ => {
                            return Err(format!(
                                "rules[{i}].value: one of number, string, boolean, object, array, null"
                            ));
                        }
                    };
                    Rule::TypeIs(t)
                }
                "else" => Rule::Else,
                other => return Err(format!("rules[{i}].op: unknown op `{other}`")),
            };
            rules.push(rule);
        }
        let n = rules.len();
        Ok(SwitchNode {
            property,
            rules,
            check_all: cfg.check_all,
            matched: Vec::with_capacity(n),
        })
    }

    /// Which output ports a message goes to, in rule order (exposed for tests).
    pub fn route(&mut self, msg: &Msg) -> Vec<usize> {
        self.compute(msg);
        self.matched.clone()
    }

    fn compute(&mut self, msg: &Msg) {
        self.matched.clear();
        let got = msg.get(&self.property);
        let v = got.as_deref();
        let num = v.and_then(as_number);
        for (i, rule) in self.rules.iter().enumerate() {
            let hit = match (rule, v) {
                (Rule::Else, _) => self.matched.is_empty(),
                (Rule::Null, v) => matches!(v, None | Some(Value::Null)),
                (Rule::NotNull, v) => !matches!(v, None | Some(Value::Null)),
                (Rule::TypeIs(t), v) => type_name(v) == *t,
                (_, None) => false,
                (Rule::Eq(op), Some(v)) => equals(v, num, op),
                (Rule::Neq(op), Some(v)) => !equals(v, num, op),
                (Rule::Lt(op), Some(v)) => order(v, num, op) == Some(Ordering::Less),
                (Rule::Lte(op), Some(v)) => {
                    matches!(order(v, num, op), Some(Ordering::Less | Ordering::Equal))
                }
                (Rule::Gt(op), Some(v)) => order(v, num, op) == Some(Ordering::Greater),
                (Rule::Gte(op), Some(v)) => {
                    matches!(order(v, num, op), Some(Ordering::Greater | Ordering::Equal))
                }
                (Rule::Between(a, b), Some(v)) => {
                    matches!(order(v, num, a), Some(Ordering::Greater | Ordering::Equal))
                        && matches!(order(v, num, b), Some(Ordering::Less | Ordering::Equal))
                }
                (Rule::Contains(needle), Some(v)) => match (v, needle) {
                    (Value::String(s), Value::String(n)) => s.contains(n.as_str()),
                    (Value::String(s), n) => s.contains(&n.to_string()),
                    (Value::Array(a), n) => a.contains(n),
                    (Value::Object(m), Value::String(k)) => m.contains_key(k),
                    _ => false,
                },
                (Rule::Regex(re), Some(v)) => match v {
                    Value::String(s) => re.is_match(s),
                    Value::Number(n) => re.is_match(&n.to_string()),
                    Value::Bool(b) => re.is_match(if *b { "true" } else { "false" }),
                    _ => false,
                },
                (Rule::True, Some(v)) => *v == Value::Bool(true),
                (Rule::False, Some(v)) => *v == Value::Bool(false),
            };
            if hit {
                self.matched.push(i);
                if !self.check_all {
                    break;
                }
            }
        }
    }
}

impl Process for SwitchNode {
    fn process(&mut self, msg: Msg, out: &mut Emit<'_>) -> Result<(), NodeError> {
        self.compute(&msg);
        if let Some((&last, rest)) = self.matched.split_last() {
            for &port in rest {
                out.emit(port, msg.clone());
            }
            out.emit(last, msg);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sw(cfg: Value) -> SwitchNode {
        SwitchNode::new(serde_json::from_value(cfg).unwrap()).unwrap()
    }

    fn one(op: &str, value: Value, payload: Value) -> bool {
        let mut s = sw(json!({"rules": [{"op": op, "value": value}]}));
        s.route(&Msg::new(payload)) == vec![0]
    }

    #[test]
    fn comparison_ops() {
        assert!(one("eq", json!(30), json!(30.0)));
        assert!(one("eq", json!("30"), json!(30)));
        assert!(one("eq", json!("a"), json!("a")));
        assert!(!one("eq", json!("a"), json!("b")));
        assert!(one("neq", json!(1), json!(2)));
        assert!(!one("neq", json!(2), json!(2)));
        assert!(one("lt", json!(30), json!(29.9)));
        assert!(!one("lt", json!(30), json!(30)));
        assert!(one("lte", json!(30), json!(30)));
        assert!(one("gt", json!("30"), json!(31.2)));
        assert!(!one("gt", json!(30), json!(30)));
        assert!(one("gte", json!(30), json!(30)));
        assert!(one("lt", json!("b"), json!("a")));
        assert!(!one("gt", json!(1), json!({"x": 1})));
    }

    #[test]
    fn between_is_inclusive() {
        let mut s = sw(json!({"rules": [{"op": "between", "value": 10, "value2": 20}]}));
        for (p, hit) in [
            (9.9, false),
            (10.0, true),
            (15.0, true),
            (20.0, true),
            (20.1, false),
        ] {
            assert_eq!(s.route(&Msg::new(json!(p))) == vec![0], hit, "{p}");
        }
        assert!(
            SwitchNode::new(
                serde_json::from_value(json!({"rules": [{"op": "between", "value": 1}]})).unwrap()
            )
            .unwrap_err()
            .contains("value2")
        );
    }

    #[test]
    fn contains_regex_and_literal_ops() {
        assert!(one("contains", json!("lar"), json!("alarm")));
        assert!(one("contains", json!(3), json!([1, 2, 3])));
        assert!(!one("contains", json!(4), json!([1, 2, 3])));
        assert!(one("regex", json!("^sens.*[0-9]$"), json!("sensor7")));
        assert!(!one("regex", json!("^x"), json!("sensor7")));
        assert!(one("true", json!(null), json!(true)));
        assert!(!one("true", json!(null), json!("true")));
        assert!(one("false", json!(null), json!(false)));
        assert!(one("null", json!(null), json!(null)));
        assert!(one("not_null", json!(null), json!(0)));
        assert!(one("type_is", json!("array"), json!([])));
        assert!(one("type_is", json!("object"), json!({})));
        assert!(!one("type_is", json!("string"), json!(1)));
    }

    #[test]
    fn property_paths_and_missing_values() {
        let mut s = sw(json!({"property": "payload.temperature",
            "rules": [{"op": "gt", "value": 30}, {"op": "null"}]}));
        assert_eq!(s.route(&Msg::new(json!({"temperature": 31.2}))), vec![0]);
        assert_eq!(s.route(&Msg::new(json!({"humidity": 50}))), vec![1]);
        let mut t = sw(json!({"property": "topic", "rules": [{"op": "eq", "value": "a/b"}]}));
        assert_eq!(t.route(&Msg::with_topic(json!(1), "a/b")), vec![0]);
    }

    #[test]
    fn first_match_versus_check_all_and_else() {
        let rules = json!([{"op": "gt", "value": 10}, {"op": "gt", "value": 20}, {"op": "else"}]);
        let mut first = sw(json!({"rules": rules.clone()}));
        let mut all = sw(json!({"rules": rules, "check_all": true}));
        assert_eq!(first.route(&Msg::new(json!(25))), vec![0]);
        assert_eq!(all.route(&Msg::new(json!(25))), vec![0, 1]);
        assert_eq!(first.route(&Msg::new(json!(5))), vec![2]);
        assert_eq!(all.route(&Msg::new(json!(5))), vec![2]);
    }

    #[test]
    fn bad_rules_are_clear_errors() {
        let bad = |cfg: Value| SwitchNode::new(serde_json::from_value(cfg).unwrap()).unwrap_err();
        assert!(bad(json!({"rules": []})).contains("at least one"));
        assert!(bad(json!({"rules": [{"op": "bigger", "value": 1}]})).contains("bigger"));
        assert!(bad(json!({"rules": [{"op": "regex", "value": "("}]})).contains("rules[0].value"));
        assert!(bad(json!({"rules": [{"op": "type_is", "value": "float"}]})).contains("rules[0]"));
        assert!(bad(json!({"rules": [{"op": "gt"}]})).contains("rules[0].value"));
    }
}
