//! Flow variables: checking their declarations and parsing `${name}` references.
//!
//! A config string that is exactly `"${name}"` takes the variable's typed value; `${name}`
//! inside a longer string is replaced by the variable's text; `$${` writes a literal `${`.

use super::shape::RawVar;
use super::{Problems, parse_json};
use crate::def::VarType;
use crate::kinds::truncate;
use serde_json::Value;
use std::collections::HashMap;

/// The longest variable name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// A declared variable whose value parsed.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) ty: VarType,
    /// The typed value.
    pub(crate) value: Value,
    /// The value as written, used when the variable is part of a longer string.
    pub(crate) text: String,
}

/// What a name refers to.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// A usable variable.
    Found(&'a Entry),
    /// Declared, but its declaration has a problem that was already reported.
    Unusable,
    /// Not declared.
    Undefined,
}

/// The variables of a flow by name.
#[derive(Debug, Default)]
pub(crate) struct Table {
    map: HashMap<String, Option<Entry>>,
}

impl Table {
    pub(crate) fn get(&self, name: &str) -> Lookup<'_> {
        match self.map.get(name) {
            Some(Some(entry)) => Lookup::Found(entry),
            Some(None) => Lookup::Unusable,
            None => Lookup::Undefined,
        }
    }
}

/// Whether `name` may be used as a variable name: a letter or `_`, then letters, digits, `_`,
/// `-` or `.`, at most [`MAX_NAME_LEN`] bytes.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// What a secret variable without a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrets {
    /// Checking a flow (to save or publish it): its value is not known here, so references to
    /// it are not substituted and the fields that use it are checked on the device, with the
    /// device's value.
    Deferred,
    /// Compiling a flow to run it: every secret needs a value; a missing one is a problem.
    Required,
}

/// Checks every declaration and builds the table; the first declaration of a name wins.
pub(crate) fn check(vars: &[RawVar], secrets: Secrets, problems: &mut Problems) -> Table {
    let mut table = Table::default();
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for var in vars {
        let Some(name) = var.name.as_deref() else {
            continue;
        };
        let subject = var.subject();
        if !valid_name(name) {
            problems.push(
                &*subject,
                "name",
                format!(
                    "`{}` is not a valid variable name (a letter or _, then letters, digits, _, - or ., at most {MAX_NAME_LEN} bytes)",
                    truncate(name, 40)
                ),
            );
        }
        if let Some(first) = first_index.get(name) {
            problems.push(
                &*subject,
                "name",
                format!("declared twice (first as variable #{first})"),
            );
            continue;
        }
        first_index.insert(name, var.index);
        if var.secret && var.value.is_none() && secrets == Secrets::Required {
            problems.push(
                &*subject,
                "value",
                "is secret and has no value here: set it for this device with `floe device \
                 vars set <id> --secret name=value` (or a group), or in floed.toml [vars]",
            );
        }
        let entry = match (var.ty, var.value.as_deref()) {
            // A secret value that does not parse is reported without the value.
            (Some(ty), Some(text)) if var.secret => match parse_value(ty, text) {
                Ok(value) => Some(Entry {
                    ty,
                    value,
                    text: text.to_string(),
                }),
                Err(_) => {
                    problems.push(
                        &*subject,
                        "value",
                        format!("the secret value does not parse as {}", type_name(ty)),
                    );
                    None
                }
            },
            (Some(ty), Some(text)) => match parse_value(ty, text) {
                Ok(value) => Some(Entry {
                    ty,
                    value,
                    text: text.to_string(),
                }),
                Err(message) => {
                    problems.push(&*subject, "value", message);
                    None
                }
            },
            _ => None,
        };
        table.map.insert(name.to_string(), entry);
    }
    table
}

/// Parses a variable's text as its declared type.
pub(crate) fn parse_value(ty: VarType, text: &str) -> Result<Value, String> {
    let shown = truncate(text, 40);
    match ty {
        VarType::String => Ok(Value::from(text)),
        VarType::Boolean => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!(
                "`{shown}` does not parse as a boolean (write true or false)"
            )),
        },
        VarType::Number => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Number(_)) => Ok(v),
            _ => Err(format!("`{shown}` does not parse as a number")),
        },
        VarType::Json => parse_json(text.as_bytes(), "the value")
            .map_err(|e| format!("does not parse as JSON: {e}")),
    }
}

/// The name of a variable type as written in a flow.
pub(crate) fn type_name(ty: VarType) -> &'static str {
    match ty {
        VarType::Number => "number",
        VarType::String => "string",
        VarType::Boolean => "boolean",
        VarType::Json => "json",
    }
}

/// One part of a string with references.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// A `${name}` reference.
    Var(&'a str),
}

/// Splits a string into literal text and `${name}` references.
pub(crate) fn split(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        if at > 0 && rest.as_bytes()[at - 1] == b'$' {
            // `$${` is an escaped, literal `${`.
            pieces.push(Piece::Text(&rest[..at - 1]));
            pieces.push(Piece::Text("${"));
            rest = &rest[at + 2..];
            continue;
        }
        pieces.push(Piece::Text(&rest[..at]));
        let after = &rest[at + 2..];
        let Some(close) = after.find('}') else {
            return Err(
                "has `${` without a closing `}` (write `$${` for a literal `${`)".to_string(),
            );
        };
        let name = &after[..close];
        if !valid_name(name) {
            return Err(format!(
                "`${{{}}}` is not a valid variable reference (write `$${{` for a literal `${{`)",
                truncate(name, 40)
            ));
        }
        pieces.push(Piece::Var(name));
        rest = &after[close + 1..];
    }
    pieces.push(Piece::Text(rest));
    pieces.retain(|p| *p != Piece::Text(""));
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_finds_references_and_escapes() {
        assert_eq!(split("${a}"), Ok(vec![Piece::Var("a")]));
        assert_eq!(
            split("x/${a}/y"),
            Ok(vec![Piece::Text("x/"), Piece::Var("a"), Piece::Text("/y")])
        );
        assert_eq!(
            split("$${a}"),
            Ok(vec![Piece::Text("${"), Piece::Text("a}")])
        );
        assert_eq!(
            split("no refs $ here"),
            Ok(vec![Piece::Text("no refs $ here")])
        );
        assert!(split("${a").is_err());
        assert!(split("${a b}").is_err());
        assert!(split("${}").is_err());
    }

    #[test]
    fn values_parse_as_their_type() {
        assert_eq!(parse_value(VarType::Number, "30"), Ok(Value::from(30)));
        assert!(parse_value(VarType::Number, "thirty").is_err());
        assert!(parse_value(VarType::Number, "[1]").is_err());
        assert_eq!(
            parse_value(VarType::Boolean, "false"),
            Ok(Value::Bool(false))
        );
        assert!(parse_value(VarType::Boolean, "no").is_err());
        assert!(parse_value(VarType::Json, "{\"a\":").is_err());
        assert!(parse_value(VarType::Json, &"[".repeat(100)).is_err());
        assert_eq!(parse_value(VarType::String, "x"), Ok(Value::from("x")));
    }
}
