//! The node's view of the market: the offer book and known pools, kept in memory for queries and mirrored
//! to the store before a change becomes visible.
//!
//! Invariants: the market is on one chain (the node's `[wallet] network`). It holds only charters of that
//! chain, hence only pools of it, and only offers of it; its own offers and charters name it. A charter or
//! offer of another chain is dropped as [`MarketError::OtherChain`] (not the sender's fault: a peer of
//! another network is no crime), unless it contradicts its own pool (`ChainMismatch`, the sender's fault).

pub mod bids;
pub mod ranking;
pub mod trust;
pub mod trust_service;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};
use utoipa::ToSchema;
use xov_protocol::validate::{
    validate_charter, validate_offer, validate_offer_unsigned, validate_withdrawal,
};
use xov_protocol::{
    public_charter, Arch, Chain, Demand, Gpu, Inserted, InstanceType, Keypair, Location, Offer,
    OfferBook, OfferKey, OfferQuery, OfferWithdrawal, PoolCharter, PoolId, Signed, ValidationError,
    PUBLIC_POOL_NAME,
};

use crate::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum MarketError {
    #[error("offer rejected: {0}")]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown pool '{name}'; `xov pool list` shows the pools this node knows (only pools on {chain}, this node's bitcoin network)")]
    UnknownPool { name: String, chain: Chain },
    #[error("this node has no live offer with id {0}; `xov offers list --mine` shows yours")]
    NoSuchOffer(u64),
    #[error("pool '{pool}' allows at most {max} offers per provider")]
    TooManyOffers { pool: String, max: u32 },
    #[error("this node has not joined pool {0}; `xov pool join` it first")]
    NotJoined(PoolId),
    #[error("pool name '{0}' is ambiguous; use the pool id from `xov pool list`")]
    AmbiguousPool(String),
    #[error("replayed: sequence {got} is older than sequence {have}, which has been out for over {REPLAY_GRACE_SECS} s")]
    Replayed { have: u64, got: u64 },
    /// This node holds [`MAX_CHARTERS`] charters and none of them is idle: a new one is not kept (no blame:
    /// it is not the sender's doing).
    #[error("this node already holds {max} pool charters, none of them idle")]
    CharterTableFull { max: usize },
    /// A charter or offer of another bitcoin network: this node is not in that market. Dropped quietly.
    #[error("for {theirs}, this node is on {ours}")]
    OtherChain { ours: Chain, theirs: Chain },
}

/// How long after a newer version of an offer was created an older one may still arrive honestly (messages
/// crossing in the network). Later than that, an old version is a replay and its sender is penalised.
pub const REPLAY_GRACE_SECS: u64 = 60;

/// Most pool charters a node keeps. Charters cost nothing to make, so past this a new one takes the place of
/// the idle charter heard most recently (not joined, no offers here); pools in use are never dropped.
pub const MAX_CHARTERS: usize = 4096;

impl MarketError {
    /// Whether the sender of the message is to blame (a forged, malformed or rule-breaking message), as
    /// opposed to crossing messages, pools we do not carry, or our own storage trouble.
    pub fn is_senders_fault(&self) -> bool {
        match self {
            // A message can expire while it travels; only one that expired well before it arrived is blamed.
            MarketError::Invalid(ValidationError::Expired { expires_at, now }) => {
                *now > expires_at.saturating_add(REPLAY_GRACE_SECS)
            }
            MarketError::Invalid(e) => !e.is_benign(),
            // An older version of an offer or an offer over the pool's cap is valid data that an honest
            // relay or a restarted node may still hold (the book keeps the newest version either way): it is
            // dropped, not blamed.
            MarketError::TooManyOffers { .. } | MarketError::Replayed { .. } => false,
            _ => false,
        }
    }
}

/// The meta key under which the joined pools are remembered.
const META_JOINED: &str = "joined_pools";

/// What a provider fills in to publish an offer (API body, or a TOML file for `xov offer publish --file`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferSpec {
    /// Pool name or id; the public pool when omitted.
    #[serde(default)]
    pub pool: Option<String>,
    /// Reuse an id to replace that offer; a new id is picked when omitted.
    #[serde(default)]
    pub offer_id: Option<u64>,
    #[schema(minimum = 1)]
    pub vcpus: u32,
    #[schema(minimum = 1)]
    pub ram_mib: u32,
    #[schema(minimum = 1)]
    pub disk_gib: u32,
    #[serde(default)]
    pub gpu_model: Option<String>,
    /// GPUs per machine (with `gpu_model`; default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub gpu_count: Option<u16>,
    #[serde(default = "default_arch")]
    #[schema(value_type = String, example = "x86_64")]
    pub arch: Arch,
    /// 1 to 32 image names, each 1 to 64 printable ASCII characters.
    #[schema(min_items = 1, max_items = 32)]
    pub images: Vec<String>,
    #[schema(minimum = 1)]
    pub price_sats_per_hour: u64,
    /// Shortest lease, seconds (default an hour).
    #[serde(default = "default_min_lease")]
    #[schema(minimum = 1)]
    pub min_lease_secs: u32,
    /// Longest lease, seconds, not below `min_lease_secs` (default 30 days).
    #[serde(default = "default_max_lease")]
    #[schema(minimum = 1)]
    pub max_lease_secs: u32,
    #[schema(example = "DE")]
    pub country: String,
    #[serde(default)]
    pub region: String,
    #[serde(default = "default_capacity")]
    #[schema(minimum = 1)]
    pub capacity: u32,
    /// How long the offer lives before it must be refreshed, within the pool's bounds (the public pool's:
    /// 60 s to a day).
    #[serde(default = "default_ttl")]
    #[schema(minimum = 1)]
    pub ttl_secs: u32,
    /// TCP ports besides SSH a buyer may ask to have opened to the machine (stated in the offer).
    #[serde(default)]
    #[schema(max_items = 15)]
    pub extra_ports: Vec<u16>,
}

impl OfferSpec {
    /// [`OfferSpec::extra_ports`] as the offer carries them: ascending, each once.
    fn offered_ports(&self) -> Vec<u16> {
        xov_protocol::offer::sorted_ports(&self.extra_ports)
    }
}

