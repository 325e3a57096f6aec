//! `xov doctor` (`GET /v1/doctor`): checks what usually makes a node or its offers invisible, or a lease
//! fail, and says how to fix each problem. Every check asks the real thing — the peers, the chain source's
//! peers, the cloud — rather than reading our own counters back.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xov_protocol::validate::MAX_CLOCK_SKEW_SECS;
use xov_protocol::{OfferKey, PoolId};

use crate::api::AppState;
use crate::clock::unix_now;

/// How many peers are asked for their copy of our offers.
const PEERS_ASKED: usize = 3;
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock differences up to this are fine (HTTP dates have whole seconds; messages travel).
const CLOCK_OK_SECS: i64 = 30;
/// Behind the chain source's peers by more than this many blocks is a failure: payments go unseen.
const CHAIN_FAIL_LAG: u64 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One check's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// `listen`, `peers`, `pools`, `offers_seen`, `chain`, `chain_client`, `fees`, `clock`, `wallet`,
    /// `openstack`.
    pub name: String,
    pub status: Level,
    pub detail: String,
    /// What to do about it (warnings and failures).
    pub fix: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Report {
    /// Every check is ok.
    pub healthy: bool,
    pub failures: usize,
    pub warnings: usize,
    pub checks: Vec<Check>,
    pub at: u64,
}

fn check(name: &str, status: Level, detail: impl Into<String>, fix: Option<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        fix,
    }
}

fn ok(name: &str, detail: impl Into<String>) -> Check {
    check(name, Level::Ok, detail, None)
}

fn is_loopback(a: &str) -> bool {
    a.starts_with("/ip4/127.") || a.starts_with("/ip6/::1/")
}

#[utoipa::path(get, path = "/v1/doctor", responses((status = 200, body = Report)))]
pub async fn api(State(st): State<AppState>) -> Json<Report> {
    Json(run(&st).await)
}

/// Runs every check. Independent checks run concurrently; the slowest bounds the time (about 10 s).
pub async fn run(st: &AppState) -> Report {
    let mut clock_samples: Vec<(String, i64)> = Vec::new();
    let (net_checks, chain, openstack) =
        tokio::join!(network_checks(st), chain_check(st), openstack_check(st));
    let mut checks = net_checks;
    let (chain, chain_time) = chain;
    checks.push(chain);
    if let Some(t) = chain_time {
        clock_samples.push(t);
    }
    if let Some((c, t)) = openstack {
        checks.push(c);
        if let Some(t) = t {
            clock_samples.push(t);
        }
    }
    checks.push(clock_check(st, &clock_samples));
    checks.push(wallet_check(st));
    if let Some(w) = &st.wallet {
        checks.push(chain_client_check(&w.chain_health()));
        checks.push(fee_check(&w.fee_choice().await));
    }
    let failures = checks.iter().filter(|c| c.status == Level::Fail).count();
    let warnings = checks.iter().filter(|c| c.status == Level::Warn).count();
    Report {
        healthy: failures == 0 && warnings == 0,
        failures,
        warnings,
        checks,
        at: unix_now(),
    }
}

