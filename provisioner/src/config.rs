//! How a provider points its node at its own OpenStack: endpoint, credentials, where machines are attached,
//! timeouts. Deserialisable from the node's TOML config; secrets never show in `Debug` output or logs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{ProvisionError, Result};

/// A password or application-credential secret. `Debug` prints `***` so configs can be logged safely.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The clear text, for the one place that sends it (the Keystone request body).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Keystone v3 credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Auth {
    /// A user's password, scoped to a project. Works, but the node then holds a full user password.
    Password {
        username: String,
        password: Secret,
        /// The project by name (in `project_domain`), or by id (`project_id`, which then wins).
        #[serde(default)]
        project_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project_id: Option<String>,
        #[serde(default = "default_domain")]
        user_domain: String,
        /// The user's domain by id; wins over `user_domain` (a name) when set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_domain_id: Option<String>,
        #[serde(default = "default_domain")]
        project_domain: String,
        /// The project's domain by id; wins over `project_domain` (a name) when set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project_domain_id: Option<String>,
    },
    /// An application credential (recommended): bound to one project, revocable on its own, and it can be
    /// restricted (`--restricted`, access rules) without touching the user's password.
    ApplicationCredential { id: String, secret: Secret },
    /// An application credential named instead of by id: Keystone then needs its owner, a user name in a
    /// domain (by name, or by id when `user_domain_id` is set).
    ApplicationCredentialByName {
        name: String,
        secret: Secret,
        username: String,
        #[serde(default = "default_domain")]
        user_domain: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_domain_id: Option<String>,
    },
}

fn default_domain() -> String {
    "Default".into()
}

/// Which catalog endpoint to use for each service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    #[default]
    Public,
    Internal,
    Admin,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }
}

/// Where new machines are attached. Written as a string in the config: `"none"`, `"auto"` or a network UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Networks {
    /// No network at all (`"networks": "none"`, compute API 2.37+); useful for labs and tests only.
    None,
    /// Let Nova pick or auto-allocate the project's network (`"networks": "auto"`).
    Auto,
    /// Attach one port on this Neutron network (its UUID).
    Named(String),
}

impl Serialize for Networks {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Networks::None => s.serialize_str("none"),
            Networks::Auto => s.serialize_str("auto"),
            Networks::Named(id) => s.serialize_str(id),
        }
    }
}

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "none" => Networks::None,
            "auto" => Networks::Auto,
            _ => Networks::Named(s),
        })
    }
}

/// How the buyer's SSH key reaches the machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyDelivery {
    /// A Nova key pair named `xov-<lease id>` (injected by cloud-init from the metadata service or config
    /// drive). Counts against the user's key-pair quota (100 by default); deleted with the lease.
    #[default]
    Keypair,
    /// A `#cloud-config` user-data document with `ssh_authorized_keys`: no key pair, no key-pair quota.
    UserData,
}

/// How often and how patiently to retry a failing request (connection errors, timeouts, 5xx, 429).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Tries per request, the first included.
    pub attempts: u32,
    /// Pause after the first failure; doubled after each further one (with jitter), up to `max_delay`.
    #[serde(with = "secs")]
    pub initial_delay: Duration,
    #[serde(with = "secs")]
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// The `[provider.openstack]` part of a provider's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenStackConfig {
    /// Keystone v3, e.g. `http://keystone.example:5000/v3` (`/v3` is added when missing).
    pub auth_url: String,
    pub auth: Auth,
    /// Region to pick catalog endpoints from; any region when unset.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub interface: Interface,
    /// A PEM file of CA certificates trusted for https endpoints, besides the system's roots (a cloud whose
    /// certificates a private CA signs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacert: Option<PathBuf>,
    /// Accept any server certificate (clouds.yaml's `verify: false`). For labs only: anyone on the path can
    /// then read the credentials. A warning is logged whenever a client is built with it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,
    /// Use this compute endpoint instead of the catalog's (a proxy, a private address; the tests put a
    /// fault-injecting proxy here).
    #[serde(default)]
    pub compute_endpoint_override: Option<String>,
    /// Use this image (Glance) endpoint instead of the catalog's.
    #[serde(default)]
    pub image_endpoint_override: Option<String>,
    /// Use this network (Neutron) endpoint instead of the catalog's (without `/v2.0`, as the catalog
    /// lists it).
    #[serde(default)]
    pub network_endpoint_override: Option<String>,
    /// Network for new machines: `"none"`, `"auto"` or a network UUID.
    pub network: Networks,
    #[serde(default)]
    pub key_delivery: KeyDelivery,
    /// How long a launch waits for BUILD to end (and stop/start/delete for their state), in seconds.
    #[serde(default = "default_boot_timeout", with = "secs")]
    pub boot_timeout: Duration,
    /// Limit for one HTTP request, in seconds.
    #[serde(default = "default_request_timeout", with = "secs")]
    pub request_timeout: Duration,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How buyers reach the machine: ports opened, floating IPs.
    #[serde(default)]
    pub access: crate::access::AccessConfig,
    /// Who this provider is in the project: every server and network resource made for a lease carries
    /// `xov-provider=<owner>`, and only those (and unmarked ones from before markers) are listed, reconciled
    /// and reclaimed as ours. Providers sharing one project each need their own. `None`: nothing new is
    /// marked and only unmarked machines are ours (see [`OpenStackConfig::with_default_owner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn default_boot_timeout() -> Duration {
    Duration::from_secs(300)
}

