//! Building blocks of a local market, shared by the `xov-testnet` command and the end-to-end tests:
//! configs for providers (attached to the OpenStack lab, paid through bitcoind) and buyers, and waits on
//! lease states.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::bitcoind::Bitcoind;
use crate::node::*;
use crate::openstack::OpenStackLab;

pub const WAIT: Duration = Duration::from_secs(120);
/// 36,000 sats/h is 10 sats a second: small payments buy seconds, so the whole life fits in a test.
pub const PRICE_P1: u64 = 36_000;
pub const PRICE_P2: u64 = 54_000;

pub fn provider_toml(lab: &OpenStackLab, btc: &Bitcoind, price: u64) -> String {
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
ssh_user = "debian"

[provider.openstack]
auth_url = "{auth}"
network = "none"
region = "{region}"

[provider.openstack.auth]
type = "password"
username = "{user}"
password = "{pass}"
project_name = "{project}"
user_domain = "{udom}"
project_domain = "{pdom}"

[[provider.inventory.entries]]
flavor = "{flavor}"
price_sats_per_hour = {price}
images = [{{ offer = "debian-12", glance = "{image}" }}]
"#,
        rpc = btc.rpc_url(),
        cookie = btc.cookie_file().display(),
        auth = lab.auth_url,
        region = lab.region,
        user = lab.username,
        pass = lab.password,
        project = lab.project_name,
        udom = lab.user_domain,
        pdom = lab.project_domain,
        flavor = lab.flavor_name,
        image = lab.image_name,
    )
}

pub fn buyer_toml(btc: &Bitcoind) -> String {
    format!(
        "[wallet]\nenabled = true\nnetwork = \"regtest\"\nchain = \"filters\"\npeers = [\"{}\"]\n",
        btc.p2p_addr()
    )
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
        &format!("lease {} in state {want}", &id[..12]),
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
