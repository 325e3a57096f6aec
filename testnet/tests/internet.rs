//! Strangers on the internet find each other (issue 18).
//!
//! Behind NAT (`strangers_behind_nat_...`): see [`xov_testnet::nat_world`] for the world (namespaces, NAT
//! routers by nftables, forwarders to bitcoind and the lab); the nodes find, reach and lease from each other
//! with nothing configured but the seed's address.
//!
//! Finding the network from a seed *name*: a new node whose only configuration is `/dnsaddr/<name>` looks up
//! the name's `_dnsaddr` TXT records and dials the peers they list. The name is answered by a dnsmasq the
//! test starts on 127.77.0.1:53 (a loopback address of its own), and the new node sees a resolv.conf naming
//! that server through a private mount namespace (`unshare -m`), so nothing is asked of any other resolver.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use xov_testnet::nat_world::{Host, NatWorld};
use xov_testnet::node::*;
use xov_testnet::scenario::*;

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

/// The NAT world's nodes listen on this port, each in its own namespace.
const PORT: u16 = 9738;

fn peer_of(d: &Daemon) -> String {
    d.p2p[0].rsplit('/').next().unwrap_or_default().to_string()
}

/// A node inside `host` of the world, with `toml` as its config and the seed (if any) as its only peer.
fn start_in(
    world: &NatWorld,
    host: Host,
    dir: &std::path::Path,
    toml: &str,
    seed: Option<&str>,
) -> Daemon {
    std::fs::write(dir.join("xov.toml"), toml).unwrap();
    let mut env = vec![
        ("XOV_NETWORK_LISTEN", format!("/ip4/0.0.0.0/tcp/{PORT}")),
        ("XOV_NETWORK_MDNS", "false".to_string()),
    ];
    if let Ok(level) = std::env::var("XOV_TEST_LOG") {
        env.push(("XOV_LOG_LEVEL", level));
    }
    if let Some(s) = seed {
        env.push(("XOV_NETWORK_BOOTSTRAP", s.to_string()));
    }
    Daemon::start_inside(&world.wrapper(host), dir, &env)
}

/// The connections `d` has to the peer `peer` (from `xov peers`): (address, relayed).
fn connections(d: &Daemon, peer: &str) -> Vec<(String, bool)> {
    d.json(&["peers"])
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["peer_id"] == peer)
        .flat_map(|p| p["connections"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["address"].as_str().unwrap_or_default().to_string(),
                c["relayed"] == true,
            )
        })
        .collect()
}

fn receipt_of(closed: &serde_json::Value) -> Option<serde_json::Value> {
    closed["history"]
        .as_array()?
        .iter()
        .find_map(|s| s["detail"].as_str().filter(|d| d.starts_with("receipt ")))
        .and_then(|r| serde_json::from_str(r.trim_start_matches("receipt ")).ok())
}

/// Sats each buyer pays: 180 s of machine at PRICE_P1 (36,000 sats/h), enough to see it running after the
/// connection checks; the buyers cancel then.
const PAID: u64 = 1800;

/// Waits until `d` sees the lease's machine up (running, or already warned or in grace: the lease is short)
/// with an address, and returns the lease.
fn machine_of(d: &Daemon, id: &str) -> serde_json::Value {
    eventually(
        &format!("the machine of lease {} seen by {}", &id[..12], d.node_id),
        WAIT,
        || {
            let l = d.json(&["leases", "show", id]);
            let up = matches!(l["state"].as_str(), Some("running" | "warned" | "grace"));
            if up && l["instance"]["addresses"][0].as_str().is_some() {
                Ok(l)
            } else {
                Err(format!(
                    "{} {} ({})",
                    l["state"], l["instance"], l["history"]
                ))
            }
        },
    )
}

