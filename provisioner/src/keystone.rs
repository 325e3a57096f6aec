//! Keystone v3: authenticate (password or application credential), cache the token with its service
//! catalog, and renew it before it expires or when a service refuses it. One token serves every request;
//! concurrent callers wait for one renewal instead of each authenticating. Tokens never reach the logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::config::{Auth, Interface, OpenStackConfig, RetryPolicy, Secret};
use crate::error::{ProvisionError, Result};
use crate::http::{certificate_error, describe, error_message};
use crate::retry::Backoff;

/// Renew this long before expiry at most (a quarter of the lifetime for short-lived tokens).
const RENEW_MARGIN: Duration = Duration::from_secs(300);
/// Assumed lifetime when Keystone's timestamps cannot be read.
const FALLBACK_LIFETIME: Duration = Duration::from_secs(900);

/// A valid token and what came with it.
pub struct Session {
    token: Secret,
    renew_at: Instant,
    catalog: Vec<CatalogService>,
}

impl Session {
    pub(crate) fn token(&self) -> &str {
        self.token.expose()
    }

    fn fresh(&self) -> bool {
        Instant::now() < self.renew_at
    }

    /// The catalog URL for a service type, interface and (optionally) region.
    pub fn endpoint(
        &self,
        service_type: &'static str,
        interface: Interface,
        region: Option<&str>,
    ) -> Result<String> {
        self.catalog
            .iter()
            .filter(|s| s.kind == service_type)
            .flat_map(|s| s.endpoints.iter())
            .find(|e| {
                e.interface == interface.as_str()
                    && region.is_none_or(|r| {
                        e.region.as_deref() == Some(r) || e.region_id.as_deref() == Some(r)
                    })
            })
            .map(|e| e.url.clone())
            .ok_or_else(|| ProvisionError::Catalog {
                service_type,
                interface: interface.as_str().into(),
                region: region.unwrap_or("any").into(),
            })
    }
}

#[derive(Debug, Deserialize)]
struct CatalogService {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    endpoints: Vec<CatalogEndpoint>,
}

#[derive(Debug, Deserialize)]
struct CatalogEndpoint {
    interface: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
    url: String,
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    #[serde(default)]
    issued_at: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
    #[serde(default)]
    project: Option<IdOnly>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// The token cache and the client that fills it.
pub struct Keystone {
    http: reqwest::Client,
    v3: String,
    auth: Auth,
    policy: RetryPolicy,
    current: Mutex<Option<Arc<Session>>>,
    authentications: AtomicU64,
}

impl Keystone {
    pub(crate) fn new(cfg: &OpenStackConfig, http: reqwest::Client) -> Keystone {
        Keystone {
            http,
            v3: cfg.keystone_v3(),
            auth: cfg.auth.clone(),
            policy: cfg.retry.clone(),
            current: Mutex::new(None),
            authentications: AtomicU64::new(0),
        }
    }

    /// How many tokens were issued to us so far (observability, tests of the cache).
    pub fn authentications(&self) -> u64 {
        self.authentications.load(Ordering::Relaxed)
    }

    /// The cached session, renewed first if it is close to expiry.
    pub async fn session(&self) -> Result<Arc<Session>> {
        let mut current = self.current.lock().await;
        if let Some(s) = current.as_ref().filter(|s| s.fresh()) {
            return Ok(s.clone());
        }
        let s = Arc::new(self.authenticate().await?);
        *current = Some(s.clone());
        Ok(s)
    }

