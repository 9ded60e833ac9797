//! Secret flow variable values on the device.
//!
//! The Stage directive carries them sealed to this device's key (`floe_wire::proto::sealed`);
//! the slot record keeps the sealed bytes, never the clear value, so nothing in the data
//! directory holds it. They are opened with the identity key in memory only, when a flow
//! starts (the smoke test's muted start and the live one), and checked at Stage so a value
//! this device cannot open fails the Stage with the reason instead of failing later.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use floe_wire::proto::{SealError, SealedValue, sealed};

/// What a start or a Stage says when a secret does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret variable {name}: {source}")]
pub struct SecretError {
    /// The variable.
    pub name: String,
    /// Why.
    #[source]
    pub source: SealError,
}

/// The identity key, kept to open secret values. Its `Debug` shows nothing of it.
pub(crate) struct Opener(SigningKey);

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener(..)")
    }
}

impl Opener {
    pub(crate) fn new(key: SigningKey) -> Opener {
        Opener(key)
    }

    /// Opens every sealed value; the first that does not open is the error, by name.
    pub(crate) fn open_all(
        &self,
        sealed: &BTreeMap<String, SealedValue>,
    ) -> Result<BTreeMap<String, String>, SecretError> {
        sealed
            .iter()
            .map(|(name, value)| {
                sealed::open(&self.0, value)
                    .map(|clear| (name.clone(), clear))
                    .map_err(|source| SecretError {
                        name: name.clone(),
                        source,
                    })
            })
            .collect()
    }
}

/// `text` with every non-empty secret value replaced by `<secret>`: error reports that may
/// quote a flow field (a compile problem, an engine error) leave the device this way.
pub fn redact(text: &str, secrets: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    // Longest first, so a value that contains another is replaced whole.
    let mut values: Vec<&String> = secrets.values().filter(|v| !v.is_empty()).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in values {
        out = out.replace(v.as_str(), "<secret>");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn values_open_with_this_device_key_only_and_reports_are_redacted() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let id = hex::encode(key.verifying_key().to_bytes());
        let other = hex::encode(SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes());
        let opener = Opener::new(key);
        let mine = BTreeMap::from([("pw".to_string(), sealed::seal(&id, "p4ss").unwrap())]);
        let opened = opener.open_all(&mine).unwrap();
        assert_eq!(opened["pw"], "p4ss");
        let theirs = BTreeMap::from([
            ("a".to_string(), sealed::seal(&id, "x").unwrap()),
            ("b".to_string(), sealed::seal(&other, "y").unwrap()),
        ]);
        let err = opener.open_all(&theirs).unwrap_err();
        assert_eq!(err.name, "b");
        assert_eq!(err.source, SealError::Open);
        assert!(err.to_string().starts_with("secret variable b: "));
        assert_eq!(format!("{opener:?}"), "Opener(..)");

        let secrets = BTreeMap::from([
            ("a".to_string(), "p4ss".to_string()),
            ("b".to_string(), "p4ss-long".to_string()),
            ("c".to_string(), String::new()),
        ]);
        assert_eq!(
            redact("topic `t/p4ss-long/p4ss` is bad", &secrets),
            "topic `t/<secret>/<secret>` is bad"
        );
    }
}
