//! The local API behaves as its /openapi.json says: Schemathesis (PyPI, pinned by
//! testnet/schemathesis/install.sh) runs `--checks all` against two testnet nodes and must find nothing.
//!
//! - A node with a funded wallet and no peers: the wallet and bond routes run against real coins on
//!   regtest (sends, bumps, bonds), and its orders find no offer.
//! - A node in a local market (two providers attached to the lab), with no wallet: every phase but the
//!   stateful one as above; then the stateful phase with its orders pinned to a real offer
//!   (testnet/schemathesis/orders.toml: offer, pool, key, refund address, `pay = false`; the rest is
//!   generated), so orders are invoiced and the phase follows the document's links from the order to its
//!   lease (show, extend, cancel). No wallet, so nothing is paid and no machine boots. The test fails when
//!   no order was invoiced or no link was followed.
//!
//! `POST /v1/node/stop` is left out: it does what it says. The only setting besides the pins is in
//! testnet/schemathesis/schemathesis.toml (a request the document allows may be answered 422 when its
//! content is wrong in a way no schema states, such as a checksum).

use std::path::{Path, PathBuf};
use std::process::Command;

use xov_testnet::node::*;
use xov_testnet::scenario::*;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The Schemathesis executable: `XOV_SCHEMATHESIS`, or where install.sh puts it.
fn schemathesis() -> PathBuf {
    let bin = std::env::var_os("XOV_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XOV_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/xov")
                });
            cache.join("st-venv/bin/schemathesis")
        });
    assert!(
        bin.exists(),
        "Schemathesis is not installed at {}: run `bash testnet/schemathesis/install.sh` (testnet/setup.sh does)",
        bin.display()
    );
    bin
}

/// Runs Schemathesis against `node` with `config` (and `env` for its `${...}`), `args` added; returns its
/// report, and whether it found nothing.
fn fuzz(
    node: &Daemon,
    config: &str,
    env: &[(&str, String)],
    args: &[&str],
    seed: u64,
) -> (bool, String) {
    fuzz_document(node, None, config, env, args, seed)
}

/// [`fuzz`] with the API document read from `document` (a file) instead of the node.
fn fuzz_document(
    node: &Daemon,
    document: Option<&Path>,
    config: &str,
    env: &[(&str, String)],
    args: &[&str],
    seed: u64,
) -> (bool, String) {
    let mut st = Command::new(schemathesis());
    st.arg("--no-color")
        .arg("--config-file")
        .arg(repo_root().join("testnet/schemathesis").join(config))
        .arg("run");
    match document {
        Some(file) => st.arg(file).arg("--url").arg(node.url("")),
        None => st.arg(node.url("/openapi.json")),
    };
    let out = st
        .args(["-H", &format!("Authorization: Bearer {}", node.cookie())])
        .args(["--checks", "all", "--exclude-path", "/v1/node/stop"])
        .args(["--seed", &seed.to_string()])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// The node's API document with orders that name hours, never a budget: a node without a wallet refuses
/// every budget (it is paid from the wallet), so only such orders can be invoiced in the stateful phase,
/// which then follows them to their leases. (Budgets are fuzzed in the other phases, on both nodes.)
fn hours_only_document(node: &Daemon, dir: &Path) -> std::path::PathBuf {
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("Authorization: Bearer {}", node.cookie()),
        ])
        .arg(node.url("/openapi.json"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "cannot fetch the node's API document");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the API document is JSON");
    let order = &mut doc["components"]["schemas"]["OrderRequest"];
    assert!(
        order["properties"]["budget_sat"].is_object(),
        "the order's budget_sat is documented"
    );
    order["properties"]["budget_sat"] = serde_json::json!({"type": "null"});
    order["anyOf"] =
        serde_json::json!([{"required": ["hours"], "properties": {"hours": {"minimum": 1}}}]);
    let path = dir.join("openapi-hours-only.json");
    std::fs::write(&path, serde_json::to_vec(&doc).expect("JSON")).expect("write the document");
    path
}

/// Each request of a HAR report: `METHOD /path`, the status answered, the body answered.
fn exchanges(har: &Path) -> Vec<(String, u64, String)> {
    let text = std::fs::read_to_string(har).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let entries = v["log"]["entries"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            let url = e["request"]["url"].as_str().unwrap_or_default();
            let path = url.splitn(4, '/').nth(3).unwrap_or_default();
            let path = path.split('?').next().unwrap_or_default();
            (
                format!(
                    "{} /{path}",
                    e["request"]["method"].as_str().unwrap_or_default()
                ),
                e["response"]["status"].as_u64().unwrap_or(0),
                e["response"]["content"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect(),
            )
        })
        .collect()
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs())
}

