//! The trust part of the local API: a node's score explained, importing receipts, and this node's fidelity
//! bonds (create, list, show).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xov_protocol::{Limits, NodeId, SignedReceipt, Tier, TrustReport};
use xov_wallet::bitcoin::absolute::LockTime;

use crate::api::{form, ApiError, ApiJson, AppState};
use crate::clock::unix_now;
use crate::market::trust_service::parse_node;

/// A node's trust as this node sees it, with the limits it would get here as a buyer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TrustView {
    /// The score and what it is made of.
    #[schema(value_type = Object)]
    pub report: TrustReport,
    /// The same, as sentences.
    pub explanation: String,
    /// What this provider would let the node run now (pool load included).
    #[schema(value_type = Object)]
    pub limits: Limits,
    /// What the next tier would allow.
    #[schema(value_type = Object)]
    pub next_tier_limits: Option<Limits>,
    /// The node's bond proof, if one was heard (whether it counts is in `report.bond`).
    #[schema(value_type = Option<Object>)]
    pub bond_proof: Option<xov_protocol::BondProof>,
    /// Receipts held about the node, dual-signed.
    pub receipts: usize,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrustQuery {
    /// Pool whose load sets anonymous limits (default: the provider's pool).
    pub pool: Option<String>,
}

fn bad(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, msg.into())
}

fn unprocessable(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg.into())
}

#[utoipa::path(get, path = "/v1/trust/{node}", operation_id = "show_trust",
    params(("node" = String, Path, description = "node id (base58) or `me`"), TrustQuery),
    responses((status = 200, body = TrustView), (status = 400, body = ApiError), (status = 404, body = ApiError, description = "no such pool"),
        (status = 422, body = ApiError, description = "of a node id's form and still not an ed25519 public key")))]
async fn show(
    State(st): State<AppState>,
    Path(node): Path<String>,
    Query(q): Query<TrustQuery>,
) -> Result<Json<TrustView>, ApiError> {
    let now = unix_now();
    let m = st
        .market
        .read()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "lock"))?;
    let node: NodeId = parse_node(&node, m.node_id()).map_err(|e| {
        let status = if form::is_node_id(&node) {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(
            status,
            "bad_node",
            format!("'{node}' is not a node id (an ed25519 public key in base58: {e}) or 'me'"),
        )
    })?;
    let pool_name = q.pool.unwrap_or_else(|| st.config.provider.pool.clone());
    let pool = m.resolve_pool(Some(&pool_name))?;
    let e = m.evidence();
    let report = e.report(&node, now);
    let (_, own) = st.leases.provider_load();
    let load = m.pool_rate(&pool, now) + own;
    let policy = &st.config.provider.admission;
    let limits = policy.limits(report.tier, load);
    let next_tier_limits = report.tier.next().map(|t: Tier| policy.limits(t, load));
    Ok(Json(TrustView {
        explanation: report.to_string(),
        limits,
        next_tier_limits,
        bond_proof: e.proof_of(&node).map(|p| p.body().clone()),
        receipts: e.receipts_of(&node).len(),
        report,
    }))
}

/// A dual-signed receipt in wire form, hex.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptImport {
    #[schema(max_length = 32768)]
    pub receipt_hex: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptAdded {
    /// `new` or `duplicate`.
    pub added: String,
    pub lease_id: String,
}

#[utoipa::path(post, path = "/v1/trust/receipts", operation_id = "import_receipt", request_body = ReceiptImport,
    responses((status = 200, body = ReceiptAdded), (status = 400, body = ApiError),
        (status = 422, body = ApiError, description = "hex, and not a receipt this node takes (its encoding, signatures, age)")))]
async fn import_receipt(
    State(st): State<AppState>,
    ApiJson(r): ApiJson<ReceiptImport>,
) -> Result<Json<ReceiptAdded>, ApiError> {
    let hex = r.receipt_hex.trim();
    if !form::is_hex_bytes(hex) || hex.len() > 2 * xov_protocol::signed::MAX_MESSAGE_BYTES {
        return Err(bad(
            "bad_receipt",
            "receipt_hex: whole bytes in hex, at most 32768 characters (`xov trust receipts export` writes them)",
        ));
    }
    let bytes = hex::decode(hex).map_err(|e| bad("bad_receipt", format!("receipt_hex: {e}")))?;
    let receipt = SignedReceipt::from_bytes(&bytes)
        .map_err(|e| unprocessable("bad_receipt", format!("not a receipt: {e}")))?;
    let lease_id = receipt.id().to_string();
    let mut m = st
        .market
        .write()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "lock"))?;
    let added = m
        .evidence_mut()
        .accept_receipt(receipt, unix_now())
        .map_err(|e| unprocessable("receipt_rejected", e.to_string()))?;
    Ok(Json(ReceiptAdded {
        added: format!("{added:?}").to_lowercase(),
        lease_id,
    }))
}

