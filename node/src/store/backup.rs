//! Backup and restore of what a node cannot get back from the chain or the network: its identity
//! (`node.key`), its leases (records, and with them each invoice's lease), its wallet's state (invoices,
//! fidelity bonds and their lock times, BDK's change set with the revealed addresses and the chain position),
//! its trust evidence (receipts, bond proofs), its pools (charters, which ones it joined), its own offers and
//! withdrawals, and the buyer's `ssh/` files (the key each lease was ordered with, each machine's known
//! hosts). Not in it: other nodes' offers (the book sync brings them back), caches (known peers), the
//! config file (`xov.toml`), and the recovery words: they are the user's separate secret, restored with
//! [`restore_words`].
//!
//! The file is text: a header line `xov-backup <version>`, then one JSON object per line (the node record
//! first, then database entries and files, keys and values in hex), then `sha256 <hex>` over every byte
//! before that line. Invariants:
//! - a file is written under a temporary name (0600, created exclusively) and hard-linked to its name, which
//!   fails if that exists: a backup never replaces a file and is never seen half-written;
//! - a file is checked whole (header, version, checksum, every line) before anything is written; a wrong
//!   version, a damaged or truncated file is refused with a [`BackupError`] naming what is wrong;
//! - an import writes only into a data dir no node runs in and that has no database (and no node key, or
//!   the backup's): the database is built beside it and renamed into place last, so an interrupted import
//!   leaves no half database behind;
//! - the export reads the database as a RocksDB secondary instance, so it works whether the node runs or
//!   not and never takes the running node's lock: what it reads is one consistent point of the database.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rocksdb::{IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use xov_protocol::Keypair;
use xov_wallet::keys::WordsError;
use xov_wallet::WalletError;

use super::datadir::{DataDir, DataDirError, DB_DIR};
use super::{
    Store, StoreError, CF_LEASES, CF_META, CF_OFFERS, CF_POOLS, CF_TRUST, CF_WALLET, CF_WITHDRAWALS,
};

/// First word of a backup file.
pub const MAGIC: &str = "xov-backup";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;
const CHECKSUM_PREFIX: &str = "sha256 ";
/// The buyer's SSH files (see `xov ssh`), under the data dir.
pub const SSH_DIR: &str = "ssh";
/// Database families kept whole (`meta` less its caches).
const WHOLE: [&str; 5] = [CF_LEASES, CF_WALLET, CF_TRUST, CF_POOLS, CF_META];
/// Families of which only this node's own entries are kept (keys start with the provider's node id).
const OWN_ONLY: [&str; 2] = [CF_OFFERS, CF_WITHDRAWALS];
/// `meta` keys left out: caches, rebuilt by a running node, and the database's offer seal key (it never
/// leaves its database: a restored node checks its own offers' signatures once more and seals them anew).
const META_CACHES: [&str; 2] = [
    crate::network::known_peers::META_KEY,
    crate::store::META_SEAL_KEY,
];

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{path} is not an xov backup (its first line is not `{MAGIC} <version>`)")]
    NotABackup { path: String },
    #[error("{path} is an xov backup of version {found}; this xov reads version {VERSION} only (use the xov release that wrote it)")]
    UnsupportedVersion { path: String, found: String },
    #[error(
        "{path} is truncated: its closing checksum line is missing; copy the whole file again"
    )]
    Truncated { path: String },
    #[error("{path} is damaged: its content does not match its sha256 checksum; use another copy")]
    Checksum { path: String },
    #[error("{path} is damaged at line {line}: {message}")]
    Malformed {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{dir} has no node database ({DB_DIR}/ is missing): nothing to back up there; is --datadir right?")]
    NoStore { dir: String },
    #[error(
        "{dir} has no node key ({}): nothing to back up there; is --datadir right?",
        super::datadir::KEY_FILE
    )]
    NoKey { dir: String },
    #[error("{path} exists already; a backup never replaces a file: choose another name")]
    OutExists { path: String },
    #[error("{dir} has a node database already ({DB_DIR}/); import only into an empty data dir (a new --datadir), never over a node's state")]
    StoreExists { dir: String },
    #[error("{path} is another node's identity than the backup's ({backup}); import only into an empty data dir")]
    OtherKey { path: String, backup: String },
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the node's database: {0}")]
    Secondary(rocksdb::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the recovery words are not valid: {0}")]
    Words(#[from] WordsError),
    #[error(transparent)]
    Wallet(#[from] WalletError),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |source| BackupError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// One database entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub family: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// What a backup holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Backup {
    pub node_key: [u8; 32],
    /// Unix seconds.
    pub created_at: u64,
    pub entries: Vec<Entry>,
    /// Files under the data dir, by relative path (`ssh/<name>`).
    pub files: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Backup {
    /// Without the node key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup")
            .field("node_id", &self.node_id())
            .field("created_at", &self.created_at)
            .field("entries", &self.entries.len())
            .field("files", &self.files.len())
            .finish()
    }
}

/// What a backup holds, in numbers (what export and import report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub node_id: String,
    pub created_at: u64,
    /// Entries per database family.
    pub entries: BTreeMap<String, usize>,
    pub files: usize,
}

/// One line of the body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Node {
        node_id: String,
        node_key: String,
        created_at: u64,
    },
    Entry {
        family: String,
        key: String,
        value: String,
    },
    File {
        path: String,
        value: String,
    },
}

