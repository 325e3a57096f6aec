//! Reachability policy: can others dial this node, and what it does when they cannot.
//!
//! Invariants:
//! - Pure: every input carries `now`; no I/O, no clock reads. The network runner feeds it AutoNAT (v2)
//!   results, UPnP mappings, the operator's `external_addresses`, relay candidates from identify and the
//!   relay client's reservation outcomes, and carries out the [`Action`]s it returns.
//! - The DHT is served (Kademlia server mode) only while a direct address is confirmed: by AutoNAT, by UPnP,
//!   or by the operator. A relayed address never counts: a DHT server reached only through a relay would
//!   spend the relay's circuits on every lookup. Until then the node queries the DHT as a client.
//! - A node is taken to be behind NAT (`Private`) after [`PROBES_FOR_PRIVATE`] failed probes with none
//!   succeeding, or after [`UNKNOWN_FOR`] without any confirmation. While private it holds up to
//!   [`WANTED_RELAYS`] relay reservations, only with peers it reached by dialing a direct address (they are
//!   dialable, so others can reach them too) that offer the relay protocol. A relay that failed is not
//!   asked again before [`RELAY_RETRY`].
//! - Confirmed addresses are bounded ([`MAX_CONFIRMED`]), and so are relay candidates
//!   ([`MAX_CANDIDATES`]); relays are remembered only while asked, held, resting, or candidates: the state
//!   stays small whatever peers claim.
//! - A node that becomes public gives its relay slots back ([`Action::Release`]).
//! - Known limit: AutoNAT v2 does not re-test an address it confirmed, so a node stays public until the
//!   address expires (a UPnP mapping) or the node restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Failed AutoNAT probes (and none succeeding) after which the node takes itself to be behind NAT.
pub const PROBES_FOR_PRIVATE: u32 = 2;
/// How long without any confirmation before the node acts as if behind NAT anyway (no AutoNAT server
/// answered, say).
pub const UNKNOWN_FOR: Duration = Duration::from_secs(60);
/// Relay reservations a node behind NAT keeps.
pub const WANTED_RELAYS: usize = 2;
/// How long a relay whose reservation failed or closed waits before it is asked again.
pub const RELAY_RETRY: Duration = Duration::from_secs(30);
/// AutoNAT v2 asks only peers this node dialed; a node that was only dialed (a seed) dials one of them
/// back, at most this often, while its reachability is unconfirmed.
pub const PROBE_DIAL_EVERY: Duration = Duration::from_secs(5);
pub const MAX_CONFIRMED: usize = 16;
pub const MAX_CANDIDATES: usize = 32;

/// Whether others can dial this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// Not known yet: no probe answered.
    #[default]
    Unknown,
    /// A direct address is confirmed: others dial it.
    Public,
    /// Behind NAT (or a firewall): others reach it through relays.
    Private,
}

/// What the runner does for the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Serve the DHT (`true`) or only query it.
    DhtServer(bool),
    /// Listen through this relay: `addr` is the relay's direct address ending in `/p2p/<relay>`.
    Reserve { relay: PeerId, addr: Multiaddr },
    /// Stop listening through this relay: the node is public now and needs no slot.
    Release { relay: PeerId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// Asked, no answer yet.
    Asked,
    /// The relay holds a slot for us.
    Reserved,
    /// Failed or closed; not asked again before the instant.
    Resting(Instant),
}

#[derive(Debug)]
pub struct Reachability {
    started: Instant,
    confirmed: BTreeSet<Multiaddr>,
    failures: u32,
    dht_server: bool,
    /// Dialable peers that offer the relay protocol, with the address we reached them at.
    candidates: BTreeMap<PeerId, Multiaddr>,
    slots: BTreeMap<PeerId, Slot>,
    last_probe_dial: Option<Instant>,
    probe_dials: usize,
}

/// `addr` goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

impl Reachability {
    pub fn new(now: Instant) -> Self {
        Reachability {
            started: now,
            confirmed: BTreeSet::new(),
            failures: 0,
            dht_server: false,
            candidates: BTreeMap::new(),
            slots: BTreeMap::new(),
            last_probe_dial: None,
            probe_dials: 0,
        }
    }

