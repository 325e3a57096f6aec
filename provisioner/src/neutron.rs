//! Neutron (networking API v2.0) for a lease's reachability: its security group (the ports it opens) and
//! its floating IP, each found again by the lease's marker after a crash.
//!
//! Invariants:
//! - Every resource made for a lease carries the marker `xov-lease=<lease id>` in its description from the
//!   moment it exists (set in the create request itself), and the same string as a tag once tagged; it is
//!   found by the description, so a crash between create and tag leaves nothing unfindable.
//! - A provisioner with an owner writes `xov-lease=<lease id> xov-provider=<owner>` as the description and
//!   tags `xov-provider=<owner>` besides the lease's tag (ports too). Whose a resource is, is read from its
//!   description: ours when it names our owner, or no provider (made before provider markers); another
//!   provider's resources are never found, listed, released or reclaimed ([`crate::provisioner::is_ours`]).
//! - `ensure_*` is idempotent: it lists by marker first and creates only when nothing is there; a create
//!   whose answer was lost is followed by another list, never by a blind second create; extras found (two
//!   groups for one lease after such a loss) are deleted, keeping the oldest.
//! - Deletes treat 404 as done.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ProvisionError, Result};
use crate::http::{Failure, Service};
use crate::provisioner::{is_ours, LEASE_TAG, PROVIDER_TAG};

/// `xov-lease=<lease id>`: the tag of a lease's network resources (and the whole description of those made
/// without an owner).
pub fn marker(lease_id: &str) -> String {
    format!("{LEASE_TAG}={lease_id}")
}

/// `xov-provider=<owner>`: the tag naming the provider that made a resource.
pub fn provider_marker(owner: &str) -> String {
    format!("{PROVIDER_TAG}={owner}")
}

/// The description a lease's resource is made with: `xov-lease=<lease id>`, followed by
/// ` xov-provider=<owner>` when the provisioner has an owner.
pub fn description(lease_id: &str, owner: Option<&str>) -> String {
    match owner {
        Some(o) => format!("{} {}", marker(lease_id), provider_marker(o)),
        None => marker(lease_id),
    }
}

/// What a description written by [`description`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker<'a> {
    pub lease_id: &'a str,
    /// `None` for a resource made without an owner (before provider markers).
    pub provider: Option<&'a str>,
}

/// The lease (and provider) a description names, if it is exactly one of our markers.
pub fn parse_marker(text: &str) -> Option<Marker<'_>> {
    let (lease_part, provider_part) = match text.split_once(' ') {
        Some((l, p)) => (l, Some(p)),
        None => (text, None),
    };
    let lease_id = lease_part
        .strip_prefix(LEASE_TAG)
        .and_then(|r| r.strip_prefix('='))
        .filter(|id| !id.is_empty())?;
    let provider = match provider_part {
        None => None,
        Some(p) => Some(
            p.strip_prefix(PROVIDER_TAG)
                .and_then(|r| r.strip_prefix('='))
                .filter(|o| !o.is_empty() && !o.contains(' '))?,
        ),
    };
    Some(Marker { lease_id, provider })
}

/// The lease a description or tag names, if it is one of our markers.
pub fn lease_of(marker_text: &str) -> Option<&str> {
    parse_marker(marker_text).map(|m| m.lease_id)
}

