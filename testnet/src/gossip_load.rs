//! `xov-testnet gossip-load`: N `xov` processes on 127.0.0.1 (one process per node, each its own data dir,
//! TCP only, wallet off), joined in the public pool, and offers published through the nodes' local APIs.
//!
//! Measured from outside the nodes:
//! - latency: offers published one at a time; each node's `/v1/status` offer count is polled until every
//!   node has the offer. With one offer in flight the count is an exact signal; the poll interval (plus one
//!   API round trip) bounds the resolution, and arrival times are the response times (upper bounds).
//! - bytes: the kernel's TCP `bytes_sent` of each node's established sockets (API sockets excluded, see
//!   [`crate::proc_stats::tcp_bytes_sent`]), over each phase, minus what the same nodes send idle over the
//!   same time (gossipsub heartbeats, pings, DHT).
//! - load: offers published at a fixed total rate from several publishers at once. Each node's count is
//!   sampled; the k-th offer published is taken to arrive when a node's count first covers k offers. That
//!   ordering assumption makes per-offer latency under load an estimate; delivery ratio is exact.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::node::Daemon;
use crate::node_api::{NodeApi, NodeStatus};
use crate::proc_stats::{self, percentile, sorted};

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Opts {
    pub nodes: usize,
    /// Offers published one at a time for the latency figures.
    pub offers: usize,
    /// Offers per second, over all publishers, in the load phase (0 skips it).
    pub rate: f64,
    pub load_secs: f64,
    /// How many nodes publish (spread over the node list).
    pub publishers: usize,
    /// Poll interval of the latency phase.
    pub poll: Duration,
    /// Poll interval of the load phase.
    pub load_poll: Duration,
    /// Idle window measured for the byte baseline.
    pub idle_secs: f64,
    /// Where the nodes' data dirs go.
    pub root: PathBuf,
    /// Extra `XOV_*` environment for every node (e.g. network limits).
    pub env: Vec<(String, String)>,
}

/// How long one offer may take to reach everyone before it counts as missed.
const OFFER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after the last publish of the load phase deliveries are still awaited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// An offer spec that differs by price, so each is a distinct message.
fn spec(price: u64) -> Value {
    json!({
        "vcpus": 1, "ram_mib": 1024, "disk_gib": 10, "images": ["bench"],
        "price_sats_per_hour": price, "country": "DE", "ttl_secs": 3600
    })
}

async fn all_status(
    apis: &[NodeApi],
    which: &[usize],
    t0: Instant,
) -> Vec<(usize, f64, NodeStatus)> {
    let mut set = JoinSet::new();
    for &i in which {
        let a = apis[i].clone();
        set.spawn(async move {
            let r = a.status().await;
            (i, t0.elapsed().as_secs_f64(), r)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok((i, t, Ok(s))) = r {
            out.push((i, t, s));
        }
    }
    out
}

/// Counters over all nodes, for deltas between phases.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    bytes: u64,
    cpu: f64,
    accepted: u64,
    rejected: u64,
    ignored: u64,
    rate_limited: u64,
    at: Option<Instant>,
}

async fn totals(apis: &[NodeApi]) -> Totals {
    let skip: Vec<u16> = apis.iter().map(|a| a.api_port).collect();
    let bytes = proc_stats::tcp_bytes_sent(&skip);
    let all: Vec<usize> = (0..apis.len()).collect();
    let st = all_status(apis, &all, Instant::now()).await;
    let mut t = Totals {
        at: Some(Instant::now()),
        ..Default::default()
    };
    for a in apis {
        t.bytes += bytes.get(&a.pid).copied().unwrap_or(0);
        t.cpu += proc_stats::cpu_secs(a.pid).unwrap_or(0.0);
    }
    for (_, _, s) in st {
        t.accepted += s.accepted;
        t.rejected += s.rejected;
        t.ignored += s.ignored;
        t.rate_limited += s.rate_limited;
    }
    t
}

fn secs_between(a: &Totals, b: &Totals) -> f64 {
    match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => 0.0,
    }
}

