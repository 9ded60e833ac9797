//! Tests for the validator: one per rule (each names the right subject and field), the
//! reference's own example at both levels, the input caps, compile's output, and property
//! tests that no input makes it panic.

use super::*;
use proptest::prelude::*;
use serde_json::{Value, json};

/// The reference's "Create a flow" definition, configs empty.
fn reference() -> Value {
    json!({
        "nodes": [
            {"id": "n1", "type": "dht", "name": "DHT22 Sensor", "config": {}, "x": 100, "y": 200},
            {"id": "n2", "type": "switch", "name": "Threshold", "config": {}, "x": 300, "y": 200},
            {"id": "n3", "type": "mqtt_out", "name": "Alert", "config": {}, "x": 500, "y": 200}
        ],
        "connections": [
            {"source": "n1", "target": "n2"},
            {"source": "n2", "target": "n3"}
        ],
        "variables": [
            {"name": "threshold", "type": "number", "value": "30"}
        ]
    })
}

const EXAMPLE: &str = include_str!("../../../examples/temperature-alert.json");

fn example() -> Value {
    serde_json::from_str(EXAMPLE).unwrap()
}

fn run(flow: &Value, level: Level) -> Result<Flow, Invalid> {
    check(&serde_json::to_vec(flow).unwrap(), level)
}

fn problems(flow: &Value, level: Level) -> Vec<Problem> {
    match run(flow, level) {
        Ok(_) => panic!("expected problems, the flow passed"),
        Err(Invalid::Problems(p)) => p,
        Err(Invalid::Input(e)) => panic!("expected problems, got input error {e}"),
    }
}

/// Asserts that exactly one problem names `subject` and `field` and its message contains
/// `needle`.
#[track_caller]
fn assert_problem(list: &[Problem], subject: &str, field: &str, needle: &str) {
    let hits: Vec<&Problem> = list
        .iter()
        .filter(|p| p.subject == subject && p.field == field && p.message.contains(needle))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "no single `{subject}: {field}: …{needle}…` in {list:#?}"
    );
}

/// A minimal complete flow with one node of `kind` with `config`, fed or feeding a debug node
/// as the kind allows, so only the node under test can produce problems.
fn single(kind: &str, config: Value) -> Value {
    json!({"nodes": [{"id": "a", "type": kind, "config": config}]})
}

fn with_vars(mut flow: Value, vars: Value) -> Value {
    flow["variables"] = vars;
    flow
}

#[test]
fn reference_example_passes_draft_and_lists_every_missing_field_at_complete() {
    let flow = run(&reference(), Level::Draft).unwrap();
    assert_eq!(flow.nodes.len(), 3);
    assert_eq!(flow.nodes[1].kind, "switch");
    assert_eq!(flow.connections[1].target, "n3");

    let list = problems(&reference(), Level::Complete);
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_problem(&list, "node n2", "config.rules", "missing");
    assert_problem(&list, "node n3", "config.broker", "missing");
}

#[test]
fn example_passes_complete_and_compiles_with_defaults_and_typed_variables() {
    check(EXAMPLE.as_bytes(), Level::Complete).unwrap();
    let compiled = compile(EXAMPLE.as_bytes(), &[]).unwrap();
    let dht = &compiled.nodes[0];
    assert_eq!((dht.inputs, dht.outputs), (0, 1));
    assert_eq!(dht.config["interval"], json!(2000));
    assert_eq!(dht.config["simulate"], json!(false));
    assert_eq!(dht.config["retries"], json!(3));
    assert_eq!(
        dht.config["device"],
        json!("/sys/bus/iio/devices/iio:device0")
    );
    let switch = &compiled.nodes[1];
    assert_eq!((switch.inputs, switch.outputs), (1, 1));
    assert_eq!(switch.config["rules"], json!([{"op": "gt", "value": 30}]));
    assert_eq!(switch.config["check_all"], json!(false));
    let mqtt = &compiled.nodes[2];
    assert_eq!((mqtt.inputs, mqtt.outputs), (1, 0));
    assert_eq!(mqtt.config["broker"], json!("mqtt://127.0.0.1:1883"));
    assert_eq!(mqtt.config["qos"], json!(1));
    assert_eq!(mqtt.config["client_id"], json!("floe-n3"));
    assert_eq!(mqtt.config["keep_alive"], json!(30_000));
    assert_eq!(mqtt.config["buffer"], json!(1000));
    assert_eq!(mqtt.config["retain"], json!(false));
    assert!(!mqtt.config.contains_key("username"));
    assert_eq!(
        compiled.edges,
        vec![
            Edge {
                from: 0,
                output: 0,
                to: 1,
                input: 0
            },
            Edge {
                from: 1,
                output: 0,
                to: 2,
                input: 0
            }
        ]
    );
}

