//! Connection admission before the handshake: a dial or an inbound connection that the connection limits
//! would refuse once it is established is refused before it starts.
//!
//! Why: libp2p's `connection_limits` checks the established-connection caps (`[network] max_connections`,
//! `max_incoming`) only once a connection is established, that is after its noise handshake (a few X25519
//! operations on each side) and its multiplexer negotiation. A node at its caps still dials (the DHT's
//! queries and provider announcements dial the closest peers whether connected or not; AutoNAT servers dial
//! back) and still accepts, so both sides paid the handshake for a connection that was then dropped: measured
//! in the gossip simulator at 100 nodes, ~250 handshakes per node per minute while idle, most of the CPU
//! those nodes spent (docs/benchmarks.md, "Gossip at scale, simulated").
//!
//! Invariants:
//! - The gate applies the three caps (`behaviour::Caps::gate`): it refuses any connection while established +
//!   pending ones fill `max_connections`; an inbound one while inbound ones fill `max_incoming`; an outbound
//!   one while outbound ones fill the rest (`max_connections - max_incoming`). (Counting the pending ones
//!   means a burst of dials cannot all start and then all but one be refused.) `connection_limits` stands
//!   behind it on established connections, with the same inbound cap and the total and outbound ones
//!   [`LEASE_SLOTS`] higher (the lease slots below); it is the gate, first among the behaviours, that keeps
//!   every other connection within the caps, before the handshake.
//! - A node's own dials (pool members, the DHT's queries) never take the inbound share: a node keeps room
//!   for newcomers, who can only get in by being accepted. Without it every node of a large pool fills its
//!   caps with its own dials and a newcomer whose bootstrap peers are all full never gets in (seen in the
//!   simulator at 100 nodes with 16 connections each).
//! - Guest slots: the last `incoming / 8` inbound slots (none below 8) are for short stays. A connection
//!   accepted while the other inbound slots are full is a guest, and is closed [`GUEST_TIME`] later unless
//!   a regular slot has freed up meanwhile (it then takes it). A newcomer whose bootstrap peers are all full
//!   still gets in long enough to learn other peers from them (identify, the DHT) and dial those; without it
//!   a full network locks newcomers out for good. The caps stay hard: guests are inside `max_incoming`.
//! - Lease slots: a dial to a peer the node has a lease request in flight to (an order to a provider, a
//!   notice to a buyer; or to a relay it may be reached through: [`Behaviour::lease_request_started`]) that the caps refuse takes one of
//!   [`LEASE_SLOTS`] outbound slots *above* the caps instead. A buyer in a large pool has every outbound slot
//!   taken by pool members; without them its order to a provider it is not yet connected to was refused at
//!   its own caps and never left. A lease slot's connection becomes a regular one when a regular outbound slot
//!   frees up, and is closed [`LEASE_LINGER`] after its peer's last request ended otherwise. So the caps on
//!   everything else stay as they were, and `connection_limits` is set `LEASE_SLOTS` above the total and
//!   outbound caps (`behaviour::Caps::limits`): for regular connections the gate is the cap, counting pending
//!   ones, and `connection_limits` the backstop. (The other way, a provider at its inbound caps, cannot tell a
//!   buyer from anyone before the handshake: a buyer gets in there through a guest slot.)
//! - The decisions ([`Counts::admit`], [`Behaviour::expire_guests`], [`Behaviour::expire_lease_slots`]) are
//!   pure and take time as an argument; the behaviour only keeps the counts from the swarm's events, and the
//!   network task closes the guests and the lease slots whose time is up.
//! - Every pending connection is forgotten when it is established, fails, or is refused by another
//!   behaviour, so the counts cannot drift upwards and block a node for good.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, DialFailure, FromSwarm, ListenFailure,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Which side started a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Inbound,
    Outbound,
}

/// Why a connection was refused before its handshake: the node is at one of its own caps (no fault of
/// the peer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error("at the connection cap ({max} established or starting)")]
    Total { max: u32 },
    #[error("at the inbound connection cap ({max} established or starting)")]
    Inbound { max: u32 },
    #[error("at the outbound connection cap ({max} established or starting; the rest is kept for inbound)")]
    Outbound { max: u32 },
    #[error("at the connection caps, and all {max} lease slots above them are in use")]
    LeaseSlots { max: u32 },
}

