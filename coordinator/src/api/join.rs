//! `GET /join-info`: what `floe enroll-token create --join` puts into a join string besides the
//! token: the coordinator's fabric addresses (each with its peer id) and the device trust store
//! file as the coordinator holds it now (read at each request, so a rotated store is what new
//! devices get), and, when the REST API is served over TLS, the pin of its certificate (the
//! device's `floed join` accepts exactly that certificate). Nothing here is secret: the trust
//! store holds public keys only, a pin is a hash of a public certificate, and fabric admission
//! material is not part of a join string (see `floe_wire::join`).

use std::path::PathBuf;

use crate::contract::JoinInfo;
use axum::extract::State;
use axum::http::StatusCode;
use floe_wire::artifact::keys::TRUST_FILE;
use floe_wire::proto::{Envelope, TrustStore};

use super::{ApiError, ApiResult, AppState, ok};

/// Where the join information comes from: `floe serve` fills it in once the fabric listens.
#[derive(Debug, Clone)]
pub struct JoinSource {
    /// The directory holding the device trust store (`trust.cbor`).
    pub trust_dir: PathBuf,
    /// The fabric multiaddresses devices bootstrap to, each ending in `/p2p/<peer id>`.
    pub fabric: Vec<String>,
    /// `sha256:…` of the REST listener's TLS leaf certificate; None when it serves plain HTTP.
    pub tls_pin: Option<String>,
}

pub(super) async fn join_info(State(st): State<AppState>) -> ApiResult {
    let Some(src) = st.join.as_deref() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this coordinator runs without a fabric, so devices cannot join it",
        ));
    };
    let path = src.trust_dir.join(TRUST_FILE);
    let limit = Envelope::max_bytes::<TrustStore>();
    let internal =
        |message: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| internal(format!("reading the trust store {}: {e}", path.display())))?;
    if bytes.len() > limit {
        return Err(internal(format!(
            "the trust store {} is {} bytes, more than the {limit} allowed",
            path.display(),
            bytes.len()
        )));
    }
    floe_wire::join::trust_from_file_bytes(&bytes)
        .map_err(|e| internal(format!("the trust store {}: {e}", path.display())))?;
    ok(
        StatusCode::OK,
        JoinInfo {
            fabric: src.fabric.clone(),
            trust_store: hex::encode(bytes),
            tls_pin: src.tls_pin.clone(),
        },
    )
}
