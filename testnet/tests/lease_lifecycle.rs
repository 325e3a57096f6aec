//! The product, end to end: two providers attached to the real OpenStack lab, one buyer, real Bitcoin Core
//! regtest, every party its own `xov` process talking over libp2p on 127.0.0.1.
//!
//! order → invoice → pay → (provider crashes after the payment is seen, restarts) → confirm → ACTIVE VM with the
//! buyer's key → (provider crashes while running, restarts: still one VM) → top-up extends → warn → grace →
//! halt → delete → signed receipts on both sides; and a refused order explains itself. Also: a provider
//! killed while Nova is still building the machine (a fault proxy keeps it "BUILD") restarts to exactly one
//! machine; a provider that does not advertise answers a gossiped bid; `leases show --wait` follows a lease
//! until it runs; `lease extend` tops it up.

mod common;

use common::{lab_cloud, wait_nothing_left};
use reqwest::Method;
use serde_json::Value;
use xov_provisioner::{keypair_name, MachineState, OpenStackProvisioner, Provisioner};
use xov_testnet::fault_proxy::{Fault, FaultProxy, Path as FaultPath};
use xov_testnet::node::*;
use xov_testnet::scenario::*;

fn machines_of(
    rt: &tokio::runtime::Runtime,
    p: &OpenStackProvisioner,
    lease_id: &str,
) -> Vec<xov_provisioner::Machine> {
    rt.block_on(p.list_ours())
        .unwrap()
        .into_iter()
        .filter(|m| m.lease_id == lease_id)
        .collect()
}