/// Outbound connections a node may hold above its caps for its lease counterparties (see the module doc).
/// Eight: one conversation may dial its counterparty and, when that is behind NAT, up to three relays at once
/// (`MAX_RELAY_GUESSES` in mod.rs), and another may start meanwhile.
pub const LEASE_SLOTS: u32 = 8;

/// How long a connection in a lease slot stays after its peer's last lease request ended, when no regular
/// slot has freed up: long enough for the next message of the same conversation (an invoice is paid, the
/// provider's notices follow) not to dial again.
pub const LEASE_LINGER: Duration = Duration::from_secs(30);

/// Where a connection was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Within the caps.
    Regular,
    /// Above them, for a lease counterparty.
    Lease,
}

/// The caps the gate applies: `total` in all, `incoming` inbound, `outgoing` outbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: u32,
    pub incoming: u32,
    pub outgoing: u32,
}

impl Caps {
    /// Inbound slots for guests: the last eighth of `incoming` (none below 8).
    pub fn guest_slots(&self) -> u32 {
        self.incoming / 8
    }
}

/// How long a guest (a connection accepted in a guest slot) stays when no regular slot frees up: enough
/// for identify and a DHT lookup or two.
pub const GUEST_TIME: Duration = Duration::from_secs(30);

/// Connections established and pending, by side (those in lease slots not included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub established_in: u32,
    pub established_out: u32,
    pub pending_in: u32,
    pub pending_out: u32,
}

impl Counts {
    /// Whether a new connection on `side` may start under `caps`.
    pub fn admit(&self, side: Side, caps: Caps) -> Result<(), Full> {
        let all = self.established_in + self.established_out + self.pending_in + self.pending_out;
        if all >= caps.total {
            return Err(Full::Total { max: caps.total });
        }
        match side {
            Side::Inbound if self.established_in + self.pending_in >= caps.incoming => {
                Err(Full::Inbound { max: caps.incoming })
            }
            Side::Outbound if self.established_out + self.pending_out >= caps.outgoing => {
                Err(Full::Outbound { max: caps.outgoing })
            }
            _ => Ok(()),
        }
    }

    /// Whether a dial to a lease counterparty may start, with `lease_used` of the [`LEASE_SLOTS`] in use
    /// (pending or established): within the caps if they allow it, else in a lease slot if one is free.
    pub fn admit_lease(&self, caps: Caps, lease_used: u32) -> Result<Slot, Full> {
        match self.admit(Side::Outbound, caps) {
            Ok(()) => Ok(Slot::Regular),
            Err(_) if lease_used < LEASE_SLOTS => Ok(Slot::Lease),
            Err(_) => Err(Full::LeaseSlots { max: LEASE_SLOTS }),
        }
    }
}

/// A connection in a lease slot.
#[derive(Debug, Clone, Copy)]
struct LeaseConn {
    peer: PeerId,
    established: bool,
    /// Handed to the network task to close: still counted in the lease slots until it is gone.
    closing: bool,
    /// Since when its peer has had no lease request in flight (set at the first
    /// [`Behaviour::expire_lease_slots`] that sees it so).
    idle_since: Option<Instant>,
}

/// The gate as a libp2p behaviour; put it first, beside `connection_limits` (which enforces the caps, plus the
/// lease slots, on
/// established connections, the per-peer one included).
pub struct Behaviour {
    caps: Caps,
    established_in: HashSet<ConnectionId>,
    established_out: HashSet<ConnectionId>,
    pending_in: HashSet<ConnectionId>,
    pending_out: HashSet<ConnectionId>,
    /// The inbound connections in guest slots (a subset of `established_in`), with the peer and when the
    /// guest's time started (at the first [`Behaviour::expire_guests`] after it came).
    guests: BTreeMap<ConnectionId, (PeerId, Option<Instant>)>,
    /// The connections in lease slots (in `pending_out` or `established_out` too).
    lease: BTreeMap<ConnectionId, LeaseConn>,
    /// Lease requests in flight, per peer.
    lease_peers: HashMap<PeerId, u32>,
    /// Established connections through a relay, with the relay: a relay's connection in a lease slot stays
    /// while a connection runs through it.
    relayed: HashMap<ConnectionId, PeerId>,
    refused: u64,
    guests_closed: u64,
    lease_closed: u64,
}

