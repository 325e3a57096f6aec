//! The wallet part of the local API: addresses, balance, history, sending and paying.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xov_wallet::{WalletError, XovWallet};

use crate::api::{ApiError, ApiJson, AppState};

fn wallet(st: &AppState) -> Result<Arc<XovWallet>, ApiError> {
    st.wallet.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "wallet_disabled",
            "this node runs without a wallet; set [wallet] enabled = true (and its chain source) in xov.toml, or XOV_WALLET_ENABLED=true",
        )
    })
}

impl From<WalletError> for ApiError {
    fn from(e: WalletError) -> Self {
        let (status, code) = match &e {
            // Of the documented form, and still not an address of this network (checksum, network).
            WalletError::BadAddress { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "bad_address"),
            WalletError::BadUri(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_uri"),
            WalletError::InsufficientFunds(_) => (StatusCode::CONFLICT, "insufficient_funds"),
            WalletError::NoSuchInvoice(_) => (StatusCode::NOT_FOUND, "no_such_invoice"),
            WalletError::NoSuchTx(_) => (StatusCode::NOT_FOUND, "no_such_tx"),
            WalletError::AlreadyConfirmed { .. } => (StatusCode::CONFLICT, "already_confirmed"),
            // Too low for the transaction it would replace: that transaction's state.
            WalletError::FeeTooLow { .. } => (StatusCode::CONFLICT, "fee_too_low"),
            WalletError::NotReplaceable { .. } => (StatusCode::CONFLICT, "not_replaceable"),
            WalletError::DuplicateInvoice(_) => (StatusCode::CONFLICT, "duplicate_invoice"),
            WalletError::NoSuchBond(_) => (StatusCode::NOT_FOUND, "no_such_bond"),
            // A locktime already passed, a bond not yet unlockable: the chain's state.
            WalletError::BadBond(_) | WalletError::BondLocked(_) => (StatusCode::CONFLICT, "bond"),
            // An amount no transaction can carry (below the dust limit, say).
            WalletError::Build(_) => (StatusCode::UNPROCESSABLE_ENTITY, "cannot_build"),
            WalletError::Broadcast(_) | WalletError::Chain(_) => (StatusCode::BAD_GATEWAY, "chain"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "wallet"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// A fee rate the document allows: 1 to 100,000 sat/vB.
fn check_fee(fee: Option<u64>) -> Result<(), ApiError> {
    match fee {
        Some(f) if !(1..=100_000).contains(&f) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_fee",
            "fee_sat_per_vb: from 1 to 100000",
        )),
        _ => Ok(()),
    }
}

/// A fresh receiving address.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NewAddress {
    pub address: String,
    /// BIP21 URI of the address (no amount).
    pub uri: String,
}

#[utoipa::path(post, path = "/v1/wallet/address", responses((status = 200, body = NewAddress), (status = 409, body = ApiError)))]
async fn address(State(st): State<AppState>) -> Result<Json<NewAddress>, ApiError> {
    let w = wallet(&st)?;
    let address = w.new_address()?;
    let uri = xov_wallet::bip21::uri(&address, None, None);
    Ok(Json(NewAddress { address, uri }))
}

/// Wallet balance in sats.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BalanceView {
    pub confirmed_sat: u64,
    pub pending_sat: u64,
    pub immature_sat: u64,
    pub tip_height: u32,
    pub network: String,
    /// How the chain source is doing.
    pub chain: ChainView,
}

/// The chain source's health (see docs/wallet.md, "The light client is supervised").
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChainView {
    /// "compact block filters" or "bitcoind RPC".
    pub source: String,
    /// connecting, syncing, synced or stalled.
    pub state: String,
    pub peers: usize,
    pub wallet_tip: u32,
    pub header_tip: Option<u32>,
    pub peer_tip: Option<u32>,
    pub secs_since_progress: u64,
    pub restarts: u64,
    /// Why the client was last restarted: no_peer, no_progress or client_stopped.
    pub last_restart_reason: Option<String>,
    pub last_warning: Option<String>,
}

impl From<xov_wallet::ChainHealth> for ChainView {
    fn from(h: xov_wallet::ChainHealth) -> Self {
        ChainView {
            source: h.source,
            state: h.state.as_str().into(),
            peers: h.peers,
            wallet_tip: h.wallet_tip,
            header_tip: h.header_tip,
            peer_tip: h.peer_tip,
            secs_since_progress: h.secs_since_progress,
            restarts: h.restarts,
            last_restart_reason: h.last_restart_reason.map(|r| {
                match r {
                    xov_wallet::StallReason::NoPeer => "no_peer",
                    xov_wallet::StallReason::NoProgress => "no_progress",
                    xov_wallet::StallReason::ClientStopped => "client_stopped",
                }
                .into()
            }),
            last_warning: h.last_warning,
        }
    }
}

#[utoipa::path(get, path = "/v1/wallet/balance", responses((status = 200, body = BalanceView), (status = 409, body = ApiError)))]
async fn balance(State(st): State<AppState>) -> Result<Json<BalanceView>, ApiError> {
    let w = wallet(&st)?;
    let b = w.balance();
    Ok(Json(BalanceView {
        confirmed_sat: b.confirmed_sat,
        pending_sat: b.pending_sat,
        immature_sat: b.immature_sat,
        tip_height: b.tip_height,
        network: w.network().to_string(),
        chain: w.chain_health().into(),
    }))
}

/// One transaction of the wallet.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryView {
    pub txid: String,
    pub received_sat: u64,
    pub sent_sat: u64,
    pub fee_sat: Option<u64>,
    pub height: Option<u32>,
    pub confirmations: u32,
}

