//! The OpenStack lab (`testnet/openstack/up.sh`) for tests: a single-node Keystone, Nova (fake virt
//! driver), Glance and friends on 127.0.0.1. Unlike bitcoind it is shared, not started per test: it takes
//! ~50 s to start and ~1.4 GiB, so [`OpenStackLab::ensure`] checks that it answers and starts it only when
//! it does not. Tests must therefore use unique names and clean up what they create.
//!
//! The lab serves every API twice: over plain http (the catalog's internal endpoints, which the services use
//! among themselves and the tests use to look behind a node's back) and over https with a certificate of the
//! lab's own CA (the catalog's public endpoints, which the provisioner and nodes under test use, as on a real
//! cloud). [`OpenStackLab::auth_url`] is the https Keystone; [`OpenStackLab::cacert`] trusts it.
//!
//! Every test that lets nodes use the lab holds a [`LabCleanup`]: its provider nodes get owners from it
//! (`owner` in `[provider.openstack]`, so all they make is marked `xov-provider=<owner>`), and when it is
//! dropped, passed or panicked, it deletes every server, floating IP, port, security group and key pair
//! marked with them, and nothing else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::HarnessError;

const KEYSTONE_PORT: u16 = 5000;
const KEYSTONE_TLS_PORT: u16 = 15000;
const NOVA_PORT: u16 = 8774;
const GLANCE_PORT: u16 = 9292;
const NEUTRON_PORT: u16 = 9696;
/// The https ports of the catalog's public endpoints (Keystone, Nova, Glance, Placement, Neutron): what a
/// provider on another host reaches (up.sh's tls-proxy).
pub const PUBLIC_PORTS: [u16; 5] = [KEYSTONE_TLS_PORT, 18774, 19292, 18778, 19696];

/// How to reach the lab and what it holds (see `testnet/openstack/README.md`).
#[derive(Debug, Clone)]
pub struct OpenStackLab {
    /// Keystone v3 over https, `https://127.0.0.1:15000/v3` (its catalog's public endpoints are https too).
    pub auth_url: String,
    /// Keystone v3 over plain http, `http://127.0.0.1:5000/v3`, for clients that look behind a node's back.
    pub plain_auth_url: String,
    /// The lab's CA (`<state>/tls/ca.pem`): it signed the https endpoints' certificate.
    pub cacert: PathBuf,
    /// `<state>/clouds.yaml`, holding the cloud [`OpenStackLab::cloud`] (https, with the CA).
    pub clouds_yaml: PathBuf,
    /// `xov-lab`.
    pub cloud: String,
    /// Nova over plain http (an internal endpoint), `http://127.0.0.1:8774/v2.1`.
    pub compute_url: String,
    /// Nova's origin (`http://127.0.0.1:8774`), for proxies that forward paths unchanged.
    pub compute_origin: String,
    /// Glance, `http://127.0.0.1:9292`.
    pub image_url: String,
    /// Neutron's origin (`http://127.0.0.1:9696`; the API is under `/v2.0`), for proxies.
    pub network_origin: String,
    pub username: String,
    pub password: String,
    pub project_name: String,
    pub user_domain: String,
    pub project_domain: String,
    pub region: String,
    /// The lab's flavor: `m1.tiny`, id `1` (1 vCPU, 512 MiB, 1 GiB).
    pub flavor_id: String,
    pub flavor_name: String,
    /// The lab's image: `tiny-raw` (public, 1 KiB raw).
    pub image_name: String,
    /// The tenant network `xov-tenant` (behind router `xov-router`, floating IPs from `xov-public`), as
    /// `up.sh` wrote its id to `<state>/networks`; `None` for a lab started before it had networks.
    pub tenant_network: Option<String>,
    /// The external network `xov-public` that holds the floating IPs.
    pub public_network: Option<String>,
}

/// `key=value` from the lab's `networks` file.
fn network_id(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, v)| *k == key && !v.trim().is_empty())
        .map(|(_, v)| v.trim().to_string())
}

