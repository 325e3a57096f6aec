//! Settlement networks kept apart, end to end: `xov` daemons on regtest and on signet, connected to each other
//! as libp2p peers on 127.0.0.1, each publishing offers into its own chain's public pool.
//!
//! A node's chain is its `[wallet] network`. The regtest nodes follow the real Bitcoin Core regtest over RPC;
//! the signet nodes have no signet chain source at all: their light client is pointed at a closed port on
//! 127.0.0.1 and never connects, which is all a node needs to trade (offers and pools need no chain), so the
//! test needs no signet. What it shows: nodes of the two chains are connected and see each other's pool
//! subscriptions, yet each holds only offers of its own chain, while a second node of the same chain does
//! receive them (so the test would fail if offers crossed or did not travel at all); nobody is penalised for
//! being on another chain.

use std::collections::BTreeSet;

use serde_json::Value;
use xov_testnet::bitcoind::{free_port, Bitcoind};
use xov_testnet::node::*;
use xov_testnet::scenario::*;

/// A signet node whose light client is pointed at a port nothing listens on.
fn signet_toml() -> String {
    format!(
        "[wallet]\nenabled = true\nnetwork = \"signet\"\nchain = \"filters\"\npeers = [\"127.0.0.1:{}\"]\n",
        free_port()
    )
}

/// Starts a node on `toml` with every node of `peers` as a bootstrap peer.
fn start_with_peers(dir: &std::path::Path, toml: &str, peers: &[&Daemon]) -> Daemon {
    std::fs::write(dir.join("xov.toml"), toml).unwrap();
    let bootstrap = peers
        .iter()
        .map(|p| p.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    Daemon::start_with(dir, &[("XOV_NETWORK_BOOTSTRAP", bootstrap)])
}

/// Publishes an offer into the node's public pool; returns it as the API shows it.
fn publish(d: &Daemon, price: u64) -> Value {
    let price = price.to_string();
    d.json(&[
        "offer",
        "publish",
        "--vcpus",
        "2",
        "--ram",
        "2048",
        "--disk",
        "20",
        "--image",
        "debian-12",
        "--price",
        &price,
        "--country",
        "DE",
    ])
}

/// Message ids of every offer in a node's book.
fn book(d: &Daemon) -> BTreeSet<String> {
    d.json(&["offers", "list", "--limit", "0"])
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

/// The pool ids `of` is subscribed to, as `at` sees it, once `at` is connected to it.
fn subscriptions(at: &Daemon, of: &Daemon) -> Result<Vec<String>, String> {
    let peers = at.json(&["peers"]);
    let p = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == of.node_id.as_str() && p["connected"] == true)
        .ok_or_else(|| format!("{} not connected: {peers}", of.node_id))?;
    Ok(p["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect())
}

fn public_pool(d: &Daemon) -> Value {
    d.json(&["pool", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "public")
        .cloned()
        .expect("the public pool is built in")
}

#[test]
fn signet_and_regtest_nodes_never_see_each_other() {
    if xov_testnet::skip_e2e("settlement") {
        return;
    }
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
    let root = tempfile::tempdir().unwrap();
    let dir = |n: &str| subdir(root.path(), n);

    // One node of each chain, connected, each with an offer in its own public pool.
    let regtest = start(&dir("regtest-1"), &buyer_toml(&btc), None);
    let signet = start_with_peers(&dir("signet-1"), &signet_toml(), &[&regtest]);
    assert_eq!(regtest.json(&["status"])["chain"], "regtest");
    assert_eq!(signet.json(&["status"])["chain"], "signet");
    let (rpool, spool) = (public_pool(&regtest), public_pool(&signet));
    assert_eq!(rpool["chain"], "regtest");
    assert_eq!(spool["chain"], "signet");
    assert_ne!(rpool["id"], spool["id"], "one public pool per chain");
    let (rpool, spool) = (
        rpool["id"].as_str().unwrap().to_string(),
        spool["id"].as_str().unwrap().to_string(),
    );

    let r_offer = publish(&regtest, 1000);
    let s_offer = publish(&signet, 2000);
    assert_eq!(r_offer["chain"], "regtest");
    assert_eq!(r_offer["pool"], rpool.as_str());
    assert_eq!(s_offer["chain"], "signet");
    assert_eq!(s_offer["pool"], spool.as_str());
    let r_id = r_offer["id"].as_str().unwrap().to_string();
    let s_id = s_offer["id"].as_str().unwrap().to_string();

    // A second node of each chain, bootstrapped from both: it is connected to a node of the other chain too.
    let regtest2 = start_with_peers(&dir("regtest-2"), &buyer_toml(&btc), &[&regtest, &signet]);
    let signet2 = start_with_peers(&dir("signet-2"), &signet_toml(), &[&regtest, &signet]);

    // The two chains are peers and hear each other's pool subscriptions (the moment a member of the same pool
    // would pull the book), yet never join each other's pools.
    for (at, of, pool) in [
        (&regtest, &signet, &spool),
        (&signet, &regtest, &rpool),
        (&regtest2, &signet, &spool),
        (&signet2, &regtest, &rpool),
    ] {
        eventually(
            &format!(
                "{} connected to {} and seeing it in pool {}",
                &at.node_id[..8],
                &of.node_id[..8],
                &pool[..12]
            ),
            WAIT,
            || match subscriptions(at, of)? {
                pools if pools.contains(pool) => Ok(()),
                pools => Err(format!("{pools:?}")),
            },
        );
    }

    // Offers travel within a chain: the second node of each chain gets the first node's offer.
    for (d, want) in [(&regtest2, &r_id), (&signet2, &s_id)] {
        eventually(
            &format!("{} holds offer {}", &d.node_id[..8], &want[..12]),
            WAIT,
            || match book(d) {
                b if b.contains(want) => Ok(()),
                b => Err(format!("{b:?}")),
            },
        );
    }

    // ... and never across: each node holds exactly its own chain's offer, in its own chain's pools.
    for (d, chain, want) in [
        (&regtest, "regtest", &r_id),
        (&regtest2, "regtest", &r_id),
        (&signet, "signet", &s_id),
        (&signet2, "signet", &s_id),
    ] {
        assert_eq!(
            book(d),
            BTreeSet::from([want.clone()]),
            "{chain} node {}",
            &d.node_id[..8]
        );
        for p in d.json(&["pool", "list"]).as_array().unwrap() {
            assert_eq!(p["chain"], chain, "{p}");
        }
        // Being on another chain is no crime: nothing was rejected, nobody penalised.
        let gossip = d.json(&["status"])["network"]["gossip"].clone();
        assert_eq!(gossip["rejected"], 0, "{gossip}");
        for p in d.json(&["peers"]).as_array().unwrap() {
            assert_eq!(p["penalty"], 0, "{p}");
            assert_eq!(p["banned"], false, "{p}");
        }
    }
}
