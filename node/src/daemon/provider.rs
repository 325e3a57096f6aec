//! The provider side's cloud: builds the OpenStack provisioner from `[provider]`, adapts it to the lease
//! engine, turns its inventory into this node's offers, and reconciles tagged machines with leases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::{info, warn};
use xov_provisioner::{LaunchRequest, OpenStackProvisioner, Provisioner};

use crate::clock::unix_now;
use crate::config::{Config, ProviderConfig};
use crate::lease::driver::{cloud_error, BoxFuture, LaunchSpec, Machines};
use crate::lease::machine::CloudError;
use crate::lease::record::InstanceInfo;
use crate::market::{Market, OfferSpec};
use crate::network::NetworkHandle;

/// The lease engine's view of an OpenStack cluster.
pub struct OpenStackMachines {
    p: OpenStackProvisioner,
    /// Offer id → flavor id, from the last inventory.
    flavors: Mutex<HashMap<u64, String>>,
    ssh_user: String,
}

/// A stable offer id for a flavor, so republished offers supersede their earlier versions.
pub fn offer_id_for(flavor_id: &str) -> u64 {
    let h = Sha256::digest(format!("xov/offer/{flavor_id}").as_bytes());
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) >> 1
}

impl Machines for OpenStackMachines {
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<InstanceInfo, CloudError>> {
        Box::pin(async move {
            let known = self
                .flavors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&spec.offer_id)
                .cloned();
            let flavor = match known {
                Some(f) => f,
                // After a restart the map is empty until the first inventory; read it now.
                None => {
                    let inv = self.p.inventory().await.map_err(cloud_error)?;
                    let mut map = self.flavors.lock().unwrap_or_else(|p| p.into_inner());
                    for s in &inv.shapes {
                        map.insert(offer_id_for(&s.flavor_id), s.flavor_id.clone());
                    }
                    map.get(&spec.offer_id)
                        .cloned()
                        .ok_or_else(|| CloudError::LaunchFailed {
                            detail: format!("offer {} maps to no flavor any more", spec.offer_id),
                        })?
                }
            };
            let req = LaunchRequest {
                lease_id: spec.lease_id.clone(),
                flavor,
                image: spec.image.clone(),
                ssh_public_key: spec.ssh_public_key.clone(),
                extra_ports: spec.extra_ports.clone(),
            };
            let m = self.p.launch(&req).await.map_err(cloud_error)?;
            Ok(InstanceInfo {
                server_id: m.server_id,
                addresses: buyer_addresses(m.addresses),
                image: spec.image,
                user: self.ssh_user.clone(),
                ssh_port: xov_provisioner::access::SSH_PORT,
                open_ports: self.p.config().access.lease_ports(&spec.extra_ports),
            })
        })
    }

    fn stop(&self, lease_id: &str) -> BoxFuture<'_, Result<(), CloudError>> {
        let id = lease_id.to_string();
        Box::pin(async move { self.p.stop(&id).await.map(|_| ()).map_err(cloud_error) })
    }

    fn start(&self, lease_id: &str) -> BoxFuture<'_, Result<(), CloudError>> {
        let id = lease_id.to_string();
        Box::pin(async move { self.p.start(&id).await.map(|_| ()).map_err(cloud_error) })
    }

    fn delete(&self, lease_id: &str) -> BoxFuture<'_, Result<(), CloudError>> {
        let id = lease_id.to_string();
        Box::pin(async move { self.p.delete(&id).await.map(|_| ()).map_err(cloud_error) })
    }
}

/// Builds the provider's cloud from the config, checking the credentials at start.
/// The provider's cloud, its machines marked `xov-provider=<owner>`: the configured `owner`, else this
/// node's id (so providers sharing a project never take each other's machines for their own).
pub async fn from_config(
    cfg: &Config,
    node_id: &str,
) -> anyhow::Result<Option<Arc<OpenStackMachines>>> {
    if !cfg.provider.enabled {
        return Ok(None);
    }
    let os = cfg
        .provider
        .openstack_config()
        .expect("checked by Config::check")?
        .with_default_owner(node_id);
    let p = OpenStackProvisioner::new(os, cfg.provider.inventory.clone())?;
    match p.check().await {
        Ok(what) => info!(cloud = %what, "provider cloud reachable"),
        Err(e) => warn!(error = %e, "provider cloud not reachable yet; offers wait until it is"),
    }
    Ok(Some(Arc::new(OpenStackMachines {
        p,
        flavors: Mutex::new(HashMap::new()),
        ssh_user: cfg.provider.ssh_user.clone(),
    })))
}

