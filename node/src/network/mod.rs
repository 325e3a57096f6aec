//! The node's peer-to-peer side: a libp2p swarm (TCP and QUIC, noise, yamux) that finds peers (bootstrap,
//! kademlia, identify, optional mDNS), carries pool gossip and serves book sync.
//!
//! One task owns the swarm. The API talks to it through [`NetworkHandle`] commands; received messages go
//! through the same [`Market`] path as local ones (validate, persist, index), and gossipsub forwards a
//! message only after that path accepted it.
//!
//! Abuse (each policy in its own file): gossip is rate-limited per connected peer (`rate_limit.rs`, a
//! generous cap against raw floods) and per origin identity (`origin.rs`: the signing author, so honest
//! relays are not blamed for others' volume); only what an honest relay would never pass on (undecodable,
//! forged, invalid) counts against the peer (`scoring.rs`: decaying penalties, bans that disconnect and
//! escalate, gossipsub's graylist turned into a ban); sync answers are checked against their request and
//! bounded in pages (`sync.rs`); serving sync is rate-limited per peer; every per-party map is bounded.
//!
//! Chains: the node is on its market's chain. It hears only its chain's charters topic and its chain's pools'
//! topics, asks and serves book sync only within its chain, and drops whatever of another chain still
//! reaches it quietly (counted in [`GossipStats::other_chain`], never penalised); only a message that
//! contradicts its own pool (an offer naming our pool but another chain) is rejected.

pub mod behaviour;
pub mod gate;
pub mod known_peers;
pub mod lease_wire;
pub mod lookup_pace;
pub mod origin;
pub mod rate_limit;
pub mod reachability;
pub mod scoring;
pub mod seeds;
pub mod sync;
pub mod topics;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::ConnectionId;
use libp2p::swarm::SwarmEvent;
use libp2p::{
    dcutr, identify, identity, kad, mdns, noise, ping, relay, tcp, upnp, yamux, Multiaddr, PeerId,
    Swarm,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, warn};
use utoipa::ToSchema;
use xov_protocol::{AnyMessage, Chain, DecodeError, Inserted, NodeId, Offer, PoolId, Signed};

use crate::store::Store;
use known_peers::KnownPeers;
use lookup_pace::LookupPace;

use crate::clock::unix_now;
use crate::config::NetworkConfig;
use crate::market::{Market, MarketError};
use behaviour::{Behaviour, BehaviourEvent};
use rate_limit::RateLimiter;
use reachability::{Reach, Reachability};
use scoring::Reputation;
use sync::{Checked, SyncRequest, SyncResponse};
use topics::{charters_topic, classify, pool_topic, TopicKind};

/// How long start-up waits for the listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often own offers are checked for refresh, and discovery runs when below the target peer count.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(2);
/// Sync requests one peer may make: a burst covering a full resync of a few pools, then one a second.
const SYNC_SERVE_RATE_PER_SEC: u32 = 1;
const SYNC_SERVE_BURST: u32 = 64;
/// Most keys each rate limiter holds (see `rate_limit.rs` for what happens past it).
const MAX_LIMITER_KEYS: usize = 50_000;
/// Most round-trip times remembered; past it, those of disconnected peers are forgotten.
const MAX_LATENCIES: usize = 4096;

#[derive(Debug, Error)]
pub enum NetworkError {
    #[error("invalid node key for libp2p: {0}")]
    Key(String),
    #[error("cannot build the libp2p transport: {0}")]
    Transport(String),
    #[error(transparent)]
    Behaviour(#[from] behaviour::BehaviourError),
    #[error("cannot listen on {addr}: {reason}; change network.listen in the config or XOV_NETWORK_LISTEN")]
    Listen { addr: String, reason: String },
    #[error(
        "network.external_addresses: '{0}' is not a multiaddr (e.g. /ip4/203.0.113.7/tcp/9738)"
    )]
    ExternalAddress(String),
    #[error("bootstrap address '{0}' is neither a multiaddr ending in /p2p/<peer id> nor a /dnsaddr/<name>")]
    Bootstrap(String),
    #[error("the network task has stopped")]
    Stopped,
    #[error("'{0}' is not a valid node id")]
    InvalidNodeId(String),
    #[error("cannot reach the other party: {0}")]
    Unreachable(LeaseSendError),
}

/// Why a lease request sent to another node got no answer: the other node, the path to it, or this node's own
/// connectivity (a dial fails when this node is offline too). Whether the request reached the other node is
/// unknown unless the dial failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeaseSendError {
    #[error(
        "the node could not be dialled (it or this node is offline, or no address is known for it)"
    )]
    DialFailed,
    #[error("no answer in time (the node may still have taken the request)")]
    NoAnswer,
    #[error("the connection closed before the node answered")]
    ConnectionClosed,
    #[error("the node does not speak xov's lease protocol (another version?)")]
    Unsupported,
    #[error("the stream to the node failed: {0}")]
    Stream(String),
}

impl From<&request_response::OutboundFailure> for LeaseSendError {
    fn from(f: &request_response::OutboundFailure) -> Self {
        use request_response::OutboundFailure as F;
        match f {
            F::DialFailure => LeaseSendError::DialFailed,
            F::Timeout => LeaseSendError::NoAnswer,
            F::ConnectionClosed => LeaseSendError::ConnectionClosed,
            F::UnsupportedProtocols => LeaseSendError::Unsupported,
            F::Io(e) => LeaseSendError::Stream(e.to_string()),
        }
    }
}

/// Counters of gossip validation outcomes, for status and tests.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
pub struct GossipStats {
    /// Messages validated and forwarded.
    pub accepted: u64,
    /// Messages that failed validation (their sender was penalised; not forwarded).
    pub rejected: u64,
    /// Messages dropped without blame: duplicates, stale sequences, pools we do not carry.
    pub ignored: u64,
    /// Messages dropped because their relay or their origin exceeded its rate limit.
    pub rate_limited: u64,
    /// Sync requests not served because the asking peer exceeded its rate.
    #[serde(default)]
    pub sync_refused: u64,
    /// Sync answers that broke the protocol (wrong pool, no progress, over-long): dropped whole.
    #[serde(default)]
    pub sync_faults: u64,
    /// Peers banned (disconnected and refused for a while).
    #[serde(default)]
    pub bans: u64,
    /// Gossip frames refused unread: over the frame limit ([`behaviour::MAX_FRAME`]) or not a gossipsub
    /// message at all. Each bans its sender.
    #[serde(default)]
    pub invalid_frames: u64,
    /// Offers and withdrawals received through sync that were accepted.
    pub synced: u64,
    /// Pool digests compared with a peer's (anti-entropy rounds, `sync.rs`).
    #[serde(default)]
    pub resync_rounds: u64,
    /// Digest buckets that differed and were pulled from the peer.
    #[serde(default)]
    pub resync_buckets: u64,
    /// Charters, offers and sync answers of another bitcoin network, dropped without blame.
    #[serde(default)]
    pub other_chain: u64,
    /// Messages of an encoding version or kind this node does not speak (a newer or older peer's): dropped
    /// quietly, not forwarded, and never held against the sender.
    #[serde(default)]
    pub other_version: u64,
    /// Relayed connections upgraded to direct ones by hole punching (DCUtR).
    #[serde(default)]
    pub hole_punches: u64,
    /// Hole punching attempts that failed (a symmetric NAT, say); the relay keeps carrying the connection.
    #[serde(default)]
    pub hole_punch_failures: u64,
    /// Connections (dialed or accepted) refused before their handshake because the node was at its
    /// connection caps (`gate.rs`).
    #[serde(default)]
    pub refused_at_caps: u64,
    /// Connections accepted in a guest slot (the inbound slots being full) and closed when their time was
    /// up (`gate.rs`).
    #[serde(default)]
    pub guests_closed: u64,
    /// Connections to lease counterparties held now above the caps, in lease slots (`gate.rs`).
    #[serde(default)]
    pub lease_slots_used: u32,
    /// Lease-slot connections closed after their peer's last lease request (`gate.rs`).
    #[serde(default)]
    pub lease_slots_closed: u64,
}

/// A peer as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeerView {
    pub peer_id: String,
    /// The peer's xov node id, when it identified itself.
    pub node_id: Option<String>,
    pub connected: bool,
    /// Gossipsub's score of the peer (negative after invalid messages).
    pub gossip_score: Option<f64>,
    /// Our own penalty points for the peer (invalid messages, floods, bad sync data).
    pub penalty: u32,
    pub banned: bool,
    /// Pool ids the peer is subscribed to.
    pub pools: Vec<String>,
    /// The open connections to the peer: direct, or through a relay (`/p2p-circuit` in the address).
    #[serde(default)]
    pub connections: Vec<ConnectionView>,
}

/// One connection to a peer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    /// The address the connection runs over: the peer's for a direct one; for a relayed one the circuit
    /// (`.../p2p/<relay>/p2p-circuit...`).
    pub address: String,
    /// Carried by a relay (circuit relay v2) rather than direct.
    pub relayed: bool,
    /// This node dialed it.
    pub outbound: bool,
}

/// The network part of `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NetworkStatus {
    pub peer_id: String,
    /// Listen addresses including `/p2p/<peer id>`, usable as bootstrap addresses by other nodes.
    pub listen_addrs: Vec<String>,
    pub connected_peers: usize,
    /// Addresses peers are told this node is reachable at: `[network] external_addresses`.
    #[serde(default)]
    pub external_addrs: Vec<String>,
    /// Peers remembered from earlier connections, dialed at start (see `known_peers.rs`).
    #[serde(default)]
    pub known_peers: usize,
    /// Seed names asked at start: `[network] seeds`, or those this build ships for the bitcoin network.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Whether others can dial this node: `public` once a direct address is confirmed (AutoNAT, UPnP or
    /// `external_addresses`), `private` when probes failed (behind NAT), `unknown` before.
    #[serde(default)]
    pub reachability: Reach,
    /// Relays holding a slot for this node (while private), by peer id.
    #[serde(default)]
    pub relays: Vec<String>,
    pub gossip: GossipStats,
}

