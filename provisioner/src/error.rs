//! The one error type of the crate. Variants say what the node should do next: retry later
//! ([`ProvisionError::is_transient`]), give up on the lease and refund ([`ProvisionError::is_launch_failure`]),
//! or fix its configuration.

use std::time::Duration;

use thiserror::Error;

pub type Result<T, E = ProvisionError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum ProvisionError {
    /// The provider's configuration cannot work (bad URL, https without TLS support, zero timeout...).
    #[error("invalid provisioner configuration: {0}")]
    Config(String),

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

    /// The lease cannot get a machine from this cloud; the lease logic fails it (and refunds).
    pub fn is_launch_failure(&self) -> bool {
        matches!(self, ProvisionError::LaunchFailed { .. })
    }
}
