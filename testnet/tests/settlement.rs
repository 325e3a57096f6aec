//! Settlement, end to end: how money moves between a buyer and a provider, and which chain it moves on.
//!
//! Chains kept apart: `xov` daemons on regtest and on signet, connected to each other as libp2p peers on
//! 127.0.0.1, each publishing offers into its own chain's public pool. A node's chain is its `[wallet]
//! network`. The regtest nodes follow the real Bitcoin Core regtest over RPC; the signet nodes have no signet
//! chain source at all: their light client is pointed at a closed port on 127.0.0.1 and never connects,
//! which is all a node needs to trade (offers and pools need no chain), so the test needs no signet. What it
//! shows: nodes of the two chains are connected and see each other's pool subscriptions, yet each holds only
//! offers of its own chain, while a second node of the same chain does receive them (so the test would fail
//! if offers crossed or did not travel at all); nobody is penalised for being on another chain.
//!
//! Paying a stranger in slices (`xov order --budget`), with a provider on the real OpenStack lab and real
//! regtest (the test mines a block whenever a payment waits in the mempool; the buyer is a light client and
//! sees a payment once it is in a block): a budget of three slices is paid as three payments to the lease's
//! address, each before the provider would warn, and no more, then the lease drains and closes; a provider
//! whose node goes away after the first slice gets no second one, and the buyer's lease says why. And a
//! payment stuck at a low fee is replaced by the buyer's node by itself (`[wallet] bump_after_blocks`) and
//! the lease starts.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{lab_cloud, wait_nothing_left};
use serde_json::Value;
use xov_provisioner::Provisioner;
use xov_testnet::bitcoind::{free_port, Bitcoind};
use xov_testnet::node::*;
use xov_testnet::openstack::{LabCleanup, OpenStackLab};
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

// ------------------------------------------------------------------------------- paying in slices

/// 0.02 h: 72 s of running, 720 sats at provider 1's 36,000 sats/h.
const SLICE_HOURS: &str = "0.02";
const SLICE_SECS: u64 = 72;
const SLICE_SAT: u64 = PRICE_P1 * SLICE_SECS / 3600;

/// The owner name of the one provider of these tests, for [`LabCleanup::owner`].
const PROVIDER: &str = "provider";

/// A provider (provider 1's terms: warned 15 s before the end, leases from 30 s; its owner from `cleanup`)
/// and a buyer paying in quick slices, funded, the offer in the buyer's book.
fn provider_and_slicing_buyer(
    root: &std::path::Path,
    btc: &Bitcoind,
    lab: &OpenStackLab,
    cleanup: &LabCleanup,
) -> (Daemon, Daemon) {
    let p = start(
        &subdir(root, "provider"),
        &provider_toml(lab, btc, PRICE_P1, &cleanup.owner(PROVIDER)),
        None,
    );
    let buyer = start(
        &subdir(root, "buyer"),
        &buyer_toml_with(btc, "", BUYER_SLICE_TERMS),
        Some(&p),
    );
    fund(&buyer, btc);
    wait_any_offer(&buyer);
    (p, buyer)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_default()
}

fn slices_paid(l: &Value) -> u64 {
    num(&l["exposure"]["budget"]["slices_paid"])
}

