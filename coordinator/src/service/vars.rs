//! Values of flow variables per device and per group, and what a device resolves to.
//!
//! A value is kept in a scope: `device:<id>`, `label:<key>=<value>` (every device with that
//! label) or `type:<device type>`. Precedence, highest first: the device's own value, then a
//! label group's, then a device-type group's; the flow's declared default otherwise (and on the
//! device, `floed.toml`'s `[vars]` over all of them). Two label groups of one device that set
//! the same name: the group whose label key sorts first (bytewise) wins, so the answer does
//! not depend on the order values were set in.
//!
//! Names follow the flow language's rule and values are bounded text
//! (`floe_wire::text`); any valid name may be set, since a device's values outlive the flow it
//! runs now. A deployment resolves every target's values once, when it is created, keeps only
//! the names its flow declares, checks each value parses as the declared type (a refusal
//! names the device and the variable) and that the set fits a directive; the Stage directive
//! carries exactly those values, signed. A value changed later reaches a device with its next
//! deployment: a changed value is a change to roll out like any other.
//!
//! Secret values (`secret` in a change) are kept encrypted with the data key
//! ([`super::vault`]), shown as [`SECRET_SHOWN`], named but never valued in audit lines, and
//! decrypted only when a deployment resolves them, to be sealed at once to each target's key
//! ([`floe_wire::proto::sealed`]): the Stage directive carries only sealed bytes. A flow's
//! secret variable must be resolved from a secret value for every target, or the deployment
//! is refused naming the device and the variable.

use super::audit::line;
use super::vault::Vault;
use super::{ServiceError, validation};
use crate::contract::{
    GroupVars, GroupVarsChange, ResolvedVar, SECRET_SHOWN, VarGroup, VarSource, VarsChange,
};
use crate::store::{DeviceRecord, Store, StoredVar};
use floe_flow::{VarType, Variable};
use floe_rollout::Millis;
use floe_wire::proto::{
    MAX_DIRECTIVE_VARS, SealedValue, check_directive_secrets, check_directive_vars,
};
use floe_wire::text::{
    MAX_DEVICE_TYPE_BYTES, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, check_required, check_text,
    check_var_name, check_var_value,
};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Most values one device or group holds (a directive carries at most as many).
pub const MAX_VARS_PER_SCOPE: usize = MAX_DIRECTIVE_VARS;
/// Most groups (label and device-type together) that hold values.
pub const MAX_VAR_GROUPS: u64 = 1024;
/// Most names one change sets and unsets together.
pub const MAX_CHANGE_NAMES: usize = 64;

const DEVICE: &str = "device:";
const LABEL: &str = "label:";
const TYPE: &str = "type:";

/// Where values live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scope {
    /// One device.
    Device(String),
    /// Every device with label `key=value`.
    Label(String, String),
    /// Every device of a type.
    Type(String),
}

impl Scope {
    fn key(&self) -> String {
        match self {
            Scope::Device(id) => format!("{DEVICE}{id}"),
            Scope::Label(k, v) => format!("{LABEL}{k}={v}"),
            Scope::Type(t) => format!("{TYPE}{t}"),
        }
    }

    /// How audit lines name it.
    fn describe(&self) -> String {
        match self {
            Scope::Device(id) => format!("device {id}"),
            Scope::Label(k, v) => format!("group label {k}={v}"),
            Scope::Type(t) => format!("group type {t}"),
        }
    }

    fn device(&self) -> Option<&str> {
        match self {
            Scope::Device(id) => Some(id),
            _ => None,
        }
    }

    /// The contract's spelling of a group scope.
    fn group(&self) -> VarGroup {
        match self {
            Scope::Label(k, v) => VarGroup {
                label: Some(format!("{k}={v}")),
                device_type: None,
            },
            Scope::Type(t) => VarGroup {
                label: None,
                device_type: Some(t.clone()),
            },
            Scope::Device(_) => VarGroup {
                label: None,
                device_type: None,
            },
        }
    }
}

