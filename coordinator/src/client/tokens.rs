//! Named API tokens (admin) and the caller's own identity.

use super::error::ClientError;
use super::transport::{Client, Method, Reply, seg, to_value};
use crate::contract::{ApiTokenInput, Role};

impl Client {
    /// `POST /tokens`: a named token with `role`, living `expires` (`30d`; None: until
    /// revoked). The reply holds the secret, shown this once.
    pub fn create_api_token(
        &self,
        name: &str,
        role: Role,
        expires: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let body = ApiTokenInput {
            name: name.to_string(),
            role,
            expires: expires.map(str::to_string),
        };
        self.call(Method::Post, "/tokens", Some(&to_value(&body)))
    }

    /// `GET /tokens`: every token, without secrets.
    pub fn list_api_tokens(&self) -> Result<Reply, ClientError> {
        self.call(Method::Get, "/tokens", None)
    }

    /// `DELETE /tokens/{name}`: revokes a token at once.
    pub fn revoke_api_token(&self, name: &str) -> Result<Reply, ClientError> {
        self.call(Method::Delete, &format!("/tokens/{}", seg(name)), None)
    }

    /// `GET /whoami`: the caller's token name and role.
    pub fn whoami(&self) -> Result<Reply, ClientError> {
        self.call(Method::Get, "/whoami", None)
    }
}
