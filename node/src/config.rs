//! Node configuration: `<datadir>/xov.toml` (all optional), then `XOV_*` environment overrides.
//!
//! Invariant: `[wallet] network` names the node's bitcoin network whether or not the wallet is enabled: it is
//! the chain of every pool, offer and order the node deals in ([`WalletConfig::chain`]), so it is checked at
//! load even for a node without a wallet.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const CONFIG_FILE: &str = "xov.toml";
/// Default local API address. Port chosen outside the usual ranges of bitcoind and OpenStack.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:9737";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}={value} is not valid: {message}")]
    Env {
        var: &'static str,
        value: String,
        message: String,
    },
    #[error(
        "api.listen = {0} is not a loopback address; the local API only binds 127.0.0.1 or ::1"
    )]
    NotLoopback(SocketAddr),
    /// `[provider.openstack]` could not be resolved (clouds.yaml, `OS_*` variables) or is not valid.
    #[error("[provider.openstack]: {0}")]
    OpenStack(#[from] xov_provisioner::ProvisionError),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub api: ApiConfig,
    pub log: LogConfig,
    pub network: NetworkConfig,
    pub wallet: WalletConfig,
    pub lease: LeaseConfig,
    pub provider: ProviderConfig,
    pub events: EventsConfig,
    pub trust: TrustConfig,
}

/// Trust evidence upkeep: how often bonds are checked again on the chain and load is announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Check every known bond against the chain this often (a spent bond stops counting at the next check).
    pub bond_recheck_secs: u64,
    /// Providers announce their running load to the pool this often (the input of anonymous limits).
    pub load_report_secs: u64,
    /// Re-gossip this node's own bond proofs this often, for nodes that joined since.
    pub bond_announce_secs: u64,
    /// A light client (compact block filters) does not check a bond proof claiming a confirmation more than
    /// this many blocks below its tip: such a proof is refused and forgotten, so a claim near genesis cannot
    /// make it scan the whole chain. Default one year of blocks. Not used with bitcoind RPC.
    pub bond_max_scan_blocks: u32,
    /// At most this many chain checks of others' bond proofs per hour (one at a time); proofs beyond the
    /// budget wait for a later recheck. This node's own bonds are not counted against it.
    pub bond_checks_per_hour: u32,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            bond_recheck_secs: 300,
            load_report_secs: 60,
            bond_announce_secs: 600,
            bond_max_scan_blocks: 52_560,
            bond_checks_per_hour: 120,
        }
    }
}

/// The admission defaults of a provider node: generous enough that a new pool, where nobody has a history
/// yet, can trade, and tightening as the pool fills (anonymous limits halve at 1M sats/h of pool load).
pub fn default_admission() -> xov_protocol::AdmissionPolicy {
    let mut p = xov_protocol::AdmissionPolicy::default();
    p.anonymous.max_concurrent_leases = 2;
    p.anonymous.max_sats_per_hour = 100_000;
    p.anonymous.reference_sats_per_hour = 1_000_000;
    p.basic.max_sats_per_hour = p.basic.max_sats_per_hour.max(200_000);
    p.established.max_sats_per_hour = p.established.max_sats_per_hour.max(1_000_000);
    p
}

/// Where drain warnings go besides the event stream (`xov events`, the dashboard): both optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// POST each drain warning as JSON to this URL.
    pub webhook: Option<String>,
    /// Run this with `sh -c` for each drain warning; `XOV_EVENT` holds the warning as JSON, and
    /// `XOV_LEASE_ID`, `XOV_LEASE_STATE`, `XOV_RUNS_UNTIL`, `XOV_MESSAGE` its main fields.
    pub command: Option<String>,
}

