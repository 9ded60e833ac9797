//! Values of flow variables: a device's own and the groups' (`/devices/{id}/vars`,
//! `/group-vars`). The bodies are the contract's.

use super::error::ClientError;
use super::transport::{Client, Method, Reply, seg, to_value};
use crate::contract::{GroupVarsChange, VarsChange};

impl Client {
    /// `GET /devices/:id/vars`: the device's own values and what it resolves to.
    pub fn device_vars(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Get, &format!("/devices/{}/vars", seg(id)), None)
    }

    /// `PUT /devices/:id/vars`: sets and unsets the device's own values.
    pub fn set_device_vars(&self, id: &str, change: &VarsChange) -> Result<Reply, ClientError> {
        self.call(
            Method::Put,
            &format!("/devices/{}/vars", seg(id)),
            Some(&to_value(change)),
        )
    }

    /// `GET /group-vars`: every group holding values.
    pub fn group_vars(&self) -> Result<Reply, ClientError> {
        self.call(Method::Get, "/group-vars", None)
    }

    /// `PUT /group-vars`: sets and unsets one group's values.
    pub fn set_group_vars(&self, change: &GroupVarsChange) -> Result<Reply, ClientError> {
        self.call(Method::Put, "/group-vars", Some(&to_value(change)))
    }
}
