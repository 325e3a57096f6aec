//! Building blocks of a local market, shared by the `xov-testnet` command and the end-to-end tests:
//! configs for providers (attached to the OpenStack lab, paid through bitcoind) and buyers, and waits on
//! lease states.
//!
//! Every provider config names its owner (`owner` in `[provider.openstack]`), given by the run's
//! [`LabCleanup`]: what the provider makes in the lab carries it, and the guard deletes exactly that when it
//! is dropped. A provider keeps its owner across restarts (the same name gives the same owner).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::bitcoind::Bitcoind;
use crate::node::*;
use crate::openstack::{LabCleanup, OpenStackLab};

pub const WAIT: Duration = Duration::from_secs(120);
/// 36,000 sats/h is 10 sats a second: small payments buy seconds, so the whole life fits in a test.
pub const PRICE_P1: u64 = 36_000;
pub const PRICE_P2: u64 = 54_000;

/// A provider's config; `owner` marks what it makes in the lab (from [`LabCleanup::owner`]).
pub fn provider_toml(lab: &OpenStackLab, btc: &Bitcoind, price: u64, owner: &str) -> String {
    provider_toml_with(lab, btc, price, owner, &ProviderOpts::default())
}

/// Provider settings the tests vary.
#[derive(Debug, Clone)]
pub struct ProviderOpts {
    /// Gossip offers (true) or answer bids only (false).
    pub advertise: bool,
    /// Reach Nova through this URL (a fault proxy) instead of the catalog's.
    pub compute_endpoint: Option<String>,
    /// Reach Neutron through this URL instead of the catalog's.
    pub network_endpoint: Option<String>,
    /// Reach Glance through this URL instead of the catalog's.
    pub image_endpoint: Option<String>,
    /// More TOML appended to the config (whole tables, e.g. `[provider.admission.anonymous]`).
    pub extra: String,
    /// The Glance image behind the offer's `debian-12` (the lab's `tiny-raw` when `None`); the real mode's
    /// `xov-tiny` boots for real.
    pub glance_image: Option<String>,
    /// The user the buyer logs in as (`debian` when `None`).
    pub ssh_user: Option<String>,
}

impl Default for ProviderOpts {
    fn default() -> Self {
        ProviderOpts {
            advertise: true,
            compute_endpoint: None,
            network_endpoint: None,
            image_endpoint: None,
            extra: String::new(),
            glance_image: None,
            ssh_user: None,
        }
    }
}

pub fn provider_toml_with(
    lab: &OpenStackLab,
    btc: &Bitcoind,
    price: u64,
    owner: &str,
    opts: &ProviderOpts,
) -> String {
    let compute = opts
        .compute_endpoint
        .as_ref()
        .map(|u| format!("compute_endpoint_override = \"{u}\"\n"))
        .unwrap_or_default()
        + &opts
            .network_endpoint
            .as_ref()
            .map(|u| format!("network_endpoint_override = \"{u}\"\n"))
            .unwrap_or_default()
        + &opts
            .image_endpoint
            .as_ref()
            .map(|u| format!("image_endpoint_override = \"{u}\"\n"))
            .unwrap_or_default();
    format!(
        r#"
[wallet]
enabled = true
network = "regtest"
chain = "rpc"
rpc_url = "{rpc}"
rpc_cookie = "{cookie}"

[lease]
min_confirmations = 1
refund_confirmations = 1
warn_before_secs = 15
grace_secs = 5
hold_secs = 5

[provider]
enabled = true
pool = "public"
country = "DE"
region = "lab"
offer_ttl_secs = 600
min_lease_secs = 30
max_lease_secs = 86400
inventory_interval_secs = 5
reconcile_interval_secs = 5
ssh_user = "{ssh_user}"
advertise = {advertise}

[provider.openstack]
auth_url = "{auth}"
network = "{network}"
region = "{region}"
cacert = "{cacert}"
owner = "{owner}"
{compute}
[provider.openstack.auth]
type = "password"
username = "{user}"
password = "{pass}"
project_name = "{project}"
user_domain = "{udom}"
project_domain = "{pdom}"
{access}
[[provider.inventory.entries]]
flavor = "{flavor}"
price_sats_per_hour = {price}
images = [{{ offer = "debian-12", glance = "{image}" }}]
"#,
        rpc = btc.rpc_url(),
        cookie = btc.cookie_file().display(),
        auth = lab.auth_url,
        region = lab.region,
        // The lab's public endpoints are https, certified by its own CA.
        cacert = lab.cacert.display(),
        // Machines boot on the lab's tenant network, so the buyer gets an address.
        network = lab.tenant_network.as_deref().unwrap_or("none"),
        // Each lease gets a security group (port 22, and 8080 when its buyer asks) and a floating IP from the
        // lab's external network.
        access = lab
            .public_network
            .as_deref()
            .map(|n| {
                format!(
                    "[provider.openstack.access]\nexternal_network = \"{n}\"\nbuyer_ports = [8080]\n"
                )
            })
            .unwrap_or_default(),
        user = lab.username,
        pass = lab.password,
        project = lab.project_name,
        udom = lab.user_domain,
        pdom = lab.project_domain,
        flavor = lab.flavor_name,
        image = opts.glance_image.as_deref().unwrap_or(&lab.image_name),
        ssh_user = opts.ssh_user.as_deref().unwrap_or("debian"),
        advertise = opts.advertise,
    ) + &opts.extra
}

