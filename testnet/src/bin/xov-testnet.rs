//! `xov-testnet up`: a whole local market on this machine — Bitcoin Core regtest, the OpenStack lab, two
//! provider nodes attached to it and a buyer node — and one lease run end to end while you watch. It stays
//! up until Ctrl-C. `up --real` boots the leased machine for real (the lab's real compute mode, QEMU under
//! software emulation) and logs into it with `xov ssh`; when the machine cannot run that mode it says why
//! and runs on the fake compute driver. `xov-testnet down` stops what an interrupted `up` left behind (`--lab` also the lab).
//!
//! Benchmarks (see docs/benchmarks.md): `gossip-load` (N nodes, offer propagation, bytes, a fixed publish
//! rate), `gossip-sim` (many nodes' network code in this process over libp2p's memory transport: spread,
//! convergence after churn, bytes per node per offer), `lease-timing` (payment confirmation to RUNNING, node vs OpenStack), `idle` (RSS and CPU of an idle
//! node), `store-size` (RocksDB bytes and memory per stored offer) and `restart-time` (time to ready with N
//! stored offers).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use xov_testnet::bitcoind::Bitcoind;
use xov_testnet::node::*;
use xov_testnet::openstack::{LabCleanup, OpenStackLab};
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

fn up(real: bool) -> Result<(), String> {
    let root = state_dir().join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    say("starting Bitcoin Core (regtest)");
    let btc = Bitcoind::start().map_err(|e| e.to_string())?;
    println!("    rpc {}  p2p {}", btc.rpc_url(), btc.p2p_addr());
    say("starting the OpenStack lab (about 20 s warm, 2 min on a fresh machine)");
    let lab = OpenStackLab::ensure().map_err(|e| e.to_string())?;
    println!("    keystone {}  nova {}", lab.auth_url, lab.compute_url);
    // Whatever the providers make in the lab is deleted when this returns (after Ctrl-C, or on an error).
    let cleanup = LabCleanup::new(&lab, "xov-testnet up");
    let real = if real {
        say("starting the lab's real compute mode (libvirt, QEMU/TCG, Neutron's agents; a minute or two the first time)");
        match lab.ensure_real() {
            Ok(r) => {
                println!(
                    "    image {} boots on host {}; floating IPs answer in namespace {}",
                    r.image_name, r.host, r.buyer_ns
                );
                Some(r)
            }
            Err(e) => {
                println!(
                    "    {e}\n    => running on the fake compute driver instead (no machine boots)"
                );
                None
            }
        }
    } else {
        None
    };
    let opts = ProviderOpts {
        glance_image: real.as_ref().map(|r| r.image_name.clone()),
        ssh_user: real.as_ref().map(|r| r.user.clone()),
        ..Default::default()
    };
    say("starting provider 1, provider 2 and a buyer");
    let market = LocalMarket::start_with(&root, &btc, &lab, &opts, &cleanup);
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
    let l = order_one_vcpu(&buyer, &pubkey, &["--pay"]);
    let id = l["id"].as_str().unwrap_or_default().to_string();
    println!("    lease {id}\n    invoice {} sat, paid", l["amount_sat"]);
    say("mining a block to confirm the payment (once it reached bitcoind's mempool)");
    btc.mine_pending(WAIT).map_err(|e| e.to_string())?;
    wait_state(&buyer, &id, "running");
    show(&buyer, &["leases", "show", &id]);
    show(&p1, &["leases", "list"]);

    let ssh_env = match &real {
        Some(r) => {
            say("logging in: `xov ssh LEASE -- uname -a` through the floating IP (once the machine has booted)");
            let wrapper = r.ssh_wrapper(&root).map_err(|e| e.to_string())?;
            let out = eventually("the machine takes the buyer's ssh", WAIT, || {
                let out = buyer
                    .xov_ssh(&wrapper, &id, &["uname", "-a"])
                    .map_err(|e| e.to_string())?;
                if out.status.success() {
                    Ok(out)
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            });
            print!("    {}", String::from_utf8_lossy(&out.stdout));
            format!("XOV_SSH={} ", wrapper.display())
        }
        None => String::new(),
    };

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
    if real.is_some() {
        println!(
            "    {ssh_env}{} --datadir {} ssh {id}     (a shell on the leased machine)",
            bin.display(),
            buyer.datadir.display()
        );
    } else {
        println!(
            "    {} --datadir {} ssh {id} --print     (the lab's machines are fake: nothing answers SSH; `up --real` boots them)",
            bin.display(),
            buyer.datadir.display()
        );
    }
    println!("Ctrl-C stops everything.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    println!("\nstopping");
    {
        // End the lease and let the provider delete its machine before it stops, so the lab keeps nothing of
        // this run (a real machine would go on using CPU).
        show(&buyer, &["lease", "cancel", &id]);
        let gone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_state(&p1, &id, "closed")
        }));
        if gone.is_err() {
            eprintln!("lease {id} did not close; its machine may still run in the lab");
        }
    }
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

