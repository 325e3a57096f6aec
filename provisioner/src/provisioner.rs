//! The `Provisioner` trait: what a node needs from a cloud to serve leases, and the plain types it stores.
//! The node holds a generic `P: Provisioner` and never learns which cloud it drives. Every operation is
//! keyed by the lease id, because that is what the node has after a crash; the cloud finds the machine by
//! the lease tag it carries.
//!
//! Invariants:
//! - A machine is ours when it carries the lease tag ([`LEASE_TAG`]) and either our provider marker
//!   ([`PROVIDER_TAG`] equal to the configured owner) or no provider marker at all (made before markers
//!   existed: it stays ours). A machine marked with another provider is never listed, changed or deleted,
//!   so providers (or test nodes) sharing one project never see each other's machines ([`is_ours`]).
//! - Lease ids and owners are checked to safe characters before they reach the cloud (they become
//!   metadata values, tags and key-pair names).

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::error::{ProvisionError, Result};

/// Metadata key that marks a machine as ours and names its lease. Nothing without it is ever touched.
pub const LEASE_TAG: &str = "xov-lease";

/// Metadata key (and, as `xov-provider=<owner>`, Neutron tag) naming the provider that made a machine: the
/// owner the provisioner is configured with (the node's id, or `owner` in `[provider.openstack]`).
pub const PROVIDER_TAG: &str = "xov-provider";

/// Longest owner accepted: it becomes a metadata value and, after `xov-provider=`, a Neutron tag and part of
/// a resource's description next to the lease marker.
pub const MAX_OWNER_LEN: usize = 64;

/// Whether a machine (or network resource) whose provider marker is `marked` belongs to the provisioner
/// configured with `owner`. Unmarked (`None`: made before provider markers) is ours whoever we are; marked
/// is ours only when it names us. An empty marker names nobody, so it is nobody's.
pub fn is_ours(marked: Option<&str>, owner: Option<&str>) -> bool {
    match marked {
        None => true,
        Some(m) => !m.is_empty() && Some(m) == owner,
    }
}

/// Owners become metadata values and tags: 1-64 characters of `[A-Za-z0-9_-]`, like lease ids.
pub fn validate_owner(owner: &str) -> Result<()> {
    let ok = !owner.is_empty()
        && owner.len() <= MAX_OWNER_LEN
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::InvalidOwner {
            owner: owner.to_string(),
        })
    }
}

/// Ask for a machine for a funded lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRequest {
    /// The lease id (the order's message id, 64 hex characters); also the machine's tag.
    pub lease_id: String,
    /// Flavor id or name (as listed by [`Provisioner::inventory`]).
    pub flavor: String,
    /// Image as offered (an alias from the inventory mapping), or a Glance image name or id.
    pub image: String,
    /// The buyer's OpenSSH public key, one line (`ssh-ed25519 AAAA... comment`).
    pub ssh_public_key: String,
    /// TCP ports the buyer asked for, opened besides the provider's own (22 and `access.ports`): among
    /// those the offer allowed (`access.buyer_ports`), which the node checked when it took the order.
    #[serde(default)]
    pub extra_ports: Vec<u16>,
}

/// A machine's state, the same words for every cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Building,
    Running,
    Stopped,
    /// The cloud gave up on it (a launch deletes it; reconciliation reports it).
    Error,
    Deleting,
    /// Anything else (rebooting, resizing, paused, ...): see `Machine::cloud_status`.
    Other,
}

/// One network address of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub network: String,
    pub ip: String,
    /// 4 or 6.
    pub version: u8,
    /// "fixed" or "floating" where the cloud says so.
    pub kind: Option<String>,
}

/// A machine we run for a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub lease_id: String,
    /// The cloud's id for it (Nova server UUID).
    pub server_id: String,
    pub name: String,
    pub state: MachineState,
    /// The cloud's own status word (Nova: ACTIVE, BUILD, SHUTOFF, ERROR, ...).
    pub cloud_status: String,
    pub addresses: Vec<Address>,
    /// The key pair it was booted with (`None` with user-data key delivery).
    pub key_name: Option<String>,
    pub flavor: Option<String>,
    pub image_id: Option<String>,
    /// As the cloud wrote it (RFC 3339).
    pub created_at: Option<String>,
    /// The cloud's reason when it is in error.
    pub fault: Option<String>,
}

