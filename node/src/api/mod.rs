//! The local HTTP JSON API. Binds loopback only and demands the cookie token on every request; the CLI is
//! its main client. Every failure is a JSON `{ "error": code, "message": text }` with a 4xx/5xx status.

pub mod body;
pub mod form;
pub mod chain_probe;
pub mod dashboard;
pub mod doctor;
pub mod events;
pub mod leases;
pub mod metrics;
pub mod offer_probe;
pub mod state;
pub mod trust;
pub mod wallet;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use xov_protocol::{Arch, Demand, GpuWanted, Offer, OfferQuery, Signed};

use crate::market::{Market, MarketError, OfferSpec};
pub use body::ApiJson;

pub use crate::clock::unix_now;
pub use state::AppState;

/// An API error: HTTP status, a stable machine-readable code, and a sentence for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub(crate) status: StatusCode,
    pub error: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

impl From<MarketError> for ApiError {
    fn from(e: MarketError) -> Self {
        let (status, code) = match &e {
            MarketError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_offer"),
            MarketError::UnknownPool { .. } => (StatusCode::NOT_FOUND, "unknown_pool"),
            MarketError::NoSuchOffer(_) => (StatusCode::NOT_FOUND, "no_such_offer"),
            MarketError::TooManyOffers { .. } => (StatusCode::CONFLICT, "too_many_offers"),
            MarketError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
            MarketError::NotJoined(_) => (StatusCode::CONFLICT, "not_joined"),
            MarketError::AmbiguousPool(_) => (StatusCode::CONFLICT, "ambiguous_pool"),
            MarketError::Replayed { .. } => (StatusCode::CONFLICT, "replayed"),
            MarketError::OtherChain { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "other_chain"),
            MarketError::CharterTableFull { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "charter_table_full")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text())
    }
}

impl From<crate::network::NetworkError> for ApiError {
    fn from(e: crate::network::NetworkError) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "network", e.to_string())
    }
}

fn poisoned() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "node state lock poisoned",
    )
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from response timing.
pub(crate) fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_cookie(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(String::from);
    // The dashboard's cookie (see dashboard.rs). A cross-site page cannot make the browser send it
    // (SameSite=Strict); a request that changes something must also come from the dashboard's own origin.
    let from_cookie = if bearer.is_none() {
        crate::api::dashboard::cookie_token(req.headers())
    } else {
        None
    };
    if from_cookie.is_some() && req.method() != axum::http::Method::GET {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        // The browser names the page that sent it; a request without that proof is refused as well (the
        // cookie alone does not show where the request came from).
        let same = match (origin, host) {
            (Some(o), Some(h)) => o == format!("http://{h}"),
            _ => false,
        };
        if !same {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "requests that change something must come from the dashboard's own page (with its Origin header)",
            )
            .into_response();
        }
    }
    let given = bearer.or(from_cookie);
    match given.as_deref() {
        Some(t) if same_token(t.trim().as_bytes(), st.token.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_cookie",
            "the API token does not match; the daemon writes a fresh one to <datadir>/.cookie at each start",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_cookie",
            "send `Authorization: Bearer <token>` with the token from <datadir>/.cookie (the xov CLI does this)",
        )
        .into_response(),
    }
}

/// Node status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// This node's id (its ed25519 public key, base58).
    pub node_id: String,
    pub version: String,
    pub datadir: String,
    pub started_at: u64,
    pub uptime_secs: u64,
    pub offers: usize,
    pub pools: usize,
    /// The bitcoin network this node trades on (`[wallet] network`): its name, or its genesis block hash.
    pub chain: String,
    pub network: crate::network::NetworkStatus,
}

#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = Status), (status = 401, body = ApiError)))]
async fn status(State(st): State<AppState>) -> Result<Json<Status>, ApiError> {
    let network = st.net.status().await?;
    let m = st.market.read().map_err(|_| poisoned())?;
    let now = unix_now();
    Ok(Json(Status {
        network,
        node_id: m.node_id().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        datadir: st.datadir.clone(),
        started_at: st.started_at,
        uptime_secs: now.saturating_sub(st.started_at),
        offers: m.book().len(),
        pools: m.pools().count(),
        chain: m.chain().to_string(),
    }))
}