    /// Forgets `session` if it is still the cached one (a service refused it); the next call re-authenticates.
    pub async fn invalidate(&self, session: &Arc<Session>) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, session)) {
            *current = None;
        }
    }

    fn request_body(&self) -> Value {
        request_body(&self.auth)
    }

    async fn authenticate(&self) -> Result<Session> {
        let url = format!("{}/auth/tokens", self.v3);
        let body = self.request_body();
        let mut backoff = Backoff::new(&self.policy);
        loop {
            let started = Instant::now();
            let why = match self.http.post(&url).json(&body).send().await {
                Err(e) => match certificate_error(&e) {
                    Some(detail) => {
                        return Err(ProvisionError::Tls {
                            service: "identity",
                            url: self.v3.clone(),
                            detail,
                        })
                    }
                    None => describe(&e),
                },
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let token = resp
                        .headers()
                        .get("X-Subject-Token")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    match resp.bytes().await {
                        Err(e) => describe(&e),
                        Ok(bytes) if status >= 500 || status == 429 || status == 408 => {
                            format!("answered {status}: {}", error_message(&bytes))
                        }
                        Ok(bytes) if !(200..300).contains(&status) => {
                            return Err(ProvisionError::Auth {
                                status,
                                message: error_message(&bytes),
                            })
                        }
                        Ok(bytes) => return self.session_from(token, &bytes, started),
                    }
                }
            };
            match backoff.failed() {
                Some(d) => {
                    debug!(why, delay = ?d, "keystone: retrying authentication");
                    tokio::time::sleep(d).await;
                }
                None => {
                    return Err(ProvisionError::Unavailable {
                        service: "identity",
                        attempts: backoff.tried(),
                        last: why,
                    })
                }
            }
        }
    }

    fn session_from(
        &self,
        token: Option<String>,
        bytes: &[u8],
        started: Instant,
    ) -> Result<Session> {
        let decode = |detail: String| ProvisionError::Decode {
            service: "identity",
            what: "POST /auth/tokens".into(),
            detail,
        };
        let token = token.ok_or_else(|| decode("no X-Subject-Token header".into()))?;
        let body: TokenBody = serde_json::from_slice(bytes).map_err(|e| decode(e.to_string()))?;
        let t = body.token;
        // Lifetime from Keystone's own two timestamps, so a skewed local clock does not matter.
        let lifetime = match (
            t.issued_at.as_deref().and_then(unix_seconds),
            t.expires_at.as_deref().and_then(unix_seconds),
        ) {
            (Some(i), Some(e)) if e > i => Duration::from_secs((e - i) as u64),
            _ => FALLBACK_LIFETIME,
        };
        let margin = RENEW_MARGIN.min(lifetime / 4);
        let n = self.authentications.fetch_add(1, Ordering::Relaxed) + 1;
        info!(
            project = t.project.as_ref().map(|p| p.id.as_str()),
            lifetime_secs = lifetime.as_secs(),
            services = t.catalog.len(),
            authentications = n,
            "keystone: new token"
        );
        Ok(Session {
            token: Secret::new(token),
            renew_at: started + lifetime - margin,
            catalog: t.catalog,
        })
    }
}

/// A domain by id when one is given, else by name.
fn domain(name: &str, id: Option<&str>) -> Value {
    match id.filter(|i| !i.is_empty()) {
        Some(id) => json!({ "id": id }),
        None => json!({ "name": name }),
    }
}

/// The body of `POST /v3/auth/tokens` for these credentials.
fn request_body(auth: &Auth) -> Value {
    match auth {
        Auth::Password {
            username,
            password,
            project_name,
            project_id,
            user_domain,
            user_domain_id,
            project_domain,
            project_domain_id,
        } => {
            let project = match project_id.as_deref().filter(|p| !p.is_empty()) {
                Some(id) => json!({ "id": id }),
                None => json!({
                    "name": project_name,
                    "domain": domain(project_domain, project_domain_id.as_deref())
                }),
            };
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": username,
                    "domain": domain(user_domain, user_domain_id.as_deref()),
                    "password": password.expose()}}},
                "scope": {"project": project}
            }})
        }
        // An application credential carries its own project scope; a scope here would be refused.
        Auth::ApplicationCredential { id, secret } => json!({"auth": {"identity": {
            "methods": ["application_credential"],
            "application_credential": {"id": id, "secret": secret.expose()}}}}),
        Auth::ApplicationCredentialByName {
            name,
            secret,
            username,
            user_domain,
            user_domain_id,
        } => json!({"auth": {"identity": {
            "methods": ["application_credential"],
            "application_credential": {"name": name, "secret": secret.expose(), "user": {
                "name": username, "domain": domain(user_domain, user_domain_id.as_deref())}}}}}),
    }
}