fn default_arch() -> Arch {
    Arch::X86_64
}
fn default_min_lease() -> u32 {
    3600
}
fn default_max_lease() -> u32 {
    30 * 24 * 3600
}
fn default_capacity() -> u32 {
    1
}
fn default_ttl() -> u32 {
    3600
}

/// What loading from disk found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LoadReport {
    pub offers: usize,
    pub expired: usize,
    pub rejected: usize,
    pub corrupt: usize,
    /// Charters and offers of another chain (the data dir was used with another `[wallet] network`): not
    /// loaded; offers are deleted, charters stay on disk for that network.
    pub other_chain: usize,
    /// Offers whose signatures were checked again at load (not sealed by this database: see crate::store).
    pub unsealed: usize,
    /// Where the load's time went: reading and decoding the store, checking the offers' signatures,
    /// validating and indexing them (logged with "market loaded"; `xov-testnet restart-time` reports it).
    #[serde(skip)]
    pub took: LoadTimes,
}

/// Wall-clock time of each step of [`Market::load`] (measured, never used for a decision).
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadTimes {
    pub read: std::time::Duration,
    pub verify: std::time::Duration,
    pub index: std::time::Duration,
}

pub struct Market {
    key: Keypair,
    /// The bitcoin network this node trades on.
    chain: Chain,
    book: OfferBook,
    pools: BTreeMap<PoolId, Signed<PoolCharter>>,
    /// When each charter was heard, as a sequence number (charters loaded at start: 0).
    charter_heard: HashMap<PoolId, u64>,
    charter_seq: u64,
    joined: BTreeSet<PoolId>,
    /// Live withdrawals, kept to hand to peers that sync (the book keeps only their effect).
    withdrawals: HashMap<OfferKey, Signed<OfferWithdrawal>>,
    /// Own offers kept out of gossip and sync (`provider.advertise = false`), shown only to buyers whose bids
    /// they meet. In memory only: the inventory loop re-signs them at start.
    unlisted: BTreeMap<u64, Signed<Offer>>,
    /// Receipts, bonds and load heard in the pools: the input of trust scores and admission.
    evidence: crate::market::trust::Evidence,
    store: Store,
}

/// One page of a pool's book for a peer that syncs.
#[derive(Default)]
pub struct SyncPage {
    pub offers: Vec<Vec<u8>>,
    pub withdrawals: Vec<Vec<u8>>,
    pub next: Option<OfferKey>,
}

/// `f(offset, slice)` over `items` cut into one slice per core, each on its own thread; the slices' results
/// joined in the items' order.
fn par_chunks<T: Sync, R: Send>(items: &[T], f: impl Fn(usize, &[T]) -> Vec<R> + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(per)
            .enumerate()
            .map(|(c, part)| s.spawn(move || f(c * per, part)))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("a checking thread panicked"))
            .collect()
    })
}

/// Which of `offers` carry their provider's signature: [`xov_protocol::signed::verify_all`] over a slice
/// per core.
fn verify_in_parallel(offers: &[&Signed<Offer>]) -> Vec<bool> {
    par_chunks(offers, |_, part| xov_protocol::signed::verify_all(part))
}

/// `f(index, item)` over `items` on every core, the results in the items' order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(usize, &T) -> R + Sync) -> Vec<R> {
    par_chunks(items, |offset, part| {
        part.iter()
            .enumerate()
            .map(|(j, t)| f(offset + j, t))
            .collect()
    })
}