/// Serialises the check-and-start among a test binary's threads; remembers a failed start.
static ENSURE: Mutex<Option<bool>> = Mutex::new(None);

impl OpenStackLab {
    /// The lab, started with `up.sh` if Keystone or Nova does not answer. Fails with
    /// [`HarnessError::Missing`] (saying how to start it) if it cannot be started.
    pub fn ensure() -> Result<OpenStackLab, HarnessError> {
        let mut state = ENSURE.lock().unwrap_or_else(|p| p.into_inner());
        if !Self::answers() {
            if *state == Some(false) {
                return Err(Self::missing());
            }
            let ok = Self::start();
            *state = Some(ok);
            if !ok {
                return Err(Self::missing());
            }
        }
        *state = Some(true);
        Ok(Self::current())
    }

    fn current() -> OpenStackLab {
        let state = Self::state_dir();
        let networks = std::fs::read_to_string(state.join("networks")).unwrap_or_default();
        OpenStackLab {
            auth_url: format!("https://127.0.0.1:{KEYSTONE_TLS_PORT}/v3"),
            plain_auth_url: format!("http://127.0.0.1:{KEYSTONE_PORT}/v3"),
            cacert: state.join("tls/ca.pem"),
            clouds_yaml: state.join("clouds.yaml"),
            cloud: "xov-lab".into(),
            compute_url: format!("http://127.0.0.1:{NOVA_PORT}/v2.1"),
            compute_origin: format!("http://127.0.0.1:{NOVA_PORT}"),
            image_url: format!("http://127.0.0.1:{GLANCE_PORT}"),
            network_origin: format!("http://127.0.0.1:{NEUTRON_PORT}"),
            username: "admin".into(),
            password: std::env::var("OSLAB_ADMIN_PASSWORD").unwrap_or_else(|_| "admin".into()),
            project_name: "admin".into(),
            user_domain: "Default".into(),
            project_domain: "Default".into(),
            region: "RegionOne".into(),
            flavor_id: "1".into(),
            flavor_name: "m1.tiny".into(),
            image_name: "tiny-raw".into(),
            tenant_network: network_id(&networks, "tenant"),
            public_network: network_id(&networks, "public"),
        }
    }

    /// `$OSLAB_DIR`, by default `/tmp/openstack-lab/state`.
    fn state_dir() -> PathBuf {
        PathBuf::from(
            std::env::var("OSLAB_DIR").unwrap_or_else(|_| "/tmp/openstack-lab/state".into()),
        )
    }

    fn missing() -> HarnessError {
        HarnessError::Missing {
            what: "the OpenStack lab",
            how: "start it with `sudo bash testnet/openstack/up.sh` (Debian 12; installs packages the first \
                  time, ~2 min), see testnet/openstack/README.md",
        }
    }

    /// `testnet/openstack/` of this checkout.
    pub fn script_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openstack")
    }

    /// Keystone and Nova both answer their version documents, and the https front is up with its CA and
    /// clouds.yaml written (a lab started by an older up.sh has neither, and is brought up to date).
    pub fn answers() -> bool {
        let state = Self::state_dir();
        http_get_ok(KEYSTONE_PORT, "/v3", "v3")
            && http_get_ok(NOVA_PORT, "/", "v2.1")
            && state.join("tls/ca.pem").is_file()
            && state.join("clouds.yaml").is_file()
            && TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], KEYSTONE_TLS_PORT)),
                Duration::from_secs(2),
            )
            .is_ok()
    }

    /// Runs `up.sh` (as root directly, otherwise through `sudo -n`); true when the lab answers afterwards.
    fn start() -> bool {
        let up = Self::script_dir().join("up.sh");
        eprintln!("OpenStack lab not answering: running {}", up.display());
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let mut cmd = if root {
            Command::new("bash")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "bash"]);
            c
        };
        match cmd.arg(&up).output() {
            Ok(out) if out.status.success() && Self::answers() => true,
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                eprintln!(
                    "up.sh failed ({}):\n{}",
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
                false
            }
            Err(e) => {
                eprintln!("cannot run up.sh: {e}");
                false
            }
        }
    }
}