/// A bond to create: lock `amount_sat` until a block height.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BondCreate {
    #[schema(minimum = 1, maximum = 2100000000000000_u64)]
    pub amount_sat: u64,
    /// Lock for this many blocks from the current tip (at most four years)...
    #[schema(minimum = 1, maximum = 210240)]
    pub lock_blocks: Option<u32>,
    /// ...or until this block height (one of the two).
    #[schema(minimum = 1, maximum = 499999999)]
    pub locktime: Option<u32>,
}

fn wallet(st: &AppState) -> Result<&std::sync::Arc<xov_wallet::XovWallet>, ApiError> {
    st.wallet.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "wallet_disabled",
            "bonds need the wallet: set wallet.enabled = true",
        )
    })
}

#[utoipa::path(post, path = "/v1/bonds", operation_id = "create_bond", request_body = BondCreate,
    responses((status = 201, body = Object), (status = 400, body = ApiError),
        (status = 409, body = ApiError, description = "no wallet, not enough funds, or the locktime has passed"),
        (status = 422, body = ApiError, description = "no transaction can carry the amount (below the dust limit)"),
        (status = 502, body = ApiError, description = "the chain source refused or could not be reached")))]
async fn create(
    State(st): State<AppState>,
    ApiJson(b): ApiJson<BondCreate>,
) -> Result<(StatusCode, Json<xov_wallet::Bond>), ApiError> {
    if b.amount_sat == 0 || b.amount_sat > xov_protocol::bond::MAX_MONEY_SATS {
        return Err(bad("bad_amount", "amount_sat: from 1 sat to 21 million bitcoin"));
    }
    let height = match (b.lock_blocks, b.locktime) {
        (Some(n @ 1..=xov_protocol::bond::MAX_BOND_LOCK_BLOCKS), None) => {
            wallet(&st)?.tip_height().saturating_add(n)
        }
        (None, Some(h @ 1..xov_protocol::bond::LOCKTIME_THRESHOLD)) => h,
        (Some(_), None) => return Err(bad("bad_lock", "lock_blocks: from 1 to 210240 (four years)")),
        (None, Some(_)) => return Err(bad("bad_lock", "locktime: a block height from 1 to 499999999")),
        _ => {
            return Err(bad(
                "bad_lock",
                "say how long to lock: --lock-blocks N or --locktime HEIGHT (one of them)",
            ))
        }
    };
    let w = wallet(&st)?;
    let locktime = LockTime::from_height(height)
        .map_err(|e| bad("bad_lock", format!("locktime {height}: {e}")))?;
    let bond = w.create_bond(b.amount_sat, locktime, None).await?;
    Ok((StatusCode::CREATED, Json(bond)))
}

#[utoipa::path(get, path = "/v1/bonds", operation_id = "list_bonds", responses((status = 200, body = [Object]), (status = 409, body = ApiError, description = "this node has no wallet")))]
async fn list(State(st): State<AppState>) -> Result<Json<Vec<xov_wallet::Bond>>, ApiError> {
    Ok(Json(wallet(&st)?.list_bonds()))
}

/// Which bond to unlock.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BondUnlock {
    /// `txid:vout`
    pub outpoint: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BondUnlocked {
    pub txid: String,
}

#[utoipa::path(post, path = "/v1/bonds/unlock", operation_id = "unlock_bond", request_body = BondUnlock,
    responses((status = 200, body = BondUnlocked), (status = 400, body = ApiError), (status = 404, body = ApiError, description = "no such bond in this wallet"),
        (status = 409, body = ApiError, description = "no wallet, or the bond cannot be unlocked yet"),
        (status = 422, body = ApiError, description = "of the documented form and not an outpoint (vout beyond 32 bits)"),
        (status = 502, body = ApiError, description = "the chain source refused or could not be reached")))]
async fn unlock(
    State(st): State<AppState>,
    ApiJson(u): ApiJson<BondUnlock>,
) -> Result<Json<BondUnlocked>, ApiError> {
    if !form::is_outpoint(&u.outpoint) {
        return Err(bad("bad_outpoint", "outpoint: txid:vout (`xov bond list` shows each bond's)"));
    }
    let outpoint = u.outpoint.parse().map_err(|e| {
        unprocessable(
            "bad_outpoint",
            format!("'{}' is not txid:vout: {e}", u.outpoint),
        )
    })?;
    let w = wallet(&st)?;
    let txid = w.unlock_bond(outpoint, None).await?;
    Ok(Json(BondUnlocked { txid }))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/trust/{node}", get(show))
        .route("/v1/trust/receipts", post(import_receipt))
        .route("/v1/bonds", get(list).post(create))
        .route("/v1/bonds/unlock", post(unlock))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(show, import_receipt, create, list, unlock),
    components(schemas(
        TrustView,
        ReceiptImport,
        ReceiptAdded,
        BondCreate,
        BondUnlock,
        BondUnlocked
    ))
)]
pub struct TrustApiDoc;