impl Market {
    /// Loads pools, withdrawals and offers of `chain` from the store, re-validating each at `now`.
    /// `default_pools` (names or ids) are joined when the database remembers no joined pools.
    pub fn load(
        key: Keypair,
        store: Store,
        chain: Chain,
        now: u64,
        default_pools: &[String],
    ) -> Result<(Market, LoadReport), MarketError> {
        let evidence = crate::market::trust::Evidence::load(key.node_id(), store.clone(), now)?;
        let mut m = Market {
            key,
            chain,
            book: OfferBook::new(),
            pools: BTreeMap::new(),
            charter_heard: HashMap::new(),
            charter_seq: 0,
            joined: BTreeSet::new(),
            withdrawals: HashMap::new(),
            unlisted: BTreeMap::new(),
            evidence,
            store,
        };
        let mut report = LoadReport::default();
        let public = public_charter(chain);
        m.store.put_pool(&public)?;
        let pools = m.store.pools()?;
        report.corrupt += pools.corrupt;
        for c in pools.items {
            if c.body().chain != chain {
                report.other_chain += 1;
            } else if validate_charter(&c, now).is_ok() {
                m.charter_heard.insert(c.body().pool_id(), 0);
                m.pools.insert(c.body().pool_id(), c);
            } else {
                report.rejected += 1;
            }
        }
        match m.store.get_meta(META_JOINED)? {
            Some(raw) => {
                for chunk in raw.chunks_exact(32) {
                    let id = PoolId(chunk.try_into().expect("32-byte chunk"));
                    if m.pools.contains_key(&id) {
                        m.joined.insert(id);
                    }
                }
            }
            None => {
                for p in default_pools {
                    let id = m.resolve_pool(Some(p))?;
                    m.joined.insert(id);
                }
                m.save_joined()?;
            }
        }
        let withdrawals = m.store.withdrawals()?;
        report.corrupt += withdrawals.corrupt;
        for w in withdrawals.items {
            let key = OfferKey {
                provider: w.body().provider,
                offer_id: w.body().offer_id,
            };
            let charter = m.pools.get(&w.body().pool).map(|c| c.body());
            match validate_withdrawal(&w, now, charter) {
                Ok(()) => {
                    let _ = m.book.withdraw(&w, now);
                    m.withdrawals.insert(key, w);
                }
                Err(_) => m.store.delete_withdrawal(&key)?,
            }
        }
        let t_read = std::time::Instant::now();
        let offers = m.store.offers()?;
        report.took.read = t_read.elapsed();
        report.corrupt += offers.corrupt;
        // An offer this database sealed had its signature checked before it was stored (the seal stands for
        // that check: crate::store's doc). The others' signatures are checked again, all together and on
        // every core (`xov_protocol::signed::verify_all`, whose verdicts are the single check's); they are
        // sealed afterwards.
        let t_verify = std::time::Instant::now();
        let unsealed: Vec<&Signed<Offer>> = offers
            .items
            .iter()
            .filter(|o| !o.sealed)
            .map(|o| &o.offer)
            .collect();
        let mut unsealed_ok = verify_in_parallel(&unsealed).into_iter();
        report.unsealed = unsealed.len();
        drop(unsealed);
        let signed: Vec<bool> = offers
            .items
            .iter()
            .map(|o| o.sealed || unsealed_ok.next().unwrap_or(false))
            .collect();
        report.took.verify = t_verify.elapsed();
        // The rest of each offer's checks on every core too; the book then indexes them on this thread.
        let t_index = std::time::Instant::now();
        let pools = &m.pools;
        let verdicts = par_map(&offers.items, |i, stored| {
            let o = &stored.offer;
            if o.body().chain != chain {
                return Err(None);
            }
            let charter = pools.get(&o.body().pool).map(|c| c.body());
            validate_offer_unsigned(o, now, charter)
                .and_then(|()| {
                    if signed[i] {
                        Ok(())
                    } else {
                        Err(ValidationError::BadSignature(o.body().provider))
                    }
                })
                .map_err(Some)
        });
        let mut to_seal = Vec::new();
        for (stored, verdict) in offers.items.into_iter().zip(verdicts) {
            let o = stored.offer;
            let key = OfferKey::of(o.body());
            let verdict = match verdict {
                Err(None) => {
                    report.other_chain += 1;
                    m.store.delete_offer(&key)?;
                    continue;
                }
                Err(Some(e)) => Err(e),
                Ok(()) => Ok(()),
            };
            match verdict.and_then(|()| m.book.insert_with_id(o, stored.id, now)) {
                Ok(_) => {
                    report.offers += 1;
                    // sealed only once it is in the book (a rejected one is deleted below)
                    if !stored.sealed {
                        to_seal.push(key);
                    }
                }
                Err(ValidationError::Expired { .. }) => {
                    report.expired += 1;
                    m.store.delete_offer(&key)?;
                }
                Err(e) => {
                    warn!(error = %e, "dropping stored offer that no longer validates");
                    report.rejected += 1;
                    m.store.delete_offer(&key)?;
                }
            }
        }
        m.store
            .seal_offers(to_seal.iter().filter_map(|k| m.book.get(k)))?;
        report.took.index = t_index.elapsed();
        if report.corrupt > 0 {
            warn!(
                count = report.corrupt,
                "skipped unreadable database entries"
            );
        }
        if report.other_chain > 0 {
            warn!(
                count = report.other_chain,
                %chain,
                "skipped stored pools and offers of another bitcoin network"
            );
        }
        info!(
            offers = report.offers,
            expired = report.expired,
            pools = m.pools.len(),
            read_ms = report.took.read.as_millis() as u64,
            unsealed = report.unsealed,
            verify_ms = report.took.verify.as_millis() as u64,
            index_ms = report.took.index.as_millis() as u64,
            "market loaded"
        );
        Ok((m, report))
    }

    pub fn node_id(&self) -> xov_protocol::NodeId {
        self.key.node_id()
    }

    /// The bitcoin network this node trades on.
    pub fn chain(&self) -> Chain {
        self.chain
    }

    pub fn evidence(&self) -> &crate::market::trust::Evidence {
        &self.evidence
    }

    pub fn evidence_mut(&mut self) -> &mut crate::market::trust::Evidence {
        &mut self.evidence
    }

    pub fn book(&self) -> &OfferBook {
        &self.book
    }

    /// The pool's global compute rate at `now` as admission sees it: the providers' load reports, each
    /// counted only if the provider has live offers in the pool and capped by what those offers could run.
    pub fn pool_rate(&self, pool: &PoolId, now: u64) -> u64 {
        self.evidence
            .pool_rate(pool, now, &self.book.load_caps(pool, now))
    }

    /// Forgets trust evidence that can no longer count at `now` ([`trust::Evidence::prune`]), and the load
    /// reports of identities without live offers in the pool (they count for nothing). The trust service
    /// calls this every [`trust::PRUNE_INTERVAL_SECS`].
    pub fn prune_trust(&mut self, now: u64) -> Result<trust::Pruned, StoreError> {
        let mut p = self.evidence.prune(now)?;
        let book = &self.book;
        p.load_reports += self
            .evidence
            .retain_load(|pool, provider| book.count_for(provider, pool) > 0);
        Ok(p)
    }

    /// A load report from gossip. A report by an identity without live offers in the pool is ignored
    /// (`Ok(false)`: not kept, not passed on, and not the sender's fault, since offers may simply not have
    /// reached us yet); the rest goes to [`Evidence::accept_load_report`](trust::Evidence::accept_load_report).
    pub fn accept_load_report(
        &mut self,
        r: &Signed<xov_protocol::LoadReport>,
        now: u64,
    ) -> Result<bool, trust::EvidenceError> {
        let b = r.body();
        if self.book.count_for(&b.provider, &b.pool) == 0 {
            return Ok(false);
        }
        self.evidence.accept_load_report(r, now)
    }

    pub fn pools(&self) -> impl Iterator<Item = &Signed<PoolCharter>> {
        self.pools.values()
    }

    /// Resolves a pool by name or hex id.
    pub fn resolve_pool(&self, name_or_id: Option<&str>) -> Result<PoolId, MarketError> {
        let wanted = name_or_id.unwrap_or(PUBLIC_POOL_NAME);
        if let Ok(id) = wanted.parse::<PoolId>() {
            if self.pools.contains_key(&id) {
                return Ok(id);
            }
        }
        let mut by_name = self.pools.values().filter(|c| c.body().name == wanted);
        match (by_name.next(), by_name.next()) {
            (Some(c), None) => Ok(c.body().pool_id()),
            (Some(_), Some(_)) => Err(MarketError::AmbiguousPool(wanted.to_string())),
            _ => Err(MarketError::UnknownPool {
                name: wanted.to_string(),
                chain: self.chain,
            }),
        }
    }

    pub fn joined(&self) -> &BTreeSet<PoolId> {
        &self.joined
    }

    pub fn charter(&self, pool: &PoolId) -> Option<&Signed<PoolCharter>> {
        self.pools.get(pool)
    }

