//! xov-provisioner: turns a funded lease into a running machine on the provider's own cloud, and back.
//!
//! The node holds a generic [`Provisioner`] and knows nothing of the cloud behind it. The one backend is
//! OpenStack ([`OpenStackProvisioner`]): Keystone v3 (password or application credential, cached token),
//! Nova v2.1 with microversions, Glance v2. A lease's machine is the server tagged `xov-lease=<lease id>`,
//! which makes launches idempotent (a retry or a restart finds it; never two) and lets [`reconcile()`] compare
//! the cloud with the node's leases. [`inventory`](Provisioner::inventory) turns flavors, images and
//! remaining quota into what the provider may offer, through the provider's [`InventoryMapping`].
//!
//! The connection comes from `[provider.openstack]` inline, a clouds.yaml entry or the `OS_*` variables
//! ([`OpenStackSettings::resolve`]); http and https (rustls, the system's roots plus an optional CA file).
//! See `docs/operator.md`.

pub mod clouds;
pub mod config;
pub mod error;
mod glance;
mod http;
pub mod inventory;
mod keystone;
mod nova;
pub mod openstack;
pub mod provisioner;
pub mod reconcile;
pub mod retry;
pub mod userdata;

pub use clouds::{CloudFiles, FoundFile, OpenStackSettings};
pub use config::{Auth, Interface, KeyDelivery, Networks, OpenStackConfig, RetryPolicy, Secret};
pub use error::{ProvisionError, Result};
pub use inventory::{ImageEntry, InventoryMapping, MappingEntry};
pub use openstack::{keypair_name, OpenStackProvisioner};
pub use provisioner::{
    Address, Inventory, LaunchRequest, Machine, MachineState, OfferableShape, OfferedImage,
    Provisioner, QuotaLeft, LEASE_TAG,
};
pub use reconcile::{reconcile, reconcile_periodically, ReconcileReport};

#[cfg(test)]
mod doc_tests {
    use serde::Deserialize;

    use super::*;

    /// The configuration example in docs/operator.md must stay valid.
    #[test]
    fn operator_doc_example_parses() {
        #[derive(Deserialize)]
        struct File {
            provider: Provider,
        }
        #[derive(Deserialize)]
        struct Provider {
            openstack: OpenStackConfig,
            inventory: InventoryMapping,
        }
        let doc = include_str!("../../docs/operator.md");
        let start = doc
            .find("```toml\n[provider.openstack]")
            .expect("example in the doc")
            + 8;
        let len = doc[start..].find("```").unwrap();
        let file: File = toml::from_str(&doc[start..start + len]).unwrap();
        let (os, inv) = (file.provider.openstack, file.provider.inventory);
        os.validate().unwrap();
        inv.validate().unwrap();
        assert!(matches!(os.auth, Auth::ApplicationCredential { .. }));
        assert!(matches!(os.network, Networks::Named(_)));
        assert_eq!(os.retry, RetryPolicy::default());
        assert_eq!(inv.entries.len(), 2);
        assert_eq!(inv.entries[0].max_instances, Some(10));
        assert_eq!(inv.glance_ref("debian-12"), "debian-12-genericcloud-amd64");
    }
}
