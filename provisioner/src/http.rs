//! The small typed HTTP layer under Nova and Glance: endpoint from the catalog (or an override), the token
//! from the Keystone cache, one re-authentication when a service refuses the token, and retries with
//! backoff for idempotent calls. Calls that are not idempotent (booting a server) use [`Service::once`] and
//! decide themselves what an unanswered request means.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{debug, warn};

use crate::config::{check_url, Interface, OpenStackConfig, RetryPolicy};
use crate::error::{ProvisionError, Result};
use crate::keystone::Keystone;
use crate::retry::Backoff;

/// Builds the one HTTP client every service shares (connection pool, per-request timeout, TLS with the
/// system's roots plus the config's CA file). Public for callers that probe the cloud's endpoints the way
/// the provisioner would reach them (the node's doctor).
pub fn client(cfg: &OpenStackConfig) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(cfg.request_timeout)
        .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("xov-provisioner/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &cfg.cacert {
        let pem = std::fs::read(path).map_err(|e| ProvisionError::CaFile {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        for der in ca_certificates(&pem).map_err(|detail| ProvisionError::CaFile {
            path: path.clone(),
            detail,
        })? {
            let cert =
                reqwest::Certificate::from_der(&der).map_err(|e| ProvisionError::CaFile {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            b = b.add_root_certificate(cert);
        }
    }
    if cfg.insecure {
        warn!(
            auth_url = cfg.auth_url,
            "TLS certificates are not checked (verify: false / insecure): anyone on the path can read the \
             cloud's credentials"
        );
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| ProvisionError::Config(format!("cannot build the HTTP client: {e}")))
}

/// The DER certificates of a PEM bundle, each checked to be usable as a trust anchor. Says what is wrong
/// (not PEM, no certificate, a certificate that cannot be parsed) otherwise.
pub(crate) fn ca_certificates(pem: &[u8]) -> std::result::Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut out = Vec::new();
    for (i, item) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let der = item.map_err(|e| format!("PEM block {} is unreadable: {e}", i + 1))?;
        rustls::RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| format!("certificate {} is not a usable CA certificate: {e}", i + 1))?;
        out.push(der.to_vec());
    }
    if out.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(out)
}

/// The certificate error under a failed request (unknown issuer, wrong name, expired), if that is why it
/// failed. rustls' error sits inside `io::Error`s, whose `source()` skips the error they wrap, hence the
/// `get_ref`.
pub(crate) fn certificate_error(e: &reqwest::Error) -> Option<String> {
    fn find(err: &(dyn std::error::Error + 'static), depth: usize) -> Option<String> {
        if depth > 16 {
            return None;
        }
        if let Some(rustls::Error::InvalidCertificate(c)) = err.downcast_ref::<rustls::Error>() {
            return Some(format!("invalid peer certificate: {c:?}"));
        }
        let wrapped = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| find(inner, depth + 1));
        wrapped.or_else(|| err.source().and_then(|s| find(s, depth + 1)))
    }
    find(e, 0)
}

/// Describes a transport failure without the noise (and without anything secret: URLs carry no tokens).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "answer cut off"
    } else {
        "request failed"
    };
    let mut msg = format!("{kind}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// An answer with a non-retryable status (2xx, 3xx or 4xx): the caller decides what it means.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub service: &'static str,
    pub method: Method,
    pub path: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| ProvisionError::Decode {
            service: self.service,
            what: format!("{} {}", self.method, self.path),
            detail: e.to_string(),
        })
    }

    /// OpenStack's error text (`{"badRequest": {"message": ...}}`, `{"error": {"message": ...}}`) or the
    /// start of the body.
    pub fn message(&self) -> String {
        error_message(&self.body)
    }

    /// The error for an answer the operation did not expect.
    pub fn unexpected(&self) -> ProvisionError {
        ProvisionError::Api {
            service: self.service,
            method: self.method.to_string(),
            path: self.path.clone(),
            status: self.status,
            message: self.message(),
        }
    }

    /// The decoded body if the status is 2xx, otherwise [`Reply::unexpected`].
    pub fn expect_json<T: DeserializeOwned>(&self) -> Result<T> {
        if self.ok() {
            self.json()
        } else {
            Err(self.unexpected())
        }
    }
}

pub(crate) fn error_message(body: &[u8]) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        for v in map.values() {
            if let Some(m) = v.get("message").and_then(Value::as_str) {
                return m.to_string();
            }
        }
        if let Some(m) = map.get("message").and_then(Value::as_str) {
            return m.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let cut: String = text.chars().take(300).collect();
    if cut.is_empty() {
        "(empty body)".into()
    } else {
        cut
    }
}

/// What one try of a request came to, when it is not a usable [`Reply`].
#[derive(Debug)]
pub(crate) enum Failure {
    /// Nothing usable came back (connection refused or dropped, timeout, 5xx, 429): maybe the request was
    /// carried out, maybe not. Idempotent calls simply try again.
    Retryable {
        why: String,
        /// The service may still be working on it (we timed out or lost the connection after sending, or a
        /// gateway gave up waiting for it): its effect can show up a while later.
        in_flight: bool,
    },
    /// No point in trying again (credentials refused, configuration error, Keystone given up on).
    Fatal(ProvisionError),
}