#[test]
fn a_buyer_leases_a_vm_pays_tops_up_and_the_provider_halts_deletes_and_signs_a_receipt() {
    let Some((btc, lab, cleanup)) = real_parts("lease lifecycle") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The lease goes to P1, the cheapest: the lab as P1 sees it.
    let cloud = lab_cloud(&lab, &cleanup.owner(P1));
    let root = tempfile::tempdir().unwrap();
    let market = LocalMarket::start(root.path(), &btc, &lab, &cleanup);
    market.fund_buyer(&btc);
    // Both providers' offers, made from the lab's inventory, reach the buyer.
    market.wait_offers();
    let LocalMarket { p1, p2, buyer } = market;
    let d1 = root.path().join("provider-1");

    let key_dir = tempfile::tempdir().unwrap();
    let key_file = ssh_key(key_dir.path());
    let key = key_file.to_str().unwrap();

    // A refused order explains itself.
    let too_cheap = xov(
        &buyer.datadir,
        &[
            "order",
            "--image",
            "debian-12",
            "--max-price",
            "1000",
            "--hours",
            "1",
            "--ssh-key",
            key,
        ],
    );
    let why = String::from_utf8_lossy(&too_cheap.stderr);
    assert!(
        why.contains(&format!("cheapest matching offer is {PRICE_P1} sats/h")),
        "{why}"
    );
    let no_image = xov(
        &buyer.datadir,
        &[
            "order",
            "--image",
            "arch-linux",
            "--hours",
            "1",
            "--ssh-key",
            key,
        ],
    );
    assert!(String::from_utf8_lossy(&no_image.stderr)
        .contains("no offer has image arch-linux; available: debian-12"));
    // A port no offer lets a buyer open: the buyer is told which ports the offers allow.
    let no_port = xov(
        &buyer.datadir,
        &[
            "order",
            "--image",
            "debian-12",
            "--hours",
            "1",
            "--port",
            "9999",
            "--ssh-key",
            key,
        ],
    );
    let said = String::from_utf8_lossy(&no_port.stderr);
    assert!(
        !no_port.status.success()
            && said.contains(
                "no offer opens port 9999 to its machines besides SSH; offers that match otherwise allow 8080"
            ),
        "{said}"
    );
    let allowing = buyer.json(&["offers", "list", "--port", "8080"]);
    assert_eq!(allowing.as_array().map(Vec::len), Some(2), "{allowing}");
    assert_eq!(allowing[0]["extra_ports"], serde_json::json!([8080]));

    // A provider attached to a cloud cannot sell an offer typed by hand (no flavor would be behind it).
    let by_hand = xov(
        &p1.datadir,
        &[
            "offer",
            "publish",
            "--vcpus",
            "8",
            "--ram",
            "65536",
            "--disk",
            "100",
            "--gpu",
            "NVIDIA A100",
            "--image",
            "debian-12",
            "--price",
            "90000",
            "--country",
            "DE",
        ],
    );
    assert!(!by_hand.status.success());
    assert!(
        String::from_utf8_lossy(&by_hand.stderr).contains("add the flavor to [provider.inventory]"),
        "{by_hand:?}"
    );

    // Order: the cheapest provider (P1) answers with a signed invoice for the hours asked.
    let refund = buyer.json(&["wallet", "address"])["address"]
        .as_str()
        .unwrap()
        .to_string();
    // ...with port 8080 opened besides SSH, which the offer allows.
    let l = order_one_vcpu(
        &buyer,
        &key_file,
        &["--refund-address", &refund, "--port", "8080"],
    );
    let id = l["id"].as_str().unwrap().to_string();
    assert_eq!(l["state"], "invoiced");
    assert_eq!(l["counterparty"], p1.node_id.as_str());
    assert_eq!(l["amount_sat"], PRICE_P1);
    let pay_to = l["pay_address"].as_str().unwrap().to_string();
    assert!(l["pay_uri"]
        .as_str()
        .unwrap()
        .starts_with(&format!("bitcoin:{pay_to}?amount=0.00036")));
    assert_eq!(state(&p1, &id), "invoiced");
    // `leases show --wait` says what the lease waits for, and gives up when told to, saying it again.
    let waited = xov(
        &buyer.datadir,
        &["leases", "show", &id, "--wait", "--wait-timeout", "1"],
    );
    let said = String::from_utf8_lossy(&waited.stderr);
    assert!(!waited.status.success(), "{waited:?}");
    assert!(
        said.contains(&format!(
            "waiting for your payment of {PRICE_P1} sat to {pay_to}"
        )) && said.contains("gave up after 1 s")
            && said.contains(&format!("`xov leases show {id} --wait` follows it again")),
        "{said}"
    );

    // The buyer pays for 40 s (the offer's shortest lease is 30 s). The provider sees it in the mempool...
    buyer.json(&["wallet", "send", &pay_to, "400"]);
    wait_state(&p1, &id, "payment_seen");
    // ...and crashes. The block confirming the payment is mined while it is down.
    let p1 = {
        p1.kill();
        btc.mine(1).unwrap();
        LocalMarket::restart_p1(&d1, &btc, &lab, &p2, &cleanup)
    };
    // Restarted, it finds the payment confirmed and launches exactly one machine.
    let running = wait_state(&p1, &id, "running");
    let ours = machines_of(&rt, &cloud, &id);
    assert_eq!(ours.len(), 1, "exactly one VM for the lease: {ours:?}");
    assert_eq!(ours[0].state, MachineState::Running);
    assert_eq!(
        ours[0].key_name.as_deref(),
        Some(keypair_name(&id).as_str()),
        "booted with the buyer's key pair"
    );
    assert_eq!(running["instance"]["server_id"], ours[0].server_id.as_str());
    // The buyer learns it over the direct channel.
    let seen = wait_state(&buyer, &id, "running");
    assert_eq!(seen["instance"]["server_id"], ours[0].server_id.as_str());
    assert_eq!(seen["instance"]["user"], "debian");
    // On the lab's tenant network the machine has an address; the buyer gets it with the SSH port, and
    // `xov ssh` logs in there with the private half of the key the order was placed with.
    // The floating IP from the lab's external network comes first, then the machine's own address.
    let fixed = &ours[0]
        .addresses
        .iter()
        .find(|a| a.kind.as_deref() == Some("fixed"))
        .unwrap_or_else(|| {
            panic!(
                "the machine on the tenant network has an address: {:?}",
                ours[0]
            )
        })
        .ip;
    let floating = seen["instance"]["addresses"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        floating.starts_with("198.18.10."),
        "a floating IP first: {seen}"
    );
    assert!(
        seen["instance"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == fixed.as_str()),
        "{seen}"
    );
    assert_eq!(seen["instance"]["ssh_port"], 22, "{seen}");
    assert_eq!(
        seen["instance"]["open_ports"],
        serde_json::json!([22, 8080]),
        "SSH and the port the buyer asked for: {seen}"
    );
    let shown =
        String::from_utf8_lossy(&xov(&buyer.datadir, &["leases", "show", &id]).stdout).to_string();
    assert!(shown.contains(&format!("debian@{floating}")), "{shown}");
    assert!(shown.contains("8080"), "open ports shown: {shown}");
    let private = key_file.with_extension("");
    let printed = xov(&buyer.datadir, &["ssh", &id, "--print"]);
    let printed = String::from_utf8_lossy(&printed.stdout).to_string()
        + &String::from_utf8_lossy(&printed.stderr);
    for want in [
        format!("-i {}", private.display()),
        "-p 22".to_string(),
        format!("debian@{floating}"),
    ] {
        assert!(
            printed.contains(&want),
            "`xov ssh --print` lacks {want}: {printed}"
        );
    }
    // Run for real with a stand-in for ssh that records what it was given (the lab's machines are fake and
    // run no SSH server; issue 17 brings a real one).
    let record = key_dir.path().join("ssh-args");
    let stand_in = key_dir.path().join("ssh");
    std::fs::write(
        &stand_in,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\n", record.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ran = buyer.xov_ssh(&stand_in, &id, &["uname", "-a"]).unwrap();
    assert!(ran.status.success(), "xov ssh: {ran:?}");
    let args = std::fs::read_to_string(&record).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args[args.len() - 4..],
        [format!("debian@{floating}").as_str(), "--", "uname", "-a"],
        "{args:?}"
    );
    let first_until = seen["runs_until"].as_u64().unwrap();

    // The provider crashes while the lease runs; after a restart there is still exactly one VM.
    let p1 = {
        p1.kill();
        LocalMarket::restart_p1(&d1, &btc, &lab, &p2, &cleanup)
    };
    assert_eq!(state(&p1, &id), "running");
    assert_eq!(machines_of(&rt, &cloud, &id).len(), 1);

    // `xov lease extend` pays the same address again, which extends the lease (300 sats = 30 s more).
    let topup = buyer.json(&["lease", "extend", &id[..12], "--sats", "300"]);
    assert!(
        topup["txid"].as_str().is_some_and(|t| t.len() == 64),
        "{topup}"
    );
    btc.mine_tx(topup["txid"].as_str().unwrap(), WAIT).unwrap();
    eventually("top-up extends the lease", WAIT, || {
        let l = lease(&buyer, &id);
        match l["runs_until"].as_u64() {
            Some(u) if u >= first_until + 29 => Ok(()),
            other => Err(format!("{other:?} vs {first_until}")),
        }
    });
    assert_eq!(lease(&p1, &id)["paid_sat"], 700);

    // Funds drain: warned, grace, halted (the VM is stopped), deleted, receipts.
    wait_state(&buyer, &id, "warned");
    wait_state(&p1, &id, "grace");
    wait_state(&p1, &id, "halted");
    let stopped = machines_of(&rt, &cloud, &id);
    assert_eq!(stopped.len(), 1);
    assert_eq!(
        stopped[0].state,
        MachineState::Stopped,
        "halted means stopped, not yet deleted"
    );
    let closed = wait_state(&buyer, &id, "closed");
    assert!(
        machines_of(&rt, &cloud, &id).is_empty(),
        "the VM is deleted"
    );
    let receipt = closed["history"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s["detail"].as_str().filter(|d| d.starts_with("receipt ")))
        .expect("buyer holds the provider's receipt")
        .to_string();
    let r: Value = serde_json::from_str(receipt.trim_start_matches("receipt ")).unwrap();
    assert_eq!(r["paid_sat"], 700);
    assert_eq!(r["buyer"], buyer.node_id.as_str());
    assert_eq!(r["provider"], p1.node_id.as_str());
    eventually(
        "provider holds the buyer's countersigned receipt",
        WAIT,
        || {
            let h = lease(&p1, &id)["history"].to_string();
            if h.contains("buyer countersigned receipt") {
                Ok(())
            } else {
                Err(h)
            }
        },
    );
    // P2 was never involved.
    assert!(p2.json(&["leases", "list"]).as_array().unwrap().is_empty());
    // The closed lease left nothing in the lab: no server, floating IP, port, group or key pair.
    cleanup.lease(&id);
    wait_nothing_left(&cleanup);
}

