//! xov-testnet: brings up the real parts a local xov market needs — Bitcoin Core regtest, the OpenStack lab,
//! xov nodes — for tests and demos, and runs scenarios against them.
//!
//! The library holds the harnesses and depends on no xov crate but xov-protocol (which depends on none), so that every crate's integration tests can
//! use it (as a dev-dependency, `default-features = false`) without a dependency cycle. The exception is the
//! gossip simulator ([`gossip_sim`], feature `gossip-sim`, on by default for the `xov-testnet` binary): it
//! runs the node's own network code, many nodes in one process, so it depends on xov-node. The scripts beside this crate (`setup.sh`,
//! `run.sh`, `test.sh`, `bitcoind/build.sh`) install and start what the harnesses need.

pub mod bitcoind;
pub mod fault_proxy;
pub mod footprint;
pub mod gossip_load;
#[cfg(feature = "gossip-sim")]
pub mod gossip_sim;
pub mod lease_timing;
pub mod nat_world;
pub mod node;
pub mod node_api;
pub mod openstack;
pub mod p2p_proxy;
pub mod proc_stats;
pub mod restart_time;
pub mod scenario;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum HarnessError {
    #[error("{what} is not installed: {how}")]
    Missing {
        what: &'static str,
        how: &'static str,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("RPC failed: {0}")]
    Rpc(String),
    /// A part that cannot run on this machine, with why (from the script that tried).
    #[error("{what} cannot run here: {why}")]
    Unavailable { what: &'static str, why: String },
}

impl HarnessError {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> HarnessError {
        move |source| HarnessError::Io { what, source }
    }
}

/// Whether the developer asked to skip tests that need real external parts (`XOV_SKIP_E2E=1`, a quick local
/// loop only; CI never sets it). Tests call this and return early, saying so, instead of failing.
pub fn skip_e2e(test: &str) -> bool {
    let skip = std::env::var("XOV_SKIP_E2E").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("{test}: skipped because XOV_SKIP_E2E=1");
    }
    skip
}