/// One OpenStack service (compute or image) as seen through the Keystone session.
pub(crate) struct Service {
    /// Catalog type: "compute" or "image".
    pub kind: &'static str,
    /// Appended to the catalog URL when it lacks it (Glance's catalog entry is unversioned).
    version_suffix: Option<&'static str>,
    http: reqwest::Client,
    keystone: Arc<Keystone>,
    endpoint_override: Option<String>,
    interface: Interface,
    region: Option<String>,
    pub policy: RetryPolicy,
}

impl Service {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: &'static str,
        version_suffix: Option<&'static str>,
        http: reqwest::Client,
        keystone: Arc<Keystone>,
        endpoint_override: Option<String>,
        interface: Interface,
        region: Option<String>,
        policy: RetryPolicy,
    ) -> Service {
        Service {
            kind,
            version_suffix,
            http,
            keystone,
            endpoint_override,
            interface,
            region,
            policy,
        }
    }

    fn endpoint_from(&self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        match self.version_suffix {
            Some(v) if !base.ends_with(v) => format!("{base}{v}"),
            _ => base.to_string(),
        }
    }

    /// One try: `path` (with its query) is appended to the endpoint. A 401 makes the token cache renew the
    /// token and the request go once more; a second 401 is fatal.
    pub async fn once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&'static str, String)],
    ) -> Result<Reply, Failure> {
        let mut reauthenticated = false;
        loop {
            let session = self.keystone.session().await.map_err(Failure::Fatal)?;
            let base = match &self.endpoint_override {
                Some(u) => self.endpoint_from(u),
                None => self.endpoint_from(
                    &session
                        .endpoint(self.kind, self.interface, self.region.as_deref())
                        .map_err(Failure::Fatal)?,
                ),
            };
            check_url(self.kind, &base).map_err(Failure::Fatal)?;
            let url = format!("{base}{path}");
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("X-Auth-Token", session.token())
                .header("Accept", "application/json");
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            debug!(service = self.kind, %method, path, "request");
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if certificate_error(&e).is_some() => {
                    return Err(Failure::Fatal(ProvisionError::Tls {
                        service: self.kind,
                        url: base,
                        detail: certificate_error(&e).unwrap_or_default(),
                    }))
                }
                Err(e) => {
                    return Err(Failure::Retryable {
                        why: describe(&e),
                        in_flight: !e.is_connect(),
                    })
                }
            };
            let status = resp.status().as_u16();
            let bytes = match resp.bytes().await {
                Ok(b) => b.to_vec(),
                Err(e) => {
                    return Err(Failure::Retryable {
                        why: describe(&e),
                        in_flight: true,
                    })
                }
            };
            if status == 401 {
                if reauthenticated {
                    return Err(Failure::Fatal(ProvisionError::Auth {
                        status,
                        message: format!("{} refused a fresh token", self.kind),
                    }));
                }
                debug!(service = self.kind, "token refused, renewing it");
                self.keystone.invalidate(&session).await;
                reauthenticated = true;
                continue;
            }
            if status >= 500 || status == 429 || status == 408 {
                return Err(Failure::Retryable {
                    why: format!(
                        "{method} {path} answered {status}: {}",
                        error_message(&bytes)
                    ),
                    // 503, 429 and 408 say the request was not taken on; a 500 may have died half-way and a
                    // gateway's 502/504 may have left it running behind the gateway
                    in_flight: !matches!(status, 503 | 429 | 408),
                });
            }
            return Ok(Reply {
                status,
                body: bytes,
                service: self.kind,
                method,
                path: path.to_string(),
            });
        }
    }

    /// An idempotent call (GET, DELETE, an action whose repetition is harmless), retried with backoff.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&'static str, String)],
    ) -> Result<Reply> {
        let mut backoff = Backoff::new(&self.policy);
        loop {
            match self.once(method.clone(), path, body, headers).await {
                Ok(r) => return Ok(r),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retryable { why, .. }) => match backoff.failed() {
                    Some(d) => {
                        debug!(service = self.kind, %method, path, why, delay = ?d, "retrying");
                        tokio::time::sleep(d).await;
                    }
                    None => {
                        return Err(ProvisionError::Unavailable {
                            service: self.kind,
                            attempts: backoff.tried(),
                            last: why,
                        })
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openstack_error_bodies() {
        assert_eq!(
            error_message(br#"{"badRequest": {"code": 400, "message": "Invalid flavorRef"}}"#),
            "Invalid flavorRef"
        );
        assert_eq!(
            error_message(
                br#"{"error": {"code": 401, "title": "Unauthorized", "message": "nope"}}"#
            ),
            "nope"
        );
        assert_eq!(error_message(b"  <html>oops</html> "), "<html>oops</html>");
        assert_eq!(error_message(b""), "(empty body)");
    }
}