/// The lab's real compute mode (`testnet/openstack/realvm/up.sh`): a second Nova host, `oslab-real`, whose
/// libvirt boots the image `xov-tiny` under QEMU's software emulation, with Neutron's agents for DHCP, the
/// router and floating IPs. Everything of it lives in network namespaces the lab made; floating IPs are
/// reached from the namespace [`RealMode::buyer_ns`], which holds the external network's gateway.
#[derive(Debug, Clone)]
pub struct RealMode {
    /// The Glance image that boots on the real host (and only there): `xov-tiny`.
    pub image_name: String,
    /// Its id.
    pub image_id: String,
    /// The namespace from which a buyer reaches floating IPs (`oslab-buyer`).
    pub buyer_ns: String,
    /// Nova's host name of the real compute node (`oslab-real`).
    pub host: String,
    /// Nova's instance directory there: `<id>/console.log` is the machine's serial console.
    pub instances_dir: PathBuf,
    /// The user the image lets in with the key from the config drive.
    pub user: String,
}

/// Serialises `ensure_real` among a test binary's threads; remembers its outcome.
static ENSURE_REAL: Mutex<Option<Result<RealMode, String>>> = Mutex::new(None);

impl OpenStackLab {
    /// The real compute mode, started with `realvm/up.sh` (idempotent; ~10 s when it is already up, a minute
    /// or two the first time, installing libvirt, QEMU and the agents). [`HarnessError::Unavailable`] says
    /// why the machine cannot run it (the script's last line).
    pub fn ensure_real(&self) -> Result<RealMode, HarnessError> {
        let mut state = ENSURE_REAL.lock().unwrap_or_else(|p| p.into_inner());
        if state.is_none() {
            *state = Some(Self::start_real());
        }
        match state.as_ref() {
            Some(Ok(r)) => Ok(r.clone()),
            Some(Err(why)) => Err(HarnessError::Unavailable {
                what: "the lab's real compute mode",
                why: why.clone(),
            }),
            None => unreachable!("set above"),
        }
    }

    fn start_real() -> Result<RealMode, String> {
        let up = Self::script_dir().join("realvm/up.sh");
        let out = Command::new("bash")
            .arg(&up)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", up.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            return Err(format!(
                "{} failed ({}):\n{}",
                up.display(),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        let state = Self::state_dir();
        let written = std::fs::read_to_string(state.join("real")).unwrap_or_default();
        let image_id = network_id(&written, "image").ok_or_else(|| {
            format!(
                "{} wrote no image id to {}",
                up.display(),
                state.join("real").display()
            )
        })?;
        Ok(RealMode {
            image_name: "xov-tiny".into(),
            image_id,
            buyer_ns: network_id(&written, "buyer_ns").unwrap_or_else(|| "oslab-buyer".into()),
            host: network_id(&written, "host").unwrap_or_else(|| "oslab-real".into()),
            instances_dir: state.join("data/real/nova/instances"),
            user: "root".into(),
        })
    }

    /// A Keystone token for the lab's admin over plain http, to look behind a node's back.
    pub async fn admin_token(&self, client: &reqwest::Client) -> Result<String, String> {
        let body = serde_json::json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": self.username, "password": self.password, "domain": {"name": self.user_domain}}}},
            "scope": {"project": {"name": self.project_name, "domain": {"name": self.project_domain}}}}});
        let r = client
            .post(format!("{}/auth/tokens", self.plain_auth_url))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        r.headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .ok_or_else(|| format!("keystone gave no token ({})", r.status()))
    }

    /// `GET` on the lab's plain-http Neutron (`/v2.0/...`) as its admin.
    pub async fn neutron_get(
        &self,
        client: &reqwest::Client,
        token: &str,
        path: &str,
    ) -> Result<serde_json::Value, String> {
        let r = client
            .get(format!("http://127.0.0.1:{NEUTRON_PORT}/v2.0{path}"))
            .header("X-Auth-Token", token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(v)
        } else {
            Err(format!("GET {path}: {status} {v}"))
        }
    }
}

