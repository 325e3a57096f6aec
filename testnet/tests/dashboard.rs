//! The operator's and buyer's view, end to end against a testnet (real bitcoind regtest, the real OpenStack
//! lab, a provider and a buyer as `xov` processes):
//!
//! - `xov doctor --json` on the healthy provider and buyer reports every check green;
//! - in headless Chromium (Debian's `chromium`, driven by playwright-core from npm), the buyer opens the
//!   dashboard link, sees the offers, orders, pays the invoice from the wallet page and — by the event stream,
//!   without polling — sees the VM's address; screenshots are kept under `<target>/debug/artifacts/dashboard/`;
//! - with the provider's OpenStack out of reach, `xov doctor` fails and names OpenStack.
//!
//! The lab is shared with other tests running at the same time, so it is not stopped here: the provider reaches
//! Keystone through a TCP proxy owned by this test, and "the lab is stopped" is that proxy closing. The doctor
//! authenticates afresh at each run, so it sees Keystone gone exactly as it would see a stopped lab.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use xov_testnet::bitcoind::Bitcoind;
use xov_testnet::node::*;
use xov_testnet::openstack::{LabCleanup, OpenStackLab};
use xov_testnet::scenario::*;

/// A TCP forwarder to 127.0.0.1:`to` that can be closed, taking its open connections with it.
struct Proxy {
    port: u16,
    closed: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(to: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let closed = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (c, cs) = (closed.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if c.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let mut g = cs.lock().unwrap();
                g.push(client.try_clone().unwrap());
                g.push(server.try_clone().unwrap());
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = into.shutdown(Shutdown::Write);
                    });
                }
            }
            // Dropping the listener here closes the port: new connections are refused.
        });
        Proxy {
            port,
            closed,
            conns,
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // The port refuses connections once the listener is gone.
        eventually(
            "the proxy port to close",
            Duration::from_secs(10),
            || match TcpStream::connect(("127.0.0.1", self.port)) {
                Err(_) => Ok(()),
                Ok(s) => {
                    drop(s);
                    Err("still accepting".into())
                }
            },
        );
    }
}

/// `xov --json doctor`: the report and whether the command exited 0 (no failed check).
fn doctor(d: &Daemon) -> (Value, bool) {
    let out = xov(&d.datadir, &["--json", "doctor"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.success())
}

fn all_green(who: &str, d: &Daemon) -> Value {
    eventually(
        &format!("`xov doctor` all green on the {who}"),
        WAIT,
        || {
            let (r, exit_ok) = doctor(d);
            let bad: Vec<String> = r["checks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["status"] != "ok")
                .map(|c| format!("{}: {} ({})", c["name"], c["detail"], c["status"]))
                .collect();
            if bad.is_empty() && exit_ok && r["healthy"] == true {
                Ok(r)
            } else {
                Err(bad.join("; "))
            }
        },
    )
}

/// playwright-core from npm, installed once into the cache (no browser download: it drives Debian's chromium).
fn playwright_core() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME");
    let prefix = PathBuf::from(home).join(".cache/xov/playwright");
    let module = prefix.join("node_modules/playwright-core");
    if !module.join("package.json").exists() {
        let st = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg("playwright-core@1")
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .status()
            .expect("npm (Debian packages nodejs and npm; `bash testnet/setup.sh` installs them)");
        assert!(st.success(), "npm install playwright-core failed");
    }
    module
}

fn chromium() -> PathBuf {
    let p = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        p.exists(),
        "headless Chromium is missing at {}: install it with `bash testnet/setup.sh` (Debian package chromium) or set CHROMIUM",
        p.display()
    );
    p
}

