//! Peer scoring: gossipsub's own score (with a heavy penalty per invalid message in a pool topic), plus an
//! application-level penalty for what gossipsub cannot see (bad sync responses, floods). A peer whose
//! penalty passes the ban threshold is disconnected and refused for a while.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::gossipsub::{PeerScoreParams, PeerScoreThresholds, TopicScoreParams};
use libp2p::PeerId;

/// Penalty for a message that fails validation (forged, malformed, expired, breaks the pool's rules).
pub const PENALTY_INVALID: u32 = 10;
/// Penalty for a message beyond the peer's rate limit.
pub const PENALTY_FLOOD: u32 = 1;
/// Penalty at which a peer is disconnected and banned.
pub const BAN_THRESHOLD: u32 = 100;
pub const BAN_DURATION: Duration = Duration::from_secs(600);

pub fn peer_score_params() -> PeerScoreParams {
    PeerScoreParams {
        // A localhost test net and NATed home nodes share IPs; do not penalise colocation.
        ip_colocation_factor_weight: 0.0,
        ..PeerScoreParams::default()
    }
}

pub fn thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    }
}

/// Score parameters of a pool or charter topic: only invalid deliveries count (P4), squared, so a handful of
/// forged messages takes a peer below the graylist threshold and its traffic is then dropped unread.
pub fn topic_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.99,
        ..TopicScoreParams::default()
    }
}

#[derive(Debug, Default)]
struct Record {
    penalty: u32,
    banned_until: Option<Instant>,
}

/// Our own ledger of peers' misbehaviour.
#[derive(Debug, Default)]
pub struct Reputation {
    peers: HashMap<PeerId, Record>,
}

impl Reputation {
    /// Adds a penalty; returns true when this pushes the peer over the ban threshold.
    pub fn penalise(&mut self, peer: &PeerId, points: u32, now: Instant) -> bool {
        let r = self.peers.entry(*peer).or_default();
        let was_banned = r.banned_until.is_some_and(|t| t > now);
        r.penalty = r.penalty.saturating_add(points);
        if r.penalty >= BAN_THRESHOLD && !was_banned {
            r.banned_until = Some(now + BAN_DURATION);
            return true;
        }
        false
    }

    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers
            .get(peer)
            .and_then(|r| r.banned_until)
            .is_some_and(|t| t > now)
    }

    pub fn penalty(&self, peer: &PeerId) -> u32 {
        self.peers.get(peer).map_or(0, |r| r.penalty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_invalid_messages_lead_to_a_ban() {
        let mut rep = Reputation::default();
        let p = PeerId::random();
        let t = Instant::now();
        for _ in 0..(BAN_THRESHOLD / PENALTY_INVALID - 1) {
            assert!(!rep.penalise(&p, PENALTY_INVALID, t));
        }
        assert!(rep.penalise(&p, PENALTY_INVALID, t));
        assert!(rep.is_banned(&p, t));
        assert!(!rep.is_banned(&p, t + BAN_DURATION));
        assert!(!rep.is_banned(&PeerId::random(), t));
    }
}
