//! The light client's progress supervisor, as a pure machine: it is told what the running client did
//! (started, completed a handshake, made progress, warned) and what it sees (live peers, the client's header
//! tip, the peers' own tip, the wallet's tip), always with the time, and answers whether the client is
//! healthy or must be restarted, and after what back-off. It reads no clock and does no I/O; the driver in
//! [`crate::light`] does both.
//!
//! Invariants:
//! - A client that has completed no handshake and made no progress for `connect_timeout` is restarted
//!   ([`StallReason::NoPeer`]). A peer's `version` alone is not a connection: only a completed handshake
//!   (both `verack`s) counts, and until then the state is "connecting" (the library announces no
//!   transaction before it).
//! - A client that is behind (the peers' tip or its own header tip above the wallet's tip) and has made no
//!   progress for `stall_after` is stalled and restarted ([`StallReason::NoProgress`]), whatever state the
//!   client believes it is in.
//! - Restarts back off exponentially from `backoff_min` to `backoff_max`; the count of consecutive restarts
//!   resets only once a client reaches the tip.
//! - [`ChainHealth`] is what the operator sees (doctor, metrics, dashboard): state, peers, the three tips,
//!   seconds since progress, restarts, the last warning.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How the light client is supervised. The defaults are for real networks; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainTuning {
    /// How long a new client may take to complete a handshake with a peer.
    pub connect_timeout: Duration,
    /// How long a client that is behind may go without progress before it is restarted.
    pub stall_after: Duration,
    /// How often the peers are asked for their tip (a short `version` exchange of our own).
    pub probe_every: Duration,
    /// The first back-off after a restart; doubles per consecutive restart.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Handed to the client: how long a peer may take to answer one request.
    pub response_timeout: Duration,
    /// Handed to the client: how long a peer may take to accept the TCP connection.
    pub handshake_timeout: Duration,
    /// Off only to reproduce what an unsupervised client does (tests of upstream behaviour).
    pub supervise: bool,
}

impl Default for ChainTuning {
    fn default() -> Self {
        ChainTuning {
            connect_timeout: Duration::from_secs(45),
            stall_after: Duration::from_secs(90),
            probe_every: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            response_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            supervise: true,
        }
    }
}

/// What the chain source is doing, as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainState {
    /// No completed handshake with any peer yet.
    Connecting,
    /// Connected and catching up with the peers' tip.
    Syncing,
    /// The wallet is at the peers' tip.
    Synced,
    /// Behind with no progress; a restart is due or waiting out its back-off.
    Stalled,
}

impl ChainState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainState::Connecting => "connecting",
            ChainState::Syncing => "syncing",
            ChainState::Synced => "synced",
            ChainState::Stalled => "stalled",
        }
    }
}

/// Why a client was restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallReason {
    /// No handshake completed in time.
    NoPeer,
    /// Behind, and nothing moved for too long.
    NoProgress,
    /// The client stopped by itself.
    ClientStopped,
}

impl StallReason {
    pub fn describe(self) -> &'static str {
        match self {
            StallReason::NoPeer => "no peer completed a handshake in time",
            StallReason::NoProgress => "behind the peers and no progress",
            StallReason::ClientStopped => "the client stopped by itself",
        }
    }
}

/// A snapshot for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHealth {
    /// "compact block filters" or "bitcoind RPC".
    pub source: String,
    pub state: ChainState,
    /// Peers with a live connection (light client; 1 for a reachable bitcoind).
    pub peers: usize,
    /// The client's header tip (light client), or bitcoind's block count.
    pub header_tip: Option<u32>,
    /// The best tip a peer announced.
    pub peer_tip: Option<u32>,
    /// The wallet's own chain view.
    pub wallet_tip: u32,
    /// Seconds since the last progress (a handshake, headers, filters, blocks, an update).
    pub secs_since_progress: u64,
    /// Clients restarted by the supervisor since the wallet opened.
    pub restarts: u64,
    pub last_restart_reason: Option<StallReason>,
    /// The last warning the client or the supervisor gave.
    pub last_warning: Option<String>,
}

