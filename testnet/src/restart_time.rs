//! `xov-testnet restart-time --offers N`: how long a node takes from `xov node run` to ready when its
//! database holds N stored offers of other providers (every one is checked again at start).
//!
//! Invariants:
//! - The offers are real signed offers (xov-protocol signs them) of `N / 500` providers in the regtest public
//!   pool, valid for the next 23 hours, written straight into the node's RocksDB `offers` column family under
//!   the node's own key layout (provider id ‖ offer id, big-endian), as a relaying node would have stored
//!   them. A layout drift shows as fewer offers loaded than written: the run fails then.
//! - Written so, the offers carry no seal (the node's store seals an offer it stored after checking its
//!   signature): the first start checks every signature, as after an upgrade from an xov without seals, and
//!   seals them; later starts are the ordinary restart. The report says which start is which.
//! - Time-to-ready is from spawning the process to its `xov node ready` line (the API answers from then on);
//!   the run also checks the book holds all N offers. Each figure is reported against the 5 s limit, with
//!   the node's own split of its market load (its "market loaded" log line: read and decode, signatures,
//!   remaining checks and indexing).
//! - The node runs with its wallet off and no peers, so nothing but the store is measured.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use xov_protocol::offer::{Arch, InstanceType, Location, Offer};
use xov_protocol::pool::public_charter;
use xov_protocol::{Chain, Keypair, Signed};

use crate::node::spawn_daemon_with;
use crate::proc_stats;

/// Offers per provider: under the public pool's cap of 1,000 per provider.
const PER_PROVIDER: usize = 500;
/// The target: ready within this at 1M stored offers.
const LIMIT: Duration = Duration::from_secs(5);

