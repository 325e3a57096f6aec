//! Durable state in RocksDB: signed offers, withdrawals and pool charters (later: leases).
//!
//! Values are the messages' canonical wire bytes, so what is stored is exactly what was verified, and a
//! restarted node re-validates everything it loads instead of trusting its own disk blindly.
//!
//! Sealed offers: an offer is stored only after its signature was checked, and its value then carries a
//! seal, HMAC-SHA256 (first 16 bytes) under this database's own random key ([`META_SEAL_KEY`]) of the entry's
//! key and the offer's bytes: `0xff ‖ seal ‖ wire bytes` (a message's first byte is its encoding version,
//! never 0xff). At load a matching seal stands for the signature check this store made (a million offers
//! load in seconds instead of half a minute of ed25519); expiry and the pool's rules are still checked
//! again. An offer without a seal, or whose seal does not match (written by an older xov or by another
//! program, copied from another database, or damaged), is loaded as [`StoredOffer::sealed`] `false` and its
//! signature must be checked before it is used ([`Store::seal_offers`] seals it then). Anyone able to write
//! the database can read the seal key, as they can read the node key beside it: the seal guards against
//! other writers and damage, not against the machine's owner. The key never leaves the database: a backup
//! leaves it out, so a restored node checks its offers' signatures once more.
//!
//! Encoding versions: trust evidence (receipts, bond proofs) stored in an older encoding version is carried
//! over to the current one once, at load (`xov_protocol::upgrade`: the bodies did not change and the version
//! byte is not signed), and stored again under its new key. Offers of versions 1 and 2 (no ports) and
//! charters of version 1 (no chain) do not load (counted as unreadable): the offers expire within hours and
//! their providers publish them again; the pools of version-1 charters no longer exist.

pub mod backup;
pub mod datadir;
mod wallet;

pub use wallet::WalletDb;

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteOptions, DB};
use thiserror::Error;
use xov_protocol::{
    upgrade, BondProof, DecodeError, MessageId, NodeId, Offer, OfferKey, OfferWithdrawal,
    PoolCharter, PoolId, Signed, SignedReceipt,
};

const CF_OFFERS: &str = "offers";
const CF_WITHDRAWALS: &str = "withdrawals";
const CF_POOLS: &str = "pools";
const CF_META: &str = "meta";
pub(crate) const CF_WALLET: &str = "wallet";
pub(crate) const CF_LEASES: &str = "leases";
/// Trust evidence: dual-signed receipts (`r` + message id) and bond proofs (`b` + node id).
const CF_TRUST: &str = "trust";
const FAMILIES: [&str; 7] = [
    CF_OFFERS,
    CF_WITHDRAWALS,
    CF_POOLS,
    CF_META,
    CF_WALLET,
    CF_LEASES,
    CF_TRUST,
];

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rocksdb::Error),
}

/// Cheap to clone: clones share one database.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: std::sync::Arc<DB>,
    /// The key of this database's offer seals (see the module's doc).
    seal_key: std::sync::Arc<[u8; 32]>,
}

/// `meta` key of the database's seal key: 32 random bytes, made at the first open.
pub const META_SEAL_KEY: &str = "store/seal_key";
/// First byte of a sealed offer value.
const SEALED: u8 = 0xff;
/// Bytes of a seal.
const SEAL_LEN: usize = 16;

/// An offer read back from the store. `sealed`: this database wrote it after checking its signature (its
/// seal matches), so the signature needs no new check; otherwise it must be checked before use.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOffer {
    pub offer: Signed<Offer>,
    /// `offer.id()`, computed on the reading thread.
    pub id: MessageId,
    pub sealed: bool,
}

fn offer_key(k: &OfferKey) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..32].copy_from_slice(k.provider.as_bytes());
    out[32..].copy_from_slice(&k.offer_id.to_be_bytes());
    out
}

/// One raw entry of a column family.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

fn receipt_key(r: &SignedReceipt) -> Vec<u8> {
    [b"r".as_slice(), r.message_id().0.as_slice()].concat()
}