#[test]
fn every_kind_compiles_from_its_required_fields_alone_with_every_default() {
    let configs = [
        ("inject", json!({})),
        ("dht", json!({})),
        ("sensor", json!({"path": "/tmp/x"})),
        ("switch", json!({"rules": [{"op": "else"}]})),
        (
            "change",
            json!({"rules": [{"action": "delete", "property": "payload.x"}]}),
        ),
        ("delay", json!({})),
        ("debug", json!({})),
        ("mqtt_out", json!({"broker": "mqtt://127.0.0.1"})),
        (
            "mqtt_in",
            json!({"broker": "mqtt://127.0.0.1", "topic": "a/#"}),
        ),
    ];
    for (kind, config) in configs {
        let flow = serde_json::to_vec(&single(kind, config)).unwrap();
        let compiled = compile(&flow, &[]).unwrap_or_else(|e| panic!("{kind}: {e:?}"));
        let spec = kinds::lookup(kind).unwrap();
        for field in spec.fields {
            let has_default = !matches!(
                field.default,
                kinds::FieldDefault::Optional | kinds::FieldDefault::Required
            );
            if has_default {
                assert!(
                    compiled.nodes[0].config.contains_key(field.name),
                    "{kind}.{}",
                    field.name
                );
            }
        }
    }
}

