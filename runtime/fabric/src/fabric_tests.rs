//! In-process loopback tests of the swarm actor: real swarms on 127.0.0.1 talking TCP (and
//! QUIC), each in this test process, so the protocols are exercised without starting binaries.

use super::direct::{self, RequestHandler};
use super::store::{FabricStore, FileStore, MemStore};
use super::{Fabric, FabricConfig, FabricError, FabricEvent, Topic, Validation, Validator};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

pub(super) fn key(n: u8) -> Keypair {
    let mut seed = [n; 32];
    Keypair::ed25519_from_bytes(&mut seed).unwrap()
}

fn accept_all() -> Validator {
    Arc::new(|_, _: &[u8]| Validation::Accept)
}

pub(super) struct Started {
    pub(super) fabric: Fabric,
    pub(super) events: mpsc::Receiver<FabricEvent>,
    /// Events read while waiting for another one, kept so no later wait misses them.
    pub(super) backlog: Vec<FabricEvent>,
    pub(super) addr: Multiaddr,
}

impl Started {
    /// Waits until the download of `id` completes; returns its size in bytes.
    pub(super) async fn completed(&mut self, id: crate::ArtifactId) -> u64 {
        self.wait_for(|e| match e {
            FabricEvent::ArtifactComplete {
                id: done, bytes, ..
            } if *done == id => Some(*bytes),
            _ => None,
        })
        .await
    }

    /// Waits for the first event (already seen or new) that `pick` maps to a value; it and
    /// every event before it are consumed, later ones stay for the next wait.
    async fn wait_for<T>(&mut self, mut pick: impl FnMut(&FabricEvent) -> Option<T>) -> T {
        if let Some(pos) = self.backlog.iter().position(|e| pick(e).is_some()) {
            let event = self.backlog.remove(pos);
            return pick(&event).unwrap();
        }
        let backlog = &mut self.backlog;
        let events = &mut self.events;
        tokio::time::timeout(WAIT, async {
            loop {
                let event = events.recv().await.expect("the fabric stopped");
                if let Some(found) = pick(&event) {
                    return found;
                }
                if backlog.len() < 10_000 {
                    backlog.push(event);
                }
            }
        })
        .await
        .expect("timed out waiting for a fabric event")
    }

    pub(super) async fn connected(&mut self, peer: PeerId) {
        self.wait_for(|e| match e {
            FabricEvent::PeerConnected(p) if *p == peer => Some(()),
            _ => None,
        })
        .await
    }
}

async fn start(
    n: u8,
    listen: &str,
    bootstrap: Vec<Multiaddr>,
    handler: Option<RequestHandler>,
    cancel: &CancellationToken,
) -> Started {
    start_with_store(
        n,
        listen,
        bootstrap,
        handler,
        Box::new(MemStore::default()),
        cancel,
    )
    .await
}

async fn start_with_store(
    n: u8,
    listen: &str,
    bootstrap: Vec<Multiaddr>,
    handler: Option<RequestHandler>,
    store: Box<dyn FabricStore>,
    cancel: &CancellationToken,
) -> Started {
    let config = FabricConfig {
        listen: vec![listen.parse().unwrap()],
        bootstrap,
        mdns: false,
        ..FabricConfig::default()
    };
    start_with_config(n, config, handler, store, cancel).await
}