/// Reads a group selector: exactly one of `label` (`key=value`) or `device_type`.
pub(super) fn group_scope(group: &VarGroup) -> Result<Scope, ServiceError> {
    match (&group.label, &group.device_type) {
        (Some(label), None) => {
            let Some((k, v)) = label.split_once('=') else {
                return Err(validation(
                    "group.label",
                    format!("{label:?} is not a label selector; write key=value (site=plant-3)"),
                ));
            };
            check_required("group.label key", k, MAX_LABEL_KEY_BYTES)
                .map_err(|e| validation("group.label", e.to_string()))?;
            check_text("group.label value", v, MAX_LABEL_VALUE_BYTES)
                .map_err(|e| validation("group.label", e.to_string()))?;
            Ok(Scope::Label(k.to_string(), v.to_string()))
        }
        (None, Some(t)) => {
            check_required("group.device_type", t, MAX_DEVICE_TYPE_BYTES)
                .map_err(|e| validation("group.device_type", e.to_string()))?;
            Ok(Scope::Type(t.clone()))
        }
        _ => Err(validation(
            "group",
            "name exactly one of label (key=value) or device_type",
        )),
    }
}

/// Checks a change before anything is written: valid names, bounded values, no name both set
/// and unset, at most [`MAX_CHANGE_NAMES`] names.
fn check_change(change: &VarsChange) -> Result<(), ServiceError> {
    if change.set.len() + change.unset.len() + change.secret.len() > MAX_CHANGE_NAMES {
        return Err(validation(
            "set",
            format!("a change names at most {MAX_CHANGE_NAMES} variables"),
        ));
    }
    if change.set.is_empty() && change.unset.is_empty() && change.secret.is_empty() {
        return Err(validation("set", "the change sets and unsets nothing"));
    }
    for (name, value) in &change.secret {
        let field = format!("secret.{name}");
        check_var_name("secret", name).map_err(|e| validation("secret", e.to_string()))?;
        // The text rules' errors name the field and a length or a position, never the value.
        check_var_value(&field, value).map_err(|e| validation(&field, e.to_string()))?;
        if change.set.contains_key(name) {
            return Err(validation(
                "secret",
                format!("{name} is both set and set secret in one change"),
            ));
        }
    }
    for (name, value) in &change.set {
        let field = format!("set.{name}");
        check_var_name("set", name).map_err(|e| validation("set", e.to_string()))?;
        check_var_value(&field, value).map_err(|e| validation(&field, e.to_string()))?;
    }
    for name in &change.unset {
        check_var_name("unset", name).map_err(|e| validation("unset", e.to_string()))?;
        if change.set.contains_key(name) || change.secret.contains_key(name) {
            return Err(validation(
                "unset",
                format!("{name} is both set and unset in one change"),
            ));
        }
    }
    Ok(())
}

/// What a change did, for its audit line.
fn summary(change: &VarsChange) -> String {
    let mut parts: Vec<String> = change
        .set
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    parts.extend(
        change
            .secret
            .keys()
            .map(|k| format!("{k}={SECRET_SHOWN} (secret)")),
    );
    parts.extend(change.unset.iter().map(|k| format!("unset {k}")));
    parts.join(", ")
}

