//! The `xov` binary end to end: a real daemon process on a temp data dir, its RocksDB store, its local API on
//! 127.0.0.1, and the CLI as a separate process, exactly as a user runs them.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn status_json_prints_the_node_id_and_secrets_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let status = ok_json(dir.path(), &["status"]);
    assert_eq!(status["node_id"].as_str().unwrap(), d.node_id);
    assert_eq!(
        status["pools"].as_u64().unwrap(),
        1,
        "the public pool is always known"
    );
    assert_eq!(mode(&dir.path().join("node.key")), 0o600);
    assert_eq!(mode(&dir.path().join(".cookie")), 0o600);
    let human = xov(dir.path(), &["status"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains(&d.node_id));
}

#[test]
fn a_second_daemon_on_the_same_datadir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Daemon::start(dir.path());
    let (status, stderr) = wait_exit(spawn_daemon(dir.path()), Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("already running"), "stderr: {stderr}");
    assert!(
        stderr.contains(&first.pid().to_string()),
        "names the holder's pid: {stderr}"
    );
    // The first daemon is unharmed and still serves.
    assert_eq!(
        ok_json(dir.path(), &["status"])["node_id"],
        first.node_id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_refuses_calls_without_the_cookie_and_survives_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    // A fresh connection per request: after refusing an oversized body the server closes its connection,
    // and a pooled one would fail the next request for a reason that is not the API's.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let err = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let v: Value = r.json().await.expect("errors are JSON");
        (status, v["error"].as_str().unwrap_or_default().to_string())
    };

    let r = http.get(d.url("/v1/status")).send().await.unwrap();
    assert_eq!(err(r).await, (401, "no_cookie".into()));
    let r = http
        .get(d.url("/v1/status"))
        .bearer_auth("0000")
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await, (401, "bad_cookie".into()));
    let r = http.get(d.url("/openapi.json")).send().await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "even the API description needs the cookie"
    );

    let token = d.cookie();
    let authed = |req: reqwest::RequestBuilder| req.bearer_auth(&token).send();
    let r = authed(http.get(d.url("/v1/offers?min_vcpus=lots")))
        .await
        .unwrap();
    assert_eq!(err(r).await, (400, "bad_query".into()));
    let r = authed(http.get(d.url("/v1/offers?colour=red")))
        .await
        .unwrap();
    assert_eq!(err(r).await, (400, "bad_query".into()));
    let r = authed(http.get(d.url("/v1/offers?arch=sparc")))
        .await
        .unwrap();
    assert_eq!(err(r).await, (400, "bad_query".into()));
    let r = authed(
        http.post(d.url("/v1/offers"))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await
    .unwrap();
    assert_eq!(err(r).await.1, "bad_body");
    let r = authed(
        http.post(d.url("/v1/offers"))
            .json(&serde_json::json!({"vcpus": 1})),
    )
    .await
    .unwrap();
    // A body of the wrong shape breaks the document: 400, naming what is missing (422 is for content a
    // schema cannot judge).
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("errors are JSON");
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_body")));
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("ram_mib"), "{message}");
    let r = authed(
        http.post(d.url("/v1/offers"))
            .header("content-type", "application/json")
            .body(vec![b' '; 200_000]),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let r = authed(http.get(d.url("/v1/nothing-here"))).await.unwrap();
    assert_eq!(err(r).await, (404, "not_found".into()));
    let r = authed(http.put(d.url("/v1/status"))).await.unwrap();
    assert_eq!(err(r).await, (405, "method_not_allowed".into()));
    let r = authed(http.delete(d.url("/v1/offers/not-a-number")))
        .await
        .unwrap();
    assert_eq!(err(r).await, (400, "bad_path".into()));

    // Still alive and answering after all that.
    let r = authed(http.get(d.url("/v1/status"))).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let spec: Value = authed(http.get(d.url("/openapi.json")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/status",
        "/v1/offers",
        "/v1/offers/{offer_id}",
        "/v1/pools",
        "/v1/node/stop",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "openapi.json lacks {path}"
        );
    }
}

