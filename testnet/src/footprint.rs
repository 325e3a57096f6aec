//! A node's footprint, read from outside the process: `xov-testnet idle` (resident memory and CPU of a node
//! doing nothing, wallet off and on) and `xov-testnet store-size` (RocksDB bytes and resident memory per
//! stored offer).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bitcoind::Bitcoind;
use crate::node::Daemon;
use crate::node_api::NodeApi;
use crate::proc_stats::{self, percentile, sorted};

/// Environment of a lone node: TCP on loopback only, no mDNS, no bootstrap, quiet log.
fn lone_env(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("XOV_NETWORK_LISTEN", "/ip4/127.0.0.1/tcp/0".to_string()),
        ("XOV_NETWORK_MDNS", "false".to_string()),
        ("XOV_LOG_LEVEL", "warn".to_string()),
    ];
    env.extend_from_slice(extra);
    env
}

/// One idle configuration: a name and the node's config file.
struct Variant {
    name: &'static str,
    toml: String,
}

fn min_med_max(v: Vec<f64>, fmt: impl Fn(f64) -> String) -> (String, String, String) {
    let v = sorted(v);
    let f = |x: Option<f64>| x.map(&fmt).unwrap_or_else(|| "-".into());
    (
        f(v.first().copied()),
        f(percentile(&v, 50.0)),
        f(v.last().copied()),
    )
}

