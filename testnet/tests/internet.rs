//! Strangers on the internet find each other (issue 18), the parts that run here so far.
//!
//! Finding the network from a seed *name*: a new node whose only configuration is `/dnsaddr/<name>` looks up
//! the name's `_dnsaddr` TXT records and dials the peers they list. The name is answered by a dnsmasq the
//! test starts on 127.77.0.1:53 (a loopback address of its own), and the new node sees a resolv.conf naming
//! that server through a private mount namespace (`unshare -m`), so nothing is asked of any other resolver.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use xov_testnet::node::*;

const CONVERGE: Duration = Duration::from_secs(60);
const DNS_ADDR: &str = "127.77.0.1";

/// A dnsmasq answering only the TXT records given, stopped on drop.
struct Dns(Child);

impl Dns {
    fn start(txt: &[(&str, String)]) -> Dns {
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address",
            DNS_ADDR,
            "--port",
            "53",
            "--log-queries",
        ]);
        for (name, value) in txt {
            cmd.arg(format!("--txt-record={name},{value}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base) answers the seed name");
        Dns(child)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_new_node_finds_the_network_from_a_dnsaddr_seed_name() {
    if xov_testnet::skip_e2e("internet: dnsaddr seed") {
        return;
    }
    let seed_dir = tempfile::tempdir().unwrap();
    let seed = Daemon::start(seed_dir.path());
    let seed_id = seed.peer_id();
    // The seed name lists the seed's TCP address with its peer id, as libp2p's dnsaddr expects.
    let _dns = Dns::start(&[(
        "_dnsaddr.seed.xov.test",
        format!("dnsaddr={}", seed.bootstrap()),
    )]);
    let etc = tempfile::tempdir().unwrap();
    let resolv = etc.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {DNS_ADDR}\n")).unwrap();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec \"$0\" \"$@\"",
        resolv.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let newcomer = Daemon::start_via(
        &["unshare", "--mount", "sh", "-c", &script],
        dir.path(),
        &[(
            "XOV_NETWORK_BOOTSTRAP",
            "/dnsaddr/seed.xov.test".to_string(),
        )],
    );
    eventually(
        "the newcomer reaches the seed through its name",
        CONVERGE,
        || {
            if newcomer.is_connected_to(&seed_id) {
                Ok(())
            } else {
                Err(newcomer.json(&["status"])["network"].to_string())
            }
        },
    );
}