const USAGE: &str = "usage: xov-testnet [up [--real] | down [--lab]
  | gossip-load [--nodes 50] [--offers 100] [--rate 100] [--load-secs 10] [--publishers 5]
                [--poll-ms 50] [--load-poll-ms 100] [--idle-secs 10] [--env KEY=VALUE]... [--keep]
  | gossip-sim [--nodes 1000] [--offers 100] [--rate 2] [--churn-per-min 0.05] [--churn-secs 120]
               [--delay-min-ms 10] [--delay-max-ms 150] [--idle-secs 10] [--settle-secs 60] [--poll-ms 20]
               [--max-connections N (default: the node's, 64; 16 above 200 nodes)]
               [--seed 1] [--time-scale 1 (time dilation: every time constant ×k, times reported ÷k)]
               (every node in this process, over libp2p's memory transport; tmpfs by default)
  | lease-timing [--runs 3] [--real] | idle [--secs 60] [--runs 1] | store-size [--offers 10000]
  | restart-time [--offers 100000] [--runs 3]]
every benchmark also takes [--data-root DIR] (where node data dirs go) and [--keep] (keep them)";

/// The value after `name` in `args`, parsed, or `default` when absent.
fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a value\n{USAGE}")),
    }
}

/// Runs a benchmark in a fresh directory under the testnet's state dir (or `--data-root DIR`, e.g. a tmpfs
/// to take the disk out of the measurement), removed afterwards unless `--keep` was given; the report is also
/// written next to it as `<name>-<pid>.txt`.
fn bench_dir(
    name: &str,
    f: impl FnOnce(&std::path::Path) -> Result<String, String>,
) -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let keep = args.iter().any(|a| a == "--keep");
    let base = flag(&args, "--data-root", state_dir())?;
    let root = xov_testnet::footprint::run_dir(&base, name);
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let result = f(&root);
    if let Ok(report) = &result {
        let file = root.with_extension("txt");
        let _ = std::fs::write(&file, report);
        println!("\nreport written to {}", file.display());
    }
    if keep {
        println!("data dirs kept in {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    result.map(|_| ())
}

fn gossip_load(args: &[String]) -> Result<(), String> {
    let env = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "--env")
        .map(|(i, _)| {
            args.get(i + 1)
                .and_then(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--env needs KEY=VALUE\n{USAGE}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let o = |root: &std::path::Path| -> Result<xov_testnet::gossip_load::Opts, String> {
        Ok(xov_testnet::gossip_load::Opts {
            nodes: flag(args, "--nodes", 50)?,
            offers: flag(args, "--offers", 100)?,
            rate: flag(args, "--rate", 100.0)?,
            load_secs: flag(args, "--load-secs", 10.0)?,
            publishers: flag(args, "--publishers", 5)?,
            poll: Duration::from_millis(flag(args, "--poll-ms", 50)?),
            load_poll: Duration::from_millis(flag(args, "--load-poll-ms", 100)?),
            idle_secs: flag(args, "--idle-secs", 10.0)?,
            root: root.to_path_buf(),
            env: env.clone(),
        })
    };
    bench_dir("gossip-load", |root| {
        xov_testnet::gossip_load::run(&o(root)?)
    })
}

/// `gossip-sim`: N nodes in this process (see `xov_testnet::gossip_sim`). The stores go on /dev/shm unless
/// `--data-root` says otherwise: the disk is not what is measured.
fn gossip_sim(args: &[String]) -> Result<(), String> {
    // `XOV_SIM_LOG=libp2p_swarm=debug` (RUST_LOG syntax): the nodes' logs on standard error, to see what
    // they do (every node logs into the one stream; the peer ids tell them apart).
    if let Ok(filter) = std::env::var("XOV_SIM_LOG") {
        let filter = tracing_subscriber::EnvFilter::try_new(&filter)
            .map_err(|e| format!("XOV_SIM_LOG={filter}: {e}"))?;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let all: Vec<String> = std::env::args().collect();
    let shm = std::path::Path::new("/dev/shm");
    let base = (!all.iter().any(|a| a == "--data-root") && shm.is_dir())
        .then(|| shm.join("xov-gossip-sim"));
    let nodes = flag(args, "--nodes", 1000usize)?;
    let ms = |name: &str, default: u64| flag(args, name, default).map(Duration::from_millis);
    let run = |root: &std::path::Path| -> Result<String, String> {
        let o = xov_testnet::gossip_sim::Opts {
            offers: flag(args, "--offers", 100)?,
            rate: flag(args, "--rate", 2.0)?,
            churn_per_min: flag(args, "--churn-per-min", 0.05)?,
            churn_secs: flag(args, "--churn-secs", 120.0)?,
            delay_min: ms("--delay-min-ms", 10)?,
            delay_max: ms("--delay-max-ms", 150)?,
            idle_secs: flag(args, "--idle-secs", 10.0)?,
            settle_secs: flag(args, "--settle-secs", 60.0)?,
            poll: ms("--poll-ms", 20)?,
            seed: flag(args, "--seed", 1)?,
            time_scale: match flag(args, "--time-scale", 1u32)? {
                k @ 1..=1000 => k,
                k => return Err(format!("--time-scale {k}: give a factor from 1 to 1000")),
            },
            // Above 200 nodes the default caps (64) do not fit one machine (65 MiB per node); 16 does
            // (12.9 MiB per node): said in the printed settings, and `--max-connections 64` still asks for them.
            max_connections: match flag(args, "--max-connections", 0u32)? {
                0 if nodes > 200 => Some(16),
                0 => None,
                n => Some(n),
            },
            ..xov_testnet::gossip_sim::Opts::new(nodes, root.to_path_buf())
        };
        let machine = xov_testnet::proc_stats::machine();
        let load = xov_testnet::proc_stats::load_average();
        println!("machine: {machine}\nload average at start: {load}\n{o:?}");
        let s = xov_testnet::gossip_sim::run(&o).map_err(|e| e.to_string())?;
        let text = format!(
            "machine: {machine}\nload average at start: {load}\ncommand: xov-testnet gossip-sim {}\n{}",
            args.join(" "),
            s.text()
        );
        println!("\n{text}");
        Ok(text)
    };
    match base {
        Some(b) => {
            let root = xov_testnet::footprint::run_dir(&b, "gossip-sim");
            std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
            let r = run(&root);
            let _ = std::fs::remove_dir_all(&root);
            if let Ok(report) = &r {
                let file = state_dir().join(format!("gossip-sim-{}.txt", std::process::id()));
                let _ = std::fs::create_dir_all(state_dir());
                let _ = std::fs::write(&file, report);
                println!("report written to {}", file.display());
            }
            r.map(|_| ())
        }
        None => bench_dir("gossip-sim", run),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str).unwrap_or("up") {
        "up" => up(args.iter().any(|a| a == "--real")),
        "down" => down(args.iter().any(|a| a == "--lab")),
        "gossip-load" => gossip_load(&args[1..]),
        "gossip-sim" => gossip_sim(&args[1..]),
        "lease-timing" => flag(&args[1..], "--runs", 3usize).and_then(|runs| {
            let real = args.iter().any(|a| a == "--real");
            bench_dir("lease-timing", |root| {
                xov_testnet::lease_timing::run(runs, real, root)
            })
        }),
        "idle" => flag(&args[1..], "--secs", 60f64).and_then(|secs| {
            let runs = flag(&args[1..], "--runs", 1usize)?;
            bench_dir("idle", |root| {
                xov_testnet::footprint::idle(secs, runs, root)
            })
        }),
        "restart-time" => flag(&args[1..], "--offers", 100_000usize).and_then(|n| {
            let runs = flag(&args[1..], "--runs", 3usize)?;
            bench_dir("restart-time", |root| {
                xov_testnet::restart_time::run(n, runs, root)
            })
        }),
        "store-size" => flag(&args[1..], "--offers", 10_000usize).and_then(|n| {
            bench_dir("store-size", |root| {
                xov_testnet::footprint::store_size(n, root)
            })
        }),
        _ => {
            eprintln!("{USAGE}");
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
