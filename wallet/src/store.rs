//! Where the wallet keeps its state: BDK's change set (chain view, transactions, revealed indexes), the
//! invoices and the fidelity bonds. A trait, so the node keeps it in RocksDB and tests in files. Everything is written before the
//! caller acts on it (an address is stored as revealed before it is handed out).

use std::path::PathBuf;

use bdk_wallet::ChangeSet;

use crate::bond::Bond;
use crate::error::WalletError;
use crate::invoice::Invoice;

pub trait WalletStore: Send + 'static {
    fn load_changeset(&self) -> Result<Option<ChangeSet>, WalletError>;
    /// Replaces the stored change set with the complete one.
    fn save_changeset(&mut self, full: &ChangeSet) -> Result<(), WalletError>;
    /// Records one change (`delta`, already merged into `full`). A store that can append writes only the
    /// delta (each block's update stays small however large the wallet grows) and folds the deltas into
    /// one record now and then; by default the complete change set is written.
    fn append_changeset(&mut self, delta: &ChangeSet, full: &ChangeSet) -> Result<(), WalletError> {
        let _ = delta;
        self.save_changeset(full)
    }
    fn load_invoices(&self) -> Result<Vec<Invoice>, WalletError>;
    fn save_invoice(&mut self, invoice: &Invoice) -> Result<(), WalletError>;
    /// The wallet's fidelity bonds. A store that keeps none has none.
    fn load_bonds(&self) -> Result<Vec<Bond>, WalletError> {
        Ok(Vec::new())
    }
    /// Inserts or replaces a bond (keyed by its outpoint). The bond's locktime is not recoverable from the
    /// seed, so a store that cannot keep bonds refuses them rather than let coins be locked unrecorded.
    fn save_bond(&mut self, _bond: &Bond) -> Result<(), WalletError> {
        Err(WalletError::Unsupported(
            "this wallet store cannot keep fidelity bonds".into(),
        ))
    }
}

/// JSON files in a directory, each replaced atomically (write to a temp file, fsync, rename).
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Result<FileStore, WalletError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| WalletError::Io {
            what: "cannot create",
            path: dir.display().to_string(),
            source,
        })?;
        Ok(FileStore { dir })
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), WalletError> {
        use std::io::Write;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let io = |what, source| WalletError::Io {
            what,
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("cannot create", e))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| io("cannot write", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("cannot replace", e))
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, WalletError> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(WalletError::Io {
                what: "cannot read",
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

impl WalletStore for FileStore {
    fn load_changeset(&self) -> Result<Option<ChangeSet>, WalletError> {
        self.read("changeset.json")?
            .map(|b| serde_json::from_slice(&b).map_err(|e| WalletError::Corrupt(e.to_string())))
            .transpose()
    }

    fn save_changeset(&mut self, full: &ChangeSet) -> Result<(), WalletError> {
        let bytes = serde_json::to_vec(full).map_err(|e| WalletError::Corrupt(e.to_string()))?;
        self.write("changeset.json", &bytes)
    }

    fn load_invoices(&self) -> Result<Vec<Invoice>, WalletError> {
        Ok(match self.read("invoices.json")? {
            Some(b) => {
                serde_json::from_slice(&b).map_err(|e| WalletError::Corrupt(e.to_string()))?
            }
            None => Vec::new(),
        })
    }

    fn save_invoice(&mut self, invoice: &Invoice) -> Result<(), WalletError> {
        let mut all = self.load_invoices()?;
        match all.iter_mut().find(|i| i.id == invoice.id) {
            Some(slot) => *slot = invoice.clone(),
            None => all.push(invoice.clone()),
        }
        let bytes = serde_json::to_vec(&all).map_err(|e| WalletError::Corrupt(e.to_string()))?;
        self.write("invoices.json", &bytes)
    }

    fn load_bonds(&self) -> Result<Vec<Bond>, WalletError> {
        Ok(match self.read("bonds.json")? {
            Some(b) => {
                serde_json::from_slice(&b).map_err(|e| WalletError::Corrupt(e.to_string()))?
            }
            None => Vec::new(),
        })
    }

    fn save_bond(&mut self, bond: &Bond) -> Result<(), WalletError> {
        let mut all = self.load_bonds()?;
        match all.iter_mut().find(|b| b.outpoint == bond.outpoint) {
            Some(slot) => *slot = bond.clone(),
            None => all.push(bond.clone()),
        }
        let bytes = serde_json::to_vec(&all).map_err(|e| WalletError::Corrupt(e.to_string()))?;
        self.write("bonds.json", &bytes)
    }
}
