//! The node's data directory: an exclusive lock, the node key, the API cookie and address, the database.
//!
//! Secrets (node key, cookie) are created with mode 0600 from the start, never widened afterwards.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;
use xov_protocol::Keypair;

pub const LOCK_FILE: &str = "LOCK";
pub const KEY_FILE: &str = "node.key";
pub const COOKIE_FILE: &str = ".cookie";
pub const API_ADDR_FILE: &str = "api";
pub const DB_DIR: &str = "db";

#[derive(Debug, Error)]
pub enum DataDirError {
    #[error("another xov node is already running with data dir {dir}{pid}; stop it first (`xov --datadir {dir} node stop`) or choose another --datadir")]
    Locked { dir: String, pid: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("node key {path} is damaged ({len} bytes, expected 32); restore it from backup, or move it away to create a new identity")]
    BadKey { path: String, len: usize },
    #[error("node key {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    KeyPermissions { path: String, mode: u32 },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Paths inside a data dir; opening one does not lock it (see [`DataDir::lock`]).
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// Held while the daemon runs; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// `~/.xov`, or the current directory's `.xov` when there is no home.
    pub fn default_root() -> PathBuf {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".xov")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the directory (0700) if needed.
    pub fn create(&self) -> Result<(), DataDirError> {
        std::fs::create_dir_all(&self.root).map_err(io("cannot create data dir", &self.root))?;
        let mut perms = std::fs::metadata(&self.root)
            .map_err(io("cannot read data dir", &self.root))?
            .permissions();
        if perms.mode() & 0o077 != 0 {
            perms.set_mode(0o700);
            std::fs::set_permissions(&self.root, perms)
                .map_err(io("cannot restrict data dir", &self.root))?;
        }
        Ok(())
    }

    /// Takes the exclusive lock, so two daemons never share one data dir. The lock file holds the pid of the
    /// holder for the error message; the lock itself is the OS file lock, released even if the process dies.
    pub fn lock(&self) -> Result<DirLock, DataDirError> {
        let path = self.path(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("cannot open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(DataDirError::Locked {
                    dir: self.root.display().to_string(),
                    pid: if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("cannot lock", &path)(e)),
        }
        file.set_len(0)
            .map_err(io("cannot write lock file", &path))?;
        write!(file, "{}", std::process::id()).map_err(io("cannot write lock file", &path))?;
        Ok(DirLock { _file: file })
    }

    /// Loads the node key, creating it (0600) on first start.
    pub fn load_or_create_key(
        &self,
        generate: impl FnOnce() -> Keypair,
    ) -> Result<(Keypair, bool), DataDirError> {
        match self.read_key()? {
            Some(key) => Ok((key, false)),
            None => {
                let key = generate();
                self.write_key(&key)?;
                Ok((key, true))
            }
        }
    }

    /// Writes `key` as the node key (0600); fails if there is one (an identity is never overwritten).
    pub fn write_key(&self, key: &Keypair) -> Result<(), DataDirError> {
        write_secret(&self.path(KEY_FILE), &key.secret_bytes())
    }

    /// The node key, if the data dir has one (checked like at start: private and 32 bytes).
    pub fn read_key(&self) -> Result<Option<Keypair>, DataDirError> {
        let path = self.path(KEY_FILE);
        match File::open(&path) {
            Ok(mut f) => {
                let mode = f
                    .metadata()
                    .map_err(io("cannot read node key", &path))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(DataDirError::KeyPermissions {
                        path: path.display().to_string(),
                        mode: mode & 0o777,
                    });
                }
                let mut raw = Vec::new();
                f.read_to_end(&mut raw)
                    .map_err(io("cannot read node key", &path))?;
                let secret: [u8; 32] =
                    raw.as_slice()
                        .try_into()
                        .map_err(|_| DataDirError::BadKey {
                            path: path.display().to_string(),
                            len: raw.len(),
                        })?;
                Ok(Some(Keypair::from_secret_bytes(&secret)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot open node key", &path)(e)),
        }
    }

    /// Writes a fresh API cookie (0600) and returns the token.
    pub fn write_cookie(&self, token: &str) -> Result<(), DataDirError> {
        let path = self.path(COOKIE_FILE);
        let _ = std::fs::remove_file(&path);
        write_secret(&path, token.as_bytes())
    }

    pub fn read_cookie(&self) -> Result<String, DataDirError> {
        let path = self.path(COOKIE_FILE);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(io("cannot read API cookie", &path))
    }

    pub fn write_api_addr(&self, addr: &std::net::SocketAddr) -> Result<(), DataDirError> {
        let path = self.path(API_ADDR_FILE);
        std::fs::write(&path, addr.to_string()).map_err(io("cannot write", &path))
    }

    pub fn read_api_addr(&self) -> Result<String, DataDirError> {
        let path = self.path(API_ADDR_FILE);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(io("cannot read API address", &path))
    }

    /// Removes the files that only mean something while the daemon runs.
    pub fn clear_runtime_files(&self) {
        let _ = std::fs::remove_file(self.path(COOKIE_FILE));
        let _ = std::fs::remove_file(self.path(API_ADDR_FILE));
    }
}

/// Creates `path` with mode 0600 and writes `bytes`, failing if it exists (never overwrite a secret).
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("cannot create", path))?;
    f.write_all(bytes).map_err(io("cannot write", path))?;
    f.sync_all().map_err(io("cannot sync", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::new(dir.path().join("d"));
        dd.create().unwrap();
        let (k1, created) = dd
            .load_or_create_key(|| Keypair::from_secret_bytes(&[1; 32]))
            .unwrap();
        assert!(created);
        let mode = std::fs::metadata(dd.path(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k2, created) = dd
            .load_or_create_key(|| Keypair::from_secret_bytes(&[2; 32]))
            .unwrap();
        assert!(!created);
        assert_eq!(k1.node_id(), k2.node_id());
    }

    #[test]
    fn a_world_readable_or_damaged_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::new(dir.path());
        dd.load_or_create_key(|| Keypair::from_secret_bytes(&[1; 32]))
            .unwrap();
        let p = dd.path(KEY_FILE);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            dd.load_or_create_key(|| unreachable!()),
            Err(DataDirError::KeyPermissions { .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, b"short").unwrap();
        assert!(matches!(
            dd.load_or_create_key(|| unreachable!()),
            Err(DataDirError::BadKey { len: 5, .. })
        ));
    }

    #[test]
    fn the_lock_is_exclusive_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::new(dir.path());
        let held = dd.lock().unwrap();
        let err = dd.lock().unwrap_err().to_string();
        assert!(err.contains("already running"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(held);
        dd.lock().expect("released on drop");
    }
}