/// A lease request from a peer, for the lease engine; answer through [`NetworkHandle::reply_lease`].
pub struct IncomingLease {
    pub peer: PeerId,
    /// The peer's node id (its peer id's ed25519 key).
    pub from: Option<NodeId>,
    pub request: lease_wire::LeaseRequest,
    pub token: u64,
}

/// The libp2p peer id of an xov node id (same ed25519 key).
pub fn peer_id_of(node: &NodeId) -> Option<PeerId> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(node.as_bytes()).ok()?;
    Some(identity::PublicKey::from(pk).to_peer_id())
}

fn node_id_of(peer: &PeerId) -> Option<NodeId> {
    let mh = peer.as_ref();
    // Ed25519 peer ids inline the protobuf-encoded key (identity multihash): the key is the last 32 bytes.
    let digest = mh.digest();
    let pk = identity::PublicKey::try_decode_protobuf(digest).ok()?;
    let ed = pk.try_into_ed25519().ok()?;
    NodeId::from_bytes(ed.to_bytes()).ok()
}

enum Command {
    LeaseSend {
        peer: PeerId,
        request: lease_wire::LeaseRequest,
        reply: oneshot::Sender<Result<lease_wire::LeaseResponse, LeaseSendError>>,
    },
    LeaseReply {
        token: u64,
        response: lease_wire::LeaseResponse,
    },
    Publish {
        topic: IdentTopic,
        data: Vec<u8>,
    },
    Join(PoolId),
    Leave(PoolId),
    Status(oneshot::Sender<NetworkStatus>),
    Peers(oneshot::Sender<Vec<PeerView>>),
    Members(oneshot::Sender<HashMap<PoolId, usize>>),
}

/// Round-trip times to peers, from libp2p ping, by node id: one of the tie-breakers when ranking offers.
pub type Latencies = Arc<RwLock<HashMap<NodeId, Duration>>>;

/// The API's way to reach the network task.
#[derive(Clone)]
pub struct NetworkHandle {
    tx: mpsc::Sender<Command>,
    pub peer_id: PeerId,
    pub listen_addrs: Vec<Multiaddr>,
    /// Validated pool messages that other parts of the node act on (bids today), in arrival order.
    inbound: broadcast::Sender<AnyMessage>,
    latencies: Latencies,
}

impl NetworkHandle {
    async fn send(&self, c: Command) -> Result<(), NetworkError> {
        self.tx.send(c).await.map_err(|_| NetworkError::Stopped)
    }

    async fn ask<T>(
        &self,
        f: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.send(f(tx)).await?;
        rx.await.map_err(|_| NetworkError::Stopped)
    }

    /// Resolves once the network task has ended (after a shutdown signal) and let go of everything it held:
    /// its connections and its handle on the store.
    pub async fn stopped(&self) {
        self.tx.closed().await
    }

    /// Gossips a signed message into a pool.
    pub async fn publish<T: xov_protocol::Message>(
        &self,
        pool: &PoolId,
        msg: &Signed<T>,
    ) -> Result<(), NetworkError> {
        self.send(Command::Publish {
            topic: pool_topic(pool),
            data: msg.to_bytes(),
        })
        .await
    }

    /// Gossips already-encoded evidence (a dual-signed receipt) into a pool.
    pub async fn publish_bytes(&self, pool: &PoolId, data: Vec<u8>) -> Result<(), NetworkError> {
        self.send(Command::Publish {
            topic: pool_topic(pool),
            data,
        })
        .await
    }

    /// Gossips a charter on its chain's charters topic.
    pub async fn publish_charter(
        &self,
        c: &Signed<xov_protocol::PoolCharter>,
    ) -> Result<(), NetworkError> {
        self.send(Command::Publish {
            topic: charters_topic(&c.body().chain),
            data: c.to_bytes(),
        })
        .await
    }

