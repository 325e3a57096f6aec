//! Chains kept apart at a real daemon's doors: a regtest `xov` process, and an in-test peer built from the
//! node's own network code that speaks for signet. An order for signet is refused with a typed
//! `WrongChain` before anything is invoiced; book sync for signet is answered `OtherChain`; a signet
//! charter gossiped on (or synced into) the regtest charters topic is dropped quietly and counted, and its
//! sender is not penalised.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use libp2p::request_response::{self, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use xov_node::network::behaviour::{Behaviour, BehaviourEvent};
use xov_node::network::lease_wire::{LeaseRequest, LeaseResponse};
use xov_node::network::sync::{SyncRequest, SyncResponse};
use xov_node::network::{build_swarm, libp2p_key, topics};
use xov_protocol::{
    public_charter, Chain, Keypair, NodeId, Order, OrderRefusal, PoolCharter, PoolRules, Signed,
};

const WAIT: Duration = Duration::from_secs(60);
const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFMq1LDz2jg9w7mOpwiKfpc7OclyFbnfAmDxnjAXHk82 buyer@example";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An in-test peer with `key`'s identity, connected to `target` (a `/p2p/` address).
async fn connect(key: &Keypair, target: &str) -> (Swarm<Behaviour>, PeerId) {
    let mut swarm = build_swarm(libp2p_key(key).unwrap(), false).unwrap();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr: Multiaddr = target.parse().unwrap();
    let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
        panic!("{target} names no peer");
    };
    swarm.dial(addr).unwrap();
    (swarm, peer)
}

/// Drives the swarm until `f` returns something, answering the daemon's sync requests with `answer`.
async fn until<T>(
    swarm: &mut Swarm<Behaviour>,
    answer: &dyn Fn(&SyncRequest) -> SyncResponse,
    mut f: impl FnMut(&mut Swarm<Behaviour>, SwarmEvent<BehaviourEvent>) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = swarm.select_next_some().await;
            if let SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            })) = ev
            {
                let _ = swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, answer(&request));
                continue;
            }
            if let Some(t) = f(swarm, ev) {
                return t;
            }
        }
    })
    .await
    .expect("in time")
}

fn signet_charter() -> Signed<PoolCharter> {
    let founder = Keypair::from_secret_bytes(&[61; 32]);
    Signed::sign(
        PoolCharter {
            name: "signet-gpus".into(),
            founder: founder.node_id(),
            created_at: now() - 60,
            rules: PoolRules::default(),
            chain: Chain::SIGNET,
        },
        &founder,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regtest_node_refuses_signet_orders_and_sync_and_drops_signet_charters_without_blame() {
    let dir = tempfile::tempdir().unwrap();
    let node = tokio::task::block_in_place(|| Daemon::start(dir.path()));
    let provider: NodeId = node.node_id.parse().unwrap();
    let buyer = Keypair::from_secret_bytes(&[60; 32]);
    let (mut swarm, peer) = connect(&buyer, &node.bootstrap()).await;
    let charter = signet_charter();
    let charter_bytes = charter.to_bytes();
    // Asked for charters (it will be, once we subscribe), the signet peer answers with its signet charter, as
    // a peer that does not check the requester's chain would.
    let answer = move |_: &SyncRequest| SyncResponse::Charters {
        charters: vec![charter_bytes.clone()],
        next: None,
    };

    // 1. An order for signet, from the buyer it names, to this provider: refused as WrongChain.
    let order = Signed::sign(
        Order {
            buyer: buyer.node_id(),
            provider,
            pool: public_charter(Chain::SIGNET).body().pool_id(),
            offer_id: 1,
            offer_sequence: 1,
            image: "debian-12".into(),
            hours: 1,
            ssh_public_key: SSH_KEY.into(),
            refund_address: None,
            created_at: now(),
            nonce: 1,
            chain: Chain::SIGNET,
            extra_ports: vec![],
        },
        &buyer,
    );
    let id = swarm
        .behaviour_mut()
        .lease
        .send_request(&peer, LeaseRequest::Order(order.to_bytes()));
    let resp = until(&mut swarm, &answer, |_, ev| match ev {
        SwarmEvent::Behaviour(BehaviourEvent::Lease(request_response::Event::Message {
            message:
                Message::Response {
                    request_id,
                    response,
                },
            ..
        })) if request_id == id => Some(response),
        SwarmEvent::Behaviour(BehaviourEvent::Lease(
            request_response::Event::OutboundFailure { error, .. },
        )) => panic!("order not answered: {error}"),
        _ => None,
    })
    .await;
    match resp {
        LeaseResponse::Refused(r) => {
            assert_eq!(
                r,
                OrderRefusal::WrongChain {
                    provider: Chain::REGTEST,
                    order: Chain::SIGNET
                }
            );
            assert!(r.buyers_fault());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let leases = tokio::task::block_in_place(|| node.json(&["leases", "list"]));
    assert_eq!(leases, serde_json::json!([]), "nothing was invoiced");

    // 2. Book sync asked for signet: the regtest node serves nothing and says why.
    for req in [
        SyncRequest::Charters {
            chain: Chain::SIGNET,
            after: None,
        },
        SyncRequest::Book {
            chain: Chain::SIGNET,
            pool: public_charter(Chain::REGTEST).body().pool_id().0,
            after: None,
        },
    ] {
        let id = swarm.behaviour_mut().sync.send_request(&peer, req);
        let resp = until(&mut swarm, &answer, |_, ev| match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            })) if request_id == id => Some(response),
            _ => None,
        })
        .await;
        assert!(
            matches!(
                resp,
                SyncResponse::OtherChain {
                    chain: Chain::REGTEST
                }
            ),
            "{resp:?}"
        );
    }

    // 3. A signet charter gossiped on the regtest charters topic (and handed over when the node pulls our
    //    charters) is dropped quietly: counted, not rejected, its sender not penalised, the pool unknown.
    let topic = topics::charters_topic(&Chain::REGTEST);
    swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    // Published until it is counted (it goes out once the mesh formed, a heartbeat or two after the
    // subscriptions crossed), while answering sync.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let deadline = tokio::time::Instant::now() + WAIT;
    let bytes = charter.to_bytes();
    loop {
        tokio::select! {
            ev = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                    message: Message::Request { request, channel, .. }, ..
                })) = ev {
                    let _ = swarm.behaviour_mut().sync.send_response(channel, answer(&request));
                }
            }
            _ = tick.tick() => {
                let _ = swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes.clone());
                let status = tokio::task::block_in_place(|| node.json(&["status"]));
                let g = &status["network"]["gossip"];
                // One from gossip, one from the sync answer.
                if g["other_chain"].as_u64().unwrap_or(0) >= 2 {
                    assert_eq!(g["rejected"], 0, "{g}");
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "signet charter never counted: {g}");
            }
        }
    }
    tokio::task::block_in_place(|| {
        let peers = node.json(&["peers"]);
        let me = peers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node_id"] == buyer.node_id().to_string().as_str())
            .cloned()
            .unwrap_or_else(|| panic!("the in-test peer is known: {peers}"));
        assert_eq!(me["penalty"], 0, "{me}");
        assert_eq!(me["banned"], false, "{me}");
        let pools = node.json(&["pool", "list"]);
        assert!(
            pools
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["chain"] == "regtest" && p["name"] != "signet-gpus"),
            "{pools}"
        );
    });
}