pub(super) async fn start_with_config(
    n: u8,
    config: FabricConfig,
    handler: Option<RequestHandler>,
    store: Box<dyn FabricStore>,
    cancel: &CancellationToken,
) -> Started {
    let (fabric, events) = match handler {
        Some(h) => {
            super::spawn_with_handler(key(n), config, store, accept_all(), h, cancel.clone())
        }
        None => super::spawn(key(n), config, store, accept_all(), cancel.clone()),
    }
    .unwrap();
    let mut started = Started {
        fabric,
        events,
        backlog: Vec::new(),
        addr: Multiaddr::empty(),
    };
    started.addr = started
        .wait_for(|e| match e {
            FabricEvent::Listening(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    started
}

/// A handler that answers "re:" + the request, so a test can tell replies apart.
fn echo() -> RequestHandler {
    Arc::new(|_, data: Vec<u8>| {
        let mut out = b"re:".to_vec();
        out.extend_from_slice(&data);
        Some(out)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_request_gets_the_handlers_reply_and_the_caps_hold() {
    let cancel = CancellationToken::new();
    let asked_by = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&asked_by);
    let handler: RequestHandler = Arc::new(move |peer, data: Vec<u8>| {
        seen.lock().unwrap().push(peer);
        match data.as_slice() {
            b"decline" => None,
            b"too long" => Some(vec![0; direct::MAX_DIRECT_BYTES + 1]),
            _ => echo()(peer, data),
        }
    });
    let server = start(1, "/ip4/127.0.0.1/tcp/0", vec![], Some(handler), &cancel).await;
    let mut client = start(
        2,
        "/ip4/127.0.0.1/tcp/0",
        vec![server.addr.clone()],
        None,
        &cancel,
    )
    .await;
    client.connected(server.fabric.peer_id()).await;

    let reply = client
        .fabric
        .request(server.fabric.peer_id(), b"status".to_vec())
        .await
        .unwrap();
    assert_eq!(reply, b"re:status");
    // The handler learns who asked: the noise-authenticated peer id.
    assert_eq!(*asked_by.lock().unwrap(), vec![client.fabric.peer_id()]);
    // A full-size request is carried; one byte more is refused before it is sent.
    let big = vec![1u8; direct::MAX_DIRECT_BYTES - 3];
    let reply = client
        .fabric
        .request(server.fabric.peer_id(), big.clone())
        .await
        .unwrap();
    assert_eq!(reply.len(), direct::MAX_DIRECT_BYTES);
    let err = client
        .fabric
        .request(
            server.fabric.peer_id(),
            vec![0; direct::MAX_DIRECT_BYTES + 1],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, FabricError::Request { .. }) && err.to_string().contains("limit"),
        "{err}"
    );
    // A declined request and an oversized reply both come back as "declined", not as bytes.
    for ask in [&b"decline"[..], b"too long"] {
        let err = client
            .fabric
            .request(server.fabric.peer_id(), ask.to_vec())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("declined"), "{err}");
    }
    // A node without a handler declines too.
    let err = server
        .fabric
        .request(client.fabric.peer_id(), b"hello".to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("declined"), "{err}");
    // A peer nobody can reach fails with a clear error, not a hang.
    let stranger = key(99).public().to_peer_id();
    let err = client
        .fabric
        .request(stranger, b"anyone?".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, FabricError::Request { .. }), "{err}");

    // Connected peers and listen addresses are reported.
    assert_eq!(
        client.fabric.connected_peers().await.unwrap(),
        vec![server.fabric.peer_id()]
    );
    let addrs = server.fabric.listen_addrs().await.unwrap();
    assert!(addrs.contains(&server.addr), "{addrs:?}");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_in_flight_are_bounded_per_peer_and_the_excess_is_told_busy() {
    let cancel = CancellationToken::new();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (Arc::clone(&running), Arc::clone(&most));
    // A slow handler (it blocks its thread, which is allowed: it runs off the swarm task).
    let handler: RequestHandler = Arc::new(move |_, data: Vec<u8>| {
        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(600));
        r.fetch_sub(1, Ordering::SeqCst);
        Some(data)
    });
    let server = start(3, "/ip4/127.0.0.1/tcp/0", vec![], Some(handler), &cancel).await;
    let mut client = start(
        4,
        "/ip4/127.0.0.1/tcp/0",
        vec![server.addr.clone()],
        None,
        &cancel,
    )
    .await;
    client.connected(server.fabric.peer_id()).await;
    let to = server.fabric.peer_id();
    let asks: Vec<_> = (0..direct::MAX_OUTBOUND_PER_PEER)
        .map(|i| {
            let fabric = client.fabric.clone();
            tokio::spawn(async move { fabric.request(to, vec![i as u8]).await })
        })
        .collect();
    // One more than our own per-peer bound is refused locally.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let over = client.fabric.request(to, vec![0xee]).await.unwrap_err();
    assert!(matches!(over, FabricError::Busy(_)), "{over}");
    // The swarm task stays responsive while handlers block: a stats call returns at once.
    let started = std::time::Instant::now();
    server.fabric.stats().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));

    let mut ok = 0;
    let mut busy = 0;
    for ask in asks {
        match ask.await.unwrap() {
            Ok(bytes) => {
                assert_eq!(bytes.len(), 1);
                ok += 1;
            }
            Err(FabricError::Busy(_)) => busy += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(ok, direct::MAX_HANDLERS_PER_PEER);
    assert_eq!(
        busy,
        direct::MAX_OUTBOUND_PER_PEER - direct::MAX_HANDLERS_PER_PEER
    );
    assert_eq!(most.load(Ordering::SeqCst), direct::MAX_HANDLERS_PER_PEER);
    // Once the slow handlers are done the peer answers again.
    assert_eq!(client.fabric.request(to, vec![5]).await.unwrap(), vec![5]);
    cancel.cancel();
}

/// Publishes on `topic` from `from` until `to` hears some gossip (gossipsub needs a heartbeat
/// or two to exchange subscriptions and build the mesh), bounded in count and time. Returns the
/// first gossip `to` heard, as (topic, author, forwarder).
pub(super) async fn publish_until_heard(
    from: &Fabric,
    topic: Topic,
    to: &mut Started,
) -> Option<(Topic, Option<PeerId>, PeerId)> {
    for i in 0..40u32 {
        let _ = from
            .publish(topic, format!("message {i}").into_bytes())
            .await;
        let heard = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match to.events.recv().await {
                    Some(FabricEvent::Gossip {
                        topic,
                        source,
                        from,
                        ..
                    }) => return Some((topic, source, from)),
                    Some(_) => continue,
                    None => return None,
                }
            }
        })
        .await;
        if let Ok(Some(found)) = heard {
            return Some(found);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_publishes_reports_to_the_coordinator_without_hearing_its_peers_reports() {
    let cancel = CancellationToken::new();
    // c is the coordinator (every topic); d and e are devices, which leave Health out.
    let mut c = start(8, "/ip4/127.0.0.1/tcp/0", vec![], None, &cancel).await;
    let device = |bootstrap: Vec<Multiaddr>| FabricConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        mdns: false,
        topics: Topic::DEVICE.to_vec(),
        ..FabricConfig::default()
    };
    let store = || Box::new(MemStore::default());
    let d = start_with_config(9, device(vec![c.addr.clone()]), None, store(), &cancel).await;
    let mut e = start_with_config(
        10,
        device(vec![c.addr.clone(), d.addr.clone()]),
        None,
        store(),
        &cancel,
    )
    .await;
    e.connected(d.fabric.peer_id()).await;
    let heard = publish_until_heard(&d.fabric, Topic::Health, &mut c).await;
    assert_eq!(
        heard.map(|(topic, author, _)| (topic, author)),
        Some((Topic::Health, Some(d.fabric.peer_id()))),
        "the coordinator never got the device's report"
    );
    // Directives still reach devices, and the first gossip e hears is one: it never heard d's
    // reports, which went out before.
    let heard = publish_until_heard(&c.fabric, Topic::Directive, &mut e).await;
    assert_eq!(
        heard.map(|(topic, ..)| topic),
        Some(Topic::Directive),
        "a device heard a peer's report, or no directive"
    );
    while let Ok(event) = e.events.try_recv() {
        if let FabricEvent::Gossip { topic, .. } = event {
            assert_ne!(topic, Topic::Health, "a device heard a peer's report");
        }
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_names_its_author_even_when_relayed() {
    let cancel = CancellationToken::new();
    // a - b - c in a line: c hears a's message through b.
    let a = start(5, "/ip4/127.0.0.1/tcp/0", vec![], None, &cancel).await;
    let mut b = start(
        6,
        "/ip4/127.0.0.1/tcp/0",
        vec![a.addr.clone()],
        None,
        &cancel,
    )
    .await;
    let mut c = start(
        7,
        "/ip4/127.0.0.1/tcp/0",
        vec![b.addr.clone()],
        None,
        &cancel,
    )
    .await;
    b.connected(a.fabric.peer_id()).await;
    c.connected(b.fabric.peer_id()).await;
    let author = a.fabric.peer_id();
    let got = publish_until_heard(&a.fabric, Topic::Health, &mut c)
        .await
        .map(|(_, source, from)| (source, from));
    let (source, from) = got.expect("no gossip reached the third node");
    assert_eq!(source, Some(author));
    // c may hear it from b or (after Kademlia introduces them) from a itself; the author is a
    // either way.
    assert!(from == b.fabric.peer_id() || from == author);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_an_artifact_over_quic_only() {
    let cancel = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let quic = "/ip4/127.0.0.1/udp/0/quic-v1";
    let store = |name: &str| -> Box<dyn FabricStore> {
        Box::new(FileStore::open(&dir.path().join(name)).unwrap())
    };
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 5u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let seed = start_with_store(10, quic, vec![], None, store("seed"), &cancel).await;
    assert!(
        seed.addr
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1)),
        "{}",
        seed.addr
    );
    let id = seed.fabric.seed(data.clone(), 64 * 1024).await.unwrap();
    let mut a =
        start_with_store(11, quic, vec![seed.addr.clone()], None, store("a"), &cancel).await;
    let mut b = start_with_store(
        12,
        quic,
        vec![seed.addr.clone(), a.addr.clone()],
        None,
        store("b"),
        &cancel,
    )
    .await;
    a.connected(seed.fabric.peer_id()).await;
    b.connected(seed.fabric.peer_id()).await;
    a.fabric.fetch(id).await.unwrap();
    b.fabric.fetch(id).await.unwrap();
    for node in [&mut a, &mut b] {
        let bytes = node.completed(id).await;
        assert_eq!(bytes, data.len() as u64);
    }
    // Both rebuilt the exact bytes from their own stores.
    for name in ["a", "b"] {
        let store = FileStore::open(&dir.path().join(name)).unwrap();
        let index = store.get_index(&id).unwrap().unwrap();
        let out = dir.path().join(format!("{name}.out"));
        store.export(&index, &out).unwrap();
        assert!(std::fs::read(&out).unwrap() == data, "{name} differs");
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_upload_slots_wait_in_the_queue_instead_of_bouncing() {
    let cancel = CancellationToken::new();
    let data: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // One upload slot: whoever asks for several chunks at once finds it taken. With a queue
    // the others wait; without one they are told Busy.
    let mut busy = Vec::new();
    for (n, queue) in [(20u8, 16usize), (22, 0)] {
        let seed_config = FabricConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            mdns: false,
            upload_slots: 1,
            upload_queue: queue,
            ..FabricConfig::default()
        };
        let seed =
            start_with_config(n, seed_config, None, Box::new(MemStore::default()), &cancel).await;
        let id = seed.fabric.seed(data.clone(), 64 * 1024).await.unwrap();
        // Eight requests at once, not the default two: with only two, a loaded machine could
        // send the second after the first was answered, and nothing would ever bounce.
        let fetcher_config = FabricConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap: vec![seed.addr.clone()],
            mdns: false,
            download: crate::download::DownloadConfig {
                per_peer_in_flight: 8,
                ..Default::default()
            },
            ..FabricConfig::default()
        };
        let mut fetcher = start_with_config(
            n + 1,
            fetcher_config,
            None,
            Box::new(MemStore::default()),
            &cancel,
        )
        .await;
        fetcher.connected(seed.fabric.peer_id()).await;
        fetcher.fabric.fetch(id).await.unwrap();
        let bytes = fetcher.completed(id).await;
        assert_eq!(bytes, data.len() as u64);
        busy.push(seed.fabric.stats().await.unwrap().busy_answers);
    }
    assert_eq!(busy[0], 0, "queued requests were answered Busy");
    assert!(
        busy[1] > 0,
        "without a queue the second request should bounce"
    );
    cancel.cancel();
}