fn ms(v: Option<f64>) -> String {
    v.map(|s| format!("{:.0} ms", s * 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// Runs the scenario and returns a plain-text report (markdown tables).
pub fn run(o: &Opts) -> Result<String, String> {
    if o.nodes < 2 || o.publishers == 0 || o.publishers > o.nodes {
        return Err("need at least 2 nodes and 1..=nodes publishers".into());
    }
    std::fs::create_dir_all(&o.root).map_err(|e| format!("{}: {e}", o.root.display()))?;
    let mut report = proc_stats::Report::start();
    let mut say = |s: String| report.say(s);

    // Each node dials the one before it and the one at half its index: a chain with shortcuts, so the
    // overlay is connected from the start and the DHT finds the rest.
    let started = Instant::now();
    let mut daemons: Vec<Daemon> = Vec::with_capacity(o.nodes);
    for i in 0..o.nodes {
        let dir = o.root.join(format!("node-{i:02}"));
        let mut env: Vec<(&str, String)> = vec![
            ("XOV_WALLET_ENABLED", "false".into()),
            ("XOV_NETWORK_LISTEN", "/ip4/127.0.0.1/tcp/0".into()),
            ("XOV_NETWORK_MDNS", "false".into()),
            ("XOV_LOG_LEVEL", "warn".into()),
        ];
        if i > 0 {
            let mut boots = vec![daemons[i - 1].bootstrap()];
            if (i - 1) / 2 != i - 1 {
                boots.push(daemons[(i - 1) / 2].bootstrap());
            }
            env.push(("XOV_NETWORK_BOOTSTRAP", boots.join(",")));
        }
        for (k, v) in &o.env {
            env.push((k.as_str(), v.clone()));
        }
        daemons.push(Daemon::start_with(&dir, &env));
    }
    say(format!(
        "started {} nodes (one process each) in {:.1} s",
        o.nodes,
        started.elapsed().as_secs_f64()
    ));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = NodeApi::client();
    let apis: Vec<NodeApi> = daemons.iter().map(|d| NodeApi::of(d, &client)).collect();
    let pubs: Vec<usize> = (0..o.publishers)
        .map(|k| k * o.nodes / o.publishers)
        .collect();
    let result = rt.block_on(scenario(o, &apis, &pubs, &mut say));
    let harness_cpu = proc_stats::cpu_secs(std::process::id()).unwrap_or(0.0);
    say(format!(
        "harness CPU over the whole run: {harness_cpu:.1} s; load average at the end {}",
        proc_stats::load_average()
    ));
    drop(daemons);
    result.map(|()| report.text())
}

async fn scenario(
    o: &Opts,
    apis: &[NodeApi],
    pubs: &[usize],
    say: &mut impl FnMut(String),
) -> Result<(), String> {
    let n = apis.len();
    let all: Vec<usize> = (0..n).collect();

    // Mesh: every node sees pool members, then warm-up offers reach everyone.
    let t0 = Instant::now();
    let want = (n - 1).min(3) as u64;
    loop {
        let st = all_status(apis, &all, t0).await;
        let ready = st.len() == n && st.iter().all(|(_, _, s)| s.peers >= want);
        if ready {
            break;
        }
        if t0.elapsed() > Duration::from_secs(180) {
            return Err("nodes did not connect to each other within 180 s".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut expected: Vec<u64> =
        all_status(apis, &all, t0)
            .await
            .into_iter()
            .fold(vec![0; n], |mut v, (i, _, s)| {
                v[i] = s.offers;
                v
            });
    let mut price = 1_000u64;
    for w in 0..3 {
        let (all_ms, _, _) =
            one_offer(apis, pubs[w % pubs.len()], &mut expected, price, o.poll).await?;
        price += 1;
        if all_ms.is_none() {
            return Err("a warm-up offer did not reach every node within 30 s".into());
        }
    }
    say(format!(
        "mesh ready (every node has >= {want} peers, 3 warm-up offers reached all) after {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    let peers: Vec<f64> = all_status(apis, &all, t0)
        .await
        .iter()
        .map(|(_, _, s)| s.peers as f64)
        .collect();
    let peers = sorted(peers);
    say(format!(
        "connected peers per node: min {} median {} max {}",
        peers[0],
        percentile(&peers, 50.0).unwrap_or(0.0),
        peers[peers.len() - 1]
    ));

    // Idle baseline for bytes and CPU.
    let idle_a = totals(apis).await;
    tokio::time::sleep(Duration::from_secs_f64(o.idle_secs)).await;
    let idle_b = totals(apis).await;
    let idle_secs = secs_between(&idle_a, &idle_b);
    let idle_bps = (idle_b.bytes - idle_a.bytes) as f64 / idle_secs / n as f64;
    let idle_cpu = (idle_b.cpu - idle_a.cpu) / idle_secs / n as f64;

    // Latency phase.
    let lat_a = totals(apis).await;
    let mut per_offer_all = Vec::new();
    let mut per_member = Vec::new();
    let mut missed = 0;
    let mut size = 0;
    for j in 0..o.offers {
        let (all_s, members, sz) =
            one_offer(apis, pubs[j % pubs.len()], &mut expected, price, o.poll).await?;
        price += 1;
        size = sz;
        match all_s {
            Some(s) => per_offer_all.push(s),
            None => missed += 1,
        }
        per_member.extend(members);
    }
    let lat_b = totals(apis).await;
    let lat_secs = secs_between(&lat_a, &lat_b);
    let lat_bytes = (lat_b.bytes - lat_a.bytes) as f64;
    let gross = lat_bytes / o.offers.max(1) as f64 / n as f64;
    let net = (lat_bytes - idle_bps * n as f64 * lat_secs) / o.offers.max(1) as f64 / n as f64;
    let all_sorted = sorted(per_offer_all);
    let mem_sorted = sorted(per_member);
    say(String::new());
    say(format!(
        "latency phase: {} offers ({size} bytes signed) one at a time from {} publishers; poll every {} ms",
        o.offers,
        pubs.len(),
        o.poll.as_millis()
    ));
    say("| nodes | offers | to every node p50 | p99 | max | to one node p50 | p99 | missed (30 s) | bytes sent per offer per node (net of idle) | gross | idle bytes/s per node |".into());
    say("|---|---|---|---|---|---|---|---|---|---|---|".into());
    say(format!(
        "| {n} | {} | {} | {} | {} | {} | {} | {missed} | {net:.0} | {gross:.0} | {idle_bps:.0} |",
        o.offers,
        ms(percentile(&all_sorted, 50.0)),
        ms(percentile(&all_sorted, 99.0)),
        ms(all_sorted.last().copied()),
        ms(percentile(&mem_sorted, 50.0)),
        ms(percentile(&mem_sorted, 99.0)),
    ));
    say(format!(
        "idle CPU per node {:.2} %; gossip counters over the phase: accepted {} ignored {} rejected {} rate-limited {}",
        idle_cpu * 100.0,
        lat_b.accepted - lat_a.accepted,
        lat_b.ignored - lat_a.ignored,
        lat_b.rejected - lat_a.rejected,
        lat_b.rate_limited - lat_a.rate_limited
    ));

    if o.rate > 0.0 {
        load_phase(o, apis, pubs, &mut price, idle_bps, say).await?;
    }
    Ok(())
}

/// Publishes one offer from `publisher` and waits until every node's count reaches its expected value.
/// Returns the time to reach every node (None if some node missed it), each other node's arrival time, and
/// the offer's signed size.
async fn one_offer(
    apis: &[NodeApi],
    publisher: usize,
    expected: &mut [u64],
    price: u64,
    poll: Duration,
) -> Result<(Option<f64>, Vec<f64>, usize), String> {
    for e in expected.iter_mut() {
        *e += 1;
    }
    let t0 = Instant::now();
    let v = apis[publisher].post("/v1/offers", &spec(price)).await?;
    let size = v["signed_hex"].as_str().map_or(0, |h| h.len() / 2);
    let mut pending: Vec<usize> = (0..apis.len()).filter(|&i| i != publisher).collect();
    let mut arrivals = Vec::new();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !pending.is_empty() && t0.elapsed() < OFFER_TIMEOUT {
        tick.tick().await;
        for (i, t, s) in all_status(apis, &pending, t0).await {
            if s.offers >= expected[i] {
                arrivals.push(t);
                pending.retain(|&p| p != i);
            }
        }
    }
    let all = if pending.is_empty() {
        arrivals.iter().copied().reduce(f64::max)
    } else {
        None
    };
    Ok((all, arrivals, size))
}

async fn load_phase(
    o: &Opts,
    apis: &[NodeApi],
    pubs: &[usize],
    price: &mut u64,
    idle_bps: f64,
    say: &mut impl FnMut(String),
) -> Result<(), String> {
    let n = apis.len();
    let all: Vec<usize> = (0..n).collect();
    let total = (o.rate * o.load_secs).round() as usize;
    let before = totals(apis).await;
    let t0 = Instant::now();
    let mut base = vec![0u64; n];
    for (i, _, s) in all_status(apis, &all, t0).await {
        base[i] = s.offers;
    }

    // Sampler: every node's count, every load_poll.
    let samples: Arc<Mutex<Vec<(usize, f64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (apis, samples, stop, all) =
            (apis.to_vec(), samples.clone(), stop.clone(), all.clone());
        let poll = o.load_poll;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let st = all_status(&apis, &all, t0).await;
                let mut s = samples.lock().unwrap();
                s.extend(st.into_iter().map(|(i, t, x)| (i, t, x.offers)));
            }
        })
    };

    // Publishers: one request per tick, not waiting for the previous one, so the rate holds.
    let mut sends = JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / o.rate);
    for k in 0..total {
        tokio::time::sleep_until((t0 + period * k as u32).into()).await;
        let api = apis[pubs[k % pubs.len()]].clone();
        let p = *price;
        *price += 1;
        sends.spawn(async move {
            let sent = t0.elapsed().as_secs_f64();
            let r = api.post("/v1/offers", &spec(p)).await;
            (sent, t0.elapsed().as_secs_f64() - sent, r.err())
        });
    }
    let publish_end = t0.elapsed().as_secs_f64();
    let mut ok_sends = Vec::new();
    let mut api_lat = Vec::new();
    let mut errors = Vec::new();
    while let Some(r) = sends.join_next().await {
        let Ok((sent, lat, err)) = r else { continue };
        api_lat.push(lat);
        match err {
            None => ok_sends.push(sent),
            Some(e) => errors.push(e),
        }
    }
    let ok_sends = sorted(ok_sends);
    let ok = ok_sends.len() as u64;

    // Drain: until every node holds all offers, or the timeout.
    let drain_start = Instant::now();
    loop {
        let done = {
            let s = samples.lock().unwrap();
            let mut last = vec![0u64; n];
            for &(i, _, c) in s.iter() {
                last[i] = last[i].max(c);
            }
            (0..n).all(|i| last[i] >= base[i] + ok)
        };
        if done || drain_start.elapsed() > DRAIN_TIMEOUT {
            break;
        }
        tokio::time::sleep(o.load_poll).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let after = totals(apis).await;
    let elapsed = secs_between(&before, &after);

    // Per node timeline → first time covering k offers.
    let s = samples.lock().unwrap().clone();
    let mut per_node: Vec<Vec<(f64, u64)>> = vec![Vec::new(); n];
    for (i, t, c) in s {
        per_node[i].push((t, c));
    }
    let mut to_all: Vec<Option<f64>> = vec![Some(0.0); ok as usize];
    let mut delivered_5s = 0u64;
    let mut delivered = 0u64;
    for (i, tl) in per_node.iter_mut().enumerate() {
        tl.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let mut idx = 0;
        for k in 1..=ok {
            while idx < tl.len() && tl[idx].1 < base[i] + k {
                idx += 1;
            }
            let got = tl.get(idx).map(|x| x.0);
            let slot = &mut to_all[(k - 1) as usize];
            match got {
                Some(t) => {
                    delivered += 1;
                    if t <= publish_end + 5.0 {
                        delivered_5s += 1;
                    }
                    let lat = (t - ok_sends[(k - 1) as usize]).max(0.0);
                    *slot = slot.map(|s| s.max(lat));
                }
                None => *slot = None,
            }
        }
    }
    let complete: Vec<f64> = to_all.iter().flatten().copied().collect();
    let never = to_all.len() - complete.len();
    let complete = sorted(complete);
    let pairs = ok * n as u64;
    let bytes = (after.bytes - before.bytes) as f64;
    let net = (bytes - idle_bps * n as f64 * elapsed) / ok.max(1) as f64 / n as f64;
    let cpu = (after.cpu - before.cpu) / elapsed / n as f64;
    let api_lat = sorted(api_lat);
    say(String::new());
    say(format!(
        "load phase: {total} offers at {} offers/s over {:.1} s from {} publishers; count sampled every {} ms",
        o.rate,
        publish_end,
        pubs.len(),
        o.load_poll.as_millis()
    ));
    say("| rate | published ok | API errors | publish API p50 / p99 | delivered by end+5 s | delivered (60 s drain) | offers never everywhere | to every node p50 (est.) | p99 (est.) | rate-limited | ignored | rejected | bytes/offer/node (net) | CPU per node |".into());
    say("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|".into());
    say(format!(
        "| {}/s | {ok} | {} | {} / {} | {:.1} % | {:.1} % | {never} | {} | {} | {} | {} | {} | {net:.0} | {:.1} % |",
        o.rate,
        errors.len(),
        ms(percentile(&api_lat, 50.0)),
        ms(percentile(&api_lat, 99.0)),
        delivered_5s as f64 * 100.0 / pairs.max(1) as f64,
        delivered as f64 * 100.0 / pairs.max(1) as f64,
        ms(percentile(&complete, 50.0)),
        ms(percentile(&complete, 99.0)),
        after.rate_limited - before.rate_limited,
        after.ignored - before.ignored,
        after.rejected - before.rejected,
        cpu * 100.0
    ));
    if let Some(e) = errors.first() {
        say(format!("first API error: {e}"));
    }
    Ok(())
}
