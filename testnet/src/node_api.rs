//! An async client of one node's local API, for load scenarios that talk to many nodes at once (the CLI
//! would cost a process per request).

use std::time::Duration;

use serde_json::Value;

use crate::node::Daemon;

#[derive(Clone)]
pub struct NodeApi {
    base: String,
    token: String,
    client: reqwest::Client,
    /// The daemon's process id, for `/proc` readings.
    pub pid: u32,
    /// The API's TCP port, so its sockets can be left out of network byte counts.
    pub api_port: u16,
}

impl NodeApi {
    pub fn of(d: &Daemon, client: &reqwest::Client) -> NodeApi {
        NodeApi {
            base: format!("http://{}", d.api),
            token: d.cookie(),
            client: client.clone(),
            pid: d.pid(),
            api_port: d
                .api
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
        }
    }

    /// A client suited to many small requests to loopback APIs.
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build()
            .expect("HTTP client")
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, String> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.base))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("{}: {e}", self.base))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{}: {status} {body}", self.base))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `GET /v1/status`: offers in the book, connected peers and gossip counters.
    pub async fn status(&self) -> Result<NodeStatus, String> {
        let v = self.get("/v1/status").await?;
        let g = &v["network"]["gossip"];
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        Ok(NodeStatus {
            offers: n(&v["offers"]),
            peers: n(&v["network"]["connected_peers"]),
            accepted: n(&g["accepted"]),
            rejected: n(&g["rejected"]),
            ignored: n(&g["ignored"]),
            rate_limited: n(&g["rate_limited"]),
            synced: n(&g["synced"]),
        })
    }
}

/// The parts of `/v1/status` the load scenarios watch.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeStatus {
    pub offers: u64,
    pub peers: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub ignored: u64,
    pub rate_limited: u64,
    pub synced: u64,
}
