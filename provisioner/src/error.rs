//! The one error type of the crate. Variants say what the node should do next: retry later
//! ([`ProvisionError::is_transient`]), give up on the lease and refund ([`ProvisionError::is_launch_failure`]),
//! or fix its configuration.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub type Result<T, E = ProvisionError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum ProvisionError {
    /// The provider's configuration cannot work (bad URL, zero timeout...).
    #[error("invalid provisioner configuration: {0}")]
    Config(String),

    /// `cloud = "NAME"` or `OS_CLOUD` names a cloud that no clouds.yaml defines (the operator's config).
    #[error("cloud '{cloud}' (named by {named_by}) not found: {}", cloud_search(file.as_ref(), available, searched))]
    CloudNotFound {
        cloud: String,
        /// `[provider.openstack] cloud` or `OS_CLOUD`.
        named_by: &'static str,
        /// The clouds.yaml read, if one was found.
        file: Option<PathBuf>,
        /// The clouds it defines.
        available: Vec<String>,
        /// Every clouds.yaml path looked at, in order.
        searched: Vec<PathBuf>,
    },

    /// A clouds.yaml or secure.yaml that cannot be read or is not what it should be (the operator's file).
    #[error("cannot use {}: {detail}", path.display())]
    CloudsFile { path: PathBuf, detail: String },

    /// No source of credentials at all (the operator's config).
    #[error(
        "no OpenStack credentials: [provider.openstack] sets neither cloud = \"NAME\" nor auth_url with \
         [provider.openstack.auth], and neither OS_CLOUD nor OS_AUTH_URL is set (clouds.yaml looked for in: {})",
        paths(searched)
    )]
    NoCredentials { searched: Vec<PathBuf> },

    /// The credentials' source lacks a setting they need (the operator's config). `origin` says where it
    /// looked, e.g. "cloud 'x' in /etc/openstack/clouds.yaml" or "the OS_* variables".
    #[error("{setting} is missing from {origin}")]
    MissingSetting { setting: String, origin: String },

    /// A setting of the credentials' source has a value xov cannot use (the value is not repeated: it may
    /// be secret).
    #[error("{setting} of {origin} must be {expected}")]
    BadSetting {
        setting: String,
        origin: String,
        expected: &'static str,
    },

    /// An auth type other than password or application credential (the operator's config).
    #[error("auth type '{auth_type}' of {origin} is not supported; use password (v3password) or v3applicationcredential")]
    UnsupportedAuthType { auth_type: String, origin: String },

    /// Two sources of credentials in `[provider.openstack]` at once (the operator's config).
    #[error("[provider.openstack] sets cloud = \"{cloud}\" and also {setting}: the cloud's clouds.yaml entry holds the credentials, remove {setting} (or cloud)")]
    ConflictingSettings {
        cloud: String,
        setting: &'static str,
    },

    /// The CA file (`cacert`) cannot be read or holds no usable certificate (the operator's config).
    #[error("CA file {} (cacert) cannot be used: {detail}", path.display())]
    CaFile { path: PathBuf, detail: String },

    /// An https endpoint's certificate was refused (unknown CA, wrong name, expired). Retrying does not help:
    /// the operator sets `cacert` to the CA that signed it, or fixes the endpoint's certificate.
    #[error("{service}: TLS with {url} failed, the server's certificate is not trusted ({detail}); if the cloud's certificates come from a private CA, set cacert (clouds.yaml, OS_CACERT or [provider.openstack] cacert) to that CA's PEM file")]
    Tls {
        service: &'static str,
        url: String,
        detail: String,
    },

    /// The provider owner (`owner` in `[provider.openstack]`, or the node's id) has characters that cannot
    /// go into a metadata value or tag (the operator's config).
    #[error("provider owner '{owner}' must be 1-64 characters of [A-Za-z0-9_-] (it marks the provider's machines as xov-provider=<owner>)")]
    InvalidOwner { owner: String },

    /// The caller asked for something malformed (lease id, SSH key); nothing was sent to the cloud.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// Keystone refused the credentials, or a service refused a fresh token. Retrying does not help.
    #[error("authentication refused ({status}): {message}")]
    Auth { status: u16, message: String },

    /// A service stayed unreachable or kept failing (connection refused, timeouts, 5xx) through every retry.
    #[error("{service} unavailable after {attempts} attempt(s): {last}")]
    Unavailable {
        service: &'static str,
        attempts: u32,
        last: String,
    },

    /// A service answered with a status the operation does not expect.
    #[error("{service} answered {status} to {method} {path}: {message}")]
    Api {
        service: &'static str,
        method: String,
        path: String,
        status: u16,
        message: String,
    },

    /// A service answered 2xx with a body we cannot read.
    #[error("{service} sent an unreadable answer to {what}: {detail}")]
    Decode {
        service: &'static str,
        what: String,
        detail: String,
    },

    /// The Keystone service catalog has no endpoint for a service we need.
    #[error("no {service_type} endpoint with interface {interface} (region {region}) in the service catalog")]
    Catalog {
        service_type: &'static str,
        interface: String,
        region: String,
    },

    /// Nova is too old for the API features xov relies on.
    #[error("Nova supports compute API microversions up to {max}, xov needs at least {needed}")]
    Microversion { max: String, needed: String },

    /// A flavor or image named by the request or the inventory mapping does not exist (or is not usable).
    #[error("{what} '{name}' not found")]
    NotFound { what: &'static str, name: String },

    /// stop/start on a lease that has no machine.
    #[error("no machine for lease {lease_id}")]
    NoMachine { lease_id: String },

    /// The machine could not be created, or went to ERROR and was deleted. The lease cannot be served.
    #[error("launch of lease {lease_id} failed: {reason}")]
    LaunchFailed { lease_id: String, reason: String },

    /// The machine is still building after the boot timeout. It is left in place: launching the same lease
    /// again keeps waiting for it (never boots a second one); deleting the lease gives up.
    #[error(
        "machine {server_id} of lease {lease_id} still {status} after {waited:?}; left in place"
    )]
    BootTimeout {
        lease_id: String,
        server_id: String,
        status: String,
        waited: Duration,
    },

    /// stop, start or delete did not reach the wanted state in time.
    #[error("machine {server_id} of lease {lease_id} did not become {wanted} within {waited:?} (now {status})")]
    StateTimeout {
        lease_id: String,
        server_id: String,
        wanted: &'static str,
        status: String,
        waited: Duration,
    },

    /// A key pair with the lease's name exists but holds another public key; we never overwrite it.
    #[error("key pair {name} exists with a different public key")]
    KeypairConflict { name: String },
}