/// The tags a resource with this description carries: the lease's, and the provider's when it names one.
fn tags_for(m: Marker<'_>) -> Vec<String> {
    let mut tags = vec![marker(m.lease_id)];
    tags.extend(m.provider.map(provider_marker));
    tags
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
    fn description(&self) -> &str;
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
    fn description(&self) -> &str {
        &self.description
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
    fn description(&self) -> &str {
        &self.description
    }
    fn tagged(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// The networking service of the provider's project.
pub struct Neutron {
    pub(crate) svc: Service,
    /// The provider's owner ([`crate::OpenStackConfig::owner`]): what it makes is marked with it, and only
    /// what is marked with it (or with no provider) is its own.
    pub(crate) owner: Option<String>,
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

    /// The description this provisioner makes a lease's resources with.
    fn description(&self, lease_id: &str) -> String {
        description(lease_id, self.owner.as_deref())
    }

    /// The lease's resources of one kind, ours ([`is_ours`]): those with our description and, with an owner,
    /// those made before provider markers; oldest first.
    async fn of_lease<T: Marked>(&self, lease_id: &str) -> Result<Vec<T>> {
        let mut descriptions = vec![self.description(lease_id)];
        if self.owner.is_some() {
            descriptions.push(marker(lease_id));
        }
        let mut found: Vec<T> = Vec::new();
        for d in descriptions {
            found.extend(
                self.list::<T>(&format!("?description={}", urlencode(&d)))
                    .await?,
            );
        }
        found.sort_by(|a, b| a.created().cmp(b.created()).then(a.id().cmp(b.id())));
        found.dedup_by(|a, b| a.id() == b.id());
        Ok(found)
    }

    /// Every resource of one kind the project has (reconciliation picks the marked ones).
    async fn all_marked<T: Marked>(&self) -> Result<Vec<T>> {
        self.list::<T>("").await
    }

    /// The lease's one resource of a kind: found, or made by `body` (which must carry
    /// [`Neutron::description`] as its description). Extras (from a create whose answer was lost) are
    /// deleted; the survivor is tagged as its description says.
    async fn ensure<T: Marked>(&self, lease_id: &str, body: Value) -> Result<T> {
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
        let tags = parse_marker(found.description())
            .map(tags_for)
            .unwrap_or_else(|| vec![marker(lease_id)]);
        for tag in tags.iter().filter(|t| !found.tagged(t)) {
            self.put_tag(T::PATH, found.id(), tag).await?;
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
                    "description": self.description(lease_id),
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
                    "description": self.description(lease_id),
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

    /// Every security group and floating IP carrying a lease marker that is ours ([`ours_of`]).
    pub async fn marked(&self) -> Result<Vec<MarkedResource>> {
        let mut out = Vec::new();
        for g in self.all_marked::<SecurityGroup>().await? {
            out.extend(MarkedResource::of(
                "security_group",
                &g.id,
                &g.description,
                g.created_at.as_deref(),
            ));
        }
        for f in self.all_marked::<FloatingIp>().await? {
            out.extend(MarkedResource::of(
                "floating_ip",
                &f.id,
                &f.description,
                f.created_at.as_deref(),
            ));
        }
        Ok(ours_of(out, self.owner.as_deref()))
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

    /// Tags a port Nova made for a lease's server with the lease's marker and our provider's (idempotent: PUT
    /// of a tag), so every Neutron resource of the lease is found by its tags.
    pub async fn tag_port(&self, lease_id: &str, port: &Port) -> Result<()> {
        let tags = tags_for(Marker {
            lease_id,
            provider: self.owner.as_deref(),
        });
        for tag in tags.iter().filter(|t| !port.tags.contains(t)) {
            self.put_tag("/ports", &port.id, tag).await?;
        }
        Ok(())
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
    /// The provider its description names; `None` when made before provider markers.
    pub provider: Option<String>,
    /// `security_group` or `floating_ip`.
    pub kind: &'static str,
    pub id: String,
    /// Unix seconds Neutron made it, when it says.
    pub created: Option<u64>,
}

impl MarkedResource {
    /// The resource as reconciliation sees it, when its description is one of our markers.
    fn of(
        kind: &'static str,
        id: &str,
        description: &str,
        created: Option<&str>,
    ) -> Option<MarkedResource> {
        let m = parse_marker(description)?;
        Some(MarkedResource {
            lease_id: m.lease_id.to_string(),
            provider: m.provider.map(str::to_string),
            kind,
            id: id.to_string(),
            created: created.and_then(unix_of),
        })
    }
}

/// The marked resources that are ours for a provisioner with `owner` ([`is_ours`]): another provider's are
/// left out, so reconciliation never reclaims them.
pub fn ours_of(marked: Vec<MarkedResource>, owner: Option<&str>) -> Vec<MarkedResource> {
    marked
        .into_iter()
        .filter(|m| is_ours(m.provider.as_deref(), owner))
        .collect()
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
        assert_eq!(
            urlencode(&description("ab", Some("n1"))),
            "xov-lease%3Dab%20xov-provider%3Dn1"
        );
    }

    #[test]
    fn descriptions_name_the_lease_and_the_provider() {
        struct Case {
            name: &'static str,
            text: String,
            want: Option<Marker<'static>>,
        }
        let cases = [
            Case {
                name: "made with an owner",
                text: description("l1", Some("node-a")),
                want: Some(Marker {
                    lease_id: "l1",
                    provider: Some("node-a"),
                }),
            },
            Case {
                name: "made without an owner (and before provider markers)",
                text: description("l1", None),
                want: Some(Marker {
                    lease_id: "l1",
                    provider: None,
                }),
            },
            Case {
                name: "something after the lease that is not a provider marker",
                text: "xov-lease=l1 by hand".into(),
                want: None,
            },
            Case {
                name: "an empty provider",
                text: "xov-lease=l1 xov-provider=".into(),
                want: None,
            },
            Case {
                name: "a provider with a space in it",
                text: "xov-lease=l1 xov-provider=a b".into(),
                want: None,
            },
            Case {
                name: "the provider first",
                text: "xov-provider=node-a xov-lease=l1".into(),
                want: None,
            },
            Case {
                name: "someone else's description",
                text: "default security group".into(),
                want: None,
            },
        ];
        for c in cases {
            assert_eq!(parse_marker(&c.text), c.want, "{}", c.name);
        }
        assert_eq!(
            tags_for(parse_marker(&description("l1", Some("node-a"))).unwrap()),
            ["xov-lease=l1", "xov-provider=node-a"]
        );
        assert_eq!(
            tags_for(parse_marker(&description("l1", None)).unwrap()),
            ["xov-lease=l1"]
        );
    }

    #[test]
    fn only_our_resources_and_unmarked_ones_are_ours() {
        struct Case {
            name: &'static str,
            description: String,
            owner: Option<&'static str>,
            ours: bool,
        }
        let cases = [
            Case {
                name: "ours",
                description: description("l1", Some("node-a")),
                owner: Some("node-a"),
                ours: true,
            },
            Case {
                name: "another provider's in the same project",
                description: description("l1", Some("node-b")),
                owner: Some("node-a"),
                ours: false,
            },
            Case {
                name: "made before provider markers",
                description: description("l1", None),
                owner: Some("node-a"),
                ours: true,
            },
            Case {
                name: "a provider's, seen by a provisioner without an owner",
                description: description("l1", Some("node-a")),
                owner: None,
                ours: false,
            },
            Case {
                name: "unmarked, seen by a provisioner without an owner",
                description: description("l1", None),
                owner: None,
                ours: true,
            },
        ];
        for c in cases {
            let r = MarkedResource::of("security_group", "sg1", &c.description, None)
                .unwrap_or_else(|| panic!("{}: a marker", c.name));
            assert_eq!(
                ours_of(vec![r], c.owner).len(),
                usize::from(c.ours),
                "{}",
                c.name
            );
        }
        assert_eq!(
            MarkedResource::of("floating_ip", "f1", "not ours at all", None),
            None
        );
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
            provider: None,
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
