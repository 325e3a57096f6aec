//! Glance v2 image lookup: an image reference in the config or a launch request is a Glance id or name, and
//! only an `active` image counts. With several active images of one name (a provider uploading a newer
//! build under the same name), the newest wins.

use reqwest::Method;
use serde::Deserialize;

use crate::error::Result;
use crate::http::Service;

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Image {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub created_at: Option<String>,
    /// GiB the image needs as root disk.
    #[serde(default)]
    pub min_disk: Option<u64>,
    /// MiB of RAM the image needs.
    #[serde(default)]
    pub min_ram: Option<u64>,
    /// The CPU architecture it is built for (a Glance property; `architecture` in older clouds).
    #[serde(default)]
    pub hw_architecture: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
}

impl Image {
    /// Its architecture as Glance states it, if at all.
    pub fn arch_property(&self) -> Option<&str> {
        self.hw_architecture
            .as_deref()
            .or(self.architecture.as_deref())
            .filter(|a| !a.trim().is_empty())
    }
}

pub(crate) struct Glance {
    pub svc: Service,
}

/// Glance ids are UUIDs; anything else is looked up as a name.
fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        })
}

/// Percent-encodes a query value (image names may hold spaces and the like).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Glance {
    pub async fn by_id(&self, id: &str) -> Result<Option<Image>> {
        let reply = self
            .svc
            .call(Method::GET, &format!("/images/{id}"), None, &[])
            .await?;
        if reply.status == 404 {
            return Ok(None);
        }
        let img: Image = reply.expect_json()?;
        Ok(Some(img).filter(|i| i.status == "active"))
    }

    pub async fn by_name(&self, name: &str) -> Result<Option<Image>> {
        #[derive(Deserialize)]
        struct List {
            images: Vec<Image>,
        }
        let path = format!("/images?name={}&status=active&limit=100", encode(name));
        let list: List = self
            .svc
            .call(Method::GET, &path, None, &[])
            .await?
            .expect_json()?;
        Ok(list
            .images
            .into_iter()
            .filter(|i| i.status == "active" && i.name.as_deref() == Some(name))
            .max_by(|a, b| a.created_at.cmp(&b.created_at)))
    }

    /// An active image by id or by name.
    pub async fn resolve(&self, reference: &str) -> Result<Option<Image>> {
        if looks_like_uuid(reference) {
            if let Some(img) = self.by_id(reference).await? {
                return Ok(Some(img));
            }
        }
        self.by_name(reference).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_or_name() {
        assert!(looks_like_uuid("626d420f-cd5c-447a-882a-baa0c2fde334"));
        assert!(!looks_like_uuid("tiny-raw"));
        assert!(!looks_like_uuid("626d420f-cd5c-447a-882a-baa0c2fde33x"));
        assert_eq!(
            encode("Debian 12 (bookworm)"),
            "Debian%2012%20%28bookworm%29"
        );
    }
}
