//! The wallet's error type.
//!
//! Invariants: callers decide by variant, never by message text; messages name addresses, txids and
//! amounts but never keys, mnemonics or passphrases.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum WalletError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the mnemonic in {path} is not valid BIP39: {message}")]
    BadMnemonic { path: String, message: String },
    /// A mnemonic file is never replaced: the words in it may be the only copy.
    #[error("{path} exists already: this data dir has a wallet; restore into an empty data dir (--datadir DIR)")]
    MnemonicExists { path: String },
    /// The wallet state stored in the database was made with other keys than the mnemonic's.
    #[error("the wallet state in the database belongs to other recovery words (or another passphrase) than {mnemonic}: {detail}")]
    OtherKeys { mnemonic: String, detail: String },
    #[error("mnemonic file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: String, mode: u32 },
    #[error("wallet descriptor error: {0}")]
    Descriptor(String),
    #[error("stored wallet state does not fit this wallet: {0}")]
    Load(String),
    #[error("stored wallet state is unreadable: {0}")]
    Corrupt(String),
    #[error("chain source: {0}")]
    Chain(String),
    #[error("address '{address}' is not valid for {network}: {message}")]
    BadAddress {
        address: String,
        network: String,
        message: String,
    },
    #[error("payment request is not valid: {0}")]
    BadUri(String),
    #[error("not enough funds: {0}")]
    InsufficientFunds(String),
    #[error("cannot build the transaction: {0}")]
    Build(String),
    #[error("cannot sign the transaction: {0}")]
    Sign(String),
    #[error("broadcast failed: {0}")]
    Broadcast(String),
    /// A payout of `value_sat` with the fee taken out of it would leave the recipient less than the dust
    /// limit of its script (or nothing): it cannot be made, and is best written off.
    #[error(
        "{value_sat} sat less the fee of {fee_sat} sat is below the dust limit of the address"
    )]
    BelowDust { value_sat: u64, fee_sat: u64 },
    /// A signed transaction handed back for broadcast does not decode or does not match its txid.
    #[error("signed transaction is not valid: {0}")]
    BadSignedTx(String),
    #[error("no invoice with id {0}")]
    NoSuchInvoice(String),
    #[error("an invoice with id {0} exists already")]
    DuplicateInvoice(String),
    #[error("no bond at {0} in this wallet")]
    NoSuchBond(String),
    #[error("bond not possible: {0}")]
    BadBond(String),
    #[error("bond is still locked: {0}")]
    BondLocked(String),
    /// Not a transaction of this wallet's (or not a txid at all).
    #[error("no transaction {0} in this wallet")]
    NoSuchTx(String),
    /// A transaction in a block cannot be replaced.
    #[error("transaction {txid} is confirmed already (block {height})")]
    AlreadyConfirmed { txid: String, height: u32 },
    /// A replacement must pay a higher fee rate than the transaction it replaces (whole sat/vB, the old
    /// rate rounded up).
    #[error(
        "a fee rate of {asked_sat_per_vb} sat/vB is not above the old {old_sat_per_vb} sat/vB"
    )]
    FeeTooLow {
        old_sat_per_vb: u64,
        asked_sat_per_vb: u64,
    },
    /// The wallet may not replace this transaction: not all its inputs are the wallet's, it does not
    /// signal replace-by-fee, unconfirmed transactions spend from it, or it was replaced already.
    #[error("transaction {txid} cannot be replaced: {reason}")]
    NotReplaceable { txid: String, reason: String },
    #[error("{0}")]
    Unsupported(String),
}
