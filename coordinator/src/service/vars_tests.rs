//! Flow variables in the service: precedence, refusals naming the field, audit lines, and a
//! deployment whose Stage directives carry each device's own values, signed.

use super::*;
use crate::contract::{GroupVarsChange, VarGroup, VarSource, VarsChange};
use crate::service::vars::{Groups, resolve};
use crate::store::{AuditFilter, DeviceRecord};
use std::collections::BTreeMap;

fn change(set: &[(&str, &str)], unset: &[&str]) -> VarsChange {
    VarsChange {
        set: set
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        unset: unset.iter().map(|s| s.to_string()).collect(),
        secret: BTreeMap::new(),
    }
}

fn group(label: Option<&str>, device_type: Option<&str>, set: &[(&str, &str)]) -> GroupVarsChange {
    GroupVarsChange {
        group: VarGroup {
            label: label.map(str::to_string),
            device_type: device_type.map(str::to_string),
        },
        set: change(set, &[]).set,
        unset: Vec::new(),
        secret: BTreeMap::new(),
    }
}

fn record(id: &str, device_type: &str, labels: &[(&str, &str)]) -> DeviceRecord {
    DeviceRecord {
        id: id.into(),
        public_key: String::new(),
        device_type: device_type.into(),
        arch: String::new(),
        region: String::new(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        runtime_version: String::new(),
        installed: None,
        standby: None,
        last_known_good: None,
        on_trial: false,
        health: None,
        applied: None,
        last_seen: None,
        last_seq: 0,
        offline: false,
        maintenance: false,
        quarantined: false,
        added_at: 0,
        enrolled_at: None,
        canary: Default::default(),
    }
}

fn field(e: ServiceError) -> (String, String) {
    match e {
        ServiceError::Validation { field, message } => (field, message),
        other => panic!("not a validation error: {other}"),
    }
}

#[test]
fn device_over_label_over_type_and_the_first_label_key_wins_a_tie() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_at(dir.path());
    let now = T0;
    core.set_group_vars(
        group(
            None,
            Some("rpi4"),
            &[
                ("broker", "mqtt://type"),
                ("topic", "t/type"),
                ("path", "/type"),
            ],
        ),
        now,
    )
    .unwrap();
    core.set_group_vars(
        group(
            Some("site=plant-3"),
            None,
            &[("broker", "mqtt://site"), ("topic", "t/site")],
        ),
        now,
    )
    .unwrap();
    core.set_group_vars(group(Some("line=2"), None, &[("topic", "t/line")]), now)
        .unwrap();
    let store = Store::open(&dir.path().join("floe.db")).unwrap();
    let groups = Groups::load(&store).unwrap();
    let own = BTreeMap::from([(
        "path".to_string(),
        crate::store::StoredVar {
            value: "/dev/own".to_string(),
            secret: false,
        },
    )]);
    let dev = record("d1", "rpi4", &[("site", "plant-3"), ("line", "2")]);
    let r = resolve(&groups, &dev, &own);
    assert_eq!(r["path"].value, "/dev/own");
    assert_eq!(r["path"].source, VarSource::Device);
    assert_eq!(r["broker"].value, "mqtt://site");
    assert_eq!(r["broker"].source, VarSource::Label);
    // Both label groups set `topic`: `line` sorts before `site`, so line=2 wins.
    assert_eq!(r["topic"].value, "t/line");
    assert_eq!(r["topic"].group.as_deref(), Some("line=2"));
    // A device of another type with no matching label gets nothing.
    assert!(
        resolve(
            &groups,
            &record("d2", "jetson", &[("site", "other")]),
            &BTreeMap::new()
        )
        .is_empty()
    );
    // Type only.
    let r = resolve(&groups, &record("d3", "rpi4", &[]), &BTreeMap::new());
    assert_eq!(r["topic"].value, "t/type");
    assert_eq!(r["topic"].source, VarSource::DeviceType);
}

