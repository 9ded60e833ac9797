//! Webhook deliveries to an https receiver: a self-signed certificate (`crate::tls::selfsigned`), the
//! receiver behind `floe_httpd::Server::serve_tls` on loopback. Trusting its certificate
//! (`floe serve --hook-ca`) the event is delivered; with the system's roots it is refused on
//! the certificate, retried, given up and logged.

use super::events::{EventBus, EventSink};
use super::webhooks::{DeliverySettings, Webhooks};
use crate::contract::{Event, EventKind};
use crate::server::{TlsFiles, tls_config};
use crate::store::HookRecord;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn hook(id: &str, url: &str) -> HookRecord {
    HookRecord {
        id: id.into(),
        url: url.into(),
        kinds: vec![],
        deployment_id: None,
        secret: "s".into(),
        created_at: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_get_events_when_their_certificate_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    // The certificate `floe serve --tls-self-signed` would make (localhost, 127.0.0.1).
    let made = crate::tls::selfsigned::ensure(&dir.path().join("tls"), &[]).unwrap();
    let files = TlsFiles {
        cert: made.cert,
        key: made.key,
    };

    // The receiver: records each event id it is sent over TLS.
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let record = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/h",
        axum::routing::post(move |body: axum::body::Bytes| {
            let record = Arc::clone(&record);
            async move {
                let e: Event = serde_json::from_slice(&body).unwrap();
                record.lock().unwrap().push(e.id);
                axum::http::StatusCode::OK
            }
        }),
    );
    let http = floe_httpd::Server::new(floe_httpd::Limits::coordinator()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}/h",
        listener.local_addr().unwrap().port()
    );
    let stop = CancellationToken::new();
    let serving = {
        let (stop, config) = (stop.clone(), tls_config(&files).unwrap());
        tokio::spawn(async move { http.serve_tls(listener, app, stop, config).await })
    };

    let settings = |roots| DeliverySettings {
        roots,
        max_attempts: 2,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
        queue: 10,
    };
    let ca = crate::tls::ca_roots(&std::fs::read(&files.cert).unwrap()).unwrap();
    let mut sink = EventSink::new(EventBus::new(100, 1));
    let trusting = Webhooks::new(Arc::clone(sink.bus()), settings(Some(Arc::new(ca))));
    let system = Webhooks::new(Arc::clone(sink.bus()), settings(None));
    trusting.start(hook("hook_ca", &url));
    system.start(hook("hook_system", &url));
    tokio::time::sleep(Duration::from_millis(50)).await;
    sink.emit(
        EventKind::DeploymentStatus,
        1000,
        Some("dep_a"),
        None,
        serde_json::json!({"status": "running"}),
    );
    sink.flush();

    let outcomes = |hooks: &Webhooks, id: &str| -> Vec<(String, Option<String>)> {
        hooks
            .deliveries(id)
            .map(|l| l.deliveries)
            .unwrap_or_default()
            .into_iter()
            .map(|d| (d.outcome, d.error))
            .collect()
    };
    let mut done = false;
    for _ in 0..500 {
        let a = outcomes(&trusting, "hook_ca");
        let b = outcomes(&system, "hook_system");
        if a.iter().any(|(o, _)| o == "delivered") && b.iter().any(|(o, _)| o == "gave_up") {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (a, b) = (
        outcomes(&trusting, "hook_ca"),
        outcomes(&system, "hook_system"),
    );
    assert!(done, "trusting: {a:?}; system roots: {b:?}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "one delivery over TLS: {a:?}"
    );
    assert!(
        b.iter().all(|(o, e)| o != "delivered"
            && e.as_deref()
                .is_some_and(|e| e.to_lowercase().contains("certificate"))),
        "an untrusted certificate is never delivered to, and the log says why: {b:?}"
    );
    stop.cancel();
    let _ = serving.await;
}
