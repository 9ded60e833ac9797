//! A guard in front of ciborium: the canonical-CBOR pre-scan and the strict decode.
//!
//! ciborium decodes well-formed input faithfully but cannot refuse the things an attacker uses
//! against a decoder: a byte string header claiming 2^64 bytes, 100 000 nested arrays, an
//! indefinite-length item that never ends, tags, or a second encoding of the same value. So
//! before any bytes reach ciborium, [`prescan`] walks the item structure iteratively (no
//! recursion, so no stack to overflow) and refuses:
//!
//! - a length or count larger than the bytes that remain (no length bomb can allocate),
//! - nesting deeper than [`MAX_DEPTH`],
//! - tags, indefinite lengths, breaks, floats, `undefined` and other simple values,
//! - integers, lengths and counts not written in their shortest form,
//! - map keys that are not text strings, and duplicate keys in one map,
//! - text that is not UTF-8, and anything after the one top-level item.
//!
//! After the pre-scan, [`decode_canonical`] hands the bytes to ciborium (with a recursion
//! limit that matches ours) and then re-encodes the value: the bytes must come back identical.
//! That closes the last gaps (map keys in another order, a field present with its default
//! value) so that one value has exactly one accepted encoding, and a signature over the bytes
//! is a signature over the value.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// The deepest nesting of arrays and maps any Floe wire type needs, with room to spare. The
/// pre-scan walks iteratively; ciborium recurses, and this bound keeps its recursion a few
/// kilobytes deep, far inside a 2 MiB thread stack.
pub const MAX_DEPTH: usize = 16;

/// Why bytes were refused before or during decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    /// The input is larger than the type allows; nothing was decoded.
    #[error("input is {found} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The limit for this type.
        limit: usize,
        /// The input's length.
        found: usize,
    },
    /// The bytes end in the middle of an item.
    #[error("input ends inside an item at byte {offset}")]
    Truncated {
        /// Where the unfinished item starts or its header ends.
        offset: usize,
    },
    /// A string, array or map claims more content than the input holds.
    #[error(
        "{what} at byte {offset} claims {claimed} bytes or items but only {remaining} bytes remain"
    )]
    LengthBomb {
        /// What kind of item (`byte string`, `text string`, `array`, `map`).
        what: &'static str,
        /// Where the item starts.
        offset: usize,
        /// What the header claims.
        claimed: u64,
        /// Bytes left after the header.
        remaining: usize,
    },
    /// Arrays and maps nest deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {limit} at byte {offset}")]
    TooDeep {
        /// Where the item that went too deep starts.
        offset: usize,
        /// The limit.
        limit: usize,
    },
    /// A construct canonical Floe CBOR never uses (tag, indefinite length, float …).
    #[error("{what} at byte {offset} is not allowed in canonical Floe CBOR")]
    Forbidden {
        /// Where it starts.
        offset: usize,
        /// What it is.
        what: &'static str,
    },
    /// An integer, length or count that has a shorter encoding.
    #[error("non-minimal integer or length encoding at byte {offset}")]
    NonMinimal {
        /// Where the header starts.
        offset: usize,
    },
    /// A map key that is not a text string.
    #[error("map key at byte {offset} is not a text string")]
    KeyType {
        /// Where the key starts.
        offset: usize,
    },
    /// The same key twice in one map.
    #[error("duplicate map key {key:?} at byte {offset}")]
    DuplicateKey {
        /// Where the second occurrence starts.
        offset: usize,
        /// The key.
        key: String,
    },
    /// A text string that is not UTF-8.
    #[error("text string at byte {offset} is not valid UTF-8")]
    Utf8 {
        /// Where the string starts.
        offset: usize,
    },
    /// Bytes after the single top-level item.
    #[error("{extra} trailing bytes after the item")]
    Trailing {
        /// How many.
        extra: usize,
    },
    /// Well-formed CBOR that does not match the schema (missing or unknown field, wrong type).
    #[error("schema: {0}")]
    Schema(#[source] Shared<ciborium::de::Error<std::io::Error>>),
    /// The value decoded but re-encodes to different bytes (field order, default written …).
    #[error("not in canonical form: the value re-encodes to different bytes")]
    NotCanonical,
    /// Encoding failed (only possible for values that cannot be CBOR at all).
    #[error("encode: {0}")]
    Encode(#[source] Shared<ciborium::ser::Error<std::io::Error>>),
}

/// An error from ciborium kept whole as the source of a [`CborError`]. It sits behind an `Arc`
/// because ciborium's errors are neither `Clone` nor comparable and [`CborError`] is both (the
/// envelope and artifact errors built on it are compared in tests and cloned into reports).
/// Two are equal when their messages are, which is what the `String` this replaced compared.
#[derive(Debug)]
pub struct Shared<E>(Arc<E>);

impl<E> Shared<E> {
    /// Wraps an error.
    pub fn new(error: E) -> Self {
        Shared(Arc::new(error))
    }

    /// The error itself.
    pub fn get(&self) -> &E {
        &self.0
    }
}

impl<E> Clone for Shared<E> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<E: fmt::Display> fmt::Display for Shared<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Shared<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl<E: fmt::Display> PartialEq for Shared<E> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl<E: fmt::Display> Eq for Shared<E> {}

/// One open array or map during the pre-scan.
struct Frame<'a> {
    /// Items (for a map: keys and values counted separately) still to read.
    left: u64,
    /// Keys seen so far when this frame is a map.
    keys: Option<HashSet<&'a str>>,
}