/// A buyer's config. Its wallet uses the default chain source, compact block filters, with the regtest
/// bitcoind as its only peer (a buyer on a laptop has no bitcoind of its own); it sees a payment once it is
/// in a block.
pub fn buyer_toml(btc: &Bitcoind) -> String {
    buyer_toml_with(btc, "", "")
}

/// A buyer's config with more `[wallet]` keys (`fee_target = 1`, one per line) and more tables after it.
pub fn buyer_toml_with(btc: &Bitcoind, wallet_keys: &str, tables: &str) -> String {
    format!(
        "[wallet]\nenabled = true\nnetwork = \"regtest\"\nchain = \"filters\"\npeers = [\"{}\"]\n{wallet_keys}\n{tables}",
        btc.p2p_addr()
    )
}

/// A buyer's `[lease]` terms for slices that fit a test: the providers here warn 15 s before the paid time
/// ends (`provider_toml`), so the buyer pays the next slice 35 s before it ends, and asks for a fresh status
/// when the last one is older than 10 s (and gives up on a provider that does not answer within 10 s).
pub const BUYER_SLICE_TERMS: &str =
    "[lease]\nwarn_before_secs = 15\nslice_lead_secs = 20\nstatus_fresh_secs = 10\n";

/// `xov order` for one vCPU of debian-12 paid in slices: `budget` sats in all, `slice_hours` each.
pub fn order_budget(buyer: &Daemon, ssh_key: &Path, budget: u64, slice_hours: &str) -> Value {
    let budget = budget.to_string();
    buyer.json(&[
        "order",
        "--vcpus",
        "1",
        "--image",
        "debian-12",
        "--max-price",
        "60000",
        "--ssh-key",
        ssh_key.to_str().unwrap_or_default(),
        "--budget",
        &budget,
        "--slice-hours",
        slice_hours,
    ])
}

/// Txids in bitcoind's mempool.
pub fn mempool(btc: &Bitcoind) -> Vec<String> {
    btc.cli(&["getrawmempool"])
        .expect("getrawmempool")
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(String::from))
        .collect()
}

/// The test as the miner: mines a block when a transaction waits in the mempool; returns whether it did.
pub fn mine_pending(btc: &Bitcoind) -> bool {
    if mempool(btc).is_empty() {
        return false;
    }
    btc.mine(1).expect("mine");
    true
}

/// One output paying an address, as bitcoind sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidOutput {
    pub txid: String,
    pub sat: u64,
    /// Height of its block; None in the mempool.
    pub height: Option<u64>,
}