#[test]
fn every_example_flow_passes_complete_validation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = read_capped(&path).unwrap();
            if let Err(e) = compile(&bytes, &[]) {
                panic!("{}: {e:?}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 2, "examples not found in {}", dir.display());
}

#[test]
fn bridge_example_compiles_every_kind_of_value() {
    let bytes = include_bytes!("../../../examples/mqtt-bridge.json");
    let compiled = compile(bytes, &[]).unwrap();
    let node = |id: &str| compiled.nodes.iter().find(|n| n.id == id).unwrap();
    assert_eq!(node("in").inputs, 0);
    assert_eq!(node("in").config["topic"], json!("sensors/+/temperature"));
    assert_eq!(
        node("tag").config["rules"][0],
        json!({"action": "set", "property": "site", "value": "plant-7", "value_type": "literal"})
    );
    assert_eq!(
        node("tag").config["rules"][1]["value"],
        json!({"low": 5, "high": 35.5})
    );
    assert_eq!(
        node("band").config["rules"][0],
        json!({"op": "between", "value": 5, "value2": 35.5})
    );
    assert_eq!(node("band").outputs, 2);
    assert_eq!(node("limit").config["period"], json!(1000));
    assert_eq!(node("limit").config["delay"], json!(1000));
    assert_eq!(node("out").config["topic"], json!("plant-7/alerts"));
    assert_eq!(node("beat").config["interval"], json!(60_000));
    assert_eq!(
        node("beat").config["payload"],
        json!({"alive": true, "site": "plant-7"})
    );
    assert_eq!(node("bad").outputs, 0);
    assert_eq!(compiled.edges.len(), 7);
}

#[test]
fn durations_compile_to_milliseconds() {
    let flow = single("inject", json!({"interval": "1.5s", "once_delay": "250ms"}));
    let compiled = compile(&serde_json::to_vec(&flow).unwrap(), &[]).unwrap();
    assert_eq!(compiled.nodes[0].config["interval"], json!(1500));
    assert_eq!(compiled.nodes[0].config["once_delay"], json!(250));
    assert!(!compiled.nodes[0].config.contains_key("payload"));
}

#[test]
fn report_has_one_line_per_problem() {
    let Err(err) = check(
        serde_json::to_vec(&reference()).unwrap().as_slice(),
        Level::Complete,
    ) else {
        panic!("the reference example is not complete");
    };
    assert_eq!(err.problems().len(), 2);
    assert_eq!(
        err.report(),
        "node n2: config.rules: missing; a switch node needs it (see NODES.md)\n\
         node n3: config.broker: missing; a mqtt_out node needs it (see NODES.md)"
    );
    let input = check(b"{", Level::Draft).unwrap_err();
    assert!(input.problems().is_empty());
    assert!(input.report().contains("truncated"));
}

#[test]
fn empty_flow() {
    for level in [Level::Draft, Level::Complete] {
        let list = problems(&json!({"nodes": []}), level);
        assert_problem(&list, "flow", "nodes", "empty");
        assert_problem(&problems(&json!({}), level), "flow", "nodes", "empty");
    }
}

#[test]
fn unknown_node_type() {
    let list = problems(&single("dhtt", json!({})), Level::Draft);
    assert_problem(&list, "node a", "type", "unknown node type `dhtt`");
}

#[test]
fn duplicate_id() {
    let flow = json!({"nodes": [
        {"id": "a", "type": "inject"}, {"id": "a", "type": "debug"}
    ]});
    assert_problem(
        &problems(&flow, Level::Draft),
        "node a",
        "id",
        "duplicate id",
    );
}

#[test]
fn missing_and_mistyped_node_fields_are_named_by_index() {
    let flow = json!({"nodes": [{"type": "inject"}, {"id": 7, "type": "debug"}, "n"]});
    let list = problems(&flow, Level::Draft);
    assert_problem(&list, "node #0", "id", "missing");
    assert_problem(&list, "node #1", "id", "must be a string");
    assert_problem(&list, "node #2", "", "must be an object");
}

#[test]
fn dangling_connection() {
    let mut flow = reference();
    flow["connections"][1]["target"] = json!("n9");
    let list = problems(&flow, Level::Draft);
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_problem(&list, "connection 1", "target", "no node has the id `n9`");
}

#[test]
fn ports_out_of_range() {
    let flow = json!({
        "nodes": [
            {"id": "s", "type": "switch", "config": {"rules": [{"op": "true"}, {"op": "else"}]}},
            {"id": "d", "type": "debug"},
            {"id": "i", "type": "inject"}
        ],
        "connections": [
            {"source": "i", "target": "s"},
            {"source": "s", "output": 1, "target": "d"},
            {"source": "s", "output": 2, "target": "d"},
            {"source": "i", "target": "d", "input": 1},
            {"source": "i", "output": 1, "target": "d"}
        ]
    });
    let list = problems(&flow, Level::Draft);
    assert_eq!(list.len(), 3, "{list:#?}");
    assert_problem(&list, "connection 2", "output", "has 2 output(s)");
    assert_problem(&list, "connection 3", "input", "input 1 does not exist");
    assert_problem(&list, "connection 4", "output", "has 1 output(s)");
}

#[test]
fn connection_into_a_source_or_out_of_a_sink() {
    let flow = json!({
        "nodes": [{"id": "i", "type": "inject"}, {"id": "d", "type": "debug"}],
        "connections": [{"source": "d", "target": "i"}]
    });
    let list = problems(&flow, Level::Draft);
    assert_problem(&list, "connection 0", "target", "a source with no input");
    assert_problem(&list, "connection 0", "source", "has no output");
}

#[test]
fn duplicate_connection() {
    let mut flow = reference();
    flow["connections"] =
        json!([{"source": "n1", "target": "n2"}, {"source": "n1", "target": "n2"}]);
    assert_problem(
        &problems(&flow, Level::Draft),
        "connection 1",
        "",
        "duplicate of connection 0",
    );
}

#[test]
fn missing_required_config_is_tolerated_in_drafts_only() {
    let flow = single("sensor", json!({}));
    run(&flow, Level::Draft).unwrap();
    assert_problem(
        &problems(&flow, Level::Complete),
        "node a",
        "config.path",
        "missing",
    );
}

#[test]
fn wrong_type_is_structural_even_in_drafts() {
    let flow = single("dht", json!({"retries": "3", "simulate": 1, "model": 22}));
    for level in [Level::Draft, Level::Complete] {
        let list = problems(&flow, level);
        assert_problem(
            &list,
            "node a",
            "config.retries",
            "must be an integer from 0 to 10, not a string",
        );
        assert_problem(&list, "node a", "config.simulate", "must be true or false");
        assert_problem(&list, "node a", "config.model", "one of dht11, dht22");
    }
}

#[test]
fn out_of_range() {
    let list = problems(
        &single(
            "mqtt_out",
            json!({"broker": "mqtt://h:1", "qos": 3, "buffer": 0}),
        ),
        Level::Draft,
    );
    assert_problem(&list, "node a", "config.qos", "out of range: 3");
    assert_problem(&list, "node a", "config.buffer", "out of range: 0");
    let list = problems(
        &single("dht", json!({"model": "dht22", "interval": "1s"})),
        Level::Draft,
    );
    assert_problem(&list, "node a", "config.interval", "dht22 minimum of 2s");
    // A simulated sensor has no hardware sampling limit.
    run(
        &single(
            "dht",
            json!({"model": "dht22", "interval": "500ms", "simulate": true}),
        ),
        Level::Complete,
    )
    .expect("a simulated dht22 may be read every 500 ms");
    run(
        &single("dht", json!({"model": "dht11", "interval": "1s"})),
        Level::Complete,
    )
    .unwrap();
    let list = problems(&single("inject", json!({"interval": "5ms"})), Level::Draft);
    assert_problem(&list, "node a", "config.interval", "minimum of 10ms");
    let list = problems(&single("delay", json!({"rate": 0})), Level::Draft);
    assert_problem(&list, "node a", "config.rate", "greater than 0");
}

#[test]
fn unknown_config_field_is_named_with_a_suggestion() {
    let list = problems(&single("inject", json!({"interva1": "5s"})), Level::Draft);
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_problem(
        &list,
        "node a",
        "config.interva1",
        "did you mean `interval`",
    );
}

#[test]
fn unknown_fields_on_nodes_connections_variables_and_the_flow() {
    let flow = json!({
        "nodes": [{"id": "a", "type": "inject", "wires": []}],
        "conections": [],
        "variables": [{"name": "v", "type": "string", "value": "", "default": ""}]
    });
    let list = problems(&flow, Level::Draft);
    assert_problem(&list, "node a", "wires", "unknown field");
    assert_problem(&list, "flow", "conections", "did you mean `connections`");
    assert_problem(&list, "variable v", "default", "unknown field");
}

#[test]
fn bad_duration() {
    let list = problems(
        &single("sensor", json!({"path": "/x", "interval": "5 seconds"})),
        Level::Draft,
    );
    assert_problem(&list, "node a", "config.interval", "is not a duration");
}

#[test]
fn invalid_and_oversized_regex() {
    let flow = single(
        "switch",
        json!({"rules": [
            {"op": "regex", "value": "(open"},
            {"op": "regex", "value": "a".repeat(kinds::MAX_REGEX_LEN + 1)},
            {"op": "regex", "value": "^ok$"}
        ]}),
    );
    let list = problems(&flow, Level::Draft);
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_problem(
        &list,
        "node a",
        "config.rules[0].value",
        "invalid regular expression",
    );
    assert_problem(
        &list,
        "node a",
        "config.rules[1].value",
        "longer than the limit",
    );
}

#[test]
fn switch_rule_problems() {
    let flow = single(
        "switch",
        json!({"rules": [
            {"op": "greater", "value": 1},
            {"op": "between", "value": 5, "value2": 1},
            {"op": "true", "value": 1},
            {"op": "type_is", "value": "integer"},
            {"op": "eq", "valeu": 1},
            {"op": "lt", "value": [1]},
            {"op": "gt"}
        ]}),
    );
    let list = problems(&flow, Level::Complete);
    assert_problem(
        &list,
        "node a",
        "config.rules[0].op",
        "unknown op `greater`",
    );
    assert_problem(
        &list,
        "node a",
        "config.rules[1].value2",
        "not be less than value",
    );
    assert_problem(&list, "node a", "config.rules[2].value", "takes no value");
    assert_problem(
        &list,
        "node a",
        "config.rules[3].value",
        "op `type_is` needs one of",
    );
    assert_problem(
        &list,
        "node a",
        "config.rules[4].valeu",
        "did you mean `value`",
    );
    assert_problem(&list, "node a", "config.rules[4].value", "missing");
    assert_problem(
        &list,
        "node a",
        "config.rules[5].value",
        "number or a string",
    );
    assert_problem(&list, "node a", "config.rules[6].value", "missing");
    // A rule half written is fine in a draft; everything present still has to be right.
    let draft = problems(&flow, Level::Draft);
    assert!(
        draft.iter().all(|p| !p.message.contains("missing")),
        "{draft:#?}"
    );
    let empty = problems(&single("switch", json!({"rules": []})), Level::Draft);
    assert_problem(&empty, "node a", "config.rules", "at least one rule");
}

#[test]
fn change_rule_problems_and_compiled_literals() {
    let flow = with_vars(
        single(
            "change",
            json!({"rules": [
                {"action": "rename", "property": "p"},
                {"action": "set", "property": "payload..x", "value": 1},
                {"action": "set", "property": "p", "value": "nope", "value_type": "variable"},
                {"action": "set", "property": "p", "value": "{", "value_type": "json"},
                {"action": "move", "property": "p"},
            ]}),
        ),
        json!([]),
    );
    let list = problems(&flow, Level::Complete);
    assert_problem(
        &list,
        "node a",
        "config.rules[0].action",
        "unknown action `rename`",
    );
    assert_problem(&list, "node a", "config.rules[1].property", "empty segment");
    assert_problem(
        &list,
        "node a",
        "config.rules[2].value",
        "undefined variable `nope`",
    );
    assert_problem(&list, "node a", "config.rules[3].value", "value_type json");
    assert_problem(&list, "node a", "config.rules[4].to", "missing");

    let good = with_vars(
        single(
            "change",
            json!({"rules": [
                {"action": "set", "property": "limit", "value": "max", "value_type": "variable"},
                {"action": "set", "property": "obj", "value": "{\"a\":[1]}", "value_type": "json"},
                {"action": "set", "property": "t", "value": "x"}
            ]}),
        ),
        json!([{"name": "max", "type": "number", "value": "7.5"}]),
    );
    let compiled = compile(&serde_json::to_vec(&good).unwrap(), &[]).unwrap();
    assert_eq!(
        compiled.nodes[0].config["rules"],
        json!([
            {"action": "set", "property": "limit", "value": 7.5, "value_type": "literal"},
            {"action": "set", "property": "obj", "value": {"a": [1]}, "value_type": "literal"},
            {"action": "set", "property": "t", "value": "x", "value_type": "literal"}
        ])
    );
}

#[test]
fn variable_whose_value_does_not_parse() {
    let flow = with_vars(
        reference(),
        json!([
            {"name": "threshold", "type": "number", "value": "thirty"},
            {"name": "on", "type": "boolean", "value": "yes"},
            {"name": "doc", "type": "json", "value": "{"},
            {"name": "t", "type": "text", "value": "x"},
            {"name": "bad name", "type": "string", "value": "x"},
            {"name": "on", "type": "boolean", "value": "true"}
        ]),
    );
    let list = problems(&flow, Level::Draft);
    assert_problem(
        &list,
        "variable threshold",
        "value",
        "does not parse as a number",
    );
    assert_problem(&list, "variable on", "value", "does not parse as a boolean");
    assert_problem(&list, "variable doc", "value", "does not parse as JSON");
    assert_problem(&list, "variable t", "type", "unknown variable type `text`");
    assert_problem(
        &list,
        "variable bad name",
        "name",
        "not a valid variable name",
    );
    assert_problem(&list, "variable on", "name", "declared twice");
}

#[test]
fn reference_to_an_undefined_variable() {
    let flow = single(
        "mqtt_out",
        json!({"broker": "${broker}", "topic": "a/${room}/t"}),
    );
    let list = problems(&flow, Level::Draft);
    assert_problem(
        &list,
        "node a",
        "config.broker",
        "undefined variable `broker`",
    );
    assert_problem(&list, "node a", "config.topic", "undefined variable `room`");
    let bad = problems(&single("inject", json!({"topic": "${oops"})), Level::Draft);
    assert_problem(&bad, "node a", "config.topic", "without a closing");
}

#[test]
fn a_broken_variable_is_reported_once_not_at_every_use() {
    let flow = with_vars(
        single("switch", json!({"rules": [{"op": "gt", "value": "${t}"}]})),
        json!([{"name": "t", "type": "number", "value": "x"}]),
    );
    let list = problems(&flow, Level::Draft);
    assert_eq!(list.len(), 1, "{list:#?}");
}

#[test]
fn variable_of_the_wrong_type_for_the_field() {
    let flow = with_vars(
        single(
            "mqtt_out",
            json!({"broker": "mqtt://h", "qos": "${q}", "retain": "${r}"}),
        ),
        json!([
            {"name": "q", "type": "string", "value": "1"},
            {"name": "r", "type": "number", "value": "1"}
        ]),
    );
    let list = problems(&flow, Level::Draft);
    assert_problem(
        &list,
        "node a",
        "config.qos",
        "`${q}` is the string variable `q`, but qos",
    );
    assert_problem(
        &list,
        "node a",
        "config.retain",
        "is the number variable `r`",
    );
    // The same values from variables of the right type pass, and compile typed.
    let flow = with_vars(
        single(
            "mqtt_out",
            json!({"broker": "mqtt://h", "qos": "${q}", "retain": "${r}"}),
        ),
        json!([
            {"name": "q", "type": "number", "value": "1"},
            {"name": "r", "type": "boolean", "value": "true"}
        ]),
    );
    let compiled = compile(&serde_json::to_vec(&flow).unwrap(), &[]).unwrap();
    assert_eq!(compiled.nodes[0].config["qos"], json!(1));
    assert_eq!(compiled.nodes[0].config["retain"], json!(true));
}

#[test]
fn embedded_references_and_escapes_substitute_text() {
    let flow = with_vars(
        single(
            "inject",
            json!({"topic": "a/${room}/$${literal}", "payload": {"v": ["${n}"]}}),
        ),
        json!([
            {"name": "room", "type": "string", "value": "kitchen"},
            {"name": "n", "type": "number", "value": "2"}
        ]),
    );
    let compiled = compile(&serde_json::to_vec(&flow).unwrap(), &[]).unwrap();
    assert_eq!(
        compiled.nodes[0].config["topic"],
        json!("a/kitchen/${literal}")
    );
    assert_eq!(compiled.nodes[0].config["payload"], json!({"v": [2]}));
}

#[test]
fn a_json_variable_can_hold_a_whole_rule_list_and_sets_the_output_count() {
    let flow = json!({
        "nodes": [
            {"id": "i", "type": "inject"},
            {"id": "s", "type": "switch", "config": {"rules": "${rules}"}},
            {"id": "d", "type": "debug"}
        ],
        "connections": [
            {"source": "i", "target": "s"},
            {"source": "s", "output": 1, "target": "d"}
        ],
        "variables": [
            {"name": "rules", "type": "json", "value": "[{\"op\":\"lt\",\"value\":0},{\"op\":\"else\"}]"}
        ]
    });
    let compiled = compile(&serde_json::to_vec(&flow).unwrap(), &[]).unwrap();
    assert_eq!(compiled.nodes[1].outputs, 2);
    assert_eq!(compiled.nodes[1].config["rules"][1], json!({"op": "else"}));
    let mut wrong_port = flow.clone();
    wrong_port["connections"][1]["output"] = json!(2);
    assert_problem(
        &problems(&wrong_port, Level::Draft),
        "connection 1",
        "output",
        "has 2 output(s)",
    );
}

#[test]
fn overrides_replace_values_before_validation() {
    let over = |name: &str, value: &str| vec![(name.to_string(), value.to_string())];
    let compiled = compile(EXAMPLE.as_bytes(), &over("threshold", "25.5")).unwrap();
    assert_eq!(compiled.nodes[1].config["rules"][0]["value"], json!(25.5));
    let compiled = compile(EXAMPLE.as_bytes(), &over("interval", "5s")).unwrap();
    assert_eq!(compiled.nodes[0].config["interval"], json!(5000));

    let Err(Invalid::Problems(list)) = compile(EXAMPLE.as_bytes(), &over("threshold", "hot"))
    else {
        panic!("a bad override passed");
    };
    assert_problem(
        &list,
        "variable threshold",
        "value",
        "does not parse as a number",
    );
    let Err(Invalid::Problems(list)) = compile(EXAMPLE.as_bytes(), &over("interval", "1s")) else {
        panic!("an override below the dht22 limit passed");
    };
    assert_problem(&list, "node n1", "config.interval", "dht22 minimum");
    let Err(Invalid::Problems(list)) = compile(EXAMPLE.as_bytes(), &over("nope", "1")) else {
        panic!("an override for an undeclared variable passed");
    };
    assert_problem(&list, "variable nope", "", "does not declare");
}

#[test]
fn device_values_ignore_undeclared_names_but_still_check_declared_ones() {
    let values = vec![
        ("threshold".to_string(), "12".to_string()),
        ("not_in_this_flow".to_string(), "x".to_string()),
    ];
    let compiled = super::compile_with_values(EXAMPLE.as_bytes(), &values).unwrap();
    assert_eq!(compiled.nodes[1].config["rules"][0]["value"], json!(12));
    let bad = vec![("threshold".to_string(), "hot".to_string())];
    let Err(Invalid::Problems(list)) = super::compile_with_values(EXAMPLE.as_bytes(), &bad) else {
        panic!("a bad device value passed");
    };
    assert_problem(
        &list,
        "variable threshold",
        "value",
        "does not parse as a number",
    );
    assert!(super::check_variable_value(crate::def::VarType::Number, "1.5").is_ok());
    assert!(super::check_variable_value(crate::def::VarType::Boolean, "yes").is_err());
}

#[test]
fn inject_that_would_never_fire() {
    let flow = single("inject", json!({"once": false}));
    run(&flow, Level::Draft).unwrap();
    assert_problem(
        &problems(&flow, Level::Complete),
        "node a",
        "config.interval",
        "never fire",
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let flow = json!({
        "nodes": [
            {"id": "n1", "type": "dht", "config": {"interva1": "2s"}},
            {"id": "n1", "type": "switch", "config": {"rules": [{"op": "regex", "value": "("}]}},
            {"id": "n3", "type": "lamp"}
        ],
        "connections": [{"source": "n1", "target": "n4"}],
        "variables": [{"name": "x", "type": "number", "value": "x"}]
    });
    let list = problems(&flow, Level::Draft);
    assert_problem(&list, "node n1", "config.interva1", "unknown field");
    assert_problem(&list, "node n1", "id", "duplicate");
    assert_problem(
        &list,
        "node n1",
        "config.rules[0].value",
        "regular expression",
    );
    assert_problem(&list, "node n3", "type", "unknown node type");
    assert_problem(&list, "connection 0", "target", "n4");
    assert_problem(&list, "variable x", "value", "number");
    assert_eq!(list.len(), 6, "{list:#?}");
}

#[test]
fn problem_lists_are_bounded() {
    let nodes: Vec<Value> = (0..MAX_PROBLEMS + 10)
        .map(|i| json!({"id": format!("n{i}"), "type": "nope"}))
        .collect();
    let list = problems(&json!({ "nodes": nodes }), Level::Draft);
    assert_eq!(list.len(), MAX_PROBLEMS + 1);
    assert!(list[MAX_PROBLEMS].message.contains("10 further problem(s)"));
}

#[test]
fn substitution_cannot_blow_up_the_flow() {
    let big = "x".repeat(1024 * 1024);
    let nodes: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("n{i}"), "type": "inject", "config": {"topic": "${big}"}}))
        .collect();
    let flow =
        json!({"nodes": nodes, "variables": [{"name": "big", "type": "string", "value": big}]});
    let list = problems(&flow, Level::Draft);
    assert!(
        list.iter()
            .any(|p| p.message.contains("variable substitution would add")),
        "{list:#?}"
    );
    assert!(list.len() <= 2, "one report is enough: {list:#?}");
}