/// Selling machines: the cloud to run them on and what to offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub enabled: bool,
    /// Pool to offer in.
    pub pool: String,
    /// ISO country code and free-form region of the machines.
    pub country: String,
    pub region: String,
    pub offer_ttl_secs: u32,
    pub min_lease_secs: u32,
    pub max_lease_secs: u32,
    /// Re-read the cloud's inventory and republish offers this often.
    pub inventory_interval_secs: u64,
    /// Compare the cloud's tagged machines with the leases this often.
    pub reconcile_interval_secs: u64,
    /// The cloud: `cloud = "NAME"` (clouds.yaml), the connection inline, or nothing (then `OS_CLOUD` or the
    /// `OS_*` variables); network, timeouts and the like always here.
    pub openstack: Option<xov_provisioner::OpenStackSettings>,
    /// `openstack` resolved against clouds.yaml and the environment when the config was loaded.
    #[serde(skip)]
    pub openstack_resolved: Option<xov_provisioner::OpenStackConfig>,
    pub inventory: xov_provisioner::InventoryMapping,
    /// SSH login user of the offered images, told to buyers.
    pub ssh_user: String,
    /// Gossip offers into the pool (true), or keep them unlisted and send them only to buyers whose gossiped
    /// bids they meet (false): for providers who would rather not show their whole inventory and prices.
    pub advertise: bool,
    /// How much buyers may run here by trust tier; anonymous limits shrink as the pool's load grows.
    pub admission: xov_protocol::AdmissionPolicy,
}

impl ProviderConfig {
    /// Resolves `[provider.openstack]` of an enabled provider against clouds.yaml and the `OS_*` variables
    /// read through `env`, and keeps the result.
    pub fn resolve_openstack(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let (true, Some(os)) = (self.enabled, &self.openstack) {
            self.openstack_resolved = Some(os.resolve_with(env)?);
        }
        Ok(())
    }

    /// The cloud's configuration: as resolved when the config was loaded, or resolved now from the
    /// process environment (a config built in code). `None` without a `[provider.openstack]` section.
    pub fn openstack_config(
        &self,
    ) -> Option<Result<xov_provisioner::OpenStackConfig, xov_provisioner::ProvisionError>> {
        let settings = self.openstack.as_ref()?;
        Some(match &self.openstack_resolved {
            Some(c) => Ok(c.clone()),
            None => settings.resolve_from_environment(),
        })
    }
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            enabled: false,
            pool: xov_protocol::PUBLIC_POOL_NAME.into(),
            country: "DE".into(),
            region: String::new(),
            offer_ttl_secs: 3600,
            min_lease_secs: 3600,
            max_lease_secs: 30 * 24 * 3600,
            inventory_interval_secs: 300,
            reconcile_interval_secs: 60,
            openstack: None,
            openstack_resolved: None,
            inventory: Default::default(),
            ssh_user: "debian".into(),
            advertise: true,
            admission: default_admission(),
        }
    }
}

/// A provider's lease terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// Confirmations a payment needs before the machine launches.
    pub min_confirmations: u32,
    /// Unconfirmed, non-RBF payments up to this many sats launch at once (0 = never).
    pub zero_conf_max_sat: u64,
    pub invoice_ttl_secs: u64,
    /// Warn the buyer this long before funds run out.
    pub warn_before_secs: u64,
    /// Keep running this long after funds ran out.
    pub grace_secs: u64,
    /// Keep a halted machine this long for a late top-up before deleting it.
    pub hold_secs: u64,
    /// A payment seen but unconfirmed keeps the machine reserved this long past the invoice's expiry.
    pub payment_seen_ttl_secs: u64,
    /// Give up launching this long after payment: the lease fails, is refunded, and any machine is deleted.
    pub launch_deadline_secs: u64,
    /// Refunds below this many sats are written off (they would mostly pay the network fee).
    pub refund_min_sat: u64,
    /// Confirmations a payment needs before it is refunded (at least `min_confirmations`).
    pub refund_confirmations: u32,
    /// As a buyer: raise an alert when a paid lease has not started after this long.
    pub start_timeout_secs: u64,
    /// Unpaid invoices one buyer may hold open here at once.
    pub max_unpaid_per_buyer: u32,
    /// As a buyer paying in slices: pay the next slice this long before the provider's drain warning would
    /// come (`warn_before_secs` before the paid time ends), so it can confirm in time.
    pub slice_lead_secs: u64,
    /// As a buyer: a provider status older than this is stale; before paying a slice a fresh one is asked
    /// for, and a provider that does not answer within this long gets no slice.
    pub status_fresh_secs: u64,
}

