//! Paging: every list that grows with the fleet answers one bounded page at a time.
//!
//! - `limit` is 1 to [`MAX_PAGE`] ([`DEFAULT_PAGE`] when absent); anything else is a 400.
//! - `cursor` is opaque: the server makes it from the list it belongs to and the position of
//!   the last item served, and refuses (400) a cursor that is not one it made for that list,
//!   so a cursor of one deployment's targets cannot page another's.
//! - The answer's `next` is the cursor of the following page, null after the last.
//! - Orders are stable and keyed by something that never moves (a device id, a log
//!   position, a plan index), so records added while a client pages never duplicate or
//!   hide the ones it has not seen yet.

/// Items in a page when the request does not say.
pub const DEFAULT_PAGE: usize = 100;
/// Most items in one page.
pub const MAX_PAGE: usize = 1000;

/// Why a `cursor` or `limit` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// The limit is not a whole number from 1 to [`MAX_PAGE`].
    #[error("limit must be a whole number from 1 to {MAX_PAGE}, not {0:?}")]
    Limit(String),
    /// The cursor was not made by this server for this list.
    #[error(
        "cursor {given:?} is not a cursor of {list}; pass the `next` of the previous page unchanged"
    )]
    Cursor {
        /// The list the request pages.
        list: String,
        /// What was given (cut to 64 characters).
        given: String,
    },
}

/// The limit a request asked for.
pub fn limit(given: Option<&str>) -> Result<usize, PageError> {
    match given {
        None => Ok(DEFAULT_PAGE),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| PageError::Limit(v.chars().take(64).collect())),
    }
}

/// The cursor of the position `key` in `list` (`devices`, `audit`, `targets:dep_…`).
pub fn cursor(list: &str, key: &str) -> String {
    hex::encode(format!("{list}\n{key}"))
}

/// The position a cursor names, if it is one of `list`'s.
pub fn position(list: &str, cursor: &str) -> Result<String, PageError> {
    let refused = || PageError::Cursor {
        list: list.to_string(),
        given: cursor.chars().take(64).collect(),
    };
    let bytes = hex::decode(cursor).map_err(|_| refused())?;
    let text = String::from_utf8(bytes).map_err(|_| refused())?;
    match text.split_once('\n') {
        Some((l, key)) if l == list => Ok(key.to_string()),
        _ => Err(refused()),
    }
}

/// The numeric position a cursor names, if it is one of `list`'s.
pub fn numeric_position(list: &str, cursor: &str) -> Result<u64, PageError> {
    position(list, cursor)?
        .parse::<u64>()
        .map_err(|_| PageError::Cursor {
            list: list.to_string(),
            given: cursor.chars().take(64).collect(),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_cursor_names_its_position_only_in_its_own_list() {
        let c = cursor("targets:dep_1", "1000");
        assert_eq!(numeric_position("targets:dep_1", &c).unwrap(), 1000);
        assert!(matches!(
            numeric_position("targets:dep_2", &c),
            Err(PageError::Cursor { .. })
        ));
        assert!(position("devices", "zz").is_err());
        assert!(position("devices", &hex::encode("devices")).is_err());
        let id = cursor("devices", "a\nb");
        assert_eq!(position("devices", &id).unwrap(), "a\nb");
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(limit(Some("1")).unwrap(), 1);
        assert_eq!(limit(Some("1000")).unwrap(), MAX_PAGE);
        for bad in ["0", "1001", "-1", "x", ""] {
            assert!(limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