#[test]
fn bad_input_is_refused_naming_the_field_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_at(dir.path());
    let now = T0;
    let mut d = Dev::new("a", 31);
    allow(&mut core, &mut d, now);

    let (f, m) = field(
        core.set_device_vars(&d.id, change(&[("topic", &"x".repeat(257))], &[]), now)
            .unwrap_err(),
    );
    assert_eq!(f, "set.topic");
    assert!(m.contains("257 bytes, at most 256"), "{m}");
    let (f, m) = field(
        core.set_device_vars(&d.id, change(&[("topic", "a\nb")], &[]), now)
            .unwrap_err(),
    );
    assert_eq!(f, "set.topic");
    assert!(m.contains("control character"), "{m}");
    let (f, m) = field(
        core.set_device_vars(&d.id, change(&[("9lives", "x")], &[]), now)
            .unwrap_err(),
    );
    assert_eq!(f, "set");
    assert!(m.contains("not a valid variable name"), "{m}");
    let (f, _) = field(
        core.set_device_vars(&d.id, change(&[("a", "x")], &["a"]), now)
            .unwrap_err(),
    );
    assert_eq!(f, "unset");
    let (f, _) = field(
        core.set_device_vars(&d.id, change(&[], &[]), now)
            .unwrap_err(),
    );
    assert_eq!(f, "set");
    assert!(matches!(
        core.set_device_vars("00ff", change(&[("a", "x")], &[]), now),
        Err(ServiceError::NotFound { .. })
    ));
    for (g, want) in [
        (group(Some("site"), None, &[("a", "x")]), "group.label"),
        (group(Some("=x"), None, &[("a", "x")]), "group.label"),
        (group(None, None, &[("a", "x")]), "group"),
        (group(Some("a=b"), Some("rpi4"), &[("a", "x")]), "group"),
        (
            group(None, Some("rpi\u{1b}4"), &[("a", "x")]),
            "group.device_type",
        ),
    ] {
        let (f, m) = field(core.set_group_vars(g, now).unwrap_err());
        assert_eq!(f, want, "{m}");
    }
    // At most 16 values per device: the 17th is refused and nothing of that change is kept.
    let many: Vec<(String, String)> = (0..16).map(|i| (format!("v{i}"), "x".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    core.set_device_vars(&d.id, change(&many, &[]), now)
        .unwrap();
    let (f, m) = field(
        core.set_device_vars(&d.id, change(&[("v16", "x"), ("v0", "changed")], &[]), now)
            .unwrap_err(),
    );
    assert_eq!(f, "set");
    assert!(m.contains("17 values, at most 16"), "{m}");
    let kept = core.device_vars(&d.id).unwrap();
    assert_eq!(kept.values.len(), 16);
    assert_eq!(kept.values["v0"], "x");
    let after = core
        .set_device_vars(&d.id, change(&[("v0", "y")], &["v1"]), now)
        .unwrap();
    assert_eq!(after.values["v0"], "y");
    assert!(!after.values.contains_key("v1"));

    // Every change and every refusal of a real device or group is in the audit log.
    let log = core
        .audit_entries(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "vars.set")
        .collect::<Vec<_>>();
    let ok = log.iter().filter(|a| a.outcome == "ok").count();
    let refused = log.iter().filter(|a| a.outcome == "refused").count();
    assert_eq!(ok, 2, "{log:#?}");
    // Five refused changes of the device and the 17th value; an unknown device or a bad
    // group selector names no scope to audit.
    assert_eq!(refused, 6, "{log:#?}");
    assert!(log.iter().all(|a| a.actor == "api"));
    assert!(log.iter().any(|a| a.outcome == "ok"
        && a.device_id.as_deref() == Some(d.id.as_str())
        && a.detail.contains("v0=\"y\", unset v1")));
}

#[test]
fn a_deployment_delivers_each_device_its_resolved_declared_values_signed() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_at(dir.path());
    let mut now = T0;
    let flow = published(&mut core, now);
    let mut devs = vec![Dev::new("a", 41), Dev::new("b", 42)];
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    core.set_group_vars(
        group(
            None,
            Some("rpi4"),
            &[("broker", "mqtt://10.0.0.1:1883"), ("threshold", "30")],
        ),
        now,
    )
    .unwrap();
    // `not_in_flow` is kept in the registry but not delivered: the flow does not declare it.
    core.set_device_vars(
        &devs[0].id,
        change(
            &[("broker", "mqtt://10.0.0.2:1883"), ("not_in_flow", "x")],
            &[],
        ),
        now,
    )
    .unwrap();
    core.set_device_vars(
        &devs[1].id,
        change(&[("device", "/dev/sensor-b")], &[]),
        now,
    )
    .unwrap();

    // A value that does not parse as its declared type refuses the deployment, naming the
    // device and the variable; nothing was created.
    core.set_device_vars(&devs[1].id, change(&[("threshold", "hot")], &[]), now)
        .unwrap();
    let input = |devs: &[Dev]| DeploymentInput {
        flow_id: flow.clone(),
        strategy: "all-at-once".into(),
        target_devices: Some(devs.iter().map(|d| d.id.clone()).collect()),
        selector: None,
        config: ConfigInput::default(),
    };
    let (f, m) = field(core.create_deployment(input(&devs), now).unwrap_err());
    assert_eq!(f, "vars.threshold");
    assert!(
        m.contains(&devs[1].id) && m.contains("does not parse as a number"),
        "{m}"
    );
    core.set_device_vars(&devs[1].id, change(&[], &["threshold"]), now)
        .unwrap();

    let id = core.create_deployment(input(&devs), now).unwrap();
    core.command(&id, Command::Start, now).unwrap();
    let mut stages = BTreeMap::new();
    for _ in 0..20 {
        for d in devs.iter_mut() {
            if let Some((_, post)) = core.directive_post(&d.id, now).unwrap() {
                let post = DirectivePost::from_bytes(&post).unwrap();
                let dir = proto::open::<Directive>(&post.directive.0, &[coordinator_key()], 1)
                    .unwrap()
                    .value;
                if dir.action == Action::Stage {
                    stages.insert(d.id.clone(), dir.vars.clone());
                } else {
                    assert!(dir.vars.is_empty(), "only a Stage carries values");
                }
            }
            d.step(&mut core, now);
        }
        now += 500;
        core.tick(now);
    }
    let a = &stages[&devs[0].id];
    assert_eq!(
        a.get("broker").map(String::as_str),
        Some("mqtt://10.0.0.2:1883")
    );
    assert_eq!(a.get("threshold").map(String::as_str), Some("30"));
    assert!(!a.contains_key("not_in_flow"));
    let b = &stages[&devs[1].id];
    assert_eq!(
        b.get("broker").map(String::as_str),
        Some("mqtt://10.0.0.1:1883")
    );
    assert_eq!(b.get("device").map(String::as_str), Some("/dev/sensor-b"));
    assert_eq!(status(&core, &id), DeploymentStatus::Completed);
}
