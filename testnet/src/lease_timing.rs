//! `xov-testnet lease-timing`: how long from the block that confirms a lease's payment to the provider
//! reporting the machine RUNNING, split into the node's own time and OpenStack's.
//!
//! A provider and a buyer run on the local testnet (bitcoind regtest, the OpenStack lab). The provider reaches
//! Nova, Neutron and Glance through recording proxies that timestamp every request (and note each server status in
//! Nova's answers), so the wire shows when the node asked for the server (`POST /servers`), when Nova first
//! answered ACTIVE, and what the node asked of each service when; the time with no request to any of them in
//! flight is the node's own (or its waiting between status polls; Keystone's token requests, not proxied, count
//! as the node's). The harness mines the confirming block and polls the provider's lease state every 25 ms. Nova's own view (`created` → `OS-SRV-USG:launched_at`, whole seconds) is read afterwards.
//!
//!   node before Nova   = POST /servers sent            − block mined
//!   OpenStack (wire)   = first ACTIVE answer            − POST /servers sent
//!   node after ACTIVE  = provider state `running` seen  − first ACTIVE answer
//!
//! The wire figure for OpenStack includes the provider's poll interval (it asks for the server's status
//! 250 ms after the create, then backs off), so part of it is node behaviour; the table says so.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::bitcoind::Bitcoind;
use crate::node::{eventually, Daemon};
use crate::node_api::NodeApi;
use crate::openstack::{LabCleanup, OpenStackLab, RealMode};
use crate::proc_stats::{self, percentile, sorted};
use crate::scenario::{self, ProviderOpts, PRICE_P1};

/// One request a proxy forwarded.
#[derive(Debug, Clone)]
struct Record {
    /// `nova`, `neutron` or `glance`.
    service: &'static str,
    /// When the request reached the proxy, and when the service's answer came back, since the proxies started.
    sent: f64,
    answered: f64,
    method: String,
    path: String,
    /// `server.status` or the statuses in `servers[]` of the answer, if any.
    statuses: Vec<String>,
    /// `server.id` in the answer of a create.
    server_id: Option<String>,
}

