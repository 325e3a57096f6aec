//! An invoice address for another network is refused at the order, before any payment: a regtest `xov`
//! daemon with a funded regtest wallet orders (`--pay`) from an in-test provider built from the node's own
//! network code; the provider's invoice matches the order in every respect but pays to a mainnet address.
//! The order fails and says why, no lease is kept, and the wallet sends nothing.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use libp2p::request_response::{self, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};
use serde_json::Value;
use xov_node::network::behaviour::{Behaviour, BehaviourEvent};
use xov_node::network::lease_wire::{LeaseRequest, LeaseResponse};
use xov_node::network::sync::{SyncRequest, SyncResponse};
use xov_node::network::{build_swarm, libp2p_key, topics};
use xov_protocol::{
    price_for_hours, public_charter, Arch, Chain, InstanceType, Invoice, Keypair, Location, Offer,
    Order, PoolId, Signed,
};
use xov_testnet::bitcoind::Bitcoind;

const WAIT: Duration = Duration::from_secs(90);
const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFMq1LDz2jg9w7mOpwiKfpc7OclyFbnfAmDxnjAXHk82 buyer@example";
/// A valid mainnet (bitcoin) bech32 address: well formed, but not payable from a regtest wallet.
const MAINNET_ADDRESS: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
const PRICE: u64 = 1_000;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A valid offer in the regtest public pool: 1 vCPU, debian-12, leases of one to two hours.
fn offer(key: &Keypair, now: u64) -> Signed<Offer> {
    Signed::sign(
        Offer {
            provider: key.node_id(),
            pool: public_charter(Chain::REGTEST).body().pool_id(),
            offer_id: 1,
            sequence: now,
            created_at: now,
            expires_at: now + 3600,
            instance: InstanceType {
                vcpus: 1,
                ram_mib: 1024,
                disk_gib: 10,
                gpu: None,
                arch: Arch::X86_64,
            },
            images: vec!["debian-12".into()],
            price_sats_per_hour: PRICE,
            min_lease_secs: 3600,
            max_lease_secs: 7200,
            location: Location {
                country: "DE".into(),
                region: String::new(),
            },
            capacity: 1,
            bond: None,
            chain: Chain::REGTEST,
            extra_ports: vec![],
        },
        key,
    )
}

/// The invoice an honest provider would send for `order`, except that it pays to a mainnet address.
fn mainnet_invoice(key: &Keypair, order: &Signed<Order>) -> Signed<Invoice> {
    let o = order.body();
    let at = now();
    Signed::sign(
        Invoice {
            provider: key.node_id(),
            buyer: o.buyer,
            lease_id: order.id(),
            address: MAINNET_ADDRESS.into(),
            amount_sats: price_for_hours(PRICE, o.hours),
            price_sats_per_hour: PRICE,
            hours: o.hours,
            min_confirmations: 1,
            created_at: at,
            expires_at: at + 1800,
        },
        key,
    )
}

/// The provider's side, until the test ends: serves its offer when the daemon syncs the public pool, and
/// answers every order with a mainnet invoice (recording the order).
async fn serve(
    mut swarm: Swarm<Behaviour>,
    key: Keypair,
    offer: Signed<Offer>,
    orders: Arc<Mutex<Vec<Signed<Order>>>>,
) {
    let pool = public_charter(Chain::REGTEST).body().pool_id();
    let mut held = xov_protocol::OfferBook::new();
    held.insert(offer.clone(), offer.body().created_at).unwrap();
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            })) => {
                let resp = match request {
                    SyncRequest::Book {
                        chain: Chain::REGTEST,
                        pool: p,
                        after: None,
                    } if p == pool.0 => SyncResponse::Book {
                        pool: p,
                        offers: vec![offer.to_bytes()],
                        withdrawals: Vec::new(),
                        next: None,
                        evidence: Vec::new(),
                    },
                    SyncRequest::Book { pool: p, .. } => SyncResponse::Book {
                        pool: p,
                        offers: Vec::new(),
                        withdrawals: Vec::new(),
                        next: None,
                        evidence: Vec::new(),
                    },
                    SyncRequest::Charters { .. } => SyncResponse::Charters {
                        charters: Vec::new(),
                        next: None,
                    },
                    // It holds the one offer: its digest says so, and its bucket pages hand it over.
                    SyncRequest::Digest { pool: p, .. } => SyncResponse::Digest {
                        pool: p,
                        buckets: held.digest(&PoolId(p)),
                    },
                    SyncRequest::Bucket {
                        pool: p,
                        bucket,
                        after,
                        ..
                    } => SyncResponse::Book {
                        pool: p,
                        offers: held
                            .bucket_page(&PoolId(p), bucket, after, 512)
                            .0
                            .iter()
                            .map(|o| o.to_bytes())
                            .collect(),
                        withdrawals: Vec::new(),
                        next: None,
                        evidence: Vec::new(),
                    },
                };
                let _ = swarm.behaviour_mut().sync.send_response(channel, resp);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Lease(request_response::Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            })) => {
                let resp = match request {
                    LeaseRequest::Order(bytes) => {
                        let order = Signed::<Order>::from_bytes(&bytes).expect("a signed order");
                        let invoice = mainnet_invoice(&key, &order);
                        orders.lock().unwrap().push(order);
                        LeaseResponse::Invoice(invoice.to_bytes())
                    }
                    _ => LeaseResponse::Ack,
                };
                let _ = swarm.behaviour_mut().lease.send_response(channel, resp);
            }
            _ => {}
        }
    }
}