#[test]
fn input_caps_and_parse_errors() {
    let input_err = |bytes: &[u8]| match check(bytes, Level::Draft) {
        Err(Invalid::Input(e)) => e.to_string(),
        other => panic!("expected an input error, got {other:?}"),
    };
    assert!(input_err(b"nodes: []").contains("not valid JSON"));
    assert!(input_err(&EXAMPLE.as_bytes()[..EXAMPLE.len() / 2]).contains("truncated"));
    assert!(input_err(b"[1, 2]").contains("must be a JSON object"));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(input_err(deep.as_bytes()).contains("more than 64 levels"));
    let mut big = vec![b' '; MAX_INPUT_BYTES + 1];
    big[0] = b'{';
    assert!(input_err(&big).contains("larger than"));
    // Brackets inside strings do not count towards depth.
    let in_string =
        json!({"nodes": [{"id": "a", "type": "inject", "config": {"topic": "[".repeat(500)}}]});
    run(&in_string, Level::Draft).unwrap();
    let just_deep_enough = format!(
        "{{\"nodes\":[{{\"id\":\"a\",\"type\":\"inject\",\"config\":{{\"payload\":{}1{}}}}}]}}",
        "[".repeat(MAX_DEPTH - 4),
        "]".repeat(MAX_DEPTH - 4)
    );
    check(just_deep_enough.as_bytes(), Level::Draft).unwrap();
}

