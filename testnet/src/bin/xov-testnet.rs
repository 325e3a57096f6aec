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
    say("starting provider 1, provider 2 and a buyer");
    let market = LocalMarket::start(&root, &btc, &lab);
    let pids: Vec<String> = [market.p1.pid(), market.p2.pid(), market.buyer.pid()]
        .into_iter()
        .map(|p| p.to_string())
        .chain(btc.pid().map(|p| p.to_string()))
        .collect();
    let _ = std::fs::write(state_dir().join("pids"), pids.join("\n"));
    for (name, d) in [
        ("provider-1", &market.p1),
        ("provider-2", &market.p2),
        ("buyer", &market.buyer),
    ] {
        println!(
            "    {name:<10} node {}  datadir {}",
            d.node_id,
            d.datadir.display()
        );
    }
    say("mining 101 blocks to the buyer's wallet");
    market.fund_buyer(&btc);
    show(&market.buyer, &["wallet", "balance"]);
    say("waiting for both providers' offers (made from the lab's flavors and images) to reach the buyer");
    market.wait_offers();
    show(&market.buyer, &["offers", "list", "--image", "debian-12"]);
    let LocalMarket { p1, p2, buyer } = market;

    say("the buyer orders 1 vCPU with debian-12 for one hour, at most 60,000 sats/h, and pays from its wallet");
    let pubkey = ssh_key(&root);
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