#[test]
fn an_order_while_the_cheapest_provider_is_down_goes_to_the_next_and_leaves_no_machine_behind() {
    let Some((btc, lab, cleanup)) = real_parts("lease failover") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The lease goes to P2 (P1 is down when it is ordered): the lab as P2 sees it.
    let cloud = lab_cloud(&lab, &cleanup.owner(P2));
    let root = tempfile::tempdir().unwrap();
    let market = LocalMarket::start(root.path(), &btc, &lab, &cleanup);
    market.wait_offers();
    let LocalMarket { p1, p2, buyer } = market;
    let d1 = root.path().join("provider-1");
    let key_dir = tempfile::tempdir().unwrap();
    let key = ssh_key(key_dir.path());

    let refund = buyer.json(&["wallet", "address"])["address"]
        .as_str()
        .unwrap()
        .to_string();
    // The cheapest provider crashes before it could invoice anything.
    p1.kill();
    let l = buyer.json(&[
        "order",
        "--image",
        "debian-12",
        "--hours",
        "1",
        "--ssh-key",
        key.to_str().unwrap(),
        "--refund-address",
        &refund,
    ]);
    let id = l["id"].as_str().unwrap().to_string();
    assert_eq!(
        l["counterparty"],
        p2.node_id.as_str(),
        "the next provider invoiced"
    );
    assert_eq!(l["amount_sat"], PRICE_P2);
    assert!(
        l["history"].to_string().contains("invoice for"),
        "the lease records its invoice: {}",
        l["history"]
    );
    // Back up, P1 knows nothing of the lease; unpaid, nobody launched anything.
    let p1 = LocalMarket::restart_p1(&d1, &btc, &lab, &p2, &cleanup);
    assert!(p1.json(&["leases", "list"]).as_array().unwrap().is_empty());
    assert_eq!(p2.json(&["leases", "show", &id])["state"], "invoiced");
    assert!(machines_of(&rt, &cloud, &id).is_empty());
    let servers = cleanup.leftovers().unwrap().servers;
    assert!(servers.is_empty(), "no provider made a server: {servers:?}");

    // The buyer pays for 100 s, the machine runs, the buyer cancels: the provider stops the machine and
    // refunds the unused part to the refund address.
    let market = LocalMarket { p1, p2, buyer };
    market.fund_buyer(&btc);
    let LocalMarket { p1: _p1, p2, buyer } = market;
    let pay_to = l["pay_address"].as_str().unwrap().to_string();
    buyer.json(&["wallet", "send", &pay_to, "1500"]);
    // `xov leases show --wait` stays with the lease and prints each step until the machine runs.
    let follower = std::process::Command::new(xov_bin())
        .arg("--datadir")
        .arg(&buyer.datadir)
        .args(["--json", "leases", "show", &id, "--wait"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut follower = KillOnDrop(follower);
    assert!(
        follower.0.try_wait().unwrap().is_none(),
        "unconfirmed, the lease is not running yet, so --wait waits"
    );
    btc.mine_pending(WAIT).unwrap();
    eventually(
        "`leases show --wait` returns once running",
        WAIT,
        || match follower.0.try_wait().unwrap() {
            Some(st) => Ok(st),
            None => Err("still waiting".into()),
        },
    );
    let mut out = String::new();
    std::io::Read::read_to_string(follower.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    let steps: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let states: Vec<&str> = steps.iter().filter_map(|s| s["state"].as_str()).collect();
    assert_eq!(states.first(), Some(&"invoiced"), "{out}");
    assert_eq!(states.last(), Some(&"running"), "{out}");
    assert!(
        steps
            .iter()
            .any(|s| s["detail"].as_str().is_some_and(|d| d.contains("confirm"))),
        "the confirmation is one of the steps shown: {out}"
    );
    wait_state(&buyer, &id, "running");
    buyer.json(&["lease", "cancel", &id]);
    wait_state(&p2, &id, "halted");
    // The refund is built and broadcast beside the stop; the provider reports it once it was sent.
    eventually("the provider refunds the unused part", WAIT, || {
        let l = lease(&p2, &id);
        if l["refunded_sat"].as_u64().unwrap_or(0) > 0 {
            Ok(())
        } else {
            Err(l.to_string())
        }
    });
    let stopped = machines_of(&rt, &cloud, &id);
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].state, MachineState::Stopped);
    btc.mine(1).unwrap();
    eventually(
        "the buyer sees the refund and the cancellation",
        WAIT,
        || {
            let l = lease(&buyer, &id);
            if l["state"] == "halted" && l["refunded_sat"].as_u64().unwrap_or(0) > 0 {
                Ok(())
            } else {
                Err(l.to_string())
            }
        },
    );
    // The halted machine is deleted when its hold ends (the lease was cancelled, nothing more will come).
    let rt2 = &rt;
    eventually("cancelled machine deleted", WAIT, || {
        let n = machines_of(rt2, &cloud, &id).len();
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} machines"))
        }
    });
    cleanup.lease(&id);
    wait_nothing_left(&cleanup);
}

