//! What several of the testnet's end-to-end tests share and the harness library cannot hold (it depends on
//! no xov crate).

use xov_provisioner::{OpenStackConfig, OpenStackProvisioner};
use xov_testnet::openstack::OpenStackLab;

/// The lab's cloud as its admin sees it (https, the lab's CA, no network for launches): to look at and
/// clean up what nodes under test made there.
pub fn lab_cloud(lab: &OpenStackLab) -> OpenStackProvisioner {
    let cfg: OpenStackConfig = serde_json::from_value(serde_json::json!({
        "auth_url": lab.auth_url,
        "cacert": lab.cacert,
        "network": "none",
        "region": lab.region,
        "auth": { "type": "password", "username": lab.username, "password": lab.password,
                  "project_name": lab.project_name, "user_domain": lab.user_domain, "project_domain": lab.project_domain },
    }))
    .expect("the lab's provider config");
    OpenStackProvisioner::new(cfg, Default::default()).expect("a provisioner for the lab")
}
