//! `xov-testnet gossip-sim`: many xov nodes in one process, to see gossip at a scale that separate processes
//! cannot reach on a small machine (50 processes is what 2 cores hold; see `gossip_load.rs`).
//!
//! Each simulated node runs the node's own network task (`xov_node::network::start_over`: the real libp2p
//! behaviour with gossipsub, kademlia, identify, sync; the real validation; its own `Market` with the real
//! offer book over its own RocksDB store), exactly as the daemon runs it, except for the transport: libp2p's
//! memory transport with noise and yamux on top, instead of TCP/QUIC.
//!
//! Invariants of the simulation:
//! - Latency: every link has a fixed one-way delay, the same both ways, drawn from `[delay_min, delay_max]` by
//!   a hash of the two peer ids (so a link keeps its delay across reconnections). It is applied to every byte
//!   *read* from each multiplexed substream ([`Delayed`]): a byte written at `t` is handed to the reader at
//!   `t + delay`, in order. Everything above yamux (multistream-select, gossipsub frames, sync, pings) pays
//!   it; the noise and yamux handshakes at connection set-up do not. Bandwidth is not limited.
//! - Bytes: every byte written on a node's connections (noise and yamux framing included, as the kernel's
//!   `bytes_sent` counts TCP payload in `gossip_load.rs`) is counted ([`Counted`]), for all nodes together.
//! - Churn: a leaving node is stopped as a killed process is (its network task ends, its connections drop);
//!   a joining node is a new one (fresh identity, empty store) that finds the network through three random
//!   live nodes as bootstrap peers, and gets the book through the node's own sync.
//! - Spread: an offer counts as arrived at a node when the node's book holds it, seen by polling every book
//!   every `poll`; so each figure is an upper bound within one poll interval. Only nodes live when it was
//!   published count (not its publisher); nodes that leave before it arrives are counted apart.
//! - Time is the wall clock: the nodes share the machine's cores, so when they need more CPU than it has, the
//!   delays grow as they would on overloaded hosts. The report gives the CPU used, to tell which happened.
//! - Time dilation (`time_scale` k > 1): every time constant on the spread path runs k times slower (links,
//!   publish and churn intervals, phases and deadlines, the node's resync, gossipsub's heartbeat, backoffs,
//!   caches and queues, the offers' lifetime), and the reported spreads and convergence are wall time ÷ k:
//!   each node gets k times the CPU per protocol second, as on a host k times larger. Not stretched:
//!   libp2p's own timers (ping, identify, kademlia, idle connections, handshakes), peer scoring's decay, and
//!   the node's own maintenance timers (the pool-peer lookup every 2 s, pool announcements, the 30 s sync
//!   request timeout). The first fire as often per wall second, so the host carries more of them per
//!   protocol second, not fewer; the last make a joining node look for pool peers up to k times as often
//!   per protocol second, which can flatter the churn phase's figures (not the steady phase's: no node joins
//!   in it).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerBox, StreamMuxerEvent, SubstreamBox};
use libp2p::core::transport::{MemoryTransport, Transport};
use libp2p::core::upgrade;
use libp2p::{identity, noise, yamux, Multiaddr, PeerId};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use xov_node::clock::unix_now;
use xov_node::config::NetworkConfig;
use xov_node::market::{Market, MarketError, OfferSpec};
use xov_node::network::{self, IncomingLease, NetworkError, NetworkHandle, OtherTransport};
use xov_node::store::{Store, StoreError};
use xov_protocol::{Chain, Keypair, OfferKey, PoolId, PUBLIC_POOL_NAME};

use crate::proc_stats::{self, percentile, sorted};

#[derive(Debug, Error)]
pub enum SimError {
    #[error("cannot open node {slot}'s store: {source}")]
    Store { slot: usize, source: StoreError },
    #[error("node {slot}'s market: {source}")]
    Market { slot: usize, source: MarketError },
    #[error("node {slot}'s network: {source}")]
    Network { slot: usize, source: NetworkError },
    #[error("node {slot}'s transport: {what}")]
    Transport { slot: usize, what: String },
    #[error("{what} not reached within {secs} s")]
    Deadline { what: String, secs: u64 },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("no live node to publish from")]
    NoNode,
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Opts {
    pub nodes: usize,
    /// Offers published in the steady phase (no churn): spread and bytes.
    pub offers: usize,
    /// Offers per second, from random live nodes, in both phases.
    pub rate: f64,
    /// Fraction of the nodes that leave (and as many that join) per minute in the churn phase.
    pub churn_per_min: f64,
    /// Length of the churn phase (offers keep being published through it).
    pub churn_secs: f64,
    /// One-way delay of a link, drawn per link in this range.
    pub delay_min: Duration,
    pub delay_max: Duration,
    /// Bootstrap peers of each node: random live nodes started before it.
    pub bootstrap: usize,
    /// `[network] max_connections` of every node (None: the node's default, 64); when lowered, `max_incoming` is half of it.
    pub max_connections: Option<u32>,
    /// Window before the steady phase, with nothing published, whose bytes are subtracted as idle traffic.
    pub idle_secs: f64,
    /// How long after the churn stops every live node's book must equal the set of offers published.
    pub settle_secs: f64,
    /// How often every book is looked at.
    pub poll: Duration,
    /// Where the nodes' stores go (a tmpfs keeps the disk out of it).
    pub root: PathBuf,
    /// Seeds the node keys, the publishers, the churn and the link delays.
    pub seed: u64,
    /// Print progress lines.
    pub verbose: bool,
    /// Time dilation: every time constant on the spread path runs `time_scale` times slower (the links'
    /// delays, the publish and churn intervals, the phases' lengths and deadlines, the node's resync interval,
    /// and gossipsub's time constants: see `behaviour::Options::time_scale`), so each node gets `time_scale`
    /// times the CPU per protocol second. The settings above are protocol time, but for `poll` (wall time).
    /// The summary's spreads, `lost_after` and `converged_after` are protocol time (wall time / `time_scale`);
    /// start-up, CPU, idle bytes and idle handshakes are per wall second. 1: no dilation.
    pub time_scale: u32,
}

