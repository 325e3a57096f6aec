//! Pools and offer gossip over real libp2p sockets on 127.0.0.1: many `xov` daemons, each its own process,
//! plus in-test peers built from the node's own network code that misbehave on purpose.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(90);

/// (provider, offer id) -> sequence of every offer a node holds in `pool` (all pools when None).
fn book(d: &Daemon, pool: Option<&str>) -> Result<BTreeMap<(String, u64), u64>, String> {
    let mut args = vec!["offers", "list", "--limit", "0"];
    if let Some(p) = pool {
        args.extend_from_slice(&["--pool", p]);
    }
    let out = xov(&d.datadir, &[&["--json"], args.as_slice()].concat());
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v.as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                (
                    o["provider"].as_str().unwrap().to_string(),
                    o["offer_id"].as_u64().unwrap(),
                ),
                o["sequence"].as_u64().unwrap(),
            )
        })
        .collect())
}

/// Offers of `pool_id` in a node's whole book (works whether or not the node knows the pool).
fn offers_of_pool(d: &Daemon, pool_id: &str) -> Result<usize, String> {
    let out = xov(&d.datadir, &["--json", "offers", "list", "--limit", "0"]);
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v.as_array()
        .unwrap()
        .iter()
        .filter(|o| o["pool"] == pool_id)
        .count())
}

fn publish(d: &Daemon, pool: &str, vcpus: u32, price: u64, offer_id: Option<u64>) -> Value {
    let (v, p) = (vcpus.to_string(), price.to_string());
    let mut args = vec![
        "offer",
        "publish",
        "--pool",
        pool,
        "--vcpus",
        &v,
        "--ram",
        "2048",
        "--disk",
        "20",
        "--image",
        "debian-12",
        "--price",
        &p,
        "--country",
        "DE",
    ];
    let id;
    if let Some(i) = offer_id {
        id = i.to_string();
        args.extend_from_slice(&["--offer-id", &id]);
    }
    d.json(&args)
}

fn key_of(offer: &Value) -> ((String, u64), u64) {
    (
        (
            offer["provider"].as_str().unwrap().to_string(),
            offer["offer_id"].as_u64().unwrap(),
        ),
        offer["sequence"].as_u64().unwrap(),
    )
}

fn start_chain(
    dirs: &[tempfile::TempDir],
    extra_links: impl Fn(usize) -> Option<usize>,
) -> Vec<Daemon> {
    let mut nodes: Vec<Daemon> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut boot: Vec<String> = Vec::new();
        if i > 0 {
            boot.push(nodes[i - 1].bootstrap());
        }
        if let Some(j) = extra_links(i) {
            if j < i && j + 1 != i {
                boot.push(nodes[j].bootstrap());
            }
        }
        nodes.push(Daemon::start_with(
            dir.path(),
            &[("XOV_NETWORK_BOOTSTRAP", boot.join(","))],
        ));
    }
    nodes
}

fn dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n).map(|_| tempfile::tempdir().unwrap()).collect()
}