impl LeaseConfig {
    /// The lease machine's terms from this section.
    pub fn terms(&self) -> crate::lease::machine::Terms {
        crate::lease::machine::Terms {
            min_confirmations: self.min_confirmations,
            zero_conf_max_sat: self.zero_conf_max_sat,
            warn_before_secs: self.warn_before_secs,
            grace_secs: self.grace_secs,
            hold_secs: self.hold_secs,
            payment_seen_ttl_secs: self.payment_seen_ttl_secs,
            launch_deadline_secs: self.launch_deadline_secs,
            refund_min_sat: self.refund_min_sat,
            refund_confirmations: self.refund_confirmations,
            start_timeout_secs: self.start_timeout_secs,
            slice_lead_secs: self.slice_lead_secs,
            status_fresh_secs: self.status_fresh_secs,
            ..Default::default()
        }
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            min_confirmations: 1,
            zero_conf_max_sat: 0,
            invoice_ttl_secs: 3600,
            warn_before_secs: 600,
            grace_secs: 300,
            hold_secs: 3600,
            payment_seen_ttl_secs: 6 * 3600,
            launch_deadline_secs: 1800,
            refund_min_sat: 600,
            refund_confirmations: 3,
            start_timeout_secs: 3600,
            max_unpaid_per_buyer: 3,
            slice_lead_secs: 1200,
            status_fresh_secs: 300,
        }
    }
}

/// The built-in bitcoin wallet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalletConfig {
    pub enabled: bool,
    /// bitcoin, testnet4, signet or regtest (also `testnet`, testnet3). The node's chain even with the wallet
    /// off: it trades only in pools of this network.
    pub network: String,
    /// `filters` (compact block filters, the default: no server needed) or `rpc` (your own bitcoind).
    pub chain: String,
    /// Peers serving compact block filters (host:port), for `chain = "filters"`.
    pub peers: Vec<String>,
    /// bitcoind RPC URL and cookie file, for `chain = "rpc"`.
    pub rpc_url: String,
    pub rpc_cookie: String,
    /// Addresses watched beyond the last one handed out.
    pub lookahead: u32,
    /// This node's own payments still unconfirmed after this many blocks are replaced by ones paying the
    /// chain's current fee estimate (RBF), so they confirm (0: never; `xov wallet bump` still works).
    pub bump_after_blocks: u32,
    /// Fee rate paid when there is no estimate (the light client never has one), sat/vB.
    pub fee_target: u64,
    /// Blocks to confirm within, for bitcoind's `estimatesmartfee` (RPC source).
    pub fee_confirm_within: u16,
    /// Cap on any fee rate the wallet chooses by itself, sat/vB.
    pub fee_max: u64,
}

impl Default for WalletConfig {
    fn default() -> Self {
        WalletConfig {
            enabled: false,
            network: "regtest".into(),
            chain: "filters".into(),
            peers: Vec::new(),
            rpc_url: "http://127.0.0.1:18443".into(),
            rpc_cookie: String::new(),
            lookahead: xov_wallet::DEFAULT_LOOKAHEAD,
            bump_after_blocks: 3,
            fee_target: xov_wallet::FeePolicy::default().target_sat_per_vb,
            fee_confirm_within: xov_wallet::FeePolicy::default().confirm_within_blocks,
            fee_max: xov_wallet::FeePolicy::default().max_sat_per_vb,
        }
    }
}

impl WalletConfig {
    /// How the wallet chooses fees when a command names no rate.
    pub fn fee_policy(&self) -> xov_wallet::FeePolicy {
        xov_wallet::FeePolicy {
            target_sat_per_vb: self.fee_target,
            confirm_within_blocks: self.fee_confirm_within,
            max_sat_per_vb: self.fee_max,
        }
    }