    fn save_joined(&self) -> Result<(), MarketError> {
        let raw: Vec<u8> = self.joined.iter().flat_map(|p| p.0).collect();
        Ok(self.store.put_meta(META_JOINED, &raw)?)
    }

    /// Learns a pool charter of this node's chain (from gossip, sync or our own creation). Returns whether it
    /// was new. A charter of another chain is [`MarketError::OtherChain`], before any other check.
    pub fn accept_charter(
        &mut self,
        c: Signed<PoolCharter>,
        now: u64,
    ) -> Result<bool, MarketError> {
        if c.body().chain != self.chain {
            return Err(MarketError::OtherChain {
                ours: self.chain,
                theirs: c.body().chain,
            });
        }
        validate_charter(&c, now)?;
        let id = c.body().pool_id();
        if self.pools.contains_key(&id) {
            return Ok(false);
        }
        let own = c.body().founder == self.key.node_id();
        if self.pools.len() >= MAX_CHARTERS && !own {
            // Full: the idle charter heard most recently makes room; with none idle, the newcomer waits.
            let Some(evict) = self.newest_idle_charter() else {
                return Err(MarketError::CharterTableFull { max: MAX_CHARTERS });
            };
            self.store.delete_pool(&evict)?;
            self.pools.remove(&evict);
            self.charter_heard.remove(&evict);
        }
        if own {
            self.store.put_pool(&c)?;
        } else {
            self.store.put_relayed_pool(&c)?;
        }
        self.charter_seq += 1;
        self.charter_heard.insert(id, self.charter_seq);
        self.pools.insert(id, c);
        Ok(true)
    }

    /// The charter that may be dropped to make room: not joined, not the public pool, not ours, no offer in
    /// the book; of those, the one heard last (charters loaded at start count as heard first).
    fn newest_idle_charter(&self) -> Option<PoolId> {
        let public = public_charter(self.chain).body().pool_id();
        let me = self.key.node_id();
        self.charter_heard
            .iter()
            .filter(|(id, _)| {
                **id != public
                    && !self.joined.contains(*id)
                    && self.pools.get(*id).is_some_and(|c| c.body().founder != me)
                    && self.book.iter_pool(id).next().is_none()
            })
            .max_by_key(|(_, seq)| **seq)
            .map(|(id, _)| *id)
    }

    /// One page of the charters this node knows, in pool-id order after `after`: at most `limit` charters and
    /// about `max_bytes` of them (at least one), and the id to ask after next when there are more.
    pub fn charters_page(
        &self,
        after: Option<PoolId>,
        limit: usize,
        max_bytes: usize,
    ) -> (Vec<Vec<u8>>, Option<PoolId>) {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut last = None;
        for (id, c) in self.pools.range((lower, Bound::Unbounded)) {
            let raw = c.to_bytes();
            if !out.is_empty() && (out.len() >= limit || bytes + raw.len() > max_bytes) {
                return (out, last);
            }
            bytes += raw.len();
            last = Some(*id);
            out.push(raw);
        }
        (out, None)
    }

    /// Founds a pool on this node's chain with this node as founder, and joins it.
    pub fn create_pool(
        &mut self,
        name: &str,
        rules: xov_protocol::PoolRules,
        now: u64,
    ) -> Result<Signed<PoolCharter>, MarketError> {
        let charter = Signed::sign(
            PoolCharter {
                name: name.to_string(),
                founder: self.key.node_id(),
                created_at: now,
                rules,
                chain: self.chain,
            },
            &self.key,
        );
        self.accept_charter(charter.clone(), now)?;
        self.join(&charter.body().pool_id())?;
        Ok(charter)
    }

    /// Joins a known pool; its offers are accepted from now on. Returns whether it was newly joined.
    pub fn join(&mut self, pool: &PoolId) -> Result<bool, MarketError> {
        if !self.pools.contains_key(pool) {
            return Err(MarketError::UnknownPool {
                name: pool.to_string(),
                chain: self.chain,
            });
        }
        let new = self.joined.insert(*pool);
        if new {
            self.save_joined()?;
        }
        Ok(new)
    }

    /// Leaves a pool and forgets its offers (they would only go stale). Returns whether it was joined.
    pub fn leave(&mut self, pool: &PoolId) -> Result<bool, MarketError> {
        if !self.joined.remove(pool) {
            return Ok(false);
        }
        self.save_joined()?;
        let keys: Vec<OfferKey> = self
            .book
            .iter_pool(pool)
            .map(|o| OfferKey::of(o.body()))
            .collect();
        for k in keys {
            self.store.delete_offer(&k)?;
            self.book.remove_key(&k);
        }
        Ok(true)
    }

    /// Whether this node's live offer `offer_id` already says what `spec` says (terms, shape, capacity).
    pub fn own_offer_matches(&self, offer_id: u64, spec: &OfferSpec) -> bool {
        let key = OfferKey {
            provider: self.key.node_id(),
            offer_id,
        };
        let Some(held) = self.book.get(&key).or_else(|| self.unlisted.get(&offer_id)) else {
            return false;
        };
        let o = held.body();
        let i = &o.instance;
        i.vcpus == spec.vcpus
            && i.ram_mib == spec.ram_mib
            && i.disk_gib == spec.disk_gib
            && i.arch == spec.arch
            && i.gpu.as_ref().map(|g| (g.model.as_str(), g.count))
                == spec
                    .gpu_model
                    .as_deref()
                    .map(|m| (m, spec.gpu_count.unwrap_or(1)))
            && o.images == spec.images
            && o.price_sats_per_hour == spec.price_sats_per_hour
            && o.capacity == spec.capacity
            && o.min_lease_secs == spec.min_lease_secs
            && o.max_lease_secs == spec.max_lease_secs
            && o.location.country == spec.country
            && o.location.region == spec.region
            && o.extra_ports == spec.offered_ports()
            && Some(o.pool) == self.resolve_pool(spec.pool.as_deref()).ok()
    }

    /// This node's own live offers.
    pub fn own_offers(&self) -> Vec<Signed<Offer>> {
        let me = self.key.node_id();
        self.book
            .iter()
            .filter(|o| o.body().provider == me)
            .cloned()
            .collect()
    }