async fn network_checks(st: &AppState) -> Vec<Check> {
    let cfg = &st.config;
    let status = match st.net.status().await {
        Ok(s) => s,
        Err(e) => {
            return vec![check(
                "listen",
                Level::Fail,
                format!("the network task does not answer: {e}"),
                Some(
                    "restart the node (`xov node stop`, then `xov node run`) and read its log"
                        .into(),
                ),
            )]
        }
    };
    let mut out = Vec::new();

    // Reachability: where we listen, and whether peers elsewhere could dial it.
    let addrs = &status.listen_addrs;
    out.push(if addrs.is_empty() {
        check(
            "listen",
            Level::Fail,
            "the node listens on no address: no peer can dial it",
            Some("set network.listen in xov.toml, e.g. [\"/ip4/0.0.0.0/tcp/9738\", \"/ip4/0.0.0.0/udp/9738/quic-v1\"]".into()),
        )
    } else if addrs.iter().all(|a| is_loopback(a))
        && cfg.network.bootstrap.iter().any(|b| !is_loopback(b))
    {
        check(
            "listen",
            Level::Warn,
            format!("listening on loopback only ({}), but the bootstrap peers are on other machines: they cannot dial back", addrs.join(", ")),
            Some("listen on all interfaces: network.listen = [\"/ip4/0.0.0.0/tcp/9738\", \"/ip4/0.0.0.0/udp/9738/quic-v1\"]; behind NAT, forward TCP and UDP port 9738 to this machine".into()),
        )
    } else {
        ok(
            "listen",
            format!(
                "listening on {}{}",
                addrs.join(", "),
                if addrs.iter().all(|a| is_loopback(a)) {
                    " (loopback: a local test network)"
                } else {
                    "; behind NAT, peers reach you only if TCP/UDP port 9738 is forwarded to this machine"
                }
            ),
        )
    });

    // Peers.
    let peers = st.net.peers().await.unwrap_or_default();
    let banned = peers.iter().filter(|p| p.banned).count();
    out.push(if status.connected_peers == 0 {
        check(
            "peers",
            Level::Fail,
            format!("no peer connected ({} known, {banned} banned)", peers.len()),
            Some(if cfg.network.bootstrap.is_empty() && status.seeds.is_empty() && status.known_peers == 0 && !cfg.network.mdns {
                "this node has no way into the network: no bootstrap peers, no seed names, none remembered from earlier runs, mDNS off. Set network.bootstrap to a pool member's address (`xov status` on that node prints its listen addresses, ending in /p2p/<id>) or network.seeds to a seed name (/dnsaddr/<name>), or network.mdns = true on a LAN".into()
            } else if cfg.network.bootstrap.is_empty() && !status.seeds.is_empty() {
                format!("none of the seeds ({}) gave a peer that answered{}: check this machine resolves DNS and reaches the internet (outbound TCP/UDP 9738), or set network.bootstrap to a pool member's address (`xov status` on that node prints its listen addresses, ending in /p2p/<id>)", status.seeds.join(", "), if status.known_peers > 0 { format!(", nor did the {} remembered peers", status.known_peers) } else { String::new() })
            } else if cfg.network.bootstrap.is_empty() {
                format!("none of the {} peers remembered from earlier runs answered{}: set network.bootstrap to a pool member's address (`xov status` on that node prints its listen addresses, ending in /p2p/<id>)", status.known_peers, if cfg.network.mdns { ", and mDNS found nobody" } else { "" })
            } else {
                format!("none of the bootstrap peers ({}) answered: check they run, that this machine can reach them (firewall, outbound TCP/UDP), and that the addresses end in the right /p2p/<id>", cfg.network.bootstrap.join(", "))
            }),
        )
    } else {
        ok(
            "peers",
            format!(
                "{} connected, {} known{}",
                status.connected_peers,
                peers.len(),
                if banned > 0 {
                    format!(", {banned} banned for misbehaviour")
                } else {
                    String::new()
                }
            ),
        )
    });

    // Pool membership.
    let members = st.net.members().await.unwrap_or_default();
    // Fixed once loaded, so even a poisoned lock tells it truly.
    let chain = st.market.read().unwrap_or_else(|p| p.into_inner()).chain();
    let (joined, names, own): (Vec<PoolId>, Vec<String>, Vec<_>) = match st.market.read() {
        Ok(m) => {
            let joined: Vec<PoolId> = m.joined().iter().copied().collect();
            let names = joined
                .iter()
                .map(|id| {
                    m.pools()
                        .find(|c| c.body().pool_id() == *id)
                        .map(|c| c.body().name.clone())
                        .unwrap_or_else(|| id.to_string()[..12].to_string())
                })
                .collect();
            (joined, names, m.own_offers())
        }
        Err(_) => (Vec::new(), Vec::new(), Vec::new()),
    };
    let lonely: Vec<&String> = joined
        .iter()
        .zip(&names)
        .filter(|(id, _)| members.get(*id).copied().unwrap_or(0) == 0)
        .map(|(_, n)| n)
        .collect();
    out.push(if joined.is_empty() {
        check(
            "pools",
            Level::Warn,
            "this node is in no pool: it neither sees nor shows offers",
            Some("`xov pool join public` (or the pool your providers use)".into()),
        )
    } else if !lonely.is_empty() {
        check(
            "pools",
            Level::Warn,
            format!(
                "no connected peer is in pool(s) {}: offers there reach no one",
                lonely.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Some(format!("connect to a member of the pool: add its address to network.bootstrap; members find each other through the DHT once connected to anyone in the network. Only nodes on {chain} share pools with this one: check that their [wallet] network is the same")),
        )
    } else {
        ok(
            "pools",
            joined
                .iter()
                .zip(&names)
                .map(|(id, n)| format!("{n}: {} peers", members.get(id).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", "),
        )
    });

    // Own offers, as the peers see them.
    out.push(if own.is_empty() {
        if cfg.provider.enabled {
            check(
                "offers_seen",
                Level::Warn,
                "this provider publishes no offer yet",
                Some("see the openstack check: offers come from the cloud's inventory (flavors in [provider.inventory] with free quota); the log says why a flavor is left out".into()),
            )
        } else {
            ok("offers_seen", "this node publishes no offers (not a provider)")
        }
    } else {
        let pools: Vec<PoolId> = own
            .iter()
            .map(|o| o.body().pool)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        match crate::api::offer_probe::ask_peers(
            &status.listen_addrs,
            &cfg.network.bootstrap,
            chain,
            &pools,
            PEERS_ASKED,
            PROBE_TIMEOUT,
        )
        .await
        {
            Err(e) => check(
                "offers_seen",
                Level::Warn,
                format!("could not ask peers: {e}"),
                Some("make sure network.listen includes a TCP address".into()),
            ),
            Ok(books) => {
                let answered: Vec<_> = books.values().filter(|b| b.error.is_none()).collect();
                let errors: Vec<String> = books
                    .iter()
                    .filter_map(|(p, b)| b.error.as_ref().map(|e| format!("{}…: {e}", &p.to_string()[..12])))
                    .collect();
                let unseen: Vec<u64> = own
                    .iter()
                    .filter(|o| {
                        let key = (o.body().pool, OfferKey::of(o.body()));
                        !answered.iter().any(|b| b.offers.contains_key(&key))
                    })
                    .map(|o| o.body().offer_id)
                    .collect();
                let stale = own
                    .iter()
                    .filter(|o| {
                        let key = (o.body().pool, OfferKey::of(o.body()));
                        answered
                            .iter()
                            .any(|b| b.offers.get(&key).is_some_and(|s| *s < o.body().sequence))
                    })
                    .count();
                if answered.is_empty() {
                    check(
                        "offers_seen",
                        Level::Fail,
                        format!(
                            "no peer could be asked for its book{}",
                            if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) }
                        ),
                        Some("see the peers check; peers must be able to dial this node (listen addresses, NAT port forwarding)".into()),
                    )
                } else if unseen.len() == own.len() {
                    check(
                        "offers_seen",
                        Level::Fail,
                        format!("none of this node's {} offers is in the books of the {} peers asked", own.len(), answered.len()),
                        Some("peers reject offers from a clock that is off (see clock) or that break the pool's rules (`xov pool list`); check that the peers are in the same pool".into()),
                    )
                } else if !unseen.is_empty() {
                    check(
                        "offers_seen",
                        Level::Warn,
                        format!("offers {unseen:?} are not in any of the {} peers' books asked; the others are", answered.len()),
                        Some("they reach peers with the next refresh; if they never do, compare them with the pool's rules (`xov pool list`)".into()),
                    )
                } else {
                    ok(
                        "offers_seen",
                        format!(
                            "all {} offers are in the books of the {} peers asked{}",
                            own.len(),
                            answered.len(),
                            if stale > 0 { format!(" ({stale} in an older version, being replaced)") } else { String::new() }
                        ),
                    )
                }
            }
        }
    });
    out
}