fn paths(searched: &[PathBuf]) -> String {
    if searched.is_empty() {
        return "(no path)".into();
    }
    let v: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
    v.join(", ")
}

fn cloud_search(file: Option<&PathBuf>, available: &[String], searched: &[PathBuf]) -> String {
    match file {
        None => format!("no clouds.yaml found (looked for: {})", paths(searched)),
        Some(f) if available.is_empty() => format!("{} defines no clouds", f.display()),
        Some(f) => format!(
            "{} defines only {} (looked for clouds.yaml in: {})",
            f.display(),
            available.join(", "),
            paths(searched)
        ),
    }
}

impl ProvisionError {
    /// Worth trying the same operation again later (the cloud may come back, the machine may finish).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProvisionError::Unavailable { .. }
                | ProvisionError::BootTimeout { .. }
                | ProvisionError::StateTimeout { .. }
        )
    }

    /// The operator's configuration (or the files and variables it points at) must change before this can
    /// work; the node reports it instead of retrying.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            ProvisionError::Config(_)
                | ProvisionError::CloudNotFound { .. }
                | ProvisionError::CloudsFile { .. }
                | ProvisionError::NoCredentials { .. }
                | ProvisionError::MissingSetting { .. }
                | ProvisionError::BadSetting { .. }
                | ProvisionError::UnsupportedAuthType { .. }
                | ProvisionError::ConflictingSettings { .. }
                | ProvisionError::CaFile { .. }
                | ProvisionError::Tls { .. }
                | ProvisionError::InvalidOwner { .. }
        )
    }

    /// The lease cannot get a machine from this cloud; the lease logic fails it (and refunds).
    pub fn is_launch_failure(&self) -> bool {
        matches!(self, ProvisionError::LaunchFailed { .. })
    }
}