/// Every output paying `address` in the blocks from `from_height` to the tip and in the mempool, from
/// bitcoind's own view (it holds no wallet: blocks and transactions are read whole, `-txindex` is on).
pub fn outputs_to(btc: &Bitcoind, address: &str, from_height: u64) -> Vec<PaidOutput> {
    let pays = |tx: &Value, height: Option<u64>| -> Vec<PaidOutput> {
        let txid = tx["txid"].as_str().unwrap_or_default().to_string();
        tx["vout"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["scriptPubKey"]["address"] == address)
            .map(|o| PaidOutput {
                txid: txid.clone(),
                sat: (o["value"].as_f64().unwrap_or(0.0) * 1e8).round() as u64,
                height,
            })
            .collect()
    };
    let mut out = Vec::new();
    let tip = btc.height().expect("height");
    for h in from_height..=tip {
        let hash = btc.cli(&["getblockhash", &h.to_string()]).expect("hash");
        let block = btc
            .cli(&["getblock", hash.as_str().unwrap_or_default(), "2"])
            .expect("block");
        for tx in block["tx"].as_array().into_iter().flatten() {
            out.extend(pays(tx, Some(h)));
        }
    }
    for txid in mempool(btc) {
        if let Ok(tx) = btc.cli(&["getrawtransaction", &txid, "true"]) {
            out.extend(pays(&tx, None));
        }
    }
    out
}

pub fn start(dir: &Path, toml: &str, bootstrap: Option<&Daemon>) -> Daemon {
    std::fs::write(dir.join("xov.toml"), toml).unwrap();
    let env: Vec<(&str, String)> = bootstrap
        .map(|b| vec![("XOV_NETWORK_BOOTSTRAP", b.bootstrap())])
        .unwrap_or_default();
    Daemon::start_with(dir, &env)
}

pub fn lease(d: &Daemon, id: &str) -> Value {
    d.json(&["leases", "show", id])
}

pub fn state(d: &Daemon, id: &str) -> String {
    lease(d, id)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn wait_state(d: &Daemon, id: &str, want: &str) -> Value {
    eventually(
        &format!("lease {} in state {want}", id.get(..12).unwrap_or(id)),
        WAIT,
        || {
            let l = lease(d, id);
            if l["state"] == want {
                Ok(l)
            } else {
                Err(format!("{} ({})", l["state"], l["history"]))
            }
        },
    )
}

/// A buyer's SSH key pair made with `ssh-keygen` in `dir`; returns the public key file.
pub fn ssh_key(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "xov-buyer", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (Debian package openssh-client) makes the buyer's key");
    assert!(st.success(), "ssh-keygen failed");
    key.with_extension("pub")
}

/// Two providers attached to the lab (P1 cheaper) and a buyer, each in its own directory under `root`.
pub struct LocalMarket {
    pub p1: Daemon,
    pub p2: Daemon,
    pub buyer: Daemon,
}

/// The owner names of the market's providers, for [`LabCleanup::owner`].
pub const P1: &str = "p1";
pub const P2: &str = "p2";

impl LocalMarket {
    /// The market; its providers' owners come from `cleanup` ([`P1`], [`P2`]).
    pub fn start(
        root: &Path,
        btc: &Bitcoind,
        lab: &OpenStackLab,
        cleanup: &LabCleanup,
    ) -> LocalMarket {
        Self::start_with(root, btc, lab, &ProviderOpts::default(), cleanup)
    }

    /// The same with both providers configured by `opts` (the real mode's image, say).
    pub fn start_with(
        root: &Path,
        btc: &Bitcoind,
        lab: &OpenStackLab,
        opts: &ProviderOpts,
        cleanup: &LabCleanup,
    ) -> LocalMarket {
        let dir = |n: &str| {
            let d = root.join(n);
            std::fs::create_dir_all(&d).expect("market dir");
            d
        };
        let p1 = start(
            &dir("provider-1"),
            &provider_toml_with(lab, btc, PRICE_P1, &cleanup.owner(P1), opts),
            None,
        );
        let p2 = start(
            &dir("provider-2"),
            &provider_toml_with(lab, btc, PRICE_P2, &cleanup.owner(P2), opts),
            Some(&p1),
        );
        let buyer = start(&dir("buyer"), &buyer_toml(btc), Some(&p2));
        LocalMarket { p1, p2, buyer }
    }

    /// Restarts provider 1 from its data dir (after a crash, say), with the same owner.
    pub fn restart_p1(
        dir: &Path,
        btc: &Bitcoind,
        lab: &OpenStackLab,
        via: &Daemon,
        cleanup: &LabCleanup,
    ) -> Daemon {
        start(
            dir,
            &provider_toml(lab, btc, PRICE_P1, &cleanup.owner(P1)),
            Some(via),
        )
    }

    /// Waits until the buyer's book holds both providers' offers.
    pub fn wait_offers(&self) {
        eventually("both providers' offers in the buyer's book", WAIT, || {
            let v = self.buyer.json(&["offers", "list", "--image", "debian-12"]);
            let prices: Vec<u64> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["price_sats_per_hour"].as_u64())
                .collect();
            if prices == vec![PRICE_P1, PRICE_P2] {
                Ok(())
            } else {
                Err(format!("{prices:?}"))
            }
        });
    }

    /// Mines 101 blocks to the buyer and waits until its wallet sees them.
    pub fn fund_buyer(&self, btc: &Bitcoind) {
        fund(&self.buyer, btc)
    }
}