/// Kills a child process when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_provider_killed_while_the_machine_builds_restarts_to_exactly_one_running_machine() {
    let Some((btc, lab, cleanup)) = real_parts("crash during build") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let owner = cleanup.owner("provider");
    let cloud = lab_cloud(&lab, &owner);
    // The provider reaches Nova through a proxy that shows every server as still building until healed:
    // a slow boot, during which the provider dies.
    let proxy = rt.block_on(FaultProxy::start(&lab.compute_origin));
    proxy.rule(
        Some(Method::GET),
        FaultPath::ServerItem,
        usize::MAX,
        Fault::PretendBuilding,
    );
    let root = tempfile::tempdir().unwrap();
    let pdir = subdir(root.path(), "provider");
    let bdir = subdir(root.path(), "buyer");
    let opts = ProviderOpts {
        compute_endpoint: Some(proxy.compute_url()),
        ..Default::default()
    };
    let toml = provider_toml_with(&lab, &btc, PRICE_P1, &owner, &opts);
    let p = start(&pdir, &toml, None);
    let buyer = start(&bdir, &buyer_toml(&btc), Some(&p));
    fund(&buyer, &btc);
    wait_any_offer(&buyer);
    let key_dir = tempfile::tempdir().unwrap();
    let key = ssh_key(key_dir.path());
    let l = buyer.json(&[
        "order",
        "--image",
        "debian-12",
        "--hours",
        "1",
        "--ssh-key",
        key.to_str().unwrap(),
        "--pay",
    ]);
    let id = l["id"].as_str().unwrap().to_string();
    btc.mine_pending(WAIT).unwrap();
    // Paid and confirmed: the provider asked Nova for the machine, which is still building.
    wait_state(&p, &id, "provisioning");
    let rt2 = &rt;
    eventually("the server exists in Nova", WAIT, || {
        match machines_of(rt2, &cloud, &id).len() {
            1 => Ok(()),
            n => Err(format!("{n} servers")),
        }
    });
    let p = {
        p.kill();
        start(&pdir, &toml, Some(&buyer))
    };
    // Back up, the provider finds its machine by the lease tag instead of creating another.
    assert_eq!(state(&p, &id), "provisioning");
    proxy.heal();
    let running = wait_state(&p, &id, "running");
    let ours = machines_of(&rt, &cloud, &id);
    assert_eq!(ours.len(), 1, "exactly one VM for the lease: {ours:?}");
    assert_eq!(running["instance"]["server_id"], ours[0].server_id.as_str());
    let (_, created) = proxy.count(&Method::POST, "/v2.1/servers");
    assert_eq!(created, 1, "one create reached Nova, across the crash");
    wait_state(&buyer, &id, "running");

    // Leave the lab as found: the buyer cancels, the machine is deleted after the hold.
    buyer.json(&["lease", "cancel", &id]);
    eventually("cancelled machine deleted", WAIT, || {
        match machines_of(rt2, &cloud, &id).len() {
            0 => Ok(()),
            n => Err(format!("{n} machines")),
        }
    });
    cleanup.lease(&id);
    wait_nothing_left(&cleanup);
}

