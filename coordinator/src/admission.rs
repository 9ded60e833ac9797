//! The coordinator's side of fabric admission (`floe_fabric::admission`): it issues the
//! membership certificates devices show each other, and checks its registry at every
//! admission of a device.
//!
//! A device without a valid certificate sends its signed status report with its Hello; the
//! issuer checks it as a direct report ([`crate::link::admit_direct`]: self-signed, the
//! device id the hex of its key, the connection's peer the signer) and hands it to the service
//! like any report, which enrolls the device (one-time token or allowlist) or refuses it. Only
//! then, and only for a device the registry holds as enrolled with that key, is a certificate
//! signed. A device that shows a valid certificate is still checked against the registry, so
//! a device removed from it is refused at once by every coordinator, and by devices once its
//! certificate expires (it gets no new one).

use std::sync::Arc;

use floe_fabric::admission::{Admission, IssueRequest, Issuer};
use floe_wire::proto::{Fixed, Role, TrustedKey};
use libp2p::identity::Keypair;

use crate::link::{self, LinkConfig};
use crate::service::{ServiceError, ServiceHandle};

/// Why the coordinator could not join the fabric with admission.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// Loading or creating the fabric identity failed.
    #[error("coordinator fabric identity: {0}")]
    Identity(#[source] floe_fabric::identity::IdentityError),
    /// Creating the fabric's data directory failed.
    #[error("creating {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The fabric key is not an ed25519 key.
    #[error("the coordinator's fabric key is not an ed25519 key")]
    KeyType,
    /// The service did not sign the coordinator's own certificate.
    #[error("the coordinator's membership certificate: {0}")]
    Own(#[source] ServiceError),
}

/// The issuer a coordinator's fabric runs on the blocking pool. `rt` is the runtime the
/// service runs on.
pub fn issuer(service: ServiceHandle, rt: tokio::runtime::Handle) -> Issuer {
    Arc::new(move |request| match request {
        IssueRequest::Own { public_key } => rt
            .block_on(service.membership(public_key, Role::Coordinator))
            .map(Some)
            .map_err(|e| e.to_string()),
        IssueRequest::Peer {
            peer,
            public_key,
            presented,
            report,
        } => {
            // Other coordinators are not in the registry: their certificate is the proof.
            if presented
                .as_ref()
                .is_some_and(|m| m.role == Role::Coordinator)
            {
                return Ok(None);
            }
            if let Some(bytes) = report {
                let report = link::admit_direct(peer, &bytes).map_err(|e| e.to_string())?;
                rt.block_on(service.device_report(report))
                    .map_err(|e| e.to_string())?;
            }
            let fresh = rt
                .block_on(service.membership(public_key, Role::Device))
                .map_err(|e| e.to_string())?;
            let now = floe_wire::clock::unix_secs();
            let renew = presented.as_ref().is_none_or(|m| m.needs_renewal(now));
            Ok(renew.then_some(fresh))
        }
    })
}

/// Sets up `cfg` for a coordinator: its fabric identity (loaded or created under its data
/// directory), its own membership certificate signed by the service, and the issuer. The
/// coordinator key's public half (`coordinator_key`) is what every certificate is checked
/// against.
pub async fn configure(
    cfg: &mut LinkConfig,
    service: &ServiceHandle,
    coordinator_key: TrustedKey,
) -> Result<(), AdmissionError> {
    let key = match cfg.identity.clone() {
        Some(k) => k,
        None => {
            std::fs::create_dir_all(&cfg.data_dir).map_err(|source| AdmissionError::DataDir {
                path: cfg.data_dir.clone(),
                source,
            })?;
            floe_fabric::identity::load_or_create(&cfg.data_dir)
                .map_err(AdmissionError::Identity)?
        }
    };
    let public = own_public_key(&key)?;
    let cert = service
        .membership(public, Role::Coordinator)
        .await
        .map_err(AdmissionError::Own)?;
    let mut admission = Admission::new(coordinator_key);
    admission.certificate = Some(cert);
    admission.issuer = Some(issuer(service.clone(), tokio::runtime::Handle::current()));
    cfg.identity = Some(key);
    cfg.admission = Some(admission);
    Ok(())
}

fn own_public_key(key: &Keypair) -> Result<[u8; 32], AdmissionError> {
    key.public()
        .try_into_ed25519()
        .map(|k| k.to_bytes())
        .map_err(|_| AdmissionError::KeyType)
}

/// The trusted form of the coordinator's verifying key.
pub fn trusted(key: &ed25519_dalek::VerifyingKey) -> TrustedKey {
    TrustedKey::new(Fixed(key.to_bytes()))
}