/// One offer as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OfferView {
    /// Message id (hex SHA-256 of the signed offer).
    pub id: String,
    pub provider: String,
    pub pool: String,
    /// The bitcoin network the offer is paid on (its pool's).
    #[serde(default)]
    pub chain: String,
    pub offer_id: u64,
    /// `PROVIDER:OFFER_ID`: what `xov order --offer` and `POST /v1/orders` `offer` take to order this offer
    /// and no other (a string: offer ids exceed the integers JavaScript holds exactly).
    #[serde(default)]
    pub key: String,
    pub sequence: u64,
    pub created_at: u64,
    pub expires_at: u64,
    pub vcpus: u32,
    pub ram_mib: u32,
    pub disk_gib: u32,
    pub gpu_model: Option<String>,
    pub gpu_count: u16,
    pub arch: String,
    pub images: Vec<String>,
    pub price_sats_per_hour: u64,
    pub min_lease_secs: u32,
    pub max_lease_secs: u32,
    pub country: String,
    pub region: String,
    pub capacity: u32,
    /// TCP ports besides SSH a buyer may ask to have opened (`xov order --port`).
    #[serde(default)]
    pub extra_ports: Vec<u16>,
    /// The canonical signed bytes, hex, for anyone who wants to verify the provider's signature.
    pub signed_hex: String,
    /// This node's own offer kept out of gossip (`provider.advertise = false`): shown only to matching bids.
    #[serde(default)]
    pub unlisted: bool,
}

impl From<&Signed<Offer>> for OfferView {
    fn from(s: &Signed<Offer>) -> Self {
        let o = s.body();
        OfferView {
            id: s.id().to_string(),
            provider: o.provider.to_string(),
            pool: o.pool.to_string(),
            chain: o.chain.to_string(),
            offer_id: o.offer_id,
            key: format!("{}:{}", o.provider, o.offer_id),
            sequence: o.sequence,
            created_at: o.created_at,
            expires_at: o.expires_at,
            vcpus: o.instance.vcpus,
            ram_mib: o.instance.ram_mib,
            disk_gib: o.instance.disk_gib,
            gpu_model: o.instance.gpu.as_ref().map(|g| g.model.clone()),
            gpu_count: o.instance.gpu.as_ref().map_or(0, |g| g.count),
            arch: o.instance.arch.as_str().to_string(),
            images: o.images.clone(),
            price_sats_per_hour: o.price_sats_per_hour,
            min_lease_secs: o.min_lease_secs,
            max_lease_secs: o.max_lease_secs,
            country: o.location.country.clone(),
            region: o.location.region.clone(),
            capacity: o.capacity,
            extra_ports: o.extra_ports.clone(),
            signed_hex: hex::encode(s.to_bytes()),
            unlisted: false,
        }
    }
}

/// Filters for `GET /v1/offers`. Every filter is optional.
#[derive(Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OfferFilter {
    /// Pool name or id.
    pub pool: Option<String>,
    pub min_vcpus: Option<u32>,
    pub min_ram_mib: Option<u32>,
    pub min_disk_gib: Option<u32>,
    /// `any` (must have a GPU), `none` (must not), or a model name such as `A100`.
    pub gpu: Option<String>,
    pub image: Option<String>,
    pub max_price: Option<u64>,
    /// ISO country code.
    pub country: Option<String>,
    pub region: Option<String>,
    /// x86_64, aarch64 or riscv64.
    pub arch: Option<String>,
    /// TCP ports the offer must let a buyer open, comma-separated (`80,443`).
    pub ports: Option<String>,
    /// Only this node's own offers.
    pub mine: Option<bool>,
    /// At most this many offers (default 100; 0 for all).
    pub limit: Option<u32>,
}

impl OfferFilter {
    fn to_query(&self, m: &Market) -> Result<OfferQuery, ApiError> {
        let pool = match &self.pool {
            Some(p) => Some(m.resolve_pool(Some(p))?),
            None => None,
        };
        let gpu = match self.gpu.as_deref() {
            None => GpuWanted::DontCare,
            Some("none") => GpuWanted::None,
            Some("any") => GpuWanted::Some {
                model: None,
                min_count: 1,
            },
            Some(model) => GpuWanted::Some {
                model: Some(model.to_string()),
                min_count: 1,
            },
        };
        let arch = match &self.arch {
            Some(a) => Some(
                a.parse::<Arch>()
                    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e))?,
            ),
            None => None,
        };
        let ports_text = self.ports.as_deref().unwrap_or("");
        if !form::is_port_list(ports_text) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("ports: '{ports_text}' is not a list of TCP ports (1 to 65535); give them comma-separated, e.g. 80,443"),
            ));
        }
        let ports: Vec<u16> = ports_text
            .split(',')
            .filter_map(|p| p.parse().ok())
            .collect();
        let ports = xov_protocol::offer::sorted_ports(&ports);
        Ok(OfferQuery {
            pool,
            demand: Demand {
                min_vcpus: self.min_vcpus.unwrap_or(0),
                min_ram_mib: self.min_ram_mib.unwrap_or(0),
                min_disk_gib: self.min_disk_gib.unwrap_or(0),
                gpu,
                image: self.image.clone(),
                arch,
                country: self.country.clone(),
                region: self.region.clone(),
                max_price_sats_per_hour: self.max_price,
                ports,
            },
            limit: self.limit.map_or(100, |l| l as usize),
        })
    }
}

