//! Where a provider's OpenStack connection comes from: `[provider.openstack]` as written
//! ([`OpenStackSettings`]), resolved against clouds.yaml (and secure.yaml) or the `OS_*` variables into the
//! [`OpenStackConfig`] the provisioner runs with.
//!
//! Invariants:
//! - [`OpenStackSettings::resolve`] is pure: it gets the environment as a map and the files' contents as
//!   [`CloudFiles`], and reads nothing itself. Only [`OpenStackSettings::resolve_with`] (and its shorthand
//!   [`OpenStackSettings::resolve_from_environment`]) reads variables and files.
//! - The credentials come from exactly one source, the first of: `cloud = "NAME"` (clouds.yaml); inline
//!   `auth_url` with `[provider.openstack.auth]` (accepted as before, the environment is then ignored);
//!   `OS_CLOUD` (clouds.yaml); `OS_AUTH_URL` with the other `OS_*` variables. Sources are never mixed, except
//!   that a secure.yaml entry is merged into its clouds.yaml entry and inline `region`, `interface`, `cacert`
//!   and `insecure` override what the source says.
//! - Everything else (network, key delivery, timeouts, endpoint overrides, retries, owner) comes from
//!   `[provider.openstack]` alone.
//! - No secret (password, application-credential secret, the files' text, the variables' values) appears in
//!   `Debug` output or in an error: errors name settings, files and variables, never values.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use crate::config::{
    default_boot_timeout, default_request_timeout, secs, Auth, Interface, KeyDelivery, Networks,
    OpenStackConfig, RetryPolicy, Secret,
};
use crate::error::{ProvisionError, Result};

/// The variables [`OpenStackSettings::resolve`] may look at: collect these into its environment map.
pub const ENV_VARS: &[&str] = &[
    "OS_CLOUD",
    "OS_CLIENT_CONFIG_FILE",
    "OS_CLIENT_SECURE_FILE",
    "OS_AUTH_URL",
    "OS_AUTH_TYPE",
    "OS_USERNAME",
    "OS_PASSWORD",
    "OS_PROJECT_NAME",
    "OS_PROJECT_ID",
    "OS_USER_DOMAIN_NAME",
    "OS_USER_DOMAIN_ID",
    "OS_PROJECT_DOMAIN_NAME",
    "OS_PROJECT_DOMAIN_ID",
    "OS_REGION_NAME",
    "OS_INTERFACE",
    "OS_APPLICATION_CREDENTIAL_ID",
    "OS_APPLICATION_CREDENTIAL_NAME",
    "OS_APPLICATION_CREDENTIAL_SECRET",
    "OS_CACERT",
    "XDG_CONFIG_HOME",
    "HOME",
];

/// The process environment's [`ENV_VARS`], through `get` (e.g. `|k| std::env::var(k).ok()`).
pub fn env_from(get: impl Fn(&str) -> Option<String>) -> HashMap<String, String> {
    ENV_VARS
        .iter()
        .filter_map(|k| get(k).map(|v| (k.to_string(), v)))
        .collect()
}

/// The `[provider.openstack]` part of a provider's configuration, as written: a cloud's name, or the
/// connection inline (as before), or nothing (then `OS_CLOUD` or the `OS_*` variables), plus the settings
/// that are always written here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenStackSettings {
    /// A cloud of clouds.yaml; it provides auth_url, credentials, region, interface and CA file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<String>,
    /// Keystone v3, inline (with `auth`), as before clouds.yaml support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Overrides the source's region, interface, CA file and certificate checking when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<Interface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(default)]
    pub compute_endpoint_override: Option<String>,
    #[serde(default)]
    pub image_endpoint_override: Option<String>,
    #[serde(default)]
    pub network_endpoint_override: Option<String>,
    pub network: Networks,
    #[serde(default)]
    pub key_delivery: KeyDelivery,
    #[serde(default = "default_boot_timeout", with = "secs")]
    pub boot_timeout: Duration,
    #[serde(default = "default_request_timeout", with = "secs")]
    pub request_timeout: Duration,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How buyers reach the machine: ports opened, floating IPs (`[provider.openstack.access]`).
    #[serde(default)]
    pub access: crate::access::AccessConfig,
    /// The provider's marker on what it makes (`xov-provider=<owner>`); see [`OpenStackConfig::owner`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A file found on the search path: its path and its text (or why it could not be read).
pub struct FoundFile {
    pub path: PathBuf,
    text: std::result::Result<String, String>,
}

impl FoundFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> FoundFile {
        FoundFile {
            path: path.into(),
            text: Ok(text.into()),
        }
    }

    /// A file that exists but could not be read.
    pub fn unreadable(path: impl Into<PathBuf>, why: impl Into<String>) -> FoundFile {
        FoundFile {
            path: path.into(),
            text: Err(why.into()),
        }
    }

    fn text(&self) -> Result<&str> {
        self.text
            .as_deref()
            .map_err(|why| ProvisionError::CloudsFile {
                path: self.path.clone(),
                detail: why.to_string(),
            })
    }
}

/// The text may hold passwords: never printed.
impl fmt::Debug for FoundFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FoundFile")
            .field("path", &self.path)
            .field("readable", &self.text.is_ok())
            .finish()
    }
}

/// What the search path held: the first clouds.yaml and the first secure.yaml that exist, and every
/// clouds.yaml path looked at (for the error that says where).
#[derive(Debug, Default)]
pub struct CloudFiles {
    pub searched: Vec<PathBuf>,
    pub clouds: Option<FoundFile>,
    pub secure: Option<FoundFile>,
}

