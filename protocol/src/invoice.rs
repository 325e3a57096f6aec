//! The provider's answer to an order it admits: pay this amount to this fresh address before expiry.

use serde::{Deserialize, Serialize};

use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::identity::NodeId;
use crate::order::MAX_ADDRESS;
use crate::signed::MessageId;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Invoice {
    pub provider: NodeId,
    pub buyer: NodeId,
    /// The id of the buyer's signed order.
    pub lease_id: MessageId,
    /// A bitcoin address used for this lease only; paying it again tops the lease up.
    pub address: String,
    pub amount_sats: u64,
    pub price_sats_per_hour: u64,
    pub hours: u32,
    /// Confirmations the provider waits for before launching.
    pub min_confirmations: u32,
    pub created_at: u64,
    pub expires_at: u64,
}

impl Encode for Invoice {
    fn encode(&self, w: &mut Writer) {
        self.provider.encode(w);
        self.buyer.encode(w);
        self.lease_id.encode(w);
        w.str(&self.address);
        w.u64(self.amount_sats);
        w.u64(self.price_sats_per_hour);
        w.u32(self.hours);
        w.u32(self.min_confirmations);
        w.u64(self.created_at);
        w.u64(self.expires_at);
    }
}

impl Decode for Invoice {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Invoice {
            provider: NodeId::decode(r)?,
            buyer: NodeId::decode(r)?,
            lease_id: MessageId::decode(r)?,
            address: r.str("address", MAX_ADDRESS)?,
            amount_sats: r.u64("amount")?,
            price_sats_per_hour: r.u64("price")?,
            hours: r.u32("hours")?,
            min_confirmations: r.u32("min confirmations")?,
            created_at: r.u64("created at")?,
            expires_at: r.u64("expires at")?,
        })
    }
}
