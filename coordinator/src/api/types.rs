//! The REST layer's request and response types are the API contract's, defined once in
//! [`crate::contract`] and re-exported here for the handlers.

pub use crate::contract::*;