fn history(l: &Value) -> Vec<String> {
    l["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["detail"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_budgeted_order_pays_three_slices_and_stops() {
    let Some((btc, lab, cleanup)) = real_parts("budgeted order") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (p, buyer) = provider_and_slicing_buyer(root.path(), &btc, &lab, &cleanup);
    let key_dir = tempfile::tempdir().unwrap();
    let key = ssh_key(key_dir.path());
    let from = btc.height().unwrap();

    // A budget of exactly three slices. The first is paid with the order.
    let budget = 3 * SLICE_SAT;
    let l = order_budget(&buyer, &key, budget, SLICE_HOURS);
    let id = l["id"].as_str().unwrap().to_string();
    assert_eq!(l["counterparty"], p.node_id.as_str());
    assert_eq!(l["budget"]["slice_secs"], SLICE_SECS);
    assert_eq!(l["budget"]["slice_sat"], SLICE_SAT);
    assert_eq!(
        l["slices"][0]["broadcast"], true,
        "the first slice goes out with the order: {l}"
    );
    let pay_to = l["pay_address"].as_str().unwrap().to_string();

    // Each next slice comes while the machine runs and the provider counts what was paid, before it warns.
    for n in 1..=3u64 {
        eventually(
            &format!("slice {n} paid and counted by the provider"),
            WAIT,
            || {
                mine_pending(&btc);
                let (l, pl) = (lease(&buyer, &id), lease(&p, &id));
                if slices_paid(&l) == n && num(&pl["paid_sat"]) == n * SLICE_SAT {
                    Ok(())
                } else {
                    Err(format!(
                        "buyer {} slices, provider counts {}: {:?}",
                        slices_paid(&l),
                        pl["paid_sat"],
                        history(&l)
                    ))
                }
            },
        );
    }
    wait_state(&buyer, &id, "running");
    // Then nothing more: the lease drains, the machine halts and the lease closes with a receipt. The deadline
    // is the last slice's running time plus the usual wait for the halt, grace and close (120 s alone was
    // overrun once in CI on a loaded machine, the lease halted and closing).
    let drain = WAIT + Duration::from_secs(SLICE_SECS);
    let closed = eventually("the lease drains and closes", drain, || {
        mine_pending(&btc);
        let l = lease(&buyer, &id);
        if l["state"] == "closed" {
            Ok(l)
        } else {
            Err(format!("{} {:?}", l["state"], history(&l)))
        }
    });

    // Three payments to the lease's address, the budget exactly, as the buyer recorded them...
    let slices = closed["slices"].as_array().unwrap();
    assert_eq!(slices.len(), 3, "{closed}");
    let txids: BTreeSet<String> = slices
        .iter()
        .map(|s| {
            assert_eq!(s["broadcast"], true);
            assert_eq!(s["tx"]["sent_sat"], SLICE_SAT, "{s}");
            s["tx"]["txid"].as_str().unwrap().to_string()
        })
        .collect();
    let b = &closed["exposure"]["budget"];
    assert_eq!(
        (
            num(&b["spent_sat"]),
            num(&b["slices_paid"]),
            b["done"].clone()
        ),
        (budget, 3, Value::Bool(true)),
        "{b}"
    );
    assert!(
        history(&closed)
            .iter()
            .any(|h| h.starts_with("budget spent")),
        "{:?}",
        history(&closed)
    );
    assert!(!history(&closed).iter().any(|h| h.contains("withheld")));
    // ...and as bitcoind has them: all confirmed, nothing else paid to the address.
    let outs = outputs_to(&btc, &pay_to, from);
    assert_eq!(outs.len(), 3, "{outs:?}");
    assert!(outs
        .iter()
        .all(|o| o.sat == SLICE_SAT && o.height.is_some()));
    assert_eq!(outs.iter().map(|o| o.sat).sum::<u64>(), budget);
    assert_eq!(
        outs.iter().map(|o| o.txid.clone()).collect::<BTreeSet<_>>(),
        txids
    );
    // The provider counted all of it, and never had to warn before the last slice.
    let pl = lease(&p, &id);
    assert_eq!(num(&pl["paid_sat"]), budget);
    let last_slice_at = num(&slices[2]["at"]);
    for s in pl["history"].as_array().unwrap() {
        if s["state"] == "warned" {
            assert!(
                num(&s["at"]) >= last_slice_at,
                "the provider warned at {} before the last slice ({last_slice_at}): {}",
                s["at"],
                pl["history"]
            );
        }
    }
    let receipt = history(&closed)
        .into_iter()
        .find_map(|h| h.strip_prefix("receipt ").map(String::from))
        .expect("a receipt");
    let r: Value = serde_json::from_str(&receipt).unwrap();
    assert_eq!(num(&r["paid_sat"]), budget);
    // The closed lease left nothing in the lab.
    cleanup.lease(&id);
    wait_nothing_left(&cleanup);
}

#[test]
fn a_provider_that_stops_delivering_gets_no_further_slice() {
    let Some((btc, lab, cleanup)) = real_parts("provider stops delivering") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (p, buyer) = provider_and_slicing_buyer(root.path(), &btc, &lab, &cleanup);
    let key_dir = tempfile::tempdir().unwrap();
    let key = ssh_key(key_dir.path());
    let from = btc.height().unwrap();
    let l = order_budget(&buyer, &key, 3 * SLICE_SAT, SLICE_HOURS);
    let id = l["id"].as_str().unwrap().to_string();
    let pay_to = l["pay_address"].as_str().unwrap().to_string();
    let running = eventually("the first slice runs the machine", WAIT, || {
        mine_pending(&btc);
        let l = lease(&buyer, &id);
        if l["state"] == "running" && slices_paid(&l) == 1 {
            Ok(l)
        } else {
            Err(format!("{} {:?}", l["state"], history(&l)))
        }
    });
    let due = num(&running["exposure"]["budget"]["next_slice_at"]);
    assert!(due > 0, "a next slice is planned: {running}");

    // The provider vanishes with the first slice: its node is gone, nothing answers for the lease (what a
    // provider that takes the money and runs looks like from the buyer's side).
    p.kill();
    let withheld = eventually("the next slice withheld", WAIT, || {
        mine_pending(&btc);
        let l = lease(&buyer, &id);
        if l["withheld"].is_object() {
            Ok(l)
        } else {
            Err(format!("{:?}", history(&l)))
        }
    });
    assert_eq!(withheld["withheld"]["reason"], "status_stale", "{withheld}");
    assert!(
        num(&withheld["history"].as_array().unwrap().last().unwrap()["at"]) >= due,
        "nothing withheld before the slice was due"
    );
    assert!(
        history(&withheld)
            .iter()
            .any(|h| h.starts_with("next slice withheld: the provider has not answered")),
        "{:?}",
        history(&withheld)
    );
    assert_eq!(
        withheld["exposure"]["budget"]["withheld"]["reason"],
        "status_stale"
    );
    // A minute past the moment the next slice was due, and well past the freshness window: still only the
    // first slice, in the buyer's record and on the chain.
    let until = due + 60;
    eventually("a minute past the next slice's due time", WAIT, || {
        mine_pending(&btc);
        let l = lease(&buyer, &id);
        assert_eq!(l["slices"].as_array().unwrap().len(), 1, "{l}");
        if unix_now() >= until {
            Ok(())
        } else {
            Err("waiting".into())
        }
    });
    let outs = outputs_to(&btc, &pay_to, from);
    assert_eq!(outs.len(), 1, "{outs:?}");
    assert_eq!(outs[0].sat, SLICE_SAT);

    // Leave the lab as found: the gone provider's machine is deleted by hand, as its provider sees it, and
    // with it everything of the lease.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gone_provider = lab_cloud(&lab, &cleanup.owner(PROVIDER));
    assert!(
        rt.block_on(gone_provider.delete(&id)).unwrap(),
        "its machine was there"
    );
    cleanup.lease(&id);
    wait_nothing_left(&cleanup);
}

#[test]
fn a_low_fee_payment_is_bumped_and_confirms() {
    let Some((btc, lab, cleanup)) = real_parts("low fee bumped") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let p = start(
        &subdir(root.path(), "provider"),
        &provider_toml(&lab, &btc, PRICE_P1, &cleanup.owner(PROVIDER)),
        None,
    );
    // The buyer pays 1 sat/vB (its light client has no fee estimate) and bumps after 3 blocks.
    let buyer = start(
        &subdir(root.path(), "buyer"),
        &buyer_toml_with(&btc, "fee_target = 1\nbump_after_blocks = 3\n", ""),
        Some(&p),
    );
    fund(&buyer, &btc);
    wait_any_offer(&buyer);
    let key_dir = tempfile::tempdir().unwrap();
    let key = ssh_key(key_dir.path());
    let l = order_one_vcpu(&buyer, &key, &["--pay"]);
    let id = l["id"].as_str().unwrap().to_string();
    let pay_to = l["pay_address"].as_str().unwrap().to_string();
    let first = l["sent"][0]["txid"].as_str().unwrap().to_string();
    assert!(
        mempool(&btc).contains(&first),
        "the payment reached bitcoind's mempool"
    );
    // A transaction's fee whether it waits in the mempool or was mined already (then from its block: `-txindex`
    // is on, verbosity 2 reads the prevouts): the replacement may be in a block by the time it is looked at.
    let fee_of = |txid: &str| -> f64 {
        if let Ok(e) = btc.cli(&["getmempoolentry", txid]) {
            return e["fees"]["base"].as_f64().unwrap();
        }
        match btc.cli(&["getrawtransaction", txid, "2"]) {
            Ok(tx) => tx["fee"]
                .as_f64()
                .unwrap_or_else(|| panic!("no fee in {tx}")),
            Err(e) => {
                let log = buyer.log_text();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "{txid} is unknown to bitcoind ({e}); lease: {}; chain at {}; buyer's log:\n{}",
                    lease(&buyer, &id),
                    btc.height().unwrap_or(0),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            }
        }
    };
    let first_fee = fee_of(&first);
    // Miners will not take it: bitcoind keeps it out of its blocks.
    btc.cli(&["prioritisetransaction", &first, "0", "-100000000"])
        .unwrap();
    let from = btc.height().unwrap();
    // Blocks come and go without it, until the buyer's node replaces it at a higher fee.
    let replacement = eventually("the buyer's node bumps the stuck payment", WAIT, || {
        let l = lease(&buyer, &id);
        if let Some(new) = l["sent"][0]["txid"].as_str().filter(|t| *t != first) {
            return Ok(new.to_string());
        }
        // One block at a time, each once the buyer's wallet has seen the last.
        let tip = btc.height().unwrap();
        let seen = num(&buyer.json(&["wallet", "balance"])["tip_height"]);
        if seen >= tip {
            assert!(
                !mempool(&btc).is_empty() || tip == from,
                "the stuck payment left the mempool"
            );
            btc.mine(1).unwrap();
        }
        Err(format!(
            "wallet at {seen}, chain at {tip}: {:?}",
            history(&l)
        ))
    });
    assert!(
        btc.height().unwrap() >= from + 3,
        "replaced only after 3 blocks without it"
    );
    let l = lease(&buyer, &id);
    assert_eq!(l["sent"][0]["replaced"][0], first.as_str());
    assert!(
        history(&l)
            .iter()
            .any(|h| h.contains(&format!("{first} replaced by {replacement}"))),
        "{:?}",
        history(&l)
    );
    assert!(
        fee_of(&replacement) > first_fee,
        "the replacement pays more"
    );
    // It confirms (the original never does), and the lease starts.
    eventually("the replacement confirms", WAIT, || {
        mine_pending(&btc);
        let tx = btc
            .cli(&["getrawtransaction", &replacement, "true"])
            .map_err(|e| e.to_string())?;
        if num(&tx["confirmations"]) >= 1 {
            Ok(())
        } else {
            Err(tx.to_string())
        }
    });
    let outs = outputs_to(&btc, &pay_to, from);
    assert_eq!(outs.len(), 1, "{outs:?}");
    assert_eq!(
        (outs[0].txid.as_str(), outs[0].sat),
        (replacement.as_str(), PRICE_P1)
    );
    assert!(
        btc.cli(&["getrawtransaction", &first, "true"]).is_err(),
        "the original is gone"
    );
    wait_state(&p, &id, "running");
    wait_state(&buyer, &id, "running");

    // Leave the lab as found: the buyer cancels, the machine is deleted after the hold.
    buyer.json(&["lease", "cancel", &id]);
    wait_state(&p, &id, "closed");
}
