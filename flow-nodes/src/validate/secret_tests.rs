//! Secret variables: no value in the flow, references checked on the device, a value required
//! to run, and a bad secret value reported without the value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use serde_json::{Value, json};

fn flow(vars: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "nodes": [{"id": "out", "type": "mqtt_out", "config": {
            "broker": "mqtt://127.0.0.1:1883",
            "topic": "plant/${token}/alerts",
            "qos": "${level}"
        }}],
        "variables": vars
    }))
    .unwrap()
}

fn secret_vars() -> Value {
    json!([
        {"name": "token", "type": "string", "secret": true},
        {"name": "level", "type": "number", "value": "1"}
    ])
}

fn problems(result: Result<impl std::fmt::Debug, Invalid>) -> Vec<Problem> {
    match result {
        Err(Invalid::Problems(p)) => p,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn a_secret_declaration_without_a_value_validates_and_keeps_no_value() {
    let def = check(&flow(secret_vars()), Level::Complete).unwrap();
    let token = def.variables.iter().find(|v| v.name == "token").unwrap();
    assert!(token.secret);
    assert_eq!(token.value, None);
    // Serialized back, the declaration still has no value.
    let text = serde_json::to_string(token).unwrap();
    assert_eq!(text, r#"{"name":"token","type":"string","secret":true}"#);
    // A plain variable keeps its value and writes no `secret` key.
    let level = def.variables.iter().find(|v| v.name == "level").unwrap();
    assert_eq!(
        serde_json::to_string(level).unwrap(),
        r#"{"name":"level","type":"number","value":"1"}"#
    );
}

#[test]
fn a_value_in_a_secret_declaration_is_a_problem_naming_the_variable() {
    let vars = json!([
        {"name": "token", "type": "string", "secret": true, "value": "hunter2"},
        {"name": "level", "type": "number", "value": "1"}
    ]);
    let list = problems(check(&flow(vars.clone()), Level::Draft));
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0].subject, "variable token");
    assert_eq!(list[0].field, "value");
    assert!(
        list[0]
            .message
            .contains("a secret variable has no value in the flow")
    );
    assert!(!list[0].message.contains("hunter2"));
    // Refused when compiling too, even with a value given for it.
    let list = problems(compile_with_values(
        &flow(vars),
        &[("token".into(), "x".into())],
    ));
    assert_eq!(list[0].subject, "variable token");

    let bad = json!([{"name": "token", "type": "string", "secret": "yes"}]);
    let list = problems(check(&flow(bad), Level::Draft));
    assert!(
        list.iter()
            .any(|p| p.subject == "variable token" && p.field == "secret"),
        "{list:#?}"
    );
}

#[test]
fn compiling_needs_a_value_for_every_secret_and_substitutes_it() {
    let list = problems(compile_with_values(&flow(secret_vars()), &[]));
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0].subject, "variable token");
    assert!(list[0].message.contains("is secret and has no value here"));

    let compiled =
        compile_with_values(&flow(secret_vars()), &[("token".into(), "s3cr3t".into())]).unwrap();
    assert_eq!(
        compiled.nodes[0].config["topic"],
        json!("plant/s3cr3t/alerts")
    );
}

#[test]
fn a_secret_value_that_does_not_parse_is_reported_without_the_value() {
    let vars = json!([
        {"name": "token", "type": "string", "value": "t"},
        {"name": "level", "type": "number", "secret": true}
    ]);
    let list = problems(compile_with_values(
        &flow(vars),
        &[("level".into(), "not-a-number-xyzzy".into())],
    ));
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0].subject, "variable level");
    assert_eq!(list[0].message, "the secret value does not parse as number");
    assert!(!format!("{list:?}").contains("xyzzy"));
}

#[test]
fn a_reference_to_an_undeclared_name_is_still_a_problem_beside_secrets() {
    let bytes = serde_json::to_vec(&json!({
        "nodes": [{"id": "out", "type": "mqtt_out", "config": {
            "broker": "mqtt://127.0.0.1:1883",
            "topic": "plant/${nope}/${token}"
        }}],
        "variables": [{"name": "token", "type": "string", "secret": true}]
    }))
    .unwrap();
    let list = problems(check(&bytes, Level::Complete));
    assert_eq!(list.len(), 1, "{list:#?}");
    assert!(list[0].message.contains("undefined variable `nope`"));
}
