//! Neutron (networking API v2.0) for a lease's reachability: its security group (the ports it opens) and
//! its floating IP, each found again by the lease's marker after a crash.
//!
//! Invariants:
//! - Every resource made for a lease carries the marker `xov-lease=<lease id>` in its description from the
//!   moment it exists (set in the create request itself), and the same string as a tag once tagged; it is
//!   found by the description, so a crash between create and tag leaves nothing unfindable.
//! - `ensure_*` is idempotent: it lists by marker first and creates only when nothing is there; a create
//!   whose answer was lost is followed by another list, never by a blind second create; extras found (two
//!   groups for one lease after such a loss) are deleted, keeping the oldest.
//! - Deletes treat 404 as done.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ProvisionError, Result};
use crate::http::{Failure, Service};
use crate::provisioner::LEASE_TAG;

/// `xov-lease=<lease id>`: the description and tag of a lease's network resources.
pub fn marker(lease_id: &str) -> String {
    format!("{LEASE_TAG}={lease_id}")
}

/// The lease a description or tag names, if it is one of our markers.
pub fn lease_of(marker_text: &str) -> Option<&str> {
    marker_text
        .strip_prefix(LEASE_TAG)
        .and_then(|r| r.strip_prefix('='))
        .filter(|id| !id.is_empty())
}

