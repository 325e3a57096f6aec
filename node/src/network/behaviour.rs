//! The node's libp2p behaviour: gossipsub for offers, kademlia and identify for discovery, ping for liveness,
//! request-response for book sync, and mDNS when enabled. Reachability: AutoNAT v2 (client and server)
//! confirms external addresses, circuit relay v2 serves peers behind NAT (server, with limits) and reaches
//! relays (client), DCUtR upgrades relayed connections to direct ones, and UPnP asks the router when enabled.

use std::time::Duration;

use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, identity, kad, mdns, ping, relay,
    request_response, upnp, StreamProtocol,
};
use sha2::{Digest, Sha256};

use super::gate;
use super::lease_wire::{LeaseRequest, LeaseResponse};
use super::scoring;
use super::sync::{SyncRequest, SyncResponse, PROTOCOL};

pub const KAD_PROTOCOL: &str = "/xov/kad/1.0.0";
/// How many peers a DHT walk must hear from before it ends, and how many hold each provider record
/// (kademlia's default is 20). Every walk (a lookup, a bootstrap, a pool announcement) asks until this many of
/// the closest peers answered, and at connection caps most dials of a walk are refused, so a walk at 20 went
/// on through most of a 100-node network (~80 requests). Pool announcements are repeated every 5 minutes at
/// most and pool members also meet through gossip, so 8 copies of a record are enough.
const KAD_REPLICATION: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(8) {
    Some(n) => n,
    None => panic!("8 is not zero"),
};
pub const IDENTIFY_PROTOCOL: &str = "/xov/id/1.0.0";
/// Largest gossip frame gossipsub reads. Our own messages are at most 16 KiB; anything larger is garbage, and
/// is read anyway up to this size so that it reaches validation and counts against its sender (a frame
/// over gossipsub's limit is dropped inside gossipsub with no event, its stream left unread, and its sender
/// would keep its connection unblamed). Past this size that still happens; see docs/pools.md.
pub const MAX_FRAME: usize = 1024 * 1024;
/// How long gossipsub remembers a message id, to drop a duplicate unread: the memory it costs grows with the
/// message rate times this, whoever sends (`[network] duplicate_cache_secs`).
pub const DUPLICATE_CACHE: Duration = Duration::from_secs(120);

// The gate and the limits come first: a connection they refuse is refused before any other behaviour hears
// of it (request-response hands a waiting request to a connection when it is established, and would lose it
// if a later behaviour refused that connection: rust-libp2p#4870).
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses, before their handshake, connections the caps would refuse once established.
    pub gate: gate::Behaviour,
    /// Caps on connections (`[network] max_connections`, `max_incoming`, `max_per_peer`).
    pub limits: connection_limits::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
    pub lease: request_response::cbor::Behaviour<LeaseRequest, LeaseResponse>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Asks peers to dial our candidate addresses back, confirming the ones that work; off when the operator
    /// names the node's external addresses (`[network] external_addresses`: those are taken as confirmed).
    pub autonat: Toggle<autonat::v2::client::Behaviour>,
    /// Dials peers' candidate addresses back for them.
    pub autonat_server: autonat::v2::server::Behaviour,
    /// Circuit relay v2 for peers behind NAT (`[network] relay_server`).
    pub relay: Toggle<relay::Behaviour>,
    /// Reservations with relays, and connections through them.
    pub relay_client: relay::client::Behaviour,
    /// Hole punching over relayed connections.
    pub dcutr: dcutr::Behaviour,
    /// Port mapping on the home router (`[network] upnp`).
    pub upnp: Toggle<upnp::tokio::Behaviour>,
}

/// How a node's behaviour is set up.
#[derive(Debug, Clone)]
pub struct Options {
    pub mdns: bool,
    /// How long gossip message ids are remembered to drop duplicates.
    pub duplicate_cache: Duration,
    /// Largest gossip frame read (tests build peers that send frames over the node's limit with another).
    pub max_frame: usize,
    pub connections: Caps,
    pub relay_server: bool,
    pub upnp: bool,
    /// Probe the node's own reachability with AutoNAT (off when its external addresses are configured).
    pub autonat_client: bool,
    /// Every gossipsub time constant (heartbeat, its first delay, fanout TTL, backoffs, IWANT follow-up,
    /// duplicate cache, queue durations) multiplied by this. 1 in a node; more only in the simulator's time
    /// dilation (`xov-testnet gossip-sim --time-scale`), never in the user's config.
    pub time_scale: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mdns: false,
            duplicate_cache: DUPLICATE_CACHE,
            max_frame: MAX_FRAME,
            connections: Caps::default(),
            relay_server: true,
            upnp: false,
            autonat_client: true,
            time_scale: 1,
        }
    }
}

/// Limits of the relay we offer, per the peer that uses it: reservations last an hour and are renewed;
/// a circuit carries a lease's messages and some gossip, so it may live 30 min and move 8 MiB before the
/// relay closes it (libp2p's defaults, 2 min and 128 KiB, are meant for hole punching only and would cut
/// a relayed buyer off its provider every two minutes). Rates per peer and per IP are libp2p's.
pub fn relay_config() -> relay::Config {
    relay::Config {
        // Each reservation holds an inbound connection: 32 stay well under the 48 inbound a node
        // allows by default, so relaying never locks newcomers out.
        max_reservations: 32,
        max_reservations_per_peer: 4,
        max_circuits: 32,
        max_circuits_per_peer: 4,
        max_circuit_duration: Duration::from_secs(30 * 60),
        max_circuit_bytes: 8 << 20,
        ..relay::Config::default()
    }
}