impl Backup {
    pub fn node_id(&self) -> String {
        Keypair::from_secret_bytes(&self.node_key)
            .node_id()
            .to_string()
    }

    pub fn summary(&self) -> Summary {
        let mut entries = BTreeMap::new();
        for e in &self.entries {
            *entries.entry(e.family.clone()).or_insert(0) += 1;
        }
        Summary {
            node_id: self.node_id(),
            created_at: self.created_at,
            entries,
            files: self.files.len(),
        }
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{MAGIC} {VERSION}\n").into_bytes();
        let mut line = |l: &Line| {
            out.extend(serde_json::to_vec(l).expect("backup lines serialize"));
            out.push(b'\n');
        };
        line(&Line::Node {
            node_id: self.node_id(),
            node_key: hex::encode(self.node_key),
            created_at: self.created_at,
        });
        for e in &self.entries {
            line(&Line::Entry {
                family: e.family.clone(),
                key: hex::encode(&e.key),
                value: hex::encode(&e.value),
            });
        }
        for (path, value) in &self.files {
            line(&Line::File {
                path: path.clone(),
                value: hex::encode(value),
            });
        }
        let sum = hex::encode(Sha256::digest(&out));
        out.extend(format!("{CHECKSUM_PREFIX}{sum}\n").into_bytes());
        out
    }