impl Opts {
    /// The scenario at `nodes` nodes: 100 offers at 2/s, 5 % churn per minute for 2 minutes, links of
    /// 10–150 ms one way.
    pub fn new(nodes: usize, root: PathBuf) -> Opts {
        Opts {
            nodes,
            offers: 100,
            rate: 2.0,
            churn_per_min: 0.05,
            churn_secs: 120.0,
            delay_min: Duration::from_millis(10),
            delay_max: Duration::from_millis(150),
            bootstrap: 3,
            max_connections: None,
            idle_secs: 10.0,
            settle_secs: 60.0,
            poll: Duration::from_millis(20),
            root,
            seed: 1,
            verbose: true,
            time_scale: 1,
        }
    }
}

impl Opts {
    /// These settings in wall time, for a run dilated by `time_scale` (see [`Opts::time_scale`]).
    fn dilated(self) -> Opts {
        let k = self.time_scale.max(1);
        let kf = f64::from(k);
        Opts {
            rate: self.rate / kf,
            churn_per_min: self.churn_per_min / kf,
            churn_secs: self.churn_secs * kf,
            delay_min: self.delay_min * k,
            delay_max: self.delay_max * k,
            idle_secs: self.idle_secs * kf,
            settle_secs: self.settle_secs * kf,
            ..self
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub nodes: usize,
    /// Every node's `max_connections` and `max_incoming`.
    pub caps: (u32, u32),
    /// Spread (publish to book) over node×offer, seconds, steady phase: p50, p90, p99, max.
    pub spread: [f64; 4],
    /// The same during churn.
    pub spread_churn: [f64; 4],
    /// (node, offer) pairs never arrived by the end of their phase (among nodes still live).
    pub missed: usize,
    pub missed_churn: usize,
    /// Pairs whose node left before the offer reached it.
    pub left_before: usize,
    /// Offers whose publisher left within [`ORPHAN_WINDOW`] of publishing them and before they reached any
    /// other node: gone from the network with it, so neither their pairs count as missed nor do books have to
    /// hold them. (One that reached nobody for longer is a gossip failure and counts as one.)
    pub lost_with_publisher: usize,
    /// For each of those, seconds from its publication to its publisher leaving.
    pub lost_after: Vec<f64>,
    /// Bytes sent per node per offer in the steady phase, net of idle traffic, and gross.
    pub bytes_per_node_offer: f64,
    pub bytes_gross: f64,
    /// Idle bytes per node per second.
    pub idle_bytes_per_node_sec: f64,
    /// Connections that completed their noise handshake while idle, per node per minute (each costs a few
    /// X25519 operations on both sides).
    pub idle_handshakes_per_node_min: f64,
    /// Idle bytes per node per second by protocol (substream payload, without yamux and noise framing),
    /// largest first.
    pub idle_by_protocol: Vec<(String, f64)>,
    /// The signed offer's size, and gossipsub's mesh degree D.
    pub offer_bytes: usize,
    pub mesh_degree: usize,
    /// Nodes that left and joined in the churn phase.
    pub churned: usize,
    /// Live nodes whose book equals the offers published, out of `live`, once settled.
    pub converged: usize,
    pub live: usize,
    /// Offers missing from, and extra in, the books that did not converge (summed).
    pub missing: usize,
    pub extra: usize,
    /// Seconds from the end of churn until every book converged (None: not within `settle_secs`).
    pub converged_after: Option<f64>,
    /// Offers published in all (warm-up, steady, churn).
    pub offers_total: usize,
    /// Process RSS at the end and its peak, MiB.
    pub rss_mib: f64,
    pub hwm_mib: f64,
    /// CPU used per wall second (cores) in the steady and churn phases, and while idle.
    pub cores_idle: f64,
    pub cores_steady: f64,
    pub cores_churn: f64,
    /// Connected peers per node at the start of the steady phase: min, median, max.
    pub peers: [usize; 3],
    /// Seconds to start every node and see each with enough pool peers (wall time).
    pub startup_secs: f64,
    /// The run's time dilation ([`Opts::time_scale`]): spreads and convergence are protocol time.
    pub time_scale: u32,
}

impl Summary {
    /// The bytes limit: three times D times the offer's size.
    pub fn bytes_limit(&self) -> f64 {
        3.0 * self.mesh_degree as f64 * self.offer_bytes as f64
    }

    pub fn text(&self) -> String {
        let s = |v: &[f64; 4]| {
            format!(
                "p50 {:.3} s, p90 {:.3} s, p99 {:.3} s, max {:.3} s",
                v[0], v[1], v[2], v[3]
            )
        };
        let mut out = String::new();
        out += &format!(
            "nodes: {} (max_connections {}, max_incoming {})\n",
            self.nodes, self.caps.0, self.caps.1
        );
        if self.time_scale > 1 {
            out += &format!(
                "time dilation ×{k}: links, publish and churn intervals, the node's resync and gossipsub's time constants ran {k}× slower; spreads and convergence below are protocol time (wall ÷ {k}), CPU and idle bytes are per wall second (so each node had {k}× the CPU per protocol second)\n",
                k = self.time_scale
            );
        }
        out += &format!(
            "startup: {:.1} s; connected peers per node min/median/max {}/{}/{}\n",
            self.startup_secs, self.peers[0], self.peers[1], self.peers[2]
        );
        out += &format!(
            "spread, steady: {} ({} pairs missed); p99 = {:.2} of the 1 s limit\n",
            s(&self.spread),
            self.missed,
            self.spread[2]
        );
        out += &format!(
            "spread, churn:  {} ({} pairs missed, {} whose node left first); p99 = {:.2} of the 1 s limit\n",
            s(&self.spread_churn),
            self.missed_churn,
            self.left_before,
            self.spread_churn[2]
        );
        if self.lost_with_publisher > 0 {
            out += &format!(
                "lost with their publisher: {} offers (it left {:.2?} s after publishing, before they reached any other node; not counted above or below)\n",
                self.lost_with_publisher, self.lost_after
            );
        }
        out += &format!(
            "convergence: {}/{} live nodes hold exactly the {} offers published ({} missing, {} extra in the others) {}; {} nodes left and joined\n",
            self.converged,
            self.live,
            self.offers_total - self.lost_with_publisher,
            self.missing,
            self.extra,
            match self.converged_after {
                Some(t) => format!("{t:.1} s after churn stopped"),
                None => "NOT converged".into(),
            },
            self.churned
        );
        out += &format!(
            "bytes per node per offer: {:.0} net of idle ({:.0} gross; idle {:.0} B/s per node); D × offer = {} × {} B = {} B: {:.2}× D×size, {:.2} of the 3× limit\n",
            self.bytes_per_node_offer,
            self.bytes_gross,
            self.idle_bytes_per_node_sec,
            self.mesh_degree,
            self.offer_bytes,
            self.mesh_degree * self.offer_bytes,
            self.bytes_per_node_offer / (self.mesh_degree * self.offer_bytes) as f64,
            self.bytes_per_node_offer / self.bytes_limit()
        );
        out += &format!(
            "idle: {:.1} connections opened per node per minute (noise handshakes completed)\n",
            self.idle_handshakes_per_node_min
        );
        if !self.idle_by_protocol.is_empty() {
            let parts: Vec<String> = self
                .idle_by_protocol
                .iter()
                .map(|(p, b)| format!("{p} {b:.0}"))
                .collect();
            out += &format!(
                "idle: B/s per node by protocol (payload above yamux): {}\n",
                parts.join(", ")
            );
        }
        out += &format!(
            "process: RSS {:.0} MiB at the end, peak {:.0} MiB ({:.2} MiB per node); CPU {:.2} cores idle, {:.2} steady, {:.2} churn\n",
            self.rss_mib,
            self.hwm_mib,
            self.hwm_mib / self.nodes.max(1) as f64,
            self.cores_idle,
            self.cores_steady,
            self.cores_churn
        );
        out
    }
}

/// splitmix64: the simulation's reproducible randomness (keys, publishers, churn, delays).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for c in out.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }
}

/// Per-link one-way delays: a hash of the two peer ids (in either order) picks one in the range.
#[derive(Debug, Clone, Copy)]
struct Delays {
    min: Duration,
    max: Duration,
    seed: u64,
}

impl Delays {
    fn between(&self, a: &PeerId, b: &PeerId) -> Duration {
        let (x, y) = if a.to_bytes() <= b.to_bytes() {
            (a, b)
        } else {
            (b, a)
        };
        let mut h = DefaultHasher::new();
        (self.seed, x, y).hash(&mut h);
        let span = self.max.saturating_sub(self.min).as_micros() as u64;
        self.min + Duration::from_micros(h.finish() % (span + 1))
    }
}

/// A substream whose reads lag its writes by a fixed delay (see the file's invariants). Everything the
/// substream has is pulled at once and stamped with its release time, so the delay does not depend on when
/// the reader asks.
pub struct Delayed<S> {
    inner: S,
    delay: Duration,
    queue: VecDeque<(tokio::time::Instant, Vec<u8>)>,
    /// Bytes of the queue's head already handed out.
    read: usize,
    eof: bool,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Counts what the substream writes under its protocol's name, when the simulation asks for it.
    tap: Option<Tap>,
}

impl<S> Delayed<S> {
    pub fn new(inner: S, delay: Duration) -> Self {
        Delayed {
            inner,
            delay,
            queue: VecDeque::new(),
            read: 0,
            eof: false,
            timer: None,
            tap: None,
        }
    }

