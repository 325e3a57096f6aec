//! Peer scoring: gossipsub's own score (with a heavy penalty per invalid message in a pool topic), plus an
//! application-level penalty for what gossipsub cannot see (bad sync responses, floods). A peer whose
//! penalty passes the ban threshold, or whose gossipsub score falls below the graylist threshold, is
//! disconnected and refused for a while.
//!
//! Invariants:
//! - Penalties are consequences of what the *connected peer* did that an honest relay never does (send bytes
//!   that do not decode, forged signatures, sync answers that break the protocol, floods past the per-peer
//!   rate); what an honest relay may pass on (stale versions, offers over a pool's cap as seen from here) is
//!   dropped without penalty, and per-origin limits live in `origin.rs`.
//! - Penalties decay: they halve every [`PENALTY_HALF_LIFE`], so an honest peer's occasional fault fades and
//!   only a sustained rate of faults reaches the threshold.
//! - A gossip frame the node refuses unread (over the frame limit, or not gossipsub) bans its sender at once:
//!   no honest peer sends one, and points could never accrue for frames that are never read.
//! - A ban lasts [`BAN_DURATION`] the first time and doubles with each further ban of the same peer while
//!   its record is held, up to [`MAX_BAN`]; a banned peer is disconnected at once and its new connections
//!   are closed as soon as they are established.
//! - Memory: a record whose penalty has decayed below one point and whose last ban ended over [`MAX_BAN`]
//!   ago is dropped at [`Reputation::prune`]; at most [`MAX_RECORDS`] are held, the least penalised dropped first (a banned
//!   peer is never dropped before its ban ends).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::gossipsub::{PeerScoreParams, PeerScoreThresholds, TopicScoreParams};
use libp2p::PeerId;

/// Penalty for a message that fails validation (forged, malformed, expired, breaks the pool's rules).
pub const PENALTY_INVALID: u32 = 10;
/// Penalty for a message beyond the peer's rate limit.
pub const PENALTY_FLOOD: u32 = 1;
/// Penalty for a sync answer that breaks the protocol (wrong pool, no progress, over-long, unasked).
pub const PENALTY_BAD_SYNC: u32 = 25;
/// Penalty at which a peer is disconnected and banned.
pub const BAN_THRESHOLD: u32 = 100;
/// A first ban's length; each further ban of the same peer doubles it.
pub const BAN_DURATION: Duration = Duration::from_secs(600);
/// The longest ban.
pub const MAX_BAN: Duration = Duration::from_secs(24 * 3600);
/// Penalty points halve this often.
pub const PENALTY_HALF_LIFE: Duration = Duration::from_secs(600);
/// Most peer records held.
pub const MAX_RECORDS: usize = 10_000;

/// Gossipsub's graylist threshold: below it gossipsub drops a peer's traffic unread, so our own checks would
/// never see it again. Such a peer is banned here instead of being left connected.
pub const GRAYLIST_THRESHOLD: f64 = -80.0;

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
        graylist_threshold: GRAYLIST_THRESHOLD,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    }
}

/// Score parameters of a pool or charter topic: only invalid deliveries count (P4), squared, so a handful of
/// forged messages takes a peer below the graylist threshold (and so to a ban, see [`GRAYLIST_THRESHOLD`]).
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

#[derive(Debug, Clone)]
struct Record {
    /// Penalty points as of `at`.
    penalty: f64,
    at: Instant,
    banned_until: Option<Instant>,
    /// Bans so far (the next one lasts `BAN_DURATION * 2^bans`).
    bans: u32,
}

fn decayed(points: f64, since: Instant, now: Instant) -> f64 {
    let age = now.saturating_duration_since(since).as_secs_f64();
    points * 0.5f64.powf(age / PENALTY_HALF_LIFE.as_secs_f64())
}

impl Record {
    fn penalty_at(&self, now: Instant) -> f64 {
        decayed(self.penalty, self.at, now)
    }
    fn banned_at(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| t > now)
    }
}

/// A ban just imposed, for the log and the caller's disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banned {
    pub until: Instant,
    pub length: Duration,
}

/// Our own ledger of peers' misbehaviour.
#[derive(Debug, Default)]
pub struct Reputation {
    peers: HashMap<PeerId, Record>,
}

impl Reputation {
    /// Adds a penalty; returns the ban when this pushes the peer over the threshold.
    pub fn penalise(&mut self, peer: &PeerId, points: u32, now: Instant) -> Option<Banned> {
        if !self.peers.contains_key(peer) && self.peers.len() >= MAX_RECORDS {
            self.prune(now);
            if self.peers.len() >= MAX_RECORDS {
                self.evict_least(now);
            }
        }
        let r = self.peers.entry(*peer).or_insert(Record {
            penalty: 0.0,
            at: now,
            banned_until: None,
            bans: 0,
        });
        r.penalty = r.penalty_at(now) + points as f64;
        r.at = now;
        if r.penalty >= BAN_THRESHOLD as f64 && !r.banned_at(now) {
            return Some(Self::impose(r, now));
        }
        None
    }