/// Where clouds.yaml and secure.yaml are looked for, in order: `$OS_CLIENT_CONFIG_FILE` (resp.
/// `$OS_CLIENT_SECURE_FILE`) alone when set; otherwise `cwd`, `$XDG_CONFIG_HOME/openstack` (or
/// `~/.config/openstack`), `/etc/openstack`, each with `.yaml` then `.yml`.
pub fn search_paths(env: &HashMap<String, String>, cwd: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let var = |k: &str| env.get(k).filter(|v| !v.is_empty());
    let mut dirs = vec![cwd.to_path_buf()];
    if let Some(x) = var("XDG_CONFIG_HOME") {
        dirs.push(Path::new(x).join("openstack"));
    } else if let Some(h) = var("HOME") {
        dirs.push(Path::new(h).join(".config").join("openstack"));
    }
    dirs.push(PathBuf::from("/etc/openstack"));
    let within = |override_var: &str, stem: &str| -> Vec<PathBuf> {
        match var(override_var) {
            Some(f) => vec![PathBuf::from(f)],
            None => dirs
                .iter()
                .flat_map(|d| {
                    [
                        d.join(format!("{stem}.yaml")),
                        d.join(format!("{stem}.yml")),
                    ]
                })
                .collect(),
        }
    };
    (
        within("OS_CLIENT_CONFIG_FILE", "clouds"),
        within("OS_CLIENT_SECURE_FILE", "secure"),
    )
}

impl CloudFiles {
    /// Reads the first existing clouds.yaml and secure.yaml of [`search_paths`] (the I/O half).
    pub fn discover(env: &HashMap<String, String>, cwd: &Path) -> CloudFiles {
        let (clouds, secure) = search_paths(env, cwd);
        let first = |paths: &[PathBuf]| {
            paths.iter().find_map(|p| match std::fs::read_to_string(p) {
                Ok(text) => Some(FoundFile::new(p, text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some(FoundFile::unreadable(p, e.to_string())),
            })
        };
        CloudFiles {
            clouds: first(&clouds),
            secure: first(&secure),
            searched: clouds,
        }
    }
}

/// The connection part that a source provides.
struct Connection {
    auth_url: String,
    auth: Auth,
    region: Option<String>,
    interface: Option<Interface>,
    cacert: Option<PathBuf>,
    insecure: bool,
}

impl OpenStackSettings {
    /// Resolves from the real environment, the current directory and the files on the search path.
    pub fn resolve_from_environment(&self) -> Result<OpenStackConfig> {
        self.resolve_with(|k| std::env::var(k).ok())
    }

    /// Resolves with variables from `get`, reading the clouds.yaml and secure.yaml files they point at.
    pub fn resolve_with(&self, get: impl Fn(&str) -> Option<String>) -> Result<OpenStackConfig> {
        let env = env_from(get);
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let files = CloudFiles::discover(&env, &cwd);
        self.resolve(&env, &files)
    }

    /// The configuration the provisioner runs with (validated), from these settings, the environment and the
    /// files found. Reads nothing.
    pub fn resolve(
        &self,
        env: &HashMap<String, String>,
        files: &CloudFiles,
    ) -> Result<OpenStackConfig> {
        let var = |k: &str| env.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let conn = if let Some(cloud) = &self.cloud {
            let conflict = |setting| ProvisionError::ConflictingSettings {
                cloud: cloud.clone(),
                setting,
            };
            if self.auth_url.is_some() {
                return Err(conflict("auth_url"));
            }
            if self.auth.is_some() {
                return Err(conflict("[provider.openstack.auth]"));
            }
            from_clouds_yaml(cloud, "[provider.openstack] cloud", files)?
        } else if self.auth_url.is_some() || self.auth.is_some() {
            let origin = "[provider.openstack] (inline settings)";
            let missing = |setting: &str| ProvisionError::MissingSetting {
                setting: setting.into(),
                origin: origin.into(),
            };
            Connection {
                auth_url: self.auth_url.clone().ok_or_else(|| missing("auth_url"))?,
                auth: self
                    .auth
                    .clone()
                    .ok_or_else(|| missing("[provider.openstack.auth]"))?,
                region: None,
                interface: None,
                cacert: None,
                insecure: false,
            }
        } else if let Some(cloud) = var("OS_CLOUD") {
            from_clouds_yaml(cloud, "OS_CLOUD", files)?
        } else if var("OS_AUTH_URL").is_some() {
            from_fields(&EnvFields(env), &Naming::Env, "the OS_* variables")?
        } else {
            return Err(ProvisionError::NoCredentials {
                searched: files.searched.clone(),
            });
        };
        let cfg = OpenStackConfig {
            auth_url: conn.auth_url,
            auth: conn.auth,
            region: self.region.clone().or(conn.region),
            interface: self.interface.or(conn.interface).unwrap_or_default(),
            cacert: self.cacert.clone().or(conn.cacert),
            insecure: self.insecure.unwrap_or(conn.insecure),
            compute_endpoint_override: self.compute_endpoint_override.clone(),
            image_endpoint_override: self.image_endpoint_override.clone(),
            network_endpoint_override: self.network_endpoint_override.clone(),
            network: self.network.clone(),
            key_delivery: self.key_delivery,
            boot_timeout: self.boot_timeout,
            request_timeout: self.request_timeout,
            retry: self.retry.clone(),
            access: self.access.clone(),
            owner: self.owner.clone(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The settings a source may hold, named as in clouds.yaml and as `OS_*` variables.
#[derive(Clone, Copy)]
enum Key {
    AuthUrl,
    AuthType,
    Username,
    Password,
    ProjectName,
    ProjectId,
    UserDomainName,
    UserDomainId,
    ProjectDomainName,
    ProjectDomainId,
    AppCredId,
    AppCredName,
    AppCredSecret,
    Region,
    Interface,
    CaCert,
}

impl Key {
    fn yaml(self) -> &'static str {
        match self {
            Key::AuthUrl => "auth.auth_url",
            Key::AuthType => "auth_type",
            Key::Username => "auth.username",
            Key::Password => "auth.password",
            Key::ProjectName => "auth.project_name",
            Key::ProjectId => "auth.project_id",
            Key::UserDomainName => "auth.user_domain_name",
            Key::UserDomainId => "auth.user_domain_id",
            Key::ProjectDomainName => "auth.project_domain_name",
            Key::ProjectDomainId => "auth.project_domain_id",
            Key::AppCredId => "auth.application_credential_id",
            Key::AppCredName => "auth.application_credential_name",
            Key::AppCredSecret => "auth.application_credential_secret",
            Key::Region => "region_name",
            Key::Interface => "interface",
            Key::CaCert => "cacert",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Key::AuthUrl => "OS_AUTH_URL",
            Key::AuthType => "OS_AUTH_TYPE",
            Key::Username => "OS_USERNAME",
            Key::Password => "OS_PASSWORD",
            Key::ProjectName => "OS_PROJECT_NAME",
            Key::ProjectId => "OS_PROJECT_ID",
            Key::UserDomainName => "OS_USER_DOMAIN_NAME",
            Key::UserDomainId => "OS_USER_DOMAIN_ID",
            Key::ProjectDomainName => "OS_PROJECT_DOMAIN_NAME",
            Key::ProjectDomainId => "OS_PROJECT_DOMAIN_ID",
            Key::AppCredId => "OS_APPLICATION_CREDENTIAL_ID",
            Key::AppCredName => "OS_APPLICATION_CREDENTIAL_NAME",
            Key::AppCredSecret => "OS_APPLICATION_CREDENTIAL_SECRET",
            Key::Region => "OS_REGION_NAME",
            Key::Interface => "OS_INTERFACE",
            Key::CaCert => "OS_CACERT",
        }
    }
}

enum Naming {
    Yaml,
    Env,
}

impl Naming {
    fn name(&self, k: Key) -> &'static str {
        match self {
            Naming::Yaml => k.yaml(),
            Naming::Env => k.env(),
        }
    }
}

/// A source's settings by [`Key`]: a clouds.yaml entry or the environment.
trait Fields {
    /// The value, if set and not empty; `Err` names the setting when it is set to something unusable.
    fn get(&self, k: Key) -> Result<Option<String>>;
    /// clouds.yaml's `verify` (the environment has none here).
    fn verify(&self) -> Result<Option<Verify>> {
        Ok(None)
    }
}

struct EnvFields<'a>(&'a HashMap<String, String>);

impl Fields for EnvFields<'_> {
    fn get(&self, k: Key) -> Result<Option<String>> {
        Ok(self.0.get(k.env()).filter(|v| !v.is_empty()).cloned())
    }
}

/// clouds.yaml's `verify`: a boolean, or (as keystoneauth also takes it) the CA file's path.
enum Verify {
    Check(bool),
    CaFile(String),
}

struct YamlFields<'a> {
    entry: &'a Mapping,
    origin: &'a str,
}

impl YamlFields<'_> {
    fn bad(&self, setting: &str, expected: &'static str) -> ProvisionError {
        ProvisionError::BadSetting {
            setting: setting.into(),
            origin: self.origin.into(),
            expected,
        }
    }
}