/// Applies a checked change to `scope` in one transaction with its audit line; refuses
/// (nothing written) a scope that would hold more than [`MAX_VARS_PER_SCOPE`] values, or a
/// new group beyond [`MAX_VAR_GROUPS`]. A refusal that names a real scope is audited too.
pub(super) fn apply(
    store: &Store,
    vault: &Vault,
    scope: &Scope,
    change: &VarsChange,
    now: Millis,
) -> Result<BTreeMap<String, StoredVar>, ServiceError> {
    let key = scope.key();
    let attempt = || -> Result<BTreeMap<String, StoredVar>, ServiceError> {
        check_change(change)?;
        let is_new_group = !matches!(scope, Scope::Device(_)) && store.vars_of(&key)?.is_empty();
        if is_new_group
            && !(change.set.is_empty() && change.secret.is_empty())
            && store.var_scopes(LABEL)? + store.var_scopes(TYPE)? >= MAX_VAR_GROUPS
        {
            return Err(ServiceError::Conflict(format!(
                "{MAX_VAR_GROUPS} groups hold values already; unset one before adding another"
            )));
        }
        let batch = store.begin()?;
        for (name, value) in &change.set {
            store.put_var(&key, name, Some(value))?;
        }
        for (name, value) in &change.secret {
            let sealed = vault.seal(&key, name, value)?;
            store.put_var_as(&key, name, Some(&sealed), true)?;
        }
        for name in &change.unset {
            store.put_var(&key, name, None)?;
        }
        let after = store.vars_of(&key)?;
        if after.len() > MAX_VARS_PER_SCOPE {
            return Err(validation(
                "set",
                format!(
                    "{} would hold {} values, at most {MAX_VARS_PER_SCOPE} allowed",
                    scope.describe(),
                    after.len()
                ),
            ));
        }
        store.audit(&line(
            now,
            store.caller(),
            "vars.set",
            (scope.device(), None),
            "ok",
            format!("{}: {}", scope.describe(), summary(change)),
        ))?;
        batch.commit()?;
        Ok(after)
    };
    match attempt() {
        Ok(after) => Ok(after),
        Err(e @ (ServiceError::Validation { .. } | ServiceError::Conflict(_))) => {
            store.audit(&line(
                now,
                store.caller(),
                "vars.set",
                (scope.device(), None),
                "refused",
                format!("{}: {e}", scope.describe()),
            ))?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// `PUT /group-vars` after the scope was read.
pub(super) fn apply_group(
    store: &Store,
    vault: &Vault,
    change: GroupVarsChange,
    now: Millis,
) -> Result<GroupVars, ServiceError> {
    let scope = group_scope(&change.group)?;
    let stored = apply(
        store,
        vault,
        &scope,
        &VarsChange {
            set: change.set,
            unset: change.unset,
            secret: change.secret,
        },
        now,
    )?;
    let (values, secret) = shown(&stored);
    Ok(GroupVars {
        group: scope.group(),
        values,
        secret,
    })
}

/// Stored values as a read shows them: secret ones as [`SECRET_SHOWN`], with their names.
pub(super) fn shown(
    stored: &BTreeMap<String, StoredVar>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let values = stored
        .iter()
        .map(|(name, v)| {
            let text = if v.secret {
                SECRET_SHOWN.to_string()
            } else {
                v.value.clone()
            };
            (name.clone(), text)
        })
        .collect();
    let secret = stored
        .iter()
        .filter(|(_, v)| v.secret)
        .map(|(name, _)| name.clone())
        .collect();
    (values, secret)
}

/// `GET /group-vars`: label groups, then device-type groups, each by selector.
pub(super) fn groups(store: &Store) -> Result<Vec<GroupVars>, ServiceError> {
    let g = Groups::load(store)?;
    let labels = g.labels.into_iter().map(|(sel, stored)| {
        let (values, secret) = shown(&stored);
        GroupVars {
            group: VarGroup {
                label: Some(sel),
                device_type: None,
            },
            values,
            secret,
        }
    });
    let types = g.types.into_iter().map(|(t, stored)| {
        let (values, secret) = shown(&stored);
        GroupVars {
            group: VarGroup {
                label: None,
                device_type: Some(t),
            },
            values,
            secret,
        }
    });
    Ok(labels.chain(types).collect())
}

/// The group values, loaded once for many resolutions (bounded by [`MAX_VAR_GROUPS`]).
#[derive(Debug, Default)]
pub(super) struct Groups {
    /// `key=value` → values.
    labels: BTreeMap<String, BTreeMap<String, StoredVar>>,
    /// Device type → values.
    types: BTreeMap<String, BTreeMap<String, StoredVar>>,
}

impl Groups {
    pub(super) fn load(store: &Store) -> Result<Groups, ServiceError> {
        let strip = |m: BTreeMap<String, BTreeMap<String, StoredVar>>, prefix: &str| {
            m.into_iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v)))
                .collect()
        };
        Ok(Groups {
            labels: strip(store.vars_with_prefix(LABEL)?, LABEL),
            types: strip(store.vars_with_prefix(TYPE)?, TYPE),
        })
    }
}

