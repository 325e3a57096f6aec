//! The OpenStack backend of [`Provisioner`]: a lease's machine is a Nova server carrying the metadata
//! `xov-lease=<lease id>`. That tag is the only link between the two, which makes every operation
//! restartable: after any failure or crash, listing the tagged servers says what exists.
//!
//! A provisioner with an owner ([`OpenStackConfig::owner`]) also writes `xov-provider=<owner>` into every
//! server it creates (and onto its Neutron resources), and counts as its own only servers that name it or
//! name no provider (made before the marker): listing, launching, stopping, deleting, inventory counts and
//! reclaiming never see a server of another provider sharing the project, even one tagged with the same
//! lease.
//!
//! Never two machines for one lease: a launch first looks for the tagged server; a server create whose
//! answer is lost (dropped connection, timeout, 5xx) is followed by a fresh listing, and only a listing that
//! succeeded and shows nothing allows another create. Should two exist anyway (another process raced us),
//! the oldest is kept and the others, tagged with the same lease, are deleted. Nothing untagged is touched.
//!
//! A machine's access (its ports in the lease's security group, tagged, and the floating IP) is set up while
//! the server builds, as soon as Neutron lists its ports, so that a machine is handed over when Nova says
//! ACTIVE rather than after another round of Neutron calls. It is checked again after ACTIVE with one port
//! listing: only when the ports differ from those set up (or the early set-up failed) is it done again,
//! and every step is idempotent (`ensure_*` lists by marker first; a floating IP on another port is moved).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{watch, Mutex, OwnedMutexGuard};
use tracing::{info, warn};

use crate::config::{KeyDelivery, Networks, OpenStackConfig};
use crate::error::{ProvisionError, Result};
use crate::glance::{Glance, Image};
use crate::http::{self, Service};
use crate::inventory::{self, InventoryMapping};
use crate::keystone::Keystone;
use crate::neutron::{Neutron, Port};
use crate::nova::{Action, Created, Flavor, Nova, NovaServer};
use crate::provisioner::{
    parse_ssh_key, same_ssh_key, validate_lease_id, Address, Inventory, LaunchRequest, Machine,
    Provisioner, LEASE_TAG, PROVIDER_TAG,
};
use crate::retry::{Backoff, Poll};
use crate::userdata;

/// A machine's access as set up while it built: the ports it was set up on, and the floating address.
#[derive(Debug)]
struct Prepared {
    ports: Vec<String>,
    floating: Option<String>,
}

/// The Nova key pair holding a lease's buyer key.
pub fn keypair_name(lease_id: &str) -> String {
    format!("xov-{lease_id}")
}

/// The server's display name (the tag, not the name, identifies it).
fn server_name(lease_id: &str) -> String {
    format!("xov-{}", &lease_id[..lease_id.len().min(16)])
}

/// Keep the oldest healthy server first: the one a launch follows and a de-duplication keeps.
fn oldest_first(servers: &mut [NovaServer]) {
    servers.sort_by(|a, b| {
        (a.status == "ERROR", &a.created, &a.id).cmp(&(b.status == "ERROR", &b.created, &b.id))
    });
}

#[derive(Clone, Copy)]
enum Power {
    Stop,
    Start,
}

impl Power {
    fn action(self) -> &'static str {
        match self {
            Power::Stop => "os-stop",
            Power::Start => "os-start",
        }
    }
    fn target(self) -> &'static str {
        match self {
            Power::Stop => "SHUTOFF",
            Power::Start => "ACTIVE",
        }
    }
    fn transition(self) -> &'static str {
        match self {
            Power::Stop => "powering-off",
            Power::Start => "powering-on",
        }
    }
    fn wanted(self) -> &'static str {
        match self {
            Power::Stop => "stopped",
            Power::Start => "running",
        }
    }
}

/// A provider's OpenStack project as a [`Provisioner`].
pub struct OpenStackProvisioner {
    cfg: OpenStackConfig,
    mapping: InventoryMapping,
    keystone: Arc<Keystone>,
    nova: Nova,
    glance: Glance,
    neutron: Neutron,
    /// One operation at a time per lease within this process (two concurrent launches would both see no
    /// server and both boot one).
    locks: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// Holds a lease's lock; forgets the lock when nobody else waits for it.
struct LeaseGuard<'a> {
    owner: &'a OpenStackProvisioner,
    lease_id: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        // the map and our guard hold the only references: no one is waiting
        if locks
            .get(&self.lease_id)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            locks.remove(&self.lease_id);
        }
        drop(self.guard.take());
    }
}

