//! The xov node: everything that does I/O. The `xov` binary (main.rs) is a thin shell over this library, which
//! integration tests also use to build adversarial peers that speak the node's own protocols.
//!
//! One folder per concept; decisions are pure and take time as an argument, one driver per concept does the
//! I/O, and `api` and `cli` sit on top (nothing below them imports them):
//! - `lease/`: records, the pure lease machine (`machine.rs`), and its driver (wallet, cloud, notices).
//! - `market/`: offer book and pools in memory and on disk, trust evidence, bids, ranking.
//! - `network/`: the libp2p swarm, gossip policies, book sync, the direct lease channel.
//! - `store/`: RocksDB and the data dir.
//! - `daemon/`: `xov node run` wiring, and the provider's cloud (`provider.rs`).
//! - `api/`: the local HTTP API, dashboard, doctor, metrics. `cli/`: the `xov` commands.
//! - `sim.rs` (feature `sim`, tests and fuzzing only): the lease simulator's in-memory world.
//! - `clock.rs` reads the wall clock (drivers only); `events.rs` is the bus lease changes are published on.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod events;
pub mod lease;
pub mod market;
pub mod network;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;
#[cfg(test)]
mod test_support;