impl RealMode {
    /// An `ssh` that runs inside [`RealMode::buyer_ns`], for `XOV_SSH`: the buyer's `xov ssh` reaches the
    /// floating IP as a buyer on the lab's "internet" would. Written to `dir/ssh-in-<ns>`.
    pub fn ssh_wrapper(&self, dir: &std::path::Path) -> std::io::Result<PathBuf> {
        let path = dir.join(format!("ssh-in-{}", self.buyer_ns));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec ip netns exec {} ssh -o BatchMode=yes -o ConnectTimeout=10 \"$@\"\n",
                self.buyer_ns
            ),
        )?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(path)
    }

    /// `ssh -i key user@address command` from [`RealMode::buyer_ns`], with no known-hosts file and no
    /// password prompt: for logins the buyer's node is not part of (another key, a stopped machine).
    pub fn ssh(
        &self,
        key: &std::path::Path,
        address: &str,
        command: &[&str],
    ) -> std::io::Result<std::process::Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.buyer_ns, "ssh", "-i"])
            .arg(key)
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                &format!("{}@{address}", self.user),
                "--",
            ])
            .args(command)
            .output()
    }

    /// The serial console log of a server booted on the real host.
    pub fn console_log(&self, server_id: &str) -> PathBuf {
        self.instances_dir.join(server_id).join("console.log")
    }
}

/// A raw `GET path HTTP/1.0` on 127.0.0.1:port: true on a 2xx/3xx answer whose body mentions `needle`.
/// Plain std, so the harness needs no HTTP client.
fn http_get_ok(port: u16, path: &str, needle: &str) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status_ok = text
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2') || code.starts_with('3'));
    status_ok && text.contains(needle)
}

/// What one test's provider nodes made in the lab: found by their owner marker (`xov-provider=<owner>` on
/// servers, and in the description or tags of Neutron resources), key pairs by the leases those name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabResources {
    /// `(server id, lease id)`.
    pub servers: Vec<(String, String)>,
    pub floating_ips: Vec<String>,
    pub ports: Vec<String>,
    pub security_groups: Vec<String>,
    /// Key pair names (`xov-<lease id>`).
    pub keypairs: Vec<String>,
}

impl LabResources {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
            && self.floating_ips.is_empty()
            && self.ports.is_empty()
            && self.security_groups.is_empty()
            && self.keypairs.is_empty()
    }
}

impl std::fmt::Display for LabResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing");
        }
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|(id, lease)| format!("{id} (lease {})", lease.get(..12).unwrap_or(lease)))
            .collect();
        let mut parts = Vec::new();
        for (what, list) in [
            ("servers", &servers),
            ("floating IPs", &self.floating_ips),
            ("ports", &self.ports),
            ("security groups", &self.security_groups),
            ("key pairs", &self.keypairs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{what} {}", list.join(", ")));
            }
        }
        f.write_str(&parts.join("; "))
    }
}

/// Why [`LabCleanup`] could not list or delete what a test made.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("cannot start the cleanup's thread or runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the cleanup's thread panicked")]
    Panicked,
    #[error("keystone gave the lab's admin no token: {0}")]
    Token(String),
    #[error("{method} {url}: {detail}")]
    Http {
        method: &'static str,
        url: String,
        detail: String,
    },
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("still in the lab after the cleanup: {0}")]
    Left(LabResources),
}

/// How long a cleanup waits for deleted servers to go and security groups to be free of ports.
const CLEANUP_PATIENCE: Duration = Duration::from_secs(120);