    /// This node's live offer `offer_id`, listed or unlisted: what an order for it is checked against.
    pub fn own_offer(&self, offer_id: u64, now: u64) -> Option<&Signed<Offer>> {
        let key = OfferKey {
            provider: self.key.node_id(),
            offer_id,
        };
        self.book
            .get(&key)
            .or_else(|| self.unlisted.get(&offer_id))
            .filter(|o| o.body().expires_at > now)
    }

    /// Own live unlisted offers.
    pub fn unlisted_offers(&self, now: u64) -> Vec<Signed<Offer>> {
        self.unlisted
            .values()
            .filter(|o| o.body().expires_at > now)
            .cloned()
            .collect()
    }

    /// Own live offers, listed and unlisted, that meet a bid's demand in its pool.
    pub fn own_offers_for(&self, pool: &PoolId, demand: &Demand, now: u64) -> Vec<Signed<Offer>> {
        let me = self.key.node_id();
        self.book
            .iter_pool(pool)
            .filter(|o| o.body().provider == me)
            .chain(self.unlisted.values().filter(|o| o.body().pool == *pool))
            .filter(|o| o.body().expires_at > now && demand.matches(o.body()))
            .cloned()
            .collect()
    }

    /// Re-signs own offers that are past three quarters of their lifetime, so they never lapse while the node
    /// runs. Returns the new versions of listed offers, to be gossiped (unlisted ones are renewed in place).
    pub fn refresh_own(&mut self, now: u64) -> Result<Vec<Signed<Offer>>, MarketError> {
        let mut out = Vec::new();
        let unlisted: Vec<Signed<Offer>> = self.unlisted.values().cloned().collect();
        for (old, listed) in self
            .own_offers()
            .into_iter()
            .map(|o| (o, true))
            .chain(unlisted.into_iter().map(|o| (o, false)))
        {
            let b = old.body();
            let ttl = b.expires_at - b.created_at;
            if now < b.created_at + ttl * 3 / 4 {
                continue;
            }
            let mut body = b.clone();
            body.sequence = (b.sequence + 1).max(now);
            body.created_at = now;
            body.expires_at = now + ttl;
            let signed = Signed::sign(body, &self.key);
            if listed {
                self.accept_offer(signed.clone(), now)?;
                out.push(signed);
            } else {
                self.unlisted.insert(b.offer_id, signed);
            }
        }
        Ok(out)
    }

    /// A page of a joined pool's offers and withdrawals in key order, for a syncing peer (withdrawals on the
    /// first page only).
    pub fn sync_page(&self, pool: &PoolId, after: Option<OfferKey>, limit: usize) -> SyncPage {
        if !self.joined.contains(pool) {
            return SyncPage::default();
        }
        let (offers, more) = self.book.page(pool, after, limit);
        self.page_of(pool, offers, more, after.is_none(), |_| true)
    }

    /// A page of a joined pool's offers in one digest bucket ([`xov_protocol::bucket_of`]), in key order, with
    /// the bucket's withdrawals on its first page: what a peer whose digest differs there asks for.
    pub fn bucket_page(
        &self,
        pool: &PoolId,
        bucket: u16,
        after: Option<OfferKey>,
        limit: usize,
    ) -> SyncPage {
        if !self.joined.contains(pool) {
            return SyncPage::default();
        }
        let (offers, more) = self.book.bucket_page(pool, bucket, after, limit);
        self.page_of(pool, offers, more, after.is_none(), |k| {
            xov_protocol::bucket_of(k) == bucket
        })
    }

    fn page_of(
        &self,
        pool: &PoolId,
        offers: Vec<&Signed<Offer>>,
        more: bool,
        first: bool,
        withdrawn: impl Fn(&OfferKey) -> bool,
    ) -> SyncPage {
        let next = if more {
            offers.last().map(|o| OfferKey::of(o.body()))
        } else {
            None
        };
        let withdrawals = if first {
            self.withdrawals
                .iter()
                .filter(|(k, w)| w.body().pool == *pool && withdrawn(k))
                .map(|(_, w)| w.to_bytes())
                .collect()
        } else {
            Vec::new()
        };
        SyncPage {
            offers: offers.iter().map(|o| o.to_bytes()).collect(),
            withdrawals,
            next,
        }
    }

    /// A joined pool's digest ([`xov_protocol::BucketSum`] per bucket); all zero for a pool not joined.
    pub fn digest(&self, pool: &PoolId) -> Vec<xov_protocol::BucketSum> {
        if !self.joined.contains(pool) {
            return vec![xov_protocol::BucketSum::default(); xov_protocol::DIGEST_BUCKETS];
        }
        self.book.digest(pool)
    }

    /// Accepts an offer from anyone (gossip, sync): validate against its pool, persist, then index. An offer
    /// of another chain is [`MarketError::OtherChain`], unless it names one of our pools: then it contradicts
    /// that pool's charter (`ChainMismatch`, the sender's fault).
    pub fn accept_offer(
        &mut self,
        offer: Signed<Offer>,
        now: u64,
    ) -> Result<Inserted, MarketError> {
        self.accept_offer_signed(offer, now, None)
    }

    /// Which of `offers` need their signature checked before [`Market::accept_offer_signed`]: all but those
    /// the book holds already, byte for byte (checked when they came in).
    pub fn unchecked_signatures(&self, offers: &[&Signed<Offer>]) -> Vec<bool> {
        offers
            .iter()
            .map(|o| self.book.get(&OfferKey::of(o.body())) != Some(*o))
            .collect()
    }