/// A scalar as text (YAML reads `password: 1234` as a number); `None` for null or absent.
fn scalar(v: Option<&Value>) -> std::result::Result<Option<String>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(()),
    }
}

impl Fields for YamlFields<'_> {
    fn get(&self, k: Key) -> Result<Option<String>> {
        let path = k.yaml();
        let v = match path.strip_prefix("auth.") {
            Some(field) => match self.entry.get("auth") {
                None | Some(Value::Null) => None,
                Some(Value::Mapping(auth)) => auth.get(field),
                Some(_) => return Err(self.bad("auth", "a mapping")),
            },
            None => self.entry.get(path),
        };
        scalar(v).map_err(|()| self.bad(path, "a string"))
    }

    fn verify(&self) -> Result<Option<Verify>> {
        match self.entry.get("verify") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(Verify::Check(*b))),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(Verify::CaFile(s.clone()))),
            Some(_) => Err(self.bad("verify", "true, false or a CA file's path")),
        }
    }
}

/// Credentials, region, interface and CA file from one source's settings.
fn from_fields(f: &dyn Fields, naming: &Naming, origin: &str) -> Result<Connection> {
    let missing = |k: Key| ProvisionError::MissingSetting {
        setting: naming.name(k).into(),
        origin: origin.into(),
    };
    let need = |k: Key| f.get(k)?.ok_or_else(|| missing(k));
    let domain = || "Default".to_string();
    let auth_url = need(Key::AuthUrl)?;
    let auth_type = f.get(Key::AuthType)?;
    let app_cred = match auth_type.as_deref() {
        // keystoneauth's default is password; an entry with only an application credential means that
        None => f.get(Key::AppCredSecret)?.is_some() && f.get(Key::Password)?.is_none(),
        Some("password" | "v3password") => false,
        Some("v3applicationcredential" | "applicationcredential" | "application_credential") => {
            true
        }
        Some(other) => {
            return Err(ProvisionError::UnsupportedAuthType {
                auth_type: other.into(),
                origin: origin.into(),
            })
        }
    };
    let auth = if app_cred {
        let secret = Secret::new(need(Key::AppCredSecret)?);
        match (f.get(Key::AppCredId)?, f.get(Key::AppCredName)?) {
            (Some(id), _) => Auth::ApplicationCredential { id, secret },
            (None, Some(name)) => Auth::ApplicationCredentialByName {
                name,
                secret,
                username: need(Key::Username)?,
                user_domain: f.get(Key::UserDomainName)?.unwrap_or_else(domain),
                user_domain_id: f.get(Key::UserDomainId)?,
            },
            (None, None) => return Err(missing(Key::AppCredId)),
        }
    } else {
        let project_id = f.get(Key::ProjectId)?;
        let project_name = match (f.get(Key::ProjectName)?, &project_id) {
            (Some(n), _) => n,
            (None, Some(_)) => String::new(),
            (None, None) => return Err(missing(Key::ProjectName)),
        };
        Auth::Password {
            username: need(Key::Username)?,
            password: Secret::new(need(Key::Password)?),
            project_name,
            project_id,
            user_domain: f.get(Key::UserDomainName)?.unwrap_or_else(domain),
            user_domain_id: f.get(Key::UserDomainId)?,
            project_domain: f.get(Key::ProjectDomainName)?.unwrap_or_else(domain),
            project_domain_id: f.get(Key::ProjectDomainId)?,
        }
    };
    let interface = match f.get(Key::Interface)? {
        None => None,
        Some(i) => Some(
            match i
                .strip_suffix("URL")
                .unwrap_or(&i)
                .to_ascii_lowercase()
                .as_str()
            {
                "public" => Interface::Public,
                "internal" => Interface::Internal,
                "admin" => Interface::Admin,
                _ => {
                    return Err(ProvisionError::BadSetting {
                        setting: naming.name(Key::Interface).into(),
                        origin: origin.into(),
                        expected: "public, internal or admin",
                    })
                }
            },
        ),
    };
    let mut cacert = f.get(Key::CaCert)?.map(PathBuf::from);
    let mut insecure = false;
    match f.verify()? {
        Some(Verify::Check(check)) => insecure = !check,
        Some(Verify::CaFile(path)) => cacert = cacert.or(Some(PathBuf::from(path))),
        None => {}
    }
    Ok(Connection {
        auth_url,
        auth,
        region: f.get(Key::Region)?,
        interface,
        cacert,
        insecure,
    })
}

