//! Nova (compute API v2.1) as typed calls: microversion negotiation, servers, actions, flavors, limits and
//! key pairs. Everything here is one request (with retries where repeating is harmless); the launch logic
//! that makes booting idempotent lives in `openstack.rs`.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use tracing::info;

use crate::error::{ProvisionError, Result};
use crate::http::{Failure, Service};
use crate::provisioner::{Address, Machine, MachineState, LEASE_TAG, PROVIDER_TAG};

/// The oldest compute API we accept: 2.37 boots with `"networks": "none"`, 2.47 embeds the flavor in the
/// server (so we can count machines per flavor without another call).
pub(crate) const MIN_MICROVERSION: (u32, u32) = (2, 47);
/// What we ask for when Nova has it (the version the lab's curl walk-through uses).
pub(crate) const WANTED_MICROVERSION: (u32, u32) = (2, 90);

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NovaServer {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub addresses: BTreeMap<String, Vec<NovaAddress>>,
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(default)]
    pub flavor: Option<ServerFlavor>,
    /// `{"id": ...}`, or `""` for a volume-backed server.
    #[serde(default)]
    pub image: Value,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default, rename = "OS-EXT-STS:task_state")]
    pub task_state: Option<String>,
    #[serde(default)]
    pub fault: Option<Fault>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NovaAddress {
    pub addr: String,
    #[serde(default)]
    pub version: u8,
    #[serde(default, rename = "OS-EXT-IPS:type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ServerFlavor {
    #[serde(default)]
    pub original_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Fault {
    #[serde(default)]
    pub message: String,
}

impl NovaServer {
    /// The lease this server belongs to, if it carries our tag.
    pub fn lease(&self) -> Option<&str> {
        self.metadata.get(LEASE_TAG).map(String::as_str)
    }

    /// The provider that made it (`xov-provider`), if it says; none on servers made before the marker.
    pub fn provider(&self) -> Option<&str> {
        self.metadata.get(PROVIDER_TAG).map(String::as_str)
    }

    /// Carries our lease tag and is ours ([`crate::provisioner::is_ours`]) for a provisioner with `owner`.
    pub fn is_ours(&self, owner: Option<&str>) -> bool {
        self.lease().is_some() && crate::provisioner::is_ours(self.provider(), owner)
    }

    /// Gone or going: Nova may still list a server for a moment after deletion.
    pub fn is_gone(&self) -> bool {
        matches!(self.status.as_str(), "DELETED" | "SOFT_DELETED")
            || self.task_state.as_deref() == Some("deleting")
    }

    pub fn state(&self) -> MachineState {
        if self.is_gone() {
            return MachineState::Deleting;
        }
        match self.status.as_str() {
            "BUILD" => MachineState::Building,
            "ACTIVE" => MachineState::Running,
            "SHUTOFF" => MachineState::Stopped,
            "ERROR" => MachineState::Error,
            _ => MachineState::Other,
        }
    }

    pub fn to_machine(&self) -> Machine {
        Machine {
            lease_id: self.lease().unwrap_or_default().to_string(),
            server_id: self.id.clone(),
            name: self.name.clone(),
            state: self.state(),
            cloud_status: self.status.clone(),
            addresses: self
                .addresses
                .iter()
                .flat_map(|(net, addrs)| {
                    addrs.iter().map(move |a| Address {
                        network: net.clone(),
                        ip: a.addr.clone(),
                        version: a.version,
                        kind: a.kind.clone(),
                    })
                })
                .collect(),
            key_name: self.key_name.clone(),
            flavor: self.flavor.as_ref().and_then(|f| f.original_name.clone()),
            image_id: self
                .image
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string),
            created_at: self.created.clone(),
            fault: self.fault.as_ref().map(|f| f.message.clone()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Flavor {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    /// MiB
    pub ram: u32,
    /// GiB
    pub disk: u32,
    #[serde(default, rename = "OS-FLV-DISABLED:disabled")]
    pub disabled: bool,
    /// Microversion 2.61 and later list them with the flavor (accelerators, placement traits).
    #[serde(default)]
    pub extra_specs: std::collections::BTreeMap<String, String>,
}

/// The project's absolute limits; negative maxima mean unlimited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Limits {
    #[serde(default = "unlimited")]
    pub max_total_instances: i64,
    #[serde(default)]
    pub total_instances_used: i64,
    #[serde(default = "unlimited")]
    pub max_total_cores: i64,
    #[serde(default)]
    pub total_cores_used: i64,
    #[serde(default = "unlimited", rename = "maxTotalRAMSize")]
    pub max_total_ram_size: i64,
    #[serde(default, rename = "totalRAMUsed")]
    pub total_ram_used: i64,
}

fn unlimited() -> i64 {
    -1
}

/// How a server create went.
pub(crate) enum Created {
    /// Nova accepted it: the new server's id.
    Id(String),
    /// No answer we can trust (connection dropped, timeout, 5xx): the server may or may not exist, and with
    /// `in_flight` it may still appear a while later.
    Unknown { why: String, in_flight: bool },
    /// Nova refused it (4xx): nothing was created.
    Refused(ProvisionError),
}

/// How a server action (os-stop, os-start) went.
pub(crate) enum Action {
    Accepted,
    /// 409: the server is not in a state that allows it (often: already there, or on its way).
    Conflict(String),
    NotFound,
}

pub(crate) struct Nova {
    pub svc: Service,
    microversion: OnceCell<String>,
}

impl Nova {
    pub fn new(svc: Service) -> Nova {
        Nova {
            svc,
            microversion: OnceCell::new(),
        }
    }

    /// The microversion we speak, agreed with Nova once (its version document at the endpoint root).
    pub async fn microversion(&self) -> Result<&str> {
        self.microversion
            .get_or_try_init(|| async {
                let reply = self.svc.call(Method::GET, "", None, &[]).await?;
                let doc: Value = reply.expect_json()?;
                let max = doc
                    .pointer("/version/version")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let chosen = choose_microversion(&max)?;
                info!(nova_max = max, chosen, "nova: microversion agreed");
                Ok::<String, ProvisionError>(chosen)
            })
            .await
            .map(String::as_str)
    }

    async fn headers(&self) -> Result<Vec<(&'static str, String)>> {
        let mv = self.microversion().await?;
        Ok(vec![
            ("X-OpenStack-Nova-API-Version", mv.to_string()),
            ("OpenStack-API-Version", format!("compute {mv}")),
        ])
    }

    async fn get(&self, path: &str) -> Result<crate::http::Reply> {
        let h = self.headers().await?;
        self.svc.call(Method::GET, path, None, &h).await
    }

    /// Every page of a collection (`/servers/detail`, `/flavors/detail`), following Nova's marker links.
    async fn all<T: serde::de::DeserializeOwned + HasId>(
        &self,
        path: &str,
        key: &str,
    ) -> Result<Vec<T>> {
        let mut out: Vec<T> = Vec::new();
        loop {
            let mut p = format!("{path}?limit=1000");
            if let Some(last) = out.last() {
                p.push_str("&marker=");
                p.push_str(last.id());
            }
            let page: Value = self.get(&p).await?.expect_json()?;
            let items: Vec<T> = serde_json::from_value(page.get(key).cloned().unwrap_or_default())
                .map_err(|e| ProvisionError::Decode {
                    service: "compute",
                    what: format!("GET {path}"),
                    detail: e.to_string(),
                })?;
            let more = page
                .get(format!("{key}_links"))
                .and_then(Value::as_array)
                .is_some_and(|links| links.iter().any(|l| l["rel"] == "next"));
            let empty = items.is_empty();
            out.extend(items);
            if !more || empty {
                return Ok(out);
            }
        }
    }

    /// Every server of the project, with details (metadata included). Nova cannot filter by metadata, so
    /// callers filter on [`LEASE_TAG`].
    pub async fn servers(&self) -> Result<Vec<NovaServer>> {
        self.all("/servers/detail", "servers").await
    }

    pub async fn server(&self, id: &str) -> Result<Option<NovaServer>> {
        let reply = self.get(&format!("/servers/{id}")).await?;
        if reply.status == 404 {
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct One {
            server: NovaServer,
        }
        Ok(Some(reply.expect_json::<One>()?.server))
    }

    /// Sends one server create, without retrying: whether a retry is safe is for the caller to find out.
    pub async fn create_server(&self, body: &Value) -> Result<Created> {
        let h = self.headers().await?;
        match self
            .svc
            .once(Method::POST, "/servers", Some(body), &h)
            .await
        {
            Err(Failure::Retryable { why, in_flight }) => Ok(Created::Unknown { why, in_flight }),
            Err(Failure::Fatal(e)) => Err(e),
            Ok(reply) if reply.ok() => {
                let v: Value = reply.json()?;
                match v.pointer("/server/id").and_then(Value::as_str) {
                    Some(id) => Ok(Created::Id(id.to_string())),
                    None => Ok(Created::Unknown {
                        why: "server create answer without an id".into(),
                        in_flight: false,
                    }),
                }
            }
            Ok(reply) => Ok(Created::Refused(reply.unexpected())),
        }
    }

    /// Asks for deletion; `Ok` also when the server is already gone.
    pub async fn delete_server(&self, id: &str) -> Result<()> {
        let h = self.headers().await?;
        let reply = self
            .svc
            .call(Method::DELETE, &format!("/servers/{id}"), None, &h)
            .await?;
        match reply.status {
            202 | 204 | 404 => Ok(()),
            _ => Err(reply.unexpected()),
        }
    }

    /// A server action such as `os-stop`. Retried on failure: a repeated action answers 409, which the
    /// caller reads as "check the state".
    pub async fn action(&self, id: &str, action: &str) -> Result<Action> {
        let h = self.headers().await?;
        let body = json!({ action: null });
        let reply = self
            .svc
            .call(
                Method::POST,
                &format!("/servers/{id}/action"),
                Some(&body),
                &h,
            )
            .await?;
        match reply.status {
            200..=299 => Ok(Action::Accepted),
            409 => Ok(Action::Conflict(reply.message())),
            404 => Ok(Action::NotFound),
            _ => Err(reply.unexpected()),
        }
    }

    pub async fn flavors(&self) -> Result<Vec<Flavor>> {
        self.all("/flavors/detail", "flavors").await
    }

    pub async fn limits(&self) -> Result<Limits> {
        let v: Value = self.get("/limits").await?.expect_json()?;
        serde_json::from_value(
            v.pointer("/limits/absolute")
                .cloned()
                .unwrap_or_else(|| json!({})),
        )
        .map_err(|e| ProvisionError::Decode {
            service: "compute",
            what: "GET /limits".into(),
            detail: e.to_string(),
        })
    }

    /// Creates a key pair; `Ok(false)` if one of that name exists already (compare with [`Nova::keypair`]).
    pub async fn create_keypair(&self, name: &str, public_key: &str) -> Result<bool> {
        let h = self.headers().await?;
        let body = json!({"keypair": {"name": name, "public_key": public_key}});
        let reply = self
            .svc
            .call(Method::POST, "/os-keypairs", Some(&body), &h)
            .await?;
        match reply.status {
            200 | 201 => Ok(true),
            409 => Ok(false),
            _ => Err(reply.unexpected()),
        }
    }

    /// The public key of a key pair, if it exists.
    pub async fn keypair(&self, name: &str) -> Result<Option<String>> {
        let reply = self.get(&format!("/os-keypairs/{name}")).await?;
        if reply.status == 404 {
            return Ok(None);
        }
        let v: Value = reply.expect_json()?;
        Ok(v.pointer("/keypair/public_key")
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    pub async fn delete_keypair(&self, name: &str) -> Result<()> {
        let h = self.headers().await?;
        let reply = self
            .svc
            .call(Method::DELETE, &format!("/os-keypairs/{name}"), None, &h)
            .await?;
        match reply.status {
            202 | 204 | 404 => Ok(()),
            _ => Err(reply.unexpected()),
        }
    }
}

/// Collections paged by marker need each item's id.
pub(crate) trait HasId {
    fn id(&self) -> &str;
}

impl HasId for NovaServer {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for Flavor {
    fn id(&self) -> &str {
        &self.id
    }
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The microversion to use given Nova's maximum: ours, or Nova's if lower but still enough.
pub(crate) fn choose_microversion(max: &str) -> Result<String> {
    let fmt = |(a, b): (u32, u32)| format!("{a}.{b}");
    match parse_version(max) {
        Some(m) if m >= MIN_MICROVERSION => Ok(fmt(m.min(WANTED_MICROVERSION))),
        _ => Err(ProvisionError::Microversion {
            max: if max.is_empty() {
                "none".into()
            } else {
                max.into()
            },
            needed: fmt(MIN_MICROVERSION),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microversions() {
        assert_eq!(choose_microversion("2.93").unwrap(), "2.90");
        assert_eq!(choose_microversion("2.60").unwrap(), "2.60");
        assert_eq!(choose_microversion("2.47").unwrap(), "2.47");
        assert!(choose_microversion("2.38").is_err());
        assert!(choose_microversion("").is_err());
        // numeric, not lexical: 2.100 > 2.90
        assert_eq!(choose_microversion("2.100").unwrap(), "2.90");
    }

    #[test]
    fn server_to_machine() {
        let s: NovaServer = serde_json::from_value(json!({
            "id": "u1", "name": "xov-abc", "status": "ACTIVE",
            "metadata": {"xov-lease": "abc"},
            "addresses": {"net": [{"addr": "10.0.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"}]},
            "key_name": "xov-abc",
            "flavor": {"original_name": "m1.tiny", "vcpus": 1},
            "image": {"id": "img"},
            "created": "2026-01-01T00:00:00Z",
            "OS-EXT-STS:task_state": null
        }))
        .unwrap();
        let m = s.to_machine();
        assert_eq!(m.lease_id, "abc");
        assert_eq!(m.state, MachineState::Running);
        assert_eq!(m.addresses[0].ip, "10.0.0.5");
        assert_eq!(m.flavor.as_deref(), Some("m1.tiny"));
        assert_eq!(m.image_id.as_deref(), Some("img"));
        let gone: NovaServer = serde_json::from_value(json!({
            "id": "u2", "status": "ACTIVE", "OS-EXT-STS:task_state": "deleting", "image": ""
        }))
        .unwrap();
        assert!(gone.is_gone());
        assert_eq!(gone.to_machine().image_id, None);
        assert_eq!(gone.lease(), None);
    }

    #[test]
    fn which_servers_are_ours() {
        struct Case {
            name: &'static str,
            metadata: Value,
            owner: Option<&'static str>,
            ours: bool,
        }
        let cases = [
            Case {
                name: "our lease tag and our provider",
                metadata: json!({"xov-lease": "l1", "xov-provider": "node-a"}),
                owner: Some("node-a"),
                ours: true,
            },
            Case {
                name: "another provider sharing the project",
                metadata: json!({"xov-lease": "l1", "xov-provider": "node-b"}),
                owner: Some("node-a"),
                ours: false,
            },
            Case {
                name: "made before provider markers: still ours",
                metadata: json!({"xov-lease": "l1"}),
                owner: Some("node-a"),
                ours: true,
            },
            Case {
                name: "no owner configured: only unmarked servers",
                metadata: json!({"xov-lease": "l1", "xov-provider": "node-a"}),
                owner: None,
                ours: false,
            },
            Case {
                name: "no owner configured, unmarked",
                metadata: json!({"xov-lease": "l1"}),
                owner: None,
                ours: true,
            },
            Case {
                name: "our provider marker without a lease tag is no lease's machine",
                metadata: json!({"xov-provider": "node-a"}),
                owner: Some("node-a"),
                ours: false,
            },
            Case {
                name: "untagged",
                metadata: json!({"purpose": "someone else's"}),
                owner: Some("node-a"),
                ours: false,
            },
        ];
        for c in cases {
            let s: NovaServer =
                serde_json::from_value(json!({"id": "s", "metadata": c.metadata})).unwrap();
            assert_eq!(s.is_ours(c.owner), c.ours, "{}", c.name);
        }
    }
}