    /// [`Market::accept_offer`] with the signature's verdict reached already (`Some`: in a batch, by
    /// [`xov_protocol::signed::verify_all`], whose verdicts are the single check's); `None` checks it here.
    /// Every other check runs either way, and a bad signature is the same error.
    pub fn accept_offer_signed(
        &mut self,
        offer: Signed<Offer>,
        now: u64,
        signature_ok: Option<bool>,
    ) -> Result<Inserted, MarketError> {
        let charter = self.pools.get(&offer.body().pool).map(|c| c.body());
        if charter.is_none() && offer.body().chain != self.chain {
            return Err(MarketError::OtherChain {
                ours: self.chain,
                theirs: offer.body().chain,
            });
        }
        match signature_ok {
            None => validate_offer(&offer, now, charter)?,
            Some(ok) => {
                xov_protocol::validate::validate_offer_unsigned(&offer, now, charter)?;
                if !ok {
                    return Err(ValidationError::BadSignature(offer.body().provider).into());
                }
            }
        }
        if let Some(c) = charter {
            let key = OfferKey::of(offer.body());
            let replacing = self.book.get(&key).is_some();
            let held = self
                .book
                .count_for(&offer.body().provider, &offer.body().pool);
            if !replacing && held >= c.rules.max_offers_per_provider as usize {
                return Err(MarketError::TooManyOffers {
                    pool: c.name.clone(),
                    max: c.rules.max_offers_per_provider,
                });
            }
        }
        // Decide first, persist second, make visible last: a crash in between leaves the disk ahead of memory,
        // which the next start's load resolves the same way.
        let key = OfferKey::of(offer.body());
        let decision = self.book.check_insert(&offer, now).map_err(|e| match e {
            ValidationError::SequenceNotNewer { have, got } => {
                let newer_since = self.book.get(&key).map_or(now, |o| o.body().created_at);
                self.replay_or(now, newer_since, have, got, e)
            }
            ValidationError::Withdrawn { withdrawn, got } => {
                let since = self
                    .withdrawals
                    .get(&key)
                    .map_or(now, |w| w.body().created_at);
                self.replay_or(now, since, withdrawn, got, e)
            }
            other => other.into(),
        })?;
        match decision {
            Inserted::Duplicate => Ok(Inserted::Duplicate),
            _ => {
                if offer.body().provider == self.key.node_id() {
                    self.store.put_offer(&offer)?;
                } else {
                    self.store.put_relayed_offer(&offer)?;
                }
                Ok(self.book.insert(offer, now)?)
            }
        }
    }

    fn replay_or(
        &self,
        now: u64,
        newer_since: u64,
        have: u64,
        got: u64,
        e: ValidationError,
    ) -> MarketError {
        if now > newer_since.saturating_add(REPLAY_GRACE_SECS) {
            MarketError::Replayed { have, got }
        } else {
            e.into()
        }
    }

    /// Signs and accepts an offer of this node's own.
    pub fn publish(&mut self, spec: &OfferSpec, now: u64) -> Result<Signed<Offer>, MarketError> {
        let signed = self.sign_own(spec, now)?;
        self.accept_offer(signed.clone(), now)?;
        Ok(signed)
    }

    /// Signs an offer of this node's own and keeps it unlisted: valid for orders, never gossiped or synced,
    /// handed only to buyers whose bids it meets.
    pub fn publish_unlisted(
        &mut self,
        spec: &OfferSpec,
        now: u64,
    ) -> Result<Signed<Offer>, MarketError> {
        let signed = self.sign_own(spec, now)?;
        let charter = self.pools.get(&signed.body().pool).map(|c| c.body());
        validate_offer(&signed, now, charter)?;
        self.unlisted.insert(signed.body().offer_id, signed.clone());
        Ok(signed)
    }

    fn sign_own(&mut self, spec: &OfferSpec, now: u64) -> Result<Signed<Offer>, MarketError> {
        let pool = self.resolve_pool(spec.pool.as_deref())?;
        // Publishing into a pool means taking part in it.
        self.join(&pool)?;
        let me = self.key.node_id();
        let used = |id: u64| {
            let k = OfferKey {
                provider: me,
                offer_id: id,
            };
            self.book.get(&k).is_some()
                || self.withdrawals.contains_key(&k)
                || self.unlisted.contains_key(&id)
        };
        // A new offer takes an id that is neither live nor recently withdrawn (a withdrawn id stays blocked
        // for older sequences until its tombstone expires).
        let offer_id = spec
            .offer_id
            .unwrap_or_else(|| (0..).find(|id| !used(*id)).expect("an unused id exists"));
        let key = OfferKey {
            provider: me,
            offer_id,
        };
        // Sequence never goes backwards, even across restarts that lost the old version: at least `now`, and
        // above both the live version and any withdrawal of this id.
        let live = self
            .book
            .get(&key)
            .or_else(|| self.unlisted.get(&offer_id))
            .map_or(0, |o| o.body().sequence + 1);
        let withdrawn = self
            .withdrawals
            .get(&key)
            .map_or(0, |w| w.body().sequence + 1);
        let sequence = now.max(live).max(withdrawn);
        let gpu = match (&spec.gpu_model, spec.gpu_count) {
            (Some(model), count) => Some(Gpu {
                model: model.clone(),
                count: count.unwrap_or(1),
            }),
            (None, _) => None,
        };
        let body = Offer {
            provider: me,
            pool,
            offer_id,
            sequence,
            created_at: now,
            expires_at: now + spec.ttl_secs as u64,
            instance: InstanceType {
                vcpus: spec.vcpus,
                ram_mib: spec.ram_mib,
                disk_gib: spec.disk_gib,
                gpu,
                arch: spec.arch,
            },
            images: spec.images.clone(),
            price_sats_per_hour: spec.price_sats_per_hour,
            min_lease_secs: spec.min_lease_secs,
            max_lease_secs: spec.max_lease_secs,
            location: Location {
                country: spec.country.clone(),
                region: spec.region.clone(),
            },
            capacity: spec.capacity,
            bond: None,
            chain: self.chain,
            extra_ports: spec.offered_ports(),
        };
        Ok(Signed::sign(body, &self.key))
    }

    /// Withdraws one of this node's own offers.
    pub fn withdraw_own(
        &mut self,
        offer_id: u64,
        now: u64,
    ) -> Result<Signed<OfferWithdrawal>, MarketError> {
        let me = self.key.node_id();
        let key = OfferKey {
            provider: me,
            offer_id,
        };
        let held = self
            .book
            .get(&key)
            .ok_or(MarketError::NoSuchOffer(offer_id))?
            .body()
            .clone();
        let w = Signed::sign(
            OfferWithdrawal {
                provider: me,
                pool: held.pool,
                offer_id,
                sequence: held.sequence,
                created_at: now.min(held.expires_at - 1),
                expires_at: held.expires_at,
            },
            &self.key,
        );
        self.accept_withdrawal(w.clone(), now)?;
        Ok(w)
    }

