//! A device proving who it is on a plain HTTP request: a short-lived signature by its identity
//! key, in one header.
//!
//! `GET /devices/{id}/directive` answers only the device `id` itself. The device sends
//! `floe-device-auth: <unix seconds>.<hex signature>`, the signature by its ed25519 key over
//! `floe-sig-v1\0device-request\0<METHOD> <path>\n<unix seconds>` (domain-separated like every
//! other signature, so it cannot be mistaken for a report or a directive). The coordinator
//! checks it against the key the device enrolled with and refuses a time more than
//! [`MAX_REQUEST_SKEW_SECS`] from its own clock. Within that window a captured header can be
//! replayed only for the same request of the same device, which returns what that device may
//! read anyway; requests travel to the coordinator, whose transport security is its own.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::bytes::PublicKeyBytes;

/// The request header that carries the device's proof.
pub const DEVICE_AUTH_HEADER: &str = "floe-device-auth";
/// How far a request's time may be from the coordinator's clock, either way.
pub const MAX_REQUEST_SKEW_SECS: u64 = 120;

/// Why a device request's proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceAuthError {
    /// The header is absent.
    #[error("missing {DEVICE_AUTH_HEADER} header: a device signs its own requests")]
    Missing,
    /// The header is not `<seconds>.<128 hex digits>`.
    #[error("{DEVICE_AUTH_HEADER} is not <unix seconds>.<hex ed25519 signature>")]
    Malformed,
    /// The time is outside the allowed skew.
    #[error(
        "{DEVICE_AUTH_HEADER} time {at} is more than {MAX_REQUEST_SKEW_SECS} s from the \
         coordinator's clock ({now})"
    )]
    Stale {
        /// The request's time.
        at: u64,
        /// The coordinator's time.
        now: u64,
    },
    /// The enrolled key is not a valid ed25519 key.
    #[error("the device's enrolled key is not a valid ed25519 key")]
    BadKey,
    /// The signature does not verify under the device's key.
    #[error("the {DEVICE_AUTH_HEADER} signature is not the device's")]
    BadSignature,
}

/// The path of a device's directive on the coordinator's REST API, as both sides sign it.
pub fn directive_path(device_id: &str) -> String {
    format!("/api/v1/devices/{device_id}/directive")
}

fn message(method: &str, path: &str, at: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + path.len());
    m.extend_from_slice(b"floe-sig-v1\0device-request\0");
    m.extend_from_slice(method.as_bytes());
    m.push(b' ');
    m.extend_from_slice(path.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(at.to_string().as_bytes());
    m
}

/// The header value for `method path` at `now` (unix seconds), signed by the device's key.
pub fn sign_request(key: &SigningKey, method: &str, path: &str, now: u64) -> String {
    let sig = key.sign(&message(method, path, now));
    format!("{now}.{}", hex::encode(sig.to_bytes()))
}

/// Checks a header value for `method path` against the device's enrolled key at `now`.
pub fn verify_request(
    header: Option<&str>,
    public_key: &PublicKeyBytes,
    method: &str,
    path: &str,
    now: u64,
) -> Result<(), DeviceAuthError> {
    let header = header.ok_or(DeviceAuthError::Missing)?;
    let (at, sig) = header.split_once('.').ok_or(DeviceAuthError::Malformed)?;
    if at.is_empty() || at.len() > 20 || !at.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DeviceAuthError::Malformed);
    }
    let at: u64 = at.parse().map_err(|_| DeviceAuthError::Malformed)?;
    let mut raw = [0u8; 64];
    hex::decode_to_slice(sig, &mut raw).map_err(|_| DeviceAuthError::Malformed)?;
    if at.abs_diff(now) > MAX_REQUEST_SKEW_SECS {
        return Err(DeviceAuthError::Stale { at, now });
    }
    let key = VerifyingKey::from_bytes(&public_key.0).map_err(|_| DeviceAuthError::BadKey)?;
    key.verify_strict(&message(method, path, at), &Signature::from_bytes(&raw))
        .map_err(|_| DeviceAuthError::BadSignature)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::proto::Fixed;

    #[test]
    fn only_the_devices_own_fresh_signature_for_this_request_passes() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let public = Fixed(key.verifying_key().to_bytes());
        let path = "/api/v1/devices/abc/directive";
        let h = sign_request(&key, "GET", path, 1_000);
        assert_eq!(
            verify_request(Some(&h), &public, "GET", path, 1_000),
            Ok(())
        );
        assert_eq!(
            verify_request(Some(&h), &public, "GET", path, 1_120),
            Ok(())
        );
        assert_eq!(
            verify_request(Some(&h), &public, "GET", path, 1_121),
            Err(DeviceAuthError::Stale {
                at: 1_000,
                now: 1_121
            })
        );
        assert_eq!(
            verify_request(
                Some(&h),
                &public,
                "GET",
                "/api/v1/devices/xyz/directive",
                1_000
            ),
            Err(DeviceAuthError::BadSignature)
        );
        let forged = sign_request(&other, "GET", path, 1_000);
        assert_eq!(
            verify_request(Some(&forged), &public, "GET", path, 1_000),
            Err(DeviceAuthError::BadSignature)
        );
        assert_eq!(
            verify_request(None, &public, "GET", path, 1_000),
            Err(DeviceAuthError::Missing)
        );
        for bad in [
            "",
            "1000",
            "x.00",
            "1000.zz",
            "-1.00",
            "99999999999999999999999.00",
        ] {
            assert_eq!(
                verify_request(Some(bad), &public, "GET", path, 1_000),
                Err(DeviceAuthError::Malformed),
                "{bad}"
            );
        }
    }
}