#[utoipa::path(get, path = "/v1/offers", params(OfferFilter),
    responses((status = 200, body = [OfferView]), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 404, body = ApiError, description = "no such pool")))]
async fn list_offers(
    State(st): State<AppState>,
    filter: Result<Query<OfferFilter>, QueryRejection>,
) -> Result<Json<Vec<OfferView>>, ApiError> {
    let Query(filter) = filter?;
    let m = st.market.read().map_err(|_| poisoned())?;
    let mut q = filter.to_query(&m)?;
    let now = unix_now();
    let me = m.node_id();
    let limit = std::mem::take(&mut q.limit);
    let mine = filter.mine.unwrap_or(false);
    let mut views: Vec<OfferView> = m
        .query(&q, now)
        .into_iter()
        .filter(|o| !mine || o.body().provider == me)
        .map(OfferView::from)
        .collect();
    if mine {
        // Unlisted offers are this node's own too: an operator sees everything it can sell.
        views.extend(
            m.unlisted_offers(now)
                .iter()
                .filter(|o| q.pool.is_none_or(|p| o.body().pool == p) && q.demand.matches(o.body()))
                .map(|o| OfferView {
                    unlisted: true,
                    ..OfferView::from(o)
                }),
        );
    }
    views.truncate(if limit == 0 { usize::MAX } else { limit });
    Ok(Json(views))
}

/// What the document says of an offer's fields and the protocol does not check (it takes any UTF-8 label):
/// 400 naming the field.
fn check_offer_form(spec: &OfferSpec) -> Result<(), ApiError> {
    let bad = |field: &str, want: &str| {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_offer",
            format!("{field}: {want}"),
        ))
    };
    if let Some(i) = spec.images.iter().position(|i| !form::is_label(i)) {
        return bad(&format!("images[{i}]"), "1 to 64 printable ASCII characters, e.g. debian-12");
    }
    if spec.images.len() > xov_protocol::offer::MAX_IMAGES {
        return bad("images", "at most 32 images per offer");
    }
    if spec.gpu_model.as_deref().is_some_and(|m| !form::is_label(m)) {
        return bad("gpu_model", "1 to 64 printable ASCII characters, e.g. A100");
    }
    if !form::is_country(&spec.country) {
        return bad("country", "an ISO 3166-1 alpha-2 code in upper case, e.g. DE");
    }
    if !form::is_region(&spec.region) {
        return bad("region", "at most 64 printable ASCII characters");
    }
    if spec.extra_ports.len() > xov_protocol::offer::MAX_EXTRA_PORTS {
        return bad("extra_ports", "at most 15 ports besides SSH");
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/offers", request_body = OfferSpec,
    responses((status = 201, body = OfferView), (status = 400, body = ApiError),
        (status = 404, body = ApiError, description = "no such pool"),
        (status = 409, body = ApiError, description = "this node's offers come from its cloud, or it has as many offers in the pool as the pool allows"),
        (status = 422, body = ApiError, description = "the offer breaks its pool's rules (ttl bounds, who may publish) or a rule between fields (max_lease_secs below min_lease_secs)")))]
async fn publish_offer(
    State(st): State<AppState>,
    ApiJson(spec): ApiJson<OfferSpec>,
) -> Result<(StatusCode, Json<OfferView>), ApiError> {
    check_offer_form(&spec)?;
    // A provider attached to a cloud sells what its inventory maps to flavors; an offer typed by hand has
    // no flavor behind it and would fail only after the buyer paid.
    let pc = &st.config.provider;
    if pc.enabled && pc.openstack.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "offers_from_inventory",
            "this node's offers come from its cloud: add the flavor to [provider.inventory] (with its images and price; \
             a GPU flavor's model from gpu_names or the entry's gpu = { model, count }) and the node publishes it",
        ));
    }
    let signed = {
        let mut m = st.market.write().map_err(|_| poisoned())?;
        m.publish(&spec, unix_now())?
    };
    let pool = signed.body().pool;
    st.net.join(pool).await?;
    st.net.publish(&pool, &signed).await?;
    Ok((StatusCode::CREATED, Json(OfferView::from(&signed))))
}

