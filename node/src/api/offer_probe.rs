//! "Do other nodes see my offers?", answered by asking them, for `xov doctor`.
//!
//! A short-lived libp2p client with a throwaway identity (so peers treat it as a stranger, as they would a
//! buyer) dials this node, asks its DHT for the peers closest to it (with their addresses), then pulls each
//! pool's book from a few of those peers over the ordinary sync protocol (`/xov/sync/2`, naming this node's
//! chain) and reports which of this node's offers each peer holds; a peer on another chain says so. Going through the peers' own answers, not our view of them, is the
//! point: it catches offers rejected by peers (clock, pool rules) and peers that cannot be reached.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{identity, kad, Multiaddr, PeerId};
use xov_protocol::{Chain, Offer, OfferKey, PoolId, Signed};

use crate::network::behaviour::BehaviourEvent;
use crate::network::sync::{SyncRequest, SyncResponse};

/// What one peer holds of the pools asked about: offer key → sequence.
#[derive(Debug, Default, Clone)]
pub struct PeerBook {
    pub offers: HashMap<(PoolId, OfferKey), u64>,
    /// Why the peer could not be asked, if it could not.
    pub error: Option<String>,
}

/// Splits `/…/p2p/<id>` into the address and the peer id.
fn split(a: &Multiaddr) -> Option<(Multiaddr, PeerId)> {
    let mut a = a.clone();
    match a.pop() {
        Some(Protocol::P2p(id)) => Some((a, id)),
        _ => None,
    }
}

/// A dialable form of a listen address: `0.0.0.0` becomes `127.0.0.1` (the probe runs on this machine).
fn dialable(a: &Multiaddr) -> Multiaddr {
    a.iter()
        .map(|p| match p {
            Protocol::Ip4(ip) if ip.is_unspecified() => Protocol::Ip4([127, 0, 0, 1].into()),
            Protocol::Ip6(ip) if ip.is_unspecified() => {
                Protocol::Ip6(std::net::Ipv6Addr::LOCALHOST)
            }
            other => other,
        })
        .collect()
}

/// Asks up to `max_peers` peers (found through this node's DHT, or `extra` addresses such as the bootstrap
/// list) for their books of `pools` (of `chain`). Returns what each answered, keyed by peer.
pub async fn ask_peers(
    own: &[String],
    extra: &[String],
    chain: Chain,
    pools: &[PoolId],
    max_peers: usize,
    timeout: Duration,
) -> Result<HashMap<PeerId, PeerBook>, String> {
    let mut swarm = crate::network::build_swarm(identity::Keypair::generate_ed25519(), false)
        .map_err(|e| e.to_string())?;
    let mut me = None;
    for a in own.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
        // TCP only: the probe needs one working path, and TCP is the one every node listens on.
        if !a.iter().any(|p| matches!(p, Protocol::Tcp(_))) {
            continue;
        }
        if let Some((addr, id)) = split(&dialable(&a)) {
            swarm.behaviour_mut().kad.add_address(&id, addr);
            me = Some(id);
        }
    }
    let me = me.ok_or("this node has no TCP listen address to start from")?;
    let mut candidates: Vec<PeerId> = Vec::new();
    let add = |p: PeerId, candidates: &mut Vec<PeerId>| {
        if p != me && !candidates.contains(&p) {
            candidates.push(p);
        }
    };
    for a in extra.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
        if let Some((addr, id)) = split(&a) {
            swarm.behaviour_mut().kad.add_address(&id, addr);
            add(id, &mut candidates);
        }
    }
    swarm.behaviour_mut().kad.get_closest_peers(me);

    let deadline = tokio::time::Instant::now() + timeout;
    // Discovery: until the DHT query ends (or half the time is gone).
    let discovery_end = tokio::time::Instant::now() + timeout / 2;
    loop {
        let ev = tokio::select! {
            ev = swarm.select_next_some() => ev,
            _ = tokio::time::sleep_until(discovery_end) => break,
        };
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, ..
            })) => add(peer, &mut candidates),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(r),
                step,
                ..
            })) => {
                let peers = match r {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                for p in peers {
                    for a in &p.addrs {
                        swarm.add_peer_address(p.peer_id, a.clone());
                    }
                    add(p.peer_id, &mut candidates);
                }
                if step.last {
                    break;
                }
            }
            _ => {}
        }
    }

    let mut books: HashMap<PeerId, PeerBook> = HashMap::new();
    let mut pending: HashMap<OutboundRequestId, PeerId> = HashMap::new();
    for p in candidates.into_iter().take(max_peers) {
        books.insert(p, PeerBook::default());
        for pool in pools {
            let id = swarm.behaviour_mut().sync.send_request(
                &p,
                SyncRequest::Book {
                    chain,
                    pool: pool.0,
                    after: None,
                },
            );
            pending.insert(id, p);
        }
    }
    let mut failed: HashSet<PeerId> = HashSet::new();
    while !pending.is_empty() {
        let ev = tokio::select! {
            ev = swarm.select_next_some() => ev,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) = ev else {
            continue;
        };
        match e {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                pending.remove(&request_id);
                if let SyncResponse::OtherChain { chain: theirs } = response {
                    books.entry(peer).or_default().error =
                        Some(format!("it trades on {theirs}, not {chain}"));
                } else if let SyncResponse::Book {
                    pool, offers, next, ..
                } = response
                {
                    let book = books.entry(peer).or_default();
                    for o in offers {
                        if let Ok(s) = Signed::<Offer>::from_bytes(&o) {
                            let b = s.body();
                            book.offers
                                .insert((PoolId(pool), OfferKey::of(b)), b.sequence);
                        }
                    }
                    if let Some(after) = next {
                        let id = swarm.behaviour_mut().sync.send_request(
                            &peer,
                            SyncRequest::Book {
                                chain,
                                pool,
                                after: Some(after),
                            },
                        );
                        pending.insert(id, peer);
                    }
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                pending.remove(&request_id);
                failed.insert(peer);
                books.entry(peer).or_default().error = Some(error.to_string());
            }
            _ => {}
        }
    }
    for p in pending.into_values() {
        if !failed.contains(&p) {
            books.entry(p).or_default().error = Some("no answer in time".into());
        }
    }
    Ok(books)
}
