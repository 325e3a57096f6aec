//! Peers this node has reached, remembered across restarts so that a node finds the network again without
//! seeds or bootstrap addresses (one network policy: which peers to remember and which to dial at start).
//!
//! Invariants:
//! - Only addresses this node itself dialed successfully are remembered (a peer's own claims about its
//!   addresses are not: they would let anyone fill the list with addresses that do not answer).
//! - At most [`MAX_PEERS`] peers with at most [`MAX_ADDRS_PER_PEER`] addresses each, most recently reached
//!   first; the oldest are dropped. Every address ends in `/p2p/<that peer>`.
//! - A banned peer is forgotten.
//! - Pure: time is passed in; the network driver persists [`KnownPeers::encode`] whenever
//!   [`KnownPeers::remember`] reports a change, and bad stored bytes load as an empty list.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Peers remembered.
pub const MAX_PEERS: usize = 64;
/// Addresses remembered per peer.
pub const MAX_ADDRS_PER_PEER: usize = 4;
/// A known peer reached again after this long is moved to the front (and the list written again); sooner
/// reconnections change nothing, so a flapping connection does not write on every reconnect.
pub const REFRESH_SECS: u64 = 3600;
/// The store's meta key holding the list.
pub const META_KEY: &str = "network/known_peers";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Known {
    peer: String,
    addrs: Vec<String>,
    last_seen: u64,
}

/// The remembered peers, most recently reached first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeers {
    peers: Vec<Known>,
}

/// `addr` ending in `/p2p/peer`, or `None` when it names another peer.
fn with_peer(addr: &Multiaddr, peer: &PeerId) -> Option<Multiaddr> {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) if p == *peer => Some(addr.clone()),
        Some(Protocol::P2p(_)) => None,
        _ => Some(addr.clone().with(Protocol::P2p(*peer))),
    }
}

impl KnownPeers {
    /// The list as stored; anything unreadable is an empty list (the node then needs its bootstrap peers).
    pub fn decode(bytes: &[u8]) -> KnownPeers {
        let mut k: KnownPeers = serde_json::from_slice(bytes).unwrap_or_default();
        k.peers.truncate(MAX_PEERS);
        for p in &mut k.peers {
            p.addrs.truncate(MAX_ADDRS_PER_PEER);
        }
        k
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Notes that this node dialed `peer` at `addr` at `now`. True when the list changed in a way worth
    /// writing: a new peer, a new address, or a peer not reached for [`REFRESH_SECS`].
    pub fn remember(&mut self, peer: &PeerId, addr: &Multiaddr, now: u64) -> bool {
        let Some(full) = with_peer(addr, peer) else {
            return false;
        };
        let (id, full) = (peer.to_string(), full.to_string());
        let mut entry = match self.peers.iter().position(|k| k.peer == id) {
            Some(i) => self.peers.remove(i),
            None => Known {
                peer: id,
                addrs: Vec::new(),
                last_seen: 0,
            },
        };
        let new_addr = !entry.addrs.contains(&full);
        let changed = new_addr || now.saturating_sub(entry.last_seen) >= REFRESH_SECS;
        if new_addr {
            entry.addrs.insert(0, full);
            entry.addrs.truncate(MAX_ADDRS_PER_PEER);
        }
        if changed {
            entry.last_seen = now;
        }
        self.peers.insert(0, entry);
        self.peers.truncate(MAX_PEERS);
        changed
    }

    /// Forgets a peer (banned). True when it was known.
    pub fn forget(&mut self, peer: &PeerId) -> bool {
        let id = peer.to_string();
        let before = self.peers.len();
        self.peers.retain(|k| k.peer != id);
        self.peers.len() != before
    }

    /// Every remembered address, most recently reached peer first, each ending in `/p2p/<peer>`.
    pub fn dial_list(&self) -> Vec<(PeerId, Multiaddr)> {
        self.peers
            .iter()
            .filter_map(|k| Some((k.peer.parse::<PeerId>().ok()?, k)))
            .flat_map(|(peer, k)| {
                k.addrs
                    .iter()
                    .filter_map(move |a| Some((peer, a.parse::<Multiaddr>().ok()?)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        let key = libp2p::identity::Keypair::ed25519_from_bytes([n; 32]).unwrap();
        key.public().to_peer_id()
    }

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/198.18.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn remembers_dialed_addresses_newest_first_and_bounded() {
        struct Case {
            name: &'static str,
            steps: Vec<(u8, u16, u64)>,
            changed: Vec<bool>,
            want_first: (u8, u16),
            want_len: usize,
        }
        let cases = [
            Case {
                name: "a new peer is a change, the same address again within the hour is not",
                steps: vec![(1, 1, 100), (1, 1, 200)],
                changed: vec![true, false],
                want_first: (1, 1),
                want_len: 1,
            },
            Case {
                name: "a new address of a known peer is a change and comes first",
                steps: vec![(1, 1, 100), (1, 2, 200)],
                changed: vec![true, true],
                want_first: (1, 2),
                want_len: 1,
            },
            Case {
                name: "reached again after the refresh interval: written again, moved first",
                steps: vec![(1, 1, 100), (2, 1, 200), (1, 1, 100 + REFRESH_SECS)],
                changed: vec![true, true, true],
                want_first: (1, 1),
                want_len: 2,
            },
        ];
        for c in cases {
            let mut k = KnownPeers::default();
            let got: Vec<bool> = c
                .steps
                .iter()
                .map(|&(p, a, t)| k.remember(&peer(p), &addr(a), t))
                .collect();
            assert_eq!(got, c.changed, "{}", c.name);
            assert_eq!(k.len(), c.want_len, "{}", c.name);
            let (p, a) = c.want_first;
            assert_eq!(
                k.dial_list()[0],
                (peer(p), addr(a).with(Protocol::P2p(peer(p)))),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn bounds_hold_and_the_oldest_go() {
        let mut k = KnownPeers::default();
        for n in 0..(MAX_PEERS as u8 + 10) {
            k.remember(&peer(n), &addr(1), u64::from(n));
        }
        assert_eq!(k.len(), MAX_PEERS);
        assert_eq!(k.dial_list()[0].0, peer(MAX_PEERS as u8 + 9));
        assert!(k.dial_list().iter().all(|(p, _)| *p != peer(0)));
        for port in 0..10 {
            k.remember(&peer(1), &addr(100 + port), 1000);
        }
        let of_1 = k
            .dial_list()
            .into_iter()
            .filter(|(p, _)| *p == peer(1))
            .count();
        assert_eq!(of_1, MAX_ADDRS_PER_PEER);
    }

    #[test]
    fn another_peers_address_is_refused_and_a_ban_forgets() {
        let mut k = KnownPeers::default();
        let theirs = addr(1).with(Protocol::P2p(peer(2)));
        assert!(!k.remember(&peer(1), &theirs, 1));
        assert!(k.is_empty());
        k.remember(&peer(1), &addr(1), 1);
        assert!(k.forget(&peer(1)));
        assert!(!k.forget(&peer(1)));
        assert!(k.is_empty());
    }

    #[test]
    fn round_trips_and_garbage_is_empty() {
        let mut k = KnownPeers::default();
        k.remember(&peer(1), &addr(1), 5);
        k.remember(&peer(2), &addr(2), 6);
        assert_eq!(KnownPeers::decode(&k.encode()), k);
        assert!(KnownPeers::decode(b"{not json").is_empty());
        assert!(KnownPeers::decode(b"").is_empty());
    }
}