/// One side of a lease's conversation, short enough to survive a truncated CI log: the record's state and
/// notice counters, its history, and the side's log lines about notices and this lease.
fn conversation(who: &str, d: &Daemon, lease: &str) -> String {
    let l = if lease.is_empty() {
        Value::Null
    } else {
        d.json(&["leases", "show", lease])
    };
    let fields = [
        "state",
        "out_seq",
        "acked_seq",
        "peer_seq",
        "sent_at",
        "status_at",
        "started_at",
    ]
    .map(|f| format!("{f}={}", l[f]))
    .join(" ");
    let history = l["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| format!("  {} {} {}", e["at"], e["state"], e["detail"]))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let short = lease.get(..12).unwrap_or(lease);
    let log: Vec<String> = d
        .log_text()
        .lines()
        .filter(|l| l.contains("notice") || (!short.is_empty() && l.contains(short)))
        .map(strip_ansi)
        .collect();
    let tail = &log[log.len().saturating_sub(40)..];
    format!(
        "{who}'s lease: {fields}\n{history}\n{who}'s log about it ({} lines, last {}):\n{}",
        log.len(),
        tail.len(),
        tail.join("\n")
    )
}

#[test]
fn a_buyer_orders_and_pays_in_the_dashboard_and_doctor_explains_a_stopped_cloud() {
    if xov_testnet::skip_e2e("dashboard") {
        return;
    }
    let chromium = chromium();
    let playwright = playwright_core();
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
    let lab = OpenStackLab::ensure().unwrap_or_else(|e| panic!("{e}"));
    // Deletes what the provider makes in the lab when the test ends, passed or not.
    let cleanup = LabCleanup::new(&lab, "dashboard");
    let keystone = Proxy::start(5000);
    let mut via_proxy = lab.clone();
    via_proxy.auth_url = format!("http://127.0.0.1:{}/v3", keystone.port);

    let root = tempfile::tempdir().unwrap();
    let dir = |n: &str| {
        let d = root.path().join(n);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    // The lease engine logs each notice it sends or drops: what a failure report shows.
    let debug_leases = ("XOV_LOG_LEVEL", "xov_node::lease=debug,info".to_string());
    let provider_dir = dir("provider");
    std::fs::write(
        provider_dir.join("xov.toml"),
        provider_toml(&via_proxy, &btc, PRICE_P1, &cleanup.owner("provider")),
    )
    .unwrap();
    let provider = Daemon::start_with(&provider_dir, std::slice::from_ref(&debug_leases));
    let buyer_dir = dir("buyer");
    std::fs::write(buyer_dir.join("xov.toml"), buyer_toml(&btc)).unwrap();
    let buyer = Daemon::start_with(
        &buyer_dir,
        &[
            ("XOV_NETWORK_BOOTSTRAP", provider.bootstrap()),
            debug_leases.clone(),
        ],
    );
    let market_ready = || {
        eventually("the provider's offer in the buyer's book", WAIT, || {
            let v = buyer.json(&["offers", "list", "--image", "debian-12"]);
            if v.as_array().is_some_and(|a| !a.is_empty()) {
                Ok(())
            } else {
                Err(v.to_string())
            }
        })
    };
    market_ready();
    let addr = buyer.json(&["wallet", "address"])["address"]
        .as_str()
        .unwrap()
        .to_string();
    btc.mine_to(101, &addr).unwrap();
    eventually("buyer funded", WAIT, || {
        let b = buyer.json(&["wallet", "balance"]);
        if b["confirmed_sat"].as_u64().unwrap_or(0) > 0 {
            Ok(())
        } else {
            Err(b.to_string())
        }
    });

    // A healthy node: every check green, on both sides.
    let report = all_green("provider", &provider);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "listen",
        "peers",
        "pools",
        "offers_seen",
        "chain",
        "openstack",
        "clock",
        "wallet",
    ] {
        assert!(names.contains(&n), "doctor has no {n} check: {names:?}");
    }
    let seen = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "offers_seen")
        .unwrap();
    assert!(
        seen["detail"].as_str().unwrap().contains("peers asked"),
        "the offers check asked peers: {seen}"
    );
    all_green("buyer", &buyer);

    // The browser flow.
    let shots = xov_bin()
        .parent()
        .unwrap()
        .join("artifacts")
        .join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let url = buyer.json(&["dashboard"])["url"]
        .as_str()
        .unwrap()
        .to_string();
    let key_dir = tempfile::tempdir().unwrap();
    let key = std::fs::read_to_string(ssh_key(key_dir.path())).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/flow.js");
    let mut child = Command::new("node")
        .arg(&script)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", &chromium)
        .env("XOV_DASHBOARD_URL", &url)
        .env("XOV_SSH_KEY", key.trim())
        .env("XOV_SHOTS", &shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (Debian package nodejs) runs the browser script");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_text = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut lease = String::new();
    let mut vm = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(400);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                eprintln!("browser: {l}");
                if let Some(id) = l.strip_prefix("LEASE ") {
                    lease = id.to_string();
                } else if l.starts_with("PAID ") {
                    // The provider wants one confirmation: the block the page then waits for.
                    wait_state(&provider, &lease, "payment_seen");
                    btc.mine(1).unwrap();
                } else if let Some(a) = l.strip_prefix("VM ") {
                    vm = a.to_string();
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!(
                    "the browser flow timed out; its log:\n{}",
                    err_text.join().unwrap()
                );
            }
        }
    }
    let status = child.wait().unwrap();
    let log = err_text.join().unwrap();
    if !status.success() {
        panic!(
            "the browser flow failed:\n{log}\n{}\n{}",
            conversation("buyer", &buyer, &lease),
            conversation("provider", &provider, &lease)
        );
    }
    eprintln!("dashboard screenshots: {}", shots.display());
    for s in [
        "1-offers.png",
        "2-invoice.png",
        "3-paid.png",
        "4-running.png",
    ] {
        assert!(shots.join(s).exists(), "screenshot {s} missing");
    }
    // What the page showed is what the node knows: the lease runs on that machine.
    let l = wait_state(&buyer, &lease, "running");
    let addrs: Vec<&str> = l["instance"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    if addrs.is_empty() {
        // The lab boots machines without a network (`network = "none"`): the page names the server instead.
        let server = l["instance"]["server_id"].as_str().unwrap();
        assert_eq!(vm, format!("server {server}"), "the page shows the VM");
    } else {
        assert_eq!(vm, addrs.join(", "), "the page shows the VM's address");
    }

    // End the lease so the shared lab keeps no machine of ours (it is deleted after the provider's hold).
    buyer.json(&["lease", "cancel", &lease]);
    wait_state(&provider, &lease, "closed");

    // The lab goes away: the doctor fails, names OpenStack and says what to do; nothing else fails.
    keystone.close();
    let (r, exit_ok) = doctor(&provider);
    assert!(!exit_ok, "doctor exits non-zero when a check fails: {r}");
    assert_eq!(r["healthy"], false);
    let failed: Vec<&Value> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert_eq!(failed.len(), 1, "only the cloud is broken: {failed:?}");
    let os = failed[0];
    assert_eq!(os["name"], "openstack", "{os}");
    assert!(
        os["detail"].as_str().unwrap().contains("OpenStack")
            && os["detail"].as_str().unwrap().contains(&via_proxy.auth_url),
        "{os}"
    );
    assert!(
        os["fix"].as_str().unwrap().contains("Keystone"),
        "a fix is given: {os}"
    );
    let human = xov(&provider.datadir, &["doctor"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("openstack")),
        "{text}"
    );
}