fn balance(d: &Daemon) -> (u64, u64) {
    let b = d.json(&["wallet", "balance"]);
    (
        b["confirmed_sat"].as_u64().unwrap(),
        b["pending_sat"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_address_for_another_network_is_refused_at_the_order_before_any_payment() {
    if xov_testnet::skip_e2e("invoice network") {
        return;
    }
    let btc = tokio::task::block_in_place(Bitcoind::start).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let env = btc.wallet_rpc_env();
    let node = tokio::task::block_in_place(|| Daemon::start_with(dir.path(), &env));

    // The buyer's wallet holds coins, so a payment could be made: the refusal is what stops it.
    let funded = tokio::task::block_in_place(|| {
        let addr = node.json(&["wallet", "address"])["address"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(addr.starts_with("bcrt1"), "{addr}");
        btc.mine_to(101, &addr).unwrap();
        let tip = btc.height().unwrap();
        eventually(
            "the buyer sees its mature coinbase at the tip",
            WAIT,
            || {
                let b = node.json(&["wallet", "balance"]);
                match (
                    b["confirmed_sat"].as_u64(),
                    b["pending_sat"].as_u64(),
                    b["tip_height"].as_u64(),
                ) {
                    (Some(c), Some(0), Some(h)) if c > 0 && h == tip => Ok(c),
                    _ => Err(format!("{b} (tip {tip})")),
                }
            },
        )
    });
    let history_before = tokio::task::block_in_place(|| node.json(&["wallet", "history"]));

    // The provider: an in-test peer with its own identity, in the regtest public pool.
    const PROVIDER_SECRET: [u8; 32] = [71; 32];
    let provider = Keypair::from_secret_bytes(&PROVIDER_SECRET);
    let the_offer = offer(&provider, now());
    let mut swarm = build_swarm(libp2p_key(&provider).unwrap(), false).unwrap();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let pool = public_charter(Chain::REGTEST).body().pool_id();
    // Subscribed to the pool's topic, it is asked for the pool's book and hands its offer over.
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topics::pool_topic(&pool))
        .unwrap();
    let target: Multiaddr = node.bootstrap().parse().unwrap();
    swarm.dial(target).unwrap();
    let orders = Arc::new(Mutex::new(Vec::new()));
    let peer = tokio::spawn(serve(
        swarm,
        Keypair::from_secret_bytes(&PROVIDER_SECRET),
        the_offer,
        orders.clone(),
    ));

    let provider_id = provider.node_id().to_string();
    tokio::task::block_in_place(|| {
        eventually("the provider's offer is in the buyer's book", WAIT, || {
            let offers = node.json(&["offers", "list", "--limit", "0"]);
            if offers
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["provider"] == provider_id.as_str())
            {
                Ok(())
            } else {
                Err(format!("{offers}"))
            }
        })
    });

    // The order, to be paid at once from the funded wallet: refused, with the reason.
    let key_file = dir.path().join("id_ed25519.pub");
    std::fs::write(&key_file, format!("{SSH_KEY}\n")).unwrap();
    let out = tokio::task::block_in_place(|| {
        xov(
            &node.datadir,
            &[
                "order",
                "--image",
                "debian-12",
                "--hours",
                "1",
                "--ssh-key",
                key_file.to_str().unwrap(),
                "--pay",
            ],
        )
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the order must fail: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("its invoice cannot be paid from here"),
        "{stderr}"
    );
    assert!(stderr.contains(MAINNET_ADDRESS), "{stderr}");
    assert!(stderr.contains("regtest"), "names the network: {stderr}");

    // The provider did get the order (so the refusal is the buyer's, on the invoice), exactly once.
    {
        let orders = orders.lock().unwrap();
        assert_eq!(orders.len(), 1, "one order reached the provider");
        let o = orders[0].body();
        assert_eq!(o.buyer.to_string(), node.node_id);
        assert_eq!(o.provider, provider.node_id());
        assert_eq!(o.chain, Chain::REGTEST);
    }

    // Nothing was kept, nothing was paid.
    tokio::task::block_in_place(|| {
        assert_eq!(
            node.json(&["leases", "list"]),
            serde_json::json!([]),
            "no lease is left invoiced or paid"
        );
        let history = node.json(&["wallet", "history"]);
        assert_eq!(history, history_before, "the wallet sent nothing");
        assert!(
            history
                .as_array()
                .unwrap()
                .iter()
                .all(|h: &Value| h["sent_sat"] == 0),
            "{history}"
        );
        assert_eq!(balance(&node), (funded, 0), "the balance is untouched");
    });
    peer.abort();
}