    /// Accepts a withdrawal from anyone: validate, persist, apply.
    pub fn accept_withdrawal(
        &mut self,
        w: Signed<OfferWithdrawal>,
        now: u64,
    ) -> Result<Option<Signed<Offer>>, MarketError> {
        if !self.joined.contains(&w.body().pool) {
            return Err(MarketError::NotJoined(w.body().pool));
        }
        let charter = self.pools.get(&w.body().pool).map(|c| c.body());
        validate_withdrawal(&w, now, charter)?;
        let key = OfferKey {
            provider: w.body().provider,
            offer_id: w.body().offer_id,
        };
        if let Some(held) = self.withdrawals.get(&key) {
            if held.body().sequence >= w.body().sequence {
                return Err(ValidationError::Withdrawn {
                    withdrawn: held.body().sequence,
                    got: w.body().sequence,
                }
                .into());
            }
        }
        self.store.put_withdrawal(&w)?;
        let removed = self.book.withdraw(&w, now)?;
        self.withdrawals.insert(key, w);
        if let Some(o) = &removed {
            self.store.delete_offer(&OfferKey::of(o.body()))?;
        }
        Ok(removed)
    }

    pub fn query(&self, q: &OfferQuery, now: u64) -> Vec<&Signed<Offer>> {
        self.book.query(q, now)
    }

    /// Drops expired offers from memory and disk.
    pub fn expire(&mut self, now: u64) -> Result<usize, MarketError> {
        let gone = self.book.expire(now);
        for k in &gone {
            self.store.delete_offer(k)?;
        }
        let dead: Vec<OfferKey> = self
            .withdrawals
            .iter()
            .filter(|(_, w)| w.body().expires_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.withdrawals.remove(&k);
            self.store.delete_withdrawal(&k)?;
        }
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xov_protocol::PoolRules;

    const NOW: u64 = 1_800_000_000;

    fn market(dir: &std::path::Path, chain: Chain) -> (Market, LoadReport) {
        let store = Store::open(dir).unwrap();
        Market::load(
            Keypair::from_secret_bytes(&[1; 32]),
            store,
            chain,
            NOW,
            &[PUBLIC_POOL_NAME.to_string()],
        )
        .unwrap()
    }

    fn charter(chain: Chain, name: &str) -> Signed<PoolCharter> {
        let founder = Keypair::from_secret_bytes(&[9; 32]);
        Signed::sign(
            PoolCharter {
                name: name.into(),
                founder: founder.node_id(),
                created_at: NOW - 100,
                rules: PoolRules::default(),
                chain,
            },
            &founder,
        )
    }

    /// Another provider's offer in `pool`, claiming `chain`.
    fn foreign_offer(pool: PoolId, chain: Chain) -> Signed<Offer> {
        let key = Keypair::from_secret_bytes(&[7; 32]);
        let mut o = crate::test_support::offer(&key, 1, 500, 2, NOW - 10).into_body();
        o.pool = pool;
        o.chain = chain;
        Signed::sign(o, &key)
    }

    #[test]
    fn the_public_pool_and_everything_of_its_own_is_on_the_nodes_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = market(dir.path(), Chain::SIGNET);
        assert_eq!(m.chain(), Chain::SIGNET);
        let public = m.resolve_pool(None).unwrap();
        assert_eq!(public, public_charter(Chain::SIGNET).body().pool_id());
        assert_ne!(public, public_charter(Chain::REGTEST).body().pool_id());
        assert!(m.joined().contains(&public));
        let c = m.create_pool("lab", PoolRules::default(), NOW).unwrap();
        assert_eq!(c.body().chain, Chain::SIGNET);
        let spec: OfferSpec = serde_json::from_value(serde_json::json!({
            "vcpus": 1, "ram_mib": 512, "disk_gib": 5, "images": ["debian-12"],
            "price_sats_per_hour": 100, "country": "DE", "pool": "lab"
        }))
        .unwrap();
        let o = m.publish(&spec, NOW).unwrap();
        assert_eq!(o.body().chain, Chain::SIGNET);
        assert_eq!(o.body().pool, c.body().pool_id());
    }

