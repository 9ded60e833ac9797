//! Named API tokens as the REST layer holds them: a table from the SHA-256 of each secret to
//! its name, role and expiry, loaded from the store at the first request and changed with
//! every create and revoke (so a revoked token stops working at the next request), plus the
//! bootstrap token of `DATA_DIR/api-token` (role admin, never in the store). And the routes
//! `/tokens` (admin) and `/whoami` (anyone with a token).

use super::types::{ApiToken, ApiTokenCreated, ApiTokenInput, ApiTokenList, Role, WhoAmI};
use super::{ApiError, ApiResult, AppState, JsonBody, ok};
use crate::service::api_tokens::{BOOTSTRAP_TOKEN_NAME, parse_token_lifetime};
use crate::service::{ServiceError, ServiceHandle};
use crate::store::{ApiTokenRecord, api_token_hash, rfc3339};
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// How stale a token's stored `last_used_at` may get (it is written at most this often).
pub const LAST_USED_EVERY: u64 = 60_000;

/// Who a request is: its token's name and role (a request extension the auth layer sets).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The token's name.
    pub name: Arc<str>,
    /// Its role.
    pub role: Role,
}

impl Identity {
    /// The audit log's actor for this caller.
    pub fn actor(&self) -> String {
        format!("token:{}", self.name)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    role: Role,
    created_at: u64,
    expires_at: Option<u64>,
    last_used_at: Option<u64>,
    /// The `last_used_at` the store has (so it is written at most once a minute).
    stored_used_at: Option<u64>,
    bootstrap: bool,
}

impl Entry {
    fn view(&self) -> ApiToken {
        ApiToken {
            name: self.name.to_string(),
            role: self.role,
            created_at: rfc3339(self.created_at),
            expires_at: self.expires_at.map(rfc3339),
            last_used_at: self.last_used_at.map(rfc3339),
            bootstrap: self.bootstrap,
        }
    }

    fn from_record(r: &ApiTokenRecord) -> Option<Entry> {
        let role = match r.role.parse::<Role>() {
            Ok(role) => role,
            Err(e) => {
                tracing::warn!(token = %r.name, error = %e, "API token with an unknown role ignored");
                return None;
            }
        };
        Some(Entry {
            name: Arc::from(r.name.as_str()),
            role,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            stored_used_at: r.last_used_at,
            bootstrap: false,
        })
    }
}

/// Why a bearer token was refused (401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token has this secret (never made, or revoked).
    Unknown,
    /// The token named has expired.
    Expired {
        /// Its name.
        name: String,
        /// When (ms).
        at: u64,
    },
}

/// The tokens the API accepts. See the module documentation.
#[derive(Debug)]
pub struct TokenTable {
    loaded: tokio::sync::OnceCell<()>,
    by_hash: RwLock<HashMap<String, Entry>>,
}

impl TokenTable {
    /// A table holding the bootstrap token `secret` (made at `now`); the named tokens are
    /// read from the store at the first request.
    pub fn new(secret: &str, now: u64) -> Self {
        let mut by_hash = HashMap::new();
        by_hash.insert(
            api_token_hash(secret.trim()),
            Entry {
                name: Arc::from(BOOTSTRAP_TOKEN_NAME),
                role: Role::Admin,
                created_at: now,
                expires_at: None,
                last_used_at: None,
                stored_used_at: None,
                bootstrap: true,
            },
        );
        TokenTable {
            loaded: tokio::sync::OnceCell::new(),
            by_hash: RwLock::new(by_hash),
        }
    }

    /// Reads the named tokens from the store, once.
    pub async fn ensure_loaded(&self, handle: &ServiceHandle) -> Result<(), ServiceError> {
        self.loaded
            .get_or_try_init(|| async {
                let records = handle
                    .read(|store| store.api_tokens().map_err(ServiceError::from))
                    .await?;
                let mut table = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
                for r in &records {
                    if let Some(e) = Entry::from_record(r) {
                        table.insert(r.hash.clone(), e);
                    }
                }
                Ok::<(), ServiceError>(())
            })
            .await
            .map(|_| ())
    }

    /// The identity of `secret` at `now`, marking it used. The second value names a token
    /// whose stored `last_used_at` should be brought up to date (at most once a minute).
    pub fn authenticate(
        &self,
        secret: &str,
        now: u64,
    ) -> Result<(Identity, Option<Arc<str>>), Refusal> {
        // Looked up by the SHA-256 of the secret: no comparison with a secret ever runs.
        let hash = api_token_hash(secret.trim());
        let mut table = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
        let e = table.get_mut(&hash).ok_or(Refusal::Unknown)?;
        if let Some(at) = e.expires_at.filter(|at| *at <= now) {
            return Err(Refusal::Expired {
                name: e.name.to_string(),
                at,
            });
        }
        e.last_used_at = Some(now.max(e.last_used_at.unwrap_or(0)));
        let persist = !e.bootstrap
            && e.stored_used_at
                .is_none_or(|s| now.saturating_sub(s) >= LAST_USED_EVERY);
        if persist {
            e.stored_used_at = Some(now);
        }
        let who = Identity {
            name: e.name.clone(),
            role: e.role,
        };
        Ok((who, persist.then(|| e.name.clone())))
    }