/// Reads an item header at `pos`: returns (major type, argument, header length). Refuses
/// reserved and indefinite forms and non-minimal arguments.
fn header(bytes: &[u8], pos: usize) -> Result<(u8, u64, usize), CborError> {
    let first = *bytes.get(pos).ok_or(CborError::Truncated { offset: pos })?;
    let major = first >> 5;
    let info = first & 0x1f;
    let (len, min) = match info {
        0..=23 => return Ok((major, u64::from(info), 1)),
        24 => (1usize, 24u64),
        25 => (2, 0x100),
        26 => (4, 0x1_0000),
        27 => (8, 0x1_0000_0000),
        31 => {
            let what = if major == 7 {
                "a break code"
            } else {
                "an indefinite-length item"
            };
            return Err(CborError::Forbidden { offset: pos, what });
        }
        _ => {
            return Err(CborError::Forbidden {
                offset: pos,
                what: "a reserved header value",
            });
        }
    };
    let arg_bytes = bytes
        .get(pos + 1..pos + 1 + len)
        .ok_or(CborError::Truncated { offset: pos })?;
    let mut value = 0u64;
    for byte in arg_bytes {
        value = (value << 8) | u64::from(*byte);
    }
    if major == 7 {
        // Simple values beyond 23 and all floats; reported before minimality matters.
        let what = if info == 24 {
            "a simple value"
        } else {
            "a floating-point number"
        };
        return Err(CborError::Forbidden { offset: pos, what });
    }
    if value < min {
        return Err(CborError::NonMinimal { offset: pos });
    }
    Ok((major, value, 1 + len))
}