    fn tapped(mut self, by: &ByProtocol) -> Self {
        self.tap = Some(Tap {
            head: Vec::new(),
            name: None,
            unnamed: 0,
            by: by.clone(),
        });
        self
    }
}

/// Bytes written on substreams, by protocol name, all nodes together (payload above yamux: framing and
/// noise are not in it).
pub type ByProtocol = Arc<Mutex<BTreeMap<String, u64>>>;

/// A substream's protocol, read from the multistream-select negotiation it writes first (each message a
/// varint length and a line: `/multistream/1.0.0`, then the protocol proposed, or echoed when accepted).
struct Tap {
    head: Vec<u8>,
    name: Option<String>,
    /// Bytes written before the name was known.
    unnamed: u64,
    by: ByProtocol,
}

impl Tap {
    const HEAD: usize = 256;

    fn wrote(&mut self, data: &[u8]) {
        if self.name.is_none() {
            self.unnamed += data.len() as u64;
            let room = Self::HEAD.saturating_sub(self.head.len());
            self.head.extend_from_slice(&data[..data.len().min(room)]);
            self.name = Self::protocol(&self.head)
                .or_else(|| (self.head.len() >= Self::HEAD).then(|| "(unknown)".to_string()));
            let Some(name) = &self.name else { return };
            if let Ok(mut m) = self.by.lock() {
                *m.entry(name.clone()).or_default() += std::mem::take(&mut self.unnamed);
            }
        } else if let (Some(name), Ok(mut m)) = (&self.name, self.by.lock()) {
            *m.entry(name.clone()).or_default() += data.len() as u64;
        }
    }