    #[test]
    fn a_charter_of_another_chain_is_dropped_without_blame() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = market(dir.path(), Chain::REGTEST);
        let err = m
            .accept_charter(charter(Chain::SIGNET, "gpu"), NOW)
            .unwrap_err();
        assert!(
            matches!(
                err,
                MarketError::OtherChain {
                    ours: Chain::REGTEST,
                    theirs: Chain::SIGNET
                }
            ),
            "{err}"
        );
        assert!(!err.is_senders_fault());
        assert!(matches!(
            m.resolve_pool(Some("gpu")),
            Err(MarketError::UnknownPool { .. })
        ));
        // The same charter on our chain is taken.
        assert!(m
            .accept_charter(charter(Chain::REGTEST, "gpu"), NOW)
            .unwrap());
    }

    #[test]
    fn an_offer_of_another_chain_is_dropped_without_blame_unless_it_contradicts_our_pool() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = market(dir.path(), Chain::REGTEST);
        // A signet provider's offer in the signet public pool: not our market, not a crime.
        let signet_pool = public_charter(Chain::SIGNET).body().pool_id();
        let err = m
            .accept_offer(foreign_offer(signet_pool, Chain::SIGNET), NOW)
            .unwrap_err();
        assert!(matches!(err, MarketError::OtherChain { .. }), "{err}");
        assert!(!err.is_senders_fault());
        assert_eq!(m.book().len(), 0);
        // An offer naming our public pool but signet contradicts the pool's charter: the sender's fault.
        let ours = public_charter(Chain::REGTEST).body().pool_id();
        let err = m
            .accept_offer(foreign_offer(ours, Chain::SIGNET), NOW)
            .unwrap_err();
        assert!(
            matches!(
                err,
                MarketError::Invalid(ValidationError::ChainMismatch { .. })
            ),
            "{err}"
        );
        assert!(err.is_senders_fault());
        // The same chain is accepted.
        assert!(m
            .accept_offer(foreign_offer(ours, Chain::REGTEST), NOW)
            .is_ok());
        assert_eq!(m.book().len(), 1);
    }

    #[test]
    fn a_data_dir_reopened_on_another_chain_loads_nothing_of_the_first() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut m, _) = market(dir.path(), Chain::REGTEST);
            m.accept_charter(charter(Chain::REGTEST, "gpu"), NOW)
                .unwrap();
            let ours = public_charter(Chain::REGTEST).body().pool_id();
            m.accept_offer(foreign_offer(ours, Chain::REGTEST), NOW)
                .unwrap();
        }
        let (m, report) = market(dir.path(), Chain::SIGNET);
        assert_eq!(m.book().len(), 0);
        assert!(m.pools().all(|c| c.body().chain == Chain::SIGNET));
        assert!(matches!(
            m.resolve_pool(Some("gpu")),
            Err(MarketError::UnknownPool { .. })
        ));
        // The regtest public pool, "gpu" and the offer.
        assert_eq!(report.other_chain, 3, "{report:?}");
        // Back on regtest, the pools are still there (only the offer was deleted).
        drop(m);
        let (m, _) = market(dir.path(), Chain::REGTEST);
        assert!(m.resolve_pool(Some("gpu")).is_ok());
        assert_eq!(m.book().len(), 0);
    }

    /// At start the stored offers' signatures are checked together; a stored offer whose signature no
    /// longer verifies (a flipped bit on disk) is still found, dropped and counted, and only it.
    #[test]
    fn a_stored_offer_with_a_broken_signature_is_dropped_at_load_and_only_it() {
        let dir = tempfile::tempdir().unwrap();
        let pool = public_charter(Chain::REGTEST).body().pool_id();
        let mut stored = Vec::new();
        {
            let (mut m, _) = market(dir.path(), Chain::REGTEST);
            for p in 0..60u8 {
                let key = Keypair::from_secret_bytes(&[p + 20; 32]);
                let mut o = crate::test_support::offer(&key, 1, 500, 2, NOW - 10).into_body();
                o.pool = pool;
                let o = Signed::sign(o, &key);
                m.accept_offer(o.clone(), NOW).unwrap();
                stored.push(o);
            }
            assert_eq!(m.book().len(), 60);
        }
        let broken = [7usize, 8, 59];
        // written as an older xov wrote them: wire bytes, no seal; their signatures are checked again
        let unsealed = [3usize, 40];
        {
            let store = Store::open(dir.path()).unwrap();
            for &i in &unsealed {
                let o = &stored[i];
                let mut key = o.body().provider.as_bytes().to_vec();
                key.extend_from_slice(&o.body().offer_id.to_be_bytes());
                store.put_raw("offers", &key, &o.to_bytes()).unwrap();
            }
            for &i in &broken {
                let o = &stored[i];
                let mut key = o.body().provider.as_bytes().to_vec();
                key.extend_from_slice(&o.body().offer_id.to_be_bytes());
                let mut bytes = o.to_bytes();
                let last = bytes.len() - 1;
                bytes[last] ^= 0x01;
                store.put_raw("offers", &key, &bytes).unwrap();
            }
        }
        let (m, report) = market(dir.path(), Chain::REGTEST);
        assert_eq!(report.rejected, broken.len(), "{report:?}");
        assert_eq!(report.offers, 60 - broken.len(), "{report:?}");
        assert_eq!(report.unsealed, broken.len() + unsealed.len(), "{report:?}");
        for (i, o) in stored.iter().enumerate() {
            let key = OfferKey::of(o.body());
            assert_eq!(
                m.book().get(&key).is_some(),
                !broken.contains(&i),
                "offer {i}"
            );
        }
        drop(m);
        // the good unsealed ones were sealed, the broken ones deleted: the next start checks no signature
        let (m, report) = market(dir.path(), Chain::REGTEST);
        assert_eq!(report.unsealed, 0, "{report:?}");
        assert_eq!(report.offers, 60 - broken.len(), "{report:?}");
        assert_eq!(m.book().len(), 60 - broken.len());
    }

    fn load_report(k: &Keypair, leases: u32, rate: u64) -> Signed<xov_protocol::LoadReport> {
        Signed::sign(
            xov_protocol::LoadReport {
                provider: k.node_id(),
                pool: public_charter(Chain::REGTEST).body().pool_id(),
                running_leases: leases,
                running_sats_per_hour: rate,
                at: NOW - 5,
            },
            k,
        )
    }

    /// Attack 3 of issue 15: one message must not shut the pool to new buyers.
    #[test]
    fn a_load_report_counts_only_from_a_provider_with_offers_and_up_to_what_they_offer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = market(dir.path(), Chain::REGTEST);
        let public = public_charter(Chain::REGTEST).body().pool_id();
        let (nobody, provider) = (
            Keypair::from_secret_bytes(&[5; 32]),
            Keypair::from_secret_bytes(&[6; 32]),
        );
        // An identity with no offers: ignored, not blamed, admission unchanged.
        let flood = load_report(&nobody, 1_000_000, 1_000_000_000);
        assert!(!m.accept_load_report(&flood, NOW).unwrap());
        // Even if it reached the evidence by another path, it does not count.
        assert!(m.evidence_mut().accept_load_report(&flood, NOW).unwrap());
        assert_eq!(m.pool_rate(&public, NOW), 0);
        // And pruning forgets it (attack 8): it could never count.
        assert_eq!(m.prune_trust(NOW).unwrap().load_reports, 1);
        // A real provider (two offers: 500 and 300 sats/h, capacity 1 each) inflating its load is capped.
        m.accept_offer(
            crate::test_support::offer(&provider, 1, 500, 2, NOW - 10),
            NOW,
        )
        .unwrap();
        m.accept_offer(
            crate::test_support::offer(&provider, 2, 300, 2, NOW - 10),
            NOW,
        )
        .unwrap();
        let inflated = load_report(&provider, 1_000_000, 1_000_000_000);
        assert!(m.accept_load_report(&inflated, NOW).unwrap());
        assert_eq!(m.pool_rate(&public, NOW), 800);
        // Once its offers expire, its report no longer counts.
        assert_eq!(m.pool_rate(&public, NOW + 3600), 0);
    }
}