pub(crate) fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

impl OpenStackConfig {
    /// Checks what can be checked without the cloud, so a bad config fails at start, not at the first lease.
    pub fn validate(&self) -> Result<()> {
        self.access.validate()?;
        if let Some(owner) = &self.owner {
            crate::provisioner::validate_owner(owner)?;
        }
        check_url("auth_url", &self.auth_url)?;
        if let Some(u) = &self.compute_endpoint_override {
            check_url("compute_endpoint_override", u)?;
        }
        if let Some(u) = &self.image_endpoint_override {
            check_url("image_endpoint_override", u)?;
        }
        if let Some(u) = &self.network_endpoint_override {
            check_url("network_endpoint_override", u)?;
        }
        if self.boot_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(ProvisionError::Config(
                "boot_timeout and request_timeout must be positive".into(),
            ));
        }
        if self.retry.attempts == 0 {
            return Err(ProvisionError::Config(
                "retry.attempts must be at least 1".into(),
            ));
        }
        if let Networks::Named(id) = &self.network {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Err(ProvisionError::Config(format!(
                    "network must be \"none\", \"auto\" or a network UUID, got '{id}'"
                )));
            }
        }
        let empty = |what: &str| Err(ProvisionError::Config(format!("{what} is empty")));
        match &self.auth {
            Auth::Password { username, .. } if username.is_empty() => empty("auth.username"),
            Auth::Password {
                project_name,
                project_id,
                ..
            } if project_name.is_empty() && project_id.as_deref().unwrap_or("").is_empty() => {
                Err(ProvisionError::Config(
                    "password auth needs a project: project_name or project_id".into(),
                ))
            }
            Auth::ApplicationCredential { id, .. } if id.is_empty() => {
                empty("application credential id")
            }
            Auth::ApplicationCredentialByName { name, .. } if name.is_empty() => {
                empty("application credential name")
            }
            Auth::ApplicationCredentialByName { username, .. } if username.is_empty() => {
                empty("the application credential's username")
            }
            _ => Ok(()),
        }
    }

    /// The same configuration with `owner` (the node's id, say) when it sets none itself: an operator's
    /// explicit `owner` wins. Checked by [`OpenStackConfig::validate`] (and so by the provisioner's `new`).
    pub fn with_default_owner(mut self, owner: impl Into<String>) -> OpenStackConfig {
        if self.owner.is_none() {
            self.owner = Some(owner.into());
        }
        self
    }

    /// The Keystone v3 base URL without a trailing slash.
    pub(crate) fn keystone_v3(&self) -> String {
        let base = self.auth_url.trim_end_matches('/');
        if base.ends_with("/v3") {
            base.to_string()
        } else {
            format!("{base}/v3")
        }
    }
}

/// Rejects URLs that are not http or https, at start rather than at the first request.
pub(crate) fn check_url(field: &str, url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(ProvisionError::Config(format!(
            "{field} must be an http:// or https:// URL, got '{url}'"
        ))),
    }
}

