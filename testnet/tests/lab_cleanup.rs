//! The guard every lab test holds ([`LabCleanup`]) deletes what the test made even when the test fails, and
//! nothing of anyone else.
//!
//! A provider with an owner from the guard launches a lease on the lab's tenant network (a server, its port,
//! a security group, a floating IP, a key pair, all marked `xov-provider=<owner>` or named after the lease),
//! then the test panics while holding the guard, inside a tokio runtime. Afterwards Nova and Neutron, read
//! directly and not through the guard, hold nothing marked with that owner and no key pair of the lease. A
//! second provider sharing the project (another test's, with its own guard) keeps its machine through all of
//! it, is never listed by the first, and loses it only when its own guard goes.

mod common;

use common::{lab_cloud, lab_provider_networked};
use serde_json::Value;
use xov_provisioner::{LaunchRequest, Provisioner};
use xov_testnet::openstack::{LabCleanup, OpenStackLab};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAt0hIQEJ13ll80xY+oE3Fz0clfmlwjq27+OWKHg3XV/ buyer@lab-cleanup";

/// A fresh 64-hex lease id.
fn lease_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    (0..4)
        .map(|i| {
            let h = RandomState::new().hash_one((i, std::time::Instant::now()));
            format!("{h:016x}")
        })
        .collect()
}

fn request(lab: &OpenStackLab, lease: &str) -> LaunchRequest {
    LaunchRequest {
        lease_id: lease.into(),
        flavor: lab.flavor_name.clone(),
        image: lab.image_name.clone(),
        ssh_public_key: KEY.into(),
        extra_ports: vec![],
    }
}

/// Everything in the lab that names `owner` (Nova metadata; Neutron description or tags), and the lease's
/// key pair, read straight from the lab's APIs as its admin.
async fn marked_with(lab: &OpenStackLab, owner: &str, lease: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let token = lab.admin_token(&client).await.unwrap();
    let marker = format!("xov-provider={owner}");
    let mut found = Vec::new();
    let nova = |path: String| {
        client
            .get(format!("{}{path}", lab.compute_url))
            .header("X-Auth-Token", &token)
            .header("X-OpenStack-Nova-API-Version", "2.90")
            .send()
    };
    let servers: Value = nova("/servers/detail?limit=1000".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for s in servers["servers"].as_array().unwrap() {
        if s["metadata"]["xov-provider"] == owner && s["status"] != "DELETED" {
            found.push(format!("server {} ({})", s["id"], s["status"]));
        }
    }
    for (path, key) in [
        ("/floatingips", "floatingips"),
        ("/ports", "ports"),
        ("/security-groups", "security_groups"),
    ] {
        let v = lab.neutron_get(&client, &token, path).await.unwrap();
        for r in v[key].as_array().unwrap() {
            let described = r["description"]
                .as_str()
                .is_some_and(|d| d.contains(&marker));
            let tagged = r["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == marker.as_str()));
            if described || tagged {
                found.push(format!("{key} {}", r["id"]));
            }
        }
    }
    let kp = nova(format!("/os-keypairs/xov-{lease}")).await.unwrap();
    if kp.status().as_u16() != 404 {
        found.push(format!("key pair xov-{lease} ({})", kp.status()));
    }
    found
}

#[test]
fn a_failing_test_leaves_nothing_of_its_own_in_the_lab_and_touches_no_one_else() {
    if xov_testnet::skip_e2e("lab cleanup") {
        return;
    }
    let lab = OpenStackLab::ensure().unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Another test's provider in the same project, with its own guard.
    let bystanders = LabCleanup::new(&lab, "bystander");
    let other_owner = bystanders.owner("provider");
    let other = lab_cloud(&lab, &other_owner);
    let other_lease = lease_id();
    let theirs = rt
        .block_on(other.launch(&request(&lab, &other_lease)))
        .unwrap();

    let owner = std::sync::Mutex::new(String::new());
    let lease = lease_id();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Dropped while unwinding, inside the runtime (as in an async test).
        rt.block_on(async {
            let cleanup = LabCleanup::new(&lab, "failing test");
            *owner.lock().unwrap() = cleanup.owner("provider");
            let p = lab_provider_networked(&lab, &cleanup.owner("provider"));
            let m = p.launch(&request(&lab, &lease)).await.unwrap();
            // Everything a lease makes is there, and the guard sees it as the test's.
            let made = cleanup.leftovers().unwrap();
            assert_eq!(
                made.servers,
                [(m.server_id.clone(), lease.clone())],
                "{made}"
            );
            assert_eq!(made.floating_ips.len(), 1, "{made}");
            assert_eq!(made.ports.len(), 1, "{made}");
            assert_eq!(made.security_groups.len(), 1, "{made}");
            assert_eq!(made.keypairs, [format!("xov-{lease}")], "{made}");
            assert_eq!(
                marked_with(&lab, &cleanup.owner("provider"), &lease)
                    .await
                    .len(),
                5
            );
            // Providers sharing the project never see each other's machines.
            let ours = p.list_ours().await.unwrap();
            assert!(ours.iter().any(|x| x.server_id == m.server_id));
            assert!(
                !ours.iter().any(|x| x.server_id == theirs.server_id),
                "{ours:?}"
            );
            assert_eq!(p.status(&other_lease).await.unwrap(), None);
            let their_view = other.list_ours().await.unwrap();
            assert!(!their_view.iter().any(|x| x.server_id == m.server_id));
            panic!("the test fails here, holding everything it made");
        })
    }));
    let why = failed.expect_err("the test body panicked");
    assert_eq!(
        why.downcast_ref::<&str>(),
        Some(&"the test fails here, holding everything it made"),
        "it failed where it was meant to, not before"
    );

    let owner = owner.into_inner().unwrap();
    let left = rt.block_on(marked_with(&lab, &owner, &lease));
    assert!(
        left.is_empty(),
        "left in the lab by the failed test: {left:?}"
    );

    // The other provider's machine was not touched; its own guard deletes it (and says so).
    let still = rt.block_on(other.status(&other_lease)).unwrap();
    assert_eq!(
        still.map(|m| m.server_id),
        Some(theirs.server_id.clone()),
        "another test's machine survives"
    );
    let deleted = bystanders.clean_and_check().unwrap();
    assert_eq!(
        deleted.servers,
        [(theirs.server_id.clone(), other_lease.clone())]
    );
    assert_eq!(deleted.keypairs, [format!("xov-{other_lease}")]);
    assert!(rt
        .block_on(marked_with(&lab, &other_owner, &other_lease))
        .is_empty());
    // Idempotent: cleaning again finds nothing.
    assert!(bystanders.clean().unwrap().is_empty());
}