/// Issue 18's world: a seed and a public node on "the internet", a provider behind a home NAT, one buyer
/// behind another home NAT and one behind a symmetric NAT. Nothing is configured but the seed's address.
#[test]
fn strangers_behind_nat_find_each_other_through_a_seed_and_lease() {
    let Some((btc, lab, cleanup)) = real_parts("internet: NAT world") else {
        return;
    };
    let mut ports = vec![btc.rpc_port, btc.p2p_port];
    ports.extend(xov_testnet::openstack::PUBLIC_PORTS);
    let world = NatWorld::create(&ports).unwrap_or_else(|e| panic!("{e}"));
    let root = tempfile::Builder::new()
        .disable_cleanup(std::env::var("XOV_TEST_LOG").is_ok())
        .tempdir()
        .unwrap();
    eprintln!("node data under {}", root.path().display());
    let no_wallet = "[wallet]\nenabled = false\n";

    let seed = start_in(
        &world,
        Host::Seed,
        &subdir(root.path(), "seed"),
        no_wallet,
        None,
    );
    let seed_addr = format!("/ip4/{}/tcp/{PORT}/p2p/{}", Host::Seed.ip(), peer_of(&seed));
    let public = start_in(
        &world,
        Host::Public,
        &subdir(root.path(), "public"),
        no_wallet,
        Some(&seed_addr),
    );
    let provider = start_in(
        &world,
        Host::BehindConeA,
        &subdir(root.path(), "provider"),
        &provider_toml(&lab, &btc, PRICE_P1, &cleanup.owner("provider")),
        Some(&seed_addr),
    );
    let buyer_a = start_in(
        &world,
        Host::BehindConeB,
        &subdir(root.path(), "buyer-a"),
        &buyer_toml(&btc),
        Some(&seed_addr),
    );
    let buyer_s = start_in(
        &world,
        Host::BehindSymmetric,
        &subdir(root.path(), "buyer-s"),
        &buyer_toml(&btc),
        Some(&seed_addr),
    );
    let provider_peer = peer_of(&provider);

    // Reachability as each node found it for itself (AutoNAT v2 dial-backs): the internet hosts are
    // public and serve the DHT; the hosts behind NAT are private and hold relay slots.
    for (d, name, want) in [
        (&seed, "seed", "public"),
        (&public, "public node", "public"),
        (&provider, "provider behind NAT A", "private"),
        (&buyer_a, "buyer behind NAT B", "private"),
        (&buyer_s, "buyer behind the symmetric NAT", "private"),
    ] {
        eventually(
            &format!("the {name} finds itself {want}"),
            CONVERGE * 2,
            || {
                let n = d.json(&["status"])["network"].clone();
                let relays = n["relays"].as_array().map_or(0, |r| r.len());
                if n["reachability"] == want && (want == "public" || relays > 0) {
                    Ok(())
                } else {
                    Err(n.to_string())
                }
            },
        );
    }

    // Both buyers find the provider's offer through the seed.
    for b in [&buyer_a, &buyer_s] {
        wait_any_offer(b);
        fund(b, &btc);
    }

    // Both order and pay; the provider answers through whatever path the network found.
    let keys = tempfile::tempdir().unwrap();
    let key_file = ssh_key(keys.path());
    let mut leases = Vec::new();
    for b in [&buyer_a, &buyer_s] {
        let l = order_one_vcpu(b, &key_file, &[]);
        assert_eq!(l["state"], "invoiced", "{l}");
        let id = l["id"].as_str().unwrap().to_string();
        // PAID sats at PRICE_P1: three minutes of machine, enough to see it running after the checks below.
        let pay_to = l["pay_address"].as_str().unwrap().to_string();
        b.json(&["wallet", "send", &pay_to, &PAID.to_string()]);
        wait_state(&provider, &id, "payment_seen");
        leases.push(id);
    }

    // The cone-NAT buyer's connection to the provider was punched through: direct, the relayed one closed.
    let direct = eventually(
        "buyer A talks to the provider over a direct connection",
        CONVERGE * 2,
        || {
            let c = connections(&buyer_a, &provider_peer);
            if !c.is_empty() && c.iter().all(|(_, relayed)| !relayed) {
                Ok(c)
            } else {
                Err(format!("{c:?}"))
            }
        },
    );
    assert!(
        direct
            .iter()
            .any(|(a, _)| a.contains(Host::BehindConeA.public_ip())),
        "direct means to NAT A's public address: {direct:?}"
    );
    assert!(
        buyer_a.json(&["status"])["network"]["gossip"]["hole_punches"]
            .as_u64()
            .unwrap_or(0)
            + provider.json(&["status"])["network"]["gossip"]["hole_punches"]
                .as_u64()
                .unwrap_or(0)
            >= 1,
        "a hole punch succeeded"
    );
    // The symmetric-NAT buyer's traffic goes through a relay: every connection to the provider is relayed.
    let relayed = connections(&buyer_s, &provider_peer);
    assert!(
        !relayed.is_empty()
            && relayed
                .iter()
                .all(|(a, r)| *r && a.contains("/p2p-circuit")),
        "the symmetric-NAT buyer reaches the provider only through a relay: {relayed:?}"
    );

    // Buyer A goes offline (its node stops) after paying; the block confirms both payments meanwhile.
    let buyer_a_dir = buyer_a.datadir.clone();
    assert!(buyer_a.stop().success());
    btc.mine(1).unwrap();
    for id in &leases {
        machine_of(&provider, id);
    }
    // The symmetric-NAT buyer learns its machine's details through the relay.
    machine_of(&buyer_s, &leases[1]);

    // Buyer A comes back (same data, no other configuration): it still gets its machine's details.
    let buyer_a = start_in(
        &world,
        Host::BehindConeB,
        &buyer_a_dir,
        &buyer_toml(&btc),
        Some(&seed_addr),
    );
    machine_of(&buyer_a, &leases[0]);

    // Each buyer ends its lease (over the direct connection, and over the relay); each then holds the
    // provider's receipt, and the provider the buyer's.
    for (b, id) in [(&buyer_a, &leases[0]), (&buyer_s, &leases[1])] {
        b.json(&["lease", "cancel", id]);
        let closed = wait_state(b, id, "closed");
        let r = receipt_of(&closed).unwrap_or_else(|| panic!("a receipt in {closed}"));
        assert_eq!(r["paid_sat"], PAID);
        assert_eq!(r["buyer"], b.node_id.as_str());
        assert_eq!(r["provider"], provider.node_id.as_str());
        eventually(
            "the provider holds the buyer's countersigned receipt",
            WAIT,
            || {
                let h = provider.json(&["leases", "show", id])["history"].to_string();
                if h.contains("buyer countersigned receipt") {
                    Ok(())
                } else {
                    Err(h)
                }
            },
        );
    }
    drop((seed, public));
}
