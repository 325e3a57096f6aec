//! The wallet's state in the node's database (column family `wallet`): BDK's change set, the invoices
//! (`invoice/<id>`) and the fidelity bonds (`bond/<outpoint>`), all as JSON, every write synced.
//!
//! The change set is kept as a base record (`changeset`) plus the deltas written since
//! (`changeset/d/<seq>`, ten digits, in order): each chain update writes only its delta, so the cost of a
//! block does not grow with the wallet's history. Every [`FOLD_EVERY`] deltas, one atomic batch writes the
//! complete change set as the new base and deletes the deltas.
//!
//! Invariants: loading merges the base and every delta in order, so what is read is what was written
//! whatever the moment of a crash (a fold is one batch); a complete write replaces the base and drops every
//! delta in the same batch.

use rocksdb::{WriteBatch, WriteOptions};
use xov_wallet::bdk::ChangeSet;
use xov_wallet::{Bond, Invoice, WalletError, WalletStore};

use super::{Store, CF_WALLET};

/// Deltas kept before they are folded into the base.
pub const FOLD_EVERY: u32 = 100;

const BASE: &[u8] = b"changeset";
const DELTA_PREFIX: &[u8] = b"changeset/d/";

fn corrupt(e: impl std::fmt::Display) -> WalletError {
    WalletError::Corrupt(e.to_string())
}

/// The node's database as the wallet's store.
pub struct WalletDb {
    store: Store,
    /// Deltas on disk since the base; the next delta's sequence number.
    deltas: u32,
}

impl WalletDb {
    pub fn new(store: Store) -> WalletDb {
        WalletDb { store, deltas: 0 }
    }

    fn delta_keys(&self) -> Result<Vec<Vec<u8>>, WalletError> {
        let mut keys = Vec::new();
        for kv in self
            .store
            .db
            .prefix_iterator_cf(self.store.cf(CF_WALLET), DELTA_PREFIX)
        {
            let (k, _) = kv.map_err(corrupt)?;
            if !k.starts_with(DELTA_PREFIX) {
                break;
            }
            keys.push(k.to_vec());
        }
        Ok(keys)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), WalletError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.store.db.write_opt(batch, &wo).map_err(corrupt)
    }

    /// The base replaced by `full`, every delta deleted, in one batch.
    fn fold(&mut self, full: &ChangeSet) -> Result<(), WalletError> {
        let cf = self.store.cf(CF_WALLET);
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, BASE, serde_json::to_vec(full).map_err(corrupt)?);
        for k in self.delta_keys()? {
            batch.delete_cf(cf, k);
        }
        self.write(batch)?;
        self.deltas = 0;
        Ok(())
    }
}

impl WalletStore for WalletDb {
    fn load_changeset(&self) -> Result<Option<ChangeSet>, WalletError> {
        let cf = self.store.cf(CF_WALLET);
        let base = self.store.db.get_cf(cf, BASE).map_err(corrupt)?;
        let mut out: Option<ChangeSet> = base
            .map(|b| serde_json::from_slice(&b).map_err(corrupt))
            .transpose()?;
        for k in self.delta_keys()? {
            let Some(v) = self.store.db.get_cf(cf, &k).map_err(corrupt)? else {
                continue;
            };
            let delta: ChangeSet = serde_json::from_slice(&v).map_err(corrupt)?;
            match out.as_mut() {
                Some(cs) => bdk_merge(cs, delta),
                None => out = Some(delta),
            }
        }
        Ok(out)
    }

    fn save_changeset(&mut self, full: &ChangeSet) -> Result<(), WalletError> {
        self.fold(full)
    }

    fn append_changeset(&mut self, delta: &ChangeSet, full: &ChangeSet) -> Result<(), WalletError> {
        if self.deltas == 0 {
            // First write of this process: continue after what is on disk.
            self.deltas = self.delta_keys()?.len() as u32;
        }
        if self.deltas >= FOLD_EVERY {
            return self.fold(full);
        }
        let key = [DELTA_PREFIX, format!("{:010}", self.next_seq()?).as_bytes()].concat();
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.store.cf(CF_WALLET),
            key,
            serde_json::to_vec(delta).map_err(corrupt)?,
        );
        self.write(batch)?;
        self.deltas += 1;
        Ok(())
    }

    fn load_invoices(&self) -> Result<Vec<Invoice>, WalletError> {
        self.store.wallet_records("invoice/")
    }

    fn save_invoice(&mut self, invoice: &Invoice) -> Result<(), WalletError> {
        self.store
            .put_wallet_record(&format!("invoice/{}", invoice.id), invoice)
    }

    fn load_bonds(&self) -> Result<Vec<Bond>, WalletError> {
        self.store.wallet_records("bond/")
    }

    fn save_bond(&mut self, bond: &Bond) -> Result<(), WalletError> {
        self.store
            .put_wallet_record(&format!("bond/{}", bond.outpoint), bond)
    }
}

impl WalletDb {
    /// One past the highest delta sequence on disk.
    fn next_seq(&self) -> Result<u64, WalletError> {
        let last = self.delta_keys()?.into_iter().next_back();
        Ok(match last {
            Some(k) => {
                let digits = std::str::from_utf8(&k[DELTA_PREFIX.len()..]).map_err(corrupt)?;
                digits.parse::<u64>().map_err(corrupt)? + 1
            }
            None => 0,
        })
    }
}

fn bdk_merge(into: &mut ChangeSet, delta: ChangeSet) {
    use xov_wallet::bdk::Merge;
    into.merge(delta);
}

#[cfg(test)]
mod tests {
    use super::*;
    use xov_wallet::bdk::local_chain;
    use xov_wallet::bitcoin::hashes::Hash;
    use xov_wallet::bitcoin::{BlockHash, Network};

    /// A change set that adds block `h` to the local chain.
    fn block(h: u32) -> ChangeSet {
        let mut lc = local_chain::ChangeSet::default();
        lc.blocks
            .insert(h, Some(BlockHash::from_byte_array([h as u8; 32])));
        ChangeSet {
            local_chain: lc,
            ..ChangeSet::default()
        }
    }

    #[test]
    fn deltas_are_appended_folded_and_read_back_merged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut db = WalletDb::new(store.clone());
        assert!(db.load_changeset().unwrap().is_none());
        let mut full = ChangeSet {
            network: Some(Network::Regtest),
            ..ChangeSet::default()
        };
        db.save_changeset(&full).unwrap();
        let n = FOLD_EVERY + 7;
        for h in 1..=n {
            let delta = block(h);
            bdk_merge(&mut full, delta.clone());
            db.append_changeset(&delta, &full).unwrap();
            assert!(
                db.delta_keys().unwrap().len() as u32 <= FOLD_EVERY,
                "block {h}"
            );
        }
        // Folded along the way: only the deltas since the last fold remain.
        assert!((db.delta_keys().unwrap().len() as u32) < FOLD_EVERY);
        // A new handle (a restart) reads every block back, and continues the sequence.
        let mut again = WalletDb::new(store);
        let loaded = again.load_changeset().unwrap().unwrap();
        assert_eq!(loaded, full);
        assert_eq!(loaded.local_chain.blocks.len() as u32, n);
        let before = again.delta_keys().unwrap().len();
        let delta = block(n + 1);
        bdk_merge(&mut full, delta.clone());
        again.append_changeset(&delta, &full).unwrap();
        assert_eq!(again.delta_keys().unwrap().len(), before + 1);
        assert_eq!(again.load_changeset().unwrap().unwrap(), full);
    }
}
