//! The node's libp2p behaviour: gossipsub for offers, kademlia and identify for discovery, ping for liveness,
//! request-response for book sync, and mDNS when enabled.

use std::time::Duration;

use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    connection_limits, gossipsub, identify, identity, kad, mdns, ping, request_response,
    StreamProtocol,
};
use sha2::{Digest, Sha256};

use super::lease_wire::{LeaseRequest, LeaseResponse};
use super::scoring;
use super::sync::{SyncRequest, SyncResponse, PROTOCOL};

pub const KAD_PROTOCOL: &str = "/xov/kad/1.0.0";
pub const IDENTIFY_PROTOCOL: &str = "/xov/id/1.0.0";
/// Largest gossip frame gossipsub reads. Our own messages are at most 16 KiB; anything larger is garbage, and
/// is read anyway up to this size so that it reaches validation and counts against its sender (a frame
/// over gossipsub's limit is dropped inside gossipsub with no event, its stream left unread, and its sender
/// would keep its connection unblamed). Past this size that still happens; see docs/pools.md.
pub const MAX_FRAME: usize = 1024 * 1024;
/// How long gossipsub remembers a message id, to drop a duplicate unread: the memory it costs grows with the
/// message rate times this, whoever sends (`[network] duplicate_cache_secs`).
pub const DUPLICATE_CACHE: Duration = Duration::from_secs(120);

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub gossipsub: gossipsub::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
    pub lease: request_response::cbor::Behaviour<LeaseRequest, LeaseResponse>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Caps on connections (`[network] max_connections`, `max_incoming`, `max_per_peer`).
    pub limits: connection_limits::Behaviour,
}

/// The connection caps of a node with default settings (see `NetworkConfig`).
pub fn default_limits() -> connection_limits::ConnectionLimits {
    limits(64, 48, 2)
}

/// Connection caps: `total` established in and out, `incoming` of them inbound, `per_peer` to one peer; as
/// many pending inbound handshakes as a quarter of `incoming` (at least 4).
pub fn limits(total: u32, incoming: u32, per_peer: u32) -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_established(Some(total))
        .with_max_established_incoming(Some(incoming.min(total)))
        .with_max_established_per_peer(Some(per_peer.max(1)))
        .with_max_pending_incoming(Some((incoming / 4).max(4)))
}

#[derive(Debug, thiserror::Error)]
pub enum BehaviourError {
    #[error("gossipsub configuration: {0}")]
    Gossipsub(String),
    #[error("mDNS: {0}")]
    Mdns(std::io::Error),
}

impl Behaviour {
    pub fn new(key: &identity::Keypair, mdns_enabled: bool) -> Result<Self, BehaviourError> {
        Self::with_duplicate_cache(key, mdns_enabled, DUPLICATE_CACHE)
    }

    /// As [`Behaviour::new`], remembering message ids for `duplicate_cache` to drop duplicates.
    pub fn with_duplicate_cache(
        key: &identity::Keypair,
        mdns_enabled: bool,
        duplicate_cache: Duration,
    ) -> Result<Self, BehaviourError> {
        Self::with_limits(
            key,
            mdns_enabled,
            duplicate_cache,
            MAX_FRAME,
            default_limits(),
        )
    }

    /// As [`Behaviour::with_duplicate_cache`], with another frame size limit (tests build peers that send
    /// frames over the node's limit with it).
    pub fn with_limits(
        key: &identity::Keypair,
        mdns_enabled: bool,
        duplicate_cache: Duration,
        max_frame: usize,
        connections: connection_limits::ConnectionLimits,
    ) -> Result<Self, BehaviourError> {
        let peer_id = key.public().to_peer_id();
        // Our payloads carry their own ed25519 signatures, so gossipsub's envelope signing would only repeat
        // that work; messages are identified by content, which also makes re-publishing the same bytes a no-op.
        let config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Anonymous)
            .validate_messages()
            .message_id_fn(|m: &gossipsub::Message| {
                gossipsub::MessageId::from(Sha256::digest(&m.data).to_vec())
            })
            .max_transmit_size(max_frame)
            .heartbeat_interval(Duration::from_millis(500))
            .duplicate_cache_time(duplicate_cache)
            // A publisher sends to its mesh like everyone else instead of to every peer it knows: measured
            // ~23x the offer's size sent per node with flooding over ~48 connections (docs/benchmarks.md).
            .flood_publish(false)
            .build()
            .map_err(|e| BehaviourError::Gossipsub(e.to_string()))?;
        let mut gossipsub =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, config)
                .map_err(|e| BehaviourError::Gossipsub(e.to_string()))?;
        gossipsub
            .with_peer_score(scoring::peer_score_params(), scoring::thresholds())
            .map_err(|e| BehaviourError::Gossipsub(e.to_string()))?;

        let mut kad_cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_cfg.set_query_timeout(Duration::from_secs(30));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
        // Serve the DHT even without a confirmed public address (test nets, LANs).
        kad.set_mode(Some(kad::Mode::Server));

        let identify = identify::Behaviour::new(identify::Config::new(
            IDENTIFY_PROTOCOL.into(),
            key.public(),
        ));
        let sync = request_response::cbor::Behaviour::new(
            [(
                StreamProtocol::new(PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
        );
        let lease = request_response::cbor::Behaviour::new(
            [(
                StreamProtocol::new(super::lease_wire::PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
        );
        let mdns = if mdns_enabled {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(BehaviourError::Mdns)?,
            )
        } else {
            None
        };
        Ok(Behaviour {
            gossipsub,
            kad,
            identify,
            ping: ping::Behaviour::default(),
            sync,
            lease,
            mdns: mdns.into(),
            limits: connection_limits::Behaviour::new(connections),
        })
    }
}
