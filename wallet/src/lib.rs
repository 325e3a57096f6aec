//! xov-wallet: the node's built-in bitcoin wallet (BDK), its chain sources (compact block filters by default,
//! bitcoind RPC as an option), per-lease invoice addresses, payment tracking and refunds.
//!
//! Not yet implemented: see the wallet issue. The crate exists so the workspace has its final shape and the
//! dependency direction (node → wallet) is fixed from the start.