/// Something the provider can offer now: a shape, the images it can boot, its price, and how many more
/// fit in the remaining quota (and under the provider's own cap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferableShape {
    pub flavor_id: String,
    pub flavor_name: String,
    pub vcpus: u32,
    pub ram_mib: u32,
    pub disk_gib: u32,
    pub images: Vec<OfferedImage>,
    pub price_sats_per_hour: u64,
    /// Machines of this shape that can be launched now. 0 means: do not offer it.
    pub capacity: u32,
    /// Accelerators each machine gets (from the flavor's extra specs, or the mapping entry's `gpu`).
    pub gpu: Option<crate::hardware::GpuSpec>,
    /// What its images run on (every offered image of the shape is of this architecture).
    pub arch: crate::hardware::CpuArch,
}

/// An image as offered, and what it is in the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedImage {
    /// The name buyers see and ask for (e.g. `debian-12`).
    pub name: String,
    pub image_id: String,
    /// The image's name in Glance.
    pub cloud_name: String,
}

/// What is left of the project's quota; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLeft {
    pub instances: Option<u64>,
    pub cores: Option<u64>,
    pub ram_mib: Option<u64>,
}

/// The provider's current offerable inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub shapes: Vec<OfferableShape>,
    pub quota_left: QuotaLeft,
    /// Mapping entries that could not be honoured (missing flavor or image, image too big for the flavor):
    /// left out of `shapes`, told to the operator.
    pub warnings: Vec<String>,
}

/// A cloud the node can run leased machines on.
///
/// Implementations must be idempotent per lease: `launch` twice (or after a crash) must end with one
/// machine, and must never touch a machine that does not carry our lease tag.
pub trait Provisioner: Send + Sync {
    /// Creates the lease's machine (or finds the one already there) and waits until it is built. A machine
    /// found in another state (stopped, say) is returned as it is.
    fn launch(&self, req: &LaunchRequest) -> impl Future<Output = Result<Machine>> + Send;

    /// The lease's machine, if any.
    fn status(&self, lease_id: &str) -> impl Future<Output = Result<Option<Machine>>> + Send;

    /// Powers the lease's machine off (kept, not billed by the lease logic) and waits until it is stopped.
    fn stop(&self, lease_id: &str) -> impl Future<Output = Result<Machine>> + Send;

    /// Powers the lease's machine on again and waits until it runs.
    fn start(&self, lease_id: &str) -> impl Future<Output = Result<Machine>> + Send;

    /// Deletes the lease's machine(s) and key material and waits until they are gone. `Ok(false)` when there
    /// was no machine (deleting twice is fine).
    fn delete(&self, lease_id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Every machine carrying our lease tag, whatever its lease: ours by [`is_ours`], never another
    /// provider's.
    fn list_ours(&self) -> impl Future<Output = Result<Vec<Machine>>> + Send;

    /// What can be offered right now.
    fn inventory(&self) -> impl Future<Output = Result<Inventory>> + Send;

    /// Releases what a lease left in the cloud besides its machine (network resources) when no machine of
    /// it exists and `expected` (the leases the node believes have one) does not name it; returns those
    /// leases. Backends with nothing of the kind keep the default.
    fn reclaim(
        &self,
        expected: &std::collections::BTreeSet<String>,
    ) -> impl Future<Output = Result<Vec<String>>> + Send {
        let _ = expected;
        async { Ok(Vec::new()) }
    }
}

/// Lease ids become metadata values and key-pair names: keep them to safe characters.
pub fn validate_lease_id(lease_id: &str) -> Result<()> {
    let ok = !lease_id.is_empty()
        && lease_id.len() <= 128
        && lease_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::InvalidRequest(format!(
            "lease id must be 1-128 characters of [A-Za-z0-9_-], got '{lease_id}'"
        )))
    }
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Checks an OpenSSH public key line and returns its `(type, base64 blob)`. Strict, because the key ends up
/// in a cloud-config document and in the buyer's `authorized_keys`.
pub fn parse_ssh_key(key: &str) -> Result<(&str, &str)> {
    let bad = |why: &str| ProvisionError::InvalidRequest(format!("SSH public key: {why}"));
    let key = key.trim();
    if key.len() > 16 * 1024 || key.chars().any(|c| c.is_control()) {
        return Err(bad("must be one line of at most 16 KiB"));
    }
    let mut parts = key.split_ascii_whitespace();
    let kind = parts.next().ok_or_else(|| bad("empty"))?;
    if !KEY_TYPES.contains(&kind) {
        return Err(bad(&format!("unsupported key type '{kind}'")));
    }
    let blob = parts.next().ok_or_else(|| bad("no key data"))?;
    let base64 = blob
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    if blob.len() < 16 || !base64 {
        return Err(bad("key data is not base64"));
    }
    Ok((kind, blob))
}

