//! Lease records: what each side knows about a lease, persisted (RocksDB column family `leases`) before any
//! action is taken on a state change, so a restart resumes from the last recorded state.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xov_protocol::{LeaseEvent, LeaseState};

use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Provider,
    Buyer,
}

/// The machine a lease runs on, as the buyer needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceInfo {
    pub server_id: String,
    pub addresses: Vec<String>,
    pub image: String,
    /// Login user for SSH (with the buyer's key).
    pub user: String,
}

/// One step in a lease's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub at: u64,
    #[schema(value_type = String)]
    pub state: LeaseState,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseRecord {
    /// Hex id: the message id of the buyer's signed order.
    pub id: String,
    pub role: Role,
    #[schema(value_type = String)]
    pub state: LeaseState,
    /// The other party's node id.
    pub counterparty: String,
    pub pool: String,
    pub offer_id: u64,
    pub image: String,
    pub hours: u32,
    pub price_sats_per_hour: u64,
    /// The offer's shortest lease: confirmed payments covering at least this much start the machine.
    #[serde(default)]
    pub min_lease_secs: u32,
    pub vcpus: u32,
    pub ram_mib: u32,
    pub disk_gib: u32,
    pub ssh_public_key: String,
    pub refund_address: Option<String>,
    /// The signed order and invoice, hex, as received or sent.
    pub order_hex: String,
    pub invoice_hex: Option<String>,
    /// The invoice's address and BIP21 URI (paying the address again tops the lease up).
    pub pay_address: Option<String>,
    pub pay_uri: Option<String>,
    pub amount_sat: u64,
    /// Confirmed sats received so far.
    pub paid_sat: u64,
    pub started_at: Option<u64>,
    /// When the funds run out at the current balance.
    pub runs_until: Option<u64>,
    pub instance: Option<InstanceInfo>,
    pub refunded_sat: u64,
    pub history: Vec<Step>,
}

impl LeaseRecord {
    /// Moves the record through the protocol's state machine; an impossible step is an error, not a jump.
    pub fn apply(
        &mut self,
        event: LeaseEvent,
        at: u64,
        detail: impl Into<String>,
    ) -> Result<LeaseState, xov_protocol::lease::TransitionError> {
        let next = self.state.apply(event)?;
        self.set_state(next, at, detail);
        Ok(next)
    }

    /// The lease's meter at its current balance, running since `started_at`.
    pub fn meter(&self, started_at: u64) -> xov_protocol::Meter {
        xov_protocol::Meter {
            price_sats_per_hour: self.price_sats_per_hour,
            paid_sat: self.paid_sat,
            started_at,
        }
    }

    /// Records a state reported by the other party (the buyer mirrors the provider's machine).
    pub fn set_state(&mut self, state: LeaseState, at: u64, detail: impl Into<String>) {
        self.state = state;
        self.history.push(Step {
            at,
            state,
            detail: detail.into(),
        });
    }
}

impl Store {
    pub fn put_lease(&self, l: &LeaseRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(l).expect("lease records serialize");
        self.put_raw(crate::store::CF_LEASES, l.id.as_bytes(), &bytes)
    }

    pub fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        Ok(self
            .load_raw(crate::store::CF_LEASES)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }
}
