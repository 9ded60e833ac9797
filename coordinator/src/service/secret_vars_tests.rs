//! Secret flow variables in the service: stored encrypted (never in clear in floe.db), shown
//! redacted, audited by name only, refused at deployment create when a target has none, and
//! delivered in the Stage directive sealed to each target's key, signed.

use super::*;
use crate::contract::{GroupVarsChange, SECRET_SHOWN, VarGroup, VarsChange};
use crate::store::AuditFilter;
use std::collections::BTreeMap;

fn secret(pairs: &[(&str, &str)]) -> VarsChange {
    VarsChange {
        secret: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..VarsChange::default()
    }
}

fn field(e: ServiceError) -> (String, String) {
    match e {
        ServiceError::Validation { field, message } => (field, message),
        other => panic!("not a validation error: {other}"),
    }
}

/// Every file of the data directory's database (floe.db and its WAL), as bytes.
fn db_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("floe.db") {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The example flow with a secret `token` used in the alert topic.
fn published_with_secret(core: &mut Core, now: u64) -> String {
    let mut def = example();
    def["variables"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "token", "type": "string", "secret": true}));
    def["nodes"][2]["config"]["topic"] = serde_json::json!("floe/${token}/alerts");
    let flow = core
        .create_flow(
            FlowInput {
                name: "Secret Alert".into(),
                description: String::new(),
                tags: vec![],
                definition: def,
            },
            now,
        )
        .unwrap();
    core.publish_flow(&flow.id, now).unwrap();
    flow.id
}

#[test]
fn secret_values_rest_encrypted_read_redacted_and_audit_names_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_at(dir.path());
    let now = T0;
    let mut d = Dev::new("a", 41);
    allow(&mut core, &mut d, now);
    let mode = std::fs::metadata(dir.path().join(crate::service::SECRETS_KEY_FILE))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let shown = core
        .set_device_vars(&d.id, secret(&[("token", "Tok-Device-A-7781")]), now)
        .unwrap();
    assert_eq!(shown.values["token"], SECRET_SHOWN);
    assert_eq!(shown.secret, vec!["token".to_string()]);
    assert_eq!(shown.resolved["token"].value, SECRET_SHOWN);
    assert!(shown.resolved["token"].secret);
    core.set_group_vars(
        GroupVarsChange {
            group: VarGroup {
                label: None,
                device_type: Some("rpi4".into()),
            },
            set: BTreeMap::new(),
            unset: Vec::new(),
            secret: [("password".to_string(), "Group-Pass-5521".to_string())].into(),
        },
        now,
    )
    .unwrap();
    let groups = core.group_vars().unwrap();
    assert_eq!(groups.groups[0].values["password"], SECRET_SHOWN);
    assert_eq!(groups.groups[0].secret, vec!["password".to_string()]);
    let read = serde_json::to_string(&core.device_vars(&d.id).unwrap()).unwrap();
    assert!(
        !read.contains("Tok-Device-A") && !read.contains("Group-Pass"),
        "{read}"
    );
    let audit = core
        .audit_entries(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .unwrap();
    let text = format!("{audit:?}");
    assert!(text.contains("token=<secret> (secret)"), "{text}");
    assert!(text.contains("password=<secret> (secret)"), "{text}");
    assert!(!text.contains("Tok-Device-A") && !text.contains("Group-Pass"));
    drop(core);
    let bytes = db_bytes(dir.path());
    assert!(!bytes.is_empty());
    assert!(
        !contains(&bytes, "Tok-Device-A-7781"),
        "clear secret in floe.db"
    );
    assert!(
        !contains(&bytes, "Group-Pass-5521"),
        "clear secret in floe.db"
    );

    // A name in both `set` and `secret`, or `secret` and `unset`, is refused by name.
    let mut core = core_at(dir.path());
    let mut both = secret(&[("token", "x")]);
    both.set.insert("token".into(), "y".into());
    let (f, m) = field(core.set_device_vars(&d.id, both, now).unwrap_err());
    assert_eq!(
        (f.as_str(), m.as_str()),
        ("secret", "token is both set and set secret in one change")
    );
    let mut both = secret(&[("token", "x")]);
    both.unset.push("token".into());
    assert_eq!(
        field(core.set_device_vars(&d.id, both, now).unwrap_err()).0,
        "unset"
    );
    // A too-long secret is refused naming its length, not its value.
    let (f, m) = field(
        core.set_device_vars(&d.id, secret(&[("token", &"z".repeat(300))]), now)
            .unwrap_err(),
    );
    assert_eq!(f, "secret.token");
    assert!(m.contains("300 bytes") && !m.contains("zzz"), "{m}");
    // Set in clear again, it is no longer secret (and shown).
    let mut plain = VarsChange::default();
    plain.set.insert("token".into(), "visible".into());
    let v = core.set_device_vars(&d.id, plain, now).unwrap();
    assert_eq!(v.values["token"], "visible");
    assert!(v.secret.is_empty());
}

