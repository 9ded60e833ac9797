//! Named API tokens (`/api/v1/tokens`) and the caller's own identity (`/api/v1/whoami`).

use super::enums::Role;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `POST /tokens`: a new named API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenInput {
    /// The token's name (1 to 64 of `a-z A-Z 0-9 . _ -`); the audit log names it
    /// `token:<name>`. `bootstrap` is the token file's and cannot be taken.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Lifetime (`30d`, `12h`; at most 366 days); absent: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiToken {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was made (RFC 3339; the server's start for the bootstrap token).
    pub created_at: String,
    /// When it stops working (RFC 3339), if it does.
    pub expires_at: Option<String>,
    /// When it was last used (RFC 3339, to the minute), if ever.
    pub last_used_at: Option<String>,
    /// Whether it is the token of `DATA_DIR/api-token` (not revocable through the API).
    pub bootstrap: bool,
}

/// `POST /tokens`'s answer: the token with its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiTokenCreated {
    /// The token.
    #[serde(flatten)]
    pub info: ApiToken,
    /// The bearer secret; only its SHA-256 is kept, so it cannot be shown again.
    pub token: String,
}

/// `GET /tokens`: every token, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiTokenList {
    /// The tokens.
    pub tokens: Vec<ApiToken>,
}

/// `GET /whoami`: the caller's token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WhoAmI {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The audit log's actor for this caller (`token:<name>`).
    pub actor: String,
}
