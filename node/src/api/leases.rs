//! The lease part of the local API: ordering, listing, extending and cancelling leases.
//!
//! Leases are answered as [`LeaseView`]: the record's fields as stored, plus (for a buyer) what is at risk
//! right now, computed at the moment of the request from the record alone.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{form, ApiError, ApiJson, AppState};
use crate::clock::unix_now;
use crate::lease::driver::{OrderError, OrderRequest};
use crate::lease::machine::{exposure, BudgetError, BudgetView, Exposure};
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
            // Of the documented form, and still not a key or an address (its checksum, its network).
            OrderError::BadSshKey(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_ssh_key"),
            OrderError::BadRefundAddress(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "bad_refund_address")
            }
            OrderError::BadPorts(_) => (StatusCode::BAD_REQUEST, "bad_ports"),
            OrderError::BadOffer(s) if !form::is_offer_key(s) => {
                (StatusCode::BAD_REQUEST, "bad_offer")
            }
            OrderError::BadOffer(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_offer"),
            OrderError::Budget(b) => match b {
                BudgetError::BadSliceHours(_) | BudgetError::ZeroBudget => {
                    (StatusCode::BAD_REQUEST, "bad_budget")
                }
                // What the offer found allows: its lease bounds and price.
                BudgetError::SliceTooShort { .. }
                | BudgetError::SliceTooLong { .. }
                | BudgetError::BelowShortestLease { .. }
                | BudgetError::NoHours { .. } => (StatusCode::CONFLICT, "bad_budget"),
            },
            OrderError::Bid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bid"),
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
    responses((status = 201, body = LeaseView, description = "the lease, awaiting payment (or paid, with `pay`); links lead to it"),
        (status = 400, body = ApiError),
        (status = 404, body = ApiError, description = "no offer matches (or the offer named is gone), or no such pool"),
        (status = 409, body = ApiError, description = "every matching provider refused, the offer's lease bounds do not fit the budget, or the wallet cannot pay"),
        (status = 422, body = ApiError, description = "the SSH key, refund address or offer key has the documented form and still is not one (checksum, network, key data)")))]
async fn order(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<OrderRequest>,
) -> Result<(StatusCode, Json<LeaseView>), ApiError> {
    check_order_form(&req)?;
    let l = st.leases.order(req).await?;
    Ok((StatusCode::CREATED, Json(LeaseView::of(&st, l))))
}

/// What the document says of an order's fields beyond their types: 400 naming the field.
fn check_order_form(req: &OrderRequest) -> Result<(), ApiError> {
    let bad = |code: &'static str, msg: &str| Err(ApiError::new(StatusCode::BAD_REQUEST, code, msg));
    if req.hours == 0 && req.budget_sat.is_none() {
        return bad("bad_hours", "hours must be at least 1 (or give a budget_sat)");
    }
    if req.hours > xov_protocol::validate::MAX_HOURS {
        return bad("bad_hours", "hours: at most 8784 (a year) in one order");
    }
    if req.slice_hours.is_some_and(|h| !(0.001..=1_193_046.0).contains(&h)) {
        return bad("bad_budget", "slice_hours: from 0.001 (3.6 s) to 1193046");
    }
    if req.bid_wait_secs > xov_protocol::validate::MAX_BID_TTL_SECS {
        return bad("bad_bid_wait", "bid_wait_secs: at most 86400 (a day)");
    }
    if req.ports.len() > xov_protocol::offer::MAX_EXTRA_PORTS {
        return bad("bad_ports", "ports: at most 15 besides SSH");
    }
    if req.ssh_public_key.len() > xov_protocol::order::MAX_SSH_KEY {
        return bad("bad_ssh_key", "ssh_public_key: at most 4096 bytes");
    }
    if req.refund_address.as_deref().is_some_and(|a| !form::is_address(a)) {
        return bad(
            "bad_refund_address",
            "refund_address: a bitcoin address of this node's network (letters and digits)",
        );
    }
    if !form::is_label(&req.image) {
        return bad("bad_image", "image: 1 to 64 printable ASCII characters, e.g. debian-12");
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/leases", operation_id = "list_leases", responses((status = 200, body = [LeaseView])))]
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

#[utoipa::path(get, path = "/v1/leases/{id}", operation_id = "show_lease", params(("id" = String, Path, description = "lease id or an unambiguous prefix")),
    responses((status = 200, body = LeaseView), (status = 404, body = ApiError)))]
async fn show(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<LeaseView>, ApiError> {
    let l = find(&st, &id)?;
    Ok(Json(LeaseView::of(&st, l)))
}

/// How much more to buy: `hours` at the lease's price, or exactly `sats` (one of them).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extend {
    #[serde(default)]
    #[schema(maximum = 8784)]
    pub hours: u32,
    #[serde(default)]
    #[schema(minimum = 1)]
    pub sats: Option<u64>,
}

/// A payment made for a lease.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Extended {
    pub txid: String,
}

#[utoipa::path(post, path = "/v1/leases/{id}/extend", operation_id = "extend_lease", request_body = Extend, params(("id" = String, Path, description = "lease id or an unambiguous prefix")),
    responses((status = 200, body = Extended), (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "the lease is not live, is not one this node bought, or the wallet cannot pay")))]
async fn extend(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ApiJson(e): ApiJson<Extend>,
) -> Result<Json<Extended>, ApiError> {
    let bad = |msg: &str| Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_amount", msg));
    if e.sats == Some(0) {
        return bad("sats: at least 1");
    }
    if e.hours == 0 && e.sats.is_none() {
        return bad("say how much to add: hours (--hours N) or sats (--sats N)");
    }
    if e.hours > xov_protocol::validate::MAX_HOURS {
        return bad("hours: at most 8784 (a year) at once");
    }
    let l = find(&st, &id)?;
    let txid = st.leases.extend(&l.id, e.hours, e.sats).await?;
    Ok(Json(Extended { txid }))
}

#[utoipa::path(post, path = "/v1/leases/{id}/cancel", operation_id = "cancel_lease", params(("id" = String, Path, description = "lease id or an unambiguous prefix")),
    responses((status = 200, body = LeaseView), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "the lease is not live or not one this node bought")))]
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