#[test]
fn twelve_nodes_in_two_pools_converge_and_outsiders_hold_nothing() {
    let dirs = dirs(12);
    // A chain, plus one seeded pseudo-random extra link per node.
    let nodes = start_chain(&dirs, |i| if i > 1 { Some((i * 7 + 3) % i) } else { None });
    let alpha = nodes[0].json(&["pool", "create", "alpha"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let beta = nodes[1].json(&["pool", "create", "beta", "--min-price-step", "10"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Charters spread to every node (gossip on the charters topic, or the charter pull on connect).
    for d in &nodes {
        eventually("both charters known everywhere", CONVERGE, || {
            let pools = d.json(&["pool", "list"]);
            let ids: Vec<&str> = pools
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap())
                .collect();
            if ids.contains(&alpha.as_str()) && ids.contains(&beta.as_str()) {
                Ok(())
            } else {
                Err(format!("{ids:?}"))
            }
        });
    }
    let in_alpha = [0usize, 2, 3, 4, 6, 8, 10];
    let in_beta = [0usize, 1, 3, 5, 7, 9, 11];
    for &i in &in_alpha[1..] {
        nodes[i].json(&["pool", "join", &alpha]);
    }
    for &i in &in_beta[..] {
        if i != 1 {
            nodes[i].json(&["pool", "join", "beta"]);
        }
    }

    let mut expect_alpha = BTreeMap::new();
    let mut expect_beta = BTreeMap::new();
    let a1 = publish(&nodes[2], &alpha, 2, 500, None);
    let a2 = publish(&nodes[2], &alpha, 4, 900, None);
    let a3 = publish(&nodes[2], &alpha, 8, 1500, None);
    let a4 = publish(&nodes[8], &alpha, 1, 100, None);
    let b1 = publish(&nodes[5], &beta, 2, 600, None);
    let b2 = publish(&nodes[5], &beta, 16, 3000, None);
    // Supersede one, withdraw one.
    let a1b = publish(
        &nodes[2],
        &alpha,
        2,
        450,
        Some(a1["offer_id"].as_u64().unwrap()),
    );
    assert!(a1b["sequence"].as_u64() > a1["sequence"].as_u64());
    nodes[5].json(&[
        "offer",
        "withdraw",
        &b2["offer_id"].as_u64().unwrap().to_string(),
    ]);
    for o in [&a1b, &a2, &a3, &a4] {
        let (k, s) = key_of(o);
        expect_alpha.insert(k, s);
    }
    let (k, s) = key_of(&b1);
    expect_beta.insert(k, s);

    for (i, d) in nodes.iter().enumerate() {
        eventually(
            &format!("node {i} holds each pool's book iff it is a member"),
            CONVERGE,
            || {
                let a = if in_alpha.contains(&i) {
                    book(d, Some(&alpha))?
                } else {
                    BTreeMap::new()
                };
                let b = if in_beta.contains(&i) {
                    book(d, Some(&beta))?
                } else {
                    BTreeMap::new()
                };
                let outsider_ok = (in_alpha.contains(&i) || offers_of_pool(d, &alpha)? == 0)
                    && (in_beta.contains(&i) || offers_of_pool(d, &beta)? == 0);
                if (!in_alpha.contains(&i) || a == expect_alpha)
                    && (!in_beta.contains(&i) || b == expect_beta)
                    && outsider_ok
                {
                    Ok(())
                } else {
                    Err(format!(
                        "alpha {a:?}\nbeta {b:?}\noutsider_ok {outsider_ok}"
                    ))
                }
            },
        );
    }
    // Pool listings show members seen and offer counts.
    let pools = nodes[3].json(&["pool", "list"]);
    let alpha_view = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == alpha.as_str())
        .unwrap();
    assert_eq!(alpha_view["joined"], true);
    assert_eq!(alpha_view["offers"], 4);
    assert!(alpha_view["members_seen"].as_u64().unwrap() >= 1);
}

#[test]
fn a_late_joiner_and_a_restarted_node_converge_by_pull() {
    let dirs = dirs(5);
    let mut nodes = start_chain(&dirs[..4], |_| None);
    let pool = "public";
    let o1 = publish(&nodes[1], pool, 2, 400, None);
    let o2 = publish(&nodes[1], pool, 4, 800, None);
    let o3 = publish(&nodes[1], pool, 8, 1600, None);
    let reference = |d: &Daemon| book(d, Some(pool));
    let want: BTreeMap<_, _> = [&o1, &o2, &o3].iter().map(|o| key_of(o)).collect();
    for d in &nodes {
        eventually("first book everywhere", CONVERGE, || match reference(d)? {
            b if b == want => Ok(()),
            b => Err(format!("{b:?}")),
        });
    }

    // A node that was not there when the offers were gossiped gets them by pulling.
    let late = Daemon::start_with(
        dirs[4].path(),
        &[("XOV_NETWORK_BOOTSTRAP", nodes[3].bootstrap())],
    );
    eventually(
        "late joiner pulled the book",
        CONVERGE,
        || match reference(&late)? {
            b if b == want => Ok(()),
            b => Err(format!("{b:?}")),
        },
    );
    let status = late.json(&["status"]);
    assert!(
        status["network"]["gossip"]["synced"].as_u64().unwrap() >= 3,
        "{status}"
    );

    // Node 2 goes down; the market moves on without it.
    let down = nodes.remove(2);
    assert!(down.stop().success());
    let o2b = publish(
        &nodes[1],
        pool,
        4,
        700,
        Some(o2["offer_id"].as_u64().unwrap()),
    );
    nodes[1].json(&[
        "offer",
        "withdraw",
        &o3["offer_id"].as_u64().unwrap().to_string(),
    ]);
    let o4 = publish(&nodes[1], pool, 1, 90, None);
    let want2: BTreeMap<_, _> = [&o1, &o2b, &o4].iter().map(|o| key_of(o)).collect();

    // Restarted from its data dir it serves its stored book at once, then catches up by pull.
    let back = Daemon::start_with(
        dirs[2].path(),
        &[("XOV_NETWORK_BOOTSTRAP", nodes[0].bootstrap())],
    );
    let at_once = reference(&back).unwrap();
    assert!(
        at_once.contains_key(&key_of(&o1).0),
        "stored offers are served before any sync: {at_once:?}"
    );
    eventually("restarted node caught up", CONVERGE, || {
        match reference(&back)? {
            b if b == want2 => Ok(()),
            b => Err(format!("{b:?}")),
        }
    });
}

#[test]
fn killing_any_one_node_does_not_stop_the_others_converging() {
    let dirs = dirs(6);
    let mut nodes: Vec<Option<Daemon>> =
        start_chain(&dirs, |_| None).into_iter().map(Some).collect();
    // Discovery fills in beyond the chain.
    for d in nodes.iter().flatten() {
        eventually("each node has at least 2 peers", CONVERGE, || {
            let n = d.json(&["status"])["network"]["connected_peers"]
                .as_u64()
                .unwrap();
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{n} peers"))
            }
        });
    }
    let mut want = BTreeMap::new();
    // Kill the bootstrap node, then a node in the middle of the chain; after each, a new offer reaches all.
    for (victim, publisher) in [(0usize, 3usize), (2, 5)] {
        nodes[victim].take().unwrap().kill();
        let o = publish(
            nodes[publisher].as_ref().unwrap(),
            "public",
            2,
            300 + victim as u64,
            None,
        );
        let (k, s) = key_of(&o);
        want.insert(k, s);
        for (i, d) in nodes.iter().enumerate() {
            let Some(d) = d else { continue };
            eventually(
                &format!("node {i} converged after killing node {victim}"),
                CONVERGE,
                || match book(d, Some("public"))? {
                    b if b == want => Ok(()),
                    b => Err(format!("{b:?}")),
                },
            );
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn gossip(d: &Daemon) -> Value {
    d.json(&["status"])["network"]["gossip"].clone()
}

fn peer<'a>(peers: &'a Value, id: &str) -> Option<&'a Value> {
    peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == id)
}

/// Waits until `a` rejected one more message and penalised `bad` for it; returns the new rejected count.
fn rejected_and_penalised(
    a: &Daemon,
    bad: &adversary::Adversary,
    rejected_before: u64,
    what: &str,
) -> u64 {
    let id = bad.peer_id.to_string();
    tokio::task::block_in_place(|| {
        eventually(
            &format!("{what} message rejected and its sender penalised"),
            CONVERGE,
            || {
                let rejected = gossip(a)["rejected"].as_u64().unwrap();
                let peers = a.json(&["peers"]);
                let p = peer(&peers, &id).ok_or("adversary not in peer list")?;
                let score = p["gossip_score"].as_f64().unwrap_or(0.0);
                let banned = p["banned"].as_bool().unwrap_or(false);
                if rejected > rejected_before
                    && (banned || (p["penalty"].as_u64().unwrap() > 0 && score < 0.0))
                {
                    Ok(rejected)
                } else {
                    Err(format!("rejected {rejected}, peer {p}"))
                }
            },
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossiped_receipts_count_in_every_member_and_forged_or_double_counted_ones_are_penalised() {
    use xov_protocol::{public_charter, Chain, Keypair, MessageId, ProviderReceipt, Receipt};
    let dirs = dirs(3);
    let nodes = tokio::task::block_in_place(|| start_chain(&dirs, |_| None));
    let a = &nodes[0];
    let pool = public_charter(Chain::REGTEST).body().pool_id();
    let t = now();
    let (provider, buyer) = (
        Keypair::from_secret_bytes(&[51; 32]),
        Keypair::from_secret_bytes(&[52; 32]),
    );
    let receipt = |paid: u64| {
        let r = Receipt {
            lease_id: MessageId([9; 32]),
            pool,
            provider: provider.node_id(),
            buyer: buyer.node_id(),
            started_at: t - 900,
            ended_at: t - 30,
            paid_sats: paid,
            refunded_sats: 0,
        };
        ProviderReceipt::sign(r, &provider)
            .countersign(&buyer)
            .unwrap()
            .to_bytes()
    };
    let trust = |d: &Daemon| d.json(&["trust", "show", &buyer.node_id().to_string()]);

    // A genuine receipt heard by A reaches every member and counts for the buyer there.
    let relay = adversary::Adversary::connect(&a.bootstrap(), pool).await;
    relay.send(receipt(4000));
    tokio::task::block_in_place(|| {
        for d in &nodes {
            eventually("the receipt counts in every member", CONVERGE, || {
                let t = trust(d);
                match t["report"]["receipts_as_buyer"].as_u64() {
                    Some(1) => Ok(()),
                    _ => Err(t.to_string()),
                }
            });
        }
    });

    // A forged one (the buyer's signature broken) and a second, different receipt for the same lease are
    // rejected, their senders penalised; the double-counted lease then counts for nobody.
    let mut rejected = gossip(a)["rejected"].as_u64().unwrap();
    let mut forged = receipt(4000);
    *forged.last_mut().unwrap() ^= 0x55;
    let forger = adversary::Adversary::connect(&a.bootstrap(), pool).await;
    forger.send(forged);
    rejected = rejected_and_penalised(a, &forger, rejected, "forged receipt");
    let doubler = adversary::Adversary::connect(&a.bootstrap(), pool).await;
    doubler.send(receipt(40_000));
    rejected_and_penalised(a, &doubler, rejected, "double-counted receipt");
    let t = tokio::task::block_in_place(|| trust(a));
    assert_eq!(t["report"]["conflicted_receipts"], 1, "{t}");
    assert_eq!(t["report"]["receipts_as_buyer"], 0, "{t}");

    // A node that joins later learns the receipt gossiped before it came, from its peers' book sync: the one
    // from B (which never saw the double count) counts; A hands over nothing of the conflicted lease.
    let late_dir = tempfile::tempdir().unwrap();
    let late = tokio::task::block_in_place(|| {
        Daemon::start_with(
            late_dir.path(),
            &[("XOV_NETWORK_BOOTSTRAP", nodes[1].bootstrap())],
        )
    });
    tokio::task::block_in_place(|| {
        eventually(
            "the late joiner holds the earlier receipt",
            CONVERGE,
            || {
                let t = trust(&late);
                match t["report"]["receipts_as_buyer"].as_u64() {
                    Some(1) => Ok(()),
                    _ => Err(t.to_string()),
                }
            },
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_oversized_and_garbage_gossip_is_rejected_and_penalised_and_stale_versions_are_not(
) {
    use xov_protocol::{public_charter, Chain, Keypair, Signed};
    let dirs = dirs(3);
    let nodes = tokio::task::block_in_place(|| start_chain(&dirs, |_| None));
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let pool = public_charter(Chain::REGTEST).body().pool_id();
    let t = now();

    // One misbehaving peer per kind of abuse, so that gossipsub's graylisting of the first does not hide the
    // others; each connects to node A only.
    let provider = Keypair::from_secret_bytes(&[42; 32]);
    let liar = Keypair::from_secret_bytes(&[43; 32]);
    let forged =
        Signed::sign(signed_offer(&provider, 10, t - 10, t + 3000, pool), &liar).to_bytes();
    let expired = Signed::sign(
        signed_offer(&provider, 11, t - 4000, t - 600, pool),
        &provider,
    )
    .to_bytes();
    let mut oversized = vec![1u8, 1];
    oversized.extend_from_slice(&20_000u32.to_be_bytes());
    oversized.extend(std::iter::repeat_n(7u8, 20_000 + 64));
    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 31 % 251) as u8).collect();
    // Replay: a newer version (created 200 s ago) is accepted first; then the older one comes again.
    let v2 = Signed::sign(
        signed_offer(&provider, 2, t - 200, t + 3000, pool),
        &provider,
    )
    .to_bytes();
    let v1 = Signed::sign(
        signed_offer(&provider, 1, t - 300, t + 3000, pool),
        &provider,
    )
    .to_bytes();

    let honest_relay = adversary::Adversary::connect(&a.bootstrap(), pool).await;
    honest_relay.send(v2);
    tokio::task::block_in_place(|| {
        for d in &nodes {
            eventually(
                "a valid offer from an in-test peer reaches every node",
                CONVERGE,
                || match book(d, Some("public"))?.get(&(provider.node_id().to_string(), 1)) {
                    Some(2) => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            );
        }
    });

    let mut rejected_before = gossip(a)["rejected"].as_u64().unwrap();
    for (what, bytes) in [
        ("forged", forged),
        ("expired", expired),
        ("oversized", oversized),
        ("garbage", garbage),
    ] {
        let bad = adversary::Adversary::connect(&a.bootstrap(), pool).await;
        bad.send(bytes);
        rejected_before = rejected_and_penalised(a, &bad, rejected_before, what);
    }
    // An older version, validly signed, long after the newer one: what a restarted node or a slow relay
    // still holds. It is dropped (the book keeps the newer one) and its sender is not blamed.
    let stale = adversary::Adversary::connect(&a.bootstrap(), pool).await;
    let ignored_before = gossip(a)["ignored"].as_u64().unwrap();
    stale.send(v1);
    tokio::task::block_in_place(|| {
        eventually("the stale version is dropped", CONVERGE, || {
            let g = gossip(a);
            if g["ignored"].as_u64().unwrap() > ignored_before {
                Ok(())
            } else {
                Err(g.to_string())
            }
        });
        let peers = a.json(&["peers"]);
        let p = peer(&peers, &stale.peer_id.to_string()).expect("stale relay known");
        assert_eq!(p["penalty"], 0, "{p}");
        assert_eq!(p["banned"], false, "{p}");
        assert_eq!(gossip(a)["rejected"].as_u64().unwrap(), rejected_before);
    });
    // None of it was forwarded: B and C never saw a bad message, and hold only the honest version.
    tokio::task::block_in_place(|| {
        for d in [b, c] {
            assert_eq!(
                gossip(d)["rejected"],
                0,
                "bad messages were forwarded to {}",
                d.node_id
            );
            assert_eq!(
                book(d, Some("public"))
                    .unwrap()
                    .get(&(provider.node_id().to_string(), 1)),
                Some(&2)
            );
        }
    });

    // A flood of garbage from one peer does not stop honest offers from flowing.
    let flooder = adversary::Adversary::connect(&a.bootstrap(), pool).await;
    for i in 0..5000u32 {
        // this version's header, then a body that does not decode: garbage, not another version's message
        let mut junk = vec![xov_protocol::signed::VERSION, 1, 0, 0, 0, 4];
        junk.extend_from_slice(&i.to_be_bytes());
        junk.extend_from_slice(&[0u8; 64]);
        flooder.send(junk);
    }
    tokio::task::block_in_place(|| {
        let honest = publish(c, "public", 4, 777, None);
        let (k, s) = key_of(&honest);
        for d in &nodes {
            eventually(
                "honest offer arrives during a flood",
                CONVERGE,
                || match book(d, Some("public"))?.get(&k) {
                    Some(got) if *got == s => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            );
        }
        let peers = a.json(&["peers"]);
        let f = peer(&peers, &flooder.peer_id.to_string()).expect("flooder known");
        assert!(
            f["banned"] == true || f["gossip_score"].as_f64().unwrap_or(0.0) < 0.0,
            "flooder penalised: {f}"
        );
    });
}

#[test]
fn offers_are_refreshed_while_the_owner_runs_and_age_out_when_it_stops() {
    let dirs = dirs(2);
    let mut nodes = start_chain(&dirs, |_| None);
    let b_node = nodes.pop().unwrap();
    let a_node = nodes.pop().unwrap();
    let (a, b) = (&a_node, &b_node);
    let fast = a.json(&[
        "pool",
        "create",
        "fast",
        "--min-ttl-secs",
        "2",
        "--max-ttl-secs",
        "3600",
    ])["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("B knows the new pool", CONVERGE, || {
        let out = xov(&b.datadir, &["--json", "pool", "join", &fast]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    let o = a.json(&[
        "offer",
        "publish",
        "--pool",
        &fast,
        "--vcpus",
        "1",
        "--ram",
        "512",
        "--disk",
        "1",
        "--image",
        "tiny",
        "--price",
        "10",
        "--country",
        "NL",
        "--ttl-secs",
        "4",
    ]);
    let key = (
        o["provider"].as_str().unwrap().to_string(),
        o["offer_id"].as_u64().unwrap(),
    );
    let first = (
        o["sequence"].as_u64().unwrap(),
        o["expires_at"].as_u64().unwrap(),
    );
    // While A runs, B keeps seeing the offer past its first expiry, under newer sequences.
    eventually(
        "the offer was refreshed past its first expiry",
        CONVERGE,
        || {
            let held = book(b, Some(&fast))?;
            match held.get(&key) {
                Some(seq) if *seq > first.0 && now() > first.1 => Ok(()),
                other => Err(format!("{other:?} (first {first:?}, now {})", now())),
            }
        },
    );
    // A goes away: B stops offering it once the last version expires.
    a_node.kill();
    eventually("the offer aged out", CONVERGE, || {
        let held = book(&b_node, Some(&fast))?;
        if held.is_empty() {
            Ok(())
        } else {
            Err(format!("{held:?}"))
        }
    });
}