/// Wallet tip versus what the chain source's peers announce; also returns a clock sample.
async fn chain_check(st: &AppState) -> (Check, Option<(String, i64)>) {
    let Some(w) = &st.wallet else {
        return (ok("chain", "no wallet, so no chain to follow"), None);
    };
    let tip = w.tip_height() as u64;
    let wc = &st.config.wallet;
    let (source, answer) = if wc.chain == "rpc" {
        (
            format!("bitcoind RPC {}", wc.rpc_url),
            crate::api::chain_probe::bitcoind_rpc(&wc.rpc_url, &wc.rpc_cookie).await,
        )
    } else {
        let network = w.network();
        let mut best: Result<crate::api::chain_probe::PeerChain, String> =
            Err("no compact-filter peer configured (wallet.peers)".into());
        for p in wc.peers.iter().filter_map(|p| p.parse().ok()).take(3) {
            match crate::api::chain_probe::p2p_version(p, network).await {
                Ok(c) if best.as_ref().map_or(true, |b| c.height > b.height) => best = Ok(c),
                Ok(_) => {}
                Err(e) if best.is_err() => best = Err(format!("{p}: {e}")),
                Err(_) => {}
            }
        }
        (format!("filter peers {}", wc.peers.join(", ")), best)
    };
    match answer {
        Err(e) => (
            check(
                "chain",
                Level::Fail,
                format!(
                    "cannot ask the chain source ({source}): {e}; the wallet is at height {tip}"
                ),
                Some(if wc.chain == "rpc" {
                    "check that bitcoind runs with server=1, that wallet.rpc_url is its RPC address and wallet.rpc_cookie its .cookie file (readable by this user)".into()
                } else {
                    "check wallet.peers: Bitcoin nodes serving compact block filters (bitcoind with blockfilterindex=1 and peerblockfilters=1), reachable from here".into()
                }),
            ),
            None,
        ),
        Ok(c) => {
            let lag = c.height.saturating_sub(tip);
            let sample = c.time.map(|t| (source.clone(), t));
            let chk = if lag <= 1 {
                ok(
                    "chain",
                    format!("wallet at height {tip}; {source} at {}", c.height),
                )
            } else if lag <= CHAIN_FAIL_LAG {
                check(
                    "chain",
                    Level::Warn,
                    format!("wallet at height {tip}, {lag} blocks behind {source} ({}): catching up", c.height),
                    Some("wait a minute; if the gap stays, read the node's log for chain-source errors".into()),
                )
            } else {
                check(
                    "chain",
                    Level::Fail,
                    format!("wallet at height {tip}, {lag} blocks behind {source} ({}): payments in newer blocks are not seen", c.height),
                    Some("the chain source is stuck or still syncing: check it (bitcoind: `bitcoin-cli getblockchaininfo`) and the node's log".into()),
                )
            };
            (chk, sample)
        }
    }
}

