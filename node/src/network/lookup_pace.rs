//! When a node with fewer connections than its target looks for more peers in the DHT (a `FIND_NODE` walk
//! towards a random key, then dials to what it found). Time and counts are passed in: no clock reads here.
//!
//! Why a pace: a node that cannot reach its target (a network smaller than the target, or every peer it finds
//! at its connection caps) would otherwise walk the DHT every maintenance tick for good, each walk tens of
//! requests that find nobody new. (Most of an idle node's DHT traffic at 100 simulated nodes turned out to be
//! kademlia's automatic bootstrap instead, now off: see behaviour.rs.) Slowing the walks down
//! unconditionally breaks small networks, where they are how nodes meet the ones that joined after them; so
//! the pace follows whether the walks lead anywhere.
//!
//! Invariants:
//! - At or above the target, no lookup is due, and the pace starts over.
//! - Below it, a lookup is due at once when the node's connection count differs from what it was at the last
//!   lookup (or there was none): a peer came or went, so the network around the node moved and a walk may
//!   find someone new. This includes the connections the last walk's own dials made, so a walk that led to a
//!   new connection is followed by another right away.
//! - While the count stays what it was, each walk found nobody the node could connect to, and the interval
//!   to the next doubles from `first` up to `max`.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LookupPace {
    first: Duration,
    max: Duration,
    /// The interval after the next lookup, and when that next lookup is due.
    every: Duration,
    next: Option<Instant>,
    /// The connection count at the last lookup; `None` when at the target or before the first.
    peers_then: Option<usize>,
}

impl LookupPace {
    pub fn new(first: Duration, max: Duration) -> Self {
        LookupPace {
            first,
            max,
            every: first,
            next: None,
            peers_then: None,
        }
    }

    /// Whether to start a lookup now, with `peers` connected and `target` wanted. Asked once per maintenance
    /// tick; a `true` counts as the lookup made.
    pub fn due(&mut self, peers: usize, target: usize, now: Instant) -> bool {
        if peers >= target {
            self.peers_then = None;
            self.next = None;
            self.every = self.first;
            return false;
        }
        if self.peers_then != Some(peers) {
            self.peers_then = Some(peers);
            self.every = self.first;
        } else if self.next.is_some_and(|t| now < t) {
            return false;
        }
        self.next = Some(now + self.every);
        self.every = (self.every * 2).min(self.max);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Named cases: the connection count seen at each tick (one tick a second), and the ticks at which a
    /// lookup is due.
    #[test]
    fn the_pace_follows_whether_lookups_lead_anywhere() {
        struct Case {
            name: &'static str,
            /// Connection count at ticks 0, 1, 2, ...
            peers: Vec<usize>,
            due_at: Vec<usize>,
        }
        let steady = |n: usize, len: usize| vec![n; len];
        let cases = [
            Case {
                name: "at the target: never",
                peers: steady(8, 100),
                due_at: vec![],
            },
            Case {
                // 2 s, then 4, 8, 16, 30 (capped): at 0, 2, 6, 14, 30, 60, 90.
                name: "below it with nobody new to meet: backs off to the cap",
                peers: steady(3, 100),
                due_at: vec![0, 2, 6, 14, 30, 60, 90],
            },
            Case {
                name: "each lookup leads to a connection: one per tick",
                peers: vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 8],
                due_at: vec![0, 1, 2, 3, 4, 5, 6, 7],
            },
            Case {
                name: "a peer leaves after a long quiet: at once, then the pace starts over",
                peers: [steady(5, 40), steady(4, 20)].concat(),
                due_at: vec![0, 2, 6, 14, 30, 40, 42, 46, 54],
            },
            Case {
                name: "back at the target and below it again: at once",
                peers: [steady(5, 20), steady(8, 5), steady(7, 5)].concat(),
                due_at: vec![0, 2, 6, 14, 25, 27],
            },
        ];
        for c in cases {
            let t0 = Instant::now();
            let mut pace = LookupPace::new(Duration::from_secs(2), Duration::from_secs(30));
            let due: Vec<usize> = c
                .peers
                .iter()
                .enumerate()
                .filter(|(t, &n)| pace.due(n, 8, t0 + Duration::from_secs(*t as u64)))
                .map(|(t, _)| t)
                .collect();
            assert_eq!(due, c.due_at, "{}", c.name);
        }
    }
}
