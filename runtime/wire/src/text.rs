//! Text that came from outside: the one rule set for names, labels, types, regions and
//! descriptions on both sides, and the one way to show such text in a terminal.
//!
//! Every free-text field has a byte limit and refuses control characters (C0, DEL, C1: ESC,
//! NUL, newlines, tabs and the rest), because such text ends up in signed reports, audit lines
//! and operators' terminals. The limits here are the ones the device report enforces, so a
//! device config that loads can always sign its report.

use std::borrow::Cow;

/// Longest device type (`raspberry-pi-4`).
pub const MAX_DEVICE_TYPE_BYTES: usize = 64;
/// Longest CPU architecture name.
pub const MAX_ARCH_BYTES: usize = 32;
/// Longest region.
pub const MAX_REGION_BYTES: usize = 64;
/// Most labels on one device.
pub const MAX_LABELS: usize = 32;
/// Longest label key.
pub const MAX_LABEL_KEY_BYTES: usize = 64;
/// Longest label value.
pub const MAX_LABEL_VALUE_BYTES: usize = 128;
/// Longest free-text description (flows, deployments).
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
/// Longest flow variable name (the flow language's own limit).
pub const MAX_VAR_NAME_BYTES: usize = 64;
/// Longest device or group value of a flow variable (a broker URL, a topic, a sensor path).
pub const MAX_VAR_VALUE_BYTES: usize = 256;

/// Why a piece of text was refused; every variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The text is empty where a value is required.
    #[error("{field} must not be empty")]
    Empty {
        /// The field.
        field: String,
    },
    /// The text is longer than its limit.
    #[error("{field} is {len} bytes, at most {max} allowed")]
    TooLong {
        /// The field.
        field: String,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The text holds a control character.
    #[error("{field} contains the control character U+{code:04X} at byte {at}")]
    Control {
        /// The field.
        field: String,
        /// The character's code point.
        code: u32,
        /// Its byte offset.
        at: usize,
    },
    /// The text is not a valid flow variable name.
    #[error(
        "{field} {found:?} is not a valid variable name (a letter or _, then letters, digits, _, - or .)"
    )]
    VarName {
        /// The field.
        field: String,
        /// The name found (already checked for length and control characters).
        found: String,
    },
}

/// Checks a flow variable name: a letter or `_`, then letters, digits, `_`, `-` or `.`, at
/// most [`MAX_VAR_NAME_BYTES`] bytes (the rule flows declare their variables by).
pub fn check_var_name(field: &str, name: &str) -> Result<(), TextError> {
    if name.is_empty() {
        return Err(TextError::Empty {
            field: field.to_string(),
        });
    }
    check_text(field, name, MAX_VAR_NAME_BYTES)?;
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        Ok(())
    } else {
        Err(TextError::VarName {
            field: field.to_string(),
            found: name.to_string(),
        })
    }
}

/// Checks a flow variable value: bounded text ([`MAX_VAR_VALUE_BYTES`], no control
/// characters). Empty is a value (an empty string variable).
pub fn check_var_value(field: &str, value: &str) -> Result<(), TextError> {
    check_text(field, value, MAX_VAR_VALUE_BYTES)
}

/// Checks free text: at most `max` bytes and no control character. Empty text passes.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), TextError> {
    if value.len() > max {
        return Err(TextError::TooLong {
            field: field.to_string(),
            len: value.len(),
            max,
        });
    }
    if let Some((at, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(TextError::Control {
            field: field.to_string(),
            code: u32::from(c),
            at,
        });
    }
    Ok(())
}

/// [`check_text`] for a value that must not be empty or only whitespace.
pub fn check_required(field: &str, value: &str, max: usize) -> Result<(), TextError> {
    if value.trim().is_empty() {
        return Err(TextError::Empty {
            field: field.to_string(),
        });
    }
    check_text(field, value, max)
}

/// Text safe to print in a terminal: every control character (and the Unicode bidi overrides
/// that reorder what a terminal shows) is written as an escape such as `\u{1b}`, so text an
/// attacker chose cannot move the cursor, recolour the screen or hide part of a line. Clean text
/// is borrowed unchanged.
pub fn for_terminal(value: &str) -> Cow<'_, str> {
    if !value.chars().any(unsafe_for_terminal) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if unsafe_for_terminal(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn unsafe_for_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_control_characters_and_long_text_naming_the_field() {
        assert!(check_text("region", "eu-west", MAX_REGION_BYTES).is_ok());
        assert!(check_text("region", "", MAX_REGION_BYTES).is_ok());
        for bad in [
            "a\u{1b}[2J",
            "a\0b",
            "line\nbreak",
            "tab\t",
            "\u{7f}",
            "\u{9b}31m",
        ] {
            let err = check_text("region", bad, MAX_REGION_BYTES)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.starts_with("region contains the control character"),
                "{bad:?}: {err}"
            );
        }
        let long = "x".repeat(65);
        let err = check_text("region", &long, MAX_REGION_BYTES)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(err, "region is 65 bytes, at most 64 allowed");
        assert!(matches!(
            check_required("device_type", "  ", 64),
            Err(TextError::Empty { .. })
        ));
    }

    #[test]
    fn variable_names_and_values_follow_the_flow_rules() {
        for ok in ["broker", "_x", "sensor.path", "topic-1", &"a".repeat(64)] {
            assert!(check_var_name("name", ok).is_ok(), "{ok}");
        }
        let msg = |r: Result<(), TextError>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(msg(check_var_name("name", "")), "name must not be empty");
        assert_eq!(
            msg(check_var_name("name", &"a".repeat(65))),
            "name is 65 bytes, at most 64 allowed"
        );
        assert!(msg(check_var_name("name", "1abc")).contains("not a valid variable name"));
        assert!(msg(check_var_name("name", "a b")).contains("not a valid variable name"));
        assert!(msg(check_var_name("name", "a\u{1b}")).contains("control character"));
        assert!(check_var_value("value", "").is_ok());
        assert!(check_var_value("value", "mqtt://10.0.0.1:1883").is_ok());
        assert_eq!(
            msg(check_var_value("vars.broker", &"x".repeat(257))),
            "vars.broker is 257 bytes, at most 256 allowed"
        );
        assert!(
            msg(check_var_value("vars.broker", "a\nb"))
                .starts_with("vars.broker contains the control")
        );
    }

    #[test]
    fn terminal_text_escapes_what_a_terminal_would_obey() {
        assert!(matches!(for_terminal("plain text é"), Cow::Borrowed(_)));
        assert_eq!(for_terminal("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(for_terminal("x\ny"), "x\\u{a}y");
        assert_eq!(for_terminal("\u{202e}gpj.exe"), "\\u{202e}gpj.exe");
    }
}