/// Durations as (possibly fractional) seconds in the config file.
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() == 0 {
            s.serialize_u64(d.as_secs())
        } else {
            s.serialize_f64(d.as_secs_f64())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(|_| {
            serde::de::Error::custom(format!("expected a positive number of seconds, got {v}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_not_printed() {
        let auth = Auth::ApplicationCredential {
            id: "abc".into(),
            secret: Secret::new("hunter2"),
        };
        let dbg = format!("{auth:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("***"));
    }

    #[test]
    fn parses_a_toml_config_with_defaults() {
        let cfg: OpenStackConfig = toml::from_str(
            r#"
            auth_url = "http://127.0.0.1:5000"
            network = "none"
            request_timeout = 2.5
            [auth]
            type = "password"
            username = "admin"
            password = "admin"
            project_name = "admin"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.keystone_v3(), "http://127.0.0.1:5000/v3");
        assert_eq!(cfg.network, Networks::None);
        assert_eq!(cfg.boot_timeout, Duration::from_secs(300));
        assert_eq!(cfg.request_timeout, Duration::from_millis(2500));
        assert_eq!(cfg.interface, Interface::Public);
        assert_eq!(cfg.key_delivery, KeyDelivery::Keypair);
        match &cfg.auth {
            Auth::Password { user_domain, .. } => assert_eq!(user_domain, "Default"),
            other => panic!("{other:?}"),
        }
        cfg.validate().unwrap();
        // and back: what the node stores reads again the same
        let again: OpenStackConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn networks_from_strings() {
        let n: Networks = serde_json::from_str("\"auto\"").unwrap();
        assert_eq!(n, Networks::Auto);
        let id = "4f0e7a36-8c1b-4b43-9d0e-3c1f7f0b6a11";
        let n: Networks = serde_json::from_str(&format!("\"{id}\"")).unwrap();
        assert_eq!(n, Networks::Named(id.into()));
    }

    #[test]
    fn accepts_https_and_rejects_bad_values() {
        let mut cfg: OpenStackConfig = serde_json::from_value(serde_json::json!({
            "auth_url": "https://keystone.example/v3",
            "network": "none",
            "auth": {"type": "application_credential", "id": "x", "secret": "y"}
        }))
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.cacert, None);
        assert!(!cfg.insecure);
        cfg.auth_url = "ftp://keystone.example/v3".into();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("http:// or https://"), "{err}");
        cfg.auth_url = "https://".into();
        assert!(cfg.validate().is_err());
        cfg.auth_url = "http://keystone.example/v3".into();
        cfg.validate().unwrap();
        cfg.network = Networks::Named("not a uuid".into());
        assert!(cfg.validate().is_err());
        cfg.network = Networks::Auto;
        cfg.retry.attempts = 0;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn an_owner_is_checked_and_a_default_does_not_override_it() {
        let base: OpenStackConfig = serde_json::from_value(serde_json::json!({
            "auth_url": "http://k:5000", "network": "none",
            "auth": {"type": "application_credential", "id": "x", "secret": "y"}
        }))
        .unwrap();
        assert_eq!(base.owner, None);
        let defaulted = base.clone().with_default_owner("node-a");
        assert_eq!(defaulted.owner.as_deref(), Some("node-a"));
        defaulted.validate().unwrap();
        let explicit = OpenStackConfig {
            owner: Some("operator-chose".into()),
            ..base.clone()
        }
        .with_default_owner("node-a");
        assert_eq!(explicit.owner.as_deref(), Some("operator-chose"));
        let bad = base.with_default_owner("has space");
        assert!(
            matches!(bad.validate(), Err(ProvisionError::InvalidOwner { .. })),
            "{:?}",
            bad.validate()
        );
        assert!(bad.validate().unwrap_err().is_config_error());
    }

    #[test]
    fn password_auth_needs_a_project_by_name_or_id() {
        let cfg = |auth: serde_json::Value| -> OpenStackConfig {
            serde_json::from_value(serde_json::json!({
                "auth_url": "http://k:5000", "network": "none", "auth": auth
            }))
            .unwrap()
        };
        let no_project =
            cfg(serde_json::json!({"type": "password", "username": "u", "password": "p"}));
        assert!(no_project.validate().is_err());
        let by_id = cfg(
            serde_json::json!({"type": "password", "username": "u", "password": "p",
            "project_id": "0123abcd"}),
        );
        by_id.validate().unwrap();
        let by_name = cfg(
            serde_json::json!({"type": "application_credential_by_name", "name": "n",
            "secret": "s", "username": "u"}),
        );
        by_name.validate().unwrap();
        assert!(!format!("{by_name:?}").contains("\"s\""));
    }
}
