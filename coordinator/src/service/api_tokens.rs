//! Named API tokens (SECURITY.md, "Roles"): created with a role and an optional lifetime,
//! listed, revoked; each change audited under its caller. The secret is 32 random bytes in
//! hex, returned once; the store keeps its SHA-256.

use super::audit::api_audit;
use super::{Core, ServiceError, random_token, validation};
use crate::contract::Role;
use crate::store::{ApiTokenRecord, api_token_hash};
use floe_rollout::duration::format_duration;
use floe_rollout::{Millis, parse_duration};

/// Most named API tokens (creating one more is a conflict).
pub const MAX_API_TOKENS: u64 = 1000;
/// The name of the token in `DATA_DIR/api-token`, which no named token may take.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";
/// The longest name.
pub const MAX_TOKEN_NAME: usize = 64;

/// Checks a token name: 1 to 64 of `a-z A-Z 0-9 . _ -`, not `bootstrap`.
pub fn check_token_name(name: &str) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > MAX_TOKEN_NAME {
        return Err(validation(
            "name",
            format!("must be 1 to {MAX_TOKEN_NAME} bytes, not {}", name.len()),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(validation(
            "name",
            format!("{c:?} is not allowed: use a-z, A-Z, 0-9, '.', '_' and '-'"),
        ));
    }
    if name == BOOTSTRAP_TOKEN_NAME {
        return Err(validation(
            "name",
            "\"bootstrap\" is the token of DATA_DIR/api-token; choose another name",
        ));
    }
    Ok(())
}

/// Parses a token lifetime (`30d`; at most 366 days, above zero).
pub fn parse_token_lifetime(expires: &str) -> Result<Millis, ServiceError> {
    let ms = parse_duration(expires).map_err(|e| validation("expires", e.to_string()))?;
    if ms == 0 {
        return Err(validation("expires", "a token must live longer than 0 ms"));
    }
    Ok(ms)
}

impl Core {
    /// `POST /tokens`: a new token named `name` with `role`, living `lifetime` (None: until
    /// revoked). Returns the secret (shown once) and the record.
    pub fn create_api_token(
        &mut self,
        name: &str,
        role: Role,
        lifetime: Option<Millis>,
        now: Millis,
    ) -> Result<(String, ApiTokenRecord), ServiceError> {
        check_token_name(name)?;
        let store = self.store();
        if store.api_token_count()? >= MAX_API_TOKENS {
            return Err(ServiceError::Conflict(format!(
                "{MAX_API_TOKENS} API tokens exist; revoke some first"
            )));
        }
        let secret = format!("floe_{}", random_token(32)?);
        let record = ApiTokenRecord {
            name: name.to_string(),
            hash: api_token_hash(&secret),
            role: role.as_str().to_string(),
            created_at: now,
            expires_at: lifetime.map(|l| now.saturating_add(l)),
            last_used_at: None,
        };
        let life = lifetime.map_or_else(|| "until revoked".to_string(), format_duration);
        store.atomically(|s| {
            if !s.put_api_token(&record)? {
                return Err(ServiceError::Conflict(format!(
                    "an API token named {name:?} exists; revoke it first or choose another name"
                )));
            }
            s.audit(&api_audit(
                s.caller(),
                now,
                "token.create",
                None,
                "ok",
                format!("token:{name} role {role}, valid {life}"),
            ))?;
            Ok(())
        })?;
        Ok((secret, record))
    }

    /// `DELETE /tokens/{name}`: revokes a token (it stops working at once).
    pub fn revoke_api_token(&mut self, name: &str, now: Millis) -> Result<(), ServiceError> {
        if name == BOOTSTRAP_TOKEN_NAME {
            return Err(ServiceError::Conflict(
                "the bootstrap token is DATA_DIR/api-token: replace that file and restart to \
                 rotate it"
                    .into(),
            ));
        }
        self.store().atomically(|s| {
            if !s.delete_api_token(name)? {
                return Err(ServiceError::NotFound {
                    what: "API token",
                    id: name.to_string(),
                });
            }
            s.audit(&api_audit(
                s.caller(),
                now,
                "token.revoke",
                None,
                "ok",
                format!("token:{name} revoked"),
            ))?;
            Ok(())
        })
    }
}

impl Core {
    /// Records that token `name` was used at `at` (the REST layer calls it at most once a
    /// minute per token).
    pub fn touch_api_token(&mut self, name: &str, at: Millis) -> Result<(), ServiceError> {
        Ok(self.store().touch_api_token(name, at)?)
    }
}