impl OpenStackProvisioner {
    /// Checks the configuration and the mapping; talks to no one yet (see [`OpenStackProvisioner::check`]).
    pub fn new(cfg: OpenStackConfig, mapping: InventoryMapping) -> Result<Self> {
        cfg.validate()?;
        mapping.validate()?;
        let client = http::client(&cfg)?;
        let keystone = Arc::new(Keystone::new(&cfg, client.clone()));
        let service = |kind, suffix, endpoint_override: &Option<String>| {
            Service::new(
                kind,
                suffix,
                client.clone(),
                keystone.clone(),
                endpoint_override.clone(),
                cfg.interface,
                cfg.region.clone(),
                cfg.retry.clone(),
            )
        };
        let nova = Nova::new(service("compute", None, &cfg.compute_endpoint_override));
        let glance = Glance {
            svc: service("image", Some("/v2"), &cfg.image_endpoint_override),
        };
        let neutron = Neutron {
            svc: service("network", Some("/v2.0"), &cfg.network_endpoint_override),
            owner: cfg.owner.clone(),
        };
        Ok(OpenStackProvisioner {
            cfg,
            mapping,
            keystone,
            nova,
            glance,
            neutron,
            locks: StdMutex::new(HashMap::new()),
        })
    }

    /// The project's networking service: each lease's security group and floating IP.
    pub fn neutron(&self) -> &Neutron {
        &self.neutron
    }

    pub fn config(&self) -> &OpenStackConfig {
        &self.cfg
    }

    pub fn mapping(&self) -> &InventoryMapping {
        &self.mapping
    }

    /// Tokens Keystone issued to this provisioner so far (one per token lifetime when all is well).
    pub fn keystone_authentications(&self) -> u64 {
        self.keystone.authentications()
    }

    /// Authenticates, finds the endpoints and agrees on the compute microversion: a node calls this at
    /// start so a wrong password or URL shows up at once. Returns the microversion.
    pub async fn check(&self) -> Result<String> {
        let mv = self.nova.microversion().await?.to_string();
        self.nova.limits().await?;
        self.glance.by_name("xov-connectivity-check").await?;
        Ok(mv)
    }

