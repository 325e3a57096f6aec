//! `xov-testnet up`: a whole local market on this machine — Bitcoin Core regtest, the OpenStack lab, two
//! provider nodes attached to it and a buyer node — and one lease run end to end while you watch. It stays
//! up until Ctrl-C. `xov-testnet down` stops what an interrupted `up` left behind (`--lab` also the lab).

use std::path::PathBuf;
use std::process::ExitCode;

use xov_testnet::bitcoind::Bitcoind;
use xov_testnet::node::*;
use xov_testnet::openstack::OpenStackLab;
use xov_testnet::scenario::*;

fn state_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(".cache/xov/testnet")
}

fn say(step: &str) {
    println!("\n==> {step}");
}

fn show(d: &Daemon, args: &[&str]) {
    let out = xov(&d.datadir, args);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

fn up() -> Result<(), String> {
    let root = state_dir().join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    say("starting Bitcoin Core (regtest)");
    let btc = Bitcoind::start().map_err(|e| e.to_string())?;
    println!("    rpc {}  p2p {}", btc.rpc_url(), btc.p2p_addr());
    say("starting the OpenStack lab (about 20 s warm, 2 min on a fresh machine)");
    let lab = OpenStackLab::ensure().map_err(|e| e.to_string())?;
    println!("    keystone {}  nova {}", lab.auth_url, lab.compute_url);
    let dir = |n: &str| {
        let d = root.join(n);
        std::fs::create_dir_all(&d).expect("state dir");
        d
    };
    say("starting provider 1, provider 2 and a buyer");
    let p1 = start(
        &dir("provider-1"),
        &provider_toml(&lab, &btc, PRICE_P1),
        None,
    );
    let p2 = start(
        &dir("provider-2"),
        &provider_toml(&lab, &btc, PRICE_P2),
        Some(&p1),
    );
    let buyer = start(&dir("buyer"), &buyer_toml(&btc), Some(&p1));
    let pids: Vec<String> = [p1.pid(), p2.pid(), buyer.pid()]
        .into_iter()
        .map(|p| p.to_string())
        .chain(btc.pid().map(|p| p.to_string()))
        .collect();
    let _ = std::fs::write(state_dir().join("pids"), pids.join("\n"));
    for (name, d) in [("provider-1", &p1), ("provider-2", &p2), ("buyer", &buyer)] {
        println!(
            "    {name:<10} node {}  datadir {}",
            d.node_id,
            d.datadir.display()
        );
    }

    say("mining 101 blocks to the buyer's wallet");
    let addr = buyer.json(&["wallet", "address"])["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    btc.mine_to(101, &addr).map_err(|e| e.to_string())?;
    eventually("buyer funded", WAIT, || {
        let b = buyer.json(&["wallet", "balance"]);
        if b["confirmed_sat"].as_u64().unwrap_or(0) > 0 {
            Ok(())
        } else {
            Err(b.to_string())
        }
    });
    show(&buyer, &["wallet", "balance"]);

    say("waiting for both providers' offers (made from the lab's flavors and images) to reach the buyer");
    eventually("offers", WAIT, || {
        let v = buyer.json(&["offers", "list", "--image", "debian-12"]);
        if v.as_array().map_or(0, |a| a.len()) >= 2 {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    show(&buyer, &["offers", "list", "--image", "debian-12"]);

    say("the buyer orders 1 vCPU with debian-12 for one hour, at most 60,000 sats/h, and pays from its wallet");
    let key_dir = root.join("buyer-key");
    std::fs::create_dir_all(&key_dir).map_err(|e| e.to_string())?;
    let key = key_dir.join("id_ed25519");
    let _ = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "testnet-buyer", "-f"])
        .arg(&key)
        .status();
    let pubkey = key.with_extension("pub");
    let l = buyer.json(&[
        "order",
        "--vcpus",
        "1",
        "--image",
        "debian-12",
        "--max-price",
        "60000",
        "--hours",
        "1",
        "--ssh-key",
        pubkey.to_str().unwrap_or_default(),
        "--pay",
    ]);
    let id = l["id"].as_str().unwrap_or_default().to_string();
    println!("    lease {id}\n    invoice {} sat, paid", l["amount_sat"]);
    say("mining a block to confirm the payment");
    btc.mine(1).map_err(|e| e.to_string())?;
    wait_state(&buyer, &id, "running");
    show(&buyer, &["leases", "show", &id]);
    show(&p1, &["leases", "list"]);

    say("the testnet is up. Try, in another terminal:");
    let bin = xov_bin();
    println!(
        "    {} --datadir {} leases list",
        bin.display(),
        buyer.datadir.display()
    );
    println!(
        "    {} --datadir {} wallet balance",
        bin.display(),
        p1.datadir.display()
    );
    println!(
        "    {} --datadir {} offers list",
        bin.display(),
        buyer.datadir.display()
    );
    println!("Ctrl-C stops everything.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    println!("\nstopping");
    let _ = std::fs::remove_file(state_dir().join("pids"));
    drop((p1, p2, buyer));
    let _ = btc.stop();
    Ok(())
}

fn down(lab: bool) -> Result<(), String> {
    if let Ok(pids) = std::fs::read_to_string(state_dir().join("pids")) {
        for pid in pids.lines().filter(|l| !l.is_empty()) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", pid])
                .status();
        }
        let _ = std::fs::remove_file(state_dir().join("pids"));
        println!("stopped the testnet's nodes and bitcoind");
    } else {
        println!("no running testnet recorded");
    }
    if lab {
        let script = OpenStackLab::script_dir().join("down.sh");
        let st = std::process::Command::new("bash")
            .arg(&script)
            .status()
            .map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("{} failed", script.display()));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str).unwrap_or("up") {
        "up" => up(),
        "down" => down(args.iter().any(|a| a == "--lab")),
        _ => {
            eprintln!("usage: xov-testnet [up | down [--lab]]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