/// Cleans up after one test that uses the lab: deletes, when dropped (test passed or panicked), every server,
/// floating IP, port, security group and key pair that the test's provider nodes made.
///
/// Invariants:
/// - Each test gets a random prefix; its provider nodes are configured with owners [`LabCleanup::owner`]
///   under it (`owner = "..."` in `[provider.openstack]`), so everything they make is marked
///   `xov-provider=<prefix>-<node>`, and only what carries such a marker is touched: tests running beside it
///   (and their providers) are never disturbed.
/// - Key pairs carry no marker: those of leases seen on the test's servers and Neutron resources (and any
///   registered with [`LabCleanup::lease`]) are deleted. So are servers and Neutron resources without any
///   owner marker that belong to a registered lease (what a node that wrote no owner made for the test).
/// - Cleaning is idempotent (what is gone already is skipped, a 404 counts as done) and logs what it deleted.
///   Every call runs on its own thread with its own runtime, so a `Drop` inside a tokio runtime works.
/// - Declare the guard before the nodes: locals drop in reverse order, so the nodes are stopped (and make
///   nothing more) before it cleans.
pub struct LabCleanup {
    lab: OpenStackLab,
    test: String,
    prefix: String,
    leases: Mutex<std::collections::BTreeSet<String>>,
}

impl LabCleanup {
    /// A guard for the test named `test` (for the log), with a fresh random prefix.
    pub fn new(lab: &OpenStackLab, test: &str) -> LabCleanup {
        use std::collections::hash_map::RandomState;
        use std::hash::BuildHasher;
        let h =
            RandomState::new().hash_one((test, std::time::SystemTime::now(), std::process::id()));
        LabCleanup {
            lab: lab.clone(),
            test: test.to_string(),
            prefix: format!("t{h:016x}"),
            leases: Mutex::default(),
        }
    }

    /// The owner marker for one of the test's provider nodes (`node` names it, e.g. `p1`): `<prefix>-<node>`,
    /// characters other than `[A-Za-z0-9_-]` replaced, at most 64 characters.
    pub fn owner(&self, node: &str) -> String {
        let node: String = node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(64 - self.prefix.len() - 1)
            .collect();
        format!("{}-{node}", self.prefix)
    }

    /// Whether `owner` is one this guard hands out.
    pub fn owns(&self, owner: &str) -> bool {
        owned_by(Some(owner), &self.prefix)
    }

    /// Remembers a lease of the test, so that its key pair is deleted even when nothing else of it is left, and
    /// its servers and Neutron resources even when they carry no owner marker.
    pub fn lease(&self, id: &str) {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }

    /// What the test's nodes have in the lab now (servers being deleted count until they are gone).
    pub fn leftovers(&self) -> Result<LabResources, CleanupError> {
        self.on_own_thread(false)
    }

    /// Deletes what the test's nodes made; returns what it deleted. Safe to call again (and again on drop).
    pub fn clean(&self) -> Result<LabResources, CleanupError> {
        self.on_own_thread(true)
    }

    /// [`LabCleanup::clean`], then checks that nothing of the test is left ([`CleanupError::Left`] if
    /// something is).
    pub fn clean_and_check(&self) -> Result<LabResources, CleanupError> {
        let deleted = self.clean()?;
        let left = self.leftovers()?;
        if left.is_empty() {
            Ok(deleted)
        } else {
            Err(CleanupError::Left(left))
        }
    }

    fn on_own_thread(&self, delete: bool) -> Result<LabResources, CleanupError> {
        let lab = self.lab.clone();
        let prefix = self.prefix.clone();
        let known: Vec<String> = self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let worker = std::thread::Builder::new()
            .name(format!("lab-cleanup-{prefix}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(CleanupError::Runtime)?;
                rt.block_on(async move {
                    let api = LabApi::new(&lab).await?;
                    api.sweep(&prefix, known, delete).await
                })
            })
            .map_err(CleanupError::Runtime)?;
        let (found, leases) = worker.join().map_err(|_| CleanupError::Panicked)??;
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(leases);
        Ok(found)
    }
}