/// A recording proxy in front of one service; the proxies of a run share the clock and the log.
struct Proxy {
    service: &'static str,
    target: String,
    client: reqwest::Client,
    t0: Instant,
    log: Arc<Mutex<Vec<Record>>>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`; the proxy's origin.
    async fn serve(self: &Arc<Self>) -> Result<String, String> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let origin = format!("http://{}", l.local_addr().map_err(|e| e.to_string())?);
        let app = axum::Router::new().fallback(relay).with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Ok(origin)
    }
}

async fn relay(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let sent = p.t0.elapsed().as_secs_f64();
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let pq = parts
        .uri
        .path_and_query()
        .map(|x| x.as_str().to_string())
        .unwrap_or_default();
    let mut fwd = p
        .client
        .request(parts.method.clone(), format!("{}{pq}", p.target))
        .body(body);
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            fwd = fwd.header(k, v);
        }
    }
    let Ok(resp) = fwd.send().await else {
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap_or_default();
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut statuses = Vec::new();
    if let Some(s) = v["server"]["status"].as_str() {
        statuses.push(s.to_string());
    }
    for s in v["servers"].as_array().into_iter().flatten() {
        if let Some(s) = s["status"].as_str() {
            statuses.push(s.to_string());
        }
    }
    p.log.lock().unwrap().push(Record {
        service: p.service,
        sent,
        answered: p.t0.elapsed().as_secs_f64(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        statuses,
        server_id: v["server"]["id"].as_str().map(String::from),
    });
    let mut b = Response::builder().status(status);
    for (k, v) in &headers {
        if !matches!(
            k.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            b = b.header(k, v);
        }
    }
    b.body(Body::from(bytes)).unwrap_or_default()
}

/// Unix seconds of an OpenStack timestamp (`2026-11-23T15:20:01Z`, `2026-11-23T15:20:01.000000`), UTC.
fn unix_of(ts: &str) -> Option<f64> {
    let ts = ts.trim_end_matches('Z');
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

/// How much of `[from, to]` the intervals cover (overlaps counted once).
fn covered(spans: &[(f64, f64)], from: f64, to: f64) -> f64 {
    let mut v: Vec<(f64, f64)> = spans
        .iter()
        .map(|&(a, b)| (a.max(from), b.min(to)))
        .filter(|(a, b)| b > a)
        .collect();
    v.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(std::cmp::Ordering::Equal));
    let (mut total, mut end) = (0.0, f64::NEG_INFINITY);
    for (a, b) in v {
        if a > end {
            total += b - a;
            end = b;
        } else if b > end {
            total += b - end;
            end = b;
        }
    }
    total
}

/// One lease's figures, in seconds.
#[derive(Debug, Clone, Default)]
struct Run {
    before_nova: f64,
    nova_wire: f64,
    after_active: f64,
    total: f64,
    /// Nova's `launched_at − created`, whole seconds.
    nova_own: Option<f64>,
    /// Block mined → the provider's lease leaves `payment_seen` (chain detection; its RPC poll is 200 ms).
    to_funded: Option<f64>,
    polls: usize,
    /// Time with at least one Nova, Neutron or Glance request in flight, block → running.
    cloud_busy: f64,
    /// Of it, with a Neutron request in flight.
    neutron_busy: f64,
    /// First ACTIVE answer → running with some request in flight (the rest of that stretch is the node's).
    after_active_cloud: f64,
    /// Time between the create and the first ACTIVE answer with no request in flight: the node waits for the
    /// boot at its poll pace.
    poll_wait: f64,
    /// Nova requests and lease states from the block on, in ms after it: what the node did when.
    trace: Vec<String>,
    /// On a real VM (`--real`): when its console said `sshd ready`, and when the first `ssh` from the
    /// buyer's namespace through the floating IP succeeded, in seconds after the block.
    boot: Option<RealBoot>,
}

#[derive(Debug, Clone, Copy)]
struct RealBoot {
    sshd_ready: f64,
    first_ssh: f64,
}

/// Whether the machine's serial console says its sshd listens.
fn sshd_ready(real: &RealMode, server_id: &str) -> bool {
    std::fs::read_to_string(real.console_log(server_id))
        .is_ok_and(|c| c.contains("xov-image: sshd ready"))
}

/// Runs `runs` leases one after another and reports the split.
/// `real`: lease a real VM (the lab's real compute mode) and time it up to the first successful ssh.
pub fn run(runs: usize, real: bool, root: &std::path::Path) -> Result<String, String> {
    let mut report = proc_stats::Report::start();
    let mut say = |s: String| report.say(s);
    let btc = Bitcoind::start().map_err(|e| e.to_string())?;
    let lab = OpenStackLab::ensure().map_err(|e| e.to_string())?;
    // Deletes what the provider makes in the lab when the run ends, however it ends.
    let cleanup = LabCleanup::new(&lab, "lease timing");
    let real = if real {
        Some(lab.ensure_real().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = NodeApi::client();
    let proxy = Arc::new(Proxy {
        service: "nova",
        target: lab.compute_origin.clone(),
        client: client.clone(),
        t0: Instant::now(),
        log: Arc::new(Mutex::new(Vec::new())),
    });
    let neutron = Arc::new(Proxy {
        service: "neutron",
        target: lab.network_origin.clone(),
        client: client.clone(),
        t0: proxy.t0,
        log: proxy.log.clone(),
    });
    let glance = Arc::new(Proxy {
        service: "glance",
        target: lab.image_url.clone(),
        client: client.clone(),
        t0: proxy.t0,
        log: proxy.log.clone(),
    });
    let (origin, neutron_origin, glance_origin) = rt.block_on(async {
        Ok::<_, String>((
            proxy.serve().await?,
            neutron.serve().await?,
            glance.serve().await?,
        ))
    })?;

    let dir = |n: &str| {
        let d = root.join(n);
        std::fs::create_dir_all(&d).map(|_| d)
    };
    // Buyers may hold only a few leases at once by default (per trust tier), and a closed lease still counts for
    // a while: this provider lets the buyer hold more, so runs are never refused.
    let opts = ProviderOpts {
        compute_endpoint: Some(format!("{origin}/v2.1")),
        network_endpoint: Some(neutron_origin),
        image_endpoint: Some(glance_origin),
        extra: "\n[provider.admission.anonymous]\nmax_concurrent_leases = 1000\nmax_sats_per_hour = 100000000\nreference_sats_per_hour = 0\n"
            .to_string()
            + &["basic", "established", "trusted"]
                .map(|t| format!("[provider.admission.{t}]\nmax_concurrent_leases = 1000\nmax_sats_per_hour = 100000000\n"))
                .concat(),
        glance_image: real.as_ref().map(|r| r.image_name.clone()),
        ssh_user: real.as_ref().map(|r| r.user.clone()),
        ..Default::default()
    };
    // The provider logs its step trace (the wallet's RPC rounds, wallet events, lease changes) at debug level.
    let pdir = dir("provider").map_err(|e| e.to_string())?;
    std::fs::write(
        pdir.join("xov.toml"),
        scenario::provider_toml_with(&lab, &btc, PRICE_P1, &cleanup.owner("provider"), &opts),
    )
    .map_err(|e| e.to_string())?;
    // (RUST_LOG, if set in this environment, would win over XOV_LOG_LEVEL: both are set.)
    let provider = Daemon::start_with(
        &pdir,
        &[
            ("XOV_LOG_LEVEL", STEP_TRACE.to_string()),
            ("RUST_LOG", STEP_TRACE.to_string()),
        ],
    );
    let buyer = scenario::start(
        &dir("buyer").map_err(|e| e.to_string())?,
        &scenario::buyer_toml(&btc),
        Some(&provider),
    );
    scenario::fund(&buyer, &btc);
    eventually("the provider's offer at the buyer", scenario::WAIT, || {
        let v = buyer.json(&["offers", "list", "--image", "debian-12"]);
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    let key = scenario::ssh_key(root);
    let papi = NodeApi::of(&provider, &client);
    let mut results = Vec::new();
    for r in 0..runs {
        let log_from = provider.log_text().len();
        let res = one_lease(
            &rt,
            &btc,
            &lab,
            &buyer,
            &papi,
            &proxy,
            &key,
            &client,
            real.as_ref(),
        )?;
        say(format!("  trace: {}", res.trace.join(" | ")));
        let log = provider.log_text();
        for step in node_steps(log.get(log_from..).unwrap_or_default()) {
            say(format!("  node step: {step}"));
        }
        say(format!(
            "run {}/{runs}: mined→POST /servers {:.0} ms, POST→ACTIVE answer {:.0} ms ({} status polls), ACTIVE→running {:.0} ms, total {:.0} ms, Nova's own created→launched_at {}; load average {}",
            r + 1,
            res.before_nova * 1e3,
            res.nova_wire * 1e3,
            res.polls,
            res.after_active * 1e3,
            res.total * 1e3,
            res.nova_own.map(|s| format!("{s:.0} s")).unwrap_or_else(|| "-".into()),
            proc_stats::load_average()
        ));
        results.push(res);
    }
    let col = |f: &dyn Fn(&Run) -> Option<f64>| {
        let v = sorted(results.iter().filter_map(f).collect());
        let f = |x: Option<f64>| {
            x.map(|s| format!("{:.0} ms", s * 1e3))
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "{} ({}–{})",
            f(percentile(&v, 50.0)),
            f(v.first().copied()),
            f(v.last().copied())
        )
    };
    say(format!("\n{runs} lease(s); median (min–max)"));
    say("| block mined → provider acts (leaves payment_seen) | → POST /servers | POST → first ACTIVE answer (wire) | Nova's created → launched_at | ACTIVE answer → running | total |".into());
    say("|---|---|---|---|---|---|".into());
    say(format!(
        "| {} | {} | {} | {} | {} | {} |",
        col(&|x| x.to_funded),
        col(&|x| Some(x.before_nova)),
        col(&|x| Some(x.nova_wire)),
        col(&|x| x.nova_own),
        col(&|x| Some(x.after_active)),
        col(&|x| Some(x.total)),
    ));
    say("\nthe same total split by who was working: the cloud (some Nova, Neutron or Glance request in flight), the node waiting between status polls while the server builds, and the node itself (everything else: chain detection, its own processing); and after the first ACTIVE answer, the cloud's and the node's parts".into());
    say("| Nova, Neutron or Glance requests in flight | of which Neutron | waiting between status polls | node's own time | node's own share of total | after ACTIVE: cloud / node |".into());
    say("|---|---|---|---|---|---|".into());
    let own = |x: &Run| x.total - x.cloud_busy - x.poll_wait;
    say(format!(
        "| {} | {} | {} | {} | {} | {} / {} |",
        col(&|x| Some(x.cloud_busy)),
        col(&|x| Some(x.neutron_busy)),
        col(&|x| Some(x.poll_wait)),
        col(&|x| Some(own(x))),
        {
            let v = sorted(
                results
                    .iter()
                    .map(|x| own(x) / x.total.max(1e-9) * 100.0)
                    .collect(),
            );
            format!(
                "{:.0} % ({:.0}–{:.0} %)",
                percentile(&v, 50.0).unwrap_or(0.0),
                v.first().copied().unwrap_or(0.0),
                v.last().copied().unwrap_or(0.0)
            )
        },
        col(&|x| Some(x.after_active_cloud)),
        col(&|x| Some(x.after_active - x.after_active_cloud)),
    ));
    if real.is_some() {
        // The real VM's path to the first login, on one timeline from the block (see docs/benchmarks.md):
        // the node until it asks Nova, Nova until the server is ACTIVE (scheduled, image copied, domain
        // started), the guest until its console says sshd listens, then the network (and the node's floating
        // IP, which it sets up meanwhile) until ssh works.
        say("\nreal VM: block mined → first successful ssh; median (min–max)".into());
        say("| node: block → POST /servers | Nova API: POST → ACTIVE answer | boot: ACTIVE → console `sshd ready` | node after ACTIVE → running (floating IP; beside the boot) | network: max(sshd ready, running) → first ssh | total | node's share on the critical path |".into());
        say("|---|---|---|---|---|---|---|".into());
        let active_at = |x: &Run| x.before_nova + x.nova_wire;
        say(format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            col(&|x| Some(x.before_nova)),
            col(&|x| Some(x.nova_wire)),
            col(&|x| x.boot.map(|b| b.sshd_ready - active_at(x))),
            col(&|x| Some(x.after_active)),
            col(&|x| x.boot.map(|b| b.first_ssh - b.sshd_ready.max(x.total))),
            col(&|x| x.boot.map(|b| b.first_ssh)),
            // what the node holds up: before Nova, plus any time the login waited for the node after the boot
            col(&|x| x
                .boot
                .map(|b| x.before_nova + (x.total - b.sshd_ready).max(0.0))),
        ));
    }
    drop((provider, buyer));
    let _ = btc.stop();
    Ok(report.text())
}

/// The provider's log filter: its step trace on, the rest at info.
const STEP_TRACE: &str = "info,xov_wallet::chain=debug,xov_node::lease::driver=debug";

/// The provider's steps during one run, from its log: each commit of the wallet's RPC loop (blocks, mempool),
/// each wallet event and lease change, up to and including the first `launching` (after it the proxies' trace
/// takes over).
fn node_steps(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in log.lines().map(crate::node::strip_ansi) {
        let step = line.contains("wallet blocks committed")
            || line.contains("wallet mempool committed")
            || line.contains("wallet event received")
            || line.contains("lease input applied")
            || line.contains("launching");
        if step {
            // "<timestamp> <LEVEL> <target>: <message and fields>": the time of day and what happened.
            let time = line
                .split(['T', 'Z'])
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let what = line.split_once(": ").map(|(_, w)| w).unwrap_or(&line);
            out.push(format!("{time} {what}"));
            if line.contains("launching") {
                break;
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn one_lease(
    rt: &tokio::runtime::Runtime,
    btc: &Bitcoind,
    lab: &OpenStackLab,
    buyer: &Daemon,
    papi: &NodeApi,
    proxy: &Proxy,
    key: &std::path::Path,
    client: &reqwest::Client,
    real: Option<&RealMode>,
) -> Result<Run, String> {
    let l = crate::scenario::order_one_vcpu(buyer, key, &["--pay"]);
    let id = l["id"].as_str().unwrap_or_default().to_string();
    if id.is_empty() {
        return Err(format!("order gave no lease id: {l}"));
    }
    // The provider must have seen the payment before the block, or the block is not what we time.
    eventually("the provider sees the payment", scenario::WAIT, || {
        let v = rt.block_on(papi.get(&format!("/v1/leases/{id}")))?;
        match v["state"].as_str() {
            Some("payment_seen") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let mark = proxy.log.lock().unwrap().len();
    let mined_at = proxy.t0.elapsed().as_secs_f64();
    btc.mine(1).map_err(|e| e.to_string())?;
    let mut seen: Vec<(String, f64)> = Vec::new();
    let deadline = Instant::now() + scenario::WAIT;
    // On a real VM the console can say `sshd ready` before the node reports running: watch it from the create.
    let mut sshd_at: Option<f64> = None;
    let created = |mark: usize| -> Option<String> {
        proxy.log.lock().unwrap()[mark..]
            .iter()
            .find(|r| r.method == "POST" && r.path.ends_with("/servers"))
            .and_then(|r| r.server_id.clone())
    };
    let running_at = loop {
        let v = rt.block_on(papi.get(&format!("/v1/leases/{id}")))?;
        let t = proxy.t0.elapsed().as_secs_f64();
        if let (Some(r), None) = (real, sshd_at) {
            if created(mark).is_some_and(|sid| sshd_ready(r, &sid)) {
                sshd_at = Some(proxy.t0.elapsed().as_secs_f64());
            }
        }
        let s = v["state"].as_str().unwrap_or_default().to_string();
        if seen.last().is_none_or(|(last, _)| *last != s) {
            seen.push((s.clone(), t));
        }
        if s == "running" {
            break t;
        }
        if matches!(s.as_str(), "failed" | "refused" | "expired") || Instant::now() > deadline {
            return Err(format!("lease {id} ended in {s}: {v}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    // Then the first login: from the buyer's namespace, with the buyer's key, through the floating IP the
    // provider reports (first address), tried until it works.
    let boot = match real {
        None => None,
        Some(r) => {
            let sid = created(mark).ok_or("the provider never asked Nova for a server")?;
            let v = rt.block_on(papi.get(&format!("/v1/leases/{id}")))?;
            let addr = v["instance"]["addresses"][0]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let private = key.with_extension("");
            let deadline = Instant::now() + scenario::WAIT;
            loop {
                if sshd_at.is_none() && sshd_ready(r, &sid) {
                    sshd_at = Some(proxy.t0.elapsed().as_secs_f64());
                }
                if sshd_at.is_some() {
                    let ok = r
                        .ssh(&private, &addr, &["true"])
                        .map_err(|e| format!("ssh: {e}"))?;
                    if ok.status.success() {
                        break Some(RealBoot {
                            sshd_ready: sshd_at.unwrap_or_default() - mined_at,
                            first_ssh: proxy.t0.elapsed().as_secs_f64() - mined_at,
                        });
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("no ssh into {addr} (server {sid}) in time"));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    };
    let log: Vec<Record> = proxy.log.lock().unwrap()[mark..].to_vec();
    let nova: Vec<&Record> = log.iter().filter(|r| r.service == "nova").collect();
    let create = nova
        .iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/servers"))
        .ok_or("the provider never asked Nova for a server")?;
    let server_id = create.server_id.clone().unwrap_or_default();
    // Only answers about this server count: listings also show other leases' machines.
    let active = nova
        .iter()
        .find(|r| {
            r.sent >= create.sent
                && r.path.ends_with(&server_id)
                && r.statuses.iter().any(|s| s == "ACTIVE")
        })
        .ok_or("no ACTIVE answer from Nova on the wire")?;
    let polls = nova
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&server_id) && r.sent >= create.sent)
        .count();
    let nova_own = rt.block_on(async {
        let tok = lab.admin_token(client).await.ok()?;
        let v: Value = client
            .get(format!("{}/servers/{server_id}", lab.compute_url))
            .header("X-Auth-Token", tok)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let s = &v["server"];
        Some(unix_of(s["OS-SRV-USG:launched_at"].as_str()?)? - unix_of(s["created"].as_str()?)?)
    });
    let mut trace: Vec<(f64, String)> = log
        .iter()
        .map(|r| {
            let st = if r.statuses.len() == 1 {
                format!(" {}", r.statuses[0])
            } else {
                String::new()
            };
            let path = r.path.replace(&server_id, "{id}");
            let service = match r.service {
                "nova" => "",
                "neutron" => "neutron ",
                _ => "glance ",
            };
            (
                r.sent - mined_at,
                format!(
                    "{:.0}–{:.0} {service}{} {path}{st}",
                    (r.sent - mined_at) * 1e3,
                    (r.answered - mined_at) * 1e3,
                    r.method
                ),
            )
        })
        .chain(seen.iter().map(|(s, t)| {
            (
                t - mined_at,
                format!("{:.0} state {s}", (t - mined_at) * 1e3),
            )
        }))
        .collect();
    trace.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let spans: Vec<(f64, f64)> = log.iter().map(|r| (r.sent, r.answered)).collect();
    let cloud_busy = covered(&spans, mined_at, running_at);
    let neutron_spans: Vec<(f64, f64)> = log
        .iter()
        .filter(|r| r.service == "neutron")
        .map(|r| (r.sent, r.answered))
        .collect();
    let neutron_busy = covered(&neutron_spans, mined_at, running_at);
    let after_active_cloud = covered(&spans, active.answered, running_at);
    let poll_wait = (active.answered - create.sent) - covered(&spans, create.sent, active.answered);
    let to_funded = seen
        .iter()
        .find(|(s, _)| s != "payment_seen")
        .map(|(_, t)| t - mined_at);
    // Tidy up: end the lease so the lab does not fill with machines (a failure here changes no figure).
    let bapi = NodeApi::of(buyer, client);
    let _ = rt.block_on(bapi.post(&format!("/v1/leases/{id}/cancel"), &json!({})));
    // Wait until the provider has deleted the machine and closed the lease (after the config's 5 s hold),
    // so runs leave nothing behind in the shared lab.
    eventually(
        "the cancelled lease to close at the provider",
        scenario::WAIT,
        || {
            let v = rt.block_on(papi.get(&format!("/v1/leases/{id}")))?;
            match v["state"].as_str() {
                Some("closed" | "failed" | "expired" | "refused") => Ok(()),
                _ => Err(v["state"].to_string()),
            }
        },
    );
    Ok(Run {
        before_nova: create.sent - mined_at,
        nova_wire: active.answered - create.sent,
        after_active: running_at - active.answered,
        total: running_at - mined_at,
        nova_own,
        to_funded,
        polls,
        cloud_busy,
        neutron_busy,
        after_active_cloud,
        poll_wait,
        trace: trace.into_iter().map(|(_, s)| s).collect(),
        boot,
    })
}

#[cfg(test)]
mod tests {
    use super::{covered, node_steps, unix_of};

    #[test]
    fn node_steps_keep_wallet_commits_events_and_lease_changes_up_to_the_launch() {
        let log = "\u{1b}[2m2026-12-05T06:01:02.000100Z\u{1b}[0m DEBUG xov_wallet::chain: wallet mempool committed read_us=2400
2026-12-05T06:01:02.100200Z DEBUG xov_wallet::chain: wallet blocks committed blocks=1 applied_us=2100
2026-12-05T06:01:02.100300Z  INFO xov_node::api: request served
2026-12-05T06:01:02.100400Z DEBUG xov_node::lease::driver: wallet event received event=TipChanged { height: 7 }
2026-12-05T06:01:02.101000Z DEBUG xov_node::lease::driver: lease input applied lease=l1 decide_persist_us=600
2026-12-05T06:01:02.101100Z  INFO xov_node::lease::driver: launching lease=l1
2026-12-05T06:01:02.200000Z DEBUG xov_node::lease::driver: lease input applied lease=l1 decide_persist_us=500
";
        assert_eq!(
            node_steps(log),
            vec![
                "06:01:02.000100 wallet mempool committed read_us=2400",
                "06:01:02.100200 wallet blocks committed blocks=1 applied_us=2100",
                "06:01:02.100400 wallet event received event=TipChanged { height: 7 }",
                "06:01:02.101000 lease input applied lease=l1 decide_persist_us=600",
                "06:01:02.101100 launching lease=l1",
            ]
        );
        assert!(node_steps("").is_empty());
    }

    #[test]
    fn covered_counts_overlaps_once_and_clips() {
        let spans = [(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (-1.0, 0.5)];
        assert_eq!(covered(&spans, 0.0, 10.0), 4.0);
        assert_eq!(covered(&spans, 2.5, 5.5), 1.0);
        assert_eq!(covered(&[], 0.0, 1.0), 0.0);
    }

    #[test]
    fn openstack_timestamps_parse_as_utc() {
        assert_eq!(unix_of("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(unix_of("2026-11-23T15:20:01Z"), Some(1_795_447_201.0));
        assert_eq!(unix_of("2026-11-23T15:20:01.500000"), Some(1_795_447_201.5));
        assert_eq!(unix_of("garbage"), None);
    }
}
