//! Finding the network: real `xov` daemons over real libp2p sockets on 127.0.0.1.
//!
//! A node remembers the peers it reached, so a restart finds the network again without any bootstrap peer
//! (on the internet the seeds may be gone, or the operator's list stale).

mod common;

use std::time::Duration;

use common::*;

const CONVERGE: Duration = Duration::from_secs(60);

fn network(d: &Daemon) -> serde_json::Value {
    d.json(&["status"])["network"].clone()
}

/// The doctor's `peers` check: its fix, when no peer is connected.
fn peers_fix(d: &Daemon) -> String {
    // the doctor exits non-zero when a check fails; its report is on stdout either way
    let out = xov(&d.datadir, &["--json", "doctor"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor's report: {e}: {out:?}"));
    let peers = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "peers")
        .cloned()
        .unwrap_or_else(|| panic!("no peers check: {report}"));
    peers["fix"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_restarted_node_reconnects_to_the_peers_it_reached_without_bootstrap_peers() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Daemon::start(da.path());
    let a_id = a.peer_id();
    // a comes back on the same address after its restart below.
    let a_tcp = a.bootstrap().split("/p2p/").next().unwrap().to_string();
    // Alone, with no bootstrap peer, nothing remembered and mDNS off, the doctor says so.
    let fix = peers_fix(&a);
    assert!(
        fix.contains("this node has no way into the network"),
        "{fix}"
    );
    let b = Daemon::start_with(db.path(), &[("XOV_NETWORK_BOOTSTRAP", a.bootstrap())]);
    eventually("b reaches a and remembers it", CONVERGE, || {
        let n = network(&b);
        if b.is_connected_to(&a_id) && n["known_peers"].as_u64() >= Some(1) {
            Ok(())
        } else {
            Err(n.to_string())
        }
    });
    assert!(b.stop().success());
    // While a is down, the restarted b says its remembered peer did not answer.
    // kept running until the end: b reconnects to it
    let _a = {
        assert!(a.stop().success());
        let b = Daemon::start(db.path());
        eventually("the doctor names the remembered peers", CONVERGE, || {
            let fix = peers_fix(&b);
            if fix.contains("none of the 1 peers remembered from earlier runs answered") {
                Ok(())
            } else {
                Err(fix)
            }
        });
        assert!(b.stop().success());
        Daemon::start_with(da.path(), &[("XOV_NETWORK_LISTEN", a_tcp.clone())])
    };

    // No bootstrap peer, no mDNS: only the store knows where a is.
    let b = Daemon::start(db.path());
    eventually("the restarted b is connected to a again", CONVERGE, || {
        if b.is_connected_to(&a_id) {
            Ok(())
        } else {
            Err(network(&b).to_string())
        }
    });
}

/// A node keeps at most `[network] max_connections`: of six nodes whose only way in is one hub allowing
/// three, three get in and three are refused, before their handshake (the hub counts them: `gate.rs`); an
/// announced external address is what the node tells peers.
#[test]
fn a_node_holds_no_more_connections_than_its_limit() {
    let dh = tempfile::tempdir().unwrap();
    std::fs::write(
        dh.path().join("xov.toml"),
        "[network]\nmax_connections = 3\nmax_incoming = 3\nmax_per_peer = 1\n",
    )
    .unwrap();
    let hub = Daemon::start_with(
        dh.path(),
        &[(
            "XOV_NETWORK_EXTERNAL_ADDRESSES",
            "/ip4/198.51.100.7/tcp/9738".to_string(),
        )],
    );
    assert_eq!(
        network(&hub)["external_addrs"],
        serde_json::json!(["/ip4/198.51.100.7/tcp/9738"])
    );
    let dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let dialers: Vec<Daemon> = dirs
        .iter()
        .map(|d| Daemon::start_with(d.path(), &[("XOV_NETWORK_BOOTSTRAP", hub.bootstrap())]))
        .collect();
    let hub_id = hub.peer_id();
    eventually("three dialers in, the hub full", CONVERGE, || {
        let inside = dialers
            .iter()
            .filter(|d| d.is_connected_to(&hub_id))
            .count();
        let held = network(&hub)["connected_peers"].as_u64().unwrap_or(0);
        if inside == 3 && held == 3 {
            Ok(())
        } else {
            Err(format!("{inside} dialers connected, the hub holds {held}"))
        }
    });
    // The refused ones know no other way in: they stay out, and the hub stays at its limit.
    let outside = dialers
        .iter()
        .filter(|d| network(d)["connected_peers"] == 0)
        .count();
    assert_eq!(outside, 3);
    let hub_net = network(&hub);
    assert_eq!(hub_net["connected_peers"], 3);
    let refused = hub_net["gossip"]["refused_at_caps"].as_u64().unwrap_or(0);
    assert!(
        refused >= 3,
        "the hub refused {refused} connections before their handshake; three dialers stayed out: {hub_net}"
    );
}

/// Seeds: regtest ships none; `[network] seeds` (here `XOV_NETWORK_SEEDS`) replaces the shipped list; a
/// node whose seed answers gets in through it, and when none answers the doctor names the seeds.
#[test]
fn a_node_gets_in_through_its_seeds_and_the_doctor_names_them_when_they_are_silent() {
    let (ds, dn, dq) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let seed = Daemon::start(ds.path());
    assert_eq!(
        network(&seed)["seeds"],
        serde_json::json!([]),
        "regtest ships no seeds"
    );
    let seed_addr = seed.bootstrap();
    let seed_id = seed.peer_id();
    let n = Daemon::start_with(dn.path(), &[("XOV_NETWORK_SEEDS", seed_addr.clone())]);
    assert_eq!(network(&n)["seeds"], serde_json::json!([seed_addr.clone()]));
    eventually("the node gets in through its seed", CONVERGE, || {
        if n.is_connected_to(&seed_id) {
            Ok(())
        } else {
            Err(network(&n).to_string())
        }
    });
    // The seed goes away; a new node with only that seed, nothing remembered, is told the seeds are silent.
    assert!(seed.stop().success());
    let q = Daemon::start_with(dq.path(), &[("XOV_NETWORK_SEEDS", seed_addr.clone())]);
    let fix = peers_fix(&q);
    assert!(
        fix.contains("none of the seeds") && fix.contains(&seed_addr),
        "{fix}"
    );
    drop(n);
}
