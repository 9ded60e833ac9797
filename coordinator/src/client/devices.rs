//! Devices and enrollment: listing (page by page) and flagging devices, allowlisting a key,
//! one-time enrollment tokens. The bodies are the contract's.

use super::error::ClientError;
use super::paging::Pages;
use super::transport::{Client, Method, Reply, query, seg, to_value};
use crate::contract::{DeviceInput, DevicePage, DevicePatch, TokenInput};

impl Client {
    // ---- Devices, enrollment, audit ----------------------------------------------------

    /// `GET /devices?region=&type=&label=k=v&online=`: the first page (by id).
    pub fn list_devices(&self, filter: &DeviceFilter) -> Result<Reply, ClientError> {
        self.call(Method::Get, &devices_path(filter), None)
    }

    /// Every device matching the filter, page by page (`limit` per page; the server's
    /// default when `None`). `.all()` collects them.
    pub fn devices(&self, filter: &DeviceFilter, limit: Option<usize>) -> Pages<'_, DevicePage> {
        Pages::new(self, devices_path(filter), limit)
    }

    /// `GET /devices/:id`.
    pub fn get_device(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Get, &format!("/devices/{}", seg(id)), None)
    }

    /// `PATCH /devices/:id` with the flags to change (`None` leaves a flag alone).
    pub fn set_device_flags(
        &self,
        id: &str,
        maintenance: Option<bool>,
        quarantined: Option<bool>,
    ) -> Result<Reply, ClientError> {
        let body = DevicePatch {
            maintenance,
            quarantined,
        };
        self.call(
            Method::Patch,
            &format!("/devices/{}", seg(id)),
            Some(&to_value(&body)),
        )
    }

    /// `GET /health/groups?window=&device_type=`: the fleet's health per device group.
    pub fn group_health(
        &self,
        window: Option<&str>,
        device_type: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let q = query(&[("window", window), ("device_type", device_type)]);
        self.call(Method::Get, &format!("/health/groups{q}"), None)
    }

    /// `POST /devices`: adds a device key to the enrollment allowlist.
    pub fn allow_device(&self, body: &DeviceInput) -> Result<Reply, ClientError> {
        self.call(Method::Post, "/devices", Some(&to_value(body)))
    }

    /// `GET /devices/pending`: devices that asked to join without a token.
    pub fn pending_devices(&self) -> Result<Reply, ClientError> {
        self.call(Method::Get, "/devices/pending", None)
    }

    /// `POST /devices/pending/:id/accept`.
    pub fn accept_device(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(
            Method::Post,
            &format!("/devices/pending/{}/accept", seg(id)),
            None,
        )
    }

    /// `DELETE /devices/pending/:id`.
    pub fn reject_device(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(
            Method::Delete,
            &format!("/devices/pending/{}", seg(id)),
            None,
        )
    }

    /// `POST /enrollment-tokens`.
    pub fn create_enroll_token(&self, ttl: Option<&str>) -> Result<Reply, ClientError> {
        let body = TokenInput {
            ttl: ttl.map(str::to_string),
        };
        self.call(Method::Post, "/enrollment-tokens", Some(&to_value(&body)))
    }

    /// `GET /join-info`: the fabric addresses and trust store a join string carries.
    pub fn join_info(&self) -> Result<Reply, ClientError> {
        self.call(Method::Get, "/join-info", None)
    }
}

/// Filters of `GET /devices`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFilter {
    /// Region.
    pub region: Option<String>,
    /// Device type.
    pub device_type: Option<String>,
    /// Labels as `key=value`.
    pub labels: Vec<String>,
    /// Online or offline only.
    pub online: Option<bool>,
}

/// The path of `GET /devices` with a filter's query.
fn devices_path(filter: &DeviceFilter) -> String {
    let online = filter.online.map(|b| if b { "true" } else { "false" });
    let mut pairs: Vec<(&str, Option<&str>)> = vec![
        ("region", filter.region.as_deref()),
        ("type", filter.device_type.as_deref()),
    ];
    for l in &filter.labels {
        pairs.push(("label", Some(l.as_str())));
    }
    pairs.push(("online", online));
    format!("/devices{}", query(&pairs))
}