#[derive(Debug, Clone, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub security_group_rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    #[serde(default)]
    pub direction: String,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port_range_min: Option<u16>,
    #[serde(default)]
    pub port_range_max: Option<u16>,
    #[serde(default)]
    pub ethertype: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FloatingIp {
    pub id: String,
    pub floating_ip_address: String,
    #[serde(default)]
    pub port_id: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Port {
    pub id: String,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// What `ensure_*` deals with: found by marker, created, deleted.
trait Marked: serde::de::DeserializeOwned {
    /// Collection path and JSON keys: (`/security-groups`, `security_groups`, `security_group`).
    const PATH: &'static str;
    const MANY: &'static str;
    const ONE: &'static str;
    fn id(&self) -> &str;
    fn created(&self) -> &str;
    fn tagged(&self, tag: &str) -> bool;
}

impl Marked for SecurityGroup {
    const PATH: &'static str = "/security-groups";
    const MANY: &'static str = "security_groups";
    const ONE: &'static str = "security_group";
    fn id(&self) -> &str {
        &self.id
    }
    fn created(&self) -> &str {
        self.created_at.as_deref().unwrap_or("")
    }
    fn tagged(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

impl Marked for FloatingIp {
    const PATH: &'static str = "/floatingips";
    const MANY: &'static str = "floatingips";
    const ONE: &'static str = "floatingip";
    fn id(&self) -> &str {
        &self.id
    }
    fn created(&self) -> &str {
        self.created_at.as_deref().unwrap_or("")
    }
    fn tagged(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// The networking service of the provider's project.
pub struct Neutron {
    pub(crate) svc: Service,
}

impl Neutron {
    async fn list<T: Marked>(&self, query: &str) -> Result<Vec<T>> {
        let page: Value = self
            .svc
            .call(Method::GET, &format!("{}{query}", T::PATH), None, &[])
            .await?
            .expect_json()?;
        member(&page, T::MANY, &format!("GET {}", T::PATH))
    }

    /// The lease's resources of one kind, oldest first.
    async fn of_lease<T: Marked>(&self, lease_id: &str) -> Result<Vec<T>> {
        let mut found: Vec<T> = self
            .list(&format!("?description={}", urlencode(&marker(lease_id))))
            .await?;
        found.sort_by(|a, b| a.created().cmp(b.created()).then(a.id().cmp(b.id())));
        Ok(found)
    }

    /// Every resource of one kind the project has (reconciliation picks the marked ones).
    async fn all_marked<T: Marked>(&self) -> Result<Vec<T>> {
        self.list::<T>("").await
    }

    /// The lease's one resource of a kind: found, or made by `body` (which must carry the marker as its
    /// description). Extras (from a create whose answer was lost) are deleted; the survivor is tagged.
    async fn ensure<T: Marked>(&self, lease_id: &str, body: Value) -> Result<T> {
        let tag = marker(lease_id);
        let mut attempts = 0u32;
        let found = loop {
            let mut found = self.of_lease::<T>(lease_id).await?;
            if !found.is_empty() {
                for extra in found.drain(1..) {
                    self.delete::<T>(extra.id()).await?;
                }
                break found.remove(0);
            }
            attempts += 1;
            match self
                .svc
                .once(
                    Method::POST,
                    T::PATH,
                    Some(&json!({ T::ONE: body.clone() })),
                    &[],
                )
                .await
            {
                Ok(r) if r.ok() => {
                    let v: Value = r.json()?;
                    break member(&v, T::ONE, &format!("POST {}", T::PATH))?;
                }
                Ok(r) => return Err(r.unexpected()),
                Err(Failure::Fatal(e)) => return Err(e),
                // Lost or refused for now: look again before another create.
                Err(Failure::Retryable { why, .. }) if attempts >= self.svc.policy.attempts => {
                    return Err(ProvisionError::Unavailable {
                        service: "network",
                        attempts,
                        last: why,
                    })
                }
                Err(Failure::Retryable { .. }) => {
                    tokio::time::sleep(self.svc.policy.initial_delay).await;
                }
            }
        };
        if !found.tagged(&tag) {
            self.put_tag(T::PATH, found.id(), &tag).await?;
        }
        Ok(found)
    }

    /// Adds `tag` to the resource `path/id` (a PUT: adding it again changes nothing).
    async fn put_tag(&self, path: &str, id: &str, tag: &str) -> Result<()> {
        let r = self
            .svc
            .call(
                Method::PUT,
                &format!("{path}/{id}/tags/{}", urlencode(tag)),
                None,
                &[],
            )
            .await?;
        if r.ok() {
            Ok(())
        } else {
            Err(r.unexpected())
        }
    }

    async fn delete<T: Marked>(&self, id: &str) -> Result<()> {
        let r = self
            .svc
            .call(Method::DELETE, &format!("{}/{id}", T::PATH), None, &[])
            .await?;
        if r.ok() || r.status == 404 {
            Ok(())
        } else {
            Err(r.unexpected())
        }
    }

    /// The lease's security group, opening `ports` (TCP, from anywhere, IPv4 and IPv6) and nothing else
    /// inbound; rules missing from a group found again are added.
    pub async fn ensure_security_group(
        &self,
        lease_id: &str,
        ports: &[u16],
    ) -> Result<SecurityGroup> {
        let sg: SecurityGroup = self
            .ensure(
                lease_id,
                json!({
                    "name": format!("xov-{}", lease_id.get(..12).unwrap_or(lease_id)),
                    "description": marker(lease_id),
                }),
            )
            .await?;
        for &port in ports {
            for ethertype in ["IPv4", "IPv6"] {
                let there = sg.security_group_rules.iter().any(|r| {
                    r.direction == "ingress"
                        && r.ethertype == ethertype
                        && r.protocol.as_deref() == Some("tcp")
                        && r.port_range_min == Some(port)
                        && r.port_range_max == Some(port)
                });
                if there {
                    continue;
                }
                let r = self
                    .svc
                    .call(
                        Method::POST,
                        "/security-group-rules",
                        Some(&json!({"security_group_rule": {
                            "security_group_id": sg.id, "direction": "ingress", "ethertype": ethertype,
                            "protocol": "tcp", "port_range_min": port, "port_range_max": port,
                        }})),
                        &[],
                    )
                    .await?;
                // 409: the same rule exists (our earlier try got through).
                if !r.ok() && r.status != 409 {
                    return Err(r.unexpected());
                }
            }
        }
        self.security_group(&sg.id).await
    }

    pub async fn security_group(&self, id: &str) -> Result<SecurityGroup> {
        let v: Value = self
            .svc
            .call(Method::GET, &format!("/security-groups/{id}"), None, &[])
            .await?
            .expect_json()?;
        member(&v, "security_group", "GET /security-groups/{id}")
    }

    /// The lease's floating IP on `external_network`, associated with `port_id`.
    pub async fn ensure_floating_ip(
        &self,
        lease_id: &str,
        external_network: &str,
        port_id: &str,
    ) -> Result<FloatingIp> {
        let fip: FloatingIp = self
            .ensure(
                lease_id,
                json!({
                    "floating_network_id": external_network,
                    "port_id": port_id,
                    "description": marker(lease_id),
                }),
            )
            .await?;
        if fip.port_id.as_deref() == Some(port_id) {
            return Ok(fip);
        }
        let v: Value = self
            .svc
            .call(
                Method::PUT,
                &format!("/floatingips/{}", fip.id),
                Some(&json!({"floatingip": {"port_id": port_id}})),
                &[],
            )
            .await?
            .expect_json()?;
        member(&v, "floatingip", "PUT /floatingips/{id}")
    }

    pub async fn security_groups_of(&self, lease_id: &str) -> Result<Vec<SecurityGroup>> {
        self.of_lease(lease_id).await
    }

    pub async fn floating_ips_of(&self, lease_id: &str) -> Result<Vec<FloatingIp>> {
        self.of_lease(lease_id).await
    }

    /// Every security group and floating IP carrying a lease marker.
    pub async fn marked(&self) -> Result<Vec<MarkedResource>> {
        let mut out = Vec::new();
        for g in self.all_marked::<SecurityGroup>().await? {
            if let Some(l) = lease_of(&g.description) {
                out.push(MarkedResource {
                    lease_id: l.to_string(),
                    kind: "security_group",
                    id: g.id.clone(),
                    created: g.created_at.as_deref().and_then(unix_of),
                });
            }
        }
        for f in self.all_marked::<FloatingIp>().await? {
            if let Some(l) = lease_of(&f.description) {
                out.push(MarkedResource {
                    lease_id: l.to_string(),
                    kind: "floating_ip",
                    id: f.id.clone(),
                    created: f.created_at.as_deref().and_then(unix_of),
                });
            }
        }
        Ok(out)
    }

    /// Deletes the lease's floating IPs, then its security groups (after the server is gone, so no port
    /// still uses them). Safe to repeat.
    pub async fn release(&self, lease_id: &str) -> Result<()> {
        for f in self.floating_ips_of(lease_id).await? {
            self.delete::<FloatingIp>(&f.id).await?;
        }
        for g in self.security_groups_of(lease_id).await? {
            self.delete::<SecurityGroup>(&g.id).await?;
        }
        Ok(())
    }

    /// Puts `port_id` in exactly these security groups.
    pub async fn set_security_groups(&self, port_id: &str, groups: &[&str]) -> Result<Port> {
        let v: Value = self
            .svc
            .call(
                Method::PUT,
                &format!("/ports/{port_id}"),
                Some(&json!({"port": {"security_groups": groups}})),
                &[],
            )
            .await?
            .expect_json()?;
        member(&v, "port", "PUT /ports/{id}")
    }

    /// Tags a port Nova made for a lease's server with the lease's marker (idempotent: PUT of a tag), so
    /// every Neutron resource of the lease is found by its tag.
    pub async fn tag_port(&self, lease_id: &str, port: &Port) -> Result<()> {
        let tag = marker(lease_id);
        if port.tags.contains(&tag) {
            return Ok(());
        }
        self.put_tag("/ports", &port.id, &tag).await
    }

    /// The ports Nova made for a server.
    pub async fn ports_of_server(&self, server_id: &str) -> Result<Vec<Port>> {
        let v: Value = self
            .svc
            .call(
                Method::GET,
                &format!("/ports?device_id={server_id}"),
                None,
                &[],
            )
            .await?
            .expect_json()?;
        member(&v, "ports", "GET /ports")
    }
}

/// `key` of a Neutron answer (`{"port": {...}}`) decoded; `what` names the request in the error.
fn member<T: serde::de::DeserializeOwned>(v: &Value, key: &str, what: &str) -> Result<T> {
    serde_json::from_value(v.get(key).cloned().unwrap_or_default()).map_err(|e| {
        ProvisionError::Decode {
            service: "network",
            what: what.to_string(),
            detail: e.to_string(),
        }
    })
}

/// A lease's security group or floating IP, as reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedResource {
    pub lease_id: String,
    /// `security_group` or `floating_ip`.
    pub kind: &'static str,
    pub id: String,
    /// Unix seconds Neutron made it, when it says.
    pub created: Option<u64>,
}

/// The leases whose marked resources are orphans: no server of theirs exists, the node expects none, and
/// every one of their resources is older than `grace` seconds (a launch under way makes its group before
/// its server; a resource of unknown age counts as old).
pub fn orphaned(
    marked: &[MarkedResource],
    with_server: &std::collections::BTreeSet<String>,
    expected: &std::collections::BTreeSet<String>,
    now: u64,
    grace: u64,
) -> std::collections::BTreeSet<String> {
    let mut leases: std::collections::BTreeMap<&str, bool> = std::collections::BTreeMap::new();
    for m in marked {
        let old = m.created.is_none_or(|c| now.saturating_sub(c) >= grace);
        let all_old = leases.entry(m.lease_id.as_str()).or_insert(true);
        *all_old &= old;
    }
    leases
        .into_iter()
        .filter(|(l, all_old)| *all_old && !with_server.contains(*l) && !expected.contains(*l))
        .map(|(l, _)| l.to_string())
        .collect()
}

/// Unix seconds of Neutron's `YYYY-MM-DDTHH:MM:SSZ` (fractions and offsets are not used there).
pub fn unix_of(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, s) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + s).ok()
}

/// Percent-encodes what a query value or path segment must not carry raw.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_name_their_lease() {
        let id = "ab".repeat(32);
        assert_eq!(lease_of(&marker(&id)), Some(id.as_str()));
        for (name, text) in [
            ("someone else's group", "default security group"),
            ("empty id", "xov-lease="),
            ("no separator", "xov-leaseabc"),
        ] {
            assert_eq!(lease_of(text), None, "{name}");
        }
        assert_eq!(urlencode("xov-lease=ab"), "xov-lease%3Dab");
    }

    #[test]
    fn neutron_times() {
        assert_eq!(unix_of("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_of("2026-12-02T09:09:39Z"), Some(1_796_202_579));
        assert_eq!(unix_of("2000-02-29T12:00:00Z"), Some(951_825_600));
        for bad in [
            "",
            "2026-12-02",
            "2026-13-02T00:00:00Z",
            "2026/12/02T09:09:39Z",
        ] {
            assert_eq!(unix_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn orphans_are_old_serverless_and_unexpected() {
        let r = |lease: &str, kind, created| MarkedResource {
            lease_id: lease.into(),
            kind,
            id: format!("{lease}-{kind}"),
            created,
        };
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<std::collections::BTreeSet<_>>()
        };
        let now = 10_000;
        let marked = vec![
            r("gone", "floating_ip", Some(1_000)),
            r("gone", "security_group", Some(1_000)),
            r("running", "floating_ip", Some(1_000)),
            r("expected", "security_group", Some(1_000)),
            r("launching", "security_group", Some(now - 5)),
            r("half-new", "security_group", Some(1_000)),
            r("half-new", "floating_ip", Some(now - 5)),
            r("undated", "floating_ip", None),
        ];
        assert_eq!(
            orphaned(&marked, &set(&["running"]), &set(&["expected"]), now, 600),
            set(&["gone", "undated"])
        );
        assert_eq!(
            orphaned(&marked, &set(&["running"]), &set(&["expected"]), now, 0),
            set(&["gone", "undated", "launching", "half-new"])
        );
    }
}
