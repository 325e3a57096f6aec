//! Trust without an authority, end to end: one provider attached to the real OpenStack lab, two buyers, real
//! Bitcoin Core regtest, each party its own `xov` process.
//!
//! Anonymous limits tighten as the pool's running load grows; an anonymous buyer over the limit is refused
//! and told what would let it in; after a fidelity bond (a real CLTV output, checked by the provider against
//! the chain) the same buyer is admitted; forged and double-counted receipts are refused; and a bond whose
//! output is spent stops counting.

use serde_json::Value;
use xov_protocol::{Keypair, MessageId, ProviderReceipt, Receipt};
use xov_testnet::node::*;
use xov_testnet::scenario::*;

/// Anonymous buyers: 2 leases and 40,000 sats/h in an idle pool, halved when the pool runs 36,000 sats/h
/// (one of this provider's machines). Basic buyers: 200,000 sats/h.
const ADMISSION: &str = r#"
[provider.admission.anonymous]
max_concurrent_leases = 2
max_sats_per_hour = 40000
reference_sats_per_hour = 36000

[provider.admission.basic]
max_concurrent_leases = 4
max_sats_per_hour = 200000

[trust]
bond_recheck_secs = 2
load_report_secs = 2
"#;

fn node_key(d: &Daemon) -> Keypair {
    let raw = std::fs::read(d.datadir.join("node.key")).unwrap();
    Keypair::from_secret_bytes(&raw.try_into().unwrap())
}

fn trust_of(at: &Daemon, node: &Daemon) -> Value {
    at.json(&["trust", "show", &node.node_id])
}