    fn protocol(head: &[u8]) -> Option<String> {
        let mut rest = head;
        loop {
            // unsigned varint length
            let (mut len, mut shift, mut used) = (0usize, 0, 0);
            loop {
                let b = *rest.get(used)?;
                used += 1;
                len |= usize::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
                if shift > 21 {
                    return Some("(unknown)".into());
                }
            }
            let msg = rest.get(used..used + len)?;
            rest = &rest[used + len..];
            let line = std::str::from_utf8(msg).ok()?.trim_end_matches('\n');
            if line.starts_with('/') && line != "/multistream/1.0.0" {
                return Some(line.to_string());
            }
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; 16 * 1024].into_boxed_slice());
}

impl<S: AsyncRead + Unpin> AsyncRead for Delayed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        loop {
            while !this.eof {
                // One zeroed buffer per thread, not 16 KiB zeroed on every read of every substream.
                let got = SCRATCH.with_borrow_mut(|tmp| {
                    Pin::new(&mut this.inner)
                        .poll_read(cx, &mut tmp[..])
                        .map_ok(|n| tmp[..n].to_vec())
                });
                match got {
                    Poll::Ready(Ok(data)) if data.is_empty() => this.eof = true,
                    Poll::Ready(Ok(data)) => this
                        .queue
                        .push_back((tokio::time::Instant::now() + this.delay, data)),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            let now = tokio::time::Instant::now();
            match this.queue.front() {
                Some((due, data)) if *due <= now => {
                    let rest = &data[this.read..];
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    this.read += n;
                    if this.read == data.len() {
                        this.queue.pop_front();
                        this.read = 0;
                    }
                    return Poll::Ready(Ok(n));
                }
                Some((due, _)) => {
                    let due = *due;
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                    timer.as_mut().reset(due);
                    if std::future::Future::poll(timer.as_mut(), cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                None if this.eof => return Poll::Ready(Ok(0)),
                None => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Delayed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(tap)) = (&r, &mut this.tap) {
            tap.wrote(&buf[..*n]);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// A connection's muxer whose every substream (inbound and outbound) is [`Delayed`] by the link's delay.
struct DelayedMuxer {
    inner: StreamMuxerBox,
    delay: Duration,
    by: ByProtocol,
}

impl StreamMuxer for DelayedMuxer {
    type Substream = Delayed<SubstreamBox>;
    type Error = std::io::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let d = this.delay;
        let by = &this.by;
        Pin::new(&mut this.inner)
            .poll_inbound(cx)
            .map_ok(|s| Delayed::new(s, d).tapped(by))
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let d = this.delay;
        let by = &this.by;
        Pin::new(&mut this.inner)
            .poll_outbound(cx)
            .map_ok(|s| Delayed::new(s, d).tapped(by))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

/// A raw connection whose written bytes are added to a counter.
struct Counted<S> {
    inner: S,
    sent: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// Connections that completed their handshake, all nodes together: (dialed, accepted).
#[derive(Debug, Default)]
struct Handshakes {
    dialed: AtomicU64,
    accepted: AtomicU64,
}

/// The simulated node's transport: memory, counted, noise, yamux, then the per-link delay.
fn transport(
    key: &identity::Keypair,
    delays: Delays,
    sent: Arc<AtomicU64>,
    handshakes: Arc<Handshakes>,
    by: ByProtocol,
) -> Result<OtherTransport, String> {
    let local = key.public().to_peer_id();
    let noise = noise::Config::new(key).map_err(|e| e.to_string())?;
    Ok(MemoryTransport::default()
        .map(move |c, _| Counted {
            inner: c,
            sent: sent.clone(),
        })
        .upgrade(upgrade::Version::V1)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .map(move |(peer, muxer), endpoint| {
            let count = if endpoint.is_dialer() {
                &handshakes.dialed
            } else {
                &handshakes.accepted
            };
            count.fetch_add(1, Ordering::Relaxed);
            let delay = delays.between(&local, &peer);
            (
                peer,
                StreamMuxerBox::new(DelayedMuxer {
                    inner: StreamMuxerBox::new(muxer),
                    delay,
                    by: by.clone(),
                }),
            )
        })
        .boxed())
}

/// Memory-transport ports are global to the process: each node gets a new one (tests may run side by side).
static NEXT_PORT: AtomicU64 = AtomicU64::new(1_000_000);

/// A running node.
struct Live {
    market: Arc<RwLock<Market>>,
    handle: NetworkHandle,
    stop: watch::Sender<bool>,
    /// Its address with `/p2p/<peer id>`, for others' bootstrap.
    addr: Multiaddr,
    _leases: mpsc::Receiver<IncomingLease>,
}

/// How soon after publishing an offer its publisher may leave for the offer to count as gone with it (when it
/// reached nobody yet) rather than as a gossip failure: the spread limit.
const ORPHAN_WINDOW: Duration = Duration::from_secs(1);

/// An offer followed from its publication.
struct Tracked {
    key: OfferKey,
    at: Instant,
    /// Nodes it has not reached yet (live when it was published, publisher excluded).
    pending: HashSet<usize>,
    spreads: Vec<f64>,
    left: usize,
    publisher: usize,
    /// Seconds from its publication to its publisher leaving, if that was before it reached any other node.
    orphaned: Option<f64>,
}

struct Sim {
    opts: Opts,
    rng: Rng,
    delays: Delays,
    sent: Arc<AtomicU64>,
    handshakes: Arc<Handshakes>,
    by_protocol: ByProtocol,
    nodes: Vec<Option<Live>>,
    chain: Chain,
    pool: PoolId,
    offers: Vec<Tracked>,
    next_price: u64,
    offer_bytes: usize,
    t0: Instant,
}

/// Every node's `max_connections` and `max_incoming`: half inbound when the cap is lowered (16: 8 dialed, 8
/// accepted); the default's 48 of 64 otherwise.
fn caps(opts: &Opts) -> (u32, u32) {
    let defaults = NetworkConfig::default();
    let max = opts.max_connections.unwrap_or(defaults.max_connections);
    (max, defaults.max_incoming.min(max / 2))
}

/// An offer that lives an hour of protocol time (`time_scale` hours of wall time): none expires within a run.
fn spec(price: u64, time_scale: u32) -> OfferSpec {
    serde_json::from_value(serde_json::json!({
        "vcpus": 1, "ram_mib": 1024, "disk_gib": 10, "images": ["bench"],
        "price_sats_per_hour": price, "country": "DE",
        "ttl_secs": 3600 * u64::from(time_scale.max(1))
    }))
    .expect("a valid offer spec")
}

fn stats(v: Vec<f64>) -> [f64; 4] {
    let v = sorted(v);
    let p = |q| percentile(&v, q).unwrap_or(f64::NAN);
    [p(50.0), p(90.0), p(99.0), p(100.0)]
}

impl Sim {
    fn say(&self, s: &str) {
        if self.opts.verbose {
            println!("[{:7.1} s] {s}", self.t0.elapsed().as_secs_f64());
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    async fn start_node(&mut self) -> Result<usize, SimError> {
        let slot = self.nodes.len();
        let secret = self.rng.bytes32();
        let live = self.live();
        let mut bootstrap = Vec::new();
        for _ in 0..self.opts.bootstrap.min(live.len()) {
            let pick = live[self.rng.below(live.len())];
            let a = self.nodes[pick].as_ref().map(|l| l.addr.to_string());
            if let Some(a) = a {
                if !bootstrap.contains(&a) {
                    bootstrap.push(a);
                }
            }
        }
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let addr = format!("/memory/{port}");
        let defaults = NetworkConfig::default();
        let (max_connections, max_incoming) = caps(&self.opts);
        let cfg = NetworkConfig {
            max_connections,
            max_incoming,
            listen: vec![addr.clone()],
            bootstrap,
            seeds: Some(Vec::new()),
            // A node on the internet with a public address: confirmed as it is (AutoNAT cannot confirm a
            // memory address, whose dialers come from ephemeral ports).
            external_addresses: vec![addr],
            resync_secs: defaults.resync_secs * u64::from(self.opts.time_scale.max(1)),
            ..defaults
        };
        let store = Store::open(&self.opts.root.join(format!("n{slot}")))
            .map_err(|source| SimError::Store { slot, source })?;
        let (market, _) = Market::load(
            Keypair::from_secret_bytes(&secret),
            store.clone(),
            self.chain,
            unix_now(),
            &[PUBLIC_POOL_NAME.to_string()],
        )
        .map_err(|source| SimError::Market { slot, source })?;
        let market = Arc::new(RwLock::new(market));
        let key = Keypair::from_secret_bytes(&secret);
        let lkey =
            network::libp2p_key(&key).map_err(|source| SimError::Network { slot, source })?;
        let t = transport(
            &lkey,
            self.delays,
            self.sent.clone(),
            self.handshakes.clone(),
            self.by_protocol.clone(),
        )
        .map_err(|what| SimError::Transport { slot, what })?;
        let (stop, stop_rx) = watch::channel(false);
        let k = self.opts.time_scale.max(1);
        let (handle, leases) =
            network::start_over(&key, &cfg, market.clone(), store, stop_rx, t, k)
                .await
                .map_err(|source| SimError::Network { slot, source })?;
        let addr = handle
            .listen_addrs
            .first()
            .cloned()
            .ok_or_else(|| SimError::Transport {
                slot,
                what: "no listen address".into(),
            })?;
        self.nodes.push(Some(Live {
            market,
            handle,
            stop,
            addr,
            _leases: leases,
        }));
        Ok(slot)
    }

    /// Stops a node; its offers that reached nobody yet, published within [`ORPHAN_WINDOW`], leave with it.
    /// Its market goes at once; the network handle returned resolves `stopped` once its task has ended.
    fn stop_node(&mut self, slot: usize) -> Option<NetworkHandle> {
        // What arrived up to now, so that an offer that did spread is not taken for one that did not.
        self.poll_books(0);
        for t in &mut self.offers {
            if t.publisher == slot
                && t.spreads.is_empty()
                && !t.pending.is_empty()
                && t.at.elapsed() < ORPHAN_WINDOW * self.opts.time_scale.max(1)
            {
                t.orphaned = Some(t.at.elapsed().as_secs_f64());
                t.pending.clear();
            }
        }
        let l = self.nodes[slot].take()?;
        let _ = l.stop.send(true);
        Some(l.handle)
    }

    /// Connected peers of every live node.
    async fn peer_counts(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for l in self.nodes.iter().flatten() {
            if let Ok(s) = l.handle.status().await {
                out.push(s.connected_peers);
            }
        }
        out.sort();
        out
    }

    /// Waits until every live node sees at least `want` peers in the pool.
    async fn wait_pool_peers(&self, want: usize, deadline: Duration) -> Result<(), SimError> {
        let end = Instant::now() + deadline;
        loop {
            let mut short = Vec::new();
            for (slot, l) in self.nodes.iter().enumerate() {
                let Some(l) = l else { continue };
                let m = l.handle.members().await.unwrap_or_default();
                let members = m.get(&self.pool).copied().unwrap_or(0);
                if members < want {
                    let connected = l.handle.status().await.map(|s| s.connected_peers);
                    short.push(format!(
                        "node {slot}: {members} pool peers, {} connected",
                        connected.map_or("?".into(), |c| c.to_string())
                    ));
                }
            }
            if short.is_empty() {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(SimError::Deadline {
                    what: format!(
                        "{} nodes with fewer than {want} pool peers ({})",
                        short.len(),
                        short.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
                    ),
                    secs: deadline.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Publishes one offer from a random live node through the node's own path (sign into its market, then
    /// gossip), and starts following it.
    async fn publish(&mut self) -> Result<(), SimError> {
        let live = self.live();
        if live.is_empty() {
            return Err(SimError::NoNode);
        }
        let from = live[self.rng.below(live.len())];
        self.next_price += 1;
        let l = self.nodes[from].as_ref().ok_or(SimError::NoNode)?;
        let signed = {
            let mut m = l.market.write().map_err(|_| SimError::NoNode)?;
            m.publish(&spec(self.next_price, self.opts.time_scale), unix_now())
                .map_err(|source| SimError::Market { slot: from, source })?
        };
        self.offer_bytes = signed.to_bytes().len();
        let at = Instant::now();
        let _ = l.handle.publish(&self.pool, &signed).await;
        self.offers.push(Tracked {
            key: OfferKey::of(signed.body()),
            at,
            pending: live.into_iter().filter(|&i| i != from).collect(),
            spreads: Vec::new(),
            left: 0,
            publisher: from,
            orphaned: None,
        });
        Ok(())
    }

    /// Looks at every book for the offers still pending somewhere.
    fn poll_books(&mut self, from: usize) {
        let now = Instant::now();
        for t in &mut self.offers[from..] {
            if t.pending.is_empty() {
                continue;
            }
            let waited = now.duration_since(t.at).as_secs_f64();
            let nodes = &self.nodes;
            let mut left = 0;
            let mut arrived = Vec::new();
            t.pending.retain(|&i| match &nodes[i] {
                None => {
                    left += 1;
                    false
                }
                Some(l) => {
                    let has = l
                        .market
                        .read()
                        .map(|m| m.book().get(&t.key).is_some())
                        .unwrap_or(false);
                    if has {
                        arrived.push(waited);
                    }
                    !has
                }
            });
            t.left += left;
            t.spreads.extend(arrived);
        }
    }

    /// Polls the books until every offer from `from` on reached every live node, or `timeout` passes.
    async fn drain(&mut self, from: usize, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            self.poll_books(from);
            if self.offers[from..].iter().all(|t| t.pending.is_empty()) || Instant::now() > end {
                return;
            }
            tokio::time::sleep(self.opts.poll).await;
        }
    }

    /// Runs a phase of `count` offers at the configured rate (plus churn events every `churn_every`, if any),
    /// polling the books between events; returns the index of its first offer.
    async fn phase(
        &mut self,
        count: usize,
        churn_every: Option<Duration>,
        churned: &mut usize,
    ) -> Result<usize, SimError> {
        let first = self.offers.len();
        let start = Instant::now();
        let every = Duration::from_secs_f64(1.0 / self.opts.rate.max(0.001));
        let mut published = 0;
        let mut churn_done = 0u32;
        let churn_len = churn_every.map(|_| Duration::from_secs_f64(self.opts.churn_secs));
        loop {
            let elapsed = start.elapsed();
            let pub_due = published < count && elapsed >= every * published as u32;
            if pub_due {
                self.publish().await?;
                published += 1;
            }
            if let (Some(ce), Some(len)) = (churn_every, churn_len) {
                if elapsed < len && elapsed >= ce * (churn_done + 1) {
                    churn_done += 1;
                    let live = self.live();
                    let leave = live[self.rng.below(live.len())];
                    self.stop_node(leave);
                    let joined = self.start_node().await?;
                    *churned += 1;
                    self.say(&format!("churn: node {leave} left, node {joined} joined"));
                }
            }
            self.poll_books(first);
            let churn_over = churn_len.is_none_or(|len| elapsed >= len);
            if published >= count && churn_over {
                return Ok(first);
            }
            tokio::time::sleep(self.opts.poll).await;
        }
    }

    /// Live nodes whose book is exactly `want` (offers in `either` may be there or not: those that left with
    /// their publisher may still have reached a node in flight); missing and extra offers summed over the others.
    fn convergence(
        &self,
        want: &HashSet<OfferKey>,
        either: &HashSet<OfferKey>,
    ) -> (usize, usize, usize, usize) {
        let (mut ok, mut live, mut missing, mut extra) = (0, 0, 0, 0);
        for l in self.nodes.iter().flatten() {
            live += 1;
            let Ok(m) = l.market.read() else { continue };
            let have: HashSet<OfferKey> = m
                .book()
                .iter_pool(&self.pool)
                .map(|o| OfferKey::of(o.body()))
                .filter(|k| !either.contains(k))
                .collect();
            let miss = want.difference(&have).count();
            let ext = have.difference(want).count();
            if miss == 0 && ext == 0 {
                ok += 1;
            }
            missing += miss;
            extra += ext;
        }
        (ok, live, missing, extra)
    }
}

fn cpu_now() -> f64 {
    proc_stats::cpu_secs(std::process::id()).unwrap_or(0.0)
}

/// Phase figures: spreads over node×offer (missed pairs count as infinitely late), missed, left.
fn spread_of(offers: &[Tracked]) -> ([f64; 4], usize, usize) {
    let mut v = Vec::new();
    let (mut missed, mut left) = (0, 0);
    for t in offers {
        v.extend(&t.spreads);
        missed += t.pending.len();
        left += t.left;
        v.extend(std::iter::repeat_n(f64::INFINITY, t.pending.len()));
    }
    (stats(v), missed, left)
}

/// Raises the open-file limit to its maximum: every node's store holds a few files open.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Runs the simulation on its own runtime (two worker threads: the machine's cores) and returns its figures.
pub fn run(opts: &Opts) -> Result<Summary, SimError> {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(SimError::Runtime)?;
    let r = rt.block_on(simulate(opts.clone()));
    // Stopped nodes' tasks end on their own; whatever is left is dropped with the runtime.
    rt.shutdown_timeout(Duration::from_secs(5));
    r
}

async fn simulate(opts: Opts) -> Result<Summary, SimError> {
    let k = opts.time_scale.max(1);
    let opts = opts.dilated();
    let chain = Chain::REGTEST;
    let mut sim = Sim {
        rng: Rng(opts.seed),
        delays: Delays {
            min: opts.delay_min,
            max: opts.delay_max,
            seed: opts.seed,
        },
        sent: Arc::new(AtomicU64::new(0)),
        handshakes: Arc::new(Handshakes::default()),
        by_protocol: ByProtocol::default(),
        nodes: Vec::new(),
        chain,
        pool: xov_protocol::public_charter(chain).body().pool_id(),
        offers: Vec::new(),
        next_price: 1000,
        offer_bytes: 0,
        t0: Instant::now(),
        opts,
    };
    let n = sim.opts.nodes;
    let mut summary = Summary {
        nodes: n,
        caps: caps(&sim.opts),
        mesh_degree: libp2p::gossipsub::Config::default().mesh_n(),
        time_scale: k,
        ..Summary::default()
    };
    for i in 0..n {
        sim.start_node().await?;
        if (i + 1) % 100 == 0 {
            sim.say(&format!("{} nodes started", i + 1));
        }
    }
    let want = 3.min(n.saturating_sub(1));
    let setup = Duration::from_secs(60 + n as u64 / 5) * k;
    sim.wait_pool_peers(want, setup).await?;
    // Warm-up: three offers reach everyone (meshes formed).
    let first = sim.offers.len();
    for _ in 0..3 {
        sim.publish().await?;
    }
    sim.drain(first, setup).await;
    if sim.offers[first..].iter().any(|t| !t.pending.is_empty()) {
        return Err(SimError::Deadline {
            what: "warm-up offers at every node".into(),
            secs: setup.as_secs(),
        });
    }
    summary.startup_secs = sim.t0.elapsed().as_secs_f64();
    let peers = sim.peer_counts().await;
    summary.peers = [
        peers.first().copied().unwrap_or(0),
        peers.get(peers.len() / 2).copied().unwrap_or(0),
        peers.last().copied().unwrap_or(0),
    ];
    sim.say(&format!(
        "{n} nodes up, peers per node min/median/max {:?}",
        summary.peers
    ));

    // Idle traffic.
    let (b0, c0, t0) = (sim.sent.load(Ordering::Relaxed), cpu_now(), Instant::now());
    let shakes = |h: &Handshakes| {
        (
            h.dialed.load(Ordering::Relaxed),
            h.accepted.load(Ordering::Relaxed),
        )
    };
    let (d0, a0) = shakes(&sim.handshakes);
    let by0 = sim
        .by_protocol
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_secs_f64(sim.opts.idle_secs)).await;
    let idle_secs = t0.elapsed().as_secs_f64();
    let (d1, a1) = shakes(&sim.handshakes);
    let by1 = sim
        .by_protocol
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let mut by: Vec<(String, f64)> = by1
        .into_iter()
        .map(|(p, b)| {
            let before = by0.get(&p).copied().unwrap_or(0);
            (p, (b - before) as f64 / idle_secs / n as f64)
        })
        .filter(|(_, r)| *r >= 1.0)
        .collect();
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    summary.idle_by_protocol = by;
    // Both ends of a connection are in this process: the larger side's count is the connections.
    summary.idle_handshakes_per_node_min =
        (d1 - d0).max(a1 - a0) as f64 / n as f64 / (idle_secs / 60.0);
    let idle_rate = (sim.sent.load(Ordering::Relaxed) - b0) as f64 / idle_secs;
    summary.idle_bytes_per_node_sec = idle_rate / n as f64;
    summary.cores_idle = (cpu_now() - c0) / idle_secs;

    // Steady phase: no churn.
    sim.say("steady phase");
    let (b0, c0, t0) = (sim.sent.load(Ordering::Relaxed), cpu_now(), Instant::now());
    let mut churned = 0;
    let count = sim.opts.offers;
    let first = sim.phase(count, None, &mut churned).await?;
    sim.drain(first, Duration::from_secs(30) * k).await;
    let secs = t0.elapsed().as_secs_f64();
    let gross = (sim.sent.load(Ordering::Relaxed) - b0) as f64;
    summary.cores_steady = (cpu_now() - c0) / secs;
    summary.bytes_gross = gross / n as f64 / count.max(1) as f64;
    summary.bytes_per_node_offer =
        (gross - idle_rate * secs).max(0.0) / n as f64 / count.max(1) as f64;
    summary.offer_bytes = sim.offer_bytes;
    (summary.spread, summary.missed, _) = spread_of(&sim.offers[first..]);
    sim.say(&format!("steady: spread {:?}", summary.spread));

    // Churn phase.
    if sim.opts.churn_per_min > 0.0 && sim.opts.churn_secs > 0.0 {
        let per_min = sim.opts.churn_per_min * n as f64;
        let every = Duration::from_secs_f64(60.0 / per_min.max(0.001));
        sim.say(&format!(
            "churn phase: one node leaves and one joins every {:.2} s for {:.0} s",
            every.as_secs_f64(),
            sim.opts.churn_secs
        ));
        let (c0, t0) = (cpu_now(), Instant::now());
        let count = (sim.opts.rate * sim.opts.churn_secs).round() as usize;
        let first = sim.phase(count, Some(every), &mut churned).await?;
        sim.drain(first, Duration::from_secs(30) * k).await;
        summary.cores_churn = (cpu_now() - c0) / t0.elapsed().as_secs_f64();
        (
            summary.spread_churn,
            summary.missed_churn,
            summary.left_before,
        ) = spread_of(&sim.offers[first..]);
        summary.churned = churned;
        sim.say(&format!("churn: spread {:?}", summary.spread_churn));
    }

    // Convergence: every live node's book is the set of offers published (none expires within the run), but
    // for those that left with their publisher before reaching anyone.
    summary.lost_after = sim.offers.iter().filter_map(|t| t.orphaned).collect();
    summary.lost_with_publisher = summary.lost_after.len();
    let want: HashSet<OfferKey> = sim
        .offers
        .iter()
        .filter(|t| t.orphaned.is_none())
        .map(|t| t.key)
        .collect();
    let either: HashSet<OfferKey> = sim
        .offers
        .iter()
        .filter(|t| t.orphaned.is_some())
        .map(|t| t.key)
        .collect();
    summary.offers_total = sim.offers.len();
    let settle_start = Instant::now();
    let end = settle_start + Duration::from_secs_f64(sim.opts.settle_secs);
    loop {
        let (ok, live, missing, extra) = sim.convergence(&want, &either);
        (
            summary.converged,
            summary.live,
            summary.missing,
            summary.extra,
        ) = (ok, live, missing, extra);
        if ok == live {
            summary.converged_after = Some(settle_start.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() > end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Back to protocol time.
    let kf = f64::from(k);
    for v in summary
        .spread
        .iter_mut()
        .chain(summary.spread_churn.iter_mut())
    {
        *v /= kf;
    }
    for v in &mut summary.lost_after {
        *v /= kf;
    }
    summary.converged_after = summary.converged_after.map(|t| t / kf);
    if let Some(r) = proc_stats::rss(std::process::id()) {
        summary.rss_mib = r.rss_kib as f64 / 1024.0;
        summary.hwm_mib = r.hwm_kib as f64 / 1024.0;
    }
    // Every store is closed before this returns: the caller removes the directory, and a store still open
    // when the process exits aborts it (RocksDB's threads outlive the runtime: `pthread lock: Invalid
    // argument` after 1,000-node runs, when this waited 500 ms instead).
    let live: Vec<usize> = sim.live();
    let handles: Vec<NetworkHandle> = live.into_iter().filter_map(|i| sim.stop_node(i)).collect();
    let closing = futures::future::join_all(handles.iter().map(|h| h.stopped()));
    let deadline = Duration::from_secs(120);
    tokio::time::timeout(deadline, closing)
        .await
        .map_err(|_| SimError::Deadline {
            what: "every node's network task stopped".into(),
            secs: deadline.as_secs(),
        })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dilation_stretches_every_phase_but_keeps_the_offers_and_churn_counts() {
        let o = Opts {
            time_scale: 8,
            ..Opts::new(100, PathBuf::from("/nonexistent"))
        };
        let d = o.clone().dilated();
        assert_eq!(d.delay_min, o.delay_min * 8);
        assert_eq!(d.delay_max, o.delay_max * 8);
        assert_eq!(d.churn_secs, o.churn_secs * 8.0);
        assert_eq!(d.idle_secs, o.idle_secs * 8.0);
        assert_eq!(d.settle_secs, o.settle_secs * 8.0);
        // as many offers published and nodes churned in the churn phase, over 8× the wall time
        assert_eq!(d.rate * d.churn_secs, o.rate * o.churn_secs);
        assert_eq!(
            d.churn_per_min * d.churn_secs,
            o.churn_per_min * o.churn_secs
        );
        assert_eq!(d.offers, o.offers);
        let same = Opts {
            time_scale: 1,
            ..o.clone()
        };
        assert_eq!(same.clone().dilated().rate, same.rate);
    }

    #[test]
    fn links_keep_one_delay_both_ways_within_the_range() {
        let d = Delays {
            min: Duration::from_millis(10),
            max: Duration::from_millis(150),
            seed: 7,
        };
        for _ in 0..50 {
            let a = PeerId::random();
            let b = PeerId::random();
            let x = d.between(&a, &b);
            assert_eq!(x, d.between(&b, &a));
            assert!(x >= d.min && x <= d.max, "{x:?}");
        }
    }

    /// 20 nodes, offers published while nodes leave and new ones join: once the churn stops, every live
    /// node's book holds exactly the offers published (the joiners got theirs through sync).
    #[test]
    fn books_converge_after_churn() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = Opts {
            offers: 10,
            rate: 5.0,
            // 20 nodes: one leaves and one joins every 3 s.
            churn_per_min: 1.0,
            churn_secs: 12.0,
            idle_secs: 1.0,
            settle_secs: 120.0,
            verbose: false,
            ..Opts::new(20, dir.path().to_path_buf())
        };
        // `simulate` in a runtime that outlives it: a runtime's shutdown drops what is left of the nodes'
        // tasks, which would close their stores in `run` whether or not `simulate` waited for them.
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        let s = rt.block_on(simulate(opts)).expect("the simulation runs");
        println!("{}", s.text());
        assert!(s.churned >= 3, "churn happened: {}", s.churned);
        assert_eq!(
            (s.converged, s.missing, s.extra),
            (s.live, 0, 0),
            "every live node's book equals the offers published"
        );
        assert!(s.offers_total >= 3 + 10 + 60);
        // Every store was closed when the simulation returned (RocksDB refuses a second open in one process).
        let mut stores = 0;
        for d in std::fs::read_dir(dir.path()).expect("the stores' directory") {
            let path = d.expect("an entry").path();
            Store::open(&path).unwrap_or_else(|e| panic!("{} still open: {e}", path.display()));
            stores += 1;
        }
        assert_eq!(stores, 20 + s.churned, "one store per node started");
    }
}