/// `xov order` for the testnet's usual machine: 1 vCPU with debian-12 for one hour, at most 60,000 sats/h,
/// with the buyer's public key file; `extra` adds options (`--pay`, `--refund-address A`).
pub fn order_one_vcpu(buyer: &Daemon, ssh_key: &Path, extra: &[&str]) -> Value {
    let key = ssh_key.to_str().unwrap_or_default();
    let mut args = vec![
        "order",
        "--vcpus",
        "1",
        "--image",
        "debian-12",
        "--max-price",
        "60000",
        "--hours",
        "1",
        "--ssh-key",
        key,
    ];
    args.extend_from_slice(extra);
    buyer.json(&args)
}

/// Mines 101 blocks to a node's wallet and waits until the wallet sees them, up to the chain's tip (a
/// wallet a few blocks behind would count blocks it has yet to see against what it sends next).
pub fn fund(node: &Daemon, btc: &Bitcoind) {
    let addr = node.json(&["wallet", "address"])["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    btc.mine_to(101, &addr).expect("mine to the buyer");
    let funded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually("buyer funded", WAIT, || {
            let b = node.json(&["wallet", "balance"]);
            let tip = btc.height().map_err(|e| e.to_string())?;
            if b["confirmed_sat"].as_u64().unwrap_or(0) > 0
                && b["tip_height"].as_u64().unwrap_or(0) >= tip
            {
                Ok(())
            } else {
                Err(b.to_string())
            }
        })
    }));
    if funded.is_err() {
        // The wallet's chain source is the usual suspect: show what the node said about it.
        let log = node.log_text();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "the buyer's wallet never saw the 101 blocks mined to it; last lines of its log:\n{}",
            tail.join("\n")
        );
    }
}

/// The real parts an end-to-end test runs against, and the guard that deletes what its providers make in
/// the lab (keep it alive for the whole test, declared before the nodes), or `None` when `XOV_SKIP_E2E=1`
/// was set explicitly. A part that cannot be started fails the test with how to start it.
pub fn real_parts(what: &str) -> Option<(Bitcoind, OpenStackLab, LabCleanup)> {
    if crate::skip_e2e(what) {
        return None;
    }
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
    let lab = OpenStackLab::ensure().unwrap_or_else(|e| panic!("{e}"));
    let cleanup = LabCleanup::new(&lab, what);
    Some((btc, lab, cleanup))
}

/// A new directory `name` under `root`, for one node's data.
pub fn subdir(root: &Path, name: &str) -> std::path::PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).expect("node dir");
    d
}

/// Waits until a node's book holds at least one debian-12 offer.
pub fn wait_any_offer(d: &Daemon) {
    eventually("an offer in the book", WAIT, || {
        let v = d.json(&["offers", "list", "--image", "debian-12"]);
        match v.as_array().map(|a| a.len()) {
            Some(n) if n > 0 => Ok(()),
            _ => Err(v.to_string()),
        }
    });
}