#[test]
fn a_bid_reaches_a_provider_that_does_not_advertise_and_it_answers_with_an_offer_to_order() {
    let Some((btc, lab, cleanup)) = real_parts("bids") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let pdir = subdir(root.path(), "quiet-provider");
    let bdir = subdir(root.path(), "buyer");
    // This provider keeps its offers out of gossip: it only answers bids.
    let opts = ProviderOpts {
        advertise: false,
        ..Default::default()
    };
    let p = start(
        &pdir,
        &provider_toml_with(&lab, &btc, PRICE_P1, &cleanup.owner("provider"), &opts),
        None,
    );
    let buyer = start(&bdir, &buyer_toml(&btc), Some(&p));
    eventually("the provider made its unlisted offer", WAIT, || {
        let own = p.json(&["offers", "list", "--mine"]);
        match own
            .as_array()
            .map(|a| a.iter().all(|o| o["unlisted"] == true) && !a.is_empty())
        {
            Some(true) => Ok(()),
            _ => Err(own.to_string()),
        }
    });
    eventually("the provider is a member of the public pool", WAIT, || {
        let peers = buyer.json(&["peers"]);
        let member = peers.as_array().into_iter().flatten().any(|x| {
            x["node_id"] == p.node_id.as_str()
                && x["pools"].as_array().is_some_and(|a| !a.is_empty())
        });
        if member {
            Ok(())
        } else {
            Err(peers.to_string())
        }
    });
    let key_dir = tempfile::tempdir().unwrap();
    let key = ssh_key(key_dir.path());
    let key = key.to_str().unwrap();
    let order = |extra: &[&str]| {
        let mut args = vec![
            "order",
            "--image",
            "debian-12",
            "--hours",
            "1",
            "--ssh-key",
            key,
        ];
        args.extend_from_slice(extra);
        xov(&buyer.datadir, &args)
    };

    // The book has nothing, and the buyer is told so.
    let none = order(&["--max-price", "40000"]);
    assert!(!none.status.success());
    let why = String::from_utf8_lossy(&none.stderr).to_string();
    assert!(why.contains("no offer"), "{why}");
    assert!(
        buyer
            .json(&["offers", "list"])
            .as_array()
            .unwrap()
            .is_empty(),
        "unlisted offers never reach the book"
    );

    // A bid below the provider's price goes unanswered, and the buyer is told that too.
    let cheap = order(&["--max-price", "1000", "--bid-wait", "5"]);
    let why = String::from_utf8_lossy(&cheap.stderr).to_string();
    assert!(
        why.contains("no provider answered a bid within 5 s"),
        "{why}"
    );

    // A bid the provider can meet is answered directly, and the order goes through on that offer.
    let out = order(&["--max-price", "40000", "--bid-wait", "30", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l["state"], "invoiced");
    assert_eq!(l["counterparty"], p.node_id.as_str());
    assert_eq!(l["amount_sat"], PRICE_P1);
    let id = l["id"].as_str().unwrap();
    assert_eq!(state(&p, id), "invoiced");
}
