//! Durable state in RocksDB: signed offers, withdrawals and pool charters (later: leases).
//!
//! Values are the messages' canonical wire bytes, so what is stored is exactly what was verified, and a
//! restarted node re-validates everything it loads instead of trusting its own disk blindly.
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
    upgrade, BondProof, DecodeError, NodeId, Offer, OfferKey, OfferWithdrawal, PoolCharter, PoolId,
    Signed, SignedReceipt,
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
        Ok(Store {
            db: std::sync::Arc::new(db),
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

    pub fn put_offer(&self, offer: &Signed<Offer>) -> Result<(), StoreError> {
        self.put(
            CF_OFFERS,
            &offer_key(&OfferKey::of(offer.body())),
            &offer.to_bytes(),
        )
    }

    /// Stores another node's offer without waiting for the disk: a crash may lose the last few, which the
    /// book sync fetches again from peers. (One fsync per relayed offer made 50 nodes on one disk fall
    /// behind at 100 offers/s; docs/benchmarks.md, Gossip.) Own offers go through [`Store::put_offer`].
    pub fn put_relayed_offer(&self, offer: &Signed<Offer>) -> Result<(), StoreError> {
        self.db.put_cf(
            self.cf(CF_OFFERS),
            offer_key(&OfferKey::of(offer.body())),
            offer.to_bytes(),
        )?;
        Ok(())
    }

    pub fn delete_offer(&self, key: &OfferKey) -> Result<(), StoreError> {
        self.delete(CF_OFFERS, &offer_key(key))
    }

    pub fn offers(&self) -> Result<Loaded<Signed<Offer>>, StoreError> {
        self.load(CF_OFFERS, |b| Signed::from_bytes(b).ok())
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
        assert_eq!(loaded.items, vec![offer(&k, 1)]);
        assert_eq!(loaded.corrupt, 1);
        assert_eq!(
            s.pools().unwrap().items,
            vec![public_charter(Chain::REGTEST)]
        );
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