/// The chain source's own health, as its supervisor sees it (state, peers, tips, restarts, last warning).
pub fn chain_client_check(h: &xov_wallet::ChainHealth) -> Check {
    use xov_wallet::ChainState;
    let tips = format!(
        "wallet tip {}, headers {}, peers' tip {}",
        h.wallet_tip,
        h.header_tip.map_or("?".into(), |t| t.to_string()),
        h.peer_tip.map_or("?".into(), |t| t.to_string())
    );
    let restarts = match (h.restarts, h.last_restart_reason) {
        (0, _) => String::new(),
        (n, Some(r)) => format!("; restarted {n} times, last because {}", r.describe()),
        (n, None) => format!("; restarted {n} times"),
    };
    let warning = h
        .last_warning
        .as_ref()
        .map(|w| format!("; last warning: {w}"))
        .unwrap_or_default();
    let detail = format!(
        "{} {}: {} peer(s), {tips}, {} s since progress{restarts}{warning}",
        h.source,
        h.state.as_str(),
        h.peers,
        h.secs_since_progress
    );
    let peers_fix = if h.source == "bitcoind RPC" {
        "check that bitcoind runs and answers on wallet.rpc_url"
    } else {
        "check wallet.peers: Bitcoin nodes on this network serving compact block filters (bitcoind -blockfilterindex=1 -peerblockfilters=1), reachable from here"
    };
    match h.state {
        ChainState::Synced => ok("chain_client", detail),
        ChainState::Syncing => check(
            "chain_client",
            Level::Warn,
            detail,
            Some("catching up with the peers; payments in newer blocks are seen once it is there".into()),
        ),
        ChainState::Connecting => check(
            "chain_client",
            if h.secs_since_progress > 120 { Level::Fail } else { Level::Warn },
            detail,
            Some(peers_fix.into()),
        ),
        ChainState::Stalled => check(
            "chain_client",
            Level::Fail,
            detail,
            Some(format!("the client is restarted with back-off by itself; if it keeps stalling, {peers_fix}, or use chain = \"rpc\" with a bitcoind of your own")),
        ),
    }
}

