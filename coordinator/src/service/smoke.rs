//! A flow's smoke test as `POST /flows/{id}/publish` takes it (003 layer 4, "correct output
//! on test input"): checked with the same rules `floe artifact build --smoke-test` and devices
//! apply (message counts, payload sizes, the timeout), and every node it names must be a node
//! of the flow, so a typo is a 422 naming the entry rather than a smoke test that fails on
//! every device.

use super::{ServiceError, validation};
use crate::contract::SmokeTestInput;
use floe_wire::artifact::bundle::smoke_test_from_json;
use floe_wire::proto::manifest::SmokeTest;
use std::collections::BTreeSet;

/// The manifest's smoke test for `input`, checked against the flow's `definition`.
pub(super) fn smoke_test(
    input: &SmokeTestInput,
    definition: &serde_json::Value,
) -> Result<SmokeTest, ServiceError> {
    let bytes = serde_json::to_vec(input)
        .map_err(|e| validation("smoke_test", format!("cannot be encoded: {e}")))?;
    let smoke = smoke_test_from_json(&bytes).map_err(|e| {
        let text = e.to_string();
        let text = text
            .strip_prefix("the smoke-test file: ")
            .map(str::to_string)
            .unwrap_or(text);
        validation("smoke_test", text)
    })?;
    let nodes: BTreeSet<&str> = definition
        .get("nodes")
        .and_then(|n| n.as_array())
        .into_iter()
        .flatten()
        .filter_map(|n| n.get("id").and_then(|i| i.as_str()))
        .collect();
    for (what, list) in [("inject", &smoke.inject), ("expect", &smoke.expect)] {
        for (i, m) in list.iter().enumerate() {
            if !nodes.contains(m.node.as_str()) {
                return Err(validation(
                    format!("smoke_test.{what}[{i}].node"),
                    format!(
                        "the flow has no node {:?}",
                        floe_wire::text::for_terminal(&m.node)
                    ),
                ));
            }
        }
    }
    Ok(smoke)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn input(v: serde_json::Value) -> SmokeTestInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_smoke_test_becomes_the_manifest_s_and_names_only_nodes_of_the_flow() {
        let def = json!({"nodes": [{"id": "in"}, {"id": "out"}], "connections": []});
        let s = smoke_test(
            &input(json!({"inject": [{"node": "in", "payload": {"raw": 1}}],
                          "expect": [{"node": "out", "payload": 2}], "timeout_ms": 2000})),
            &def,
        )
        .unwrap();
        assert_eq!(s.inject[0].payload, r#"{"raw":1}"#);
        assert_eq!(s.expect[0].node, "out");
        assert_eq!(s.timeout_ms, 2000);
        let e = smoke_test(
            &input(json!({"expect": [{"node": "nope", "payload": 2}]})),
            &def,
        )
        .unwrap_err();
        assert!(e.to_string().contains("smoke_test.expect[0].node"), "{e}");
        assert!(e.to_string().contains("no node \"nope\""), "{e}");
        let e = smoke_test(&input(json!({"inject": [], "expect": []})), &def).unwrap_err();
        assert!(e.to_string().contains("injects nothing"), "{e}");
        let e = smoke_test(
            &input(json!({"inject": [{"node": "in", "payload": 1}], "timeout_ms": 999999})),
            &def,
        )
        .unwrap_err();
        assert!(e.to_string().contains("timeout_ms"), "{e}");
    }
}