    /// The wallet crate's view of this section.
    pub fn chain_source(&self) -> Result<xov_wallet::ChainSource, ConfigError> {
        let bad = |message: String| ConfigError::Parse {
            path: "wallet".into(),
            message,
        };
        match self.chain.as_str() {
            "filters" => {
                let peers = self
                    .peers
                    .iter()
                    .map(|p| {
                        p.parse()
                            .map_err(|e| bad(format!("peer '{p}': {e}; expected host:port")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if peers.is_empty() {
                    return Err(bad("chain = \"filters\" needs at least one peer in wallet.peers (XOV_WALLET_PEERS)".into()));
                }
                Ok(xov_wallet::ChainSource::CompactFilters { peers })
            }
            "rpc" => Ok(xov_wallet::ChainSource::BitcoindRpc {
                url: self.rpc_url.clone(),
                cookie_file: self.rpc_cookie.clone().into(),
                poll_ms: 200,
            }),
            other => Err(bad(format!(
                "chain = '{other}': expected \"filters\" or \"rpc\""
            ))),
        }
    }

    /// The chain this node trades on: the genesis block of `network` (pools, offers and orders name it).
    pub fn chain(&self) -> Result<xov_protocol::Chain, ConfigError> {
        self.bitcoin_network().map(chain_of)
    }

    pub fn bitcoin_network(&self) -> Result<xov_wallet::Network, ConfigError> {
        self.network.parse().map_err(|_| ConfigError::Parse {
            path: "wallet".into(),
            message: format!(
                "network = '{}': expected bitcoin, testnet4, signet or regtest",
                self.network
            ),
        })
    }
}

/// The protocol's name for a bitcoin network: the hash of its genesis block, from the `bitcoin` crate.
pub fn chain_of(network: xov_wallet::Network) -> xov_protocol::Chain {
    let genesis = xov_wallet::bitcoin::constants::ChainHash::using_genesis_block(network);
    xov_protocol::Chain::from_genesis_hash(genesis.to_bytes())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// libp2p listen addresses (multiaddrs): TCP and QUIC by default.
    pub listen: Vec<String>,
    /// Peers to contact at start, as multiaddrs ending in `/p2p/<peer id>`, or `/dnsaddr/<name>` seed names.
    pub bootstrap: Vec<String>,
    /// Seed names (`/dnsaddr/<name>`) dialed at start besides the bootstrap peers. Unset: the list this
    /// build ships for the bitcoin network (none for regtest; docs/pools.md). Set: replaces it (`[]`: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<String>>,
    /// Find peers on the local network by mDNS (off by default: it announces the node to the LAN).
    pub mdns: bool,
    /// Keep dialing discovered peers until this many are connected.
    pub target_peers: usize,
    /// Messages per second one peer may send us before the excess is dropped and held against it.
    pub peer_rate_per_sec: u32,
    /// Burst allowance on top of the rate.
    pub peer_burst: u32,
    /// Gossip messages per second one origin identity (the signing author, whoever relays it) may have
    /// accepted; the excess is dropped without blaming the relays.
    pub origin_rate_per_sec: u32,
    /// Burst allowance per origin: covers a provider republishing all its offers at once.
    pub origin_burst: u32,
    /// How long gossip message ids are remembered to drop duplicates unread. Its memory grows with the
    /// message rate times this (about 200 bytes a message); shorter lets late duplicates be checked again.
    pub duplicate_cache_secs: u64,
    /// Pools joined on first start (names or ids); later joins and leaves are remembered in the database.
    pub pools: Vec<String>,
    /// Addresses other nodes can dial this one at, announced to peers (multiaddrs, e.g.
    /// `/ip4/203.0.113.7/tcp/9738` on a host whose router forwards TCP 9738 to it). Needed where the node
    /// cannot see its public address itself: behind a port-forwarding router.
    pub external_addresses: Vec<String>,
    /// Connections this node keeps at most, in and out together; more are refused (the 50-node gossip run
    /// had every node connected to nearly all others).
    pub max_connections: u32,
    /// Of those, inbound connections at most, so that dialers cannot take every slot; the rest
    /// (`max_connections - max_incoming`) is the most the node dials itself, so that its own dials cannot
    /// take every slot from newcomers either (when `max_incoming` is all of `max_connections`, dials are
    /// capped by `max_connections` only).
    pub max_incoming: u32,
    /// Connections to one peer at most: a relayed one and the direct one that replaces it, and AutoNAT's
    /// dial-backs each way, count all.
    pub max_per_peer: u32,
    /// Offer circuit relay v2 to peers behind NAT, within the limits in docs/pools.md. Only worth it on a
    /// node others can dial; a node behind NAT is never chosen as a relay by xov nodes.
    pub relay_server: bool,
    /// Ask the home router for a port mapping by UPnP IGD (off by default: it opens a port on the router).
    pub upnp: bool,
    /// Every this many seconds, compare each joined pool's book with a random pool peer's by digest and pull
    /// what differs, so offers and withdrawals gossip lost still arrive (0: never; docs/protocol.md).
    pub resync_secs: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/9738".into(),
                "/ip4/0.0.0.0/udp/9738/quic-v1".into(),
            ],
            bootstrap: Vec::new(),
            seeds: None,
            mdns: false,
            target_peers: 8,
            peer_rate_per_sec: 200,
            peer_burst: 2000,
            origin_rate_per_sec: 20,
            origin_burst: 400,
            duplicate_cache_secs: 120,
            pools: vec![xov_protocol::PUBLIC_POOL_NAME.to_string()],
            external_addresses: Vec::new(),
            max_connections: 64,
            max_incoming: 48,
            max_per_peer: 4,
            relay_server: true,
            upnp: false,
            resync_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the local HTTP API listens; must be loopback. Port 0 picks a free port (written to `<datadir>/api`).
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `xov_node=debug,info`.
    pub level: String,
    /// One JSON object per line instead of human-readable lines.
    pub json: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_API_LISTEN.parse().expect("constant address parses"),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            json: false,
        }
    }
}

impl Config {
    /// Reads `path` if it exists (a missing file means defaults), then applies overrides from `env`.
    pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut cfg = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        cfg.apply_env(&env)?;
        cfg.provider.resolve_openstack(&env)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Environment overrides, one variable per setting: `XOV_API_LISTEN`, `XOV_LOG_LEVEL`, `XOV_LOG_JSON`,
    /// `XOV_NETWORK_LISTEN`, `XOV_NETWORK_BOOTSTRAP`, `XOV_NETWORK_SEEDS` (empty: none) and
    /// `XOV_NETWORK_EXTERNAL_ADDRESSES` (comma-separated lists), `XOV_NETWORK_MDNS`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("XOV_API_LISTEN") {
            self.api.listen =
                v.parse()
                    .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                        var: "XOV_API_LISTEN",
                        value: v.clone(),
                        message: e.to_string(),
                    })?;
        }
        if let Some(v) = env("XOV_LOG_LEVEL") {
            self.log.level = v;
        }
        if let Some(v) = env("XOV_LOG_JSON") {
            self.log.json = parse_bool("XOV_LOG_JSON", v)?;
        }
        if let Some(v) = env("XOV_NETWORK_MDNS") {
            self.network.mdns = parse_bool("XOV_NETWORK_MDNS", v)?;
        }
        if let Some(v) = env("XOV_NETWORK_RELAY_SERVER") {
            self.network.relay_server = parse_bool("XOV_NETWORK_RELAY_SERVER", v)?;
        }
        if let Some(v) = env("XOV_NETWORK_UPNP") {
            self.network.upnp = parse_bool("XOV_NETWORK_UPNP", v)?;
        }
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        if let Some(v) = env("XOV_NETWORK_LISTEN") {
            self.network.listen = list(v);
        }
        if let Some(v) = env("XOV_NETWORK_BOOTSTRAP") {
            self.network.bootstrap = list(v.clone());
        }
        if let Some(v) = env("XOV_NETWORK_SEEDS") {
            self.network.seeds = Some(list(v.clone()));
        }
        if let Some(v) = env("XOV_NETWORK_EXTERNAL_ADDRESSES") {
            self.network.external_addresses = list(v.clone());
        }
        for (var, slot) in [
            (
                "XOV_LEASE_WARN_BEFORE_SECS",
                &mut self.lease.warn_before_secs,
            ),
            ("XOV_LEASE_GRACE_SECS", &mut self.lease.grace_secs),
            (
                "XOV_TRUST_BOND_RECHECK_SECS",
                &mut self.trust.bond_recheck_secs,
            ),
            (
                "XOV_TRUST_LOAD_REPORT_SECS",
                &mut self.trust.load_report_secs,
            ),
            ("XOV_LEASE_HOLD_SECS", &mut self.lease.hold_secs),
            ("XOV_NETWORK_RESYNC_SECS", &mut self.network.resync_secs),
            (
                "XOV_LEASE_INVOICE_TTL_SECS",
                &mut self.lease.invoice_ttl_secs,
            ),
        ] {
            if let Some(v) = env(var) {
                *slot = v.parse().map_err(|_| ConfigError::Env {
                    var,
                    value: v.clone(),
                    message: "expected a number of seconds".into(),
                })?;
            }
        }
        if let Some(v) = env("XOV_WALLET_ENABLED") {
            self.wallet.enabled = parse_bool("XOV_WALLET_ENABLED", v)?;
        }
        if let Some(v) = env("XOV_WALLET_NETWORK") {
            self.wallet.network = v;
        }
        if let Some(v) = env("XOV_WALLET_CHAIN") {
            self.wallet.chain = v;
        }
        if let Some(v) = env("XOV_WALLET_PEERS") {
            self.wallet.peers = list(v);
        }
        if let Some(v) = env("XOV_WALLET_RPC_URL") {
            self.wallet.rpc_url = v;
        }
        if let Some(v) = env("XOV_WALLET_RPC_COOKIE") {
            self.wallet.rpc_cookie = v;
        }
        if let Some(v) = env("XOV_EVENTS_WEBHOOK") {
            self.events.webhook = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = env("XOV_EVENTS_COMMAND") {
            self.events.command = Some(v).filter(|v| !v.is_empty());
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.provider.enabled {
            let bad = |m: String| ConfigError::Parse {
                path: "provider".into(),
                message: m,
            };
            self.provider.openstack.as_ref().ok_or_else(|| {
                bad("provider.enabled needs a [provider.openstack] section".into())
            })?;
            if let Some(os) = &self.provider.openstack_resolved {
                os.validate()?;
            }
            self.provider
                .inventory
                .validate()
                .map_err(|e| bad(e.to_string()))?;
            if !self.wallet.enabled {
                return Err(bad(
                    "a provider needs the wallet ([wallet] enabled = true) to be paid".into(),
                ));
            }
        }
        // The network is the node's chain, wallet or not.
        self.wallet.bitcoin_network()?;
        if self.wallet.enabled {
            self.wallet.chain_source()?;
            if self.wallet.fee_target == 0 || self.wallet.fee_max < self.wallet.fee_target {
                return Err(ConfigError::Parse {
                    path: "wallet".into(),
                    message: format!(
                        "fee_target = {} and fee_max = {}: need 1 <= fee_target <= fee_max (sat/vB)",
                        self.wallet.fee_target, self.wallet.fee_max
                    ),
                });
            }
        }
        if self.network.max_connections < 2
            || self.network.max_incoming == 0
            || self.network.max_per_peer == 0
        {
            return Err(ConfigError::Parse {
                path: "network".into(),
                message: format!(
                    "max_connections = {}, max_incoming = {}, max_per_peer = {}: a node needs at least 2 connections, 1 inbound and 1 per peer",
                    self.network.max_connections, self.network.max_incoming, self.network.max_per_peer
                ),
            });
        }
        for a in self
            .network
            .listen
            .iter()
            .chain(&self.network.bootstrap)
            .chain(self.network.seeds.iter().flatten())
            .chain(&self.network.external_addresses)
        {
            a.parse::<libp2p::Multiaddr>()
                .map_err(|e| ConfigError::Parse {
                    path: "network".into(),
                    message: format!(
                        "'{a}' is not a multiaddr ({e}); example: /ip4/127.0.0.1/tcp/9738"
                    ),
                })?;
        }
        if !self.api.listen.ip().is_loopback() {
            return Err(ConfigError::NotLoopback(self.api.listen));
        }
        if let Some(w) = &self.events.webhook {
            if !w.starts_with("http://") {
                return Err(ConfigError::Parse {
                    path: "events".into(),
                    message: format!(
                        "webhook = '{w}': expected an http:// URL (this build has no TLS; use a local relay for https)"
                    ),
                });
            }
        }
        Ok(())
    }
}