/// A resolved value with the row it comes from (a secret is decrypted with that row's scope).
#[derive(Debug, Clone)]
pub(super) struct Found {
    /// The stored value (encrypted when secret).
    pub(super) stored: StoredVar,
    /// The scope key of its row.
    pub(super) scope: String,
    /// Its source.
    pub(super) source: VarSource,
    /// The group it comes from.
    pub(super) group: Option<String>,
}

/// A device's values by precedence: its own over its label groups' (the first label key
/// wins a tie) over its type group's.
pub(super) fn resolve_found(
    groups: &Groups,
    dev: &DeviceRecord,
    own: &BTreeMap<String, StoredVar>,
) -> BTreeMap<String, Found> {
    let mut out: BTreeMap<String, Found> = BTreeMap::new();
    if let Some(values) = groups.types.get(&dev.device_type) {
        for (name, value) in values {
            out.insert(
                name.clone(),
                Found {
                    stored: value.clone(),
                    scope: Scope::Type(dev.device_type.clone()).key(),
                    source: VarSource::DeviceType,
                    group: Some(dev.device_type.clone()),
                },
            );
        }
    }
    let mut from_label: HashSet<&str> = HashSet::new();
    for (k, v) in &dev.labels {
        let selector = format!("{k}={v}");
        let Some(values) = groups.labels.get(&selector) else {
            continue;
        };
        for (name, value) in values {
            if from_label.insert(name) {
                out.insert(
                    name.clone(),
                    Found {
                        stored: value.clone(),
                        scope: Scope::Label(k.clone(), v.clone()).key(),
                        source: VarSource::Label,
                        group: Some(selector.clone()),
                    },
                );
            }
        }
    }
    for (name, value) in own {
        out.insert(
            name.clone(),
            Found {
                stored: value.clone(),
                scope: Scope::Device(dev.id.clone()).key(),
                source: VarSource::Device,
                group: None,
            },
        );
    }
    out
}

/// [`resolve_found`] as a read shows it (secret values as [`SECRET_SHOWN`]).
pub(super) fn resolve(
    groups: &Groups,
    dev: &DeviceRecord,
    own: &BTreeMap<String, StoredVar>,
) -> BTreeMap<String, ResolvedVar> {
    resolve_found(groups, dev, own)
        .into_iter()
        .map(|(name, f)| {
            let value = if f.stored.secret {
                SECRET_SHOWN.to_string()
            } else {
                f.stored.value
            };
            (
                name,
                ResolvedVar {
                    value,
                    secret: f.stored.secret,
                    source: f.source,
                    group: f.group,
                },
            )
        })
        .collect()
}

/// One device's own values.
pub(super) fn own(store: &Store, id: &str) -> Result<BTreeMap<String, StoredVar>, ServiceError> {
    Ok(store.vars_of(&Scope::Device(id.to_string()).key())?)
}

/// What one target of a deployment receives with its Stage directive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct TargetValues {
    /// Clear values.
    pub(super) vars: BTreeMap<String, String>,
    /// Secret values, each sealed to the target's key.
    pub(super) secret_vars: BTreeMap<String, SealedValue>,
}