/// What the supervisor decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the client running.
    Keep,
    /// Stop the client now, start a new one after `after`.
    Restart {
        reason: StallReason,
        after: Duration,
    },
}

/// The supervisor's state across clients.
#[derive(Debug, Clone)]
pub struct Supervisor {
    tuning: ChainTuning,
    started: Option<Instant>,
    handshaken: bool,
    last_progress: Option<Instant>,
    peers: usize,
    header_tip: Option<u32>,
    peer_tip: Option<u32>,
    wallet_tip: u32,
    /// Restarts since a client last reached the tip.
    consecutive: u32,
    restarts: u64,
    last_restart_reason: Option<StallReason>,
    last_warning: Option<String>,
    stalled: bool,
}

impl Supervisor {
    pub fn new(tuning: ChainTuning, wallet_tip: u32) -> Supervisor {
        Supervisor {
            tuning,
            started: None,
            handshaken: false,
            last_progress: None,
            peers: 0,
            header_tip: None,
            peer_tip: None,
            wallet_tip,
            consecutive: 0,
            restarts: 0,
            last_restart_reason: None,
            last_warning: None,
            stalled: false,
        }
    }

    pub fn tuning(&self) -> &ChainTuning {
        &self.tuning
    }

    /// A new client was started.
    pub fn client_started(&mut self, now: Instant) {
        self.started = Some(now);
        self.handshaken = false;
        self.last_progress = Some(now);
        self.peers = 0;
        self.header_tip = None;
        self.stalled = false;
    }

    /// The client completed a version handshake (both `verack`s) with a peer. Not progress: a client that
    /// keeps reconnecting without moving forward is stalled all the same.
    pub fn handshake(&mut self) {
        self.handshaken = true;
    }

    /// Whether the running client has completed a handshake.
    pub fn connected(&self) -> bool {
        self.handshaken
    }

    /// The client moved forward (headers, filter headers, filters, a block, an update).
    pub fn progress(&mut self, now: Instant) {
        self.last_progress = Some(now);
    }

    pub fn warning(&mut self, text: String) {
        self.last_warning = Some(text);
    }

    /// What was observed; any tip that moves up counts as progress.
    pub fn observe(
        &mut self,
        peers: usize,
        header_tip: Option<u32>,
        wallet_tip: u32,
        now: Instant,
    ) {
        let moved = header_tip.is_some_and(|h| self.header_tip.is_none_or(|old| h > old))
            || wallet_tip > self.wallet_tip;
        if moved {
            self.last_progress = Some(now);
        }
        self.peers = peers;
        if header_tip.is_some() {
            self.header_tip = header_tip;
        }
        self.wallet_tip = wallet_tip;
    }

    /// A peer announced this tip (from a probe of our own).
    pub fn peer_tip(&mut self, tip: u32) {
        // A probe answer is the peer's current height: take it as it is, even if lower (a reorg, a
        // different peer), so one stale answer cannot keep the client "behind" forever.
        self.peer_tip = Some(tip);
    }

    /// The highest tip anyone has shown us.
    fn target(&self) -> u32 {
        self.peer_tip.unwrap_or(0).max(self.header_tip.unwrap_or(0))
    }

    fn behind(&self) -> bool {
        self.target() > self.wallet_tip
    }

    fn backoff(&self) -> Duration {
        let factor = 1u32
            .checked_shl(self.consecutive.min(20))
            .unwrap_or(u32::MAX);
        self.tuning
            .backoff_min
            .saturating_mul(factor)
            .min(self.tuning.backoff_max)
    }

