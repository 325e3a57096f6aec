//! Shared parts of the OpenStack lab tests: the lab and a config for it, random lease ids, an independent
//! raw Nova/Keystone client (to look "behind the node's back" and to create things the provisioner must
//! find), and a janitor that deletes what a test created even when the test fails.

#![allow(dead_code)]

#[allow(unused_imports)] // not every test binary uses it
pub use xov_testnet::fault_proxy;

use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xov_provisioner::{
    ImageEntry, InventoryMapping, LaunchRequest, MappingEntry, Networks, OpenStackConfig,
    OpenStackSettings,
};
use xov_testnet::openstack::OpenStackLab;

/// The buyer's key in most tests, and another one.
pub const BUYER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAt0hIQEJ13ll80xY+oE3Fz0clfmlwjq27+OWKHg3XV/ buyer-a@xov-test";
pub const OTHER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOPBajAgTuWsjMz9q3+F2sqUg3qb7IqzRJ20tnlAuE3i buyer-b@xov-test";

/// The image name buyers see in these tests (mapped to the lab's `tiny-raw`).
pub const OFFERED_IMAGE: &str = "debian-12";

/// Instances the tests want to be able to run at once (tests run in parallel; Nova's default is 10).
const WANTED_INSTANCE_QUOTA: i64 = 50;

static TRACING: Once = Once::new();

/// Everything a lab test needs.
pub struct Ctx {
    pub lab: OpenStackLab,
    pub raw: Raw,
    pub janitor: Janitor,
}

/// The lab, or `None` when the developer set `XOV_SKIP_E2E=1`. Panics, saying how to start the lab, when
/// it cannot be reached or started.
pub async fn setup(test: &str) -> Option<Ctx> {
    TRACING.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "xov_provisioner=info".into()),
            )
            .with_test_writer()
            .try_init();
    });
    if xov_testnet::skip_e2e(test) {
        return None;
    }
    let lab = tokio::task::spawn_blocking(OpenStackLab::ensure)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let raw = Raw::new(&lab).await;
    raw.ensure_instance_quota(WANTED_INSTANCE_QUOTA).await;
    let janitor = Janitor::new(&lab);
    Some(Ctx { lab, raw, janitor })
}

impl Ctx {
    /// The lab's admin from the lab's clouds.yaml (cloud `xov-lab`: password auth over https, the lab's
    /// CA as `cacert`), as an operator attaches a cloud; no network, patient enough for the lab, quick to
    /// give up on faults.
    pub fn config(&self) -> OpenStackConfig {
        let settings: OpenStackSettings = toml::from_str(&format!(
            "cloud = \"{}\"\nnetwork = \"none\"\nboot_timeout = 90\nrequest_timeout = 15\n\
             [retry]\nattempts = 6\ninitial_delay = 0.2\nmax_delay = 2\n",
            self.lab.cloud
        ))
        .expect("settings");
        let file = self.lab.clouds_yaml.display().to_string();
        let cfg = settings
            .resolve_with(|k| (k == "OS_CLIENT_CONFIG_FILE").then(|| file.clone()))
            .unwrap_or_else(|e| panic!("the lab's clouds.yaml ({file}): {e}"));
        assert!(
            cfg.auth_url.starts_with("https://") && cfg.cacert.is_some(),
            "the lab's cloud is reached over https with its CA: {cfg:?}"
        );
        assert_eq!(cfg.network, Networks::None);
        assert_eq!(cfg.retry.attempts, 6);
        cfg
    }

    /// [`Ctx::config`] on the lab's tenant network, with floating IPs from its external network.
    pub fn networked_config(&self) -> OpenStackConfig {
        let (Some(tenant), Some(public)) = (
            self.lab.tenant_network.clone(),
            self.lab.public_network.clone(),
        ) else {
            panic!("the lab has no networks: run testnet/openstack/up.sh again");
        };
        let mut cfg = self.config();
        cfg.network = Networks::Named(tenant);
        cfg.access.external_network = Some(public);
        cfg
    }

    /// Sell the lab's flavor with its image, under its own name and as `debian-12`.
    pub fn mapping(&self) -> InventoryMapping {
        InventoryMapping {
            entries: vec![MappingEntry {
                flavor: self.lab.flavor_name.clone(),
                images: vec![
                    ImageEntry::Name(self.lab.image_name.clone()),
                    ImageEntry::Alias {
                        offer: OFFERED_IMAGE.into(),
                        glance: self.lab.image_name.clone(),
                    },
                ],
                price_sats_per_hour: 900,
                max_instances: None,
                gpu: None,
            }],
            gpu_names: Default::default(),
        }
    }

    /// A launch of the lab's flavor and the offered image, registered with the janitor.
    pub fn request(&self, lease_id: &str, key: &str) -> LaunchRequest {
        self.janitor.lease(lease_id);
        LaunchRequest {
            lease_id: lease_id.into(),
            flavor: self.lab.flavor_name.clone(),
            image: OFFERED_IMAGE.into(),
            ssh_public_key: key.into(),
            extra_ports: vec![],
        }
    }
}