#[test]
fn offers_are_published_filtered_withdrawn_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path();
    let d = Daemon::start(dd);
    let publish = |extra: &[&str]| {
        let mut args = vec![
            "offer",
            "publish",
            "--disk",
            "20",
            "--country",
            "de",
            "--image",
            "debian-12",
        ];
        args.extend_from_slice(extra);
        ok_json(dd, &args)
    };
    let small = publish(&["--vcpus", "1", "--ram", "1024", "--price", "300"]);
    let big = publish(&[
        "--vcpus",
        "8",
        "--ram",
        "32768",
        "--price",
        "2400",
        "--image",
        "ubuntu-24.04",
    ]);
    let gpu = publish(&[
        "--vcpus",
        "16",
        "--ram",
        "65536",
        "--price",
        "9000",
        "--gpu",
        "A100",
        "--gpu-count",
        "2",
    ]);
    assert_eq!(small["provider"], d.node_id.as_str());
    assert_eq!(small["country"], "DE");

    let ids = |v: Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| o["offer_id"].as_u64().unwrap())
            .collect()
    };
    let (s, b, g) = (
        small["offer_id"].as_u64().unwrap(),
        big["offer_id"].as_u64().unwrap(),
        gpu["offer_id"].as_u64().unwrap(),
    );
    assert_eq!(
        ids(ok_json(dd, &["offers", "list"])),
        vec![s, b, g],
        "cheapest first"
    );
    assert_eq!(
        ids(ok_json(dd, &["offers", "list", "--vcpus", "4"])),
        vec![b, g]
    );
    assert_eq!(
        ids(ok_json(dd, &["offers", "list", "--gpu", "a100"])),
        vec![g]
    );
    assert_eq!(
        ids(ok_json(
            dd,
            &["offers", "list", "--gpu", "none", "--max-price", "1000"]
        )),
        vec![s]
    );
    assert_eq!(
        ids(ok_json(dd, &["offers", "list", "--image", "ubuntu-24.04"])),
        vec![b]
    );
    assert_eq!(
        ids(ok_json(
            dd,
            &[
                "offers",
                "list",
                "--pool",
                "public",
                "--country",
                "DE",
                "--arch",
                "x86_64"
            ]
        )),
        vec![s, b, g]
    );
    assert!(ids(ok_json(dd, &["offers", "list", "--country", "FR"])).is_empty());
    let table = String::from_utf8(xov(dd, &["offers", "list"]).stdout).unwrap();
    assert!(table.starts_with("SATS/H"), "human table: {table}");
    assert!(table.contains("2xA100"));

    // Bad input is explained and changes nothing.
    let bad = xov(
        dd,
        &[
            "offer",
            "publish",
            "--vcpus",
            "0",
            "--ram",
            "1",
            "--disk",
            "1",
            "--image",
            "x",
            "--price",
            "5",
            "--country",
            "DE",
        ],
    );
    assert!(!bad.status.success());
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(msg.contains("vcpus out of range"), "{msg}");
    let incomplete = xov(dd, &["offer", "publish", "--vcpus", "2"]);
    assert!(String::from_utf8_lossy(&incomplete.stderr).contains("Required:"));
    let unknown_pool = xov(dd, &["offers", "list", "--pool", "nope"]);
    assert!(String::from_utf8_lossy(&unknown_pool.stderr).contains("unknown pool 'nope'"));

    ok_json(dd, &["offer", "withdraw", &b.to_string()]);
    let missing = xov(dd, &["offer", "withdraw", "999"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no live offer with id 999"));
    assert_eq!(ids(ok_json(dd, &["offers", "list"])), vec![s, g]);

    let status = d.stop();
    assert!(status.success(), "SIGTERM is a clean stop, got {status}");
    assert!(!dd.join(".cookie").exists(), "cookie removed at shutdown");
    let no_node = xov(dd, &["status"]);
    assert!(!no_node.status.success());
    assert!(String::from_utf8_lossy(&no_node.stderr).contains("no xov node is running"));

    let again = Daemon::start(dd);
    assert_eq!(
        ok_json(dd, &["status"])["node_id"],
        again.node_id.as_str(),
        "same identity after restart"
    );
    assert_eq!(
        ids(ok_json(dd, &["offers", "list"])),
        vec![s, g],
        "book restored from RocksDB, withdrawal kept"
    );
    // A republished offer supersedes the stored one with a higher sequence.
    let re = ok_json(
        dd,
        &[
            "offer",
            "publish",
            "--offer-id",
            &s.to_string(),
            "--vcpus",
            "1",
            "--ram",
            "1024",
            "--disk",
            "20",
            "--country",
            "DE",
            "--image",
            "debian-12",
            "--price",
            "250",
        ],
    );
    assert!(re["sequence"].as_u64() > small["sequence"].as_u64());
    assert_eq!(
        ok_json(dd, &["offers", "list", "--mine"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn node_stop_through_the_api_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    ok_json(dir.path(), &["node", "stop"]);
    assert!(d.wait().success());
    assert!(
        !dir.path().join("api").exists(),
        "API address file removed at shutdown"
    );
}

#[test]
fn an_offer_id_can_be_republished_right_after_its_withdrawal() {
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path();
    let _d = Daemon::start(dd);
    let args = [
        "offer",
        "publish",
        "--vcpus",
        "1",
        "--ram",
        "512",
        "--disk",
        "1",
        "--image",
        "x",
        "--price",
        "5",
        "--country",
        "DE",
    ];
    let first = ok_json(dd, &args);
    let id = first["offer_id"].as_u64().unwrap().to_string();
    ok_json(dd, &["offer", "withdraw", &id]);
    // In the same second: a new offer does not reuse the withdrawn id, and republishing that id explicitly
    // gets a sequence above the withdrawal.
    let second = ok_json(dd, &args);
    assert_ne!(second["offer_id"], first["offer_id"]);
    let mut again = args.to_vec();
    again.extend_from_slice(&["--offer-id", &id]);
    let third = ok_json(dd, &again);
    assert!(third["sequence"].as_u64() > first["sequence"].as_u64());
}