/// Result of a withdrawal.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Withdrawn {
    pub offer_id: u64,
    pub sequence: u64,
}

#[utoipa::path(delete, path = "/v1/offers/{offer_id}", params(("offer_id" = u64, Path, description = "id of one of this node's offers")),
    responses((status = 200, body = Withdrawn), (status = 404, body = ApiError)))]
async fn withdraw_offer(
    State(st): State<AppState>,
    offer_id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Withdrawn>, ApiError> {
    let Path(offer_id) =
        offer_id.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text()))?;
    let w = {
        let mut m = st.market.write().map_err(|_| poisoned())?;
        m.withdraw_own(offer_id, unix_now())?
    };
    st.net.publish(&w.body().pool, &w).await?;
    Ok(Json(Withdrawn {
        offer_id,
        sequence: w.body().sequence,
    }))
}

/// A pool this node knows.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PoolView {
    pub id: String,
    pub name: String,
    pub founder: String,
    pub created_at: u64,
    /// The bitcoin network the pool's leases are paid on.
    pub chain: String,
    /// Who may publish: `anyone` or an allow-list of node ids.
    pub publish: Vec<String>,
    pub min_price_step_sats: u64,
    pub min_ttl_secs: u32,
    pub max_ttl_secs: u32,
    pub max_offers_per_provider: u32,
    /// Live offers in this node's book.
    pub offers: usize,
    /// Whether this node takes part in the pool.
    pub joined: bool,
    /// Peers seen subscribed to the pool (this node not counted).
    pub members_seen: usize,
}

#[utoipa::path(get, path = "/v1/pools", responses((status = 200, body = [PoolView])))]
async fn list_pools(State(st): State<AppState>) -> Result<Json<Vec<PoolView>>, ApiError> {
    let members = st.net.members().await?;
    let m = st.market.read().map_err(|_| poisoned())?;
    Ok(Json(
        m.pools().map(|c| pool_view(&m, c, &members)).collect(),
    ))
}

fn pool_view(
    m: &Market,
    c: &Signed<xov_protocol::PoolCharter>,
    members: &std::collections::HashMap<xov_protocol::PoolId, usize>,
) -> PoolView {
    let b = c.body();
    let id = b.pool_id();
    PoolView {
        joined: m.joined().contains(&id),
        members_seen: members.get(&id).copied().unwrap_or(0),
        id: id.to_string(),
        name: b.name.clone(),
        founder: b.founder.to_string(),
        created_at: b.created_at,
        chain: b.chain.to_string(),
        publish: match &b.rules.publish {
            xov_protocol::PublishPolicy::Anyone => vec!["anyone".into()],
            xov_protocol::PublishPolicy::AllowList(ids) => {
                ids.iter().map(|i| i.to_string()).collect()
            }
        },
        min_price_step_sats: b.rules.min_price_step_sats,
        min_ttl_secs: b.rules.min_ttl_secs,
        max_ttl_secs: b.rules.max_ttl_secs,
        max_offers_per_provider: b.rules.max_offers_per_provider,
        offers: m.book().iter_pool(&id).count(),
    }
}

/// A new pool's name and rules. Unset rules take the defaults of the public pool.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePool {
    #[schema(example = "gpu-eu")]
    pub name: String,
    /// Node ids allowed to publish; anyone when empty.
    #[serde(default)]
    #[schema(max_items = 256)]
    pub publishers: Vec<String>,
    #[schema(minimum = 1)]
    pub min_price_step_sats: Option<u64>,
    #[schema(minimum = 1)]
    pub min_ttl_secs: Option<u32>,
    /// Not below `min_ttl_secs` (default a day).
    #[schema(minimum = 1)]
    pub max_ttl_secs: Option<u32>,
    #[schema(minimum = 1)]
    pub max_offers_per_provider: Option<u32>,
}