impl OpenStackMachines {
    /// Reads the inventory and publishes one offer per offerable flavor (withdrawing none: offers the cloud
    /// can no longer back lapse at their TTL, and capacity 0 shapes are not republished).
    pub async fn publish_offers(
        &self,
        pc: &ProviderConfig,
        market: &Arc<RwLock<Market>>,
        net: &NetworkHandle,
    ) {
        let inv = match self.p.inventory().await {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "cannot read the cloud's inventory; offers not refreshed");
                return;
            }
        };
        for w in &inv.warnings {
            warn!(warning = %w, "inventory mapping");
        }
        for shape in inv.shapes.into_iter().filter(|s| s.capacity > 0) {
            let offer_id = offer_id_for(&shape.flavor_id);
            self.flavors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(offer_id, shape.flavor_id.clone());
            let spec = OfferSpec {
                pool: Some(pc.pool.clone()),
                offer_id: Some(offer_id),
                vcpus: shape.vcpus,
                ram_mib: shape.ram_mib,
                disk_gib: shape.disk_gib.max(1),
                gpu_model: shape.gpu.as_ref().map(|g| g.model.clone()),
                gpu_count: shape.gpu.as_ref().map(|g| g.count),
                arch: match shape.arch {
                    xov_provisioner::CpuArch::X86_64 => xov_protocol::Arch::X86_64,
                    xov_provisioner::CpuArch::Aarch64 => xov_protocol::Arch::Aarch64,
                    xov_provisioner::CpuArch::Riscv64 => xov_protocol::Arch::Riscv64,
                },
                images: shape.images.iter().map(|i| i.name.clone()).collect(),
                price_sats_per_hour: shape.price_sats_per_hour,
                min_lease_secs: pc.min_lease_secs,
                max_lease_secs: pc.max_lease_secs,
                country: pc.country.clone(),
                region: pc.region.clone(),
                capacity: shape.capacity,
                ttl_secs: pc.offer_ttl_secs,
                // what a buyer may ask to have opened besides what every lease has open
                extra_ports: self.p.config().access.offered_ports(),
            };
            let signed = match market.write() {
                Ok(mut m) => {
                    // Republish only what changed: a new version of an unchanged offer would only make buyers'
                    // orders for the previous version bounce. Its TTL refresh happens on its own.
                    if m.own_offer_matches(offer_id, &spec) {
                        continue;
                    }
                    if pc.advertise {
                        m.publish(&spec, unix_now())
                    } else {
                        m.publish_unlisted(&spec, unix_now())
                    }
                }
                Err(_) => return,
            };
            match signed {
                Ok(s) => {
                    let pool = s.body().pool;
                    // Members of the pool hear its bids, so an unlisted provider joins it all the same.
                    let _ = net.join(pool).await;
                    if pc.advertise {
                        let _ = net.publish(&pool, &s).await;
                        info!(offer = offer_id, flavor = %shape.flavor_name, capacity = shape.capacity, "offer published from inventory");
                    } else {
                        info!(offer = offer_id, flavor = %shape.flavor_name, capacity = shape.capacity, "unlisted offer made from inventory (shown to matching bids only)");
                    }
                }
                Err(e) => warn!(error = %e, flavor = %shape.flavor_name, "cannot publish offer"),
            }
        }
    }

    /// Compares machines tagged as ours with the leases that expect one; reports, deletes nothing.
    pub async fn reconcile(
        &self,
        expected: Vec<String>,
    ) -> Option<xov_provisioner::reconcile::ReconcileReport> {
        match xov_provisioner::reconcile::reconcile(&self.p, expected).await {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, "reconciliation failed");
                None
            }
        }
    }
}

/// Runs the provider's periodic work: inventory → offers, and reconciliation.
pub fn spawn_provider(
    machines: Arc<OpenStackMachines>,
    pc: ProviderConfig,
    market: Arc<RwLock<Market>>,
    net: NetworkHandle,
    leases: Arc<crate::lease::driver::LeaseEngine>,
) {
    tokio::spawn(async move {
        let mut inv_tick =
            tokio::time::interval(Duration::from_secs(pc.inventory_interval_secs.max(5)));
        let mut rec_tick =
            tokio::time::interval(Duration::from_secs(pc.reconcile_interval_secs.max(5)));
        loop {
            tokio::select! {
                _ = inv_tick.tick() => machines.publish_offers(&pc, &market, &net).await,
                _ = rec_tick.tick() => {
                    let expected: Vec<String> = leases
                        .list()
                        .into_iter()
                        .filter(|l| l.role == crate::lease::record::Role::Provider && l.state.may_have_machine())
                        .map(|l| l.id)
                        .collect();
                    machines.reconcile(expected).await;
                }
            }
        }
    });
}

/// The machine's addresses in the order a buyer should try them: floating (public) first, then the others
/// as the cloud listed them; each once.
fn buyer_addresses(addresses: Vec<xov_provisioner::Address>) -> Vec<String> {
    let floating = |a: &xov_provisioner::Address| a.kind.as_deref() == Some("floating");
    let mut out: Vec<String> = Vec::with_capacity(addresses.len());
    for a in addresses
        .iter()
        .filter(|a| floating(a))
        .chain(addresses.iter().filter(|a| !floating(a)))
    {
        if !out.contains(&a.ip) {
            out.push(a.ip.clone());
        }
    }
    out
}

#[cfg(test)]
mod address_tests {
    use super::*;

    fn addr(ip: &str, kind: Option<&str>) -> xov_provisioner::Address {
        xov_provisioner::Address {
            network: "xov-tenant".into(),
            ip: ip.into(),
            version: 4,
            kind: kind.map(str::to_string),
        }
    }

    #[test]
    fn the_floating_address_comes_first() {
        for (name, given, want) in [
            (
                "floating after fixed",
                vec![
                    addr("10.99.0.5", Some("fixed")),
                    addr("198.18.10.20", Some("floating")),
                ],
                vec!["198.18.10.20", "10.99.0.5"],
            ),
            (
                "no floating keeps the order",
                vec![addr("10.99.0.5", None), addr("fd00::5", Some("fixed"))],
                vec!["10.99.0.5", "fd00::5"],
            ),
            (
                "an address listed twice once",
                vec![addr("10.99.0.5", Some("fixed")), addr("10.99.0.5", None)],
                vec!["10.99.0.5"],
            ),
        ] {
            assert_eq!(buyer_addresses(given), want, "{name}");
        }
    }
}
