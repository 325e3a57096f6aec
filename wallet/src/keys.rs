//! The wallet's seed: a BIP39 mnemonic, created once, stored 0600, from which BIP84 (native segwit) keys are
//! derived. The mnemonic is the only secret; wallet state files hold public data only.
//!
//! With a passphrase the file holds the words encrypted: scrypt (N=2^15, r=8, p=1) derives a key from the
//! passphrase and a random salt, ChaCha20-Poly1305 seals the words. A stolen file is then useless without the
//! passphrase, and a wrong passphrase is detected (authentication fails) rather than yielding another wallet.
//!
//! Restoring: typed words are checked whole ([`parse_words`]: each word in the BIP39 list, 24 of them, the
//! checksum) before [`write_mnemonic`] writes them, exclusively, as a new file would be written; an existing
//! mnemonic file is never replaced.

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

/// How many words a recovery phrase of this wallet has (256 bits of entropy).
pub const WORD_COUNT: usize = 24;

/// Why typed recovery words are not a mnemonic of this wallet. Messages name the position and the word that is
/// wrong, never the other words.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WordsError {
    #[error("no recovery words were given")]
    Empty,
    #[error("the recovery phrase has {WORD_COUNT} words; {0} were given")]
    WordCount(usize),
    #[error("word {position} ('{word}') is not in the BIP39 English word list{hint}")]
    UnknownWord {
        /// 1-based.
        position: usize,
        word: String,
        /// ", did you mean 'x'?" when words share its first letters, else empty.
        hint: String,
    },
    #[error(
        "the words fail their checksum: each is a BIP39 word, but one is wrong or two are swapped"
    )]
    Checksum,
}

/// The words of typed or pasted text, lowercased, without list numbers (`1.`, `2)`, `3:`, `4`) and lone
/// punctuation: what [`parse_words`] reads (a prompt counts them to know when all were typed).
pub fn typed_words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(str::to_lowercase)
        .filter(|w| {
            !w.trim_end_matches(['.', ')', ':'])
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .collect()
}

/// The mnemonic of typed or pasted recovery words: case and blanks (newlines included) do not matter, and
/// list numbers (`1.`, `2)`, `3:` or a bare `4`) before words are skipped. Exactly [`WORD_COUNT`] words,
/// each from the BIP39 English list, with a valid checksum.
pub fn parse_words(text: &str) -> Result<Mnemonic, WordsError> {
    let words = typed_words(text);
    if words.is_empty() {
        return Err(WordsError::Empty);
    }
    let list = Language::English;
    if let Some((i, w)) = words
        .iter()
        .enumerate()
        .find(|(_, w)| list.find_word(w).is_none())
    {
        // BIP39 English words are unique in their first four letters: a word of which these are right is
        // most likely that one, mistyped after them.
        let prefix: String = w.chars().take(4).collect();
        let near = list.words_by_prefix(&prefix);
        let hint = match near {
            [one] => format!(", did you mean '{one}'?"),
            _ => String::new(),
        };
        return Err(WordsError::UnknownWord {
            position: i + 1,
            word: w.clone(),
            hint,
        });
    }
    if words.len() != WORD_COUNT {
        return Err(WordsError::WordCount(words.len()));
    }
    Mnemonic::parse_in_normalized(list, &words.join(" ")).map_err(|e| match e {
        bdk_wallet::bip39::Error::InvalidChecksum => WordsError::Checksum,
        bdk_wallet::bip39::Error::UnknownWord(i) => WordsError::UnknownWord {
            position: i + 1,
            word: words.get(i).cloned().unwrap_or_default(),
            hint: String::new(),
        },
        _ => WordsError::WordCount(words.len()),
    })
}

/// Writes `m` as a new mnemonic file at `path` (mode 0600, created exclusively: an existing file is never
/// replaced, [`WalletError::MnemonicExists`]), encrypted when `file_passphrase` is given, as a wallet created
/// here would have it.
pub fn write_mnemonic(
    path: &Path,
    m: &Mnemonic,
    file_passphrase: Option<&str>,
) -> Result<(), WalletError> {
    let p = path.display().to_string();
    let content = match file_passphrase {
        Some(pass) => seal(&m.to_string(), pass)?,
        None => format!("{m}\n"),
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                WalletError::MnemonicExists { path: p.clone() }
            } else {
                WalletError::Io {
                    what: "cannot create",
                    path: p.clone(),
                    source,
                }
            }
        })?;
    f.write_all(content.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|source| WalletError::Io {
            what: "cannot write",
            path: p,
            source,
        })
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
            write_mnemonic(path, &m, file_passphrase)?;
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

    /// A valid 24-word phrase (BIP39 test vector: 32 bytes of zero entropy).
    const ZEROS: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
        abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art";

    #[test]
    fn typed_words_are_read_whatever_their_layout() {
        let m = parse_words(ZEROS).unwrap();
        assert_eq!(m.word_count(), 24);
        let numbered: String = ZEROS
            .split_whitespace()
            .enumerate()
            .map(|(i, w)| format!("{}. {}\n", i + 1, w.to_uppercase()))
            .collect();
        assert_eq!(parse_words(&numbered).unwrap(), m);
    }

    #[test]
    fn a_wrong_word_is_named_with_its_position() {
        let typo = ZEROS
            .replacen("abandon", "xyzzy", 1)
            .replace(" art", " artt");
        assert_eq!(
            parse_words(&typo),
            Err(WordsError::UnknownWord {
                position: 1,
                word: "xyzzy".into(),
                hint: String::new(),
            })
        );
        // Right in its first four letters: the word meant is suggested.
        let e = parse_words(&ZEROS.replace(" art", " artisan")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "word 24 ('artisan') is not in the BIP39 English word list, did you mean 'artist'?"
        );
        // Every word valid but one replaced by another valid word: the checksum says so.
        assert_eq!(
            parse_words(&ZEROS.replace(" art", " zoo")),
            Err(WordsError::Checksum)
        );
        let short: Vec<&str> = ZEROS.split_whitespace().take(23).collect();
        assert_eq!(
            parse_words(&short.join(" ")),
            Err(WordsError::WordCount(23))
        );
        assert_eq!(parse_words(" \n"), Err(WordsError::Empty));
    }

    #[test]
    fn restored_words_are_written_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.mnemonic");
        let m = parse_words(ZEROS).unwrap();
        write_mnemonic(&path, &m, None).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (read, created) = load_or_create_mnemonic(&path).unwrap();
        assert!(!created);
        assert_eq!(read, m);
        assert!(matches!(
            write_mnemonic(&path, &m, None),
            Err(WalletError::MnemonicExists { .. })
        ));
        // Encrypted like a wallet created with a file passphrase.
        let sealed = dir.path().join("sealed.mnemonic");
        write_mnemonic(&sealed, &m, Some("pw")).unwrap();
        assert!(std::fs::read_to_string(&sealed)
            .unwrap()
            .starts_with(ENCRYPTED_HEADER));
        assert_eq!(
            load_or_create_mnemonic_with(&sealed, Some("pw")).unwrap().0,
            m
        );
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
