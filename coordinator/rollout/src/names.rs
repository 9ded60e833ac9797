//! One spelling per enum value: the string the REST API, the store, the audit log and serde
//! use. The [`spelled!`] macro gives an enum `ALL`, `as_str`, `Display` and `FromStr` from one
//! table, so the coordinator maps values to strings and back through the engine's own
//! spelling instead of keeping a hand-written copy that could drift from serde's.

/// A string that names no value of the enum it was parsed as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}; expected one of: {}", expected.join(", "))]
pub struct UnknownName {
    /// What was being parsed ("deployment status", "command", ...).
    pub what: &'static str,
    /// The string received.
    pub name: String,
    /// The accepted spellings.
    pub expected: &'static [&'static str],
}

/// Implements `ALL`, `as_str`, `Display` and `FromStr` for a field-less enum from a table of
/// `Variant => "spelling"`.
macro_rules! spelled {
    ($t:ident, $what:literal, { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $t {
            /// Every value, in declaration order.
            pub const ALL: &'static [$t] = &[$($t::$v),+];

            /// The spelling the REST API, the store and serde use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($t::$v => $s,)+
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $t {
            type Err = $crate::names::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($t::$v),)+
                    other => Err($crate::names::UnknownName {
                        what: $what,
                        name: other.to_string(),
                        expected: &[$($s),+],
                    }),
                }
            }
        }
    };
}

pub(crate) use spelled;
