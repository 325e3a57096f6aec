//! Back from lost data: a node's data dir is wiped and the node comes back from its 24 recovery words
//! (`xov wallet restore`) and a backup file (`xov backup export|import`), against real Bitcoin Core regtest
//! and, for a provider in the middle of a lease, the real OpenStack lab.
//!
//! - A provider with a running, paid lease and a fidelity bond exports a backup while it runs, receives a
//!   payment the backup does not know of, is stopped and its data dir deleted. Restored into the empty
//!   directory, it has the same node id, the lease (same state, same invoice address, and a further payment
//!   to that address tops up that lease), the bond with its lock time, and the wallet's balance with the
//!   payment made after the backup; it then settles the lease (machine deleted, receipt signed).
//! - A wallet restored from its words alone finds its coins (a scan from the genesis block); words that are
//!   not the backup's are refused when the node opens the backup's wallet state.
//!
//! Waits poll the nodes with a deadline (`eventually`), never a fixed sleep.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;
use xov_testnet::bitcoind::Bitcoind;
use xov_testnet::scenario::*;

fn balance(d: &Daemon) -> Value {
    d.json(&["wallet", "balance"])
}

/// Confirmed and immature sats once the wallet has reached bitcoind's tip.
fn synced_balance(d: &Daemon, btc: &Bitcoind) -> Result<(u64, u64), String> {
    let b = balance(d);
    let tip = btc.height().map_err(|e| e.to_string())?;
    if b["tip_height"].as_u64() != Some(tip) {
        return Err(format!("wallet at {} of {tip}: {b}", b["tip_height"]));
    }
    Ok((
        b["confirmed_sat"].as_u64().unwrap_or(0),
        b["immature_sat"].as_u64().unwrap_or(0),
    ))
}

fn words_of(d: &Daemon) -> String {
    let w = d.json(&["wallet", "recovery-words"]);
    let words: Vec<&str> = w["words"]
        .as_array()
        .expect("words")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(words.len(), 24, "{w}");
    words.join(" ")
}