#[test]
fn a_deployment_seals_each_targets_secret_to_its_key_and_refuses_a_target_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_at(dir.path());
    let mut now = T0;
    let flow = published_with_secret(&mut core, now);
    let mut devs = vec![Dev::new("a", 41), Dev::new("b", 42)];
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    let input = |devs: &[Dev]| DeploymentInput {
        flow_id: flow.clone(),
        strategy: "all-at-once".into(),
        target_devices: Some(devs.iter().map(|d| d.id.clone()).collect()),
        selector: None,
        config: ConfigInput::default(),
    };
    core.set_device_vars(&devs[0].id, secret(&[("token", "Tok-A-1111")]), now)
        .unwrap();
    // b has no value: refused, naming b and the variable.
    let (f, m) = field(core.create_deployment(input(&devs), now).unwrap_err());
    assert_eq!(f, "vars.token");
    assert!(
        m.contains(&devs[1].id) && m.contains("secret variable token"),
        "{m}"
    );
    // A clear value for a variable the flow declares secret is refused too.
    let mut plain = VarsChange::default();
    plain.set.insert("token".into(), "Tok-B-clear".into());
    core.set_device_vars(&devs[1].id, plain, now).unwrap();
    let (f, m) = field(core.create_deployment(input(&devs), now).unwrap_err());
    assert_eq!(f, "vars.token");
    assert!(
        m.contains("is secret in the flow but its value (from the device) is not"),
        "{m}"
    );
    assert!(!m.contains("Tok-B-clear"));
    core.set_device_vars(&devs[1].id, secret(&[("token", "Tok-B-2222")]), now)
        .unwrap();

    let id = core.create_deployment(input(&devs), now).unwrap();
    core.command(&id, Command::Start, now).unwrap();
    let mut stages = BTreeMap::new();
    for _ in 0..20 {
        for d in devs.iter_mut() {
            if let Some((_, post)) = core.directive_post(&d.id, now).unwrap() {
                assert!(!contains(&post, "Tok-A-1111") && !contains(&post, "Tok-B-2222"));
                let post = DirectivePost::from_bytes(&post).unwrap();
                let dir = proto::open::<Directive>(&post.directive.0, &[coordinator_key()], 1)
                    .unwrap()
                    .value;
                if dir.action == Action::Stage {
                    assert!(!dir.vars.contains_key("token"));
                    stages.insert(d.id.clone(), dir.secret_vars.clone());
                } else {
                    assert!(dir.secret_vars.is_empty(), "only a Stage carries values");
                }
            }
            d.step(&mut core, now);
        }
        now += 500;
        core.tick(now);
    }
    let key_a = SigningKey::from_bytes(&[41; 32]);
    let key_b = SigningKey::from_bytes(&[42; 32]);
    let a = &stages[&devs[0].id]["token"];
    let b = &stages[&devs[1].id]["token"];
    assert_eq!(proto::sealed::open(&key_a, a).unwrap(), "Tok-A-1111");
    assert_eq!(proto::sealed::open(&key_b, b).unwrap(), "Tok-B-2222");
    // Each is sealed to its own device only.
    assert!(proto::sealed::open(&key_b, a).is_err());
    assert!(proto::sealed::open(&key_a, b).is_err());
    assert_eq!(
        core.with_deployment(&id, |d, _| d.status.clone()).unwrap(),
        "completed"
    );
    drop(core);
    let bytes = db_bytes(dir.path());
    assert!(!contains(&bytes, "Tok-A-1111") && !contains(&bytes, "Tok-B-2222"));
}

#[test]
fn a_secret_value_that_does_not_parse_refuses_the_deployment_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_at(dir.path());
    let now = T0;
    let flow = published(&mut core, now);
    let mut d = Dev::new("a", 41);
    allow(&mut core, &mut d, now);
    // `threshold` is a number in the flow; a secret value for it is delivered sealed, and
    // checked first.
    core.set_device_vars(&d.id, secret(&[("threshold", "hot-secret-xyz")]), now)
        .unwrap();
    let input = DeploymentInput {
        flow_id: flow,
        strategy: "all-at-once".into(),
        target_devices: Some(vec![d.id.clone()]),
        selector: None,
        config: ConfigInput::default(),
    };
    let (f, m) = field(core.create_deployment(input, now).unwrap_err());
    assert_eq!(f, "vars.threshold");
    assert!(
        m.contains("the secret value does not parse as number"),
        "{m}"
    );
    assert!(!m.contains("hot-secret-xyz"));
}
