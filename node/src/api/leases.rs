//! The lease part of the local API: ordering, listing, extending and cancelling leases.
//!
//! Leases are answered as [`LeaseView`]: the record's fields as stored, plus (for a buyer) what is at risk
//! right now, computed at the moment of the request from the record alone.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{ApiError, AppState};
use crate::clock::unix_now;
use crate::lease::driver::{OrderError, OrderRequest};
use crate::lease::machine::{exposure, BudgetView, Exposure};
use crate::lease::record::LeaseRecord;

/// A lease as the API shows it: the stored record, and for a buyer what is at stake now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    #[serde(flatten)]
    pub lease: LeaseRecord,
    /// Buyer: sats paid and not yet used up, and the budget's progress (None for a provider's lease).
    #[serde(default)]
    pub exposure: Option<Exposure>,
}

impl LeaseView {
    pub fn of(st: &AppState, lease: LeaseRecord) -> LeaseView {
        let exposure = exposure(&lease, unix_now(), &st.config.lease.terms());
        LeaseView { lease, exposure }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        let (status, code) = match &e {
            OrderError::NoMatch(_) => (StatusCode::NOT_FOUND, "no_match"),
            OrderError::AllRefused(_) => (StatusCode::CONFLICT, "refused"),
            OrderError::NoWallet => (StatusCode::CONFLICT, "wallet_disabled"),
            OrderError::NoSuchLease(_) => (StatusCode::NOT_FOUND, "no_such_lease"),
            OrderError::NotLive { .. } => (StatusCode::CONFLICT, "lease_not_live"),
            OrderError::BadSshKey(_) => (StatusCode::BAD_REQUEST, "bad_ssh_key"),
            OrderError::BadRefundAddress(_) => (StatusCode::BAD_REQUEST, "bad_refund_address"),
            OrderError::BadPorts(_) => (StatusCode::BAD_REQUEST, "bad_ports"),
            OrderError::BadOffer(_) => (StatusCode::BAD_REQUEST, "bad_offer"),
            OrderError::Budget(_) => (StatusCode::BAD_REQUEST, "bad_budget"),
            OrderError::Bid(_) => (StatusCode::BAD_REQUEST, "bid"),
            OrderError::Wallet(_) | OrderError::PayFailed { .. } => {
                (StatusCode::CONFLICT, "wallet")
            }
            OrderError::Store(_) | OrderError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

#[utoipa::path(post, path = "/v1/orders", request_body = OrderRequest,
    responses((status = 201, body = LeaseView), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn order(
    State(st): State<AppState>,
    body: Result<Json<OrderRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<LeaseView>), ApiError> {
    let Json(req) = body?;
    if req.hours == 0 && req.budget_sat.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_hours",
            "--hours must be at least 1 (or give a --budget)",
        ));
    }
    let l = st.leases.order(req).await?;
    Ok((StatusCode::CREATED, Json(LeaseView::of(&st, l))))
}

#[utoipa::path(get, path = "/v1/leases", responses((status = 200, body = [LeaseView])))]
async fn list(State(st): State<AppState>) -> Json<Vec<LeaseView>> {
    Json(
        st.leases
            .list()
            .into_iter()
            .map(|l| LeaseView::of(&st, l))
            .collect(),
    )
}

fn find(st: &AppState, id: &str) -> Result<LeaseRecord, ApiError> {
    st.leases.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_lease",
            format!("no lease {id}; `xov leases list` shows yours"),
        )
    })
}

#[utoipa::path(get, path = "/v1/leases/{id}", params(("id" = String, Path, description = "lease id or an unambiguous prefix")),
    responses((status = 200, body = LeaseView), (status = 404, body = ApiError)))]
async fn show(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<LeaseView>, ApiError> {
    let l = find(&st, &id)?;
    Ok(Json(LeaseView::of(&st, l)))
}

/// How much more to buy: `hours` at the lease's price, or exactly `sats`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extend {
    #[serde(default)]
    pub hours: u32,
    #[serde(default)]
    pub sats: Option<u64>,
}

/// A payment made for a lease.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Extended {
    pub txid: String,
}

#[utoipa::path(post, path = "/v1/leases/{id}/extend", request_body = Extend, params(("id" = String, Path)),
    responses((status = 200, body = Extended), (status = 404, body = ApiError)))]
async fn extend(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<Extend>, JsonRejection>,
) -> Result<Json<Extended>, ApiError> {
    let Json(e) = body?;
    let l = find(&st, &id)?;
    if e.hours == 0 && e.sats.is_none_or(|s| s == 0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_amount",
            "say how much to add: --hours N or --sats N",
        ));
    }
    let txid = st.leases.extend(&l.id, e.hours, e.sats).await?;
    Ok(Json(Extended { txid }))
}

#[utoipa::path(post, path = "/v1/leases/{id}/cancel", params(("id" = String, Path)),
    responses((status = 200, body = LeaseView), (status = 404, body = ApiError)))]
async fn cancel(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<LeaseView>, ApiError> {
    let l = find(&st, &id)?;
    st.leases.cancel(&l.id).await?;
    let l = find(&st, &l.id)?;
    Ok(Json(LeaseView::of(&st, l)))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/orders", post(order))
        .route("/v1/leases", get(list))
        .route("/v1/leases/{id}", get(show))
        .route("/v1/leases/{id}/extend", post(extend))
        .route("/v1/leases/{id}/cancel", post(cancel))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(order, list, show, extend, cancel),
    components(schemas(
        OrderRequest,
        LeaseRecord,
        LeaseView,
        Exposure,
        BudgetView,
        crate::lease::record::Budget,
        crate::lease::record::Slice,
        crate::lease::record::NotDelivering,
        crate::lease::record::SentPayment,
        crate::lease::record::RefundTx,
        crate::lease::record::InstanceInfo,
        crate::lease::record::Step,
        crate::lease::record::Role,
        Extend,
        Extended
    ))
)]
pub struct LeasesApiDoc;