/// The fee rate the wallet pays now when a command names none, and where it comes from.
pub fn fee_check(c: &xov_wallet::FeeChoice) -> Check {
    use xov_wallet::FeeSource;
    let from = match c.source {
        FeeSource::Estimate => "bitcoind's estimate",
        FeeSource::Target => "wallet.fee_target (no estimate available)",
        FeeSource::MinRelay => "the peers' minimum relay fee (above wallet.fee_target)",
        FeeSource::Cap => "capped by wallet.fee_max",
    };
    let detail = format!("payments pay {} sat/vB: {from}", c.sat_per_vb);
    match c.source {
        FeeSource::Cap => check(
            "fees",
            Level::Warn,
            detail,
            Some("the estimate is above wallet.fee_max: payments may confirm slowly; raise fee_max if that is acceptable".into()),
        ),
        _ => ok("fees", detail),
    }
}

/// The provider's cloud: credentials (a fresh Keystone token), compute quota and what can be offered.
async fn openstack_check(st: &AppState) -> Option<(Check, Option<(String, i64)>)> {
    let pc = &st.config.provider;
    if !pc.enabled {
        return None;
    }
    let mut os = match pc.openstack_config()? {
        Ok(os) => os,
        Err(e) => {
            return Some((
                check(
                    "openstack",
                    Level::Fail,
                    format!("the OpenStack configuration cannot be used: {e}"),
                    Some("fix [provider.openstack]: `cloud = \"NAME\"` with that entry in clouds.yaml (./clouds.yaml, ~/.config/openstack/, /etc/openstack/ or OS_CLIENT_CONFIG_FILE), auth_url with [provider.openstack.auth], or OS_CLOUD / OS_AUTH_URL and the other OS_* variables in the node's environment; see docs/operator.md".into()),
                ),
                None,
            ))
        }
    };
    // One try and a short limit: the doctor reports, the node's own calls retry.
    os.retry.attempts = 1;
    os.request_timeout = Duration::from_secs(5);
    let auth_url = os.auth_url.clone();
    // the provisioner's own client: the cloud's CA file (cacert) and timeouts apply
    let date_client = xov_provisioner::http_client(&os).ok();
    let date = async {
        let r = date_client?.get(&auth_url).send().await.ok()?;
        let d = r
            .headers()
            .get(reqwest::header::DATE)?
            .to_str()
            .ok()?
            .to_string();
        crate::api::chain_probe::http_date(&d).map(|t| (format!("OpenStack {auth_url}"), t))
    };
    let inventory = async {
        // The machines the node itself counts: its owner marker defaults to its id, as in the daemon.
        let me = st
            .market
            .read()
            .map(|m| m.node_id().to_string())
            .unwrap_or_default();
        let p = xov_provisioner::OpenStackProvisioner::new(
            os.with_default_owner(&me),
            pc.inventory.clone(),
        )
        .map_err(|e| e.to_string())?;
        xov_provisioner::Provisioner::inventory(&p)
            .await
            .map_err(|e| e.to_string())
    };
    let (sample, inv) = tokio::join!(date, inventory);
    let chk = match inv {
        Err(e) => check(
            "openstack",
            Level::Fail,
            format!("OpenStack at {auth_url} cannot be used: {e}"),
            Some(format!(
                "check that Keystone answers (`curl {auth_url}`) and Nova and Glance are up; that the credentials (the clouds.yaml entry, the OS_* variables or [provider.openstack.auth]) are valid (try them with `openstack token issue`); for https, that cacert names the CA of the cloud's certificates; and the region. Leases wait and offers lapse until it is back; the node retries by itself"
            )),
        ),
        Ok(inv) => {
            let q = &inv.quota_left;
            let quota = format!(
                "quota left: {} instances, {} cores, {} MiB RAM",
                q.instances.map_or("unlimited".into(), |n| n.to_string()),
                q.cores.map_or("unlimited".into(), |n| n.to_string()),
                q.ram_mib.map_or("unlimited".into(), |n| n.to_string()),
            );
            let offerable = inv.shapes.iter().filter(|s| s.capacity > 0).count();
            if q.instances == Some(0) || q.cores == Some(0) || q.ram_mib == Some(0) {
                check(
                    "openstack",
                    Level::Warn,
                    format!("credentials work, but the project's quota is used up ({quota}): nothing can be offered"),
                    Some("raise the project's compute quota (`openstack quota set --instances N --cores N --ram MiB PROJECT`) or end machines you run outside xov".into()),
                )
            } else if offerable == 0 {
                check(
                    "openstack",
                    Level::Warn,
                    format!("credentials work ({quota}), but no flavor of [provider.inventory] can be offered: {}", inv.warnings.join("; ")),
                    Some("check the flavor and image names in [[provider.inventory.entries]] against `openstack flavor list` and `openstack image list`".into()),
                )
            } else {
                ok(
                    "openstack",
                    format!("authenticated at {auth_url}; {offerable} flavor(s) offerable; {quota}{}", if inv.warnings.is_empty() { String::new() } else { format!("; notes: {}", inv.warnings.join("; ")) }),
                )
            }
        }
    };
    Some((chk, sample))
}