    /// Reads a file's bytes (`path` names it in errors), checking all of it.
    pub fn decode(bytes: &[u8], path: &str) -> Result<Backup, BackupError> {
        let p = || path.to_string();
        let first_end = bytes.iter().position(|b| *b == b'\n');
        let first = std::str::from_utf8(&bytes[..first_end.unwrap_or(bytes.len())])
            .map_err(|_| BackupError::NotABackup { path: p() })?;
        let version = match first.split_once(' ') {
            Some((MAGIC, v)) => v.trim(),
            _ => return Err(BackupError::NotABackup { path: p() }),
        };
        if version != VERSION.to_string() {
            return Err(BackupError::UnsupportedVersion {
                path: p(),
                found: version.chars().take(20).collect(),
            });
        }
        let Some(first_end) = first_end else {
            return Err(BackupError::Truncated { path: p() });
        };
        // The checksum line: the last one, ended by a newline.
        let body_end = match bytes.strip_suffix(b"\n") {
            Some(rest) => rest.iter().rposition(|b| *b == b'\n').map(|i| i + 1),
            None => None,
        };
        let Some(body_end) = body_end.filter(|e| *e > first_end) else {
            return Err(BackupError::Truncated { path: p() });
        };
        let last = &bytes[body_end..bytes.len() - 1];
        let Some(sum) = last.strip_prefix(CHECKSUM_PREFIX.as_bytes()) else {
            return Err(BackupError::Truncated { path: p() });
        };
        let want = hex::encode(Sha256::digest(&bytes[..body_end]));
        if sum != want.as_bytes() {
            return Err(BackupError::Checksum { path: p() });
        }
        let body = std::str::from_utf8(&bytes[first_end + 1..body_end]).map_err(|_| {
            BackupError::Checksum { path: p() } // unreachable with a matching checksum of our own writing
        })?;
        let mut node: Option<([u8; 32], u64)> = None;
        let mut entries = Vec::new();
        let mut files = Vec::new();
        for (i, text) in body.lines().enumerate() {
            let line = i + 2;
            let bad = |message: String| BackupError::Malformed {
                path: p(),
                line,
                message,
            };
            let unhex = |what: &str, h: &str| {
                hex::decode(h).map_err(|e| bad(format!("{what} is not hex: {e}")))
            };
            let parsed: Line = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
            match (parsed, node.is_some()) {
                (
                    Line::Node {
                        node_id,
                        node_key,
                        created_at,
                    },
                    false,
                ) => {
                    let key: [u8; 32] = unhex("node_key", &node_key)?
                        .try_into()
                        .map_err(|_| bad("node_key is not 32 bytes".into()))?;
                    let id = Keypair::from_secret_bytes(&key).node_id().to_string();
                    if id != node_id {
                        return Err(bad(format!(
                            "the node key is not node {node_id}'s (it is {id}'s)"
                        )));
                    }
                    node = Some((key, created_at));
                }
                (Line::Node { .. }, true) => return Err(bad("a second node record".into())),
                (_, false) => return Err(bad("the node record must come first".into())),
                (Line::Entry { family, key, value }, true) => {
                    if !WHOLE.contains(&family.as_str()) && !OWN_ONLY.contains(&family.as_str()) {
                        return Err(bad(format!("unknown database family '{family}'")));
                    }
                    entries.push(Entry {
                        family,
                        key: unhex("key", &key)?,
                        value: unhex("value", &value)?,
                    });
                }
                (Line::File { path: f, value }, true) => {
                    if !is_backed_up_file(&f) {
                        return Err(bad(format!("file '{f}' is not one a backup holds")));
                    }
                    files.push((f, unhex("value", &value)?));
                }
            }
        }
        let Some((node_key, created_at)) = node else {
            return Err(BackupError::Malformed {
                path: p(),
                line: 2,
                message: "no node record".into(),
            });
        };
        Ok(Backup {
            node_key,
            created_at,
            entries,
            files,
        })
    }

    /// Reads and checks the backup file at `path`.
    pub fn read(path: &Path) -> Result<Backup, BackupError> {
        let bytes = std::fs::read(path).map_err(io("cannot read", path))?;
        Backup::decode(&bytes, &path.display().to_string())
    }

    /// Writes the backup to `out`, which must not exist: under a temporary name first (0600, created
    /// exclusively, synced), then hard-linked to `out`. Returns the file's size.
    pub fn write(&self, out: &Path) -> Result<u64, BackupError> {
        let exists = || BackupError::OutExists {
            path: out.display().to_string(),
        };
        if out.symlink_metadata().is_ok() {
            return Err(exists());
        }
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "backup".into());
        let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let bytes = self.encode();
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("cannot create", &tmp))?;
            f.write_all(&bytes).map_err(io("cannot write", &tmp))?;
            f.sync_all().map_err(io("cannot sync", &tmp))?;
            std::fs::hard_link(&tmp, out).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    exists()
                } else {
                    io("cannot create", out)(e)
                }
            })
        })();
        let _ = std::fs::remove_file(&tmp);
        written?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(bytes.len() as u64)
    }
}