/// A fresh random 64-hex lease id (the shape of real ones), unique across parallel tests and runs.
pub fn lease_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    (0..4)
        .map(|i| {
            let h = RandomState::new().hash_one((i, Instant::now(), std::process::id()));
            format!("{h:016x}")
        })
        .collect()
}

/// A fresh provider owner (`xov-provider=<owner>`), unique across parallel tests and runs.
pub fn owner(name: &str) -> String {
    format!("test-{}-{name}", &lease_id()[..16])
}

/// Nova and Keystone driven directly with reqwest, independent of the crate under test.
pub struct Raw {
    http: reqwest::Client,
    pub token: String,
    pub project_id: String,
    pub user_id: String,
    nova: String,
    keystone: String,
    glance: String,
}

fn nova_headers(rb: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    rb.header("X-Auth-Token", token)
        .header("X-OpenStack-Nova-API-Version", "2.90")
}

impl Raw {
    pub async fn new(lab: &OpenStackLab) -> Raw {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": lab.username, "domain": {"name": lab.user_domain}, "password": lab.password}}},
            "scope": {"project": {"name": lab.project_name, "domain": {"name": lab.project_domain}}}}});
        let resp = http
            .post(format!("{}/auth/tokens", lab.plain_auth_url))
            .json(&body)
            .send()
            .await
            .expect("keystone answers");
        assert_eq!(resp.status().as_u16(), 201, "admin token");
        let token = resp.headers()["X-Subject-Token"]
            .to_str()
            .unwrap()
            .to_string();
        let v: Value = resp.json().await.unwrap();
        Raw {
            http,
            token,
            project_id: v["token"]["project"]["id"].as_str().unwrap().into(),
            user_id: v["token"]["user"]["id"].as_str().unwrap().into(),
            nova: lab.compute_url.clone(),
            keystone: lab.plain_auth_url.clone(),
            glance: lab.image_url.clone(),
        }
    }

    async fn nova(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = nova_headers(
            self.http.request(method, format!("{}{path}", self.nova)),
            &self.token,
        );
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("nova answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn keystone(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.keystone))
            .header("X-Auth-Token", &self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("keystone answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Raises the project's Nova quota for instances (and matching cores and RAM) if it is lower.
    pub async fn ensure_instance_quota(&self, instances: i64) {
        let (_, v) = self.nova(reqwest::Method::GET, "/limits", None).await;
        let max = v["limits"]["absolute"]["maxTotalInstances"]
            .as_i64()
            .unwrap_or(-1);
        if max >= 0 && max < instances {
            let (status, _) = self
                .nova(
                    reqwest::Method::PUT,
                    &format!("/os-quota-sets/{}", self.project_id),
                    Some(json!({"quota_set": {
                        "instances": instances, "cores": instances * 2, "ram": instances * 2048}})),
                )
                .await;
            assert_eq!(status, 200, "raise the lab's quota");
        }
    }

    /// Live (not deleted) servers carrying `xov-lease=<lease>`.
    pub async fn servers_of_lease(&self, lease: &str) -> Vec<Value> {
        let (status, v) = self
            .nova(reqwest::Method::GET, "/servers/detail?limit=1000", None)
            .await;
        assert_eq!(status, 200);
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["metadata"]["xov-lease"] == lease)
            .filter(|s| s["status"] != "DELETED" && s["OS-EXT-STS:task_state"] != "deleting")
            .cloned()
            .collect()
    }

    /// Whether the server is gone: not found, or (as an admin may still read it for a while) `DELETED`.
    pub async fn gone(&self, id: &str) -> bool {
        self.server(id)
            .await
            .is_none_or(|s| s["status"] == "DELETED")
    }

    pub async fn server(&self, id: &str) -> Option<Value> {
        let (status, v) = self
            .nova(reqwest::Method::GET, &format!("/servers/{id}"), None)
            .await;
        match status {
            404 => None,
            200 => Some(v["server"].clone()),
            other => panic!("GET server {id}: {other} {v}"),
        }
    }

    pub async fn image_id(&self, name: &str) -> String {
        let resp = self
            .http
            .get(format!("{}/v2/images?name={name}", self.glance))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        v["images"][0]["id"].as_str().unwrap().to_string()
    }

    /// Boots a server directly (behind the node's back) with the lab's image and `flavor`.
    pub async fn create_server(
        &self,
        name: &str,
        flavor: &str,
        image_id: &str,
        metadata: Value,
    ) -> String {
        let (status, v) = self
            .nova(
                reqwest::Method::POST,
                "/servers",
                Some(
                    json!({"server": {"name": name, "imageRef": image_id, "flavorRef": flavor,
                    "networks": "none", "metadata": metadata}}),
                ),
            )
            .await;
        assert_eq!(status, 202, "create server: {v}");
        v["server"]["id"].as_str().unwrap().to_string()
    }

    pub async fn delete_server(&self, id: &str) {
        let (status, v) = self
            .nova(reqwest::Method::DELETE, &format!("/servers/{id}"), None)
            .await;
        assert!(
            matches!(status, 204 | 404),
            "delete server {id}: {status} {v}"
        );
    }

    /// Waits until a server is gone (404), up to `secs`.
    pub async fn wait_gone(&self, id: &str, secs: u64) -> bool {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            match self.server(id).await {
                None => return true,
                Some(s) if s["status"] == "DELETED" => return true,
                Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        false
    }

    pub async fn keypair(&self, name: &str) -> Option<Value> {
        let (status, v) = self
            .nova(reqwest::Method::GET, &format!("/os-keypairs/{name}"), None)
            .await;
        (status == 200).then(|| v["keypair"].clone())
    }

    pub async fn delete_keypair(&self, name: &str) {
        self.nova(
            reqwest::Method::DELETE,
            &format!("/os-keypairs/{name}"),
            None,
        )
        .await;
    }

    /// A private flavor for one test; returns its id.
    pub async fn create_flavor(&self, name: &str, vcpus: u32, ram: u32, disk: u64) -> String {
        let (status, v) = self
            .nova(
                reqwest::Method::POST,
                "/flavors",
                Some(json!({"flavor": {"name": name, "vcpus": vcpus, "ram": ram, "disk": disk}})),
            )
            .await;
        assert!(matches!(status, 200 | 201), "create flavor: {status} {v}");
        v["flavor"]["id"].as_str().unwrap().to_string()
    }

    pub async fn delete_flavor(&self, id: &str) {
        self.nova(reqwest::Method::DELETE, &format!("/flavors/{id}"), None)
            .await;
    }

    /// An application credential of the admin user for the admin project: `(id, secret)`.
    pub async fn create_app_cred(&self, name: &str) -> (String, String) {
        let (status, v) = self
            .keystone(
                reqwest::Method::POST,
                &format!("/users/{}/application_credentials", self.user_id),
                Some(json!({"application_credential": {"name": name}})),
            )
            .await;
        assert_eq!(status, 201, "create application credential: {v}");
        let c = &v["application_credential"];
        (
            c["id"].as_str().unwrap().into(),
            c["secret"].as_str().unwrap().into(),
        )
    }

    pub async fn delete_app_cred(&self, id: &str) {
        self.keystone(
            reqwest::Method::DELETE,
            &format!("/users/{}/application_credentials/{id}", self.user_id),
            None,
        )
        .await;
    }
}

/// Deletes, when dropped (test passed or panicked), the servers of the registered leases, registered
/// servers, key pairs, flavors and application credentials. Runs on its own thread and runtime, since a
/// `Drop` cannot await.
pub struct Janitor {
    lab: OpenStackLab,
    leases: Mutex<Vec<String>>,
    servers: Mutex<Vec<String>>,
    flavors: Mutex<Vec<String>>,
    app_creds: Mutex<Vec<String>>,
}

impl Janitor {
    fn new(lab: &OpenStackLab) -> Janitor {
        Janitor {
            lab: lab.clone(),
            leases: Mutex::default(),
            servers: Mutex::default(),
            flavors: Mutex::default(),
            app_creds: Mutex::default(),
        }
    }
    pub fn lease(&self, id: &str) {
        self.leases.lock().unwrap().push(id.into());
    }
    pub fn server(&self, id: &str) {
        self.servers.lock().unwrap().push(id.into());
    }
    pub fn flavor(&self, id: &str) {
        self.flavors.lock().unwrap().push(id.into());
    }
    pub fn app_cred(&self, id: &str) {
        self.app_creds.lock().unwrap().push(id.into());
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        let lab = self.lab.clone();
        let leases = std::mem::take(&mut *self.leases.lock().unwrap_or_else(|p| p.into_inner()));
        let mut servers =
            std::mem::take(&mut *self.servers.lock().unwrap_or_else(|p| p.into_inner()));
        let flavors = std::mem::take(&mut *self.flavors.lock().unwrap_or_else(|p| p.into_inner()));
        let creds = std::mem::take(&mut *self.app_creds.lock().unwrap_or_else(|p| p.into_inner()));
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let raw = Raw::new(&lab).await;
                for lease in &leases {
                    for s in raw.servers_of_lease(lease).await {
                        servers.push(s["id"].as_str().unwrap().to_string());
                    }
                    raw.delete_keypair(&xov_provisioner::keypair_name(lease))
                        .await;
                }
                for id in &servers {
                    raw.delete_server(id).await;
                }
                for id in &servers {
                    if !raw.wait_gone(id, 60).await {
                        eprintln!("janitor: server {id} still there after 60 s");
                    }
                }
                for id in &flavors {
                    raw.delete_flavor(id).await;
                }
                for id in &creds {
                    raw.delete_app_cred(id).await;
                }
            })
        });
        if done.join().is_err() {
            eprintln!("janitor: cleanup panicked; the lab may hold left-over test servers");
        }
    }
}