/// Connection caps (`[network] max_connections`, `max_incoming`, `max_per_peer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Established connections, in and out.
    pub total: u32,
    /// Of them, inbound; the rest is for outbound.
    pub incoming: u32,
    /// To one peer.
    pub per_peer: u32,
}

impl Default for Caps {
    /// A node with default settings (see `NetworkConfig`).
    fn default() -> Self {
        Caps {
            total: 64,
            incoming: 48,
            per_peer: 4,
        }
    }
}

impl Caps {
    /// What the gate applies before the handshake: `total`; `incoming` of them inbound; and the rest
    /// (`total - incoming`) outbound, so that the node's own dials leave the inbound share to newcomers
    /// (when `incoming` is all of `total`, outbound has no cap of its own).
    pub fn gate(&self) -> gate::Caps {
        let incoming = self.incoming.min(self.total);
        gate::Caps {
            total: self.total,
            incoming,
            outgoing: match self.total - incoming {
                0 => self.total,
                n => n,
            },
        }
    }

    /// libp2p's limits for established connections, the backstop behind the gate: the [`Caps::gate`] caps,
    /// the total and outbound ones [`gate::LEASE_SLOTS`] higher (the gate admits dials to lease
    /// counterparties there), and `per_peer`; as many pending inbound handshakes as a quarter of `incoming`
    /// (at least 4).
    pub fn limits(&self) -> connection_limits::ConnectionLimits {
        let g = self.gate();
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(g.total.saturating_add(gate::LEASE_SLOTS)))
            .with_max_established_incoming(Some(g.incoming))
            .with_max_established_outgoing(Some(g.outgoing.saturating_add(gate::LEASE_SLOTS)))
            .with_max_established_per_peer(Some(self.per_peer.max(1)))
            .with_max_pending_incoming(Some((self.incoming / 4).max(4)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BehaviourError {
    #[error("gossipsub configuration: {0}")]
    Gossipsub(String),
    #[error("mDNS: {0}")]
    Mdns(std::io::Error),
}

impl Behaviour {
    /// The node's behaviour; `relay_client` comes from the swarm builder (it is also a transport).
    pub fn build(
        key: &identity::Keypair,
        relay_client: relay::client::Behaviour,
        opts: &Options,
    ) -> Result<Self, BehaviourError> {
        let (mdns_enabled, duplicate_cache, max_frame) =
            (opts.mdns, opts.duplicate_cache, opts.max_frame);
        let peer_id = key.public().to_peer_id();
        // Our payloads carry their own ed25519 signatures, so gossipsub's envelope signing would only repeat
        // that work; messages are identified by content, which also makes re-publishing the same bytes a no-op.
        let mut config = gossipsub::ConfigBuilder::default();
        config
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
            .flood_publish(false);
        let k = opts.time_scale.max(1);
        if k > 1 {
            let d = gossipsub::Config::default();
            config
                .heartbeat_interval(Duration::from_millis(500) * k)
                .heartbeat_initial_delay(d.heartbeat_initial_delay() * k)
                .duplicate_cache_time(duplicate_cache * k)
                .fanout_ttl(d.fanout_ttl() * k)
                .prune_backoff(d.prune_backoff() * k)
                .unsubscribe_backoff(d.unsubscribe_backoff().as_secs() * u64::from(k))
                .graft_flood_threshold(d.graft_flood_threshold() * k)
                .iwant_followup_time(d.iwant_followup_time() * k)
                .published_message_ids_cache_time(d.published_message_ids_cache_time() * k)
                .publish_queue_duration(d.publish_queue_duration() * k)
                .forward_queue_duration(d.forward_queue_duration() * k);
        }
        let config = config
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
        kad_cfg.set_replication_factor(KAD_REPLICATION);
        // No bootstrap each time a peer enters a table smaller than K: at connection caps that never ends
        // (third_party/libp2p-kad/XOV-PATCH.md). The periodic one (5 min) stays, and the node walks the DHT
        // itself while below its target peers (lookup_pace.rs).
        kad_cfg.set_automatic_bootstrap_throttle(None);
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
        // A client until reachability.rs confirms a direct address (the runner switches it).
        kad.set_mode(Some(kad::Mode::Client));

        // The cache keeps the listen addresses (relayed ones too) of peers met, so a peer behind NAT can be
        // dialed again through its relay after the connection closed.
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public()).with_cache_size(256),
        );
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
            gate: gate::Behaviour::new(opts.connections.gate()),
            limits: connection_limits::Behaviour::new(opts.connections.limits()),
            autonat: opts
                .autonat_client
                .then(|| {
                    autonat::v2::client::Behaviour::new(
                        rand_core::OsRng,
                        autonat::v2::client::Config::default()
                            .with_probe_interval(Duration::from_secs(5)),
                    )
                })
                .into(),
            autonat_server: autonat::v2::server::Behaviour::new(rand_core::OsRng),
            relay: opts
                .relay_server
                .then(|| relay::Behaviour::new(peer_id, relay_config()))
                .into(),
            relay_client,
            dcutr: dcutr::Behaviour::new(peer_id),
            upnp: opts.upnp.then(upnp::tokio::Behaviour::default).into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gossipsub checks its config when built (e.g. the heartbeat against the queue durations): the stretched
    /// constants of a time-dilated simulation must pass those checks as the real ones do.
    #[tokio::test]
    async fn a_time_dilated_behaviour_builds() {
        for time_scale in [1, 2, 8, 32] {
            let opts = Options {
                time_scale,
                ..Options::default()
            };
            let built =
                super::super::build_swarm_with(identity::Keypair::generate_ed25519(), &opts);
            assert!(built.is_ok(), "time scale {time_scale}: {:?}", built.err());
        }
    }
}