/// Recursively merges `over` into `base`: mappings key by key, anything else replaced (secure.yaml wins).
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The `clouds:` mapping of a clouds.yaml or secure.yaml.
fn clouds_of(file: &FoundFile) -> Result<Value> {
    let bad = |detail: String| ProvisionError::CloudsFile {
        path: file.path.clone(),
        detail,
    };
    // serde_yaml_ng's messages quote no values for a syntax error, but say only where, to be sure
    let doc: Value = serde_yaml_ng::from_str(file.text()?).map_err(|e| {
        bad(match e.location() {
            Some(l) => format!("not valid YAML (line {}, column {})", l.line(), l.column()),
            None => "not valid YAML".into(),
        })
    })?;
    match doc.get("clouds") {
        Some(c @ Value::Mapping(_)) => Ok(c.clone()),
        None | Some(Value::Null) => Ok(Value::Mapping(Mapping::new())),
        Some(_) => Err(bad("`clouds:` is not a mapping of cloud names".into())),
    }
}

/// The cloud `name` from clouds.yaml, with its secure.yaml part merged in.
fn from_clouds_yaml(name: &str, named_by: &'static str, files: &CloudFiles) -> Result<Connection> {
    let not_found = |file: Option<PathBuf>, available: Vec<String>| ProvisionError::CloudNotFound {
        cloud: name.into(),
        named_by,
        file,
        available,
        searched: files.searched.clone(),
    };
    let Some(clouds_file) = &files.clouds else {
        return Err(not_found(None, Vec::new()));
    };
    let mut clouds = clouds_of(clouds_file)?;
    let mut origin = format!("cloud '{name}' in {}", clouds_file.path.display());
    if let Some(secure_file) = &files.secure {
        let secure = clouds_of(secure_file)?;
        if secure.get(name).is_some() {
            origin.push_str(&format!(" (with {})", secure_file.path.display()));
        }
        merge(&mut clouds, &secure);
    }
    let entry = match clouds.get(name) {
        Some(Value::Mapping(m)) => m,
        Some(_) => {
            return Err(ProvisionError::BadSetting {
                setting: format!("clouds.{name}"),
                origin: clouds_file.path.display().to_string(),
                expected: "a mapping",
            })
        }
        None => {
            let available = clouds
                .as_mapping()
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            return Err(not_found(Some(clouds_file.path.clone()), available));
        }
    };
    let fields = YamlFields {
        entry,
        origin: &origin,
    };
    let mut conn = from_fields(&fields, &Naming::Yaml, &origin)?;
    // `regions: [a, b]` (or `[{name: a}, ...]`) without region_name: the first, as the openstack CLI does
    if conn.region.is_none() {
        if let Some(Value::Sequence(regions)) = entry.get("regions") {
            conn.region = regions.first().and_then(|r| match r {
                Value::String(s) => Some(s.clone()),
                Value::Mapping(m) => m.get("name").and_then(Value::as_str).map(String::from),
                _ => None,
            });
        }
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUDS: &str = "/home/op/.config/openstack/clouds.yaml";
    const SECURE: &str = "/home/op/.config/openstack/secure.yaml";

    /// A clouds.yaml with a password cloud, an application-credential cloud and a cloud whose password
    /// lives in secure.yaml.
    const CLOUDS_YAML: &str = r#"
clouds:
  mycloud:
    auth:
      auth_url: https://keystone.example:5000/v3
      username: alice
      password: "s3cret-pw"
      project_name: shop
      user_domain_name: Users
      project_domain_name: Projects
    region_name: RegionTwo
    interface: internal
    cacert: /etc/ssl/private-ca.pem
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: http://127.0.0.1:5000
      application_credential_id: 0123abcd
      application_credential_secret: app-s3cret
  split:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: bob
      project_id: 42ab
    regions: [RegionOne, RegionTwo]
"#;

    const SECURE_YAML: &str = r#"
clouds:
  split:
    auth:
      password: 1234
    verify: false
"#;

    struct Case {
        name: &'static str,
        /// Lines of `[provider.openstack]` besides `network = "none"`.
        toml: &'static str,
        env: &'static [(&'static str, &'static str)],
        clouds: Option<&'static str>,
        secure: Option<&'static str>,
        check: fn(Result<OpenStackConfig>),
    }

    fn password(cfg: &OpenStackConfig) -> (&str, &str, &str, Option<&str>, &str, &str) {
        match &cfg.auth {
            Auth::Password {
                username,
                password,
                project_name,
                project_id,
                user_domain,
                project_domain,
                ..
            } => (
                username,
                password.expose(),
                project_name,
                project_id.as_deref(),
                user_domain,
                project_domain,
            ),
            other => panic!("not password auth: {other:?}"),
        }
    }

    fn err(r: Result<OpenStackConfig>) -> (ProvisionError, String) {
        let e = r.expect_err("an error");
        let msg = e.to_string();
        (e, msg)
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "cloud found: password, region, interface and cacert from clouds.yaml",
                toml: r#"cloud = "mycloud""#,
                env: &[("OS_AUTH_URL", "http://ignored:5000")],
                clouds: Some(CLOUDS_YAML),
                secure: None,
                check: |r| {
                    let cfg = r.unwrap();
                    assert_eq!(cfg.auth_url, "https://keystone.example:5000/v3");
                    assert_eq!(
                        password(&cfg),
                        ("alice", "s3cret-pw", "shop", None, "Users", "Projects")
                    );
                    assert_eq!(cfg.region.as_deref(), Some("RegionTwo"));
                    assert_eq!(cfg.interface, Interface::Internal);
                    assert_eq!(cfg.cacert, Some(PathBuf::from("/etc/ssl/private-ca.pem")));
                    assert!(!cfg.insecure);
                    assert_eq!(cfg.network, Networks::None);
                },
            },
            Case {
                name: "inline region, interface and cacert override the cloud's",
                toml: "cloud = \"mycloud\"\nregion = \"R9\"\ninterface = \"admin\"\ncacert = \"/x/ca.pem\"",
                env: &[],
                clouds: Some(CLOUDS_YAML),
                secure: None,
                check: |r| {
                    let cfg = r.unwrap();
                    assert_eq!(cfg.region.as_deref(), Some("R9"));
                    assert_eq!(cfg.interface, Interface::Admin);
                    assert_eq!(cfg.cacert, Some(PathBuf::from("/x/ca.pem")));
                },
            },
            Case {
                name: "cloud missing and no clouds.yaml: lists every file searched",
                toml: r#"cloud = "mycloud""#,
                env: &[],
                clouds: None,
                secure: None,
                check: |r| {
                    let (e, msg) = err(r);
                    assert!(matches!(e, ProvisionError::CloudNotFound { file: None, .. }), "{e:?}");
                    assert!(msg.contains("cloud 'mycloud' (named by [provider.openstack] cloud)"), "{msg}");
                    for p in searched() {
                        assert!(msg.contains(&p.display().to_string()), "{msg} lacks {p:?}");
                    }
                    assert!(e.is_config_error());
                },
            },
            Case {
                name: "cloud missing from the clouds.yaml found: names the file and its clouds",
                toml: r#"cloud = "nosuch""#,
                env: &[],
                clouds: Some(CLOUDS_YAML),
                secure: None,
                check: |r| {
                    let (e, msg) = err(r);
                    assert!(matches!(e, ProvisionError::CloudNotFound { .. }), "{e:?}");
                    assert!(msg.contains(CLOUDS), "{msg}");
                    assert!(msg.contains("mycloud, appcred, split"), "{msg}");
                },
            },
            Case {
                name: "OS_CLOUD when cloud is unset and nothing inline",
                toml: "",
                env: &[("OS_CLOUD", "appcred"), ("OS_AUTH_URL", "http://ignored:5000")],
                clouds: Some(CLOUDS_YAML),
                secure: None,
                check: |r| {
                    let cfg = r.unwrap();
                    assert_eq!(cfg.auth_url, "http://127.0.0.1:5000");
                    assert_eq!(cfg.keystone_v3(), "http://127.0.0.1:5000/v3");
                    assert_eq!(
                        cfg.auth,
                        Auth::ApplicationCredential {
                            id: "0123abcd".into(),
                            secret: Secret::new("app-s3cret")
                        }
                    );
                    assert_eq!(cfg.region, None);
                    assert_eq!(cfg.interface, Interface::Public);
                },
            },
            Case {
                name: "OS_CLOUD naming an unknown cloud says it came from OS_CLOUD",
                toml: "",
                env: &[("OS_CLOUD", "gone")],
                clouds: Some(CLOUDS_YAML),
                secure: None,
                check: |r| {
                    let (_, msg) = err(r);
                    assert!(msg.contains("cloud 'gone' (named by OS_CLOUD)"), "{msg}");
                },
            },
            Case {
                name: "OS_* variables: password with ids and region",
                toml: "",
                env: &[
                    ("OS_AUTH_URL", "http://127.0.0.1:5000/v3"),
                    ("OS_USERNAME", "admin"),
                    ("OS_PASSWORD", "env-pw"),
                    ("OS_PROJECT_ID", "p-1"),
                    ("OS_USER_DOMAIN_ID", "default"),
                    ("OS_PROJECT_DOMAIN_NAME", "Default"),
                    ("OS_REGION_NAME", "RegionOne"),
                    ("OS_INTERFACE", "publicURL"),
                    ("OS_CACERT", "/etc/ca.pem"),
                ],
                clouds: Some(CLOUDS_YAML),
                secure: None,
                check: |r| {
                    let cfg = r.unwrap();
                    assert_eq!(cfg.auth_url, "http://127.0.0.1:5000/v3");
                    assert_eq!(password(&cfg), ("admin", "env-pw", "", Some("p-1"), "Default", "Default"));
                    let Auth::Password { user_domain_id, .. } = &cfg.auth else { unreachable!() };
                    assert_eq!(user_domain_id.as_deref(), Some("default"));
                    assert_eq!(cfg.region.as_deref(), Some("RegionOne"));
                    assert_eq!(cfg.interface, Interface::Public);
                    assert_eq!(cfg.cacert, Some(PathBuf::from("/etc/ca.pem")));
                },
            },
            Case {
                name: "OS_* variables: a missing password is named as OS_PASSWORD",
                toml: "",
                env: &[
                    ("OS_AUTH_URL", "http://127.0.0.1:5000/v3"),
                    ("OS_USERNAME", "admin"),
                    ("OS_PROJECT_NAME", "admin"),
                ],
                clouds: None,
                secure: None,
                check: |r| {
                    let (e, msg) = err(r);
                    assert!(matches!(e, ProvisionError::MissingSetting { .. }), "{e:?}");
                    assert_eq!(msg, "OS_PASSWORD is missing from the OS_* variables");
                },
            },
            Case {
                name: "OS_* variables: application credential by id (auth type given)",
                toml: "",
                env: &[
                    ("OS_AUTH_URL", "http://127.0.0.1:5000/v3"),
                    ("OS_AUTH_TYPE", "v3applicationcredential"),
                    ("OS_APPLICATION_CREDENTIAL_ID", "ac-1"),
                    ("OS_APPLICATION_CREDENTIAL_SECRET", "ac-secret"),
                ],
                clouds: None,
                secure: None,
                check: |r| {
                    assert_eq!(
                        r.unwrap().auth,
                        Auth::ApplicationCredential { id: "ac-1".into(), secret: Secret::new("ac-secret") }
                    );
                },
            },
            Case {
                name: "OS_* variables: application credential by name, auth type inferred from the secret",
                toml: "",
                env: &[
                    ("OS_AUTH_URL", "http://127.0.0.1:5000/v3"),
                    ("OS_APPLICATION_CREDENTIAL_NAME", "xov"),
                    ("OS_APPLICATION_CREDENTIAL_SECRET", "ac-secret"),
                    ("OS_USERNAME", "carol"),
                ],
                clouds: None,
                secure: None,
                check: |r| {
                    assert_eq!(
                        r.unwrap().auth,
                        Auth::ApplicationCredentialByName {
                            name: "xov".into(),
                            secret: Secret::new("ac-secret"),
                            username: "carol".into(),
                            user_domain: "Default".into(),
                            user_domain_id: None,
                        }
                    );
                },
            },
            Case {
                name: "application credential without id or name names the id",
                toml: "",
                env: &[
                    ("OS_AUTH_URL", "http://127.0.0.1:5000/v3"),
                    ("OS_AUTH_TYPE", "v3applicationcredential"),
                    ("OS_APPLICATION_CREDENTIAL_SECRET", "ac-secret"),
                ],
                clouds: None,
                secure: None,
                check: |r| {
                    let (_, msg) = err(r);
                    assert!(msg.starts_with("OS_APPLICATION_CREDENTIAL_ID is missing"), "{msg}");
                },
            },
            Case {
                name: "unsupported auth type is named with where it came from",
                toml: "",
                env: &[("OS_AUTH_URL", "http://k:5000"), ("OS_AUTH_TYPE", "v3oidcpassword")],
                clouds: None,
                secure: None,
                check: |r| {
                    let (e, msg) = err(r);
                    assert!(matches!(e, ProvisionError::UnsupportedAuthType { .. }), "{e:?}");
                    assert!(msg.contains("'v3oidcpassword' of the OS_* variables"), "{msg}");
                },
            },
            Case {
                name: "secure.yaml merged: password from it (a YAML number), verify: false, first region",
                toml: r#"cloud = "split""#,
                env: &[],
                clouds: Some(CLOUDS_YAML),
                secure: Some(SECURE_YAML),
                check: |r| {
                    let cfg = r.unwrap();
                    assert_eq!(password(&cfg), ("bob", "1234", "", Some("42ab"), "Default", "Default"));
                    assert!(cfg.insecure);
                    assert_eq!(cfg.region.as_deref(), Some("RegionOne"));
                },
            },
            Case {
                name: "without secure.yaml the password is missing: names the setting and the file",
                toml: r#"cloud = "split""#,
                env: &[],
                clouds: Some(CLOUDS_YAML),
                secure: None,
                check: |r| {
                    let (_, msg) = err(r);
                    assert_eq!(msg, format!("auth.password is missing from cloud 'split' in {CLOUDS}"));
                },
            },
            Case {
                name: "inline settings still work, and then the environment is ignored",
                toml: "auth_url = \"http://127.0.0.1:5000\"\nregion = \"RegionOne\"\n[auth]\ntype = \"password\"\nusername = \"admin\"\npassword = \"inline-pw\"\nproject_name = \"admin\"",
                env: &[("OS_CLOUD", "mycloud"), ("OS_AUTH_URL", "http://other:5000"), ("OS_CACERT", "/etc/ca.pem")],
                clouds: Some(CLOUDS_YAML),
                secure: None,
                check: |r| {
                    let cfg = r.unwrap();
                    assert_eq!(cfg.auth_url, "http://127.0.0.1:5000");
                    assert_eq!(password(&cfg), ("admin", "inline-pw", "admin", None, "Default", "Default"));
                    assert_eq!(cfg.region.as_deref(), Some("RegionOne"));
                    assert_eq!(cfg.cacert, None);
                },
            },
            Case {
                name: "inline auth without auth_url names auth_url",
                toml: "[auth]\ntype = \"application_credential\"\nid = \"x\"\nsecret = \"y\"",
                env: &[],
                clouds: None,
                secure: None,
                check: |r| {
                    let (_, msg) = err(r);
                    assert_eq!(msg, "auth_url is missing from [provider.openstack] (inline settings)");
                },
            },
            Case {
                name: "inline cacert path is kept",
                toml: "auth_url = \"https://k:5000\"\ncacert = \"/srv/ca.pem\"\n[auth]\ntype = \"application_credential\"\nid = \"x\"\nsecret = \"y\"",
                env: &[],
                clouds: None,
                secure: None,
                check: |r| {
                    let cfg = r.unwrap();
                    assert_eq!(cfg.cacert, Some(PathBuf::from("/srv/ca.pem")));
                    assert_eq!(cfg.auth_url, "https://k:5000");
                },
            },
            Case {
                name: "cloud and inline auth at once is refused",
                toml: "cloud = \"mycloud\"\nauth_url = \"http://k:5000\"",
                env: &[],
                clouds: Some(CLOUDS_YAML),
                secure: None,
                check: |r| {
                    let (e, _) = err(r);
                    assert!(matches!(e, ProvisionError::ConflictingSettings { setting: "auth_url", .. }), "{e:?}");
                },
            },
            Case {
                name: "nothing anywhere: says what to set and where clouds.yaml was looked for",
                toml: "",
                env: &[],
                clouds: None,
                secure: None,
                check: |r| {
                    let (e, msg) = err(r);
                    assert!(matches!(e, ProvisionError::NoCredentials { .. }), "{e:?}");
                    assert!(msg.contains("OS_CLOUD") && msg.contains("cloud = \"NAME\""), "{msg}");
                    assert!(msg.contains(CLOUDS) && msg.contains("/etc/openstack/clouds.yaml"), "{msg}");
                },
            },
            Case {
                name: "a clouds.yaml that is not YAML: the file and the line, not its text",
                toml: r#"cloud = "mycloud""#,
                env: &[],
                clouds: Some("clouds:\n  mycloud: {auth: [password: hunter2\n"),
                secure: None,
                check: |r| {
                    let (e, msg) = err(r);
                    assert!(matches!(e, ProvisionError::CloudsFile { .. }), "{e:?}");
                    assert!(msg.contains(CLOUDS) && msg.contains("line"), "{msg}");
                    assert!(!msg.contains("hunter2"), "{msg}");
                },
            },
            Case {
                name: "the owner comes from [provider.openstack], whatever the credentials' source",
                toml: "cloud = \"mycloud\"\nowner = \"node-a_1\"",
                env: &[],
                clouds: Some(CLOUDS_YAML),
                secure: None,
                check: |r| {
                    assert_eq!(r.unwrap().owner.as_deref(), Some("node-a_1"));
                },
            },
            Case {
                name: "an owner that cannot be a tag is refused at start",
                toml: "cloud = \"mycloud\"\nowner = \"node a\"",
                env: &[],
                clouds: Some(CLOUDS_YAML),
                secure: None,
                check: |r| {
                    let (e, msg) = err(r);
                    assert!(matches!(e, ProvisionError::InvalidOwner { .. }), "{e:?}");
                    assert!(msg.contains("'node a'") && msg.contains("[A-Za-z0-9_-]"), "{msg}");
                },
            },
            Case {
                name: "a bad interface is named without repeating anything secret",
                toml: r#"cloud = "x""#,
                env: &[],
                clouds: Some("clouds:\n  x:\n    interface: sideways\n    auth: {auth_url: 'http://k', username: u, password: p, project_name: q}\n"),
                secure: None,
                check: |r| {
                    let (e, msg) = err(r);
                    assert!(matches!(e, ProvisionError::BadSetting { .. }), "{e:?}");
                    assert!(msg.starts_with("interface of cloud 'x'"), "{msg}");
                },
            },
        ]
    }

    fn searched() -> Vec<PathBuf> {
        search_paths(&env(&[("HOME", "/home/op")]), Path::new("/srv/xov")).0
    }

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resolution() {
        for case in cases() {
            let settings: OpenStackSettings =
                toml::from_str(&format!("network = \"none\"\n{}", case.toml))
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let files = CloudFiles {
                searched: searched(),
                clouds: case.clouds.map(|t| FoundFile::new(CLOUDS, t)),
                secure: case.secure.map(|t| FoundFile::new(SECURE, t)),
            };
            let result = settings.resolve(&env(case.env), &files);
            // a failing check names its case
            let name = case.name;
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.check)(result)));
            if let Err(p) = outcome {
                panic!("case '{name}' failed: {:?}", p.downcast_ref::<String>());
            }
        }
    }

    #[test]
    fn search_path_order_and_overrides() {
        /// name, variables, clouds.yaml paths, secure.yaml paths
        type PathCase = (
            &'static str,
            &'static [(&'static str, &'static str)],
            &'static [&'static str],
            &'static [&'static str],
        );
        let cases: &[PathCase] = &[
            (
                "home",
                &[("HOME", "/home/op")],
                &[
                    "/srv/xov/clouds.yaml",
                    "/srv/xov/clouds.yml",
                    "/home/op/.config/openstack/clouds.yaml",
                    "/home/op/.config/openstack/clouds.yml",
                    "/etc/openstack/clouds.yaml",
                    "/etc/openstack/clouds.yml",
                ],
                &[
                    "/srv/xov/secure.yaml",
                    "/srv/xov/secure.yml",
                    "/home/op/.config/openstack/secure.yaml",
                    "/home/op/.config/openstack/secure.yml",
                    "/etc/openstack/secure.yaml",
                    "/etc/openstack/secure.yml",
                ],
            ),
            (
                "XDG_CONFIG_HOME wins over HOME",
                &[("HOME", "/home/op"), ("XDG_CONFIG_HOME", "/cfg")],
                &[
                    "/srv/xov/clouds.yaml",
                    "/srv/xov/clouds.yml",
                    "/cfg/openstack/clouds.yaml",
                    "/cfg/openstack/clouds.yml",
                    "/etc/openstack/clouds.yaml",
                    "/etc/openstack/clouds.yml",
                ],
                &[
                    "/srv/xov/secure.yaml",
                    "/srv/xov/secure.yml",
                    "/cfg/openstack/secure.yaml",
                    "/cfg/openstack/secure.yml",
                    "/etc/openstack/secure.yaml",
                    "/etc/openstack/secure.yml",
                ],
            ),
            (
                "OS_CLIENT_CONFIG_FILE and OS_CLIENT_SECURE_FILE alone",
                &[
                    ("HOME", "/home/op"),
                    ("OS_CLIENT_CONFIG_FILE", "/run/c.yaml"),
                    ("OS_CLIENT_SECURE_FILE", "/run/s.yaml"),
                ],
                &["/run/c.yaml"],
                &["/run/s.yaml"],
            ),
        ];
        for (name, vars, clouds, secure) in cases {
            let (c, s) = search_paths(&env(vars), Path::new("/srv/xov"));
            let want = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
            assert_eq!(c, want(clouds), "{name}");
            assert_eq!(s, want(secure), "{name}");
        }
    }

    #[test]
    fn discover_reads_the_first_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().join("cwd");
        let home = dir.path().join("home");
        let os_dir = home.join(".config/openstack");
        std::fs::create_dir_all(&cwd).unwrap();
        std::fs::create_dir_all(&os_dir).unwrap();
        std::fs::write(os_dir.join("clouds.yml"), "clouds: {}").unwrap();
        std::fs::write(os_dir.join("secure.yaml"), "clouds: {}").unwrap();
        let vars = env(&[("HOME", home.to_str().unwrap())]);
        let files = CloudFiles::discover(&vars, &cwd);
        assert_eq!(
            files.clouds.as_ref().unwrap().path,
            os_dir.join("clouds.yml")
        );
        assert_eq!(
            files.secure.as_ref().unwrap().path,
            os_dir.join("secure.yaml")
        );
        assert_eq!(files.searched.len(), 6);
        // the one in the current directory comes first
        std::fs::write(cwd.join("clouds.yaml"), "clouds: {}").unwrap();
        let files = CloudFiles::discover(&vars, &cwd);
        assert_eq!(files.clouds.as_ref().unwrap().path, cwd.join("clouds.yaml"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let files = CloudFiles {
            searched: searched(),
            clouds: Some(FoundFile::new(CLOUDS, CLOUDS_YAML)),
            secure: Some(FoundFile::new(SECURE, SECURE_YAML)),
        };
        let settings: OpenStackSettings =
            toml::from_str("network = \"none\"\ncloud = \"mycloud\"").unwrap();
        let cfg = settings.resolve(&HashMap::new(), &files).unwrap();
        let cfg2 = OpenStackSettings {
            cloud: Some("appcred".into()),
            ..settings.clone()
        }
        .resolve(&HashMap::new(), &files)
        .unwrap();
        let dbg = format!("{files:?} {cfg:?} {cfg2:?} {settings:?}");
        for secret in ["s3cret-pw", "app-s3cret", "1234"] {
            assert!(!dbg.contains(secret), "{secret} in {dbg}");
        }
        assert!(dbg.contains("***"));
    }
}
