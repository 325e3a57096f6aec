//! How buyers reach a lease's machine (`[provider.openstack.access]`): the TCP ports its security group
//! opens and the external network its floating IP comes from.
//!
//! Invariants:
//! - Port 22 is always open (the buyer logs in with SSH); the list is ascending and without duplicates.
//! - `buyer_ports` are opened only for a lease whose buyer asked for them; offers state them, so a buyer
//!   knows before ordering. A lease opens at most 16 ports in all.
//! - Without `external_network` the machine's own (fixed) address is what buyers get: right for a provider
//!   network whose addresses are public, or a lab.

use serde::{Deserialize, Serialize};

use crate::error::{ProvisionError, Result};

/// The SSH port every lease opens.
pub const SSH_PORT: u16 = 22;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessConfig {
    /// Network (UUID) that floating IPs come from; none: buyers get the machine's fixed address.
    #[serde(default)]
    pub external_network: Option<String>,
    /// TCP ports opened to the machine besides 22 (a web server's 80 and 443, say).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// TCP ports a buyer may ask to have opened to its machine (stated in the offers; a buyer's order
    /// names those it wants).
    #[serde(default)]
    pub buyer_ports: Vec<u16>,
    /// Give each lease its own security group opening exactly those ports (default). Off: the project's
    /// default group applies, which usually refuses inbound SSH.
    #[serde(default = "yes")]
    pub security_group: bool,
    /// Reconciliation releases a lease's floating IP and group once no server of the lease exists, the node
    /// expects none, and they are this old (a launch under way makes its group before its server).
    #[serde(default = "default_orphan_grace")]
    pub orphan_grace_secs: u64,
}

fn yes() -> bool {
    true
}

fn default_orphan_grace() -> u64 {
    600
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            external_network: None,
            ports: Vec::new(),
            buyer_ports: Vec::new(),
            security_group: true,
            orphan_grace_secs: default_orphan_grace(),
        }
    }
}

/// `ports` ascending, each once.
fn sorted(ports: impl IntoIterator<Item = u16>) -> Vec<u16> {
    let mut p: Vec<u16> = ports.into_iter().collect();
    p.sort_unstable();
    p.dedup();
    p
}

impl AccessConfig {
    /// Every TCP port a lease's machine has open: 22 and the configured ones, ascending, each once.
    pub fn open_ports(&self) -> Vec<u16> {
        sorted(std::iter::once(SSH_PORT).chain(self.ports.iter().copied()))
    }

    /// The ports a buyer may ask for, as offers state them: ascending, each once, none that every lease
    /// has open anyway.
    pub fn offered_ports(&self) -> Vec<u16> {
        let always = self.open_ports();
        sorted(
            self.buyer_ports
                .iter()
                .copied()
                .filter(|p| !always.contains(p)),
        )
    }

    /// Every TCP port a lease's machine has open when its buyer asked for `extra`: [`Self::open_ports`]
    /// and those, ascending, each once.
    pub fn lease_ports(&self, extra: &[u16]) -> Vec<u16> {
        sorted(
            self.open_ports()
                .into_iter()
                .chain(extra.iter().copied().filter(|p| *p != 0)),
        )
    }

    pub fn validate(&self) -> Result<()> {
        if self.ports.contains(&0) || self.buyer_ports.contains(&0) {
            return Err(ProvisionError::Config(
                "[provider.openstack.access] ports and buyer_ports: 0 is not a port".into(),
            ));
        }
        if self.lease_ports(&self.offered_ports()).len() > 16 {
            return Err(ProvisionError::Config(
                "[provider.openstack.access] ports and buyer_ports: at most 15 besides 22 in all (a lease \
                 states at most 16)"
                    .into(),
            ));
        }
        if let Some(n) = &self.external_network {
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Err(ProvisionError::Config(format!(
                    "[provider.openstack.access] external_network must be a network UUID, got '{n}'"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_settings() {
        for (name, ports, want) in [
            ("none given", vec![], vec![22]),
            ("22 given again", vec![22, 443, 80], vec![22, 80, 443]),
            ("duplicates", vec![8080, 8080], vec![22, 8080]),
        ] {
            let a = AccessConfig {
                ports,
                ..AccessConfig::default()
            };
            assert_eq!(a.open_ports(), want, "{name}");
            a.validate().unwrap();
        }
        let b = AccessConfig {
            ports: vec![443],
            buyer_ports: vec![8080, 443, 22, 80, 8080],
            ..AccessConfig::default()
        };
        assert_eq!(
            b.offered_ports(),
            [80, 8080],
            "what every lease has open is not offered"
        );
        assert_eq!(b.lease_ports(&[]), [22, 443]);
        assert_eq!(b.lease_ports(&[8080, 80]), [22, 80, 443, 8080]);
        b.validate().unwrap();
        let a: AccessConfig =
            toml::from_str("external_network = \"ee52f54f-6af8\"\nports = [443]").unwrap();
        assert!(a.security_group);
        a.validate().unwrap();
        for bad in [
            AccessConfig {
                ports: vec![0],
                ..AccessConfig::default()
            },
            AccessConfig {
                ports: (1000..1016).collect(),
                ..AccessConfig::default()
            },
            AccessConfig {
                ports: (1000..1008).collect(),
                buyer_ports: (2000..2008).collect(),
                ..AccessConfig::default()
            },
            AccessConfig {
                buyer_ports: vec![0],
                ..AccessConfig::default()
            },
            AccessConfig {
                external_network: Some("public net".into()),
                ..AccessConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
