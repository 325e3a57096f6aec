//! The wallet's seed: a BIP39 mnemonic, created once, stored 0600, from which BIP84 (native segwit) keys are
//! derived. The mnemonic is the only secret; wallet state files hold public data only.
//!
//! With a passphrase the file holds the words encrypted: scrypt (N=2^15, r=8, p=1) derives a key from the
//! passphrase and a random salt, ChaCha20-Poly1305 seals the words. A stolen file is then useless without the
//! passphrase, and a wrong passphrase is detected (authentication fails) rather than yielding another wallet.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use bdk_wallet::bip39::{Language, Mnemonic};
use bdk_wallet::bitcoin::bip32::Xpriv;
use bdk_wallet::bitcoin::Network;
use rand_core::{OsRng, RngCore};

use crate::error::WalletError;

/// First line of an encrypted mnemonic file.
const ENCRYPTED_HEADER: &str = "xov-encrypted-mnemonic-v1";

fn file_key(passphrase: &str, salt: &[u8]) -> Result<chacha20poly1305::Key, WalletError> {
    let params =
        scrypt::Params::new(15, 8, 1, 32).map_err(|e| WalletError::Descriptor(e.to_string()))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(passphrase.as_bytes(), salt, &params, &mut key)
        .map_err(|e| WalletError::Descriptor(e.to_string()))?;
    Ok(key.into())
}

fn seal(words: &str, passphrase: &str) -> Result<String, WalletError> {
    use chacha20poly1305::aead::{Aead, KeyInit};
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&file_key(passphrase, &salt)?);
    let sealed = cipher
        .encrypt(&nonce.into(), words.as_bytes())
        .map_err(|_| WalletError::Descriptor("encryption failed".into()))?;
    Ok(format!(
        "{ENCRYPTED_HEADER}\n{}\n{}\n{}\n",
        hex::encode(salt),
        hex::encode(nonce),
        hex::encode(sealed)
    ))
}

fn open_sealed(text: &str, passphrase: Option<&str>, path: &str) -> Result<String, WalletError> {
    use chacha20poly1305::aead::{Aead, KeyInit};
    let bad = |message: &str| WalletError::BadMnemonic {
        path: path.to_string(),
        message: message.to_string(),
    };
    let pass = passphrase.ok_or_else(|| {
        bad("the recovery words are encrypted; give the wallet passphrase (XOV_WALLET_PASSPHRASE)")
    })?;
    let mut lines = text.lines().skip(1);
    let mut field = || {
        lines
            .next()
            .and_then(|l| hex::decode(l.trim()).ok())
            .ok_or_else(|| bad("encrypted file is damaged"))
    };
    let (salt, nonce, sealed) = (field()?, field()?, field()?);
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| bad("encrypted file is damaged"))?;
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&file_key(pass, &salt)?);
    let plain = cipher
        .decrypt(&nonce.into(), sealed.as_slice())
        .map_err(|_| bad("wrong wallet passphrase"))?;
    String::from_utf8(plain).map_err(|_| bad("encrypted file is damaged"))
}

/// Loads the mnemonic at `path`, or creates a new 24-word one there (mode 0600). Returns whether it was
/// created, so the caller can show the words once.
pub fn load_or_create_mnemonic(path: &Path) -> Result<(Mnemonic, bool), WalletError> {
    load_or_create_mnemonic_with(path, None)
}

/// Like [`load_or_create_mnemonic`]; with `file_passphrase` a new file is written encrypted, and an encrypted
/// file needs it to be read.
pub fn load_or_create_mnemonic_with(
    path: &Path,
    file_passphrase: Option<&str>,
) -> Result<(Mnemonic, bool), WalletError> {
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
            let text = if text.starts_with(ENCRYPTED_HEADER) {
                open_sealed(&text, file_passphrase, &p)?
            } else {
                text
            };
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
            let content = match file_passphrase {
                Some(pass) => seal(&m.to_string(), pass)?,
                None => format!("{m}\n"),
            };
            f.write_all(content.as_bytes())
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

    #[test]
    fn an_encrypted_mnemonic_needs_the_right_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.mnemonic");
        let (m, _) = load_or_create_mnemonic_with(&path, Some("correct horse")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(ENCRYPTED_HEADER));
        assert!(
            !text.contains(&m.to_string()),
            "the words are not in the file in clear"
        );
        assert_eq!(
            load_or_create_mnemonic_with(&path, Some("correct horse"))
                .unwrap()
                .0,
            m
        );
        let wrong = load_or_create_mnemonic_with(&path, Some("wrong"))
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("wrong wallet passphrase"), "{wrong}");
        let none = load_or_create_mnemonic(&path).unwrap_err().to_string();
        assert!(none.contains("XOV_WALLET_PASSPHRASE"), "{none}");
    }
}