#[utoipa::path(post, path = "/v1/pools", request_body = CreatePool,
    responses((status = 201, body = PoolView), (status = 400, body = ApiError), (status = 409, body = ApiError, description = "a pool of that name exists already"),
        (status = 422, body = ApiError, description = "a publisher of a node id's form that is not an ed25519 key, or max_ttl_secs below min_ttl_secs"),
        (status = 503, body = ApiError, description = "this node holds as many pools as it keeps")))]
async fn create_pool(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<CreatePool>,
) -> Result<(StatusCode, Json<PoolView>), ApiError> {
    let d = xov_protocol::PoolRules::default();
    let bad = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_pool", msg);
    if !form::is_pool_name(&req.name) {
        return Err(bad(
            "name: 1 to 64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    if req.publishers.len() > xov_protocol::pool::MAX_PUBLISHERS {
        return Err(bad("publishers: at most 256".into()));
    }
    let zero = [
        ("min_price_step_sats", req.min_price_step_sats == Some(0)),
        ("min_ttl_secs", req.min_ttl_secs == Some(0)),
        ("max_ttl_secs", req.max_ttl_secs == Some(0)),
        ("max_offers_per_provider", req.max_offers_per_provider == Some(0)),
    ];
    if let Some((field, _)) = zero.iter().find(|(_, z)| *z) {
        return Err(bad(format!("{field}: at least 1")));
    }
    let mut publishers = Vec::new();
    for p in &req.publishers {
        publishers.push(p.parse::<xov_protocol::NodeId>().map_err(|e| {
            let status = if form::is_node_id(p) {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, "bad_publisher", format!("publisher '{p}': {e}"))
        })?);
    }
    let rules = xov_protocol::PoolRules {
        publish: if publishers.is_empty() {
            xov_protocol::PublishPolicy::Anyone
        } else {
            xov_protocol::PublishPolicy::AllowList(publishers)
        },
        min_price_step_sats: req.min_price_step_sats.unwrap_or(d.min_price_step_sats),
        min_ttl_secs: req.min_ttl_secs.unwrap_or(d.min_ttl_secs),
        max_ttl_secs: req.max_ttl_secs.unwrap_or(d.max_ttl_secs),
        max_offers_per_provider: req
            .max_offers_per_provider
            .unwrap_or(d.max_offers_per_provider),
    };
    let charter = {
        let mut m = st.market.write().map_err(|_| poisoned())?;
        if m.resolve_pool(Some(&req.name)).is_ok() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "pool_exists",
                format!(
                    "a pool named '{}' is already known; pick another name or join it",
                    req.name
                ),
            ));
        }
        m.create_pool(&req.name, rules, unix_now())?
    };
    let id = charter.body().pool_id();
    st.net.publish_charter(&charter).await?;
    st.net.join(id).await?;
    let m = st.market.read().map_err(|_| poisoned())?;
    Ok((
        StatusCode::CREATED,
        Json(pool_view(&m, &charter, &Default::default())),
    ))
}

/// Names a pool by name or id.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolRef {
    pub pool: String,
}

/// Whether a join or leave changed anything.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Membership {
    pub pool: String,
    pub joined: bool,
    pub changed: bool,
}

#[utoipa::path(post, path = "/v1/pools/join", request_body = PoolRef,
    responses((status = 200, body = Membership), (status = 404, body = ApiError)))]
async fn join_pool(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<PoolRef>,
) -> Result<Json<Membership>, ApiError> {
    membership(st, body, true).await
}

/// Joins or leaves a pool: the market's record first, then the network's subscription.
async fn membership(
    st: AppState,
    r: PoolRef,
    join: bool,
) -> Result<Json<Membership>, ApiError> {
    let (id, changed) = {
        let mut m = st.market.write().map_err(|_| poisoned())?;
        let id = m.resolve_pool(Some(&r.pool))?;
        let changed = if join { m.join(&id)? } else { m.leave(&id)? };
        (id, changed)
    };
    if join {
        st.net.join(id).await?;
    } else {
        st.net.leave(id).await?;
    }
    Ok(Json(Membership {
        pool: id.to_string(),
        joined: join,
        changed,
    }))
}

#[utoipa::path(post, path = "/v1/pools/leave", request_body = PoolRef,
    responses((status = 200, body = Membership), (status = 404, body = ApiError)))]
async fn leave_pool(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<PoolRef>,
) -> Result<Json<Membership>, ApiError> {
    membership(st, body, false).await
}

