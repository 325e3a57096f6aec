//! A node whose connection caps are full still reaches its lease counterparty: a buyer in a large pool has
//! every outbound slot taken by pool members, and an order to a provider it is not connected to must still
//! go out (gate.rs, lease slots). Real network tasks over TCP on 127.0.0.1.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use xov_node::clock::unix_now;
use xov_node::config::NetworkConfig;
use xov_node::market::Market;
use xov_node::network::{self, lease_wire, IncomingLease, NetworkHandle};
use xov_node::store::Store;
use xov_protocol::{Chain, Keypair, NodeId, PUBLIC_POOL_NAME};

struct Node {
    handle: NetworkHandle,
    leases: mpsc::Receiver<IncomingLease>,
    id: NodeId,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn bootstrap(&self) -> String {
        let a = self.handle.listen_addrs.first().expect("listening");
        format!("{a}/p2p/{}", self.handle.peer_id)
    }
}

async fn node(seed: u8, max_connections: u32, max_incoming: u32, bootstrap: Vec<String>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let secret = [seed; 32];
    let store = Store::open(dir.path()).unwrap();
    let (market, _) = Market::load(
        Keypair::from_secret_bytes(&secret),
        store.clone(),
        Chain::REGTEST,
        unix_now(),
        &[PUBLIC_POOL_NAME.to_string()],
    )
    .unwrap();
    let cfg = NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap,
        seeds: Some(Vec::new()),
        max_connections,
        max_incoming,
        ..NetworkConfig::default()
    };
    let (stop, stop_rx) = watch::channel(false);
    let key = Keypair::from_secret_bytes(&secret);
    let (handle, leases) =
        network::start(&key, &cfg, Arc::new(RwLock::new(market)), store, stop_rx)
            .await
            .unwrap();
    Node {
        handle,
        leases,
        id: key.node_id(),
        _stop: stop,
        _dir: dir,
    }
}

/// Polls `check` every 50 ms until it holds or `within` passes.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The buyer allows 2 connections, both its own dials' (`max_incoming` = all of them: dials are capped by
/// the total): of its three bootstrap peers, two fill its caps and the third (the provider) is refused. A
/// lease request to the provider then still goes out, on a lease slot above the caps, and its answer
/// comes back; the buyer's other dials stay capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_at_its_connection_caps_still_reaches_its_provider() {
    let a = node(1, 16, 8, Vec::new()).await;
    let b = node(2, 16, 8, Vec::new()).await;
    let mut provider = node(3, 16, 8, Vec::new()).await;
    let buyer = node(
        4,
        2,
        2,
        vec![a.bootstrap(), b.bootstrap(), provider.bootstrap()],
    )
    .await;
    eventually(
        "the buyer fills its caps",
        Duration::from_secs(30),
        || async {
            let s = buyer.handle.status().await.map_err(|e| e.to_string())?;
            if s.connected_peers == 2 {
                Ok(())
            } else {
                Err(format!("{} peers connected", s.connected_peers))
            }
        },
    )
    .await;
    let before = buyer.handle.status().await.unwrap();
    assert!(
        before.gossip.refused_at_caps >= 1,
        "the provider's bootstrap dial was refused at the caps: {before:?}"
    );

    let mut send = {
        let h = buyer.handle.clone();
        let to = provider.id;
        tokio::spawn(async move {
            h.send_lease(&to, lease_wire::LeaseRequest::Notice(vec![7; 16]))
                .await
        })
    };
    let got = tokio::select! {
        got = provider.leases.recv() => got.expect("the provider's lease channel is open"),
        sent = &mut send => panic!("the request ended before the provider heard of it: {sent:?}"),
        _ = tokio::time::sleep(Duration::from_secs(30)) => panic!("the provider heard nothing in 30 s"),
    };
    assert_eq!(got.from, Some(buyer.id));
    assert!(matches!(got.request, lease_wire::LeaseRequest::Notice(ref b) if b == &vec![7; 16]));
    provider
        .handle
        .reply_lease(got.token, lease_wire::LeaseResponse::Ack)
        .await
        .unwrap();
    let answer = send
        .await
        .unwrap()
        .expect("the buyer got the provider's answer");
    assert!(matches!(answer, lease_wire::LeaseResponse::Ack));

    let after = buyer.handle.status().await.unwrap();
    assert_eq!(
        after.connected_peers, 3,
        "two regular connections and the provider's in a lease slot"
    );
    assert_eq!(after.gossip.lease_slots_used, 1, "{after:?}");
}

/// A lease request to a node no address is known for ends with a typed reason, not text: the dial failed (the
/// driver sends a notice again later; an order moves on to the next provider).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_node_nobody_knows_fails_as_a_dial_failure() {
    let lone = node(9, 50, 50, Vec::new()).await;
    let stranger = Keypair::from_secret_bytes(&[10; 32]).node_id();
    let sent = tokio::time::timeout(
        Duration::from_secs(60),
        lone.handle
            .send_lease(&stranger, lease_wire::LeaseRequest::Notice(vec![1; 8])),
    )
    .await
    .expect("the request ended");
    assert!(
        matches!(
            sent,
            Err(network::NetworkError::Unreachable(
                network::LeaseSendError::DialFailed
            ))
        ),
        "{sent:?}"
    );
}