    async fn lock(&self, lease_id: &str) -> LeaseGuard<'_> {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(lease_id.to_string()).or_default().clone()
        };
        LeaseGuard {
            owner: self,
            lease_id: lease_id.to_string(),
            guard: Some(m.lock_owned().await),
        }
    }

    /// The provider marker this provisioner writes and looks for (`None`: it writes none).
    pub fn owner(&self) -> Option<&str> {
        self.cfg.owner.as_deref()
    }

    /// Every server of ours (tagged, and ours by [`crate::provisioner::is_ours`]), being deleted or not.
    async fn ours_and_going(&self) -> Result<Vec<NovaServer>> {
        let owner = self.owner();
        Ok(self
            .nova
            .servers()
            .await?
            .into_iter()
            .filter(|s| s.is_ours(owner))
            .collect())
    }

    /// Our servers (tagged), not counting those being deleted.
    async fn ours(&self) -> Result<Vec<NovaServer>> {
        let mut v: Vec<NovaServer> = self
            .ours_and_going()
            .await?
            .into_iter()
            .filter(|s| !s.is_gone())
            .collect();
        oldest_first(&mut v);
        Ok(v)
    }

    /// The lease's servers, oldest healthy first. Normally zero or one.
    async fn of_lease(&self, lease_id: &str) -> Result<Vec<NovaServer>> {
        Ok(self
            .ours()
            .await?
            .into_iter()
            .filter(|s| s.lease() == Some(lease_id))
            .collect())
    }

    async fn flavor(&self, reference: &str) -> Result<Flavor> {
        let flavors = self.nova.flavors().await?;
        let usable = || flavors.iter().filter(|f| !f.disabled);
        usable()
            .find(|f| f.id == reference)
            .or_else(|| usable().find(|f| f.name == reference))
            .cloned()
            .ok_or_else(|| ProvisionError::NotFound {
                what: "flavor",
                name: reference.into(),
            })
    }

    async fn image(&self, reference: &str) -> Result<Image> {
        let glance_ref = self.mapping.glance_ref(reference);
        self.glance
            .resolve(glance_ref)
            .await?
            .ok_or_else(|| ProvisionError::NotFound {
                what: "image",
                name: glance_ref.into(),
            })
    }

    /// Creates the lease's key pair, or reuses it if it holds the same key. A key pair of that name with
    /// another key can only be left from an earlier attempt for this lease (no server uses it: we looked),
    /// so it is replaced.
    async fn ensure_keypair(&self, lease_id: &str, key: &str) -> Result<String> {
        let name = keypair_name(lease_id);
        for _ in 0..2 {
            if self.nova.create_keypair(&name, key).await? {
                return Ok(name);
            }
            match self.nova.keypair(&name).await? {
                Some(existing) if same_ssh_key(&existing, key) => return Ok(name),
                Some(_) => {
                    warn!(
                        lease = lease_id,
                        keypair = name,
                        "replacing a stale key pair of this lease"
                    );
                    self.nova.delete_keypair(&name).await?;
                }
                None => {} // deleted in between: create again
            }
        }
        Err(ProvisionError::KeypairConflict { name })
    }

    /// Best effort: a left-over key pair is harmless and the next delete removes it.
    async fn drop_keypair(&self, lease_id: &str) {
        if let Err(e) = self.nova.delete_keypair(&keypair_name(lease_id)).await {
            warn!(lease = lease_id, error = %e, "could not delete the lease's key pair");
        }
    }

    /// How long a create we gave up on may still take to show up in the listing.
    fn settle_time(&self) -> Duration {
        self.cfg.request_timeout.min(Duration::from_secs(30))
    }

    fn failed(&self, lease_id: &str, reason: impl Into<String>) -> ProvisionError {
        ProvisionError::LaunchFailed {
            lease_id: lease_id.into(),
            reason: reason.into(),
        }
    }

    async fn launch_locked(&self, req: &LaunchRequest) -> Result<Machine> {
        let lease = req.lease_id.as_str();
        let (server_tx, server_rx) = watch::channel(None);
        let attaching = AtomicBool::new(false);
        let boot = self.boot(req, &server_tx);
        let early = self.early_access(lease, &req.extra_ports, server_rx, &attaching);
        tokio::pin!(boot, early);
        let mut prepared = None;
        let machine = loop {
            tokio::select! {
                m = &mut boot => break m?,
                r = &mut early, if prepared.is_none() => prepared = Some(r),
            }
        };
        // Neutron calls under way are finished rather than cut off (a create cut off could leave a second
        // floating IP behind the listing that follows).
        if prepared.is_none() && attaching.load(Ordering::SeqCst) {
            prepared = Some(early.await);
        }
        let prepared = match prepared {
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                warn!(lease, error = %e, "launch: setting up access while the machine built failed; again now");
                None
            }
            None => None,
        };
        self.open_access(lease, &req.extra_ports, machine, prepared)
            .await
    }

    /// The machine's access, set up while it builds: waits for the server's id (the create's answer), then
    /// for Neutron to list its ports, then sets them up ([`Self::attach`]). Never finishes when the
    /// network has no ports for machines; the launch drops it when the boot is over.
    async fn early_access(
        &self,
        lease: &str,
        extra_ports: &[u16],
        mut server: watch::Receiver<Option<String>>,
        attaching: &AtomicBool,
    ) -> Result<Prepared> {
        if matches!(self.cfg.network, Networks::None) {
            return std::future::pending().await;
        }
        let id = loop {
            if let Some(id) = server.borrow_and_update().clone() {
                break id;
            }
            if server.changed().await.is_err() {
                return std::future::pending().await;
            }
        };
        let mut poll = Poll::new(self.cfg.boot_timeout);
        let ports = loop {
            let ports = self.neutron.ports_of_server(&id).await?;
            if !ports.is_empty() {
                break ports;
            }
            if !poll.wait().await {
                return std::future::pending().await;
            }
        };
        attaching.store(true, Ordering::SeqCst);
        let floating = self.attach(lease, extra_ports, &ports).await?;
        Ok(Prepared {
            ports: ports.into_iter().map(|p| p.id).collect(),
            floating,
        })
    }

    /// Whether leases get their own security group: only machines on a network have ports to put in one.
    fn wants_security_group(&self) -> bool {
        self.cfg.access.security_group && !matches!(self.cfg.network, Networks::None)
    }

    /// The lease's security group (the provider's ports and those its buyer asked for), made before its
    /// server so the server's port never exists without it.
    async fn security_group(&self, lease: &str, extra_ports: &[u16]) -> Result<Option<String>> {
        if !self.wants_security_group() {
            return Ok(None);
        }
        let sg = self
            .neutron
            .ensure_security_group(lease, &self.cfg.access.lease_ports(extra_ports))
            .await?;
        Ok(Some(sg.id))
    }

    /// After the machine is up: its ports in the lease's security group (a server found again may predate
    /// it) and the floating IP on its first port; the machine as buyers reach it, floating address first.
    /// What was `prepared` while it built stands if the machine's ports are still those.
    async fn open_access(
        &self,
        lease: &str,
        extra_ports: &[u16],
        machine: Machine,
        prepared: Option<Prepared>,
    ) -> Result<Machine> {
        if matches!(self.cfg.network, Networks::None) {
            return Ok(machine);
        }
        let ports = self.neutron.ports_of_server(&machine.server_id).await?;
        let floating = match prepared {
            Some(p) if p.ports.iter().eq(ports.iter().map(|x| &x.id)) => p.floating,
            _ => self.attach(lease, extra_ports, &ports).await?,
        };
        Ok(match floating {
            // Nova learns of it from Neutron a moment later; the buyer needs it now.
            Some(ip) => floating_first(machine, &ip),
            None => machine,
        })
    }

    /// The server's `ports` in the lease's security group and tagged, and the floating IP (from the
    /// external network, when one is configured) on the first; the floating address.
    async fn attach(
        &self,
        lease: &str,
        extra_ports: &[u16],
        ports: &[Port],
    ) -> Result<Option<String>> {
        let sg = self.security_group(lease, extra_ports).await?;
        if let Some(sg) = &sg {
            for p in ports.iter().filter(|p| p.security_groups != [sg.clone()]) {
                self.neutron.set_security_groups(&p.id, &[sg]).await?;
            }
        }
        for p in ports {
            self.neutron.tag_port(lease, p).await?;
        }
        let (Some(ext), Some(port)) = (&self.cfg.access.external_network, ports.first()) else {
            return Ok(None);
        };
        let fip = self
            .neutron
            .ensure_floating_ip(lease, ext, &port.id)
            .await?;
        info!(
            lease,
            address = fip.floating_ip_address,
            "launch: floating IP attached"
        );
        Ok(Some(fip.floating_ip_address))
    }

    /// The machine with the lease's attached floating IP first, as Neutron records it. Nova's view of a
    /// server's addresses learns of a floating IP only when Neutron tells it (seconds later, or never on a
    /// cloud whose Neutron does not notify Nova), so a status read from Nova alone could miss the address
    /// the buyer logs in with.
    async fn with_floating_address(&self, lease: &str, machine: Machine) -> Result<Machine> {
        if matches!(self.cfg.network, Networks::None) || self.cfg.access.external_network.is_none()
        {
            return Ok(machine);
        }
        // Once Nova lists it, Neutron need not be asked (a status poll stays one call).
        let listed = machine
            .addresses
            .iter()
            .find(|a| a.kind.as_deref() == Some("floating"))
            .map(|a| a.ip.clone());
        if let Some(ip) = listed {
            return Ok(floating_first(machine, &ip));
        }
        let fips = match self.neutron.floating_ips_of(lease).await {
            Ok(f) => f,
            // a cloud without a network service has no floating IPs
            Err(ProvisionError::Catalog { .. }) => return Ok(machine),
            Err(e) => return Err(e),
        };
        Ok(match fips.iter().find(|f| f.port_id.is_some()) {
            Some(f) => floating_first(machine, &f.floating_ip_address),
            None => machine,
        })
    }

    /// The lease's server, booted (or found again) and followed until it is built.
    /// `server_id` learns the server's id as soon as it is known (for [`Self::early_access`]).
    async fn boot(
        &self,
        req: &LaunchRequest,
        server_id: &watch::Sender<Option<String>>,
    ) -> Result<Machine> {
        let lease = req.lease_id.as_str();
        // A retry, a restart or a crash after the create: the tagged server is the lease's machine.
        if let Some(s) = self.of_lease(lease).await?.into_iter().next() {
            info!(
                lease,
                server = s.id,
                status = s.status,
                "launch: the lease already has a machine"
            );
            server_id.send_replace(Some(s.id.clone()));
            return self.follow(lease, s.id).await;
        }
        let flavor = match self.flavor(&req.flavor).await {
            Err(e @ ProvisionError::NotFound { .. }) => {
                return Err(self.failed(lease, e.to_string()))
            }
            other => other?,
        };
        let image = match self.image(&req.image).await {
            Err(e @ ProvisionError::NotFound { .. }) => {
                return Err(self.failed(lease, e.to_string()))
            }
            other => other?,
        };
        let mut metadata = json!({ LEASE_TAG: lease });
        if let Some(owner) = self.owner() {
            metadata[PROVIDER_TAG] = json!(owner);
        }
        let mut server = json!({
            "name": server_name(lease),
            "imageRef": image.id,
            "flavorRef": flavor.id,
            "metadata": metadata,
        });
        server["networks"] = match &self.cfg.network {
            Networks::None => json!("none"),
            Networks::Auto => json!("auto"),
            Networks::Named(id) => json!([{ "uuid": id }]),
        };
        if let Some(sg) = self.security_group(lease, &req.extra_ports).await? {
            // Nova accepts a group's id where it says name.
            server["security_groups"] = json!([{ "name": sg }]);
        }
        match self.cfg.key_delivery {
            KeyDelivery::Keypair => {
                server["key_name"] = json!(self.ensure_keypair(lease, &req.ssh_public_key).await?);
            }
            KeyDelivery::UserData => {
                server["user_data"] = json!(userdata::user_data(&req.ssh_public_key)?);
            }
        }
        let body = json!({ "server": server });
        let mut backoff = Backoff::new(&self.cfg.retry);
        let id = loop {
            info!(
                lease,
                flavor = flavor.name,
                image = image.id,
                "launch: creating the server"
            );
            match self.nova.create_server(&body).await? {
                Created::Id(id) => break id,
                Created::Refused(e) => {
                    self.drop_keypair(lease).await;
                    return Err(self.failed(lease, e.to_string()));
                }
                Created::Unknown { why, in_flight } => {
                    warn!(
                        lease,
                        why,
                        "launch: the create got no trustworthy answer; looking before retrying"
                    );
                    let pause = backoff.failed();
                    tokio::time::sleep(pause.unwrap_or(Duration::from_millis(500))).await;
                    // Only a successful listing that shows nothing allows another create.
                    if let Some(s) = self.of_lease(lease).await?.into_iter().next() {
                        info!(lease, server = s.id, "launch: the create had gone through");
                        break s.id;
                    }
                    // Nova may still be working on a create we gave up on: give it as long again as we
                    // gave it, then look once more.
                    if in_flight {
                        tokio::time::sleep(self.settle_time()).await;
                        if let Some(s) = self.of_lease(lease).await?.into_iter().next() {
                            info!(
                                lease,
                                server = s.id,
                                "launch: the create had gone through, late"
                            );
                            break s.id;
                        }
                    }
                    if pause.is_none() {
                        return Err(ProvisionError::Unavailable {
                            service: "compute",
                            attempts: backoff.tried(),
                            last: why,
                        });
                    }
                }
            }
        };
        server_id.send_replace(Some(id.clone()));
        self.follow(lease, id).await
    }

    /// Waits for the lease's server to leave BUILD. ERROR: delete it and fail the launch. Gone: follow
    /// another server of the lease if one exists. Several: keep the oldest, delete the rest.
    async fn follow(&self, lease: &str, mut id: String) -> Result<Machine> {
        let mut poll = Poll::new(self.cfg.boot_timeout);
        loop {
            let server = self.nova.server(&id).await?.filter(|s| !s.is_gone());
            let Some(s) = server else {
                match self.of_lease(lease).await?.into_iter().next() {
                    Some(other) if other.id != id => {
                        id = other.id;
                        continue;
                    }
                    _ => {
                        return Err(
                            self.failed(lease, format!("server {id} was deleted while building"))
                        )
                    }
                }
            };
            match s.status.as_str() {
                "ERROR" => return Err(self.fail_errored(lease, &s).await),
                "BUILD" => {
                    if !poll.wait().await {
                        return Err(ProvisionError::BootTimeout {
                            lease_id: lease.into(),
                            server_id: s.id,
                            status: s.status,
                            waited: poll.elapsed(),
                        });
                    }
                }
                _ => {
                    let all = self.of_lease(lease).await?;
                    if all.len() > 1 {
                        let keep = all[0].id.clone();
                        let extra: Vec<&str> = all
                            .iter()
                            .filter(|x| x.id != keep)
                            .map(|x| x.id.as_str())
                            .collect();
                        warn!(
                            lease,
                            keep,
                            ?extra,
                            "launch: several servers for one lease, deleting the newer ones"
                        );
                        for x in &extra {
                            self.nova.delete_server(x).await?;
                        }
                        if keep != s.id {
                            id = keep;
                            continue;
                        }
                    }
                    info!(
                        lease,
                        server = s.id,
                        status = s.status,
                        "launch: machine is up"
                    );
                    return Ok(s.to_machine());
                }
            }
        }
    }

    /// An instance in ERROR is deleted (it would hold quota forever) and the launch reported as failed.
    async fn fail_errored(&self, lease: &str, s: &NovaServer) -> ProvisionError {
        let mut reason = format!(
            "server {} went to ERROR: {}",
            s.id,
            s.fault
                .as_ref()
                .map_or("no reason given", |f| f.message.as_str())
        );
        warn!(
            lease,
            server = s.id,
            reason,
            "launch failed, deleting the server"
        );
        if let Err(e) = self.delete_and_wait(lease, std::slice::from_ref(s)).await {
            reason.push_str(&format!(
                "; deleting it failed as well ({e}), reconciliation will report it"
            ));
        }
        self.drop_keypair(lease).await;
        self.failed(lease, reason)
    }

    async fn delete_and_wait(&self, lease: &str, servers: &[NovaServer]) -> Result<()> {
        for s in servers.iter().filter(|s| !s.is_gone()) {
            info!(lease, server = s.id, "deleting server");
            self.nova.delete_server(&s.id).await?;
        }
        let mut poll = Poll::new(self.cfg.boot_timeout);
        for s in servers {
            loop {
                match self.nova.server(&s.id).await? {
                    None => break,
                    Some(now) if now.status == "DELETED" => break,
                    Some(now) => {
                        if !poll.wait().await {
                            return Err(ProvisionError::StateTimeout {
                                lease_id: lease.into(),
                                server_id: s.id.clone(),
                                wanted: "deleted",
                                status: now.status,
                                waited: poll.elapsed(),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn power(&self, lease: &str, p: Power) -> Result<Machine> {
        validate_lease_id(lease)?;
        let _guard = self.lock(lease).await;
        let no_machine = || ProvisionError::NoMachine {
            lease_id: lease.into(),
        };
        let s = self
            .of_lease(lease)
            .await?
            .into_iter()
            .next()
            .ok_or_else(no_machine)?;
        if s.status == p.target() && s.task_state.is_none() {
            return Ok(s.to_machine());
        }
        let mut backoff = Backoff::new(&self.cfg.retry);
        loop {
            match self.nova.action(&s.id, p.action()).await? {
                Action::Accepted => break,
                Action::NotFound => return Err(no_machine()),
                // Often our own earlier try (its answer lost) already under way, or the state reached.
                Action::Conflict(msg) => {
                    let now = self.nova.server(&s.id).await?.ok_or_else(no_machine)?;
                    if now.status == p.target() || now.task_state.as_deref() == Some(p.transition())
                    {
                        break;
                    }
                    match backoff.failed() {
                        Some(d) => tokio::time::sleep(d).await,
                        None => {
                            return Err(ProvisionError::Api {
                                service: "compute",
                                method: "POST".into(),
                                path: format!("/servers/{}/action ({})", s.id, p.action()),
                                status: 409,
                                message: msg,
                            })
                        }
                    }
                }
            }
        }
        let mut poll = Poll::new(self.cfg.boot_timeout);
        loop {
            let now = self.nova.server(&s.id).await?.ok_or_else(no_machine)?;
            if now.status == p.target() && now.task_state.is_none() {
                info!(
                    lease,
                    server = s.id,
                    status = now.status,
                    "machine is {}",
                    p.wanted()
                );
                return Ok(now.to_machine());
            }
            if !poll.wait().await {
                return Err(ProvisionError::StateTimeout {
                    lease_id: lease.into(),
                    server_id: s.id,
                    wanted: p.wanted(),
                    status: now.status,
                    waited: poll.elapsed(),
                });
            }
        }
    }
}

impl Provisioner for OpenStackProvisioner {
    async fn launch(&self, req: &LaunchRequest) -> Result<Machine> {
        validate_lease_id(&req.lease_id)?;
        parse_ssh_key(&req.ssh_public_key)?;
        if req.extra_ports.contains(&0) || self.cfg.access.lease_ports(&req.extra_ports).len() > 16
        {
            return Err(ProvisionError::InvalidRequest(format!(
                "ports {:?}: a lease opens at most 16 TCP ports, none of them 0",
                req.extra_ports
            )));
        }
        let _guard = self.lock(&req.lease_id).await;
        self.launch_locked(req).await
    }

    async fn status(&self, lease_id: &str) -> Result<Option<Machine>> {
        validate_lease_id(lease_id)?;
        let Some(machine) = self
            .of_lease(lease_id)
            .await?
            .first()
            .map(NovaServer::to_machine)
        else {
            return Ok(None);
        };
        Ok(Some(self.with_floating_address(lease_id, machine).await?))
    }

    async fn stop(&self, lease_id: &str) -> Result<Machine> {
        self.power(lease_id, Power::Stop).await
    }

    async fn start(&self, lease_id: &str) -> Result<Machine> {
        self.power(lease_id, Power::Start).await
    }

    async fn delete(&self, lease_id: &str) -> Result<bool> {
        validate_lease_id(lease_id)?;
        let _guard = self.lock(lease_id).await;
        // include servers already being deleted, to wait for them too
        let servers: Vec<NovaServer> = self
            .ours_and_going()
            .await?
            .into_iter()
            .filter(|s| s.lease() == Some(lease_id))
            .collect();
        self.delete_and_wait(lease_id, &servers).await?;
        self.drop_keypair(lease_id).await;
        // Once the server (and with it its ports) is gone, nothing uses the lease's floating IP and group;
        // released whatever `network` says now (it may have said otherwise when they were made). A cloud
        // without a network service has none.
        match self.neutron.release(lease_id).await {
            Ok(()) | Err(ProvisionError::Catalog { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(!servers.is_empty())
    }

    async fn list_ours(&self) -> Result<Vec<Machine>> {
        Ok(self
            .ours()
            .await?
            .iter()
            .map(NovaServer::to_machine)
            .collect())
    }

    async fn inventory(&self) -> Result<Inventory> {
        let ours = self.ours().await?;
        inventory::collect(&self.nova, &self.glance, &self.mapping, &ours).await
    }

    async fn reclaim(&self, expected: &std::collections::BTreeSet<String>) -> Result<Vec<String>> {
        let marked = match self.neutron.marked().await {
            Ok(m) => m,
            Err(ProvisionError::Catalog { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if marked.is_empty() {
            return Ok(Vec::new());
        }
        // Servers being deleted count as present: their delete releases the rest itself.
        let with_server: std::collections::BTreeSet<String> = self
            .ours_and_going()
            .await?
            .iter()
            .filter_map(|s| s.lease().map(str::to_string))
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let orphans = crate::neutron::orphaned(
            &marked,
            &with_server,
            expected,
            now,
            self.cfg.access.orphan_grace_secs,
        );
        let mut released = Vec::new();
        for lease in orphans {
            let _guard = self.lock(&lease).await;
            // A launch may have made its server while we waited for the lock.
            if !self.of_lease(&lease).await?.is_empty() {
                continue;
            }
            info!(
                lease,
                "reconcile: releasing the floating IP and group of a lease without a machine"
            );
            self.neutron.release(&lease).await?;
            released.push(lease);
        }
        Ok(released)
    }
}

/// The user-data a launch with `key_delivery = "user_data"` sends, for callers that want to check it.
/// `machine` with `ip` as its first address, marked floating: added (on the network of its first address)
/// when Nova did not list it yet, moved to the front when it did.
fn floating_first(mut machine: Machine, ip: &str) -> Machine {
    let existing = machine.addresses.iter().position(|a| a.ip == ip);
    let address = match existing {
        Some(i) => machine.addresses.remove(i),
        None => Address {
            network: machine
                .addresses
                .first()
                .map(|a| a.network.clone())
                .unwrap_or_default(),
            ip: ip.to_string(),
            version: if ip.contains(':') { 6 } else { 4 },
            kind: Some("floating".into()),
        },
    };
    machine.addresses.insert(0, address);
    machine
}

pub fn user_data_for(ssh_public_key: &str) -> Result<String> {
    userdata::user_data(ssh_public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let lease = "ab".repeat(32);
        assert_eq!(keypair_name(&lease), format!("xov-{lease}"));
        assert_eq!(server_name(&lease), "xov-abababababababab");
        assert_eq!(server_name("x"), "xov-x");
    }

    #[test]
    fn oldest_healthy_first() {
        let s = |id: &str, status: &str, created: &str| -> NovaServer {
            serde_json::from_value(json!({"id": id, "status": status, "created": created})).unwrap()
        };
        let mut v = vec![
            s("c", "ACTIVE", "2026-01-02T00:00:00Z"),
            s("a", "ERROR", "2026-01-01T00:00:00Z"),
            s("b", "BUILD", "2026-01-01T00:00:00Z"),
        ];
        oldest_first(&mut v);
        let ids: Vec<&str> = v.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "a"]);
    }

    #[test]
    fn the_floating_address_comes_first() {
        let addr = |ip: &str, kind: &str| Address {
            network: "tenant".into(),
            ip: ip.into(),
            version: if ip.contains(':') { 6 } else { 4 },
            kind: Some(kind.into()),
        };
        let machine = |addresses: Vec<Address>| Machine {
            lease_id: "l".into(),
            server_id: "s".into(),
            name: "xov-l".into(),
            state: crate::MachineState::Running,
            cloud_status: "ACTIVE".into(),
            addresses,
            key_name: None,
            flavor: None,
            image_id: None,
            created_at: None,
            fault: None,
        };
        struct Case {
            name: &'static str,
            nova: Vec<Address>,
            floating: &'static str,
            want: Vec<Address>,
        }
        let cases = [
            Case {
                name: "Nova does not list it yet: added first, on the fixed address's network",
                nova: vec![addr("10.99.0.5", "fixed")],
                floating: "198.18.10.20",
                want: vec![addr("198.18.10.20", "floating"), addr("10.99.0.5", "fixed")],
            },
            Case {
                name: "Nova lists it after the fixed one: moved to the front, not duplicated",
                nova: vec![addr("10.99.0.5", "fixed"), addr("198.18.10.20", "floating")],
                floating: "198.18.10.20",
                want: vec![addr("198.18.10.20", "floating"), addr("10.99.0.5", "fixed")],
            },
            Case {
                name: "already first: unchanged",
                nova: vec![addr("198.18.10.20", "floating"), addr("10.99.0.5", "fixed")],
                floating: "198.18.10.20",
                want: vec![addr("198.18.10.20", "floating"), addr("10.99.0.5", "fixed")],
            },
            Case {
                name: "no address at all yet: the floating one alone, on no named network",
                nova: vec![],
                floating: "2001:db8::7",
                want: vec![Address {
                    network: String::new(),
                    ..addr("2001:db8::7", "floating")
                }],
            },
        ];
        for c in cases {
            let got = floating_first(machine(c.nova), c.floating);
            assert_eq!(got.addresses, c.want, "{}", c.name);
        }
    }
}