/// Checks that `bytes` are exactly one item of canonical Floe CBOR, without recursion and
/// without allocating more than a small multiple of the input's size. See the module docs
/// for the rules.
pub fn prescan(bytes: &[u8]) -> Result<(), CborError> {
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut pos = 0usize;
    // The top level is one item; model it as a frame with one item left.
    let mut top_left = 1u64;
    loop {
        // Close every finished frame, then decide whether an item is due.
        while let Some(frame) = stack.last() {
            if frame.left == 0 {
                stack.pop();
            } else {
                break;
            }
        }
        if stack.is_empty() && top_left == 0 {
            break;
        }
        let start = pos;
        let expecting_key = match stack.last_mut() {
            Some(frame) => {
                let is_key = frame.keys.is_some() && frame.left % 2 == 0;
                frame.left -= 1;
                is_key
            }
            None => {
                top_left -= 1;
                false
            }
        };
        let (major, arg, hlen) = header(bytes, pos)?;
        pos += hlen;
        let remaining = bytes.len() - pos;
        if expecting_key && major != 3 {
            return Err(CborError::KeyType { offset: start });
        }
        match major {
            0 | 1 => {}
            2 | 3 => {
                if arg > remaining as u64 {
                    return Err(CborError::LengthBomb {
                        what: if major == 2 {
                            "byte string"
                        } else {
                            "text string"
                        },
                        offset: start,
                        claimed: arg,
                        remaining,
                    });
                }
                // Cannot truncate: arg is at most `remaining`, a usize.
                let end = pos + arg as usize;
                let content = &bytes[pos..end];
                if major == 3 {
                    let text = std::str::from_utf8(content)
                        .map_err(|_| CborError::Utf8 { offset: start })?;
                    if expecting_key {
                        // The map frame is the last one: it was just decremented.
                        if let Some(Some(keys)) = stack.last_mut().map(|f| f.keys.as_mut())
                            && !keys.insert(text)
                        {
                            return Err(CborError::DuplicateKey {
                                offset: start,
                                key: text.to_string(),
                            });
                        }
                    }
                }
                pos = end;
            }
            4 | 5 => {
                // Every item takes at least one byte, so a count above the remaining bytes
                // is a lie; this is what keeps allocation proportional to the input.
                let items = if major == 5 {
                    arg.saturating_mul(2)
                } else {
                    arg
                };
                if items > remaining as u64 {
                    return Err(CborError::LengthBomb {
                        what: if major == 5 { "map" } else { "array" },
                        offset: start,
                        claimed: arg,
                        remaining,
                    });
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(CborError::TooDeep {
                        offset: start,
                        limit: MAX_DEPTH,
                    });
                }
                stack.push(Frame {
                    left: items,
                    keys: (major == 5).then(HashSet::new),
                });
            }
            6 => {
                return Err(CborError::Forbidden {
                    offset: start,
                    what: "a tag",
                });
            }
            _ => match arg {
                20..=22 => {}
                23 => {
                    return Err(CborError::Forbidden {
                        offset: start,
                        what: "undefined",
                    });
                }
                _ => {
                    return Err(CborError::Forbidden {
                        offset: start,
                        what: "an unassigned simple value",
                    });
                }
            },
        }
    }
    if pos != bytes.len() {
        return Err(CborError::Trailing {
            extra: bytes.len() - pos,
        });
    }
    Ok(())
}

/// Encodes a value as Floe CBOR (ciborium's encoding: shortest integers, definite lengths,
/// struct fields in declaration order).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CborError> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).map_err(|e| CborError::Encode(Shared::new(e)))?;
    Ok(out)
}