impl Drop for LabCleanup {
    fn drop(&mut self) {
        match self.clean() {
            Ok(deleted) if deleted.is_empty() => {
                eprintln!("lab cleanup ({}, {}): nothing left", self.test, self.prefix)
            }
            Ok(deleted) => eprintln!(
                "lab cleanup ({}, {}): deleted {deleted}",
                self.test, self.prefix
            ),
            Err(e) => eprintln!(
                "lab cleanup ({}, {}) failed: {e}; the lab may keep what this test made",
                self.test, self.prefix
            ),
        }
    }
}

/// Which list of [`LabResources`] a kind of Neutron resource goes to.
type ListOf = fn(&mut LabResources) -> &mut Vec<String>;

/// The lab's Nova and Neutron over plain http as its admin, for [`LabCleanup`].
struct LabApi {
    http: reqwest::Client,
    token: String,
    /// Nova, `http://127.0.0.1:8774/v2.1`.
    nova: String,
    /// Neutron, `http://127.0.0.1:9696/v2.0`.
    neutron: String,
}

/// The lease and the owner a Neutron resource's description (`xov-lease=L xov-provider=O`) or tags name.
fn neutron_marks(item: &serde_json::Value) -> (Option<String>, Option<String>) {
    let mut lease = None;
    let mut owner = None;
    let description = item["description"].as_str().unwrap_or_default();
    let tags = item["tags"].as_array().into_iter().flatten();
    let words = description
        .split(' ')
        .chain(tags.filter_map(serde_json::Value::as_str));
    for w in words {
        if let Some(l) = w.strip_prefix("xov-lease=") {
            lease.get_or_insert_with(|| l.to_string());
        } else if let Some(o) = w.strip_prefix("xov-provider=") {
            owner.get_or_insert_with(|| o.to_string());
        }
    }
    (lease, owner)
}

fn owned_by(owner: Option<&str>, prefix: &str) -> bool {
    owner.is_some_and(|o| {
        o.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('-'))
    })
}

/// Whether something marked with `owner` (`None`: no provider marker) and `lease` is the test's: marked with
/// one of its owners, or unmarked and of a lease the test registered (a node that wrote no owner made it;
/// lease ids are random, so no other test has it). Another owner's is never the test's.
fn claims(
    owner: Option<&str>,
    lease: Option<&str>,
    prefix: &str,
    leases: &std::collections::BTreeSet<String>,
) -> bool {
    match owner {
        Some(_) => owned_by(owner, prefix),
        None => lease.is_some_and(|l| leases.contains(l)),
    }
}

