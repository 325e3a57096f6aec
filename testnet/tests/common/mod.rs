//! What several of the testnet's end-to-end tests share and the harness library cannot hold (it depends on
//! no xov crate).

use xov_provisioner::{OpenStackConfig, OpenStackProvisioner};
use xov_testnet::node::eventually;
use xov_testnet::openstack::{LabCleanup, OpenStackLab};
use xov_testnet::scenario::WAIT;

/// The lab's cloud as the provider with `owner` sees it (https, the lab's CA, no network for launches): to
/// look at and clean up what that provider node under test made there (only its machines are listed).
pub fn lab_cloud(lab: &OpenStackLab, owner: &str) -> OpenStackProvisioner {
    provisioner(lab, owner, serde_json::json!({"network": "none"}))
}

/// A provider with `owner` on the lab's tenant network, with floating IPs from its external network: each
/// lease gets a server, a port, a security group, a floating IP and a key pair.
#[allow(dead_code)] // not every test binary launches machines itself
pub fn lab_provider_networked(lab: &OpenStackLab, owner: &str) -> OpenStackProvisioner {
    let (Some(tenant), Some(public)) = (&lab.tenant_network, &lab.public_network) else {
        panic!("the lab has no networks: run testnet/openstack/up.sh again");
    };
    provisioner(
        lab,
        owner,
        serde_json::json!({"network": tenant, "access": {"external_network": public}}),
    )
}

/// A provisioner for the lab's admin project as the provider `owner`, with `extra` settings.
fn provisioner(lab: &OpenStackLab, owner: &str, extra: serde_json::Value) -> OpenStackProvisioner {
    let mut cfg = serde_json::json!({
        "owner": owner,
        "auth_url": lab.auth_url,
        "cacert": lab.cacert,
        "region": lab.region,
        "boot_timeout": 90,
        "auth": { "type": "password", "username": lab.username, "password": lab.password,
                  "project_name": lab.project_name, "user_domain": lab.user_domain, "project_domain": lab.project_domain },
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        cfg[k] = v.clone();
    }
    let cfg: OpenStackConfig = serde_json::from_value(cfg).expect("the lab's provider config");
    OpenStackProvisioner::new(cfg, Default::default()).expect("a provisioner for the lab")
}

/// Waits until the lab holds nothing the test's providers made (servers, floating IPs, ports, security
/// groups, and the key pairs of the leases the guard knows): what a provider must have deleted once its leases
/// closed, before the guard would clean anything.
#[allow(dead_code)] // not every test binary ends its leases
pub fn wait_nothing_left(cleanup: &LabCleanup) {
    eventually(
        "the providers deleted everything of the test's leases",
        WAIT,
        || match cleanup.leftovers() {
            Ok(left) if left.is_empty() => Ok(()),
            Ok(left) => Err(format!("still in the lab: {left}")),
            Err(e) => Err(e.to_string()),
        },
    );
}
