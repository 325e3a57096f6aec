//! xov-wallet: the node's own bitcoin wallet. It watches the chain itself — compact block filters by default,
//! bitcoind RPC as an option — hands out one fresh address per lease invoice, classifies what arrives
//! (seen, confirmed, partial, overpaid, late, top-ups, reorged out), and pays and refunds. It also locks
//! coins in fidelity bonds and checks other nodes' bonds against the chain ([`bond`]).

pub mod bip21;
pub mod bond;
mod bond_check;
mod bump;
pub mod chain;
pub mod error;
pub mod events;
pub mod fee;
pub mod health;
pub mod invoice;
pub mod keys;
mod light;
pub mod payout;
pub mod peer_probe;
pub mod store;
mod stuck;
mod wallet;

/// The bitcoin types in this crate's API (outpoints, txids, locktimes for bonds).
pub use bdk_wallet::bitcoin;
pub use bdk_wallet::bitcoin::Network;
/// The BDK types that appear in this crate's API (for implementing [`WalletStore`]).
pub mod bdk {
    pub use bdk_wallet::chain::{local_chain, Merge};
    pub use bdk_wallet::ChangeSet;
}
pub use bond::{verify_bond_binding, Bond, BondClaim, BondError, BondStatus};
pub use bump::Bumped;
pub use chain::ChainSource;
pub use error::WalletError;
pub use events::WalletEvent;
pub use fee::{FeeChoice, FeePolicy, FeeSource};
pub use health::{ChainHealth, ChainState, ChainTuning, StallReason};
pub use invoice::{Counted, Invoice, InvoiceStatus, Payment, PaymentPolicy};
pub use payout::{check_address, SignedTx, TxStatus};
pub use store::{FileStore, WalletStore};
pub use wallet::{
    Balance, HistoryEntry, WalletConfig, XovWallet, DEFAULT_LOOKAHEAD, FALLBACK_FEE_SAT_PER_VB,
};
