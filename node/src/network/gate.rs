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
//! - The gate refuses only what `connection_limits` would refuse later: an outbound connection while
//!   established + pending outbound connections fill `max_connections`; an inbound one while established
//!   inbound + pending inbound fill `max_incoming`, or established + pending fill `max_connections`. (Counting
//!   the pending ones means a burst of dials cannot all start and then all but one be refused.) So the set of
//!   connections a node ends up with is what the caps allowed before; only the wasted handshakes go.
//! - The decision ([`Counts::admit`]) is pure; the behaviour only keeps the counts from the swarm's events.
//! - Every pending connection is forgotten when it is established, fails, or is refused by another
//!   behaviour, so the counts cannot drift upwards and block a node for good.

use std::collections::HashSet;
use std::convert::Infallible;
use std::task::{Context, Poll};

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
}

/// Connections established and pending, by side.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub established_in: u32,
    pub established_out: u32,
    pub pending_in: u32,
    pub pending_out: u32,
}

impl Counts {
    /// Whether a new connection on `side` may start under the caps `max_total` and `max_incoming`.
    pub fn admit(&self, side: Side, max_total: u32, max_incoming: u32) -> Result<(), Full> {
        let all =
            self.established_in + self.established_out + self.pending_in + self.pending_out;
        if all >= max_total {
            return Err(Full::Total { max: max_total });
        }
        if side == Side::Inbound && self.established_in + self.pending_in >= max_incoming {
            return Err(Full::Inbound { max: max_incoming });
        }
        Ok(())
    }
}

/// The gate as a libp2p behaviour; put it beside `connection_limits` (which still enforces the caps on
/// established connections, the per-peer one included).
pub struct Behaviour {
    max_total: u32,
    max_incoming: u32,
    established_in: HashSet<ConnectionId>,
    established_out: HashSet<ConnectionId>,
    pending_in: HashSet<ConnectionId>,
    pending_out: HashSet<ConnectionId>,
    refused: u64,
}

impl Behaviour {
    pub fn new(max_total: u32, max_incoming: u32) -> Self {
        Behaviour {
            max_total,
            max_incoming: max_incoming.min(max_total),
            established_in: HashSet::new(),
            established_out: HashSet::new(),
            pending_in: HashSet::new(),
            pending_out: HashSet::new(),
            refused: 0,
        }
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
        if let Err(full) = self.counts().admit(side, self.max_total, self.max_incoming) {
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
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending_in.remove(&id);
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

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, e: THandlerOutEvent<Self>) {
        match e {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Named cases: (what, counts, side, max total, max incoming, expected).
    #[test]
    fn admission_follows_the_caps_counting_pending_connections() {
        let c = |ei, eo, pi, po| Counts {
            established_in: ei,
            established_out: eo,
            pending_in: pi,
            pending_out: po,
        };
        let cases = [
            ("empty node dials", c(0, 0, 0, 0), Side::Outbound, 64, 48, Ok(())),
            ("empty node accepts", c(0, 0, 0, 0), Side::Inbound, 64, 48, Ok(())),
            ("one below the cap", c(40, 23, 0, 0), Side::Outbound, 64, 48, Ok(())),
            ("at the cap: no dial", c(40, 24, 0, 0), Side::Outbound, 64, 48, Err(Full::Total { max: 64 })),
            ("at the cap: no accept", c(40, 24, 0, 0), Side::Inbound, 64, 48, Err(Full::Total { max: 64 })),
            ("pending dials fill the cap", c(10, 10, 0, 44), Side::Outbound, 64, 48, Err(Full::Total { max: 64 })),
            ("pending accepts fill the cap", c(10, 10, 44, 0), Side::Outbound, 64, 48, Err(Full::Total { max: 64 })),
            ("inbound full, dialing still allowed", c(48, 0, 0, 0), Side::Outbound, 64, 48, Ok(())),
            ("inbound full: no accept", c(48, 0, 0, 0), Side::Inbound, 64, 48, Err(Full::Inbound { max: 48 })),
            ("inbound pending fill it", c(40, 0, 8, 0), Side::Inbound, 64, 48, Err(Full::Inbound { max: 48 })),
            ("outbound do not fill inbound", c(0, 60, 0, 0), Side::Inbound, 64, 48, Ok(())),
        ];
        for (name, counts, side, total, incoming, want) in cases {
            assert_eq!(counts.admit(side, total, incoming), want, "{name}");
        }
    }
}