/// Whether two key lines hold the same key (comments may differ).
pub(crate) fn same_ssh_key(a: &str, b: &str) -> bool {
    matches!((parse_ssh_key(a), parse_ssh_key(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOzsQd6gSG6hQA80FztWVAzNhowSmJZl05CAYBboQqGz buyer@x";

    #[test]
    fn lease_ids() {
        validate_lease_id(&"ab".repeat(32)).unwrap();
        validate_lease_id("lease_1-x").unwrap();
        for bad in ["", "a b", "a/b", "é", &"a".repeat(129)] {
            assert!(validate_lease_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owners() {
        struct Case {
            name: &'static str,
            owner: String,
            valid: bool,
        }
        let cases = [
            Case {
                name: "a node id (base58)",
                owner: "8Xq3vJd1kTzWnPbR2cYhLm4sAeFgUo5iK7pNwQxZ9tB".into(),
                valid: true,
            },
            Case {
                name: "a test's owner with dashes and underscores",
                owner: "t0a1b2c3d4e5f6a7b-p1_x".into(),
                valid: true,
            },
            Case {
                name: "the longest",
                owner: "a".repeat(MAX_OWNER_LEN),
                valid: true,
            },
            Case {
                name: "empty",
                owner: String::new(),
                valid: false,
            },
            Case {
                name: "one too long",
                owner: "a".repeat(MAX_OWNER_LEN + 1),
                valid: false,
            },
            Case {
                name: "a space would split the description's markers",
                owner: "a b".into(),
                valid: false,
            },
            Case {
                name: "an equals sign would confuse the tag",
                owner: "a=b".into(),
                valid: false,
            },
            Case {
                name: "a slash would break the tag's URL path",
                owner: "a/b".into(),
                valid: false,
            },
            Case {
                name: "not ASCII",
                owner: "é".into(),
                valid: false,
            },
        ];
        for c in cases {
            assert_eq!(validate_owner(&c.owner).is_ok(), c.valid, "{}", c.name);
        }
    }

    #[test]
    fn which_machines_are_ours() {
        struct Case {
            name: &'static str,
            marked: Option<&'static str>,
            owner: Option<&'static str>,
            ours: bool,
        }
        let cases = [
            Case {
                name: "marked with our owner",
                marked: Some("node-a"),
                owner: Some("node-a"),
                ours: true,
            },
            Case {
                name: "another provider's",
                marked: Some("node-b"),
                owner: Some("node-a"),
                ours: false,
            },
            Case {
                name: "legacy (no provider marker), we have an owner",
                marked: None,
                owner: Some("node-a"),
                ours: true,
            },
            Case {
                name: "legacy, we have no owner either",
                marked: None,
                owner: None,
                ours: true,
            },
            Case {
                name: "marked, we have no owner: someone else's",
                marked: Some("node-b"),
                owner: None,
                ours: false,
            },
            Case {
                name: "an empty marker names nobody",
                marked: Some(""),
                owner: Some("node-a"),
                ours: false,
            },
            Case {
                name: "a prefix of our owner is not us",
                marked: Some("node"),
                owner: Some("node-a"),
                ours: false,
            },
            Case {
                name: "case matters",
                marked: Some("NODE-A"),
                owner: Some("node-a"),
                ours: false,
            },
        ];
        for c in cases {
            assert_eq!(is_ours(c.marked, c.owner), c.ours, "{}", c.name);
        }
    }

    #[test]
    fn ssh_keys() {
        assert_eq!(
            parse_ssh_key(KEY).unwrap(),
            (
                "ssh-ed25519",
                "AAAAC3NzaC1lZDI1NTE5AAAAIOzsQd6gSG6hQA80FztWVAzNhowSmJZl05CAYBboQqGz"
            )
        );
        assert!(same_ssh_key(KEY, &KEY.replace("buyer@x", "other comment")));
        assert!(!same_ssh_key(KEY, &KEY.replace("Qq", "Qr")));
        for bad in [
            "",
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            "ssh-ed25519",
            "ssh-ed25519 not-base64!!!!!!!!!!!!!!",
            &format!("{KEY}\nruncmd: [rm -rf /]"),
        ] {
            assert!(parse_ssh_key(bad).is_err(), "{bad:?}");
        }
    }
}
