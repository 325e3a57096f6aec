//! What every API handler shares: handles to the node's parts, the API token, and the configuration. Built
//! once by the daemon; cloned (cheaply: every field is a handle) into each request.

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::market::Market;

#[derive(Clone)]
pub struct AppState {
    pub net: crate::network::NetworkHandle,
    pub wallet: Option<Arc<xov_wallet::XovWallet>>,
    pub leases: Arc<crate::lease::driver::LeaseEngine>,
    pub market: Arc<RwLock<Market>>,
    pub token: Arc<String>,
    pub started_at: u64,
    pub datadir: String,
    pub shutdown: watch::Sender<bool>,
    /// Lease changes, wallet activity and drain warnings, streamed at `/v1/events`.
    pub events: crate::events::EventBus,
    /// The configuration the node runs with, for `xov doctor`.
    pub config: Arc<crate::config::Config>,
    /// One-time dashboard login codes (see `api::dashboard`).
    pub logins: crate::api::dashboard::LoginCodes,
}