/// Our clock against the time sources we have: the chain source, the cloud, and other providers' offers.
fn clock_check(st: &AppState, samples: &[(String, i64)]) -> Check {
    let now = unix_now() as i64;
    let mut worst: Option<(String, i64)> = None;
    let mut consider = |name: String, skew: i64| {
        if worst.as_ref().is_none_or(|(_, w)| skew.abs() > w.abs()) {
            worst = Some((name, skew));
        }
    };
    for (name, t) in samples {
        consider(name.clone(), now - t);
    }
    // Offers signed "in the future" by other nodes mean our clock is behind theirs.
    if let Ok(m) = st.market.read() {
        let me = m.node_id();
        if let Some(newest) = m
            .book()
            .iter()
            .filter(|o| o.body().provider != me)
            .map(|o| o.body().created_at as i64)
            .max()
        {
            if newest > now {
                consider(
                    "the newest offer from another provider".into(),
                    now - newest,
                );
            }
        }
    }
    let fix = Some("turn on time synchronisation: `timedatectl set-ntp true` (systemd-timesyncd) or install chrony".to_string());
    match worst {
        None => check(
            "clock",
            Level::Warn,
            "no time source to compare with (no chain source, no cloud, no offers from others)",
            None,
        ),
        Some((name, skew)) if skew.abs() <= CLOCK_OK_SECS => ok(
            "clock",
            format!("within {} s of {name}", skew.abs()),
        ),
        Some((name, skew)) if skew.unsigned_abs() < MAX_CLOCK_SKEW_SECS / 2 => check(
            "clock",
            Level::Warn,
            format!("{} s {} {name}", skew.abs(), if skew > 0 { "ahead of" } else { "behind" }),
            fix,
        ),
        Some((name, skew)) => check(
            "clock",
            Level::Fail,
            format!(
                "{} s {} {name}: peers reject messages more than {MAX_CLOCK_SKEW_SECS} s off, and leases are metered by the clock",
                skew.abs(),
                if skew > 0 { "ahead of" } else { "behind" }
            ),
            fix,
        ),
    }
}

