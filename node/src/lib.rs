//! The xov node: everything that does I/O. The `xov` binary (main.rs) is a thin shell over this library, which
//! integration tests also use to build adversarial peers that speak the node's own protocols.

pub mod api;
pub mod bids;
pub mod chain_probe;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod datadir;
pub mod doctor;
pub mod events;
pub mod lease_engine;
pub mod leases;
pub mod leases_api;
pub mod machines;
pub mod market;
pub mod metrics;
pub mod network;
pub mod offer_probe;
pub mod ops_cli;
pub mod output;
pub mod ranking;
pub mod store;
#[cfg(test)]
mod test_support;
pub mod trust;
pub mod trust_api;
pub mod trust_service;
pub mod wallet_api;