    /// Bans a peer outright (gossipsub graylisted it); returns the ban unless it already was banned.
    pub fn ban(&mut self, peer: &PeerId, now: Instant) -> Option<Banned> {
        let r = self.peers.entry(*peer).or_insert(Record {
            penalty: 0.0,
            at: now,
            banned_until: None,
            bans: 0,
        });
        if r.banned_at(now) {
            return None;
        }
        r.penalty = r.penalty_at(now).max(BAN_THRESHOLD as f64);
        r.at = now;
        Some(Self::impose(r, now))
    }

    fn impose(r: &mut Record, now: Instant) -> Banned {
        let length = BAN_DURATION
            .saturating_mul(1u32 << r.bans.min(16))
            .min(MAX_BAN);
        r.bans = r.bans.saturating_add(1);
        let until = now + length;
        r.banned_until = Some(until);
        // The slate is clean when the ban ends: a further fault counts from zero (and bans for longer).
        r.penalty = 0.0;
        Banned { until, length }
    }

    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers.get(peer).is_some_and(|r| r.banned_at(now))
    }

    /// The peer's penalty points now, rounded down.
    pub fn penalty(&self, peer: &PeerId, now: Instant) -> u32 {
        self.peers.get(peer).map_or(0, |r| r.penalty_at(now) as u32)
    }

    /// Drops the records that no longer matter: penalty decayed below a point, and no ban running or ended
    /// within the last [`MAX_BAN`] (so a repeat offender's next ban is longer). A peer that stayed clean that
    /// long starts over.
    pub fn prune(&mut self, now: Instant) {
        self.peers.retain(|_, r| {
            r.banned_until.is_some_and(|t| t + MAX_BAN > now) || r.penalty_at(now) >= 1.0
        });
    }

    fn evict_least(&mut self, now: Instant) {
        let mut open: Vec<(f64, PeerId)> = self
            .peers
            .iter()
            .filter(|(_, r)| !r.banned_at(now))
            .map(|(p, r)| (r.penalty_at(now), *p))
            .collect();
        open.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = open.len().div_ceil(2);
        for (_, p) in open.into_iter().take(n) {
            self.peers.remove(&p);
        }
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Every peer with a record (penalised recently or banned).
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// Why a peer's unreadable gossip frame bans it, for the log. Such a frame (over the frame limit both sides
/// configure, or bytes that are not gossipsub) is never read and no honest peer sends it, so it bans at once
/// instead of adding points.
pub fn frame_fault(e: libp2p::gossipsub::FrameError) -> &'static str {
    match e {
        libp2p::gossipsub::FrameError::TooLarge => "sent a gossip frame over the frame limit",
        libp2p::gossipsub::FrameError::Malformed => "sent a gossip frame that is not gossipsub",
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
            assert_eq!(rep.penalise(&p, PENALTY_INVALID, t), None);
        }
        let ban = rep.penalise(&p, PENALTY_INVALID, t).expect("banned");
        assert_eq!(ban.length, BAN_DURATION);
        assert!(rep.is_banned(&p, t));
        assert!(!rep.is_banned(&p, t + BAN_DURATION));
        assert!(!rep.is_banned(&PeerId::random(), t));
    }

    #[test]
    fn penalties_decay_so_only_a_sustained_rate_of_faults_bans() {
        let mut rep = Reputation::default();
        let p = PeerId::random();
        let t0 = Instant::now();
        // One invalid message every half-life, for a day: never banned (the penalty settles near 20).
        for i in 0..144u32 {
            let t = t0 + PENALTY_HALF_LIFE * i;
            assert_eq!(rep.penalise(&p, PENALTY_INVALID, t), None, "fault {i}");
        }
        assert!(rep.penalty(&p, t0 + PENALTY_HALF_LIFE * 144) < 2 * PENALTY_INVALID + 1);
        // Ten in a row are a ban.
        let t = t0 + PENALTY_HALF_LIFE * 200;
        let bans = (0..10)
            .filter_map(|_| rep.penalise(&p, PENALTY_INVALID, t))
            .count();
        assert_eq!(bans, 1);
    }

    #[test]
    fn repeat_offenders_are_banned_for_longer_up_to_a_day() {
        let mut rep = Reputation::default();
        let p = PeerId::random();
        let mut t = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..10 {
            let b = rep.ban(&p, t).expect("not banned yet");
            assert_eq!(rep.ban(&p, t), None, "already banned");
            lengths.push(b.length);
            t = b.until;
        }
        assert_eq!(lengths[0], BAN_DURATION);
        assert_eq!(lengths[1], BAN_DURATION * 2);
        assert_eq!(lengths[2], BAN_DURATION * 4);
        assert_eq!(*lengths.last().unwrap(), MAX_BAN);
    }

    #[test]
    fn records_are_bounded_and_bans_outlive_the_bound() {
        let mut rep = Reputation::default();
        let t = Instant::now();
        let villain = PeerId::random();
        rep.ban(&villain, t);
        for _ in 0..(MAX_RECORDS * 3) {
            rep.penalise(&PeerId::random(), PENALTY_FLOOD, t);
            assert!(rep.len() <= MAX_RECORDS);
        }
        assert!(rep.is_banned(&villain, t), "a running ban is never evicted");
        // Once decayed, the records are gone.
        rep.prune(t + PENALTY_HALF_LIFE * 2);
        assert_eq!(rep.len(), 1, "only the banned peer is left");
        rep.prune(t + BAN_DURATION + MAX_BAN);
        assert!(rep.is_empty());
    }
}