/// Decodes stored wire bytes, carrying over a message of an older encoding version whose body did not change;
/// says whether it was carried over (and so must be stored again in the current version).
fn decode_stored<T>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
) -> Result<(T, bool), DecodeError> {
    match decode(bytes) {
        Ok(t) => Ok((t, false)),
        Err(DecodeError::UnknownVersion(v)) if v < xov_protocol::signed::VERSION => {
            Ok((decode(&upgrade(bytes)?)?, true))
        }
        Err(e) => Err(e),
    }
}

/// What a load found: messages that decoded, and how many entries were unreadable (logged, skipped).
pub struct Loaded<T> {
    pub items: Vec<T>,
    pub corrupt: usize,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // A node is a small daemon: keep RocksDB's background work and memory modest.
        opts.increase_parallelism(2);
        opts.set_max_open_files(256);
        let cfs = FAMILIES
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let cf_meta = db
            .cf_handle(CF_META)
            .expect("column families are created at open");
        let seal_key = match db.get_cf(cf_meta, META_SEAL_KEY.as_bytes())? {
            Some(k) if k.len() == 32 => k.try_into().expect("32 bytes"),
            // none yet, or unusable: a new one (offers sealed under an old one are checked again)
            _ => {
                let mut k = [0u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut k);
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                db.put_cf_opt(cf_meta, META_SEAL_KEY.as_bytes(), k, &wo)?;
                k
            }
        };
        Ok(Store {
            db: std::sync::Arc::new(db),
            seal_key: std::sync::Arc::new(seal_key),
        })
    }

    /// The MAC behind an offer's seal: over the entry's key (length-prefixed) and the offer's bytes.
    fn seal_mac(&self, key: &[u8], bytes: &[u8]) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.seal_key.as_slice())
            .expect("HMAC takes a key of any length");
        mac.update(&(key.len() as u32).to_be_bytes());
        mac.update(key);
        mac.update(bytes);
        mac
    }

    /// The seal of an offer's value stored under `key`.
    fn seal(&self, key: &[u8], bytes: &[u8]) -> [u8; SEAL_LEN] {
        use hmac::Mac;
        let tag = self.seal_mac(key, bytes).finalize().into_bytes();
        tag[..SEAL_LEN].try_into().expect("SHA-256 is 32 bytes")
    }

    /// The value stored for an offer whose signature was checked: `0xff ‖ seal ‖ wire bytes`.
    fn sealed_value(&self, key: &[u8], offer: &Signed<Offer>) -> Vec<u8> {
        let bytes = offer.to_bytes();
        let mut v = Vec::with_capacity(1 + SEAL_LEN + bytes.len());
        v.push(SEALED);
        v.extend_from_slice(&self.seal(key, &bytes));
        v.extend_from_slice(&bytes);
        v
    }

    /// Decodes a stored offer value; `None` if unreadable.
    fn open_offer(&self, key: &[u8], value: &[u8]) -> Option<StoredOffer> {
        let (bytes, sealed) = match value.split_first() {
            Some((&SEALED, rest)) if rest.len() >= SEAL_LEN => {
                let (seal, bytes) = rest.split_at(SEAL_LEN);
                let ok = hmac::Mac::verify_truncated_left(self.seal_mac(key, bytes), seal).is_ok();
                (bytes, ok)
            }
            _ => (value, false),
        };
        // a sealed offer was decoded in full before it was stored: its node id is a key
        let decoded = if sealed {
            Signed::from_checked_bytes(bytes)
        } else {
            Signed::from_bytes(bytes)
        };
        decoded.ok().map(|offer| StoredOffer {
            id: offer.id(),
            offer,
            sealed,
        })
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    /// Writes are synced: a message acknowledged to the user survives a power cut.
    pub(crate) fn put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.put_cf_opt(self.cf(cf), key, value, &wo)?;
        Ok(())
    }

    pub(crate) fn put_raw(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.put(cf, key, value)
    }

    pub(crate) fn load_raw(&self, cf: &str) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
            let (k, v) = kv?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn delete(&self, cf: &str, key: &[u8]) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.delete_cf_opt(self.cf(cf), key, &wo)?;
        Ok(())
    }

    fn load<T>(
        &self,
        cf: &str,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Loaded<T>, StoreError> {
        let mut items = Vec::new();
        let mut corrupt = 0;
        for kv in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
            let (_, v) = kv?;
            match decode(&v) {
                Some(t) => items.push(t),
                None => corrupt += 1,
            }
        }
        Ok(Loaded { items, corrupt })
    }

    /// Stores an offer whose signature the caller checked (it is sealed: see the module's doc), synced.
    pub fn put_offer(&self, offer: &Signed<Offer>) -> Result<(), StoreError> {
        let key = offer_key(&OfferKey::of(offer.body()));
        self.put(CF_OFFERS, &key, &self.sealed_value(&key, offer))
    }

    /// Stores another node's offer without waiting for the disk: a crash may lose the last few, which the
    /// book sync fetches again from peers. (One fsync per relayed offer made 50 nodes on one disk fall
    /// behind at 100 offers/s; docs/benchmarks.md, Gossip.) Own offers go through [`Store::put_offer`].
    /// As [`Store::put_offer`], the signature checked by the caller.
    pub fn put_relayed_offer(&self, offer: &Signed<Offer>) -> Result<(), StoreError> {
        let key = offer_key(&OfferKey::of(offer.body()));
        self.db
            .put_cf(self.cf(CF_OFFERS), key, self.sealed_value(&key, offer))?;
        Ok(())
    }

    /// Seals stored offers whose signatures the caller has just checked (they loaded unsealed), in one
    /// unsynced batch, then flushed to a table file and compacted: lost in a crash, they are only checked
    /// again at the next start; flushed, the next start does not replay them from the write-ahead log (a
    /// million resealed offers replayed made that start 7.6 s instead of 3.9 s); compacted, it does not read
    /// every offer twice, sealed and unsealed, while RocksDB merges the two copies beside it (6.1 s).
    pub fn seal_offers<'a>(
        &self,
        offers: impl IntoIterator<Item = &'a Signed<Offer>>,
    ) -> Result<(), StoreError> {
        let mut batch = rocksdb::WriteBatch::default();
        for offer in offers {
            let key = offer_key(&OfferKey::of(offer.body()));
            batch.put_cf(self.cf(CF_OFFERS), key, self.sealed_value(&key, offer));
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.db.write(batch)?;
        self.db.flush_cf(self.cf(CF_OFFERS))?;
        self.db
            .compact_range_cf(self.cf(CF_OFFERS), None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    pub fn delete_offer(&self, key: &OfferKey) -> Result<(), StoreError> {
        self.delete(CF_OFFERS, &offer_key(key))
    }

    /// Every stored offer, in key order, with its id: the key space is cut into one range per core, and
    /// each range is read, decoded and its seals checked on its own thread.
    pub fn offers(&self) -> Result<Loaded<StoredOffer>, StoreError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16);
        // keys start with the provider's node id (uniform bytes): cut at first bytes
        let cuts: Vec<Option<u8>> = (0..=threads)
            .map(|i| (i > 0 && i < threads).then(|| (i * 256 / threads) as u8))
            .collect();
        let parts: Vec<Result<Loaded<StoredOffer>, StoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = cuts
                .windows(2)
                .map(|w| {
                    let (lo, hi) = (w[0], w[1]);
                    s.spawn(move || self.offers_in(lo, hi))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an offer reading thread panicked"))
                .collect()
        });
        let mut all = Loaded {
            items: Vec::new(),
            corrupt: 0,
        };
        for part in parts {
            let part = part?;
            all.items.extend(part.items);
            all.corrupt += part.corrupt;
        }
        Ok(all)
    }

    /// The offers whose keys start at or after the byte `lo` and before the byte `hi` (`None`: unbounded).
    fn offers_in(&self, lo: Option<u8>, hi: Option<u8>) -> Result<Loaded<StoredOffer>, StoreError> {
        let mut ro = rocksdb::ReadOptions::default();
        // one pass over everything: nothing is read again soon, so keep the block cache out of it
        ro.fill_cache(false);
        ro.set_readahead_size(2 << 20);
        if let Some(lo) = lo {
            ro.set_iterate_lower_bound(vec![lo]);
        }
        if let Some(hi) = hi {
            ro.set_iterate_upper_bound(vec![hi]);
        }
        let mut items = Vec::new();
        let mut corrupt = 0;
        for kv in self
            .db
            .iterator_cf_opt(self.cf(CF_OFFERS), ro, IteratorMode::Start)
        {
            let (k, v) = kv?;
            match self.open_offer(&k, &v) {
                Some(o) => items.push(o),
                None => corrupt += 1,
            }
        }
        Ok(Loaded { items, corrupt })
    }

    pub fn put_withdrawal(&self, w: &Signed<OfferWithdrawal>) -> Result<(), StoreError> {
        let b = w.body();
        let key = OfferKey {
            provider: b.provider,
            offer_id: b.offer_id,
        };
        self.put(CF_WITHDRAWALS, &offer_key(&key), &w.to_bytes())
    }

    pub fn delete_withdrawal(&self, key: &OfferKey) -> Result<(), StoreError> {
        self.delete(CF_WITHDRAWALS, &offer_key(key))
    }

    pub fn withdrawals(&self) -> Result<Loaded<Signed<OfferWithdrawal>>, StoreError> {
        self.load(CF_WITHDRAWALS, |b| Signed::from_bytes(b).ok())
    }

    pub fn put_pool(&self, charter: &Signed<PoolCharter>) -> Result<(), StoreError> {
        let id: PoolId = charter.body().pool_id();
        self.put(CF_POOLS, id.as_bytes(), &charter.to_bytes())
    }

    /// A charter heard from the network: written without waiting for the disk (lost in a crash, it is learnt
    /// again from any peer), so charter spam cannot turn into a stream of fsyncs.
    pub fn put_relayed_pool(&self, charter: &Signed<PoolCharter>) -> Result<(), StoreError> {
        let id: PoolId = charter.body().pool_id();
        self.db
            .put_cf(self.cf(CF_POOLS), id.as_bytes(), charter.to_bytes())?;
        Ok(())
    }

    pub fn delete_pool(&self, pool: &PoolId) -> Result<(), StoreError> {
        self.delete(CF_POOLS, pool.as_bytes())
    }

    pub fn pools(&self) -> Result<Loaded<Signed<PoolCharter>>, StoreError> {
        self.load(CF_POOLS, |b| Signed::from_bytes(b).ok())
    }

    pub fn put_receipt(&self, r: &SignedReceipt) -> Result<(), StoreError> {
        self.put(CF_TRUST, &receipt_key(r), &r.to_bytes())
    }

    pub fn put_bond_proof(&self, p: &Signed<BondProof>) -> Result<(), StoreError> {
        let key = [b"b".as_slice(), p.body().node.as_bytes()].concat();
        self.put(CF_TRUST, &key, &p.to_bytes())
    }

    /// Forgets the stored bond proof of `node` (refuted by the chain, its bond gone, or evicted).
    pub fn delete_bond_proof(&self, node: &NodeId) -> Result<(), StoreError> {
        let key = [b"b".as_slice(), node.as_bytes()].concat();
        self.delete(CF_TRUST, &key)
    }

    /// Forgets a stored receipt (pruned: too old to count, or evicted).
    pub fn delete_receipt(&self, r: &SignedReceipt) -> Result<(), StoreError> {
        self.delete(CF_TRUST, &receipt_key(r))
    }

    /// Receipts and bond proofs, in key order (receipts after bonds). Entries of encoding version 1 are
    /// carried over to the current version and stored again (receipts under their new key) before they are
    /// returned.
    pub fn trust_evidence(
        &self,
    ) -> Result<(Loaded<SignedReceipt>, Loaded<Signed<BondProof>>), StoreError> {
        let mut receipts = Loaded {
            items: Vec::new(),
            corrupt: 0,
        };
        let mut bonds = Loaded {
            items: Vec::new(),
            corrupt: 0,
        };
        for (k, v) in self.load_raw(CF_TRUST)? {
            match k.first() {
                Some(b'r') => match decode_stored(&v, SignedReceipt::from_bytes) {
                    Ok((r, upgraded)) => {
                        if upgraded {
                            self.delete(CF_TRUST, &k)?;
                            self.put_receipt(&r)?;
                        }
                        receipts.items.push(r)
                    }
                    Err(_) => receipts.corrupt += 1,
                },
                Some(b'b') => match decode_stored(&v, Signed::<BondProof>::from_bytes) {
                    Ok((b, upgraded)) => {
                        if upgraded {
                            self.put_bond_proof(&b)?;
                        }
                        bonds.items.push(b)
                    }
                    Err(_) => bonds.corrupt += 1,
                },
                _ => receipts.corrupt += 1,
            }
        }
        Ok((receipts, bonds))
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META), key.as_bytes())?)
    }

    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put(CF_META, key.as_bytes(), value)
    }
}