/// Decodes `bytes` as a `T` after the size cap and the pre-scan, and refuses the value unless
/// it re-encodes to exactly `bytes`.
pub fn decode_canonical<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, CborError> {
    if bytes.len() > limit {
        return Err(CborError::TooLarge {
            limit,
            found: bytes.len(),
        });
    }
    prescan(bytes)?;
    let value: T = ciborium::de::from_reader_with_recursion_limit(bytes, MAX_DEPTH + 4)
        .map_err(|e| CborError::Schema(Shared::new(e)))?;
    if encode(&value)? != bytes {
        return Err(CborError::NotCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn accepts_canonical_items() {
        for ok in [
            "00",
            "17",
            "1818",
            "190100",
            "1a00010000",
            "1b0000000100000000",
            "20",
            "40",
            "4161",
            "60",
            "6161",
            "80",
            "820102",
            "a0",
            "a1616101",
            "f4",
            "f5",
            "f6",
            "a2616101616202",
        ] {
            prescan(&hex(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_length_bombs_without_allocating() {
        // An array and a byte string, each claiming 2^64 - 1 items or bytes.
        for bomb in ["9B FF FF FF FF FF FF FF FF", "5B FF FF FF FF FF FF FF FF"] {
            let err = prescan(&hex(bomb)).unwrap_err();
            assert!(
                matches!(
                    err,
                    CborError::LengthBomb {
                        claimed: u64::MAX,
                        ..
                    }
                ),
                "{bomb}: {err}"
            );
        }
        let err = prescan(&hex("BB FF FF FF FF FF FF FF FF")).unwrap_err();
        assert!(matches!(err, CborError::LengthBomb { .. }), "{err}");
        let err = prescan(&hex("7A 00 01 00 00 61")).unwrap_err();
        assert!(matches!(
            err,
            CborError::LengthBomb {
                claimed: 65536,
                remaining: 1,
                ..
            }
        ));
    }

    #[test]
    fn refuses_deep_nesting_iteratively() {
        // 100 000 nested one-element arrays; a recursive walker would need a deep stack.
        let mut deep = vec![0x81u8; 100_000];
        deep.push(0x00);
        let run = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || prescan(&deep))
            .unwrap();
        let err = run.join().unwrap().unwrap_err();
        assert_eq!(
            err,
            CborError::TooDeep {
                offset: MAX_DEPTH,
                limit: MAX_DEPTH
            }
        );
    }

    #[test]
    fn refuses_forbidden_constructs() {
        let cases = [
            ("9f 01 02", "an indefinite-length item"),
            ("5f 41 00", "an indefinite-length item"),
            ("ff", "a break code"),
            ("c1 1a 5f 00 00 00", "a tag"),
            ("a1 61 61 c2 41 01", "a tag"),
            ("f7", "undefined"),
            ("f8 20", "a simple value"),
            ("f9 3c 00", "a floating-point number"),
            ("fb 3f f0 00 00 00 00 00 00", "a floating-point number"),
            ("1c", "a reserved header value"),
        ];
        for (input, what) in cases {
            match prescan(&hex(input)) {
                Err(CborError::Forbidden { what: found, .. }) => assert_eq!(found, what, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_non_minimal_and_bad_keys() {
        for input in [
            "18 17",
            "19 00 ff",
            "1a 00 00 ff ff",
            "1b 00 00 00 00 ff ff ff ff",
            "58 01 61",
            "98 01 00",
            "39 00 01",
        ] {
            assert!(
                matches!(
                    prescan(&hex(input)),
                    Err(CborError::NonMinimal { offset: 0 })
                ),
                "{input}"
            );
        }
        assert_eq!(
            prescan(&hex("a2 61 61 01 61 61 02")),
            Err(CborError::DuplicateKey {
                offset: 4,
                key: "a".into()
            })
        );
        assert_eq!(
            prescan(&hex("a1 01 02")),
            Err(CborError::KeyType { offset: 1 })
        );
        // The same key in two different maps is fine.
        prescan(&hex("82 a1 61 61 01 a1 61 61 02")).unwrap();
        assert_eq!(
            prescan(&hex("62 ff fe")),
            Err(CborError::Utf8 { offset: 0 })
        );
        assert_eq!(
            prescan(&hex("01 02")),
            Err(CborError::Trailing { extra: 1 })
        );
        assert_eq!(
            prescan(&hex("82 01")),
            Err(CborError::LengthBomb {
                what: "array",
                offset: 0,
                claimed: 2,
                remaining: 1
            })
        );
        assert_eq!(
            prescan(&hex("a1 61 61")),
            Err(CborError::Truncated { offset: 3 })
        );
        assert_eq!(prescan(&hex("")), Err(CborError::Truncated { offset: 0 }));
        assert_eq!(
            prescan(&hex("19 01")),
            Err(CborError::Truncated { offset: 0 })
        );
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pair {
        a: u64,
        b: String,
    }

    #[test]
    fn decode_refuses_reordered_and_unknown_fields() {
        let good = encode(&Pair {
            a: 1,
            b: "x".into(),
        })
        .unwrap();
        assert_eq!(hex::encode(&good), "a2616101616261 78".replace(' ', ""));
        assert_eq!(
            decode_canonical::<Pair>(&good, 100).unwrap(),
            Pair {
                a: 1,
                b: "x".into()
            }
        );
        let reordered = hex("a2 61 62 61 78 61 61 01");
        assert_eq!(
            decode_canonical::<Pair>(&reordered, 100),
            Err(CborError::NotCanonical)
        );
        let unknown = hex("a3 61 61 01 61 62 61 78 61 63 00");
        assert!(matches!(
            decode_canonical::<Pair>(&unknown, 100),
            Err(CborError::Schema(_))
        ));
        assert_eq!(
            decode_canonical::<Pair>(&good, 3),
            Err(CborError::TooLarge {
                limit: 3,
                found: good.len()
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn prescan_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = prescan(&bytes);
        }

        #[test]
        fn canonical_encodings_pass_the_prescan(a in proptest::num::u64::ANY, b in ".{0,40}") {
            let bytes = encode(&Pair { a, b: b.clone() }).unwrap();
            proptest::prop_assert!(prescan(&bytes).is_ok());
            proptest::prop_assert_eq!(decode_canonical::<Pair>(&bytes, 1024).unwrap(), Pair { a, b });
        }
    }
}
