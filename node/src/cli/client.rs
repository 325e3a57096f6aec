//! The CLI side of the local API: finds the daemon through the data dir and sends the cookie.

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::store::datadir::DataDir;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("no xov node is running with data dir {datadir} (no API address or cookie there). Start one with `xov --datadir {datadir} node run`")]
    NotRunning { datadir: String },
    #[error("cannot reach the xov node at {addr}: {source}. Is it still running? Start it with `xov node run`")]
    Unreachable {
        addr: String,
        source: reqwest::Error,
    },
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the node: {0}")]
    Decode(String),
}

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// Connects through the data dir's API address file and cookie, or `api` when given explicitly.
    pub fn from_datadir(dd: &DataDir, api: Option<&str>) -> Result<Client, ClientError> {
        let not_running = || ClientError::NotRunning {
            datadir: dd.root().display().to_string(),
        };
        let addr = match api {
            Some(a) => a.to_string(),
            None => dd.read_api_addr().map_err(|_| not_running())?,
        };
        let token = dd.read_cookie().map_err(|_| not_running())?;
        Ok(Client {
            base: format!("http://{addr}"),
            token,
            http: reqwest::Client::new(),
        })
    }

    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: Option<&[(&str, String)]>,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(q) = query {
            req = req.query(q);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                addr: self.base.clone(),
                source,
            })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            return Err(ClientError::Api {
                status,
                code: v["error"].as_str().unwrap_or("unknown").to_string(),
                message: v["message"].as_str().unwrap_or(&text).to_string(),
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Decode(format!("{e}: {text}")))
    }

    /// The API's base URL, `http://HOST:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The token the daemon wrote to the cookie file.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Opens a long-lived response (the event stream) and hands it back unread.
    pub async fn open_stream(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                addr: self.base.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(ClientError::Api {
                status: resp.status(),
                code: "stream".into(),
                message: resp.text().await.unwrap_or_default(),
            });
        }
        Ok(resp)
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: Option<&[(&str, String)]>,
    ) -> Result<T, ClientError> {
        self.call::<(), T>(Method::GET, path, query, None).await
    }
}