#[test]
fn read_capped_refuses_big_files_without_reading_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.json");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(100 * 1024 * 1024).unwrap();
    let err = read_capped(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let ok = dir.path().join("ok.json");
    std::fs::write(&ok, EXAMPLE).unwrap();
    assert_eq!(read_capped(&ok).unwrap(), EXAMPLE.as_bytes());
}

/// Replaces one random sub-value of `v` (walking down along `path`) with `replacement`.
fn mutate(v: &mut Value, path: &[usize], replacement: Value) {
    let Some((&step, rest)) = path.split_first() else {
        *v = replacement;
        return;
    };
    match v {
        Value::Array(items) if !items.is_empty() => {
            let i = step % items.len();
            mutate(&mut items[i], rest, replacement);
        }
        Value::Object(map) if !map.is_empty() => {
            let i = step % map.len();
            if let Some(next) = map.values_mut().nth(i) {
                mutate(next, rest, replacement);
            }
        }
        _ => *v = replacement,
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z0-9${}./:#+ ]{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "${threshold}",
            "${broker}",
            "5s",
            "mqtt://h:1",
            "gt",
            "n1",
            "n2"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn outcome_is_sound(result: Result<Flow, Invalid>) {
    match result {
        Ok(_) => {}
        Err(Invalid::Problems(list)) => {
            assert!(!list.is_empty());
            assert!(
                list.iter()
                    .all(|p| !p.subject.is_empty() && !p.message.is_empty())
            );
        }
        Err(Invalid::Input(e)) => assert!(!e.to_string().is_empty()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        outcome_is_sound(check(&bytes, Level::Draft));
        let _ = compile(&bytes, &[]);
    }

    #[test]
    fn mutated_valid_flows_pass_or_name_problems(
        path in prop::collection::vec(any::<usize>(), 0..6),
        replacement in arb_json(),
        base in prop::bool::ANY,
    ) {
        let mut flow = if base { example() } else { reference() };
        mutate(&mut flow, &path, replacement);
        let bytes = serde_json::to_vec(&flow).unwrap();
        for level in [Level::Draft, Level::Complete] {
            outcome_is_sound(check(&bytes, level));
        }
        // Whatever passes the complete level must compile.
        if check(&bytes, Level::Complete).is_ok() {
            prop_assert!(compile(&bytes, &[]).is_ok());
        }
    }
}

#[test]
#[cfg(not(feature = "fault-nodes"))]
fn the_test_only_fault_kind_is_unknown_without_its_feature() {
    assert!(kinds::lookup("fault").is_none());
    let flow = r#"{"nodes":[{"id":"f","type":"fault","name":"F","config":{"mode":"panic_after"}}],"connections":[]}"#;
    let err = compile(flow.as_bytes(), &[]).unwrap_err();
    assert!(
        err.report().contains("unknown node type `fault`"),
        "{}",
        err.report()
    );
}
