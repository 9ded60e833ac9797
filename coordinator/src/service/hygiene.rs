//! Input hygiene for everything an API caller names: flows, tags, devices, labels, types,
//! regions, selectors and wave names. The limits and the control-character rule are
//! `floe_wire::text`'s, the same a device applies to its own config and its signed report, so
//! what the coordinator stores a device could also have said about itself. Every refusal is a
//! validation error naming the field.

use std::collections::BTreeMap;

use floe_wire::text::{
    MAX_DEVICE_TYPE_BYTES, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_LABELS,
    MAX_REGION_BYTES, check_required, check_text,
};

use super::model::{DeviceInput, Selector};
use super::{ServiceError, validation};

/// Longest flow name.
pub(super) const MAX_NAME_BYTES: usize = 200;
/// Longest tag.
pub(super) const MAX_TAG_BYTES: usize = 64;
/// Most tags on a flow.
pub(super) const MAX_TAGS: usize = 32;
/// Longest wave name.
pub(super) const MAX_WAVE_NAME_BYTES: usize = 64;

/// Free text (may be empty): at most `max` bytes, no control character.
pub(super) fn text(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    check_text(field, value, max).map_err(|e| validation(field, e.to_string()))
}

/// Required text: not blank, at most `max` bytes, no control character.
pub(super) fn required(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    check_required(field, value, max).map_err(|e| validation(field, e.to_string()))
}

/// A label map: at most [`MAX_LABELS`] entries, keys non-empty, both sides within the report's
/// limits.
pub(super) fn labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if labels.len() > MAX_LABELS {
        return Err(validation(
            field,
            format!("{} labels, at most {MAX_LABELS} allowed", labels.len()),
        ));
    }
    for (k, v) in labels {
        required(&format!("{field} key"), k, MAX_LABEL_KEY_BYTES)?;
        text(&format!("{field}.{k}"), v, MAX_LABEL_VALUE_BYTES)?;
    }
    Ok(())
}

/// An allowlist entry: the id is the hex of the public key (one identity per device, the
/// same rule the fabric and the report path apply), and its type, region and labels are text
/// a device could report.
pub(super) fn device_input(input: &DeviceInput) -> Result<(), ServiceError> {
    if !input.id.eq_ignore_ascii_case(input.public_key.trim()) {
        return Err(validation(
            "id",
            "a device id is the hex of its public key (64 hex digits, the same as public_key)",
        ));
    }
    if let Some(t) = &input.device_type {
        required("type", t, MAX_DEVICE_TYPE_BYTES)?;
    }
    if let Some(r) = &input.region {
        text("region", r, MAX_REGION_BYTES)?;
    }
    labels("labels", &input.labels)
}

/// A deployment selector.
pub(super) fn selector(sel: &Selector) -> Result<(), ServiceError> {
    if let Some(t) = &sel.device_type {
        text("selector.device_type", t, MAX_DEVICE_TYPE_BYTES)?;
    }
    if let Some(r) = &sel.region {
        text("selector.region", r, MAX_REGION_BYTES)?;
    }
    labels("selector.labels", &sel.labels)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn input(id: &str, key: &str) -> DeviceInput {
        DeviceInput {
            id: id.into(),
            public_key: key.into(),
            device_type: Some("rpi4".into()),
            region: Some("eu".into()),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn an_allowlist_entry_is_one_identity_and_clean_text() {
        let key = "ab".repeat(32);
        assert!(device_input(&input(&key, &key)).is_ok());
        assert!(device_input(&input(&key.to_uppercase(), &key)).is_ok());
        let err = device_input(&input("victim-01", &key)).unwrap_err();
        assert!(
            matches!(&err, ServiceError::Validation { field, .. } if field == "id"),
            "{err}"
        );
        for (field, bad) in [
            (
                "type",
                DeviceInput {
                    device_type: Some("pi\u{1b}[31m".into()),
                    ..input(&key, &key)
                },
            ),
            (
                "region",
                DeviceInput {
                    region: Some("r".repeat(65)),
                    ..input(&key, &key)
                },
            ),
            (
                "labels.site",
                DeviceInput {
                    labels: [("site".to_string(), "a\nb".to_string())].into(),
                    ..input(&key, &key)
                },
            ),
        ] {
            let err = device_input(&bad).unwrap_err();
            assert!(
                matches!(&err, ServiceError::Validation { field: f, .. } if f == field),
                "{field}: {err}"
            );
        }
        let many: BTreeMap<String, String> = (0..33)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(labels("labels", &many).is_err());
    }
}