    pub fn reach(&self, now: Instant) -> Reach {
        if !self.confirmed.is_empty() {
            Reach::Public
        } else if self.failures >= PROBES_FOR_PRIVATE
            || now.saturating_duration_since(self.started) >= UNKNOWN_FOR
        {
            Reach::Private
        } else {
            Reach::Unknown
        }
    }

    /// Direct addresses confirmed reachable.
    pub fn confirmed(&self) -> impl Iterator<Item = &Multiaddr> {
        self.confirmed.iter()
    }

    /// The direct addresses (ending in `/p2p/<relay>`) of the relays this node knows: a peer behind NAT
    /// that is not connected may be reached through any of them, if it holds a slot there.
    pub fn known_relays(&self) -> impl Iterator<Item = &Multiaddr> {
        self.candidates.values()
    }

    /// Relays holding a slot for this node.
    pub fn reserved(&self) -> impl Iterator<Item = &PeerId> {
        self.slots
            .iter()
            .filter(|(_, s)| **s == Slot::Reserved)
            .map(|(p, _)| p)
    }

    /// A direct address others reached (AutoNAT dial-back, UPnP mapping, operator's setting).
    pub fn confirm(&mut self, addr: Multiaddr, now: Instant) -> Vec<Action> {
        if !is_relayed(&addr) && self.confirmed.len() < MAX_CONFIRMED {
            self.confirmed.insert(addr);
            self.failures = 0;
        }
        self.decide(now)
    }

    /// A confirmed address stopped working (a UPnP mapping expired, say).
    pub fn expire(&mut self, addr: &Multiaddr, now: Instant) -> Vec<Action> {
        self.confirmed.remove(addr);
        self.decide(now)
    }

    /// An AutoNAT probe of one of our addresses failed: the server could not dial it back.
    pub fn probe_failed(&mut self, now: Instant) -> Vec<Action> {
        self.failures = self.failures.saturating_add(1);
        self.decide(now)
    }

    /// A peer we dialed at `addr` (not relayed) offers the relay protocol.
    pub fn relay_candidate(&mut self, peer: PeerId, addr: Multiaddr, now: Instant) -> Vec<Action> {
        if !is_relayed(&addr)
            && (self.candidates.len() < MAX_CANDIDATES || self.candidates.contains_key(&peer))
        {
            let addr = match addr.iter().last() {
                Some(Protocol::P2p(p)) if p == peer => addr,
                _ => addr.with(Protocol::P2p(peer)),
            };
            self.candidates.insert(peer, addr);
        }
        self.decide(now)
    }

    /// The connection to a peer is gone: it is no candidate until seen again.
    pub fn disconnected(&mut self, peer: &PeerId, now: Instant) -> Vec<Action> {
        self.candidates.remove(peer);
        if self.slots.contains_key(peer) {
            self.slots.insert(*peer, Slot::Resting(now + RELAY_RETRY));
        }
        self.decide(now)
    }

    /// The relay accepted (or renewed) our reservation.
    pub fn reserved_with(&mut self, relay: PeerId) {
        self.slots.insert(relay, Slot::Reserved);
    }

    /// The reservation with `relay` failed or its listener closed.
    pub fn relay_failed(&mut self, relay: PeerId, now: Instant) -> Vec<Action> {
        self.slots.insert(relay, Slot::Resting(now + RELAY_RETRY));
        self.decide(now)
    }

    /// Which inbound peer to dial so that AutoNAT has a server to ask, if any: only while no direct address
    /// is confirmed, no direct outbound connection exists, and [`PROBE_DIAL_EVERY`] passed since the last
    /// such dial; taking the peers in turn (one that cannot be dialed back does not block the others).
    pub fn probe_dial(
        &mut self,
        has_outbound: bool,
        inbound: &[PeerId],
        now: Instant,
    ) -> Option<PeerId> {
        if !self.confirmed.is_empty() || has_outbound || inbound.is_empty() {
            return None;
        }
        if self
            .last_probe_dial
            .is_some_and(|t| now.saturating_duration_since(t) < PROBE_DIAL_EVERY)
        {
            return None;
        }
        self.last_probe_dial = Some(now);
        let peer = inbound[self.probe_dials % inbound.len()];
        self.probe_dials += 1;
        Some(peer)
    }

