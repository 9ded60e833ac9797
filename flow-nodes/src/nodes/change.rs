//! `change`: sets, changes, deletes or moves message properties, rule by rule.
//!
//! Values are resolved as far as possible when the node starts (JSON text parsed, variables
//! looked up, a literal topic turned into a shared string), so that applying a rule to one
//! message is a pointer swap in the common case. Writes are copy-on-write: a payload shared with
//! another branch of a fan-out is copied only here, where it is modified.

use crate::msg::{Msg, PropPath};
use crate::task::NodeError;
use crate::task::{Emit, Process};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
pub(crate) struct ChangeConfig {
    rules: Vec<RuleConfig>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ValueType {
    #[default]
    Literal,
    Variable,
    Property,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum RuleConfig {
    Set {
        property: String,
        #[serde(default)]
        value: Value,
        #[serde(default)]
        value_type: ValueType,
    },
    Change {
        property: String,
        from: Value,
        to: Value,
    },
    Delete {
        property: String,
    },
    Move {
        property: String,
        to: String,
    },
}

#[derive(Debug)]
enum Rule {
    SetTopic(Arc<str>),
    SetValue(PropPath, Value),
    SetFrom(PropPath, PropPath),
    Change(PropPath, Value, Value),
    Delete(PropPath),
    Move(PropPath, PropPath),
}

/// The running change node.
#[derive(Debug)]
pub struct ChangeNode {
    rules: Vec<Rule>,
}

impl ChangeNode {
    pub(crate) fn new(
        cfg: ChangeConfig,
        variables: &BTreeMap<String, Value>,
    ) -> Result<Self, String> {
        if cfg.rules.is_empty() {
            return Err("rules: at least one rule is required".to_string());
        }
        let path = |i: usize, field: &str, p: &str| {
            PropPath::parse(p).map_err(|e| format!("rules[{i}].{field}: {e}"))
        };
        let mut rules = Vec::with_capacity(cfg.rules.len());
        for (i, r) in cfg.rules.into_iter().enumerate() {
            rules.push(match r {
                RuleConfig::Set {
                    property,
                    value,
                    value_type,
                } => {
                    let target = path(i, "property", &property)?;
                    let value = match value_type {
                        ValueType::Literal => value,
                        ValueType::Json => {
                            let Value::String(text) = value else {
                                return Err(format!(
                                    "rules[{i}].value: value_type json needs a string holding JSON"
                                ));
                            };
                            serde_json::from_str(&text)
                                .map_err(|e| format!("rules[{i}].value: not JSON: {e}"))?
                        }
                        ValueType::Variable => {
                            let Some(name) = value.as_str() else {
                                return Err(format!(
                                    "rules[{i}].value: value_type variable needs a variable name"
                                ));
                            };
                            variables.get(name).cloned().ok_or_else(|| {
                                format!("rules[{i}].value: no variable named `{name}`")
                            })?
                        }
                        ValueType::Property => {
                            let Some(src) = value.as_str() else {
                                return Err(format!(
                                    "rules[{i}].value: value_type property needs a property path"
                                ));
                            };
                            rules.push(Rule::SetFrom(target, path(i, "value", src)?));
                            continue;
                        }
                    };
                    match (target.as_str(), value) {
                        ("topic" | "msg.topic", Value::String(s)) => Rule::SetTopic(Arc::from(s)),
                        (_, v) => Rule::SetValue(target, v),
                    }
                }
                RuleConfig::Change { property, from, to } => {
                    Rule::Change(path(i, "property", &property)?, from, to)
                }
                RuleConfig::Delete { property } => Rule::Delete(path(i, "property", &property)?),
                RuleConfig::Move { property, to } => {
                    Rule::Move(path(i, "property", &property)?, path(i, "to", &to)?)
                }
            });
        }
        Ok(ChangeNode { rules })
    }

    /// Applies every rule to a message.
    pub fn apply(&self, msg: &mut Msg) -> Result<(), NodeError> {
        for rule in &self.rules {
            match rule {
                Rule::SetTopic(t) => msg.set_topic(t.clone()),
                Rule::SetValue(p, v) => msg.set(p, v.clone())?,
                Rule::SetFrom(p, src) => match msg.get(src).map(|v| v.into_owned()) {
                    Some(v) => msg.set(p, v)?,
                    None => {
                        msg.delete(p)?;
                    }
                },
                Rule::Change(p, from, to) => {
                    let Some(cur) = msg.get(p) else { continue };
                    let new = match (cur.as_ref(), from) {
                        (Value::String(s), Value::String(a)) if !a.is_empty() => {
                            let b = match to {
                                Value::String(b) => b.clone(),
                                other => other.to_string(),
                            };
                            Some(Value::String(s.replace(a.as_str(), &b)))
                        }
                        (v, a) if v == a => Some(to.clone()),
                        _ => None,
                    };
                    drop(cur);
                    if let Some(v) = new {
                        msg.set(p, v)?;
                    }
                }
                Rule::Delete(p) => {
                    msg.delete(p)?;
                }
                Rule::Move(from, to) => {
                    if let Some(v) = msg.delete(from)? {
                        msg.set(to, v)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Process for ChangeNode {
    fn process(&mut self, mut msg: Msg, out: &mut Emit<'_>) -> Result<(), NodeError> {
        self.apply(&mut msg)?;
        out.emit(0, msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(rules: Value) -> ChangeNode {
        let vars = BTreeMap::from([("limit".to_string(), json!(30))]);
        ChangeNode::new(
            serde_json::from_value(json!({ "rules": rules })).unwrap(),
            &vars,
        )
        .unwrap()
    }

    fn run(rules: Value, msg: Msg) -> Msg {
        let mut m = msg;
        node(rules).apply(&mut m).unwrap();
        m
    }

    #[test]
    fn set_from_literal_variable_property_and_json() {
        let m = run(
            json!([
                {"action": "set", "property": "topic", "value": "alert"},
                {"action": "set", "property": "payload.limit", "value": "limit", "value_type": "variable"},
                {"action": "set", "property": "copy", "value": "payload.t", "value_type": "property"},
                {"action": "set", "property": "payload.meta", "value": "{\"a\":[1,2]}", "value_type": "json"}
            ]),
            Msg::new(json!({"t": 31.5})),
        );
        assert_eq!(&*m.topic, "alert");
        assert_eq!(
            *m.payload,
            json!({"t": 31.5, "limit": 30, "meta": {"a": [1, 2]}})
        );
        assert_eq!(m.props.unwrap()["copy"], json!(31.5));
    }

    #[test]
    fn change_replaces_in_strings_and_whole_values() {
        let m = run(
            json!([{"action": "change", "property": "payload.s", "from": "a", "to": "o"},
                   {"action": "change", "property": "payload.n", "from": 1, "to": "one"},
                   {"action": "change", "property": "payload.k", "from": 5, "to": 6}]),
            Msg::new(json!({"s": "banana", "n": 1, "k": 4})),
        );
        assert_eq!(*m.payload, json!({"s": "bonono", "n": "one", "k": 4}));
    }

    #[test]
    fn delete_and_move() {
        let m = run(
            json!([{"action": "move", "property": "payload.temperature", "to": "reading.t"},
                   {"action": "delete", "property": "payload.junk"}]),
            Msg::new(json!({"temperature": 21, "junk": true, "keep": 1})),
        );
        assert_eq!(*m.payload, json!({"keep": 1}));
        assert_eq!(m.props.unwrap()["reading"], json!({"t": 21}));
    }

    #[test]
    fn modifying_a_shared_payload_leaves_the_other_holder_alone() {
        let original = Msg::new(json!({"x": 1}));
        let shared = original.clone();
        let changed = run(
            json!([{"action": "set", "property": "payload.x", "value": 2}]),
            shared,
        );
        assert_eq!(original.payload["x"], json!(1));
        assert_eq!(changed.payload["x"], json!(2));
    }

    #[test]
    fn bad_config_is_an_error_naming_the_rule() {
        let vars = BTreeMap::new();
        let mk = |rules: Value| {
            ChangeNode::new(
                serde_json::from_value(json!({ "rules": rules })).unwrap(),
                &vars,
            )
            .unwrap_err()
        };
        assert!(mk(json!([])).contains("at least one"));
        assert!(
            mk(json!([{"action":"set","property":"p","value":"nope","value_type":"variable"}]))
                .contains("rules[0].value")
        );
        assert!(
            mk(json!([{"action":"set","property":"p","value":"{","value_type":"json"}]))
                .contains("not JSON")
        );
        assert!(
            mk(json!([{"action":"set","property":"a..b","value":1}])).contains("rules[0].property")
        );
        let unknown: Result<ChangeConfig, _> =
            serde_json::from_value(json!({"rules": [{"action": "explode", "property": "x"}]}));
        assert!(unknown.unwrap_err().to_string().contains("explode"));
    }

    #[test]
    fn writing_through_a_scalar_is_an_error() {
        let mut m = Msg::new(json!(5));
        let err = node(json!([{"action": "set", "property": "payload.x", "value": 1}]))
            .apply(&mut m)
            .unwrap_err();
        assert!(err.to_string().contains("payload.x"));
    }
}