/// The values a deployment of the flow `definition` delivers to each of `targets` (same
/// order): resolved now, only the names the flow declares, each parsed as its declared type,
/// secret ones sealed to the target's key, and within a directive's bounds; the first problem
/// refuses the deployment, naming the device and the variable (never a secret value). A flow
/// that declares no variables costs nothing here.
pub(super) fn for_deployment(
    store: &Store,
    vault: &Vault,
    definition: &serde_json::Value,
    targets: &[&DeviceRecord],
) -> Result<Vec<TargetValues>, ServiceError> {
    let declared: Vec<Variable> = definition
        .get("variables")
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| ServiceError::Internal(format!("a published flow's variables: {e}")))?
        .unwrap_or_default();
    if declared.is_empty() {
        return Ok(vec![TargetValues::default(); targets.len()]);
    }
    let types: BTreeMap<&str, (VarType, bool)> = declared
        .iter()
        .map(|v| (v.name.as_str(), (v.var_type, v.secret)))
        .collect();
    let groups = Groups::load(store)?;
    let mut devices = store.vars_with_prefix(DEVICE)?;
    let mut checked: HashSet<(String, String)> = HashSet::new();
    // Decrypted secrets by row, for this call only (a group's value serves many targets).
    let mut opened: HashMap<(String, String), String> = HashMap::new();
    let mut out = Vec::with_capacity(targets.len());
    for dev in targets {
        let own = devices
            .remove(&Scope::Device(dev.id.clone()).key())
            .unwrap_or_default();
        let mut values = TargetValues::default();
        for (name, found) in resolve_found(&groups, dev, &own) {
            let Some(&(ty, declared_secret)) = types.get(name.as_str()) else {
                continue;
            };
            if found.stored.secret {
                let row = (found.scope.clone(), name.clone());
                let clear = match opened.get(&row) {
                    Some(c) => c,
                    None => {
                        let clear = vault.open_value(&found.scope, &name, &found.stored.value)?;
                        floe_flow::validate::check_variable_value(ty, &clear).map_err(|_| {
                            validation(
                                format!("vars.{name}"),
                                format!(
                                    "device {}: variable {name}: the secret value does not parse as {}",
                                    dev.id,
                                    type_name(ty)
                                ),
                            )
                        })?;
                        opened.entry(row).or_insert(clear)
                    }
                };
                let sealed = floe_wire::proto::sealed::seal(&dev.id, clear).map_err(|e| {
                    validation(
                        format!("vars.{name}"),
                        format!("device {}: variable {name}: {e}", dev.id),
                    )
                })?;
                values.secret_vars.insert(name, sealed);
                continue;
            }
            if declared_secret {
                return Err(validation(
                    format!("vars.{name}"),
                    format!(
                        "device {}: variable {name} is secret in the flow but its value (from {}) \
                         is not; set it with --secret",
                        dev.id,
                        describe_source(&found)
                    ),
                ));
            }
            let value = found.stored.value;
            if !checked.contains(&(name.clone(), value.clone())) {
                floe_flow::validate::check_variable_value(ty, &value).map_err(|why| {
                    validation(
                        format!("vars.{name}"),
                        format!("device {}: variable {name}: {why}", dev.id),
                    )
                })?;
                checked.insert((name.clone(), value.clone()));
            }
            values.vars.insert(name, value);
        }
        for v in declared.iter().filter(|v| v.secret) {
            if !values.secret_vars.contains_key(&v.name) {
                return Err(validation(
                    format!("vars.{}", v.name),
                    format!(
                        "device {} has no value for the secret variable {}: set one with \
                         `floe device vars set {} --secret {}=…` or for a group",
                        dev.id, v.name, dev.id, v.name
                    ),
                ));
            }
        }
        check_directive_vars(&values.vars)
            .and_then(|()| check_directive_secrets(&values.vars, &values.secret_vars))
            .map_err(|why| validation("vars", format!("device {}: {why}", dev.id)))?;
        out.push(values);
    }
    Ok(out)
}

/// How a refusal names where a value comes from.
fn describe_source(found: &Found) -> String {
    match (&found.source, &found.group) {
        (VarSource::Device, _) => "the device".to_string(),
        (VarSource::Label, Some(g)) => format!("group label {g}"),
        (VarSource::DeviceType, Some(g)) => format!("group type {g}"),
        (_, None) => "a group".to_string(),
    }
}

fn type_name(ty: VarType) -> &'static str {
    match ty {
        VarType::Number => "number",
        VarType::String => "string",
        VarType::Boolean => "boolean",
        VarType::Json => "json",
    }
}
