//! xov-provisioner: turns a funded lease into a running machine on the provider's own cloud, and back.
//!
//! The node holds a generic [`Provisioner`] and knows nothing of the cloud behind it. The one backend is
//! OpenStack ([`OpenStackProvisioner`]): Keystone v3 (password or application credential, cached token),
//! Nova v2.1 with microversions, Glance v2. A lease's machine is the server tagged `xov-lease=<lease id>`,
//! which makes launches idempotent (a retry or a restart finds it; never two) and lets [`reconcile()`] compare
//! the cloud with the node's leases. With an owner ([`OpenStackConfig::owner`]) it also carries
//! `xov-provider=<owner>`, and a provisioner deals only with servers naming it or no provider
//! ([`provisioner::is_ours`]): providers sharing a project never see each other's machines.
//! [`inventory`](Provisioner::inventory) turns flavors, images and remaining quota into what the provider may
//! offer, through the provider's [`InventoryMapping`].
//!
//! The connection comes from `[provider.openstack]` inline, a clouds.yaml entry or the `OS_*` variables
//! ([`OpenStackSettings::resolve`]); http and https (rustls, the system's roots plus an optional CA file).
//! See `docs/operator.md`.

pub mod access;
pub mod clouds;
pub mod config;
pub mod error;
mod glance;
pub mod hardware;
mod http;
pub mod inventory;
mod keystone;
pub mod neutron;
mod nova;
pub mod openstack;
pub mod provisioner;
pub mod reconcile;
pub mod retry;
pub mod userdata;

pub use access::AccessConfig;
pub use clouds::{CloudFiles, FoundFile, OpenStackSettings};
pub use config::{Auth, Interface, KeyDelivery, Networks, OpenStackConfig, RetryPolicy, Secret};
pub use error::{ProvisionError, Result};
pub use hardware::{CpuArch, GpuSpec};
pub use http::client as http_client;
pub use inventory::{ImageEntry, InventoryMapping, MappingEntry};
pub use openstack::{keypair_name, OpenStackProvisioner};
pub use provisioner::{
    Address, Inventory, LaunchRequest, Machine, MachineState, OfferableShape, OfferedImage,
    Provisioner, QuotaLeft, LEASE_TAG, PROVIDER_TAG,
};
pub use reconcile::{reconcile, reconcile_periodically, ReconcileReport};

#[cfg(test)]
mod doc_tests {
    use serde::Deserialize;

    use super::*;

    /// The `[provider.openstack]` examples of docs/operator.md, in order.
    fn doc_examples() -> Vec<&'static str> {
        let doc = include_str!("../../docs/operator.md");
        doc.match_indices("```toml\n[provider.openstack]")
            .map(|(i, _)| {
                let start = i + 8;
                let len = doc[start..].find("```").unwrap();
                &doc[start..start + len]
            })
            .collect()
    }

    /// The clouds.yaml example of docs/operator.md and the `cloud = "mycloud"` config beside it resolve.
    #[test]
    fn operator_doc_clouds_yaml_example_resolves() {
        #[derive(Deserialize)]
        struct File {
            provider: Provider,
        }
        #[derive(Deserialize)]
        struct Provider {
            openstack: OpenStackSettings,
        }
        let doc = include_str!("../../docs/operator.md");
        let start = doc.find("```yaml\nclouds:").expect("clouds.yaml example") + 8;
        let len = doc[start..].find("```").unwrap();
        let files = CloudFiles {
            searched: vec!["/home/op/.config/openstack/clouds.yaml".into()],
            clouds: Some(FoundFile::new(
                "/home/op/.config/openstack/clouds.yaml",
                &doc[start..start + len],
            )),
            secure: None,
        };
        let file: File = toml::from_str(doc_examples()[0]).unwrap();
        assert_eq!(file.provider.openstack.cloud.as_deref(), Some("mycloud"));
        let cfg = file
            .provider
            .openstack
            .resolve(&Default::default(), &files)
            .unwrap();
        assert!(cfg.auth_url.starts_with("https://"));
        assert!(matches!(cfg.auth, Auth::ApplicationCredential { .. }));
        assert_eq!(cfg.region.as_deref(), Some("RegionOne"));
        assert!(cfg.cacert.is_some());
        assert!(matches!(cfg.network, Networks::Named(_)));
    }

    /// The full inline configuration example in docs/operator.md must stay valid.
    #[test]
    fn operator_doc_example_parses() {
        #[derive(Deserialize)]
        struct File {
            provider: Provider,
        }
        #[derive(Deserialize)]
        struct Provider {
            openstack: OpenStackSettings,
            inventory: InventoryMapping,
        }
        let file: File = toml::from_str(doc_examples()[1]).unwrap();
        let (os, inv) = (file.provider.openstack, file.provider.inventory);
        // inline settings resolve without looking at the environment or any file
        let os = os
            .resolve(
                &[("OS_CLOUD".to_string(), "elsewhere".to_string())].into(),
                &CloudFiles::default(),
            )
            .unwrap();
        inv.validate().unwrap();
        assert!(matches!(os.auth, Auth::ApplicationCredential { .. }));
        assert!(matches!(os.network, Networks::Named(_)));
        assert_eq!(os.retry, RetryPolicy::default());
        assert_eq!(inv.entries.len(), 2);
        assert_eq!(inv.entries[0].max_instances, Some(10));
        assert_eq!(inv.glance_ref("debian-12"), "debian-12-genericcloud-amd64");
    }
}