#[utoipa::path(get, path = "/v1/peers", responses((status = 200, body = [crate::network::PeerView])))]
async fn list_peers(
    State(st): State<AppState>,
) -> Result<Json<Vec<crate::network::PeerView>>, ApiError> {
    Ok(Json(st.net.peers().await?))
}

/// Acknowledgement of a stop request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Stopping {
    pub stopping: bool,
}

#[utoipa::path(post, path = "/v1/node/stop", responses((status = 200, body = Stopping)))]
async fn stop(State(st): State<AppState>) -> Json<Stopping> {
    let _ = st.shutdown.send(true);
    Json(Stopping { stopping: true })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "xov node local API",
        description = "Local control API of an xov node. Loopback only; every request needs `Authorization: Bearer <token from <datadir>/.cookie>`."
    ),
    paths(
        status,
        list_offers,
        publish_offer,
        withdraw_offer,
        list_pools,
        create_pool,
        join_pool,
        leave_pool,
        list_peers,
        stop
    ),
    components(schemas(
        Status,
        OfferView,
        OfferSpec,
        Withdrawn,
        PoolView,
        CreatePool,
        PoolRef,
        Membership,
        Stopping,
        ApiError,
        crate::network::NetworkStatus,
        crate::network::GossipStats,
        crate::network::PeerView
    ))
)]
pub struct ApiDoc;

#[derive(OpenApi)]
#[openapi(
    paths(crate::api::doctor::api, crate::api::dashboard::new_login),
    components(schemas(
        crate::api::doctor::Report,
        crate::api::doctor::Check,
        crate::api::doctor::Level,
        crate::api::dashboard::LoginCode
    ))
)]
struct DoctorApiDoc;

async fn openapi() -> Json<serde_json::Value> {
    Json(document())
}

/// The API document as /openapi.json serves it.
pub fn document() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::api::wallet::WalletApiDoc::openapi());
    doc.merge(crate::api::leases::LeasesApiDoc::openapi());
    doc.merge(crate::api::trust::TrustApiDoc::openapi());
    doc.merge(DoctorApiDoc::openapi());
    document_rejections(&mut doc);
    let mut doc = serde_json::to_value(doc).expect("the document serialises");
    form::constrain(&mut doc);
    doc
}

/// What every route answers besides its own outcomes, written into the document once rather than on each
/// route: a JSON body that cannot be read (400 not JSON or not as documented, 415 without
/// `Content-Type: application/json`) and a path parameter that cannot be read (400). Each with an
/// [`ApiError`]. A route's own 422 is a request this document allows whose content is still wrong.
fn document_rejections(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |what: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(Ref::from_schema_name("ApiError"))))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let has_params = path.contains('{');
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let r = &mut op.responses.responses;
            if op.request_body.is_some() {
                r.entry("400".into())
                    .or_insert_with(|| error("the body is not JSON, or breaks this document (a field missing, unknown, of the wrong type or out of its range): the message names the field"));
                r.entry("415".into())
                    .or_insert_with(|| error("the request lacks `Content-Type: application/json`"));

            }
            if has_params {
                r.entry("400".into()).or_insert_with(|| {
                    error("a path parameter cannot be read (the message says which)")
                });
            }
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; GET /openapi.json lists them",
    )
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::api::wallet::routes())
        .merge(crate::api::leases::routes())
        .merge(crate::api::trust::routes())
        .route("/v1/status", get(status))
        .route("/v1/offers", get(list_offers).post(publish_offer))
        .route("/v1/offers/{offer_id}", delete(withdraw_offer))
        .route("/v1/pools", get(list_pools).post(create_pool))
        .route("/v1/pools/join", post(join_pool))
        .route("/v1/pools/leave", post(leave_pool))
        .route("/v1/peers", get(list_peers))
        .route("/v1/node/stop", post(stop))
        .route("/openapi.json", get(openapi))
        .route("/v1/events", get(crate::api::events::stream))
        .route("/v1/doctor", get(crate::api::doctor::api))
        .route("/v1/qr.svg", get(crate::api::dashboard::qr_svg))
        .route(
            "/v1/dashboard/login",
            post(crate::api::dashboard::new_login),
        )
        .route("/metrics", get(crate::api::metrics::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method; GET /openapi.json lists them",
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_cookie,
        ))
        // The dashboard page and its assets are public; the API calls they make are not.
        .merge(crate::api::dashboard::routes())
        // Bodies are small JSON documents; refuse anything large before reading it.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(middleware::from_fn(crate::api::dashboard::security_headers))
        .with_state(state)
}