fn wallet_check(st: &AppState) -> Check {
    match &st.wallet {
        None => check(
            "wallet",
            Level::Warn,
            "no wallet: this node can browse offers but cannot pay for leases or be paid",
            Some(
                "set [wallet] enabled = true with a chain source in xov.toml (see docs/wallet.md)"
                    .into(),
            ),
        ),
        Some(w) => {
            let b = w.balance();
            ok(
                "wallet",
                format!(
                    "{}: {} sat confirmed, {} sat pending",
                    w.network(),
                    b.confirmed_sat,
                    b.pending_sat
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xov_wallet::{ChainHealth, ChainState, StallReason};

    fn health(state: ChainState, secs: u64) -> ChainHealth {
        ChainHealth {
            source: "compact block filters".into(),
            state,
            peers: 1,
            header_tip: Some(120),
            peer_tip: Some(120),
            wallet_tip: 100,
            secs_since_progress: secs,
            restarts: 2,
            last_restart_reason: Some(StallReason::NoProgress),
            last_warning: Some("A connection to a peer timed out".into()),
        }
    }

    #[test]
    fn chain_client_verdicts() {
        let cases = [
            ("synced is ok", ChainState::Synced, 5, Level::Ok),
            ("syncing warns", ChainState::Syncing, 5, Level::Warn),
            (
                "connecting briefly warns",
                ChainState::Connecting,
                30,
                Level::Warn,
            ),
            (
                "connecting for minutes fails",
                ChainState::Connecting,
                600,
                Level::Fail,
            ),
            ("stalled fails", ChainState::Stalled, 100, Level::Fail),
        ];
        for (name, state, secs, want) in cases {
            let c = chain_client_check(&health(state, secs));
            assert_eq!(c.status, want, "{name}: {c:?}");
            assert_eq!(c.fix.is_some(), want != Level::Ok, "{name}: {c:?}");
        }
    }

    #[test]
    fn chain_client_detail_names_state_tips_restarts_and_the_warning() {
        let d = chain_client_check(&health(ChainState::Stalled, 100)).detail;
        for part in [
            "stalled",
            "wallet tip 100",
            "peers' tip 120",
            "restarted 2 times",
            "behind the peers and no progress",
            "timed out",
        ] {
            assert!(d.contains(part), "{part:?} missing from {d:?}");
        }
    }

    #[test]
    fn a_capped_fee_warns() {
        use xov_wallet::{FeeChoice, FeeSource};
        let c = fee_check(&FeeChoice {
            sat_per_vb: 500,
            source: FeeSource::Cap,
        });
        assert_eq!(c.status, Level::Warn);
        let c = fee_check(&FeeChoice {
            sat_per_vb: 2,
            source: FeeSource::Target,
        });
        assert_eq!(c.status, Level::Ok);
        assert!(c.detail.contains("2 sat/vB"));
    }
}