/// Signs `n` offers (on every core) and writes them into `datadir`'s store; returns how long signing took.
fn fill(datadir: &Path, n: usize) -> Result<Duration, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let pool = public_charter(Chain::REGTEST).body().pool_id();
    let providers = n.div_ceil(PER_PROVIDER);
    let t0 = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    let chunks: Vec<Vec<(Vec<u8>, Vec<u8>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for p in (t..providers).step_by(threads) {
                        let mut seed = [7u8; 32];
                        seed[..8].copy_from_slice(&(p as u64).to_be_bytes());
                        let key = Keypair::from_secret_bytes(&seed);
                        let count = PER_PROVIDER.min(n - p * PER_PROVIDER);
                        for i in 0..count {
                            let body = Offer {
                                provider: key.node_id(),
                                pool,
                                offer_id: i as u64,
                                sequence: now,
                                created_at: now,
                                expires_at: now + 23 * 3600,
                                instance: InstanceType {
                                    vcpus: 1 + (i % 64) as u32,
                                    ram_mib: 1024 << (i % 6),
                                    disk_gib: 10 + (i % 100) as u32,
                                    gpu: None,
                                    arch: Arch::X86_64,
                                },
                                images: vec!["debian-12".into(), "ubuntu-24.04".into()],
                                price_sats_per_hour: 1000 + (p * 7 + i) as u64 % 50_000,
                                min_lease_secs: 3600,
                                max_lease_secs: 30 * 24 * 3600,
                                location: Location {
                                    country: ["DE", "FR", "US", "JP"][p % 4].into(),
                                    region: ["fra", "par", "iad", "tyo"][p % 4].into(),
                                },
                                capacity: 1 + (i % 8) as u32,
                                bond: None,
                                chain: Chain::REGTEST,
                                extra_ports: Vec::new(),
                            };
                            let mut k = key.node_id().as_bytes().to_vec();
                            k.extend_from_slice(&(i as u64).to_be_bytes());
                            out.push((k, Signed::sign(body, &key).to_bytes()));
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let signing = t0.elapsed();
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = rocksdb::DB::open_cf(&opts, datadir.join("db"), ["offers"])
        .map_err(|e| format!("open the store: {e}"))?;
    let cf = db.cf_handle("offers").ok_or("no offers column family")?;
    let mut wo = rocksdb::WriteOptions::default();
    wo.disable_wal(true);
    for chunk in chunks {
        for part in chunk.chunks(10_000) {
            let mut batch = rocksdb::WriteBatch::default();
            for (k, v) in part {
                batch.put_cf(&cf, k, v);
            }
            db.write_opt(batch, &wo).map_err(|e| e.to_string())?;
        }
    }
    db.flush_cf(&cf).map_err(|e| e.to_string())?;
    Ok(signing)
}

/// Milliseconds of a start's market load: reading and decoding, signatures, checks and index.
type LoadSplit = (u64, u64, u64);

/// Where the market's load went, from its "market loaded" log line: `(read, verify, index)` in ms.
fn load_split(log: &str) -> Option<LoadSplit> {
    let line = log.lines().rev().find(|l| l.contains("market loaded"))?;
    // the node's log may be coloured
    let plain = crate::node::strip_ansi(line);
    let line = plain.as_str();
    let field = |name: &str| -> Option<u64> {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        let digits: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    Some((field("read_ms")?, field("verify_ms")?, field("index_ms")?))
}

/// One start: seconds to the ready line, the offers the book holds, resident memory then, and the load's
/// split.
fn start_once(datadir: &Path) -> Result<(Duration, u64, u64, Option<LoadSplit>), String> {
    let t0 = Instant::now();
    let mut s = spawn_daemon_with(
        datadir,
        &[
            ("XOV_NETWORK_LISTEN", "/ip4/127.0.0.1/tcp/0".to_string()),
            ("XOV_NETWORK_MDNS", "false".to_string()),
            ("XOV_LOG_LEVEL", "info".to_string()),
        ],
    );
    let stdout = s.child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let ready = t0.elapsed();
    if !line.starts_with("xov node ready:") {
        let _ = s.child.kill();
        let log = std::fs::read_to_string(&s.log).unwrap_or_default();
        return Err(format!("the node did not get ready: {line}\n{log}"));
    }
    let rss = proc_stats::rss(s.child.id()).unwrap_or_default().rss_kib;
    let out = std::process::Command::new(crate::node::xov_bin())
        .args([
            "--datadir",
            datadir.to_str().unwrap_or_default(),
            "status",
            "--json",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let status: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("status: {e}"))?;
    let offers = status["offers"].as_u64().unwrap_or(0);
    let _ = std::process::Command::new(crate::node::xov_bin())
        .args([
            "--datadir",
            datadir.to_str().unwrap_or_default(),
            "node",
            "stop",
        ])
        .output();
    let log_path = s.log.clone();
    let _ = crate::node::wait_exit(s, Duration::from_secs(60));
    let split = load_split(&std::fs::read_to_string(&log_path).unwrap_or_default());
    Ok((ready, offers, rss, split))
}

/// Fills a store with `offers` offers and starts a node on it `runs` times.
pub fn run(offers: usize, runs: usize, root: &Path) -> Result<String, String> {
    let mut report = proc_stats::Report::start();
    let datadir = root.join("node");
    std::fs::create_dir_all(&datadir).map_err(|e| e.to_string())?;
    std::fs::write(
        datadir.join("xov.toml"),
        "[wallet]\nenabled = false\nnetwork = \"regtest\"\n",
    )
    .map_err(|e| e.to_string())?;
    let signing = fill(&datadir, offers)?;
    report.say(format!(
        "{offers} offers of {} providers signed in {:.1} s and written to the store",
        offers.div_ceil(PER_PROVIDER),
        signing.as_secs_f64()
    ));
    report.say(
        "| start | time to ready | vs 5 s limit | offers in the book | VmRSS | read / verify / index (ms) |"
            .into(),
    );
    report.say("|---|---|---|---|---|---|".into());
    for r in 1..=runs {
        let (ready, loaded, rss_kib, split) = start_once(&datadir)?;
        let split = split.map_or("(no \"market loaded\" line)".to_string(), |(r, v, i)| {
            format!("{r} / {v} / {i}")
        });
        let which = if r == 1 {
            "first: unsealed, every signature checked"
        } else {
            "restart: sealed"
        };
        report.say(format!(
            "| {r}, {which} | {:.2} s | {:.2} | {loaded} | {:.0} MiB | {split} |",
            ready.as_secs_f64(),
            ready.as_secs_f64() / LIMIT.as_secs_f64(),
            rss_kib as f64 / 1024.0
        ));
        if loaded as usize != offers {
            return Err(format!(
                "the book holds {loaded} of the {offers} offers written: the store's layout has drifted"
            ));
        }
    }
    Ok(report.text())
}

#[cfg(test)]
mod tests {
    use super::{load_split, LoadSplit};

    #[test]
    fn the_load_split_is_read_from_the_market_loaded_line() {
        let cases: &[(&str, &str, Option<LoadSplit>)] = &[
            (
                "plain line",
                "2026-12-03T15:16:06Z  INFO xov_node::market: market loaded offers=10 expired=0 pools=1 read_ms=75 unsealed=0 verify_ms=142 index_ms=29",
                Some((75, 142, 29)),
            ),
            (
                "the last of two starts",
                "market loaded read_ms=1 verify_ms=2 index_ms=3\nmarket loaded read_ms=4 verify_ms=5 index_ms=6",
                Some((4, 5, 6)),
            ),
            (
                "coloured",
                "\u{1b}[2mxov_node::market\u{1b}[0m: market loaded \u{1b}[3mread_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m7504 \u{1b}[3mverify_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m14217 \u{1b}[3mindex_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m2931",
                Some((7504, 14217, 2931)),
            ),
            ("no such line", "xov node ready", None),
            ("a field missing", "market loaded read_ms=1 index_ms=3", None),
        ];
        for (name, log, want) in cases {
            assert_eq!(load_split(log), *want, "{name}");
        }
    }
}
