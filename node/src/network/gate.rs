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
//! - The gate refuses only what `connection_limits` would refuse later (`behaviour::Caps::limits` sets the
//!   same three caps there): any connection while established + pending ones fill `max_connections`; an
//!   inbound one while inbound ones fill `max_incoming`; an outbound one while outbound ones fill the rest
//!   (`max_connections - max_incoming`). (Counting the pending ones means a burst of dials cannot all start
//!   and then all but one be refused.) So the set of connections a node ends up with is what the caps allow;
//!   only the wasted handshakes go.
//! - A node's own dials (pool members, the DHT's queries) never take the inbound share: a node keeps room
//!   for newcomers, who can only get in by being accepted. Without it every node of a large pool fills its
//!   caps with its own dials and a newcomer whose bootstrap peers are all full never gets in (seen in the
//!   simulator at 100 nodes with 16 connections each).
//! - Guest slots: the last `incoming / 8` inbound slots (none below 8) are for short stays. A connection
//!   accepted while the other inbound slots are full is a guest, and is closed [`GUEST_TIME`] later unless
//!   a regular slot has freed up meanwhile (it then takes it). A newcomer whose bootstrap peers are all full
//!   still gets in long enough to learn other peers from them (identify, the DHT) and dial those; without it
//!   a full network locks newcomers out for good. The caps stay hard: guests are inside `max_incoming`.
//! - The decisions ([`Counts::admit`], [`Behaviour::expire_guests`]) are pure and take time as an argument;
//!   the behaviour only keeps the counts from the swarm's events, and the network task closes the guests.
//! - Every pending connection is forgotten when it is established, fails, or is refused by another
//!   behaviour, so the counts cannot drift upwards and block a node for good.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
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

/// Connections established and pending, by side.
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
}

/// The gate as a libp2p behaviour; put it beside `connection_limits` (which still enforces the caps on
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
    refused: u64,
    guests_closed: u64,
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
            refused: 0,
            guests_closed: 0,
        }
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

    pub fn counts(&self) -> Counts {
        let n = |s: &HashSet<ConnectionId>| u32::try_from(s.len()).unwrap_or(u32::MAX);
        Counts {
            established_in: n(&self.established_in),
            established_out: n(&self.established_out),
            pending_in: n(&self.pending_in),
            pending_out: n(&self.pending_out),
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

    fn forget(&mut self, id: &ConnectionId) {
        self.pending_in.remove(id);
        self.pending_out.remove(id);
        self.established_in.remove(id);
        self.established_out.remove(id);
        self.guests.remove(id);
    }
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
        _: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.admit(id, Side::Outbound).map(|()| Vec::new())
    }

    // Established here means accepted by the behaviours polled so far; another may still refuse it, in which
    // case the swarm reports a listen or dial failure (handled below) and no `ConnectionEstablished`.
    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending_in.remove(&id);
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
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending_out.remove(&id);
        self.established_out.insert(id);
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
