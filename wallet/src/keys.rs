//! The wallet's seed: a BIP39 mnemonic, created once, stored 0600, from which BIP84 (native segwit) keys are
//! derived. The mnemonic is the only secret; wallet state files hold public data only.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use bdk_wallet::bip39::{Language, Mnemonic};
use bdk_wallet::bitcoin::bip32::Xpriv;
use bdk_wallet::bitcoin::Network;
use rand_core::{OsRng, RngCore};

use crate::error::WalletError;

/// Loads the mnemonic at `path`, or creates a new 24-word one there (mode 0600). Returns whether it was
/// created, so the caller can show the words once.
pub fn load_or_create_mnemonic(path: &Path) -> Result<(Mnemonic, bool), WalletError> {
    let p = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)
                .map_err(|source| WalletError::Io {
                    what: "cannot read",
                    path: p.clone(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(WalletError::Permissions {
                    path: p,
                    mode: mode & 0o777,
                });
            }
            let m = Mnemonic::parse_in(Language::English, text.trim()).map_err(|e| {
                WalletError::BadMnemonic {
                    path: p,
                    message: e.to_string(),
                }
            })?;
            Ok((m, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut entropy = [0u8; 32];
            OsRng.fill_bytes(&mut entropy);
            let m = Mnemonic::from_entropy(&entropy).map_err(|e| WalletError::BadMnemonic {
                path: p.clone(),
                message: e.to_string(),
            })?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| WalletError::Io {
                    what: "cannot create",
                    path: p.clone(),
                    source,
                })?;
            writeln!(f, "{m}")
                .and_then(|_| f.sync_all())
                .map_err(|source| WalletError::Io {
                    what: "cannot write",
                    path: p,
                    source,
                })?;
            Ok((m, true))
        }
        Err(source) => Err(WalletError::Io {
            what: "cannot read",
            path: p,
            source,
        }),
    }
}

/// The BIP32 master key of a mnemonic (with an optional BIP39 passphrase) for `network`.
pub fn master_key(m: &Mnemonic, passphrase: &str, network: Network) -> Result<Xpriv, WalletError> {
    let seed = m.to_seed(passphrase);
    Xpriv::new_master(network, &seed).map_err(|e| WalletError::Descriptor(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnemonic_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.mnemonic");
        let (m1, created) = load_or_create_mnemonic(&path).unwrap();
        assert!(created);
        assert_eq!(m1.word_count(), 24);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (m2, created) = load_or_create_mnemonic(&path).unwrap();
        assert!(!created);
        assert_eq!(m1, m2);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create_mnemonic(&path),
            Err(WalletError::Permissions { .. })
        ));
    }
}