    /// Sends a lease request to the node `to` directly (dialing it if needed) and waits for its answer.
    pub async fn send_lease(
        &self,
        to: &NodeId,
        request: lease_wire::LeaseRequest,
    ) -> Result<lease_wire::LeaseResponse, NetworkError> {
        let peer = peer_id_of(to).ok_or_else(|| NetworkError::InvalidNodeId(to.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.send(Command::LeaseSend {
            peer,
            request,
            reply: tx,
        })
        .await?;
        rx.await
            .map_err(|_| NetworkError::Stopped)?
            .map_err(NetworkError::Unreachable)
    }

    /// Answers an incoming lease request.
    pub async fn reply_lease(
        &self,
        token: u64,
        response: lease_wire::LeaseResponse,
    ) -> Result<(), NetworkError> {
        self.send(Command::LeaseReply { token, response }).await
    }

    pub async fn join(&self, pool: PoolId) -> Result<(), NetworkError> {
        self.send(Command::Join(pool)).await
    }

    pub async fn leave(&self, pool: PoolId) -> Result<(), NetworkError> {
        self.send(Command::Leave(pool)).await
    }

    pub async fn status(&self) -> Result<NetworkStatus, NetworkError> {
        self.ask(Command::Status).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerView>, NetworkError> {
        self.ask(Command::Peers).await
    }

    /// Peers seen subscribed to each pool.
    pub async fn members(&self) -> Result<HashMap<PoolId, usize>, NetworkError> {
        self.ask(Command::Members).await
    }

    /// Validated pool messages for the node's services (bids), from now on.
    pub fn inbound(&self) -> broadcast::Receiver<AnyMessage> {
        self.inbound.subscribe()
    }

    /// The last measured round-trip time to a node, if it is or was connected.
    pub fn latency(&self, node: &NodeId) -> Option<Duration> {
        self.latencies.read().ok()?.get(node).copied()
    }
}

/// The libp2p identity of a node: the same ed25519 key as its xov node id, so peer id and node id name the
/// same party.
pub fn libp2p_key(key: &xov_protocol::Keypair) -> Result<identity::Keypair, NetworkError> {
    identity::Keypair::ed25519_from_bytes(key.secret_bytes())
        .map_err(|e| NetworkError::Key(e.to_string()))
}

/// Builds a swarm with the node's behaviour. Also used by tests to build peers that misbehave.
pub fn build_swarm(key: identity::Keypair, mdns: bool) -> Result<Swarm<Behaviour>, NetworkError> {
    build_swarm_with(
        key,
        &behaviour::Options {
            mdns,
            ..Default::default()
        },
    )
}

/// A swarm whose gossip frames may be up to `max_frame` bytes: for tests that send frames over the node's
/// own limit.
pub fn build_swarm_with_max_frame(
    key: identity::Keypair,
    max_frame: usize,
) -> Result<Swarm<Behaviour>, NetworkError> {
    build_swarm_with(
        key,
        &behaviour::Options {
            max_frame,
            ..Default::default()
        },
    )
}

/// Authenticated, multiplexed connections given from outside, in place of TCP, QUIC and DNS: simulations run
/// many nodes in one process over libp2p's memory transport (`xov-testnet gossip-sim`). The daemon never uses
/// it; everything above the transport (behaviour, validation, market, sync, maintenance) is the same.
pub type OtherTransport =
    libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)>;

/// The node's swarm over `transport` only (and the relay client, as always).
fn build_swarm_over(
    key: identity::Keypair,
    opts: &behaviour::Options,
    transport: OtherTransport,
) -> Result<Swarm<Behaviour>, NetworkError> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|_| transport)
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_behaviour(|k, relay_client| {
            Behaviour::build(k, relay_client, opts)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

fn build_swarm_with(
    key: identity::Keypair,
    opts: &behaviour::Options,
) -> Result<Swarm<Behaviour>, NetworkError> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_quic()
        // `/dns4/`, `/dns6/`, `/dns/` and `/dnsaddr/` addresses, resolved with the system's resolver
        .with_dns()
        .map_err(|e| {
            NetworkError::Transport(format!(
                "cannot read the system's DNS settings (/etc/resolv.conf): {e}; the node resolves /dns and \
                 /dnsaddr addresses with them: create the file (one line `nameserver <address>` is enough)"
            ))
        })?
        // `/p2p/<relay>/p2p-circuit` addresses: listening through a relay, and dialing peers behind one
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_behaviour(|k, relay_client| {
            Behaviour::build(k, relay_client, opts)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

/// Starts listening and returns the bound addresses, waiting until every listener reported one.
pub async fn listen(
    swarm: &mut Swarm<Behaviour>,
    addrs: &[String],
) -> Result<Vec<Multiaddr>, NetworkError> {
    let mut pending = HashSet::new();
    for a in addrs {
        let ma: Multiaddr =
            a.parse()
                .map_err(|e: libp2p::multiaddr::Error| NetworkError::Listen {
                    addr: a.clone(),
                    reason: e.to_string(),
                })?;
        let id = swarm.listen_on(ma).map_err(|e| NetworkError::Listen {
            addr: a.clone(),
            reason: e.to_string(),
        })?;
        pending.insert(id);
    }
    let mut bound = Vec::new();
    let deadline = tokio::time::sleep(LISTEN_TIMEOUT);
    tokio::pin!(deadline);
    while !pending.is_empty() {
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    pending.remove(&listener_id);
                    bound.push(address);
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } if pending.contains(&listener_id) => {
                    return Err(NetworkError::Listen { addr: format!("{listener_id:?}"), reason: format!("{reason:?}") });
                }
                SwarmEvent::ListenerError { listener_id, error } if pending.contains(&listener_id) => {
                    return Err(NetworkError::Listen { addr: format!("{listener_id:?}"), reason: error.to_string() });
                }
                _ => {}
            },
            _ = &mut deadline => {
                return Err(NetworkError::Listen { addr: addrs.join(","), reason: "no address reported in time".into() });
            }
        }
    }
    let me = *swarm.local_peer_id();
    Ok(bound
        .into_iter()
        .map(|a| a.with(Protocol::P2p(me)))
        .collect())
}

/// Whether `a` is a loopback address (127.0.0.0/8 or ::1).
fn is_loopback(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// `a` without a trailing `/p2p/<peer id>`: the transport address alone.
fn without_p2p(a: &Multiaddr) -> Multiaddr {
    let mut a = a.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

/// What a bootstrap address names.
#[derive(Debug, PartialEq, Eq)]
enum Bootstrap {
    /// One peer, by the id its address ends in.
    Peer(PeerId),
    /// A `/dnsaddr/<name>` without a peer id: the name's `_dnsaddr` TXT records list the peers.
    DnsAddr,
}

/// A bootstrap address is a multiaddr ending in `/p2p/<peer id>`, or a `/dnsaddr/<name>` (whose TXT
/// records carry the ids); anything else cannot be checked to be the peer meant.
fn bootstrap_kind(addr: &Multiaddr) -> Option<Bootstrap> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(Bootstrap::Peer(peer)),
        Some(Protocol::Dnsaddr(_)) => Some(Bootstrap::DnsAddr),
        _ => None,
    }
}

/// The behaviour options `cfg` asks for.
fn options(cfg: &NetworkConfig) -> behaviour::Options {
    behaviour::Options {
        mdns: cfg.mdns,
        duplicate_cache: Duration::from_secs(cfg.duplicate_cache_secs.max(1)),
        max_frame: behaviour::MAX_FRAME,
        connections: behaviour::Caps {
            total: cfg.max_connections,
            incoming: cfg.max_incoming,
            per_peer: cfg.max_per_peer,
        },
        relay_server: cfg.relay_server,
        upnp: cfg.upnp,
        // Addresses the operator names are taken as confirmed; probing the node's other candidates (each
        // inbound connection can report one, a NAT's mapping or an ephemeral port) would only cost its peers
        // dial-backs.
        autonat_client: cfg.external_addresses.is_empty(),
        time_scale: 1,
    }
}

/// Starts the network task.
pub async fn start(
    key: &xov_protocol::Keypair,
    cfg: &NetworkConfig,
    market: Arc<RwLock<Market>>,
    store: Store,
    shutdown: watch::Receiver<bool>,
) -> Result<(NetworkHandle, mpsc::Receiver<IncomingLease>), NetworkError> {
    let swarm = build_swarm_with(libp2p_key(key)?, &options(cfg))?;
    run(swarm, cfg, market, store, shutdown).await
}

/// Starts the network task over a transport given from outside ([`OtherTransport`]; `cfg.listen` and
/// `cfg.bootstrap` are its addresses): the same task as [`start`], for simulations of many nodes in one process.
/// `time_scale` stretches gossipsub's time constants for a time-dilated simulation (1: as a node runs).
pub async fn start_over(
    key: &xov_protocol::Keypair,
    cfg: &NetworkConfig,
    market: Arc<RwLock<Market>>,
    store: Store,
    shutdown: watch::Receiver<bool>,
    transport: OtherTransport,
    time_scale: u32,
) -> Result<(NetworkHandle, mpsc::Receiver<IncomingLease>), NetworkError> {
    let opts = behaviour::Options {
        time_scale,
        ..options(cfg)
    };
    let swarm = build_swarm_over(libp2p_key(key)?, &opts, transport)?;
    run(swarm, cfg, market, store, shutdown).await
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    cfg: &NetworkConfig,
    market: Arc<RwLock<Market>>,
    store: Store,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(NetworkHandle, mpsc::Receiver<IncomingLease>), NetworkError> {
    let listen_addrs = listen(&mut swarm, &cfg.listen).await?;
    // Addresses the operator says the node is reachable at (a forwarded port): announced to peers by
    // identify and used by the DHT, as if confirmed.
    for a in &cfg.external_addresses {
        let addr: Multiaddr = a
            .parse()
            .map_err(|_| NetworkError::ExternalAddress(a.clone()))?;
        swarm.add_external_address(addr);
    }
    let peer_id = *swarm.local_peer_id();

    let (chain, joined): (Chain, Vec<PoolId>) = {
        let m = market
            .read()
            .map_err(|_| NetworkError::Transport("market lock poisoned".into()))?;
        (m.chain(), m.joined().iter().copied().collect())
    };
    subscribe(&mut swarm, &charters_topic(&chain));
    for p in &joined {
        subscribe(&mut swarm, &pool_topic(p));
        announce(&mut swarm, p);
    }
    // Bootstrap peers, then the seed names (the operator's, or those this build ships for the network).
    let seeds = seeds::effective(cfg.seeds.as_deref(), &chain);
    if !seeds.is_empty() {
        info!(seeds = ?seeds, "asking the seed names for peers");
    }
    for b in cfg.bootstrap.iter().chain(&seeds) {
        let addr: Multiaddr = b.parse().map_err(|_| NetworkError::Bootstrap(b.clone()))?;
        match bootstrap_kind(&addr) {
            Some(Bootstrap::Peer(peer)) if peer == peer_id => continue,
            Some(Bootstrap::Peer(peer)) => {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            // The name's TXT records (`_dnsaddr.<name>`) give the peers and their ids at dial time.
            Some(Bootstrap::DnsAddr) => {}
            None => return Err(NetworkError::Bootstrap(b.clone())),
        }
        if let Err(e) = swarm.dial(addr) {
            warn!(bootstrap = %b, error = %e, "cannot dial bootstrap peer");
        }
    }
    // Peers reached before: a restarted node finds the network again without its bootstrap peers.
    let known = match store.get_meta(known_peers::META_KEY) {
        Ok(Some(bytes)) => KnownPeers::decode(&bytes),
        Ok(None) => KnownPeers::default(),
        Err(e) => {
            warn!(error = %e, "cannot read the remembered peers; starting from the bootstrap peers only");
            KnownPeers::default()
        }
    };
    for (peer, addr) in known.dial_list() {
        if peer == peer_id {
            continue;
        }
        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        let _ = swarm.dial(addr);
    }
    if !known.is_empty() {
        info!(
            peers = known.len(),
            "dialing the peers remembered from earlier runs"
        );
    }

    let (tx, rx) = mpsc::channel(256);
    let (lease_tx, lease_rx) = mpsc::channel(256);
    let (inbound, _) = broadcast::channel(256);
    let latencies: Latencies = Default::default();
    let mut runner = Runner {
        chain,
        inbound: inbound.clone(),
        latencies: latencies.clone(),
        lease_tx,
        lease_in: HashMap::new(),
        lease_out: HashMap::new(),
        next_token: 0,
        swarm,
        market,
        rate: RateLimiter::new(cfg.peer_rate_per_sec, cfg.peer_burst, MAX_LIMITER_KEYS),
        origin_rate: RateLimiter::new(cfg.origin_rate_per_sec, cfg.origin_burst, MAX_LIMITER_KEYS),
        sync_rate: RateLimiter::new(SYNC_SERVE_RATE_PER_SEC, SYNC_SERVE_BURST, MAX_LIMITER_KEYS),
        reputation: Reputation::default(),
        stats: GossipStats::default(),
        target_peers: cfg.target_peers,
        known,
        seeds,
        store,
        synced: HashSet::new(),
        requests: HashMap::new(),
        node_ids: HashMap::new(),
        listen_addrs: listen_addrs.clone(),
        resync_every: (cfg.resync_secs > 0).then(|| Duration::from_secs(cfg.resync_secs)),
        last_resync: Instant::now(),
        announce: Backoff::new(ANNOUNCE_FIRST, ANNOUNCE_MAX, Instant::now()),
        peer_lookup: LookupPace::new(MAINTENANCE_INTERVAL, LOOKUP_MAX),
        resync_budget: 0,
        reach: Reachability::new(Instant::now()),
        reservations: HashMap::new(),
        conns: HashMap::new(),
    };
    // The operator's addresses are confirmed as they are: the node serves the DHT from the start.
    for a in runner
        .swarm
        .external_addresses()
        .cloned()
        .collect::<Vec<_>>()
    {
        let actions = runner.reach.confirm(a, Instant::now());
        runner.apply_reach(actions);
    }
    // A node that listens on loopback only is a local network of nodes on one host: nothing stands between
    // them, so its addresses are reachable by every peer it can have. It serves the DHT from the start
    // instead of waiting for AutoNAT (which needs a peer to dial first).
    // (Judged by the configured addresses: `0.0.0.0` binds every interface, loopback among them.)
    let configured: Vec<Multiaddr> = cfg.listen.iter().filter_map(|a| a.parse().ok()).collect();
    if !configured.is_empty() && configured.iter().all(is_loopback) {
        for a in listen_addrs.iter().map(without_p2p) {
            let actions = runner.reach.confirm(a, Instant::now());
            runner.apply_reach(actions);
        }
    }
    tokio::spawn(async move {
        let mut rx = rx;
        let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
        loop {
            tokio::select! {
                ev = runner.swarm.select_next_some() => runner.on_swarm_event(ev),
                cmd = rx.recv() => match cmd {
                    Some(c) => runner.on_command(c),
                    None => break,
                },
                _ = tick.tick() => runner.maintain(),
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        // Everything the task holds (the swarm, its store) goes before the command channel closes, which is
        // what `NetworkHandle::stopped` waits for.
        drop(runner);
        drop(rx);
        debug!("network task stopped");
    });
    info!(%peer_id, addrs = ?listen_addrs, "p2p network listening");
    Ok((
        NetworkHandle {
            tx,
            peer_id,
            listen_addrs,
            inbound,
            latencies,
        },
        lease_rx,
    ))
}

/// The DHT key under which a pool's members announce themselves, so members find each other even when the
/// nodes between them are not in the pool (gossipsub routes only among subscribers).
fn pool_key(pool: &PoolId) -> kad::RecordKey {
    kad::RecordKey::new(&[b"xov/pool/".as_slice(), pool.as_bytes()].concat())
}

fn announce(swarm: &mut Swarm<Behaviour>, pool: &PoolId) {
    if let Err(e) = swarm.behaviour_mut().kad.start_providing(pool_key(pool)) {
        debug!(error = %e, "cannot announce pool membership");
    }
}

fn subscribe(swarm: &mut Swarm<Behaviour>, topic: &IdentTopic) {
    let g = &mut swarm.behaviour_mut().gossipsub;
    if let Err(e) = g.subscribe(topic) {
        warn!(topic = %topic, error = %e, "cannot subscribe");
    }
    let _ = g.set_topic_params(topic.clone(), scoring::topic_params());
}

/// The outcome of validating a received message.
enum Verdict {
    Accept,
    Ignore,
    /// Its origin is over its rate: dropped, nobody blamed.
    RateLimited,
    /// Of another chain: dropped without blame, counted apart.
    OtherChain,
    /// Of an encoding version or kind we do not speak: dropped without blame, counted apart.
    OtherVersion,
    Reject(String),
}

/// The verdict on bytes that did not decode: another version's message is nobody's fault, anything else is
/// garbage its sender answers for.
fn undecodable(e: DecodeError) -> Verdict {
    if e.is_other_version() {
        Verdict::OtherVersion
    } else {
        Verdict::Reject(format!("undecodable: {e}"))
    }
}

impl From<Result<Inserted, MarketError>> for Verdict {
    fn from(r: Result<Inserted, MarketError>) -> Self {
        match r {
            Ok(Inserted::New | Inserted::Superseded { .. }) => Verdict::Accept,
            Ok(Inserted::Duplicate) => Verdict::Ignore,
            Err(MarketError::OtherChain { .. }) => Verdict::OtherChain,
            Err(e) if e.is_senders_fault() => Verdict::Reject(e.to_string()),
            Err(_) => Verdict::Ignore,
        }
    }
}

struct Runner {
    /// The bitcoin network this node trades on (its market's).
    chain: Chain,
    inbound: broadcast::Sender<AnyMessage>,
    latencies: Latencies,
    lease_tx: mpsc::Sender<IncomingLease>,
    lease_in: HashMap<u64, LeaseIn>,
    lease_out: HashMap<OutboundRequestId, LeaseOut>,
    next_token: u64,
    swarm: Swarm<Behaviour>,
    market: Arc<RwLock<Market>>,
    /// Gossip per connected peer (a cap against raw floods).
    rate: RateLimiter<PeerId>,
    /// Gossip per origin identity.
    origin_rate: RateLimiter<NodeId>,
    /// Sync requests served per peer.
    sync_rate: RateLimiter<PeerId>,
    reputation: Reputation,
    stats: GossipStats,
    target_peers: usize,
    /// Peers this node dialed successfully, remembered in the store across restarts.
    known: KnownPeers,
    /// Seed names dialed at start (for status and the doctor).
    seeds: Vec<String>,
    store: Store,
    /// (peer, pool) pairs already pulled on this connection.
    synced: HashSet<(PeerId, PoolId)>,
    /// Sync requests in flight: to whom, what was asked, and which page of its sync this is.
    requests: HashMap<OutboundRequestId, (PeerId, SyncRequest, u32)>,
    node_ids: HashMap<PeerId, NodeId>,
    listen_addrs: Vec<Multiaddr>,
    /// How often each joined pool's digest is compared with a random pool peer's (`None`: never).
    resync_every: Option<Duration>,
    last_resync: Instant,
    /// When the joined pools are announced in the DHT again.
    announce: Backoff,
    /// When a node below `target_peers` looks for more in the DHT (lookup_pace.rs).
    peer_lookup: LookupPace,
    /// Sync requests the current anti-entropy round may still send ([`sync::RESYNC_REQUESTS`] a round).
    resync_budget: u32,
    /// Whether others can dial us, and the relays we listen through (reachability.rs).
    reach: Reachability,
    /// Relay listeners, by the relay they go through.
    reservations: HashMap<ListenerId, PeerId>,
    /// Open connections.
    conns: HashMap<ConnectionId, Conn>,
}

struct Conn {
    peer: PeerId,
    addr: Multiaddr,
    relayed: bool,
    dialer: bool,
    since: Instant,
}

/// A relayed connection to a peer also reached directly (after hole punching) is closed after this long,
/// so that the requests already on it finish and new traffic takes the direct one.
/// Relays through which a lease message to an unconnected peer is also tried.
const MAX_RELAY_GUESSES: usize = 3;

/// How long a lease request, either way, is waited on at most: past request-response's own timeout (60 s,
/// behaviour.rs), for a request lost with a connection refused as it was established (rust-libp2p#4870) or
/// one the lease engine never answered. Until it ends, its peers' dials may take lease slots (gate.rs).
const LEASE_ANSWER_DEADLINE: Duration = Duration::from_secs(120);

/// A lease request sent and not yet answered.
struct LeaseOut {
    /// The peers whose dials may take a lease slot meanwhile (gate.rs): the counterparty, and the relays it
    /// may be reached through.
    peers: Vec<PeerId>,
    since: Instant,
    reply: oneshot::Sender<Result<lease_wire::LeaseResponse, LeaseSendError>>,
}

/// A lease request received and not yet answered; its peer's connection counts as in use meanwhile.
struct LeaseIn {
    peer: PeerId,
    since: Instant,
    channel: request_response::ResponseChannel<lease_wire::LeaseResponse>,
}
const RELAYED_GRACE: Duration = Duration::from_secs(10);

/// Pool announcements (DHT provider records) are repeated after `ANNOUNCE_FIRST`, then at twice the last
/// interval up to `ANNOUNCE_MAX` (5, 10, 20, 40 s ... 5 min): often while the node and the network around it
/// are new (the first announcement, made before any peer is known, reaches nobody), rarely after. Every 30 s for good was
/// most of an idle node's traffic at 100 simulated nodes (each announcement is a DHT lookup and 20
/// stores); records last 48 h, so 5 min is only for churn among the peers that hold them.
const ANNOUNCE_FIRST: Duration = Duration::from_secs(5);
const ANNOUNCE_MAX: Duration = Duration::from_secs(300);
/// The longest a node below its target waits between DHT lookups that find nobody new (lookup_pace.rs).
const LOOKUP_MAX: Duration = Duration::from_secs(60);

/// A repeating deadline whose interval doubles from `first` up to `max`.
#[derive(Debug, Clone)]
struct Backoff {
    next: Instant,
    every: Duration,
    max: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration, now: Instant) -> Self {
        Backoff {
            next: now + first,
            every: first,
            max,
        }
    }

    /// Whether the deadline passed at `now`; if so the next one is set, at twice the interval.
    fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.every = (self.every * 2).min(self.max);
        self.next = now + self.every;
        true
    }
}

/// One debug line (target `xov::kad`) per finished DHT query and per DHT request served, naming its kind:
/// what the DHT costs a node, by cause (`XOV_LOG=xov::kad=debug`; the simulator's `XOV_SIM_LOG` likewise).
fn log_kad(e: kad::Event, swarm: &mut Swarm<Behaviour>) -> kad::Event {
    if !tracing::enabled!(target: "xov::kad", tracing::Level::DEBUG) {
        return e;
    }
    // The routing table's size: a walk over its 256 buckets, so only when the line is wanted.
    let table: usize = swarm
        .behaviour_mut()
        .kad
        .kbuckets()
        .map(|b| b.num_entries())
        .sum();
    match &e {
        kad::Event::OutboundQueryProgressed {
            result,
            stats,
            step,
            ..
        } if step.last => {
            let kind = match result {
                kad::QueryResult::Bootstrap(_) => "bootstrap",
                kad::QueryResult::GetClosestPeers(_) => "get_closest_peers",
                kad::QueryResult::GetProviders(_) => "get_providers",
                kad::QueryResult::StartProviding(_) => "start_providing",
                kad::QueryResult::RepublishProvider(_) => "republish_provider",
                kad::QueryResult::GetRecord(_) => "get_record",
                kad::QueryResult::PutRecord(_) => "put_record",
                kad::QueryResult::RepublishRecord(_) => "republish_record",
            };
            debug!(target: "xov::kad", kind, requests = stats.num_requests(), table, "query finished");
        }
        kad::Event::RoutingUpdated {
            is_new_peer: true, ..
        } => debug!(target: "xov::kad", kind = "inserted", table, "routing table"),
        kad::Event::InboundRequest { request } => {
            let kind = match request {
                kad::InboundRequest::FindNode { .. } => "find_node",
                kad::InboundRequest::GetProvider { .. } => "get_provider",
                kad::InboundRequest::AddProvider { .. } => "add_provider",
                kad::InboundRequest::GetRecord { .. } => "get_record",
                kad::InboundRequest::PutRecord { .. } => "put_record",
            };
            debug!(target: "xov::kad", kind, table, "request served");
        }
        _ => {}
    }
    e
}

/// Below this many peers in a joined pool, the node looks up the pool's members in the DHT.
const MIN_POOL_PEERS: usize = 3;
/// Pool-member dials may exceed the target peer count up to this factor.
const POOL_DIAL_FACTOR: usize = 3;

impl Runner {
    /// Validates and applies one message received on `topic` (gossip) or through sync (`topic` = None, the
    /// pool named by the caller). Every path into the market from the network goes through here.
    fn apply(&mut self, topic: Option<TopicKind>, data: &[u8]) -> Verdict {
        match AnyMessage::from_bytes(data) {
            Ok(m) => self.apply_msg(topic, m),
            Err(e) => undecodable(e),
        }
    }

    /// A sync page of a pool's book, item by item as [`Runner::apply`] would take it, but with the offers'
    /// signatures checked together first (those the book does not hold already): a page arrives at once, and
    /// a batch checks it about three times as fast. Each verdict is the single check's, so a bad signature
    /// still costs the peer that sent it, per offer.
    fn apply_page(&mut self, pool: PoolId, items: &[Vec<u8>]) -> Vec<Verdict> {
        let decoded: Vec<Result<AnyMessage, DecodeError>> =
            items.iter().map(|b| AnyMessage::from_bytes(b)).collect();
        // Per offer of this pool, in order: its signature's verdict, or None to check it on its own.
        let signatures: Vec<Option<bool>> = {
            let offers: Vec<&Signed<Offer>> = decoded
                .iter()
                .filter_map(|m| match m {
                    Ok(AnyMessage::Offer(o)) if o.body().pool == pool => Some(o),
                    _ => None,
                })
                .collect();
            match self.market.read() {
                Ok(m) => {
                    let needed = m.unchecked_signatures(&offers);
                    drop(m);
                    let to_check: Vec<&Signed<Offer>> = offers
                        .iter()
                        .zip(&needed)
                        .filter(|(_, n)| **n)
                        .map(|(o, _)| *o)
                        .collect();
                    let mut checked = xov_protocol::signed::verify_all(&to_check).into_iter();
                    // an offer the book holds byte for byte was checked when it came in
                    needed
                        .iter()
                        .map(|&n| if n { checked.next() } else { Some(true) })
                        .collect()
                }
                Err(_) => vec![None; offers.len()],
            }
        };
        let mut signatures = signatures.into_iter();
        decoded
            .into_iter()
            .map(|m| match m {
                Ok(AnyMessage::Offer(o)) if o.body().pool == pool => self.apply_msg_signed(
                    Some(TopicKind::Pool(pool)),
                    AnyMessage::Offer(o),
                    signatures.next().flatten(),
                ),
                Ok(m) => self.apply_msg(Some(TopicKind::Pool(pool)), m),
                Err(e) => undecodable(e),
            })
            .collect()
    }

    fn apply_msg(&mut self, topic: Option<TopicKind>, msg: AnyMessage) -> Verdict {
        self.apply_msg_signed(topic, msg, None)
    }

    /// [`Runner::apply_msg`] for a message whose signature's verdict may be known already (`Some`: an offer
    /// of a sync page, checked in the page's batch, or a gossiped one, checked by [`Runner::admit_gossip`]);
    /// `None` checks it as a single message. Only offers use the verdict; other messages check their own.
    fn apply_msg_signed(
        &mut self,
        topic: Option<TopicKind>,
        msg: AnyMessage,
        signature_ok: Option<bool>,
    ) -> Verdict {
        if let Some(TopicKind::Pool(p)) = topic {
            // Only pools this node carries: nothing of another pool is stored (it would escape the pool's
            // per-provider caps).
            if !self.joined(&p) {
                return Verdict::Ignore;
            }
        }
        let now = unix_now();
        let Ok(mut m) = self.market.write() else {
            return Verdict::Ignore;
        };
        match (topic, msg) {
            (Some(TopicKind::Pool(p)), AnyMessage::Offer(o)) if o.body().pool == p => {
                m.accept_offer_signed(o, now, signature_ok).into()
            }
            (Some(TopicKind::Pool(p)), AnyMessage::OfferWithdrawal(w)) if w.body().pool == p => {
                m.accept_withdrawal(w, now).map(|_| Inserted::New).into()
            }
            (Some(TopicKind::Pool(p)), AnyMessage::Bid(b)) if b.body().pool == p => {
                // A valid bid travels on and goes to the lease engine, whose providers may answer it directly.
                match xov_protocol::validate::validate_bid(&b, now) {
                    Ok(()) => {
                        let _ = self.inbound.send(AnyMessage::Bid(b));
                        Verdict::Accept
                    }
                    Err(e) => Verdict::Reject(e.to_string()),
                }
            }
            (Some(TopicKind::Pool(p)), AnyMessage::Receipt(r)) if r.receipt().pool == p => {
                match m.evidence_mut().accept_receipt(r, now) {
                    Ok(xov_protocol::Added::New) => Verdict::Accept,
                    Ok(xov_protocol::Added::Duplicate) => Verdict::Ignore,
                    Err(e) if e.is_senders_fault() => Verdict::Reject(e.to_string()),
                    Err(_) => Verdict::Ignore,
                }
            }
            (Some(TopicKind::Pool(_)), AnyMessage::BondProof(b)) => {
                match m.evidence_mut().accept_bond_proof(b.clone(), now) {
                    Ok(true) => {
                        // Counted only once the wallet has checked the output on the chain.
                        let _ = self.inbound.send(AnyMessage::BondProof(b));
                        Verdict::Accept
                    }
                    Ok(false) => Verdict::Ignore,
                    Err(e) if e.is_senders_fault() => Verdict::Reject(e.to_string()),
                    Err(_) => Verdict::Ignore,
                }
            }
            (Some(TopicKind::Pool(p)), AnyMessage::LoadReport(l)) if l.body().pool == p => {
                match m.accept_load_report(&l, now) {
                    Ok(true) => Verdict::Accept,
                    Ok(false) => Verdict::Ignore,
                    Err(e) if e.is_senders_fault() => Verdict::Reject(e.to_string()),
                    Err(_) => Verdict::Ignore,
                }
            }
            (Some(TopicKind::Charters), AnyMessage::PoolCharter(c)) => {
                match m.accept_charter(c, now) {
                    Ok(true) => Verdict::Accept,
                    Ok(false) => Verdict::Ignore,
                    Err(MarketError::OtherChain { .. }) => Verdict::OtherChain,
                    Err(e) if e.is_senders_fault() => Verdict::Reject(e.to_string()),
                    Err(_) => Verdict::Ignore,
                }
            }
            (_, other) => Verdict::Reject(format!(
                "{:?} message not allowed on this topic",
                other.kind()
            )),
        }
    }

    fn penalise(&mut self, peer: &PeerId, points: u32) {
        if let Some(ban) = self.reputation.penalise(peer, points, Instant::now()) {
            self.banned(peer, ban, "penalty over the threshold");
        }
    }

    fn banned(&mut self, peer: &PeerId, ban: scoring::Banned, why: &str) {
        warn!(%peer, secs = ban.length.as_secs(), reason = why, "peer banned: disconnected and refused");
        self.stats.bans += 1;
        let _ = self.swarm.disconnect_peer_id(*peer);
        if self.known.forget(peer) {
            self.save_known_peers();
        }
    }

    /// Writes the remembered peers; a failed write loses only the newest entries (the node still has its
    /// bootstrap peers), so it is logged and the node goes on.
    fn save_known_peers(&self) {
        if let Err(e) = self
            .store
            .put_meta(known_peers::META_KEY, &self.known.encode())
        {
            warn!(error = %e, "cannot remember peers in the store");
        }
    }

    /// Decodes a gossiped message and checks its author's signature, then charges its origin: a forgery
    /// is the relay's fault, an origin over its rate is dropped without blaming the relay.
    fn admit_gossip(&mut self, data: &[u8]) -> Result<AnyMessage, Verdict> {
        let msg = AnyMessage::from_bytes(data).map_err(undecodable)?;
        let Some(origin) = origin::verified_origin(&msg) else {
            return Err(Verdict::Reject("signature does not verify".into()));
        };
        if !self.origin_rate.allow(&origin, Instant::now()) {
            return Err(Verdict::RateLimited);
        }
        Ok(msg)
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, msg: gossipsub::Message) {
        let acceptance = if !self.rate.allow(&source, Instant::now()) {
            self.stats.rate_limited += 1;
            self.penalise(&source, scoring::PENALTY_FLOOD);
            MessageAcceptance::Ignore
        } else {
            let topic = classify(&msg.topic, &self.chain);
            let verdict = match self.admit_gossip(&msg.data) {
                // admit_gossip checked the author's signature: an offer's is not checked twice
                Ok(m) => self.apply_msg_signed(topic, m, Some(true)),
                Err(v) => v,
            };
            match verdict {
                Verdict::RateLimited => {
                    self.stats.rate_limited += 1;
                    MessageAcceptance::Ignore
                }
                Verdict::Accept => {
                    self.stats.accepted += 1;
                    MessageAcceptance::Accept
                }
                Verdict::Ignore => {
                    self.stats.ignored += 1;
                    MessageAcceptance::Ignore
                }
                Verdict::OtherChain => {
                    self.stats.other_chain += 1;
                    MessageAcceptance::Ignore
                }
                Verdict::OtherVersion => {
                    self.stats.other_version += 1;
                    MessageAcceptance::Ignore
                }
                Verdict::Reject(why) => {
                    self.stats.rejected += 1;
                    debug!(peer = %source, reason = %why, "rejected gossip");
                    self.penalise(&source, scoring::PENALTY_INVALID);
                    MessageAcceptance::Reject
                }
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
    }

    /// Ends a lease request sent: its peers no longer hold lease slots for it.
    fn take_lease_out(
        &mut self,
        id: &OutboundRequestId,
    ) -> Option<oneshot::Sender<Result<lease_wire::LeaseResponse, LeaseSendError>>> {
        let out = self.lease_out.remove(id)?;
        for p in &out.peers {
            self.swarm.behaviour_mut().gate.lease_request_ended(p);
        }
        Some(out.reply)
    }

    /// Ends a lease request received.
    fn take_lease_in(
        &mut self,
        token: u64,
    ) -> Option<request_response::ResponseChannel<lease_wire::LeaseResponse>> {
        let l = self.lease_in.remove(&token)?;
        self.swarm.behaviour_mut().gate.lease_request_ended(&l.peer);
        Some(l.channel)
    }

    /// Ends the lease requests, either way, waited on past [`LEASE_ANSWER_DEADLINE`].
    fn expire_lease_requests(&mut self, now: Instant) {
        let old = |since: Instant| now.saturating_duration_since(since) >= LEASE_ANSWER_DEADLINE;
        let out: Vec<OutboundRequestId> = self
            .lease_out
            .iter()
            .filter(|(_, l)| old(l.since))
            .map(|(id, _)| *id)
            .collect();
        for id in out {
            if let Some(tx) = self.take_lease_out(&id) {
                let _ = tx.send(Err(LeaseSendError::NoAnswer));
            }
        }
        let inn: Vec<u64> = self
            .lease_in
            .iter()
            .filter(|(_, l)| old(l.since))
            .map(|(t, _)| *t)
            .collect();
        for t in inn {
            if let Some(l) = self.lease_in.get(&t) {
                warn!(peer = %l.peer, "a lease request was not answered in time; dropped");
            }
            self.take_lease_in(t);
        }
    }

    fn send_sync(&mut self, peer: PeerId, req: SyncRequest, page: u32) {
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, req.clone());
        self.requests.insert(id, (peer, req, page));
    }

    /// Anti-entropy: asks one random peer of each joined pool for the pool's digest; the answer decides
    /// which buckets to pull ([`Runner::on_digest`]).
    fn resync_round(&mut self) {
        let joined: Vec<PoolId> = match self.market.read() {
            Ok(m) => m.joined().iter().copied().collect(),
            Err(_) => return,
        };
        self.resync_budget = sync::RESYNC_REQUESTS;
        for pool in joined {
            if self.resync_budget == 0 {
                break;
            }
            let hash = pool_topic(&pool).hash();
            let members: Vec<PeerId> = self
                .swarm
                .behaviour()
                .gossipsub
                .all_peers()
                .filter(|(_, ts)| ts.contains(&&hash))
                .map(|(p, _)| *p)
                .collect();
            if members.is_empty() {
                continue;
            }
            let pick = rand_core::RngCore::next_u64(&mut rand_core::OsRng) as usize % members.len();
            let req = SyncRequest::Digest {
                chain: self.chain,
                pool: pool.0,
            };
            self.resync_budget -= 1;
            self.send_sync(members[pick], req, 0);
        }
    }

    /// A peer's digest of a joined pool: pull the buckets where it differs from ours, at most
    /// [`sync::MAX_RESYNC_BUCKETS`] from a random start (so that buckets that stay different, say over an
    /// offer one side holds withdrawn, do not keep others waiting).
    fn on_digest(&mut self, peer: PeerId, pool: PoolId, theirs: &[xov_protocol::BucketSum]) {
        let ours = match self.market.read() {
            Ok(m) if m.joined().contains(&pool) => m.digest(&pool),
            _ => return,
        };
        self.stats.resync_rounds += 1;
        let differ = xov_protocol::differing_buckets(&ours, theirs);
        if differ.is_empty() {
            return;
        }
        let start = rand_core::RngCore::next_u64(&mut rand_core::OsRng) as usize % differ.len();
        let picked: Vec<u16> = differ
            .iter()
            .cycle()
            .skip(start)
            .take(
                differ
                    .len()
                    .min(sync::MAX_RESYNC_BUCKETS)
                    .min(self.resync_budget as usize),
            )
            .copied()
            .collect();
        self.resync_budget -= picked.len() as u32;
        debug!(%peer, %pool, differing = differ.len(), pulled = picked.len(), "pool digest differs; pulling buckets");
        for bucket in picked {
            self.stats.resync_buckets += 1;
            let req = SyncRequest::Bucket {
                chain: self.chain,
                pool: pool.0,
                bucket,
                after: None,
            };
            self.send_sync(peer, req, 0);
        }
    }

    fn request_sync(&mut self, peer: PeerId, pool: PoolId) {
        if self.synced.insert((peer, pool)) {
            let req = SyncRequest::Book {
                chain: self.chain,
                pool: pool.0,
                after: None,
            };
            self.send_sync(peer, req, 0);
        }
    }

    /// The answer to a peer's sync request, or `None` when the peer is over its rate (the request is dropped
    /// unanswered, which closes its stream).
    fn on_sync_request(&mut self, peer: &PeerId, req: SyncRequest) -> Option<SyncResponse> {
        if !self.sync_rate.allow(peer, Instant::now()) {
            self.stats.sync_refused += 1;
            self.penalise(peer, scoring::PENALTY_FLOOD);
            return None;
        }
        if req.chain() != self.chain {
            // A peer of another network: it gets nothing of ours, and is not blamed for asking.
            return Some(SyncResponse::OtherChain { chain: self.chain });
        }
        let m = self.market.read().ok()?;
        Some(match req {
            SyncRequest::Charters { after, .. } => {
                let (charters, next) = m.charters_page(
                    after.map(PoolId),
                    sync::CHARTER_PAGE,
                    sync::CHARTER_PAGE_BYTES,
                );
                SyncResponse::Charters {
                    charters,
                    next: next.map(|p| p.0),
                }
            }
            SyncRequest::Book { pool, after, .. } => {
                let p = sync::pool_of(pool);
                let mut page = m.sync_page(&p, after, sync::PAGE);
                let mut evidence = if after.is_none() && m.joined().contains(&p) {
                    m.evidence().sync_items_within(
                        &p,
                        sync::MAX_SYNC_RECEIPTS,
                        crate::market::trust::SYNC_EVIDENCE_BYTES,
                    )
                } else {
                    Vec::new()
                };
                evidence.truncate(sync::MAX_SYNC_EVIDENCE);
                page.withdrawals.truncate(sync::MAX_SYNC_WITHDRAWALS);
                SyncResponse::Book {
                    pool,
                    offers: page.offers,
                    withdrawals: page.withdrawals,
                    next: page.next,
                    evidence,
                }
            }
            SyncRequest::Digest { pool, .. } => SyncResponse::Digest {
                pool,
                buckets: m.digest(&sync::pool_of(pool)),
            },
            SyncRequest::Bucket {
                pool,
                bucket,
                after,
                ..
            } => {
                let mut page = m.bucket_page(&sync::pool_of(pool), bucket, after, sync::PAGE);
                page.withdrawals.truncate(sync::MAX_SYNC_WITHDRAWALS);
                SyncResponse::Book {
                    pool,
                    offers: page.offers,
                    withdrawals: page.withdrawals,
                    next: page.next,
                    evidence: Vec::new(),
                }
            }
        })
    }

    fn on_sync_response(&mut self, peer: PeerId, id: OutboundRequestId, resp: SyncResponse) {
        let Some((asked, req, page)) = self.requests.remove(&id) else {
            return;
        };
        if asked != peer {
            return;
        }
        let checked = match sync::check_response(&req, page, resp) {
            Ok(c) => c,
            Err(fault) => {
                debug!(%peer, %fault, "sync answer breaks the protocol; dropped");
                self.stats.sync_faults += 1;
                self.penalise(&peer, scoring::PENALTY_BAD_SYNC);
                return;
            }
        };
        match checked {
            Checked::OtherChain(chain) => {
                debug!(%peer, theirs = %chain, ours = %self.chain, "peer trades on another chain; nothing synced");
                self.stats.other_chain += 1;
            }
            Checked::Charters { items, next } => {
                for c in items {
                    match self.apply(Some(TopicKind::Charters), &c) {
                        Verdict::Reject(why) => {
                            debug!(%peer, reason = %why, "bad charter in sync");
                            self.penalise(&peer, scoring::PENALTY_INVALID);
                        }
                        Verdict::OtherChain => self.stats.other_chain += 1,
                        Verdict::OtherVersion => self.stats.other_version += 1,
                        Verdict::Accept | Verdict::Ignore | Verdict::RateLimited => {}
                    }
                }
                if let Some(next) = next {
                    self.send_sync(peer, next, page + 1);
                }
            }
            Checked::Book { pool, items, next } => {
                if !self.joined(&pool) {
                    return;
                }
                for verdict in self.apply_page(pool, &items) {
                    match verdict {
                        Verdict::Accept => self.stats.synced += 1,
                        Verdict::Ignore | Verdict::RateLimited => {}
                        Verdict::OtherChain => self.stats.other_chain += 1,
                        Verdict::OtherVersion => self.stats.other_version += 1,
                        Verdict::Reject(why) => {
                            debug!(%peer, reason = %why, "bad offer in sync");
                            self.penalise(&peer, scoring::PENALTY_INVALID);
                        }
                    }
                }
                // A bucket's further pages come out of the round's budget: the answering peer steers `next`.
                let next = match (&req, next) {
                    (SyncRequest::Bucket { .. }, Some(_)) if self.resync_budget == 0 => None,
                    (SyncRequest::Bucket { .. }, Some(n)) => {
                        self.resync_budget -= 1;
                        Some(n)
                    }
                    (_, n) => n,
                };
                if let Some(next) = next {
                    self.send_sync(peer, next, page + 1);
                }
            }
            Checked::Digest { pool, buckets } => self.on_digest(peer, pool, &buckets),
        }
    }

    fn joined(&self, pool: &PoolId) -> bool {
        self.market
            .read()
            .map(|m| m.joined().contains(pool))
            .unwrap_or(false)
    }

    /// Gossips this node's own offers in `pool` again (a peer appeared after we had none there).
    fn republish_own(&mut self, pool: &PoolId) {
        let own: Vec<_> = self
            .market
            .read()
            .map(|m| m.own_offers())
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o.body().pool == *pool)
            .collect();
        for o in own {
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(pool_topic(pool), o.to_bytes());
        }
    }

    /// Connection bookkeeping and the reachability inputs (reachability.rs), before the event's own handling.
    fn on_reach_event(&mut self, ev: &SwarmEvent<BehaviourEvent>) {
        let now = Instant::now();
        let actions = match ev {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.conns.insert(
                    *connection_id,
                    Conn {
                        peer: *peer_id,
                        // The address the connection runs over: the one dialed, or for an inbound
                        // relayed connection the circuit it came in through (its remote address is just
                        // `/p2p/<peer>`).
                        addr: match endpoint {
                            libp2p::core::ConnectedPoint::Listener { local_addr, .. }
                                if endpoint.is_relayed() =>
                            {
                                local_addr.clone()
                            }
                            _ => endpoint.get_remote_address().clone(),
                        },
                        relayed: endpoint.is_relayed(),
                        dialer: endpoint.is_dialer(),
                        since: now,
                    },
                );
                Vec::new()
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.conns.remove(connection_id);
                if *num_established == 0 {
                    self.reach.disconnected(peer_id, now)
                } else {
                    Vec::new()
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed");
                self.reach.confirm(address.clone(), now)
            }
            SwarmEvent::ExternalAddrExpired { address } => self.reach.expire(address, now),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(e)) => match &e.result {
                Ok(()) => Vec::new(),
                Err(err) => {
                    debug!(addr = %e.tested_addr, server = %e.server, error = %err, "AutoNAT: not reachable at this address");
                    self.reach.probe_failed(now)
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                connection_id,
                peer_id,
                info,
                ..
            })) if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) => {
                match self.conns.get(connection_id) {
                    // Reached by dialing a direct address the peer itself listens on or announces: others
                    // can reach it there too. (A hole-punched connection is dialed as well, but to a NAT's
                    // mapping the peer does not announce: a node behind NAT is never taken as a relay.)
                    Some(c)
                        if c.dialer
                            && !c.relayed
                            && info
                                .listen_addrs
                                .iter()
                                .any(|a| without_p2p(a) == without_p2p(&c.addr)) =>
                    {
                        self.reach.relay_candidate(*peer_id, c.addr.clone(), now)
                    }
                    _ => Vec::new(),
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(
                relay::client::Event::ReservationReqAccepted {
                    relay_peer_id,
                    renewal,
                    ..
                },
            )) => {
                if !renewal {
                    info!(relay = %relay_peer_id, "a relay holds a slot for this node");
                }
                self.reach.reserved_with(*relay_peer_id);
                Vec::new()
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                addresses,
            } => {
                // A closed listener (a relay's, say) reports its addresses here and not as expired ones.
                let me = *self.swarm.local_peer_id();
                self.listen_addrs.retain(|a| {
                    !addresses
                        .iter()
                        .any(|gone| gone.clone().with(Protocol::P2p(me)) == *a)
                });
                match self.reservations.remove(listener_id) {
                    Some(relay) => {
                        info!(%relay, ?reason, "relay reservation closed");
                        self.reach.relay_failed(relay, now)
                    }
                    None => Vec::new(),
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => {
                match result {
                    Ok(_) => {
                        info!(peer = %remote_peer_id, "direct connection by hole punching");
                        self.stats.hole_punches += 1;
                    }
                    Err(e) => {
                        debug!(peer = %remote_peer_id, error = %e, "hole punching failed; the relay carries on");
                        self.stats.hole_punch_failures += 1;
                    }
                }
                Vec::new()
            }
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(e)) => {
                match e {
                    upnp::Event::NewExternalAddr(a) => {
                        info!(addr = %a, "UPnP: the router maps a port")
                    }
                    upnp::Event::GatewayNotFound => info!("UPnP: no router answered"),
                    upnp::Event::NonRoutableGateway => {
                        info!("UPnP: the router is itself behind NAT")
                    }
                    upnp::Event::ExpiredExternalAddr(a) => {
                        info!(addr = %a, "UPnP: mapping expired")
                    }
                }
                Vec::new()
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address
                    .clone()
                    .with(Protocol::P2p(*self.swarm.local_peer_id()));
                self.listen_addrs.retain(|a| *a != full);
                Vec::new()
            }
            _ => Vec::new(),
        };
        self.apply_reach(actions);
    }

    fn apply_reach(&mut self, actions: Vec<reachability::Action>) {
        let mut todo: std::collections::VecDeque<reachability::Action> = actions.into();
        while let Some(a) = todo.pop_front() {
            match a {
                reachability::Action::DhtServer(on) => {
                    info!(
                        dht = if on { "server" } else { "client" },
                        "reachability changed"
                    );
                    self.swarm.behaviour_mut().kad.set_mode(Some(if on {
                        kad::Mode::Server
                    } else {
                        kad::Mode::Client
                    }));
                }
                reachability::Action::Release { relay } => {
                    let ids: Vec<ListenerId> = self
                        .reservations
                        .iter()
                        .filter(|(_, r)| **r == relay)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ids {
                        self.reservations.remove(&id);
                        self.swarm.remove_listener(id);
                    }
                    info!(%relay, "relay slot given back: this node is reachable directly");
                }
                reachability::Action::Reserve { relay, addr } => {
                    match self
                        .swarm
                        .listen_on(addr.clone().with(Protocol::P2pCircuit))
                    {
                        Ok(id) => {
                            info!(%relay, "asking a relay for a slot (this node looks unreachable)");
                            self.reservations.insert(id, relay);
                        }
                        Err(e) => {
                            warn!(%relay, error = %e, "cannot listen through relay");
                            todo.extend(self.reach.relay_failed(relay, Instant::now()));
                        }
                    }
                }
            }
        }
    }

    /// Closes relayed connections to peers also connected directly, once the direct connection is
    /// [`RELAYED_GRACE`] old (requests already on the relayed one finish).
    fn close_redundant_relayed(&mut self, now: Instant) {
        // Per peer, since when a direct connection exists (its oldest).
        let mut direct: HashMap<PeerId, Instant> = HashMap::new();
        for c in self.conns.values().filter(|c| !c.relayed) {
            let since = direct.entry(c.peer).or_insert(c.since);
            *since = (*since).min(c.since);
        }
        let redundant: Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.relayed
                    && direct
                        .get(&c.peer)
                        .is_some_and(|d| now.saturating_duration_since(*d) >= RELAYED_GRACE)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in redundant {
            self.swarm.close_connection(id);
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        self.on_reach_event(&ev);
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => match e {
                gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                } => self.on_gossip(propagation_source, message_id, message),
                gossipsub::Event::Subscribed { peer_id, topic } => {
                    match classify(&topic, &self.chain) {
                        Some(TopicKind::Pool(p)) if self.joined(&p) => {
                            let first = self
                                .swarm
                                .behaviour()
                                .gossipsub
                                .all_peers()
                                .filter(|(_, ts)| ts.contains(&&topic))
                                .count()
                                == 1;
                            self.request_sync(peer_id, p);
                            if first {
                                self.republish_own(&p);
                            }
                        }
                        Some(TopicKind::Charters) => {
                            let req = SyncRequest::Charters {
                                chain: self.chain,
                                after: None,
                            };
                            self.send_sync(peer_id, req, 0);
                        }
                        _ => {}
                    }
                }
                gossipsub::Event::InvalidFrame { peer_id, error } => {
                    // No honest peer sends a frame over the limit both sides configure, or bytes that are
                    // not gossipsub: the frame was not read, and its sender is banned at once.
                    self.stats.invalid_frames += 1;
                    let now = Instant::now();
                    match self.reputation.ban(&peer_id, now) {
                        Some(ban) => self.banned(&peer_id, ban, scoring::frame_fault(error)),
                        None => {
                            let _ = self.swarm.disconnect_peer_id(peer_id);
                        }
                    }
                }
                _ => {}
            },
            SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => match e {
                request_response::Event::Message { peer, message, .. } => match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        // Unanswered (over its rate), the channel is dropped and the peer's stream closed.
                        if let Some(resp) = self.on_sync_request(&peer, request) {
                            let _ = self.swarm.behaviour_mut().sync.send_response(channel, resp);
                        }
                    }
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => self.on_sync_response(peer, request_id, response),
                },
                request_response::Event::OutboundFailure {
                    peer,
                    request_id,
                    error,
                    ..
                } => {
                    self.requests.remove(&request_id);
                    debug!(%peer, %error, "sync request failed");
                    // Allow a retry on the next subscription or join.
                    self.synced.retain(|(p, _)| *p != peer);
                }
                _ => {}
            },
            SwarmEvent::Behaviour(BehaviourEvent::Lease(e)) => match e {
                request_response::Event::Message { peer, message, .. } => match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        self.next_token += 1;
                        let token = self.next_token;
                        self.swarm.behaviour_mut().gate.lease_request_started(peer);
                        self.lease_in.insert(
                            token,
                            LeaseIn {
                                peer,
                                since: Instant::now(),
                                channel,
                            },
                        );
                        let incoming = IncomingLease {
                            peer,
                            from: node_id_of(&peer),
                            request,
                            token,
                        };
                        if self.lease_tx.try_send(incoming).is_err() {
                            warn!(%peer, "lease engine busy or absent; request dropped");
                            self.take_lease_in(token);
                        }
                    }
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        if let Some(tx) = self.take_lease_out(&request_id) {
                            let _ = tx.send(Ok(response));
                        }
                    }
                },
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                } => {
                    if let Some(tx) = self.take_lease_out(&request_id) {
                        let _ = tx.send(Err(LeaseSendError::from(&error)));
                    }
                }
                _ => {}
            },
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                if let (Some(id), Ok(mut l)) = (node_id_of(&peer), self.latencies.write()) {
                    l.insert(id, rtt);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if let Ok(pk) = info.public_key.clone().try_into_ed25519() {
                    if let Ok(id) = NodeId::from_bytes(pk.to_bytes()) {
                        self.node_ids.insert(peer_id, id);
                    }
                }
                if info
                    .protocols
                    .iter()
                    .any(|p| p.as_ref() == behaviour::KAD_PROTOCOL)
                {
                    for a in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, a);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => match log_kad(e, &mut self.swarm) {
                kad::Event::RoutingUpdated { peer, .. } => self.maybe_dial(peer),
                kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::GetClosestPeers(Ok(ok)),
                    ..
                } => {
                    for p in ok.peers {
                        self.maybe_dial(p.peer_id);
                    }
                }
                kad::Event::OutboundQueryProgressed {
                    result:
                        kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                            providers,
                            ..
                        })),
                    ..
                } => {
                    for p in providers {
                        self.dial_pool_member(p);
                    }
                }
                _ => {}
            },
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                for (peer, addr) in list {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    self.maybe_dial(peer);
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. }
                if self.reputation.is_banned(&peer_id, Instant::now()) =>
            {
                let _ = self.swarm.disconnect_peer_id(peer_id);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint: libp2p::core::ConnectedPoint::Dialer { address, .. },
                ..
            } => {
                if self.known.remember(&peer_id, &address, unix_now()) {
                    self.save_known_peers();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                // Rate buckets are kept (a reconnect does not refill them); they go once refilled.
                self.synced.retain(|(p, _)| *p != peer_id);
                self.node_ids.remove(&peer_id);
                self.requests.retain(|_, (p, _, _)| *p != peer_id);
                if let (Some(id), Ok(mut l)) = (node_id_of(&peer_id), self.latencies.write()) {
                    if l.len() > MAX_LATENCIES {
                        l.remove(&id);
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                if !self.listen_addrs.contains(&full) {
                    self.listen_addrs.push(full);
                }
            }
            _ => {}
        }
    }

    fn maybe_dial(&mut self, peer: PeerId) {
        if peer == *self.swarm.local_peer_id()
            || self.swarm.is_connected(&peer)
            || self.swarm.connected_peers().count() >= self.target_peers
            || self.reputation.is_banned(&peer, Instant::now())
        {
            return;
        }
        let _ = self.swarm.dial(peer);
    }

    /// Dials a fellow pool member, allowing more connections than the general target.
    fn dial_pool_member(&mut self, peer: PeerId) {
        if peer == *self.swarm.local_peer_id()
            || self.swarm.is_connected(&peer)
            || self.swarm.connected_peers().count() >= self.target_peers * POOL_DIAL_FACTOR
            || self.reputation.is_banned(&peer, Instant::now())
        {
            return;
        }
        let _ = self.swarm.dial(peer);
    }

    /// Turns gossipsub's graylist into a ban: a graylisted peer's messages are dropped unread, so our own
    /// penalties would never grow again while it stays connected and keeps probing.
    fn ban_graylisted(&mut self) {
        let now = Instant::now();
        let graylisted: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|p| {
                self.swarm
                    .behaviour()
                    .gossipsub
                    .peer_score(p)
                    .is_some_and(|s| s < scoring::GRAYLIST_THRESHOLD)
            })
            .copied()
            .collect();
        for p in graylisted {
            if let Some(ban) = self.reputation.ban(&p, now) {
                self.banned(&p, ban, "gossipsub graylisted it");
            } else if self.reputation.is_banned(&p, now) {
                let _ = self.swarm.disconnect_peer_id(p);
            }
        }
    }

    fn maintain(&mut self) {
        let now = Instant::now();
        if self
            .resync_every
            .is_some_and(|every| now.duration_since(self.last_resync) >= every)
        {
            self.last_resync = now;
            self.resync_round();
        }
        let actions = self.reach.tick(now);
        self.apply_reach(actions);
        self.close_redundant_relayed(now);
        for (peer, id) in self.swarm.behaviour_mut().gate.expire_guests(now) {
            debug!(%peer, "closing a guest connection: its time is up and the inbound slots are full");
            self.swarm.close_connection(id);
        }
        self.expire_lease_requests(now);
        for (peer, id) in self.swarm.behaviour_mut().gate.expire_lease_slots(now) {
            debug!(%peer, "closing a lease-slot connection: no lease request for a while and the outbound slots are full");
            self.swarm.close_connection(id);
        }
        let has_outbound = self.conns.values().any(|c| c.dialer && !c.relayed);
        let mut inbound: Vec<PeerId> = self
            .conns
            .values()
            .filter(|c| !c.dialer && !c.relayed)
            .map(|c| c.peer)
            .collect();
        inbound.sort();
        inbound.dedup();
        if let Some(peer) = self.reach.probe_dial(has_outbound, &inbound, now) {
            debug!(%peer, "dialing a peer back so that AutoNAT can ask it");
            let _ = self.swarm.dial(
                libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                    .build(),
            );
        }
        self.ban_graylisted();
        self.rate.prune(now);
        self.origin_rate.prune(now);
        self.sync_rate.prune(now);
        self.reputation.prune(now);
        let joined: Vec<PoolId> = self
            .market
            .read()
            .map(|m| m.joined().iter().copied().collect())
            .unwrap_or_default();
        let announce_now = self.announce.due(now);
        for p in &joined {
            let hash = pool_topic(p).hash();
            let peers = self
                .swarm
                .behaviour()
                .gossipsub
                .all_peers()
                .filter(|(_, ts)| ts.contains(&&hash))
                .count();
            // Re-announce now and then: provider records live on whichever peers were closest at the time.
            if announce_now {
                announce(&mut self.swarm, p);
            }
            if peers < MIN_POOL_PEERS && self.swarm.connected_peers().count() > 0 {
                self.swarm.behaviour_mut().kad.get_providers(pool_key(p));
            }
        }
        let refreshed = self
            .market
            .write()
            .map(|mut m| m.refresh_own(unix_now()))
            .unwrap_or_else(|_| Ok(Vec::new()));
        match refreshed {
            Ok(list) => {
                for o in list {
                    let topic = pool_topic(&o.body().pool);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic, o.to_bytes());
                }
            }
            Err(e) => warn!(error = %e, "refreshing own offers failed"),
        }
        let peers = self.swarm.connected_peers().count();
        if self.peer_lookup.due(peers, self.target_peers, now) {
            self.swarm
                .behaviour_mut()
                .kad
                .get_closest_peers(PeerId::random());
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::LeaseSend {
                peer,
                request,
                reply,
            } => {
                // The peers whose dials may take a lease slot above the caps while the request is in flight
                // (gate.rs): the counterparty, and the relays it may be reached through.
                let mut slot_peers = vec![peer];
                if !self.swarm.is_connected(&peer) {
                    // A peer behind NAT is reached through a relay it holds a slot with: offer the dial
                    // a few relays we know; one without its slot fails alone, the others go on.
                    let relays: Vec<Multiaddr> = self
                        .reach
                        .known_relays()
                        // a few: request-response keeps ten addresses per peer, and the peer's own
                        // (learned from identify and the DHT) must not be pushed out by guesses
                        .take(MAX_RELAY_GUESSES)
                        .cloned()
                        .collect();
                    for r in relays {
                        if let Some(Protocol::P2p(relay)) = r.iter().last() {
                            slot_peers.push(relay);
                        }
                        let a = r.with(Protocol::P2pCircuit).with(Protocol::P2p(peer));
                        self.swarm.add_peer_address(peer, a);
                    }
                }
                for p in &slot_peers {
                    self.swarm.behaviour_mut().gate.lease_request_started(*p);
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .lease
                    .send_request(&peer, request);
                self.lease_out.insert(
                    id,
                    LeaseOut {
                        peers: slot_peers,
                        since: Instant::now(),
                        reply,
                    },
                );
            }
            Command::LeaseReply { token, response } => {
                if let Some(ch) = self.take_lease_in(token) {
                    let _ = self.swarm.behaviour_mut().lease.send_response(ch, response);
                }
            }
            Command::Publish { topic, data } => {
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic.clone(), data)
                {
                    // No peers yet is normal for a new node; peers will pull the book when they connect.
                    debug!(topic = %topic, error = %e, "publish did not go out");
                }
            }
            Command::Join(pool) => {
                let topic = pool_topic(&pool);
                subscribe(&mut self.swarm, &topic);
                announce(&mut self.swarm, &pool);
                let hash = topic.hash();
                let members: Vec<PeerId> = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .filter(|(_, ts)| ts.contains(&&hash))
                    .map(|(p, _)| *p)
                    .collect();
                for p in members {
                    self.request_sync(p, pool);
                }
            }
            Command::Leave(pool) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .unsubscribe(&pool_topic(&pool));
                self.swarm
                    .behaviour_mut()
                    .kad
                    .stop_providing(&pool_key(&pool));
                self.synced.retain(|(_, p)| *p != pool);
            }
            Command::Status(tx) => {
                let _ = tx.send(NetworkStatus {
                    peer_id: self.swarm.local_peer_id().to_string(),
                    listen_addrs: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
                    connected_peers: self.swarm.connected_peers().count(),
                    known_peers: self.known.len(),
                    seeds: self.seeds.clone(),
                    reachability: self.reach.reach(Instant::now()),
                    relays: self.reach.reserved().map(|p| p.to_string()).collect(),
                    external_addrs: self
                        .swarm
                        .external_addresses()
                        .map(|a| a.to_string())
                        .collect(),
                    gossip: GossipStats {
                        refused_at_caps: self.swarm.behaviour().gate.refused(),
                        guests_closed: self.swarm.behaviour().gate.guests_closed(),
                        lease_slots_used: self.swarm.behaviour().gate.lease_slots_used(),
                        lease_slots_closed: self.swarm.behaviour().gate.lease_closed(),
                        ..self.stats.clone()
                    },
                });
            }
            Command::Peers(tx) => {
                let _ = tx.send(self.peer_views());
            }
            Command::Members(tx) => {
                let mut counts: HashMap<PoolId, usize> = HashMap::new();
                for (_, topics) in self.swarm.behaviour().gossipsub.all_peers() {
                    for t in topics {
                        if let Some(TopicKind::Pool(p)) = classify(t, &self.chain) {
                            *counts.entry(p).or_default() += 1;
                        }
                    }
                }
                let _ = tx.send(counts);
            }
        }
    }

    fn peer_views(&self) -> Vec<PeerView> {
        let now = Instant::now();
        let g = &self.swarm.behaviour().gossipsub;
        let mut topics: HashMap<PeerId, Vec<String>> = HashMap::new();
        for (p, ts) in g.all_peers() {
            topics.insert(
                *p,
                ts.iter()
                    .filter_map(|t| match classify(t, &self.chain) {
                        Some(TopicKind::Pool(id)) => Some(id.to_string()),
                        _ => None,
                    })
                    .collect(),
            );
        }
        let mut peers: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        peers.extend(topics.keys().copied());
        peers.extend(self.node_ids.keys().copied());
        peers.extend(self.reputation.peers());
        let mut out: Vec<PeerView> = peers
            .into_iter()
            .map(|p| PeerView {
                peer_id: p.to_string(),
                node_id: self.node_ids.get(&p).map(|n| n.to_string()),
                connected: self.swarm.is_connected(&p),
                gossip_score: g.peer_score(&p),
                penalty: self.reputation.penalty(&p, now),
                banned: self.reputation.is_banned(&p, now),
                pools: topics.remove(&p).unwrap_or_default(),
                connections: self
                    .conns
                    .values()
                    .filter(|c| c.peer == p)
                    .map(|c| ConnectionView {
                        address: c.addr.to_string(),
                        relayed: c.relayed,
                        outbound: c.dialer,
                    })
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_addresses_name_a_peer_or_a_dnsaddr() {
        let peer = identity::Keypair::generate_ed25519().public().to_peer_id();
        let cases: [(&str, String, Option<Bootstrap>); 5] = [
            (
                "ip and peer id",
                format!("/ip4/192.0.2.1/tcp/9738/p2p/{peer}"),
                Some(Bootstrap::Peer(peer)),
            ),
            (
                "dns name and peer id",
                format!("/dns4/seed.example/tcp/9738/p2p/{peer}"),
                Some(Bootstrap::Peer(peer)),
            ),
            (
                "dnsaddr alone: ids from its TXT records",
                "/dnsaddr/seed.example".into(),
                Some(Bootstrap::DnsAddr),
            ),
            (
                "dnsaddr with a peer id",
                format!("/dnsaddr/seed.example/p2p/{peer}"),
                Some(Bootstrap::Peer(peer)),
            ),
            (
                "no peer id: refused",
                "/ip4/192.0.2.1/tcp/9738".into(),
                None,
            ),
        ];
        for (name, a, want) in cases {
            let addr: Multiaddr = a.parse().unwrap();
            assert_eq!(bootstrap_kind(&addr), want, "{name}");
        }
    }
}