    /// The decision at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let Some(started) = self.started else {
            return Verdict::Keep;
        };
        if !self.behind() && self.handshaken {
            self.consecutive = 0;
            self.stalled = false;
        }
        if !self.tuning.supervise {
            return Verdict::Keep;
        }
        let idle = now.saturating_duration_since(self.last_progress.unwrap_or(started));
        let reason = if !self.handshaken && idle >= self.tuning.connect_timeout {
            Some(StallReason::NoPeer)
        } else if self.behind() && idle >= self.tuning.stall_after {
            Some(StallReason::NoProgress)
        } else {
            None
        };
        match reason {
            Some(r) => self.restart(r),
            None => Verdict::Keep,
        }
    }

    /// The client stopped by itself (or must be replaced): restart with back-off.
    pub fn restart(&mut self, reason: StallReason) -> Verdict {
        let after = self.backoff();
        self.consecutive = self.consecutive.saturating_add(1);
        self.restarts += 1;
        self.last_restart_reason = Some(reason);
        self.stalled = true;
        self.started = None;
        Verdict::Restart { reason, after }
    }

    pub fn health(&self, source: &str, now: Instant) -> ChainHealth {
        let state = if self.stalled {
            ChainState::Stalled
        } else if !self.handshaken {
            ChainState::Connecting
        } else if self.behind() {
            ChainState::Syncing
        } else {
            ChainState::Synced
        };
        ChainHealth {
            source: source.to_string(),
            state,
            peers: self.peers,
            header_tip: self.header_tip,
            peer_tip: self.peer_tip,
            wallet_tip: self.wallet_tip,
            secs_since_progress: self
                .last_progress
                .map_or(0, |t| now.saturating_duration_since(t).as_secs()),
            restarts: self.restarts,
            last_restart_reason: self.last_restart_reason,
            last_warning: self.last_warning.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuning() -> ChainTuning {
        ChainTuning {
            connect_timeout: Duration::from_secs(10),
            stall_after: Duration::from_secs(20),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            ..ChainTuning::default()
        }
    }

    /// One step of a scenario.
    enum Step {
        Start,
        Handshake,
        Progress,
        /// peers, header tip, wallet tip
        Observe(usize, Option<u32>, u32),
        PeerTip(u32),
        /// Check at this point and expect the verdict and the state.
        Expect(Verdict, ChainState),
    }
    use Step::*;

    fn restart(reason: StallReason, secs: u64) -> Verdict {
        Verdict::Restart {
            reason,
            after: Duration::from_secs(secs),
        }
    }

    /// Runs named scenarios; each step is (seconds since the scenario began, step).
    #[test]
    fn supervisor_cases() {
        let cases: Vec<(&str, Vec<(u64, Step)>)> =
            vec![
            (
                "a client that connects and reaches the tip is kept",
                vec![
                    (0, Start),
                    (1, Handshake),
                    (2, Observe(1, Some(100), 100)),
                    (2, PeerTip(100)),
                    (500, Expect(Verdict::Keep, ChainState::Synced)),
                ],
            ),
            (
                "a peer's version without a handshake is still connecting, then restarted",
                vec![
                    (0, Start),
                    (1, Observe(1, None, 100)),
                    (9, Expect(Verdict::Keep, ChainState::Connecting)),
                    (10, Expect(restart(StallReason::NoPeer, 1), ChainState::Stalled)),
                ],
            ),
            (
                "headers flowing without a completed handshake: connecting, but not restarted",
                vec![
                    (0, Start),
                    (3, Observe(1, Some(50), 0)),
                    (9, Observe(1, Some(100), 0)),
                    (15, Expect(Verdict::Keep, ChainState::Connecting)),
                    (19, Expect(restart(StallReason::NoPeer, 1), ChainState::Stalled)),
                ],
            ),
            (
                "behind with no progress (an unanswered request with no timer left) is restarted",
                vec![
                    (0, Start),
                    (1, Handshake),
                    (2, Observe(1, Some(105), 100)),
                    (21, Expect(Verdict::Keep, ChainState::Syncing)),
                    (22, Expect(restart(StallReason::NoProgress, 1), ChainState::Stalled)),
                ],
            ),
            (
                "progress resets the stall clock",
                vec![
                    (0, Start),
                    (1, Handshake),
                    (2, Observe(1, Some(105), 100)),
                    (15, Progress),
                    (30, Expect(Verdict::Keep, ChainState::Syncing)),
                    (35, Expect(restart(StallReason::NoProgress, 1), ChainState::Stalled)),
                ],
            ),
            (
                "a rising wallet tip is progress",
                vec![
                    (0, Start),
                    (1, Handshake),
                    (2, Observe(1, Some(110), 100)),
                    (15, Observe(1, Some(110), 104)),
                    (30, Expect(Verdict::Keep, ChainState::Syncing)),
                ],
            ),
            (
                "the peers' tip ahead of our headers (a stuck getheaders) counts as behind",
                vec![
                    (0, Start),
                    (1, Handshake),
                    (2, Observe(1, Some(100), 100)),
                    (3, PeerTip(101)),
                    (21, Expect(Verdict::Keep, ChainState::Syncing)),
                    (22, Expect(restart(StallReason::NoProgress, 1), ChainState::Stalled)),
                ],
            ),
            (
                "at the tip, a quiet chain is not a stall",
                vec![
                    (0, Start),
                    (1, Handshake),
                    (2, Observe(1, Some(100), 100)),
                    (3, PeerTip(100)),
                    (3600, Expect(Verdict::Keep, ChainState::Synced)),
                ],
            ),
            (
                "restarts back off exponentially up to the maximum",
                vec![
                    (0, Start),
                    (10, Expect(restart(StallReason::NoPeer, 1), ChainState::Stalled)),
                    (11, Start),
                    (21, Expect(restart(StallReason::NoPeer, 2), ChainState::Stalled)),
                    (23, Start),
                    (33, Expect(restart(StallReason::NoPeer, 4), ChainState::Stalled)),
                    (37, Start),
                    (47, Expect(restart(StallReason::NoPeer, 8), ChainState::Stalled)),
                    (55, Start),
                    (65, Expect(restart(StallReason::NoPeer, 8), ChainState::Stalled)),
                ],
            ),
            (
                "reaching the tip resets the back-off",
                vec![
                    (0, Start),
                    (10, Expect(restart(StallReason::NoPeer, 1), ChainState::Stalled)),
                    (11, Start),
                    (21, Expect(restart(StallReason::NoPeer, 2), ChainState::Stalled)),
                    (23, Start),
                    (24, Handshake),
                    (24, Observe(1, Some(100), 100)),
                    (25, Expect(Verdict::Keep, ChainState::Synced)),
                    (26, PeerTip(120)),
                    (50, Expect(restart(StallReason::NoProgress, 1), ChainState::Stalled)),
                ],
            ),
        ];
        for (name, steps) in cases {
            let t0 = Instant::now();
            let mut s = Supervisor::new(tuning(), 100);
            for (i, (at, step)) in steps.into_iter().enumerate() {
                let now = t0 + Duration::from_secs(at);
                match step {
                    Start => s.client_started(now),
                    Handshake => s.handshake(),
                    Progress => s.progress(now),
                    Observe(p, h, w) => s.observe(p, h, w, now),
                    PeerTip(t) => s.peer_tip(t),
                    Expect(v, state) => {
                        assert_eq!(s.check(now), v, "{name}: step {i} verdict");
                        assert_eq!(s.health("test", now).state, state, "{name}: step {i} state");
                    }
                }
            }
        }
    }

    #[test]
    fn unsupervised_never_restarts() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(
            ChainTuning {
                supervise: false,
                ..tuning()
            },
            100,
        );
        s.client_started(t0);
        assert_eq!(s.check(t0 + Duration::from_secs(3600)), Verdict::Keep);
    }

    #[test]
    fn health_reports_restarts_and_the_reason() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(tuning(), 100);
        s.client_started(t0);
        s.check(t0 + Duration::from_secs(10));
        let h = s.health("compact block filters", t0 + Duration::from_secs(10));
        assert_eq!(h.restarts, 1);
        assert_eq!(h.last_restart_reason, Some(StallReason::NoPeer));
        assert!(
            h.last_warning.is_none(),
            "a restart is not a warning of its own"
        );
    }
}