fn parse_bool(var: &'static str, v: String) -> Result<bool, ConfigError> {
    match v.as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(ConfigError::Env {
            var,
            value: v,
            message: "expected true or false".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use xov_protocol::Chain;

    /// The protocol hard-codes the genesis hashes (it does not depend on `bitcoin`); they must be the facts.
    #[test]
    fn the_protocols_chains_are_the_bitcoin_crates_genesis_blocks() {
        use xov_wallet::Network;
        for (network, chain) in [
            (Network::Bitcoin, Chain::BITCOIN),
            (Network::Testnet, Chain::TESTNET),
            (Network::Testnet4, Chain::TESTNET4),
            (Network::Signet, Chain::SIGNET),
            (Network::Regtest, Chain::REGTEST),
        ] {
            assert_eq!(chain_of(network), chain, "{network}");
            let genesis = xov_wallet::bitcoin::constants::genesis_block(network);
            assert_eq!(chain.genesis_hex(), genesis.block_hash().to_string());
            // The protocol's names are the crate's.
            assert_eq!(chain.name(), Some(network.to_string().as_str()));
        }
    }

    #[test]
    fn the_chain_comes_from_the_wallet_network_even_without_a_wallet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        let cfg = Config::load(&path, env(&[])).unwrap();
        assert!(!cfg.wallet.enabled);
        assert_eq!(cfg.wallet.chain().unwrap(), Chain::REGTEST, "the default");
        let cfg = Config::load(&path, env(&[("XOV_WALLET_NETWORK", "signet")])).unwrap();
        assert_eq!(cfg.wallet.chain().unwrap(), Chain::SIGNET);
        std::fs::write(&path, "[wallet]\nnetwork = \"testnet4\"\n").unwrap();
        assert_eq!(
            Config::load(&path, env(&[]))
                .unwrap()
                .wallet
                .chain()
                .unwrap(),
            Chain::TESTNET4
        );
        std::fs::write(&path, "[wallet]\nnetwork = \"liquid\"\n").unwrap();
        assert!(matches!(
            Config::load(&path, env(&[])),
            Err(ConfigError::Parse { .. })
        ));
    }

    fn env(map: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = map
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        assert_eq!(Config::load(&path, env(&[])).unwrap(), Config::default());
        std::fs::write(
            &path,
            "[api]\nlisten = \"127.0.0.1:5555\"\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        let cfg = Config::load(&path, env(&[])).unwrap();
        assert_eq!(cfg.api.listen.port(), 5555);
        assert_eq!(cfg.log.level, "debug");
        let cfg = Config::load(
            &path,
            env(&[
                ("XOV_API_LISTEN", "127.0.0.1:6666"),
                ("XOV_LOG_JSON", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.api.listen.port(), 6666);
        assert!(cfg.log.json);
    }

    #[test]
    fn bad_settings_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, "[api]\nlisten = \"0.0.0.0:5555\"\n").unwrap();
        let err = Config::load(&path, env(&[])).unwrap_err().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        std::fs::write(&path, "[api]\nlsten = 1\n").unwrap();
        let err = Config::load(&path, env(&[])).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        let err = Config::load(
            &dir.path().join("none.toml"),
            env(&[("XOV_API_LISTEN", "nope")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("XOV_API_LISTEN"), "{err}");
    }
}