/// `xov wallet restore` with the words typed into its standard input.
fn restore_from_stdin(datadir: &Path, words: &str) -> std::process::Output {
    let mut child = Command::new(xov_bin())
        .arg("--datadir")
        .arg(datadir)
        .args(["wallet", "restore"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run xov wallet restore");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{words}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &std::process::Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

fn refused(out: &std::process::Output, what: &str, says: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} was not refused");
    assert!(err.contains(says), "{what}: wanted '{says}' in: {err}");
}

#[test]
fn a_provider_wiped_mid_lease_comes_back_from_its_words_and_backup() {
    let Some((btc, lab, cleanup)) = real_parts("restore a provider") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let pdir = subdir(root.path(), "provider");
    let toml = provider_toml(&lab, &btc, PRICE_P1, &cleanup.owner("provider"));
    let p = start(&pdir, &toml, None);
    let buyer = start(&subdir(root.path(), "buyer"), &buyer_toml(&btc), Some(&p));
    fund(&buyer, &btc);
    fund(&p, &btc);
    wait_any_offer(&buyer);

    // The provider locks coins in a fidelity bond; its lock time is not derivable from the words.
    let bond = p.json(&[
        "bond",
        "create",
        "--amount",
        "1000000",
        "--lock-blocks",
        "500",
    ]);
    let outpoint = bond["outpoint"].as_str().unwrap().to_string();
    btc.mine_tx(outpoint.split(':').next().unwrap(), WAIT)
        .unwrap();

    // A lease, paid and running.
    let keys = tempfile::tempdir().unwrap();
    let key = ssh_key(keys.path());
    let l = order_one_vcpu(&buyer, &key, &["--pay"]);
    let id = l["id"].as_str().unwrap().to_string();
    btc.mine_tx(l["sent"][0]["txid"].as_str().unwrap(), WAIT)
        .unwrap();
    let before = wait_state(&p, &id, "running");
    let pay_address = before["pay_address"].as_str().unwrap().to_string();
    assert!(before["paid_sat"].as_u64().unwrap() >= PRICE_P1, "{before}");

    // The backup, made while the provider runs.
    let backup = root.path().join("provider.xovbackup");
    let out = p.cli(&["backup", "export", "--out", backup.to_str().unwrap()]);
    ok(&out, "backup export");
    assert_eq!(mode(&backup), 0o600, "the backup holds the node key");
    let again = p.cli(&["backup", "export", "--out", backup.to_str().unwrap()]);
    refused(&again, "a second export to the same file", "exists already");
    let words = words_of(&p);

    // Coins arrive after the backup, to an address handed out before it.
    let addr = p.json(&["wallet", "address"])["address"]
        .as_str()
        .unwrap()
        .to_string();
    let late = buyer.json(&["wallet", "send", &addr, "70000"]);
    btc.mine_tx(late["txid"].as_str().unwrap(), WAIT).unwrap();
    let had = eventually("the provider sees the late payment", WAIT, || {
        let b = synced_balance(&p, &btc)?;
        let h = p.json(&["wallet", "history"]);
        if h.as_array()
            .into_iter()
            .flatten()
            .any(|t| t["txid"] == late["txid"])
        {
            Ok(b)
        } else {
            Err(format!("not in history yet; {b:?}"))
        }
    });
    let node_id = p.node_id.clone();
    let bonds_before = p.json(&["bond", "list"]);

    // Lost: the whole data dir. The operator keeps xov.toml, the words and the backup apart.
    assert!(p.stop().success());
    std::fs::remove_dir_all(&pdir).unwrap();
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(pdir.join("xov.toml"), &toml).unwrap();

    // The words, typed into standard input; a second restore into the same data dir is refused.
    let said = ok(&restore_from_stdin(&pdir, &words), "wallet restore");
    assert!(said.contains("restored the recovery words"), "{said}");
    assert_eq!(mode(&pdir.join("wallet.mnemonic")), 0o600);
    refused(
        &restore_from_stdin(&pdir, &words),
        "a second restore",
        "restore into an empty data dir",
    );
    // The backup; a second import over it is refused.
    ok(
        &xov(&pdir, &["backup", "import", backup.to_str().unwrap()]),
        "backup import",
    );
    assert_eq!(mode(&pdir.join("node.key")), 0o600);
    refused(
        &xov(&pdir, &["backup", "import", backup.to_str().unwrap()]),
        "an import over a database",
        "has a node database already",
    );

    let p = start(&pdir, &toml, Some(&buyer));
    assert_eq!(p.node_id, node_id, "the same identity");
    // The lease, as it was: running, paid, at the same invoice address.
    let after = lease(&p, &id);
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(after["pay_address"], pay_address.as_str());
    assert_eq!(after["paid_sat"], before["paid_sat"]);
    assert_eq!(after["instance"], before["instance"]);
    // The bond with its lock time.
    let bonds = p.json(&["bond", "list"]);
    let b = bonds
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["outpoint"] == outpoint.as_str())
        .unwrap_or_else(|| panic!("the bond is back: {bonds}"));
    assert_eq!(b["locktime"], bond["locktime"], "{b}");
    assert_eq!(b["amount_sat"], 1_000_000);
    assert_eq!(bonds, bonds_before);
    // The wallet scans on from the backup's block: the late payment is found.
    eventually("the restored wallet's balance", WAIT, || {
        let now = synced_balance(&p, &btc)?;
        if now == had {
            Ok(())
        } else {
            Err(format!("{now:?}, had {had:?}"))
        }
    });

    // Paying the lease's address again tops up that lease: the invoice still maps to it.
    let until = after["runs_until"].as_u64().unwrap();
    let topup = buyer.json(&["lease", "extend", &id, "--sats", "3600"]);
    btc.mine_tx(topup["txid"].as_str().unwrap(), WAIT).unwrap();
    eventually("the top-up extends the restored lease", WAIT, || {
        let l = lease(&p, &id);
        let paid = l["paid_sat"].as_u64().unwrap_or(0);
        let runs = l["runs_until"].as_u64().unwrap_or(0);
        if paid == before["paid_sat"].as_u64().unwrap() + 3600 && runs > until {
            Ok(())
        } else {
            Err(l.to_string())
        }
    });
    assert_eq!(state(&p, &id), "running");

    // The restored provider settles the lease as its own (its key signs the receipt), and leaves the lab as
    // found: the buyer cancels, the machine is deleted after the hold.
    buyer.json(&["lease", "cancel", &id]);
    wait_state(&p, &id, "closed");
    cleanup.lease(&id);
    eventually(
        "the restored provider deleted everything of the lease",
        WAIT,
        || match cleanup.leftovers() {
            Ok(left) if left.is_empty() => Ok(()),
            Ok(left) => Err(format!("still in the lab: {left}")),
            Err(e) => Err(e.to_string()),
        },
    );
}

#[test]
fn words_alone_find_the_coins_and_other_words_do_not_open_a_backup() {
    if xov_testnet::skip_e2e("restore from words") {
        return;
    }
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
    let env = btc.wallet_rpc_env();
    let root = tempfile::tempdir().unwrap();
    let dir = subdir(root.path(), "a");
    let a = Daemon::start_with(&dir, &env);
    let first_id = a.node_id.clone();
    fund(&a, &btc);
    // Coins on a later address too.
    let addr = a.json(&["wallet", "address"])["address"]
        .as_str()
        .unwrap()
        .to_string();
    btc.mine_to(3, &addr).unwrap();
    let had = eventually("the wallet's balance", WAIT, || synced_balance(&a, &btc));
    let words = words_of(&a);
    let backup = root.path().join("a.xovbackup");
    ok(
        &a.cli(&["backup", "export", "--out", backup.to_str().unwrap()]),
        "backup export",
    );
    assert!(a.stop().success());
    std::fs::remove_dir_all(&dir).unwrap();

    // The words alone, from a file: a new identity, the same coins.
    let words_file = root.path().join("words.txt");
    let numbered: String = words
        .split(' ')
        .enumerate()
        .map(|(i, w)| format!("{}. {w}\n", i + 1))
        .collect();
    std::fs::write(&words_file, numbered).unwrap();
    let fresh = subdir(root.path(), "words-only");
    let typo = root.path().join("typo.txt");
    let mut wrong: Vec<&str> = words.split(' ').collect();
    wrong[6] = "bitcoinx";
    std::fs::write(&typo, wrong.join(" ")).unwrap();
    refused(
        &xov(
            &fresh,
            &["wallet", "restore", "--words-file", typo.to_str().unwrap()],
        ),
        "a restore with a wrong word",
        "word 7 ('bitcoinx')",
    );
    assert!(!fresh.join("wallet.mnemonic").exists());
    ok(
        &xov(
            &fresh,
            &[
                "wallet",
                "restore",
                "--words-file",
                words_file.to_str().unwrap(),
            ],
        ),
        "wallet restore --words-file",
    );
    let b = Daemon::start_with(&fresh, &env);
    assert_ne!(b.node_id, first_id, "no backup: a new identity");
    eventually(
        "the words' coins, found from the genesis block",
        WAIT,
        || {
            let now = synced_balance(&b, &btc)?;
            if now == had {
                Ok(())
            } else {
                Err(format!("{now:?}, had {had:?}"))
            }
        },
    );
    assert!(b.stop().success());

    // The backup with another wallet's words: the node refuses to open it, saying why.
    let other = subdir(root.path(), "other-words");
    let zeros = "abandon ".repeat(23) + "art";
    ok(&restore_from_stdin(&other, &zeros), "restore other words");
    ok(
        &xov(&other, &["backup", "import", backup.to_str().unwrap()]),
        "backup import",
    );
    let (status, log) = wait_exit(spawn_daemon_with(&other, &env), Duration::from_secs(60));
    assert!(!status.success());
    assert!(log.contains("belongs to other recovery words"), "{log}");
}