impl Store {
    /// Every JSON record of the wallet's column family under `prefix`.
    pub(crate) fn wallet_records<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, xov_wallet::WalletError> {
        let corrupt = |e: String| xov_wallet::WalletError::Corrupt(e);
        let mut out = Vec::new();
        for kv in self
            .db
            .prefix_iterator_cf(self.cf(CF_WALLET), prefix.as_bytes())
        {
            let (k, v) = kv.map_err(|e| corrupt(e.to_string()))?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(|e| corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    pub(crate) fn put_wallet_record<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), xov_wallet::WalletError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| xov_wallet::WalletError::Corrupt(e.to_string()))?;
        self.put(CF_WALLET, key.as_bytes(), &bytes)
            .map_err(|e| xov_wallet::WalletError::Corrupt(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;
    use xov_protocol::*;

    fn offer(k: &Keypair, id: u64) -> Signed<Offer> {
        Signed::sign(
            Offer {
                provider: k.node_id(),
                pool: public_charter(Chain::REGTEST).body().pool_id(),
                offer_id: id,
                sequence: 1,
                created_at: 100,
                expires_at: 4000,
                instance: InstanceType {
                    vcpus: 1,
                    ram_mib: 512,
                    disk_gib: 1,
                    gpu: None,
                    arch: Arch::X86_64,
                },
                images: vec!["tiny".into()],
                price_sats_per_hour: 10,
                min_lease_secs: 60,
                max_lease_secs: 3600,
                location: Location {
                    country: "NL".into(),
                    region: String::new(),
                },
                capacity: 1,
                bond: None,
                chain: Chain::REGTEST,
                extra_ports: vec![],
            },
            k,
        )
    }

    #[test]
    fn offers_survive_reopen_and_corrupt_entries_are_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let k = Keypair::from_secret_bytes(&[3; 32]);
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_offer(&offer(&k, 1)).unwrap();
            s.put_offer(&offer(&k, 2)).unwrap();
            s.delete_offer(&OfferKey {
                provider: k.node_id(),
                offer_id: 2,
            })
            .unwrap();
            s.put_pool(&public_charter(Chain::REGTEST)).unwrap();
            s.put(CF_OFFERS, b"junk-key", b"not a message").unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let loaded = s.offers().unwrap();
        assert_eq!(
            loaded.items,
            vec![StoredOffer {
                id: offer(&k, 1).id(),
                offer: offer(&k, 1),
                sealed: true
            }]
        );
        assert_eq!(loaded.corrupt, 1);
        assert_eq!(
            s.pools().unwrap().items,
            vec![public_charter(Chain::REGTEST)]
        );
    }

    /// Which stored offers count as already checked: only what this database sealed, unchanged.
    #[test]
    fn only_this_databases_own_unchanged_seals_count() {
        let dir = tempfile::tempdir().unwrap();
        let k = Keypair::from_secret_bytes(&[3; 32]);
        let s = Store::open(&dir.path().join("a")).unwrap();
        let other = Store::open(&dir.path().join("b")).unwrap();
        let key = |id| {
            offer_key(&OfferKey {
                provider: k.node_id(),
                offer_id: id,
            })
        };
        // 1: sealed here; 2: relayed, sealed here; 3: plain wire bytes (an older xov, or another program)
        s.put_offer(&offer(&k, 1)).unwrap();
        s.put_relayed_offer(&offer(&k, 2)).unwrap();
        s.put(CF_OFFERS, &key(3), &offer(&k, 3).to_bytes()).unwrap();
        // 4: sealed by another database, copied over
        let v4 = other.sealed_value(&key(4), &offer(&k, 4));
        s.put(CF_OFFERS, &key(4), &v4).unwrap();
        // 5: sealed here, then one byte of the offer changed
        let mut v5 = s.sealed_value(&key(5), &offer(&k, 5));
        let last = v5.len() - 1;
        v5[last] ^= 1;
        s.put(CF_OFFERS, &key(5), &v5).unwrap();
        // 6: sealed here under another entry's key (moved)
        let v6 = s.sealed_value(&key(1), &offer(&k, 6));
        s.put(CF_OFFERS, &key(6), &v6).unwrap();
        // 7: a seal mark and nothing else
        s.put(CF_OFFERS, &key(7), &[SEALED, 1, 2]).unwrap();
        drop(s);
        let s = Store::open(&dir.path().join("a")).unwrap();
        let loaded = s.offers().unwrap();
        let sealed: Vec<(u64, bool)> = loaded
            .items
            .iter()
            .map(|o| (o.offer.body().offer_id, o.sealed))
            .collect();
        assert_eq!(
            sealed,
            vec![
                (1, true),
                (2, true),
                (3, false),
                (4, false),
                (5, false),
                (6, false)
            ]
        );
        assert_eq!(loaded.corrupt, 1, "the bare seal mark is unreadable");
        // sealing the checked ones makes them count from then on
        let checked: Vec<_> = loaded
            .items
            .iter()
            .filter(|o| o.offer.body().offer_id == 3)
            .map(|o| o.offer.clone())
            .collect();
        s.seal_offers(&checked).unwrap();
        let again = s.offers().unwrap();
        assert!(again
            .items
            .iter()
            .any(|o| o.offer.body().offer_id == 3 && o.sealed));
    }

    fn receipt(p: &Keypair, b: &Keypair) -> SignedReceipt {
        ProviderReceipt::sign(
            Receipt {
                lease_id: MessageId([5; 32]),
                pool: public_charter(Chain::REGTEST).body().pool_id(),
                provider: p.node_id(),
                buyer: b.node_id(),
                started_at: 1_000,
                ended_at: 2_000,
                paid_sats: 5_000,
                refunded_sats: 0,
            },
            p,
        )
        .countersign(b)
        .unwrap()
    }

    #[test]
    fn trust_evidence_of_encoding_version_1_is_carried_over_once_and_offers_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let (p, b) = (
            Keypair::from_secret_bytes(&[4; 32]),
            Keypair::from_secret_bytes(&[5; 32]),
        );
        let r = receipt(&p, &b);
        let mut v1_receipt = r.to_bytes();
        v1_receipt[0] = 1;
        let old_key = [b"r".as_slice(), &sha2::Sha256::digest(&v1_receipt)[..]].concat();
        let mut v1_offer = offer(&p, 1).to_bytes();
        v1_offer[0] = 1;
        {
            let s = Store::open(dir.path()).unwrap();
            s.put(CF_TRUST, &old_key, &v1_receipt).unwrap();
            s.put(CF_OFFERS, b"old-offer", &v1_offer).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let (receipts, _) = s.trust_evidence().unwrap();
        assert_eq!(receipts.items, vec![r.clone()]);
        assert_eq!(receipts.corrupt, 0);
        assert!(receipts.items[0].verify(), "signatures carried over");
        // Stored again in version 2, under its new key, once.
        let raw = s.load_raw(CF_TRUST).unwrap();
        assert_eq!(raw, vec![(receipt_key(&r), r.to_bytes())]);
        assert_eq!(s.trust_evidence().unwrap().0.items, vec![r]);
        // An offer of version 1 names no chain: unreadable.
        let offers = s.offers().unwrap();
        assert!(offers.items.is_empty());
        assert_eq!(offers.corrupt, 1);
    }
}