    /// Called now and then: time alone can make the node private, and resting relays ready again.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        self.decide(now)
    }

    fn decide(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let reach = self.reach(now);
        let server = reach == Reach::Public;
        if server != self.dht_server {
            self.dht_server = server;
            out.push(Action::DhtServer(server));
        }
        // Relays that rested long enough and are no candidates any more are forgotten: the map holds the
        // slots asked or held (at most WANTED_RELAYS at a time) and those resting, no more.
        let candidates = &self.candidates;
        self.slots.retain(|p, s| match s {
            Slot::Resting(until) => *until > now || candidates.contains_key(p),
            _ => true,
        });
        if reach == Reach::Public {
            // Dialable directly: give the slots back.
            let held: Vec<PeerId> = self
                .slots
                .iter()
                .filter(|(_, s)| matches!(s, Slot::Asked | Slot::Reserved))
                .map(|(p, _)| *p)
                .collect();
            for relay in held {
                self.slots.remove(&relay);
                out.push(Action::Release { relay });
            }
        }
        if reach != Reach::Private {
            return out;
        }
        let held = self
            .slots
            .values()
            .filter(|s| matches!(s, Slot::Asked | Slot::Reserved))
            .count();
        let ready: Vec<(PeerId, Multiaddr)> = self
            .candidates
            .iter()
            .filter(|(p, _)| match self.slots.get(p) {
                None => true,
                Some(Slot::Resting(until)) => *until <= now,
                Some(_) => false,
            })
            .map(|(p, a)| (*p, a.clone()))
            .take(WANTED_RELAYS.saturating_sub(held))
            .collect();
        for (relay, addr) in ready {
            self.slots.insert(relay, Slot::Asked);
            out.push(Action::Reserve { relay, addr });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn reserves(actions: &[Action]) -> Vec<PeerId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reserve { relay, .. } => Some(*relay),
                _ => None,
            })
            .collect()
    }

    /// Named cases: what a node does from the inputs it saw.
    #[test]
    fn decisions() {
        let t0 = Instant::now();
        let relay_a = PeerId::random();
        let relay_b = PeerId::random();
        let relay_c = PeerId::random();
        let direct = addr("/ip4/198.51.100.1/tcp/9738");

        // A new node: unknown, DHT client, reserves nothing.
        let mut r = Reachability::new(t0);
        assert_eq!(r.reach(t0), Reach::Unknown, "new node");
        assert!(
            r.relay_candidate(relay_a, direct.clone(), t0).is_empty(),
            "new node reserves nothing"
        );

        // Confirmed by AutoNAT: public, serves the DHT, never reserves.
        assert_eq!(
            r.confirm(addr("/ip4/203.0.113.5/tcp/9738"), t0),
            vec![Action::DhtServer(true)]
        );
        assert_eq!(r.reach(t0), Reach::Public, "confirmed");
        assert!(
            r.tick(t0 + UNKNOWN_FOR * 2).is_empty(),
            "a public node keeps no relay"
        );

        // A relayed address is never a confirmation.
        let mut r = Reachability::new(t0);
        r.confirm(addr("/ip4/198.51.100.1/tcp/9738/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit"), t0);
        assert_eq!(
            r.reach(t0),
            Reach::Unknown,
            "relayed address confirmed nothing"
        );

        // Behind NAT: failed probes make it private; it reserves with two relays, not three.
        let mut r = Reachability::new(t0);
        r.relay_candidate(relay_a, direct.clone(), t0);
        r.relay_candidate(relay_b, addr("/ip4/198.51.100.2/tcp/9738"), t0);
        r.relay_candidate(relay_c, addr("/ip4/198.51.100.3/tcp/9738"), t0);
        assert!(r.probe_failed(t0).is_empty(), "one failure is not enough");
        let first = reserves(&r.probe_failed(t0));
        assert_eq!(first.len(), WANTED_RELAYS, "two relays asked");
        assert_eq!(r.reach(t0), Reach::Private);
        r.reserved_with(first[0]);
        assert!(
            reserves(&r.tick(t0)).is_empty(),
            "asked and reserved slots are held"
        );

        // A failed relay rests, and another takes its place; it is asked again only after the rest.
        let again = reserves(&r.relay_failed(first[1], t0));
        assert_eq!(again.len(), 1, "a third relay replaces the failed one");
        assert!(!again.contains(&first[1]));
        r.relay_failed(again[0], t0);
        assert!(
            reserves(&r.tick(t0 + RELAY_RETRY / 2)).is_empty(),
            "resting relays wait"
        );
        assert_eq!(
            reserves(&r.tick(t0 + RELAY_RETRY)).len(),
            1,
            "a rested relay is asked again"
        );

        // Reserve addresses end in the relay's id.
        let mut r = Reachability::new(t0);
        r.relay_candidate(relay_a, direct.clone(), t0);
        let acts = r.tick(t0 + UNKNOWN_FOR);
        assert!(
            acts.contains(&Action::Reserve {
                relay: relay_a,
                addr: direct.clone().with(Protocol::P2p(relay_a))
            }),
            "no answer for {UNKNOWN_FOR:?}: private anyway; {acts:?}"
        );

        // A node that later gets a confirmed address (UPnP) serves the DHT and gives its relay slot back;
        // losing the address goes back to the relay.
        let mapped = addr("/ip4/203.0.113.9/tcp/9738");
        assert_eq!(
            r.confirm(mapped.clone(), t0),
            vec![Action::DhtServer(true), Action::Release { relay: relay_a }]
        );
        assert_eq!(
            r.expire(&mapped, t0 + UNKNOWN_FOR),
            vec![
                Action::DhtServer(false),
                Action::Reserve {
                    relay: relay_a,
                    addr: direct.clone().with(Protocol::P2p(relay_a))
                }
            ]
        );

        // Candidates reached only through a relay are no relays.
        let mut r = Reachability::new(t0);
        r.relay_candidate(relay_a, addr("/ip4/198.51.100.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit"), t0);
        assert!(
            reserves(&r.tick(t0 + UNKNOWN_FOR)).is_empty(),
            "relayed candidate ignored"
        );

        // Disconnected candidates are forgotten.
        let mut r = Reachability::new(t0);
        r.relay_candidate(relay_a, direct.clone(), t0);
        r.disconnected(&relay_a, t0);
        assert!(
            reserves(&r.tick(t0 + UNKNOWN_FOR)).is_empty(),
            "gone candidate ignored"
        );
    }

    #[test]
    fn a_node_only_dialed_dials_back_for_autonat_now_and_then() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut r = Reachability::new(t0);
        assert_eq!(
            r.probe_dial(true, &[a, b], t0),
            None,
            "has an outbound connection"
        );
        assert_eq!(r.probe_dial(false, &[], t0), None, "no peer at all");
        assert_eq!(r.probe_dial(false, &[a, b], t0), Some(a));
        assert_eq!(
            r.probe_dial(false, &[a, b], t0 + PROBE_DIAL_EVERY / 2),
            None,
            "too soon"
        );
        assert_eq!(
            r.probe_dial(false, &[a, b], t0 + PROBE_DIAL_EVERY),
            Some(b),
            "the next peer in turn"
        );
        r.confirm(addr("/ip4/203.0.113.5/tcp/9738"), t0);
        assert_eq!(
            r.probe_dial(false, &[a, b], t0 + PROBE_DIAL_EVERY * 3),
            None,
            "confirmed already"
        );
    }

    /// Relays that failed and left are forgotten once rested: however many come and go, the node remembers
    /// no more than the slots it holds.
    #[test]
    fn relays_that_came_and_went_are_forgotten() {
        let t0 = Instant::now();
        let mut r = Reachability::new(t0);
        r.probe_failed(t0);
        r.probe_failed(t0);
        let mut t = t0;
        for i in 0..1000u32 {
            t = t0 + Duration::from_millis(u64::from(i));
            let relay = PeerId::random();
            let asked = reserves(&r.relay_candidate(relay, addr("/ip4/198.51.100.7/tcp/9738"), t));
            for p in asked {
                r.relay_failed(p, t);
            }
            r.disconnected(&relay, t);
        }
        r.tick(t + RELAY_RETRY);
        assert!(
            r.slots.len() <= WANTED_RELAYS,
            "{} relays remembered",
            r.slots.len()
        );
    }

    #[test]
    fn candidates_are_bounded() {
        let t0 = Instant::now();
        let mut r = Reachability::new(t0);
        for i in 0..(MAX_CANDIDATES * 4) {
            r.relay_candidate(
                PeerId::random(),
                addr(&format!("/ip4/10.0.0.1/tcp/{}", i + 1)),
                t0,
            );
        }
        assert_eq!(r.candidates.len(), MAX_CANDIDATES);
    }
}