/// `ssh/<name>`, a plain name (no further directories, nothing hidden).
fn is_backed_up_file(path: &str) -> bool {
    match path.split_once('/') {
        Some((SSH_DIR, name)) => {
            !name.is_empty() && !name.contains('/') && !name.starts_with('.') && name != ".."
        }
        _ => false,
    }
}

/// Removes the secondary instance's directory when the export ends, however it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads the backup of the data dir `dd`, whether its node runs or not. `now` is the time recorded in it.
pub fn export(dd: &DataDir, now: u64) -> Result<Backup, BackupError> {
    let dir = || dd.root().display().to_string();
    let key = dd
        .read_key()?
        .ok_or_else(|| BackupError::NoKey { dir: dir() })?;
    let node_id = key.node_id();
    let db_path = dd.path(DB_DIR);
    if !db_path.join("CURRENT").exists() {
        return Err(BackupError::NoStore { dir: dir() });
    }
    // The secondary instance keeps its own small files (logs) here; the data dir is private (0700).
    let secondary = TempDir(dd.path(&format!(".backup-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&secondary.0);
    let mut opts = Options::default();
    // Every file kept open: files the running node deletes (compaction) stay readable to this instance.
    opts.set_max_open_files(-1);
    let families = DB::list_cf(&opts, &db_path).map_err(BackupError::Secondary)?;
    let db = DB::open_cf_as_secondary(&opts, &db_path, &secondary.0, &families)
        .map_err(BackupError::Secondary)?;
    db.try_catch_up_with_primary()
        .map_err(BackupError::Secondary)?;
    let mut entries = Vec::new();
    for family in WHOLE.iter().chain(OWN_ONLY.iter()) {
        let Some(cf) = db.cf_handle(family) else {
            continue;
        };
        for kv in db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = kv.map_err(BackupError::Secondary)?;
            let keep = match *family {
                CF_META => !META_CACHES.iter().any(|c| c.as_bytes() == &*k),
                f if OWN_ONLY.contains(&f) => k.starts_with(node_id.as_bytes()),
                _ => true,
            };
            if keep {
                entries.push(Entry {
                    family: family.to_string(),
                    key: k.to_vec(),
                    value: v.to_vec(),
                });
            }
        }
    }
    drop(db);
    let mut files = Vec::new();
    let ssh = dd.path(SSH_DIR);
    if let Ok(list) = std::fs::read_dir(&ssh) {
        let mut names: Vec<String> = list
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .map(|n| format!("{SSH_DIR}/{n}"))
            .filter(|p| is_backed_up_file(p))
            .collect();
        names.sort();
        for name in names {
            let path = dd.path(&name);
            files.push((
                name,
                std::fs::read(&path).map_err(io("cannot read", &path))?,
            ));
        }
    }
    Ok(Backup {
        node_key: key.secret_bytes(),
        created_at: now,
        entries,
        files,
    })
}

/// Writes `backup` into the data dir `dd`: refused while a node runs there, when it has a database, or when
/// it has another node key. The database is built in `db.importing` and renamed to `db` last.
pub fn import(dd: &DataDir, backup: &Backup) -> Result<Summary, BackupError> {
    dd.create()?;
    let _lock = dd.lock()?;
    let dir = dd.root().display().to_string();
    let db_path = dd.path(DB_DIR);
    let has_db = std::fs::read_dir(&db_path).is_ok_and(|mut d| d.next().is_some());
    if has_db {
        return Err(BackupError::StoreExists { dir });
    }
    let key = Keypair::from_secret_bytes(&backup.node_key);
    let existing = dd.read_key()?;
    if let Some(k) = &existing {
        if k.node_id() != key.node_id() {
            return Err(BackupError::OtherKey {
                path: dd.path(super::datadir::KEY_FILE).display().to_string(),
                backup: key.node_id().to_string(),
            });
        }
    }
    let building = dd.path(&format!("{DB_DIR}.importing"));
    let _ = std::fs::remove_dir_all(&building);
    {
        let store = Store::open(&building)?;
        let mut batch = WriteBatch::default();
        for e in &backup.entries {
            batch.put_cf(store.cf(&e.family), &e.key, &e.value);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        store
            .db
            .write_opt(batch, &wo)
            .map_err(|e| BackupError::Store(StoreError::Db(e)))?;
    }
    if !backup.files.is_empty() {
        let ssh = dd.path(SSH_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&ssh)
            .map_err(io("cannot create", &ssh))?;
        for (name, value) in &backup.files {
            let path = dd.path(name);
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(io("cannot create", &path))?;
            f.write_all(value).map_err(io("cannot write", &path))?;
            f.sync_all().map_err(io("cannot sync", &path))?;
        }
    }
    if existing.is_none() {
        dd.write_key(&key)?;
    }
    // An empty `db` directory (left by hand) is replaced by the rename.
    let _ = std::fs::remove_dir(&db_path);
    std::fs::rename(&building, &db_path).map_err(io("cannot move into place", &db_path))?;
    let _ = std::fs::File::open(dd.root()).and_then(|d| d.sync_all());
    Ok(backup.summary())
}

/// Writes typed recovery words as the data dir's wallet mnemonic (0600; encrypted with `file_passphrase`, as
/// a wallet created with `XOV_WALLET_PASSPHRASE` is). The words are checked before anything is written;
/// refused while a node runs there or when the data dir has a wallet already.
pub fn restore_words(
    dd: &DataDir,
    words: &str,
    file_passphrase: Option<&str>,
) -> Result<PathBuf, BackupError> {
    let mnemonic = xov_wallet::keys::parse_words(words)?;
    let path = dd.path(crate::daemon::WALLET_MNEMONIC);
    if path.exists() {
        return Err(WalletError::MnemonicExists {
            path: path.display().to_string(),
        }
        .into());
    }
    dd.create()?;
    let _lock = dd.lock()?;
    xov_wallet::keys::write_mnemonic(&path, &mnemonic, file_passphrase)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::datadir::KEY_FILE;
    use std::os::unix::fs::PermissionsExt;

    const WORDS: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
        abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
        abandon art";

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// A data dir with a key, a database holding one entry of each kind (and another node's offer, and the
    /// known-peers cache), and an SSH file.
    fn node(root: &Path) -> (DataDir, Keypair) {
        let dd = DataDir::new(root);
        dd.create().unwrap();
        let key = Keypair::from_secret_bytes(&[7; 32]);
        dd.write_key(&key).unwrap();
        let s = Store::open(&dd.path(DB_DIR)).unwrap();
        s.put(CF_LEASES, b"lease-1", b"{\"id\":\"lease-1\"}")
            .unwrap();
        s.put(CF_WALLET, b"invoice/lease-1", b"{}").unwrap();
        s.put(CF_WALLET, b"bond/ab:0", b"{\"locktime\":500}")
            .unwrap();
        s.put(CF_TRUST, b"r-receipt", b"receipt").unwrap();
        s.put(CF_POOLS, b"pool", b"charter").unwrap();
        s.put_meta("joined_pools", b"[]").unwrap();
        s.put_meta(crate::network::known_peers::META_KEY, b"cache")
            .unwrap();
        let own = [key.node_id().as_bytes().as_slice(), &1u64.to_be_bytes()].concat();
        s.put(CF_OFFERS, &own, b"own offer").unwrap();
        let other = Keypair::from_secret_bytes(&[8; 32]).node_id();
        let theirs = [other.as_bytes().as_slice(), &1u64.to_be_bytes()].concat();
        s.put(CF_OFFERS, &theirs, b"their offer").unwrap();
        std::fs::create_dir_all(dd.path(SSH_DIR)).unwrap();
        std::fs::write(dd.path("ssh/lease-1.key"), b"/home/me/.ssh/id.pub").unwrap();
        (dd, key)
    }

    fn families(b: &Backup) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = b
            .entries
            .iter()
            .map(|e| (e.family.clone(), e.key.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn export_keeps_what_cannot_be_rebuilt_and_import_restores_it() {
        let dir = tempfile::tempdir().unwrap();
        let (dd, key) = node(&dir.path().join("a"));
        // Exported while the node runs: its database open, its data dir locked.
        let running = Store::open(&dd.path(DB_DIR)).unwrap();
        let lock = dd.lock().unwrap();
        let b = export(&dd, 1234).unwrap();
        drop((running, lock));
        let kept = families(&b);
        assert!(kept.contains(&("leases".into(), b"lease-1".to_vec())));
        assert!(kept.contains(&("wallet".into(), b"bond/ab:0".to_vec())));
        assert!(kept.contains(&("meta".into(), b"joined_pools".to_vec())));
        assert!(
            !kept.iter().any(|(_, k)| k == b"network/known_peers"),
            "caches stay out"
        );
        let offers: Vec<_> = kept.iter().filter(|(f, _)| f == "offers").collect();
        assert_eq!(offers.len(), 1, "only the node's own offer: {offers:?}");
        assert_eq!(b.files.len(), 1);
        assert!(
            !dd.path(&format!(".backup-{}", std::process::id())).exists(),
            "the secondary instance's directory is removed"
        );

        let file = dir.path().join("node.xovbackup");
        b.write(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(matches!(b.write(&file), Err(BackupError::OutExists { .. })));
        let read = Backup::read(&file).unwrap();
        assert_eq!(read, b);

        let fresh = DataDir::new(dir.path().join("b"));
        let summary = import(&fresh, &read).unwrap();
        assert_eq!(summary.node_id, key.node_id().to_string());
        assert_eq!(summary.entries["leases"], 1);
        assert_eq!(mode(&fresh.path(KEY_FILE)), 0o600);
        assert_eq!(fresh.read_key().unwrap().unwrap().node_id(), key.node_id());
        assert_eq!(
            std::fs::read(fresh.path("ssh/lease-1.key")).unwrap(),
            b"/home/me/.ssh/id.pub"
        );
        assert!(!fresh.path("db.importing").exists());
        let s = Store::open(&fresh.path(DB_DIR)).unwrap();
        assert_eq!(
            s.load_raw(CF_LEASES).unwrap(),
            vec![(b"lease-1".to_vec(), b"{\"id\":\"lease-1\"}".to_vec())]
        );
        assert_eq!(s.get_meta("joined_pools").unwrap(), Some(b"[]".to_vec()));
        assert_eq!(s.load_raw(CF_OFFERS).unwrap().len(), 1);
    }

    #[test]
    fn an_import_is_refused_where_a_node_has_state_or_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (dd, _) = node(&dir.path().join("a"));
        let b = export(&dd, 1).unwrap();
        // Over the node itself: it has a database.
        assert!(matches!(
            import(&dd, &b),
            Err(BackupError::StoreExists { .. })
        ));
        // Into a data dir with another identity.
        let other = DataDir::new(dir.path().join("other"));
        other.create().unwrap();
        other
            .write_key(&Keypair::from_secret_bytes(&[9; 32]))
            .unwrap();
        let e = import(&other, &b).unwrap_err();
        assert!(matches!(e, BackupError::OtherKey { .. }), "{e}");
        assert!(!other.path(DB_DIR).exists(), "nothing written");
        // Where a node runs.
        let busy = DataDir::new(dir.path().join("busy"));
        busy.create().unwrap();
        let held = busy.lock().unwrap();
        assert!(matches!(
            import(&busy, &b),
            Err(BackupError::DataDir(DataDirError::Locked { .. }))
        ));
        drop(held);
        // The same identity without a database (an import cut short): completed.
        let same = DataDir::new(dir.path().join("same"));
        same.create().unwrap();
        same.write_key(&Keypair::from_secret_bytes(&[7; 32]))
            .unwrap();
        std::fs::create_dir_all(same.path("db.importing/junk")).unwrap();
        import(&same, &b).unwrap();
        assert!(same.path(DB_DIR).join("CURRENT").exists());
    }

    #[test]
    fn damaged_truncated_and_foreign_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (dd, _) = node(&dir.path().join("a"));
        let good = export(&dd, 1).unwrap().encode();
        let check = |bytes: &[u8]| Backup::decode(bytes, "f.backup").unwrap_err();

        // One byte of a value flipped.
        let mut flipped = good.clone();
        let at = good.len() / 2;
        flipped[at] = if flipped[at] == b'0' { b'1' } else { b'0' };
        let e = check(&flipped);
        assert!(matches!(e, BackupError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("f.backup is damaged"), "{e}");
        // Cut anywhere: the checksum line is gone or incomplete.
        for cut in [good.len() - 1, good.len() - 30, good.len() / 2, 20] {
            let e = check(&good[..cut]);
            assert!(
                matches!(
                    e,
                    BackupError::Truncated { .. } | BackupError::Checksum { .. }
                ),
                "cut at {cut}: {e}"
            );
        }
        // Another version.
        let newer = [b"xov-backup 2".as_slice(), &good[12..]].concat();
        let e = check(&newer);
        assert!(
            matches!(&e, BackupError::UnsupportedVersion { found, .. } if found == "2"),
            "{e}"
        );
        assert!(e.to_string().contains("reads version 1"), "{e}");
        // Not a backup at all.
        assert!(matches!(
            check(b"hello\nworld\n"),
            BackupError::NotABackup { .. }
        ));
        // A well-formed file whose body is wrong (checksum made to match) is refused with the line.
        let body = format!(
            "{MAGIC} {VERSION}\n{{\"kind\":\"entry\",\"family\":\"leases\",\"key\":\"00\",\"value\":\"00\"}}\n"
        );
        let sum = hex::encode(Sha256::digest(body.as_bytes()));
        let e = check(format!("{body}sha256 {sum}\n").as_bytes());
        assert!(matches!(e, BackupError::Malformed { line: 2, .. }), "{e}");
        // Nothing was written by a refused file: import reads the file first.
        let bad = dir.path().join("bad.backup");
        std::fs::write(&bad, &flipped).unwrap();
        let target = DataDir::new(dir.path().join("t"));
        assert!(Backup::read(&bad).is_err());
        assert!(!target.root().exists());
    }

    #[test]
    fn export_needs_a_node() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::new(dir.path());
        assert!(matches!(export(&dd, 1), Err(BackupError::NoKey { .. })));
        dd.write_key(&Keypair::from_secret_bytes(&[1; 32])).unwrap();
        assert!(matches!(export(&dd, 1), Err(BackupError::NoStore { .. })));
    }

    #[test]
    fn words_are_restored_once_into_a_data_dir_without_a_wallet() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::new(dir.path().join("n"));
        // A wrong word: nothing is written, not even the data dir.
        let wrong = WORDS.replace(" art", " arts");
        let e = restore_words(&dd, &wrong, None).unwrap_err();
        assert!(e.to_string().contains("word 24 ('arts')"), "{e}");
        assert!(!dd.root().exists());
        let e = restore_words(&dd, &WORDS.replace(" art", " zoo"), None).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");

        let path = restore_words(&dd, WORDS, None).unwrap();
        assert_eq!(mode(&path), 0o600);
        let (m, created) = xov_wallet::keys::load_or_create_mnemonic(&path).unwrap();
        assert!(!created);
        assert_eq!(
            m.to_string(),
            WORDS.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        let e = restore_words(&dd, WORDS, None).unwrap_err();
        assert!(
            e.to_string().contains("restore into an empty data dir"),
            "{e}"
        );
    }
}