/// Starts each variant `runs` times (variants side by side, each run after the previous), lets the nodes
/// sit for `secs`, and reports VmRSS/VmHWM at the end and CPU used during the idle window.
pub fn idle(secs: f64, runs: usize, root: &Path) -> Result<String, String> {
    let mut report = proc_stats::Report::start();
    let mut say = |s: String| report.say(s);
    let btc = match Bitcoind::start() {
        Ok(b) => Some(b),
        Err(e) => {
            say(format!("wallet variants skipped: {e}"));
            None
        }
    };
    let mut variants = vec![Variant {
        name: "wallet off",
        toml: "[wallet]\nenabled = false\n".into(),
    }];
    if let Some(b) = &btc {
        b.mine(101).map_err(|e| e.to_string())?;
        variants.push(Variant {
            name: "wallet on, compact block filters (regtest)",
            toml: format!(
                "[wallet]\nenabled = true\nnetwork = \"regtest\"\nchain = \"filters\"\npeers = [\"{}\"]\n",
                b.p2p_addr()
            ),
        });
        variants.push(Variant {
            name: "wallet on, bitcoind RPC (regtest)",
            toml: format!(
                "[wallet]\nenabled = true\nnetwork = \"regtest\"\nchain = \"rpc\"\nrpc_url = \"{}\"\nrpc_cookie = \"{}\"\n",
                b.rpc_url(),
                b.cookie_file().display()
            ),
        });
    }
    // results[variant] = (rss MiB, hwm MiB, idle CPU %, start-up CPU s) per run
    let mut results: Vec<Vec<(f64, f64, f64, f64)>> = vec![Vec::new(); variants.len()];
    for run in 0..runs {
        let mut nodes = Vec::new();
        for (vi, v) in variants.iter().enumerate() {
            let dir = root.join(format!("idle-{run}-{vi}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("xov.toml"), &v.toml).map_err(|e| e.to_string())?;
            let d = Daemon::start_with(&dir, &lone_env(&[]));
            let cpu0 = proc_stats::cpu_secs(d.pid()).unwrap_or(0.0);
            nodes.push((vi, d, cpu0, Instant::now()));
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        for (vi, d, cpu0, t0) in &nodes {
            let cpu1 = proc_stats::cpu_secs(d.pid()).unwrap_or(0.0);
            let r = proc_stats::rss(d.pid()).unwrap_or_default();
            let window = t0.elapsed().as_secs_f64();
            results[*vi].push((
                r.rss_kib as f64 / 1024.0,
                r.hwm_kib as f64 / 1024.0,
                (cpu1 - cpu0) / window * 100.0,
                *cpu0,
            ));
        }
        say(format!(
            "run {}/{runs} done; load average {}",
            run + 1,
            proc_stats::load_average()
        ));
        drop(nodes);
    }
    say(format!(
        "\n{runs} run(s), {secs:.0} s idle each; min / median / max over runs"
    ));
    say("| node | VmRSS at the end | VmHWM (peak) | CPU while idle (% of one core) | CPU used by start-up |".into());
    say("|---|---|---|---|---|".into());
    for (v, r) in variants.iter().zip(results) {
        let mib = |x: f64| format!("{x:.1}");
        let (a, b, c) = min_med_max(r.iter().map(|x| x.0).collect(), mib);
        let (d, e, f) = min_med_max(r.iter().map(|x| x.1).collect(), mib);
        let (g, h, i) = min_med_max(r.iter().map(|x| x.2).collect(), |x| format!("{x:.2}"));
        let (j, k, l) = min_med_max(r.iter().map(|x| x.3).collect(), |x| format!("{x:.2}"));
        say(format!(
            "| {} | {b} MiB ({a}–{c}) | {e} MiB ({d}–{f}) | {h} % ({g}–{i}) | {k} s ({j}–{l}) |",
            v.name
        ));
    }
    if let Some(b) = btc {
        let _ = b.stop();
    }
    Ok(report.text())
}

/// Sizes of a RocksDB directory: SST files, write-ahead logs, everything.
#[derive(Debug, Default, Clone, Copy)]
struct DbSize {
    sst: u64,
    wal: u64,
    total: u64,
}

fn db_size(dir: &Path) -> DbSize {
    let mut s = DbSize::default();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        if !m.is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        s.total += m.len();
        if name.ends_with(".sst") {
            s.sst += m.len();
        } else if name.ends_with(".log") && !name.starts_with("LOG") {
            s.wal += m.len();
        }
    }
    s
}

/// What one node with `offers` stored offers measured.
struct Stored {
    after_close: DbSize,
    after_reopen: DbSize,
    rss_after_publish_kib: u64,
    rss_after_reload_kib: u64,
    loaded: u64,
    publish_secs: f64,
}

fn start_lone(dir: &Path) -> Daemon {
    std::fs::write(dir.join("xov.toml"), "[wallet]\nenabled = false\n").expect("config");
    Daemon::start_with(dir, &lone_env(&[]))
}

/// Publishes `offers` offers into a pool of its own (no per-provider cap in the way), stops the node, starts
/// it again (RocksDB replays its log and flushes it into SST files), and measures.
fn store_offers(dir: &Path, offers: usize, rt: &tokio::runtime::Runtime) -> Result<Stored, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let d = start_lone(dir);
    let client = NodeApi::client();
    let api = NodeApi::of(&d, &client);
    let t0 = Instant::now();
    if offers > 0 {
        rt.block_on(async {
            api.post(
                "/v1/pools",
                &json!({"name": "bench-store", "max_offers_per_provider": offers, "max_ttl_secs": 86400}),
            )
            .await?;
            let mut set = tokio::task::JoinSet::new();
            for k in 0..offers {
                if set.len() >= 8 {
                    if let Some(r) = set.join_next().await {
                        r.map_err(|e| e.to_string())??;
                    }
                }
                let api = api.clone();
                set.spawn(async move {
                    api.post(
                        "/v1/offers",
                        &json!({
                            "pool": "bench-store", "vcpus": 1 + (k % 64), "ram_mib": 1024, "disk_gib": 10,
                            "images": ["debian-12", "ubuntu-24.04"], "price_sats_per_hour": 1000 + k,
                            "country": "DE", "region": "fra", "ttl_secs": 86400
                        }),
                    )
                    .await
                    .map(|_| ())
                });
            }
            while let Some(r) = set.join_next().await {
                r.map_err(|e| e.to_string())??;
            }
            Ok::<(), String>(())
        })?;
    }
    let publish_secs = t0.elapsed().as_secs_f64();
    let rss_after_publish_kib = proc_stats::rss(d.pid()).unwrap_or_default().rss_kib;
    let st = d.stop();
    if !st.success() {
        return Err(format!("node exited with {st}"));
    }
    let db = dir.join("db");
    let after_close = db_size(&db);
    let d = start_lone(dir);
    let api = NodeApi::of(&d, &client);
    let loaded = rt.block_on(api.status())?.offers;
    let rss_after_reload_kib = proc_stats::rss(d.pid()).unwrap_or_default().rss_kib;
    let st = d.stop();
    if !st.success() {
        return Err(format!("node exited with {st}"));
    }
    Ok(Stored {
        after_close,
        after_reopen: db_size(&db),
        rss_after_publish_kib,
        rss_after_reload_kib,
        loaded,
        publish_secs,
    })
}

/// `xov-testnet store-size --offers N`: bytes per stored offer on disk and in memory, against an empty node.
pub fn store_size(offers: usize, root: &Path) -> Result<String, String> {
    let mut report = proc_stats::Report::start();
    let mut say = |s: String| report.say(s);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let empty = store_offers(&root.join("store-empty"), 0, &rt)?;
    let full = store_offers(&root.join("store-full"), offers, &rt)?;
    let per = |a: u64, b: u64| (a as f64 - b as f64) / offers.max(1) as f64;
    say(format!(
        "published {offers} offers in {:.1} s ({:.0}/s, 8 API requests in flight, synced writes); {} loaded back after restart",
        full.publish_secs,
        offers as f64 / full.publish_secs,
        full.loaded
    ));
    say("| what | empty node | with N offers | per offer |".into());
    say("|---|---|---|---|".into());
    let rows: [(&str, u64, u64); 6] = [
        (
            "SST files after restart (log flushed)",
            empty.after_reopen.sst,
            full.after_reopen.sst,
        ),
        (
            "whole db dir after restart",
            empty.after_reopen.total,
            full.after_reopen.total,
        ),
        (
            "SST files after first clean stop",
            empty.after_close.sst,
            full.after_close.sst,
        ),
        (
            "write-ahead log after first clean stop",
            empty.after_close.wal,
            full.after_close.wal,
        ),
        (
            "VmRSS after publishing (KiB→B)",
            empty.rss_after_publish_kib * 1024,
            full.rss_after_publish_kib * 1024,
        ),
        (
            "VmRSS after restart, book loaded from disk (KiB→B)",
            empty.rss_after_reload_kib * 1024,
            full.rss_after_reload_kib * 1024,
        ),
    ];
    for (what, e, f) in rows {
        say(format!(
            "| {what} | {:.1} KiB | {:.1} KiB | {:.0} B |",
            e as f64 / 1024.0,
            f as f64 / 1024.0,
            per(f, e)
        ));
    }
    Ok(report.text())
}

/// A fresh directory for a benchmark's nodes under `base`, named after the command and this process.
pub fn run_dir(base: &Path, what: &str) -> PathBuf {
    base.join(format!("{what}-{}", std::process::id()))
}