impl Behaviour {
    pub fn new(caps: Caps) -> Self {
        Behaviour {
            caps,
            established_in: HashSet::new(),
            established_out: HashSet::new(),
            pending_in: HashSet::new(),
            pending_out: HashSet::new(),
            guests: BTreeMap::new(),
            lease: BTreeMap::new(),
            lease_peers: HashMap::new(),
            relayed: HashMap::new(),
            refused: 0,
            guests_closed: 0,
            lease_closed: 0,
        }
    }

    /// A lease request to `peer` is about to be sent: a dial to it may take a lease slot until it ends.
    pub fn lease_request_started(&mut self, peer: PeerId) {
        *self.lease_peers.entry(peer).or_insert(0) += 1;
    }

    /// A lease request to `peer` was answered or failed.
    pub fn lease_request_ended(&mut self, peer: &PeerId) {
        if let Some(n) = self.lease_peers.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                self.lease_peers.remove(peer);
            }
        }
    }

    /// Connections in lease slots closed at the end of their time since the start.
    pub fn lease_closed(&self) -> u64 {
        self.lease_closed
    }

    /// Connections in lease slots now (pending or established).
    pub fn lease_slots_used(&self) -> u32 {
        u32::try_from(self.lease.len()).unwrap_or(u32::MAX)
    }

    /// The lease-slot connections to close at `now`: established, for [`LEASE_LINGER`] without a lease
    /// request in flight to their peer or a relayed connection through it, and no regular outbound slot
    /// free. One for which a regular slot is free takes it instead (oldest first). A connection handed out
    /// here stays in its lease slot until it is gone.
    pub fn expire_lease_slots(&mut self, now: Instant) -> Vec<(PeerId, ConnectionId)> {
        let mut counts = self.counts();
        let mut out = Vec::new();
        let lease_peers = &self.lease_peers;
        let relays: HashSet<PeerId> = self.relayed.values().copied().collect();
        self.lease.retain(|id, c| {
            if !c.established || c.closing {
                return true;
            }
            if counts.admit(Side::Outbound, self.caps).is_ok() {
                counts.established_out += 1;
                return false;
            }
            if lease_peers.contains_key(&c.peer) || relays.contains(&c.peer) {
                c.idle_since = None;
                return true;
            }
            let since = *c.idle_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= LEASE_LINGER {
                c.closing = true;
                out.push((c.peer, *id));
            }
            true
        });
        self.lease_closed += out.len() as u64;
        out
    }

    /// Guests closed at the end of their time since the start.
    pub fn guests_closed(&self) -> u64 {
        self.guests_closed
    }

    /// The guests whose time is up at `now` while no regular inbound slot is free: the network task closes
    /// them. A guest for which a regular slot is free takes it instead (oldest first).
    pub fn expire_guests(&mut self, now: Instant) -> Vec<(PeerId, ConnectionId)> {
        let regular_cap = self.caps.incoming - self.caps.guest_slots();
        let mut regular = self.established_in.len() as u32 - self.guests.len() as u32;
        let mut out = Vec::new();
        self.guests.retain(|id, (peer, since)| {
            let start = *since.get_or_insert(now);
            if regular < regular_cap {
                regular += 1;
                return false;
            }
            if now.saturating_duration_since(start) >= GUEST_TIME {
                out.push((*peer, *id));
                return false;
            }
            true
        });
        self.guests_closed += out.len() as u64;
        out
    }

    /// The connections within the caps (those in lease slots not counted).
    pub fn counts(&self) -> Counts {
        let n = |s: &HashSet<ConnectionId>| u32::try_from(s.len()).unwrap_or(u32::MAX);
        let (lease_pending, lease_established) = self.lease.values().fold((0, 0), |(p, e), c| {
            if c.established {
                (p, e + 1)
            } else {
                (p + 1, e)
            }
        });
        Counts {
            established_in: n(&self.established_in),
            established_out: n(&self.established_out).saturating_sub(lease_established),
            pending_in: n(&self.pending_in),
            pending_out: n(&self.pending_out).saturating_sub(lease_pending),
        }
    }

    /// Connections refused before their handshake since the start.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn admit(&mut self, id: ConnectionId, side: Side) -> Result<(), ConnectionDenied> {
        if let Err(full) = self.counts().admit(side, self.caps) {
            self.refused += 1;
            return Err(ConnectionDenied::new(full));
        }
        match side {
            Side::Inbound => self.pending_in.insert(id),
            Side::Outbound => self.pending_out.insert(id),
        };
        Ok(())
    }

    /// Admits a dial to a lease counterparty (see [`Counts::admit_lease`]).
    fn admit_lease(&mut self, id: ConnectionId, peer: PeerId) -> Result<(), ConnectionDenied> {
        match self
            .counts()
            .admit_lease(self.caps, self.lease_slots_used())
        {
            Err(full) => {
                self.refused += 1;
                Err(ConnectionDenied::new(full))
            }
            Ok(slot) => {
                if slot == Slot::Lease {
                    self.lease.insert(
                        id,
                        LeaseConn {
                            peer,
                            established: false,
                            closing: false,
                            idle_since: None,
                        },
                    );
                }
                self.pending_out.insert(id);
                Ok(())
            }
        }
    }

    fn forget(&mut self, id: &ConnectionId) {
        self.lease.remove(id);
        self.relayed.remove(id);
        self.pending_in.remove(id);
        self.pending_out.remove(id);
        self.established_in.remove(id);
        self.established_out.remove(id);
        self.guests.remove(id);
    }
}