#[test]
fn schemathesis_finds_the_api_as_documented() {
    let Some((btc, lab, cleanup)) = real_parts("api_schema") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let seed = seed();
    let mut failed = Vec::new();

    // A node with a funded wallet and no peers.
    let funded = start(&subdir(root.path(), "funded"), &buyer_toml(&btc), None);
    fund(&funded, &btc);
    let (ok, report) = fuzz(&funded, "schemathesis.toml", &[], &[], seed);
    if !ok {
        failed.push(format!("the funded node:\n{report}"));
    }
    let refund_address = funded.json(&["wallet", "address"])["address"]
        .as_str()
        .expect("an address")
        .to_string();

    // A node without a wallet, in a market: every phase but the stateful one as for the funded node...
    let market = LocalMarket::start(root.path(), &btc, &lab, &cleanup);
    market.wait_offers();
    let walletless = start(
        &subdir(root.path(), "walletless"),
        "[wallet]\nenabled = false\nnetwork = \"regtest\"\n",
        Some(&market.buyer),
    );
    // An offer the stateful phase's orders (orders.toml: 1 vCPU, debian-12, no GPU) match: the market's
    // providers sell a GPU flavor too, which an order for no GPU does not match (and at equal prices the list's
    // first offer could be either).
    let no_gpu = ["offers", "list", "--image", "debian-12", "--gpu", "none"];
    eventually("an offer without a GPU in the book", WAIT, || {
        let v = walletless.json(&no_gpu);
        match v.as_array().map(|a| a.len()) {
            Some(n) if n > 0 => Ok(()),
            _ => Err(v.to_string()),
        }
    });
    let offers = walletless.json(&no_gpu);
    let offer = offers[0]["key"].as_str().expect("a key").to_string();
    let pool = offers[0]["pool"].as_str().expect("a pool").to_string();
    let phases = "--phases=examples,coverage,fuzzing";
    let (ok, report) = fuzz(&walletless, "schemathesis.toml", &[], &[phases], seed);
    if !ok {
        failed.push(format!("the node without a wallet:\n{report}"));
    }
    // ...then the stateful phase with its orders pinned to the cheapest offer, from order to lease, from a
    // fresh walletless node: the phases before left this one with many unpaid orders at the providers, which
    // refuse a buyer more (per-buyer limits) and would leave orders→leases untested.
    drop(walletless);
    let walletless = start(
        &subdir(root.path(), "stateful"),
        "[wallet]\nenabled = false\nnetwork = \"regtest\"\n",
        Some(&market.buyer),
    );
    eventually("the pinned offer in the fresh node's book", WAIT, || {
        let v = walletless.json(&no_gpu);
        match v.as_array() {
            Some(a) if a.iter().any(|o| o["key"] == offer.as_str()) => Ok(()),
            _ => Err(v.to_string()),
        }
    });
    let key_file = ssh_key(&subdir(root.path(), "keys"));
    let env = [
        ("XOV_ST_OFFER", offer),
        ("XOV_ST_POOL", pool),
        (
            "XOV_ST_SSH_KEY",
            std::fs::read_to_string(&key_file)
                .unwrap()
                .trim()
                .to_string(),
        ),
        ("XOV_ST_REFUND", refund_address),
    ];
    let har = root.path().join("stateful.har");
    let har_arg = format!("--report-har-path={}", har.display());
    let args = ["--phases=stateful", "--report=har", har_arg.as_str()];
    let document = hours_only_document(&walletless, root.path());
    let (ok, report) = fuzz_document(
        &walletless,
        Some(&document),
        "orders.toml",
        &env,
        &args,
        seed,
    );
    if !ok {
        failed.push(format!("the node without a wallet, stateful:\n{report}"));
    }
    // The phase ordered, and reached the lease through the order's links.
    let calls = exchanges(&har);
    let ordered = calls
        .iter()
        .filter(|c| c.0 == "POST /v1/orders" && c.1 == 201)
        .count();
    let reached = calls
        .iter()
        .filter(|c| c.0.starts_with("GET /v1/leases/") && c.1 == 200)
        .count();
    if ordered == 0 || reached == 0 {
        let orders: Vec<String> = calls
            .iter()
            .filter(|c| c.0 == "POST /v1/orders")
            .take(20)
            .map(|c| format!("{} {}", c.1, c.2))
            .collect();
        failed.push(format!(
            "orders-to-leases went untested: {ordered} orders invoiced, {reached} leases shown; the orders' answers:\n{}",
            orders.join("\n")
        ));
    }
    assert!(failed.is_empty(), "seed {seed}\n{}", failed.join("\n\n"));
}