    fn insert(&self, r: &ApiTokenRecord) {
        if let Some(e) = Entry::from_record(r) {
            self.by_hash
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(r.hash.clone(), e);
        }
    }

    fn remove(&self, name: &str) {
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, e| e.bootstrap || &*e.name != name);
    }

    fn list(&self) -> Vec<ApiToken> {
        let table = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<ApiToken> = table.values().map(Entry::view).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// `POST /tokens` (admin): a named token; its secret is in this answer only.
pub(super) async fn create(
    State(st): State<AppState>,
    JsonBody(input): JsonBody<ApiTokenInput>,
) -> ApiResult {
    st.tokens.ensure_loaded(&st.handle).await?;
    let lifetime = input
        .expires
        .as_deref()
        .map(parse_token_lifetime)
        .transpose()?;
    let (name, role) = (input.name, input.role);
    let (secret, record) = st
        .handle
        .call(move |core, now| core.create_api_token(&name, role, lifetime, now))
        .await?;
    st.tokens.insert(&record);
    let info = Entry::from_record(&record)
        .map(|e| e.view())
        .ok_or_else(|| ApiError::from(ServiceError::Internal("stored role unreadable".into())))?;
    ok(
        StatusCode::CREATED,
        ApiTokenCreated {
            info,
            token: secret,
        },
    )
}

/// `GET /tokens` (admin): every token, by name, without secrets.
pub(super) async fn list(State(st): State<AppState>) -> ApiResult {
    st.tokens.ensure_loaded(&st.handle).await?;
    ok(
        StatusCode::OK,
        ApiTokenList {
            tokens: st.tokens.list(),
        },
    )
}

/// `DELETE /tokens/{name}` (admin): revokes a token, at once.
pub(super) async fn revoke(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult {
    st.tokens.ensure_loaded(&st.handle).await?;
    let revoked = name.clone();
    st.handle
        .call(move |core, now| core.revoke_api_token(&revoked, now))
        .await?;
    st.tokens.remove(&name);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /whoami`: the caller's token name and role (the console shows or hides actions by it).
pub(super) async fn whoami(Extension(who): Extension<Identity>) -> ApiResult {
    ok(
        StatusCode::OK,
        WhoAmI {
            name: who.name.to_string(),
            role: who.role,
            actor: who.actor(),
        },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(name: &str, secret: &str, role: &str, expires_at: Option<u64>) -> ApiTokenRecord {
        ApiTokenRecord {
            name: name.into(),
            hash: api_token_hash(secret),
            role: role.into(),
            created_at: 0,
            expires_at,
            last_used_at: None,
        }
    }

    #[test]
    fn secrets_map_to_their_token_until_expiry_or_revocation() {
        let t = TokenTable::new("boot-secret\n", 0);
        let (who, persist) = t.authenticate("boot-secret", 10).unwrap();
        assert_eq!(
            (&*who.name, who.role, persist),
            ("bootstrap", Role::Admin, None)
        );
        t.insert(&record("ci", "ci-secret", "viewer", Some(1_000)));
        let (who, persist) = t.authenticate("ci-secret", 10).unwrap();
        assert_eq!((&*who.name, who.role), ("ci", Role::Viewer));
        assert_eq!(persist.as_deref(), Some("ci"));
        // Used again within the minute: not written again.
        assert_eq!(t.authenticate("ci-secret", 20).unwrap().1, None);
        assert_eq!(
            t.authenticate("ci-secret", 1_000).unwrap_err(),
            Refusal::Expired {
                name: "ci".into(),
                at: 1_000
            }
        );
        assert_eq!(t.authenticate("nope", 10).unwrap_err(), Refusal::Unknown);
        t.insert(&record("op", "op-secret", "operator", None));
        t.remove("op");
        assert_eq!(
            t.authenticate("op-secret", 10).unwrap_err(),
            Refusal::Unknown
        );
        // The bootstrap token cannot be removed through the table.
        t.remove("bootstrap");
        assert!(t.authenticate("boot-secret", 10).is_ok());
        // A stored role this build does not know is not accepted as anything.
        t.insert(&record("odd", "odd-secret", "superuser", None));
        assert_eq!(
            t.authenticate("odd-secret", 10).unwrap_err(),
            Refusal::Unknown
        );
        let names: Vec<_> = t.list().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["bootstrap", "ci"]);
    }
}
