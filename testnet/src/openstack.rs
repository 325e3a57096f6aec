//! The OpenStack lab (`testnet/openstack/up.sh`) for tests: a single-node Keystone, Nova (fake virt
//! driver), Glance and friends on 127.0.0.1. Unlike bitcoind it is shared, not started per test: it takes
//! ~50 s to start and ~1.4 GiB, so [`OpenStackLab::ensure`] checks that it answers and starts it only when
//! it does not. Tests must therefore use unique names and clean up what they create.
//!
//! The lab serves every API twice: over plain http (the catalog's internal endpoints, which the services use
//! among themselves and the tests use to look behind a node's back) and over https with a certificate of the
//! lab's own CA (the catalog's public endpoints, which the provisioner and nodes under test use, as on a real
//! cloud). [`OpenStackLab::auth_url`] is the https Keystone; [`OpenStackLab::cacert`] trusts it.

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