/// The newest lease of a node (`leases list` is newest first).
fn last_lease_id(d: &Daemon) -> String {
    d.json(&["leases", "list"])[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn anonymous_buyers_are_limited_by_pool_load_until_a_bond_lets_them_in() {
    let Some((btc, lab, cleanup)) = real_parts("trust") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dir = |n: &str| subdir(root.path(), n);
    let opts = ProviderOpts {
        extra: ADMISSION.into(),
        ..Default::default()
    };
    let p = start(
        &dir("provider"),
        &provider_toml_with(&lab, &btc, PRICE_P1, &cleanup.owner("provider"), &opts),
        None,
    );
    let runner = start(&dir("runner"), &buyer_toml(&btc), Some(&p));
    let newcomer = start(&dir("newcomer"), &buyer_toml(&btc), Some(&p));
    // A node on the default chain source (compact block filters) that only watches: it checks bonds from
    // the height their proof names.
    let observer = start(
        &dir("observer"),
        &format!(
            "[wallet]\nenabled = true\nnetwork = \"regtest\"\nchain = \"filters\"\npeers = [\"{}\"]\n\n[trust]\nbond_recheck_secs = 5\n",
            btc.p2p_addr()
        ),
        Some(&p),
    );
    fund(&runner, &btc);
    fund(&newcomer, &btc);
    wait_any_offer(&runner);
    wait_any_offer(&newcomer);
    let key_dir = tempfile::tempdir().unwrap();
    let key = ssh_key(key_dir.path());
    let key = key.to_str().unwrap();
    // Errors go to stderr without --json, so refusals are read in human form.
    let order = |d: &Daemon, pay: bool| {
        let mut args = vec![
            "order",
            "--image",
            "debian-12",
            "--hours",
            "1",
            "--ssh-key",
            key,
        ];
        if pay {
            args.push("--pay");
        }
        let out = xov(&d.datadir, &args);
        if out.status.success() {
            Ok(lease(d, last_lease_id(d).as_str()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    };

    // In an idle pool an anonymous buyer gets the full anonymous limits.
    let t = trust_of(&p, &newcomer);
    assert_eq!(t["report"]["tier"], "anonymous", "{t}");
    assert_eq!(t["limits"]["max_sats_per_hour"], 40000, "{t}");
    assert_eq!(t["limits"]["reduced_by_pool_load"], false, "{t}");

    // One anonymous buyer's machine runs: the pool's load is now 36,000 sats/h.
    let running = order(&runner, true).unwrap();
    let running_id = running["id"].as_str().unwrap().to_string();
    btc.mine_pending(WAIT).unwrap();
    wait_state(&p, &running_id, "running");

    // The anonymous limits have halved with it, and the newcomer is refused and told what would help.
    let t = trust_of(&p, &newcomer);
    assert_eq!(t["limits"]["max_sats_per_hour"], 20000, "{t}");
    assert_eq!(t["limits"]["max_concurrent_leases"], 1, "{t}");
    assert_eq!(t["limits"]["reduced_by_pool_load"], true, "{t}");
    let why = order(&newcomer, false).unwrap_err();
    assert!(
        why.contains("anonymous buyers may run at most 20000 sats/hour"),
        "{why}"
    );
    assert!(why.contains("a fidelity bond worth at least"), "{why}");

    // The newcomer locks 0.1 BTC for 50 blocks. Once the bond confirms, its proof is gossiped and the
    // provider checks the output on the chain: the newcomer is no longer anonymous...
    let bond = newcomer.json(&[
        "bond",
        "create",
        "--amount",
        "10000000",
        "--lock-blocks",
        "50",
    ]);
    let outpoint = bond["outpoint"].as_str().unwrap().to_string();
    btc.mine_tx(outpoint.split(':').next().unwrap(), WAIT)
        .unwrap();
    let t = eventually("the provider counts the newcomer's bond", WAIT, || {
        let t = trust_of(&p, &newcomer);
        if t["report"]["tier"] == "basic" {
            Ok(t)
        } else {
            Err(t.to_string())
        }
    });
    assert_eq!(t["report"]["bond"]["spent"], false, "{t}");
    assert_eq!(t["report"]["bond"]["amount_sats"], 10_000_000, "{t}");
    eventually("a light-client node counts the bond too", WAIT, || {
        let t = trust_of(&observer, &newcomer);
        if t["report"]["tier"] == "basic" {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });
    // ...and is admitted.
    // (Not paid: an invoice is the provider's yes, and nothing is left running in the lab.)
    let l = order(&newcomer, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l["state"], "invoiced");
    assert_eq!(l["counterparty"], p.node_id.as_str());

    // Receipts: a genuine dual-signed one is taken once; a forged one and a second, different receipt for
    // the same lease (a double count) are refused, and the double-counted lease counts for nobody.
    let (pk, rk) = (node_key(&p), node_key(&runner));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let receipt = |paid: u64| {
        let r = Receipt {
            lease_id: MessageId([7; 32]),
            pool: xov_protocol::public_charter(xov_protocol::Chain::REGTEST)
                .body()
                .pool_id(),
            provider: pk.node_id(),
            buyer: rk.node_id(),
            started_at: now - 600,
            ended_at: now - 60,
            paid_sats: paid,
            refunded_sats: 0,
        };
        ProviderReceipt::sign(r, &pk)
            .countersign(&rk)
            .unwrap()
            .to_bytes()
    };
    let genuine = hex::encode(receipt(6000));
    let first = p.json(&["trust", "import", &genuine]);
    assert_eq!(first["added"], "new", "{first}");
    assert_eq!(p.json(&["trust", "import", &genuine])["added"], "duplicate");
    let mut forged = receipt(6000);
    *forged.last_mut().unwrap() ^= 1;
    let out = xov(&p.datadir, &["trust", "import", &hex::encode(forged)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signature"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = xov(
        &p.datadir,
        &["trust", "import", &hex::encode(receipt(60_000))],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("double count"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = trust_of(&p, &runner);
    assert_eq!(t["report"]["conflicted_receipts"], 1, "{t}");
    assert_eq!(t["report"]["receipts_as_buyer"], 0, "{t}");

    // The lock passes and the newcomer moves the coins back: the provider sees the output spent, and the
    // bond stops counting.
    btc.mine(50).unwrap();
    let unlocked = eventually("bond unlock accepted", WAIT, || {
        let out = xov(&newcomer.datadir, &["--json", "bond", "unlock", &outpoint]);
        if out.status.success() {
            Ok(serde_json::from_slice::<Value>(&out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    });
    assert!(unlocked["txid"].is_string());
    btc.mine_tx(unlocked["txid"].as_str().unwrap(), WAIT)
        .unwrap();
    // A spent bond's proof is refuted by the chain and dropped (it is not kept, or checked again).
    let t = eventually("the provider sees the bond spent", WAIT, || {
        let t = trust_of(&p, &newcomer);
        if t["report"]["bond"]["spent"] == true
            || (t["report"]["bond"].is_null() && t["bond_proof"].is_null())
        {
            Ok(t)
        } else {
            Err(t.to_string())
        }
    });
    assert_eq!(t["report"]["tier"], "anonymous", "{t}");
    assert_eq!(t["report"]["bond_value_sats"], 0, "{t}");

    // Leave the lab as found.
    runner.json(&["lease", "cancel", &running_id]);
    wait_state(&p, &running_id, "halted");
}
