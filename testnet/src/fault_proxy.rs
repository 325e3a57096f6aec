//! A fault-injecting HTTP proxy in front of the real Nova, for the provisioner's and the lease tests: an axum
//! server on 127.0.0.1:0 that forwards every request unchanged, except those a rule of the plan picks, which
//! it delays, answers with an error without forwarding, forwards and then throws the answer away (502,
//! dropped connection, too late), or forwards and makes a finished server look like it is still building.
//! It records what it saw, so a test can count how many creates really reached Nova.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

/// What to do with a request a rule picks.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward unchanged.
    Pass,
    /// Wait, then forward.
    Delay(Duration),
    /// Answer this status without forwarding: Nova never sees the request.
    Reply(u16),
    /// Forward (Nova carries it out), then answer this status instead of Nova's answer.
    ForwardThenReply(u16),
    /// Close the connection without forwarding and without answering.
    Drop,
    /// Forward (Nova carries it out), then close the connection without answering.
    ForwardThenDrop,
    /// Forward, then hold Nova's answer back this long (past the client's timeout).
    ForwardThenDelay(Duration),
    /// Forward, and show an ACTIVE server as BUILD/spawning (a slow build).
    PretendBuilding,
}

/// Which request paths a rule applies to.
#[derive(Debug, Clone)]
pub enum Path {
    Any,
    Exact(&'static str),
    /// `/v2.1/servers/<uuid>` (one server, not its actions).
    ServerItem,
    /// `/v2.1/servers/<uuid>/action`.
    ServerAction,
}

impl Path {
    fn matches(&self, path: &str) -> bool {
        let item = |p: &str| {
            p.strip_prefix("/v2.1/servers/")
                .is_some_and(|rest| rest.len() == 36 && !rest.contains('/'))
        };
        match self {
            Path::Any => true,
            Path::Exact(p) => path == *p,
            Path::ServerItem => item(path),
            Path::ServerAction => path.strip_suffix("/action").is_some_and(item),
        }
    }
}

struct Rule {
    method: Option<Method>,
    path: Path,
    times: usize,
    fault: Fault,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub fault: String,
    /// Whether Nova got the request.
    pub forwarded: bool,
}

struct Inner {
    target: String,
    client: reqwest::Client,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
}

impl Inner {
    /// The first rule that matches and has uses left (and uses it up), or `Pass`.
    fn take(&self, method: &Method, path: &str) -> Fault {
        let mut rules = self.rules.lock().unwrap();
        for r in rules.iter_mut() {
            if r.times > 0 && r.method.as_ref().is_none_or(|m| m == method) && r.path.matches(path)
            {
                r.times -= 1;
                return r.fault.clone();
            }
        }
        Fault::Pass
    }
}

pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port and forwards to `target_origin` (e.g. `http://127.0.0.1:8774`).
    pub async fn start(target_origin: &str) -> FaultProxy {
        let inner = Arc::new(Inner {
            target: target_origin.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FaultProxy {
            origin,
            inner,
            task,
        }
    }

    /// The compute endpoint to configure: the proxy's `/v2.1`.
    pub fn compute_url(&self) -> String {
        format!("{}/v2.1", self.origin)
    }

    /// Appends a rule: the next `times` requests with this method (any if `None`) and path get `fault`.
    /// Rules are tried in the order they were added.
    pub fn rule(&self, method: Option<Method>, path: Path, times: usize, fault: Fault) -> &Self {
        self.inner.rules.lock().unwrap().push(Rule {
            method,
            path,
            times,
            fault,
        });
        self
    }

    /// Removes every rule left: from now on everything passes.
    pub fn heal(&self) {
        self.inner.rules.lock().unwrap().clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// `(seen, forwarded)` counts of requests with this method and exact path.
    pub fn count(&self, method: &Method, path: &str) -> (usize, usize) {
        let seen = self.seen();
        let matching = seen.iter().filter(|s| s.method == method && s.path == path);
        let all = matching.clone().count();
        (all, matching.filter(|s| s.forwarded).count())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Ends the connection without an answer: unwinding out of the handler ends the connection's task, so
/// hyper drops the socket. `resume_unwind` does not run the panic hook, so nothing is printed.
fn drop_connection() -> ! {
    std::panic::resume_unwind(Box::new("fault proxy: connection dropped on purpose"))
}

fn error_reply(code: u16) -> Response {
    let body =
        json!({"computeFault": {"code": code, "message": "injected by the test's fault proxy"}});
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("Content-Type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

struct Forwarded {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Forwarded {
    fn into_response(self) -> Response {
        let mut b = Response::builder().status(self.status);
        for (k, v) in &self.headers {
            if !matches!(
                k.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            ) {
                b = b.header(k, v);
            }
        }
        b.body(Body::from(self.body)).unwrap()
    }
}

async fn forward(
    inner: &Inner,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Forwarded, String> {
    let mut req = inner
        .client
        .request(method.clone(), format!("{}{path_and_query}", inner.target))
        .body(body);
    for (k, v) in headers {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            req = req.header(k, v);
        }
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    Ok(Forwarded {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.map_err(|e| e.to_string())?,
    })
}

/// An ACTIVE server shown as still building.
fn pretend_building(body: &Bytes) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    if let Some(s) = v.get_mut("server") {
        if s["status"] == "ACTIVE" {
            s["status"] = json!("BUILD");
            s["OS-EXT-STS:task_state"] = json!("spawning");
            s["OS-EXT-STS:vm_state"] = json!("building");
        }
    }
    Bytes::from(v.to_string())
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let fault = inner.take(&parts.method, &path);
    let forwarded = !matches!(fault, Fault::Reply(_) | Fault::Drop);
    inner.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        fault: format!("{fault:?}"),
        forwarded,
    });
    // Forwarding runs in its own task: like a real server, Nova's side carries on when the client hangs
    // up (hyper drops this handler when the client's connection closes).
    let go = |delay: Duration| {
        let (inner, method, headers, pq, body) = (
            inner.clone(),
            parts.method.clone(),
            parts.headers.clone(),
            pq.clone(),
            body.clone(),
        );
        async move {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                forward(&inner, &method, &pq, &headers, body).await
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        }
    };
    let relay = |r: Result<Forwarded, String>| match r {
        Ok(f) => f.into_response(),
        Err(_) => error_reply(502),
    };
    match fault {
        Fault::Pass => relay(go(Duration::ZERO).await),
        Fault::Delay(d) => relay(go(d).await),
        Fault::Reply(code) => error_reply(code),
        Fault::ForwardThenReply(code) => {
            let _ = go(Duration::ZERO).await;
            error_reply(code)
        }
        Fault::Drop => drop_connection(),
        Fault::ForwardThenDrop => {
            let _ = go(Duration::ZERO).await;
            drop_connection()
        }
        Fault::ForwardThenDelay(d) => {
            let r = go(Duration::ZERO).await;
            tokio::time::sleep(d).await;
            relay(r)
        }
        Fault::PretendBuilding => relay(go(Duration::ZERO).await.map(|mut f| {
            f.body = pretend_building(&f.body);
            f
        })),
    }
}