/// The relay of a relayed address (`.../p2p/<relay>/p2p-circuit/...`).
fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(id) => last = Some(id),
            Protocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit(id, Side::Inbound)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        match peer {
            Some(p) if self.lease_peers.contains_key(&p) => self.admit_lease(id, p),
            _ => self.admit(id, Side::Outbound),
        }
        .map(|()| Vec::new())
    }

    // Established here means accepted by the behaviours polled so far; another may still refuse it, in which
    // case the swarm reports a listen or dial failure (handled below) and no `ConnectionEstablished`.
    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending_in.remove(&id);
        if let Some(relay) = relay_of(local).or_else(|| relay_of(remote)) {
            self.relayed.insert(id, relay);
        }
        let regular = self.established_in.len() - self.guests.len();
        if regular as u32 >= self.caps.incoming - self.caps.guest_slots() {
            self.guests.insert(id, (peer, None));
        }
        self.established_in.insert(id);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending_out.remove(&id);
        if let Some(relay) = relay_of(addr) {
            self.relayed.insert(id, relay);
        }
        self.established_out.insert(id);
        if let Some(c) = self.lease.get_mut(&id) {
            c.established = true;
        }
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::DialFailure(DialFailure { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.forget(&connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        match e {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Named cases: (what, counts, side, expected) under the default caps (64, 48 of them inbound, so 16
    /// outbound).
    #[test]
    fn admission_follows_the_caps_counting_pending_connections() {
        let caps = Caps {
            total: 64,
            incoming: 48,
            outgoing: 16,
        };
        let c = |ei, eo, pi, po| Counts {
            established_in: ei,
            established_out: eo,
            pending_in: pi,
            pending_out: po,
        };
        use Side::{Inbound, Outbound};
        let total = Err(Full::Total { max: 64 });
        let cases = [
            ("empty node dials", c(0, 0, 0, 0), Outbound, Ok(())),
            ("empty node accepts", c(0, 0, 0, 0), Inbound, Ok(())),
            ("one below the cap", c(48, 15, 0, 0), Outbound, Ok(())),
            ("at the cap: no dial", c(48, 16, 0, 0), Outbound, total),
            ("at the cap: no accept", c(48, 16, 0, 0), Inbound, total),
            (
                "pending accepts fill the cap",
                c(10, 10, 44, 0),
                Outbound,
                total,
            ),
            (
                "pending dials fill the cap",
                c(40, 10, 0, 14),
                Inbound,
                total,
            ),
            (
                "inbound full, dialing still allowed",
                c(48, 0, 0, 0),
                Outbound,
                Ok(()),
            ),
            (
                "inbound full: no accept",
                c(48, 0, 0, 0),
                Inbound,
                Err(Full::Inbound { max: 48 }),
            ),
            (
                "inbound pending fill it",
                c(40, 0, 8, 0),
                Inbound,
                Err(Full::Inbound { max: 48 }),
            ),
            (
                "outbound full: no dial",
                c(0, 16, 0, 0),
                Outbound,
                Err(Full::Outbound { max: 16 }),
            ),
            (
                "outbound pending fill it",
                c(0, 10, 0, 6),
                Outbound,
                Err(Full::Outbound { max: 16 }),
            ),
            (
                "outbound full, a newcomer still gets in",
                c(20, 16, 0, 0),
                Inbound,
                Ok(()),
            ),
        ];
        for (name, counts, side, want) in cases {
            assert_eq!(counts.admit(side, caps), want, "{name}");
        }
    }

    fn accept(gate: &mut Behaviour, n: usize) -> ConnectionId {
        let id = ConnectionId::new_unchecked(n);
        let a: Multiaddr = "/memory/1".parse().unwrap();
        gate.handle_pending_inbound_connection(id, &a, &a)
            .expect("admitted");
        gate.handle_established_inbound_connection(id, PeerId::random(), &a, &a)
            .expect("established");
        id
    }

    /// With 16 inbound slots, 2 are for guests: the 15th and 16th connections are guests, closed after
    /// GUEST_TIME while the regular slots stay full, and a guest takes a regular slot that frees up.
    #[test]
    fn guests_leave_after_their_time_unless_a_regular_slot_frees_up() {
        let caps = Caps {
            total: 24,
            incoming: 16,
            outgoing: 8,
        };
        assert_eq!(caps.guest_slots(), 2);
        let mut gate = Behaviour::new(caps);
        let regular: Vec<ConnectionId> = (0..14).map(|n| accept(&mut gate, n)).collect();
        let t0 = Instant::now();
        assert!(gate.expire_guests(t0).is_empty(), "no guest yet");
        let g1 = accept(&mut gate, 100);
        let g2 = accept(&mut gate, 101);
        let a: Multiaddr = "/memory/1".parse().unwrap();
        assert_eq!(
            gate.handle_pending_inbound_connection(ConnectionId::new_unchecked(102), &a, &a)
                .map_err(|e| e.downcast::<Full>().ok()),
            Err(Some(Full::Inbound { max: 16 })),
            "the guest slots are inside max_incoming"
        );
        assert!(gate.expire_guests(t0).is_empty(), "their time starts");
        assert!(gate.expire_guests(t0 + GUEST_TIME / 2).is_empty());
        // A regular connection goes: the older guest takes its slot.
        gate.forget(&regular[0]);
        assert!(gate.expire_guests(t0 + GUEST_TIME / 2).is_empty());
        let closed = gate.expire_guests(t0 + GUEST_TIME);
        assert_eq!(
            closed.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
            vec![g2]
        );
        assert_eq!(gate.guests_closed(), 1);
        gate.forget(&g2);
        // g1 is regular now: it stays however long.
        assert!(gate.expire_guests(t0 + GUEST_TIME * 10).is_empty());
        assert!(gate.established_in.contains(&g1));
        assert_eq!(gate.counts().established_in, 14, "13 regular and g1");
    }

    /// Named cases: (what, counts within the caps, lease slots in use, expected) for a dial to a lease
    /// counterparty, under the default caps (16 outbound).
    #[test]
    fn a_lease_dial_takes_a_regular_slot_else_a_lease_slot() {
        let caps = Caps {
            total: 64,
            incoming: 48,
            outgoing: 16,
        };
        let c = |ei, eo| Counts {
            established_in: ei,
            established_out: eo,
            pending_in: 0,
            pending_out: 0,
        };
        let cases = [
            ("room within the caps", c(0, 3), 0, Ok(Slot::Regular)),
            (
                "room within the caps, lease slots all used",
                c(0, 3),
                LEASE_SLOTS,
                Ok(Slot::Regular),
            ),
            ("outbound full", c(0, 16), 0, Ok(Slot::Lease)),
            ("everything full", c(48, 16), 3, Ok(Slot::Lease)),
            (
                "everything full, lease slots too",
                c(48, 16),
                LEASE_SLOTS,
                Err(Full::LeaseSlots { max: LEASE_SLOTS }),
            ),
        ];
        for (name, counts, used, want) in cases {
            assert_eq!(counts.admit_lease(caps, used), want, "{name}");
        }
    }

    fn dial(gate: &mut Behaviour, n: usize, peer: PeerId) -> Result<ConnectionId, Full> {
        let id = ConnectionId::new_unchecked(n);
        let a: Multiaddr = "/memory/1".parse().unwrap();
        gate.handle_pending_outbound_connection(id, Some(peer), &[], Endpoint::Dialer)
            .map_err(|e| e.downcast::<Full>().expect("a cap"))?;
        gate.handle_established_outbound_connection(id, peer, &a, Endpoint::Dialer, PortUse::New)
            .expect("established");
        Ok(id)
    }

    /// With the outbound slots full, a dial to a peer with a lease request in flight takes a lease slot (a
    /// dial to anyone else is still refused, and so is a fifth lease dial); the connection stays while
    /// requests are in flight, is closed LEASE_LINGER after the last one ended, and becomes regular instead
    /// when a regular slot frees up.
    #[test]
    fn lease_slots_hold_counterparties_above_the_caps_for_a_while() {
        let caps = Caps {
            total: 4,
            incoming: 2,
            outgoing: 2,
        };
        let mut gate = Behaviour::new(caps);
        let regular: Vec<ConnectionId> = (0..2)
            .map(|n| dial(&mut gate, n, PeerId::random()).expect("room"))
            .collect();
        assert_eq!(
            dial(&mut gate, 10, PeerId::random()),
            Err(Full::Outbound { max: 2 }),
            "no lease request: capped"
        );
        let providers: Vec<PeerId> = (0..=LEASE_SLOTS).map(|_| PeerId::random()).collect();
        for p in &providers {
            gate.lease_request_started(*p);
        }
        let held: Vec<ConnectionId> = providers[..LEASE_SLOTS as usize]
            .iter()
            .enumerate()
            .map(|(i, p)| dial(&mut gate, 20 + i, *p).expect("a lease slot"))
            .collect();
        assert_eq!(gate.lease_slots_used(), LEASE_SLOTS);
        assert_eq!(
            dial(&mut gate, 30, providers[LEASE_SLOTS as usize]),
            Err(Full::LeaseSlots { max: LEASE_SLOTS })
        );
        assert_eq!(
            gate.counts().established_out,
            2,
            "the caps count regular ones only"
        );

        let t0 = Instant::now();
        assert!(gate.expire_lease_slots(t0).is_empty(), "requests in flight");
        // Provider 0's request is answered: its connection lingers, then goes.
        gate.lease_request_ended(&providers[0]);
        assert!(gate.expire_lease_slots(t0).is_empty(), "its linger starts");
        assert!(gate.expire_lease_slots(t0 + LEASE_LINGER / 2).is_empty());
        let closed = gate.expire_lease_slots(t0 + LEASE_LINGER);
        assert_eq!(closed, vec![(providers[0], held[0])]);
        assert_eq!(gate.lease_closed(), 1);
        gate.forget(&held[0]);
        // A regular connection goes: the oldest lease-slot connection takes its slot.
        gate.forget(&regular[0]);
        assert!(gate.expire_lease_slots(t0 + LEASE_LINGER).is_empty());
        assert_eq!(gate.lease_slots_used(), LEASE_SLOTS - 2);
        assert_eq!(gate.counts().established_out, 2);
        // It is regular now: when every request has ended, the two still in lease slots go, and it stays.
        for p in &providers[1..] {
            gate.lease_request_ended(p);
        }
        assert!(
            gate.expire_lease_slots(t0 + LEASE_LINGER).is_empty(),
            "their linger starts"
        );
        let closed: Vec<ConnectionId> = gate
            .expire_lease_slots(t0 + LEASE_LINGER * 2)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        assert_eq!(closed, held[2..].to_vec());
        assert!(
            gate.expire_lease_slots(t0 + LEASE_LINGER * 3).is_empty(),
            "handed out once"
        );
        assert_eq!(
            gate.lease_slots_used(),
            LEASE_SLOTS - 2,
            "closing ones hold their slots until they are gone"
        );
        for id in &closed {
            gate.forget(id);
        }
        assert_eq!(gate.lease_slots_used(), 0);
        assert!(
            gate.established_out.contains(&held[1]),
            "the regular one stays"
        );
        assert_eq!(gate.counts().established_out, 2);
    }

    #[test]
    fn a_relayed_address_names_its_relay() {
        let relay = PeerId::random();
        let peer = PeerId::random();
        let cases = [
            (
                "dialed through a relay",
                format!("/ip4/192.0.2.1/tcp/9738/p2p/{relay}/p2p-circuit/p2p/{peer}"),
                Some(relay),
            ),
            (
                "listening through a relay",
                format!("/ip4/192.0.2.1/tcp/9738/p2p/{relay}/p2p-circuit"),
                Some(relay),
            ),
            (
                "direct",
                format!("/ip4/192.0.2.1/tcp/9738/p2p/{peer}"),
                None,
            ),
            (
                "circuit without a relay id",
                "/p2p-circuit".to_string(),
                None,
            ),
        ];
        for (name, a, want) in cases {
            assert_eq!(relay_of(&a.parse().unwrap()), want, "{name}");
        }
    }

    /// A relay's connection in a lease slot stays while a connection runs through it, whatever the
    /// requests, and lingers from when the last one went.
    #[test]
    fn a_relay_in_a_lease_slot_stays_while_a_circuit_runs_through_it() {
        let caps = Caps {
            total: 2,
            incoming: 1,
            outgoing: 1,
        };
        let mut gate = Behaviour::new(caps);
        dial(&mut gate, 0, PeerId::random()).expect("room");
        let (relay, provider) = (PeerId::random(), PeerId::random());
        gate.lease_request_started(provider);
        gate.lease_request_started(relay);
        let r = dial(&mut gate, 1, relay).expect("a lease slot");
        let circuit = ConnectionId::new_unchecked(2);
        let via: Multiaddr = format!("/memory/1/p2p/{relay}/p2p-circuit/p2p/{provider}")
            .parse()
            .unwrap();
        gate.handle_pending_outbound_connection(circuit, Some(provider), &[], Endpoint::Dialer)
            .expect("a lease slot");
        gate.handle_established_outbound_connection(
            circuit,
            provider,
            &via,
            Endpoint::Dialer,
            PortUse::New,
        )
        .expect("established");
        gate.lease_request_ended(&provider);
        gate.lease_request_ended(&relay);
        let t0 = Instant::now();
        assert!(gate.expire_lease_slots(t0).is_empty());
        assert!(
            gate.expire_lease_slots(t0 + LEASE_LINGER * 2) == vec![(provider, circuit)],
            "the circuit lingers out; its relay stays"
        );
        gate.forget(&circuit);
        assert!(gate.expire_lease_slots(t0 + LEASE_LINGER * 2).is_empty());
        assert_eq!(
            gate.expire_lease_slots(t0 + LEASE_LINGER * 3),
            vec![(relay, r)]
        );
    }

    /// Below 8 inbound slots there are no guest slots: every connection is regular.
    #[test]
    fn small_caps_have_no_guests() {
        let caps = Caps {
            total: 3,
            incoming: 3,
            outgoing: 3,
        };
        let mut gate = Behaviour::new(caps);
        for n in 0..3 {
            accept(&mut gate, n);
        }
        assert!(gate
            .expire_guests(Instant::now() + GUEST_TIME * 2)
            .is_empty());
        assert_eq!(gate.guests_closed(), 0);
    }
}