/// Seconds since the Unix epoch for an ISO 8601 / RFC 3339 timestamp as OpenStack writes them
/// (`2026-11-23T16:44:29.000000Z`, with or without fraction and zone; no zone means UTC).
pub(crate) fn unix_seconds(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    // split the zone off: Z, +hh:mm or -hh:mm
    let (clock, offset) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, z) = time.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (hh, mm) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
        (
            c,
            sign * (hh.parse::<i64>().ok()? * 3600 + mm.parse::<i64>().ok()? * 60),
        )
    } else {
        (time, 0)
    };
    let clock = clock.split('.').next()?;
    let mut c = clock.splitn(3, ':');
    let (hh, mm, ss): (i64, i64, i64) = (
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
        c.next().unwrap_or("0").parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_request_bodies() {
        let cases: Vec<(&str, Auth, Value)> = vec![
            (
                "password, names",
                Auth::Password {
                    username: "u".into(),
                    password: Secret::new("p"),
                    project_name: "proj".into(),
                    project_id: None,
                    user_domain: "Default".into(),
                    user_domain_id: None,
                    project_domain: "D2".into(),
                    project_domain_id: None,
                },
                json!({"auth": {
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": "u", "domain": {"name": "Default"}, "password": "p"}}},
                    "scope": {"project": {"name": "proj", "domain": {"name": "D2"}}}}}),
            ),
            (
                "password, ids win over names",
                Auth::Password {
                    username: "u".into(),
                    password: Secret::new("p"),
                    project_name: "proj".into(),
                    project_id: Some("pid".into()),
                    user_domain: "Default".into(),
                    user_domain_id: Some("default".into()),
                    project_domain: "D2".into(),
                    project_domain_id: Some("d2".into()),
                },
                json!({"auth": {
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": "u", "domain": {"id": "default"}, "password": "p"}}},
                    "scope": {"project": {"id": "pid"}}}}),
            ),
            (
                "application credential by name",
                Auth::ApplicationCredentialByName {
                    name: "xov".into(),
                    secret: Secret::new("s"),
                    username: "u".into(),
                    user_domain: "Default".into(),
                    user_domain_id: None,
                },
                json!({"auth": {"identity": {"methods": ["application_credential"],
                    "application_credential": {"name": "xov", "secret": "s",
                        "user": {"name": "u", "domain": {"name": "Default"}}}}}}),
            ),
        ];
        for (name, auth, want) in cases {
            assert_eq!(request_body(&auth), want, "{name}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_seconds("2026-11-23T16:44:29.000000Z"),
            Some(1_795_452_269)
        );
        assert_eq!(unix_seconds("2026-11-23T16:44:29"), Some(1_795_452_269));
        assert_eq!(
            unix_seconds("2026-11-23T18:44:29+02:00"),
            Some(1_795_452_269)
        );
        assert_eq!(unix_seconds("2000-02-29T12:00:00Z"), Some(951_825_600));
        assert_eq!(unix_seconds("yesterday"), None);
        assert_eq!(unix_seconds("2026-13-01T00:00:00Z"), None);
    }

    fn session(catalog: Value) -> Session {
        Session {
            token: Secret::new("t"),
            renew_at: Instant::now(),
            catalog: serde_json::from_value(catalog).unwrap(),
        }
    }

    #[test]
    fn catalog_lookup_by_type_interface_and_region() {
        let s = session(json!([
            {"type": "compute", "endpoints": [
                {"interface": "internal", "region_id": "R1", "url": "http://internal:8774/v2.1"},
                {"interface": "public", "region_id": "R2", "region": "R2", "url": "http://r2:8774/v2.1"},
                {"interface": "public", "region_id": "R1", "region": "R1", "url": "http://r1:8774/v2.1"}
            ]},
            {"type": "image", "endpoints": [{"interface": "public", "url": "http://glance:9292"}]}
        ]));
        assert_eq!(
            s.endpoint("compute", Interface::Public, Some("R1"))
                .unwrap(),
            "http://r1:8774/v2.1"
        );
        assert_eq!(
            s.endpoint("compute", Interface::Internal, None).unwrap(),
            "http://internal:8774/v2.1"
        );
        assert_eq!(
            s.endpoint("image", Interface::Public, None).unwrap(),
            "http://glance:9292"
        );
        let err = s
            .endpoint("image", Interface::Admin, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no image endpoint"), "{err}");
    }
}