#[utoipa::path(get, path = "/v1/wallet/history", responses((status = 200, body = [HistoryView]), (status = 409, body = ApiError)))]
async fn history(State(st): State<AppState>) -> Result<Json<Vec<HistoryView>>, ApiError> {
    let w = wallet(&st)?;
    Ok(Json(
        w.history()
            .into_iter()
            .map(|h| HistoryView {
                txid: h.txid,
                received_sat: h.received_sat,
                sent_sat: h.sent_sat,
                fee_sat: h.fee_sat,
                height: h.height,
                confirmations: h.confirmations,
            })
            .collect(),
    ))
}

/// Send an amount to an address.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub address: String,
    #[schema(minimum = 1, maximum = 2100000000000000_u64)]
    pub amount_sat: u64,
    /// Fee rate in sat/vB (default: 2).
    #[schema(minimum = 1, maximum = 100000)]
    pub fee_sat_per_vb: Option<u64>,
}

/// Pay a BIP21 URI.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    pub uri: String,
    /// Fee rate in sat/vB (default: 2).
    #[schema(minimum = 1, maximum = 100000)]
    pub fee_sat_per_vb: Option<u64>,
}

/// Replace an unconfirmed payment of this wallet by one paying more fee (RBF).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BumpRequest {
    pub txid: String,
    /// Fee rate in sat/vB (default: the chain's estimate, at least 1 sat/vB more than before).
    #[schema(minimum = 1, maximum = 100000)]
    pub fee_sat_per_vb: Option<u64>,
}

/// The replacement of a bumped transaction.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BumpedView {
    pub old_txid: String,
    pub new_txid: String,
    pub old_fee_sat: u64,
    pub new_fee_sat: u64,
    pub fee_sat_per_vb: u64,
}

/// A broadcast transaction.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Sent {
    pub txid: String,
}

#[utoipa::path(post, path = "/v1/wallet/send", request_body = SendRequest,
    responses((status = 200, body = Sent), (status = 400, body = ApiError), (status = 409, body = ApiError),
        (status = 422, body = ApiError, description = "the address has the documented form and is not one of this network (checksum, network)"),
        (status = 502, body = ApiError, description = "the chain source refused or could not be reached")))]
async fn send(
    State(st): State<AppState>,
    ApiJson(r): ApiJson<SendRequest>,
) -> Result<Json<Sent>, ApiError> {
    if r.amount_sat == 0 || r.amount_sat > xov_protocol::bond::MAX_MONEY_SATS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_amount",
            "amount_sat: from 1 sat to 21 million bitcoin",
        ));
    }
    if !crate::api::form::is_address(&r.address) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_address",
            "address: a bitcoin address (letters and digits)",
        ));
    }
    check_fee(r.fee_sat_per_vb)?;
    let w = wallet(&st)?;
    let txid = w.send(&r.address, r.amount_sat, r.fee_sat_per_vb).await?;
    Ok(Json(Sent { txid }))
}

#[utoipa::path(post, path = "/v1/wallet/pay", request_body = PayRequest,
    responses((status = 200, body = Sent), (status = 400, body = ApiError), (status = 404, body = ApiError, description = "no such invoice"), (status = 409, body = ApiError),
        (status = 422, body = ApiError, description = "the URI has the documented form and is not usable (address checksum or network, amount)"),
        (status = 502, body = ApiError, description = "the chain source refused or could not be reached")))]
async fn pay(
    State(st): State<AppState>,
    ApiJson(r): ApiJson<PayRequest>,
) -> Result<Json<Sent>, ApiError> {
    if !crate::api::form::is_bitcoin_uri(&r.uri) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_uri",
            "uri: a BIP21 URI, bitcoin:ADDRESS?amount=BTC",
        ));
    }
    check_fee(r.fee_sat_per_vb)?;
    let w = wallet(&st)?;
    let txid = w.pay(&r.uri, r.fee_sat_per_vb).await?;
    Ok(Json(Sent { txid }))
}

#[utoipa::path(post, path = "/v1/wallet/bump", request_body = BumpRequest,
    responses((status = 200, body = BumpedView), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError),
        (status = 502, body = ApiError, description = "the chain source refused or could not be reached")))]
async fn bump(
    State(st): State<AppState>,
    ApiJson(r): ApiJson<BumpRequest>,
) -> Result<Json<BumpedView>, ApiError> {
    if !crate::api::form::is_txid(&r.txid) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_txid",
            "txid: 64 hex characters (`xov wallet history` lists this wallet's)",
        ));
    }
    check_fee(r.fee_sat_per_vb)?;
    let w = wallet(&st)?;
    let b = w.bump_fee(r.txid.trim(), r.fee_sat_per_vb).await?;
    Ok(Json(BumpedView {
        old_txid: b.old_txid,
        new_txid: b.new_txid,
        old_fee_sat: b.old_fee_sat,
        new_fee_sat: b.new_fee_sat,
        fee_sat_per_vb: b.fee_sat_per_vb,
    }))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/wallet/address", post(address))
        .route("/v1/wallet/balance", get(balance))
        .route("/v1/wallet/history", get(history))
        .route("/v1/wallet/send", post(send))
        .route("/v1/wallet/pay", post(pay))
        .route("/v1/wallet/bump", post(bump))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(address, balance, history, send, pay, bump),
    components(schemas(
        NewAddress,
        BalanceView,
        HistoryView,
        SendRequest,
        PayRequest,
        Sent,
        BumpRequest,
        BumpedView
    ))
)]
pub struct WalletApiDoc;