impl LabApi {
    async fn new(lab: &OpenStackLab) -> Result<LabApi, CleanupError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CleanupError::Http {
                method: "build",
                url: String::new(),
                detail: e.to_string(),
            })?;
        let token = lab.admin_token(&http).await.map_err(CleanupError::Token)?;
        Ok(LabApi {
            http,
            token,
            nova: lab.compute_url.clone(),
            neutron: format!("http://127.0.0.1:{NEUTRON_PORT}/v2.0"),
        })
    }

    /// `(status, body)` of one request; a transport failure is an error, any status is returned.
    async fn call(
        &self,
        method: &'static str,
        url: &str,
    ) -> Result<(u16, serde_json::Value), CleanupError> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let r = self
            .http
            .request(m, url)
            .header("X-Auth-Token", &self.token)
            .header("X-OpenStack-Nova-API-Version", "2.90")
            .send()
            .await
            .map_err(|e| CleanupError::Http {
                method,
                url: url.to_string(),
                detail: e.to_string(),
            })?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or_default()))
    }

    async fn get(&self, url: &str) -> Result<serde_json::Value, CleanupError> {
        match self.call("GET", url).await? {
            (200, v) => Ok(v),
            (status, body) => Err(CleanupError::Status {
                method: "GET",
                url: url.to_string(),
                status,
                body: body.to_string(),
            }),
        }
    }

    /// DELETE; true when it deleted something, false when it was gone already (404).
    async fn delete(&self, url: &str) -> Result<bool, CleanupError> {
        match self.call("DELETE", url).await? {
            (200..=299, _) => Ok(true),
            (404, _) => Ok(false),
            (status, body) => Err(CleanupError::Status {
                method: "DELETE",
                url: url.to_string(),
                status,
                body: body.to_string(),
            }),
        }
    }

    /// `(id, lease)` of the live servers the test [`claims`].
    async fn servers(
        &self,
        prefix: &str,
        leases: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<(String, String)>, CleanupError> {
        let v = self
            .get(&format!("{}/servers/detail?limit=1000", self.nova))
            .await?;
        Ok(v["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                let m = &s["metadata"];
                claims(
                    m["xov-provider"].as_str(),
                    m["xov-lease"].as_str(),
                    prefix,
                    leases,
                )
            })
            .filter(|s| s["status"] != "DELETED" && s["status"] != "SOFT_DELETED")
            .map(|s| {
                (
                    s["id"].as_str().unwrap_or_default().to_string(),
                    s["metadata"]["xov-lease"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect())
    }

    /// `(id, lease)` of the Neutron resources of one kind (`floatingips`, `ports`, `security-groups`,
    /// answered under `key`) the test [`claims`].
    async fn neutron(
        &self,
        path: &str,
        key: &str,
        prefix: &str,
        leases: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<(String, Option<String>)>, CleanupError> {
        let v = self.get(&format!("{}/{path}", self.neutron)).await?;
        Ok(v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| {
                let (lease, owner) = neutron_marks(item);
                claims(owner.as_deref(), lease.as_deref(), prefix, leases)
                    .then(|| (item["id"].as_str().unwrap_or_default().to_string(), lease))
            })
            .collect())
    }

    /// Finds (and with `delete`, deletes) what the owners under `prefix` made, and what carries no owner but
    /// one of the `known` leases; key pairs of `known` leases and of the leases found. Returns what it found
    /// (deleted) and every lease it saw.
    async fn sweep(
        &self,
        prefix: &str,
        known: Vec<String>,
        delete: bool,
    ) -> Result<(LabResources, Vec<String>), CleanupError> {
        let mut leases: std::collections::BTreeSet<String> = known.into_iter().collect();
        let mut found = LabResources::default();

        let servers = self.servers(prefix, &leases).await?;
        leases.extend(
            servers
                .iter()
                .map(|(_, l)| l.clone())
                .filter(|l| !l.is_empty()),
        );
        for (id, lease) in servers {
            if !delete || self.delete(&format!("{}/servers/{id}", self.nova)).await? {
                found.servers.push((id, lease));
            }
        }
        if delete {
            let until = std::time::Instant::now() + CLEANUP_PATIENCE;
            loop {
                let left = self.servers(prefix, &leases).await?;
                if left.is_empty() {
                    break;
                }
                if std::time::Instant::now() >= until {
                    return Err(CleanupError::Left(LabResources {
                        servers: left,
                        ..LabResources::default()
                    }));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }

        // Floating IPs first (they hold ports), then ports, then the groups the ports were in.
        let kinds: [(&str, &str, ListOf); 3] = [
            ("floatingips", "floatingips", |r| &mut r.floating_ips),
            ("ports", "ports", |r| &mut r.ports),
            ("security-groups", "security_groups", |r| {
                &mut r.security_groups
            }),
        ];
        for (path, key, list) in kinds {
            let items = self.neutron(path, key, prefix, &leases).await?;
            leases.extend(items.iter().filter_map(|(_, l)| l.clone()));
            for (id, _) in items {
                let url = format!("{}/{path}/{id}", self.neutron);
                let deleted = if delete {
                    self.delete_patiently(&url).await?
                } else {
                    true
                };
                if deleted {
                    list(&mut found).push(id);
                }
            }
        }

        for lease in &leases {
            let url = format!("{}/os-keypairs/xov-{lease}", self.nova);
            let there = if delete {
                self.delete(&url).await?
            } else {
                self.call("GET", &url).await?.0 == 200
            };
            if there {
                found.keypairs.push(format!("xov-{lease}"));
            }
        }
        Ok((found, leases.into_iter().collect()))
    }

    /// DELETE, waiting while Neutron says the resource is still in use (409: a port of a server Nova is
    /// still tearing down).
    async fn delete_patiently(&self, url: &str) -> Result<bool, CleanupError> {
        let until = std::time::Instant::now() + CLEANUP_PATIENCE;
        loop {
            match self.delete(url).await {
                Err(CleanupError::Status { status: 409, .. })
                    if std::time::Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod cleanup_tests {
    use super::*;

    #[test]
    fn markers_of_neutron_resources() {
        struct Case {
            name: &'static str,
            item: serde_json::Value,
            want: (Option<&'static str>, Option<&'static str>),
        }
        let cases = [
            Case {
                name: "lease and owner in the description",
                item: serde_json::json!({"description": "xov-lease=l1 xov-provider=t1-p1", "tags": []}),
                want: (Some("l1"), Some("t1-p1")),
            },
            Case {
                name: "a port: tags only",
                item: serde_json::json!({"description": "", "tags": ["xov-lease=l2", "xov-provider=t1-p2"]}),
                want: (Some("l2"), Some("t1-p2")),
            },
            Case {
                name: "made before owners",
                item: serde_json::json!({"description": "xov-lease=l3", "tags": ["xov-lease=l3"]}),
                want: (Some("l3"), None),
            },
            Case {
                name: "not xov's",
                item: serde_json::json!({"description": "Default security group"}),
                want: (None, None),
            },
        ];
        for c in cases {
            let (lease, owner) = neutron_marks(&c.item);
            assert_eq!((lease.as_deref(), owner.as_deref()), c.want, "{}", c.name);
        }
    }

    #[test]
    fn what_a_test_claims() {
        let leases: std::collections::BTreeSet<String> = ["registered".to_string()].into();
        struct Case {
            name: &'static str,
            owner: Option<&'static str>,
            lease: Option<&'static str>,
            claimed: bool,
        }
        let cases = [
            Case {
                name: "one of its owners",
                owner: Some("t1-p1"),
                lease: Some("any"),
                claimed: true,
            },
            Case {
                name: "another test's owner, even with a registered lease",
                owner: Some("t2-p1"),
                lease: Some("registered"),
                claimed: false,
            },
            Case {
                name: "unmarked, of a registered lease",
                owner: None,
                lease: Some("registered"),
                claimed: true,
            },
            Case {
                name: "unmarked, of another lease (left from before owners, or another test's)",
                owner: None,
                lease: Some("other"),
                claimed: false,
            },
            Case {
                name: "not xov's at all",
                owner: None,
                lease: None,
                claimed: false,
            },
        ];
        for c in cases {
            assert_eq!(
                claims(c.owner, c.lease, "t1", &leases),
                c.claimed,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn a_guard_owns_only_its_own_owners() {
        let lab = OpenStackLab::current();
        let a = LabCleanup::new(&lab, "a");
        let b = LabCleanup::new(&lab, "a");
        let owner = a.owner("provider 1");
        assert!(owner.ends_with("-provider-1"), "{owner}");
        assert!(
            owner.len() <= 64
                && owner
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert!(a.owns(&owner));
        assert!(owned_by(Some(&owner), &a.prefix));
        assert!(!b.owns(&owner), "two guards never share owners");
        assert!(
            !owned_by(Some(&a.prefix), &a.prefix),
            "the bare prefix is no owner"
        );
        assert!(!owned_by(None, &a.prefix), "unmarked is never a test's");
        assert!(a.owner(&"x".repeat(100)).len() <= 64);
        // leave nothing for the guards to clean
        std::mem::forget(a);
        std::mem::forget(b);
    }
}
