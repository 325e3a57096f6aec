//! A buyer's demand gossiped into a pool, for providers whose offers are not yet in the buyer's book (or who
//! can make a machine to order). Providers with matching capacity answer it directly.

use serde::{Deserialize, Serialize};

use crate::demand::Demand;
use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::identity::NodeId;
use crate::pool::PoolId;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bid {
    pub buyer: NodeId,
    pub pool: PoolId,
    pub bid_id: u64,
    pub sequence: u64,
    pub created_at: u64,
    pub expires_at: u64,
    /// Requirements; `max_price_sats_per_hour` is mandatory in a bid.
    pub demand: Demand,
    /// How many hours the buyer wants to run.
    pub hours: u32,
    /// How many machines.
    pub count: u32,
}

impl Encode for Bid {
    fn encode(&self, w: &mut Writer) {
        self.buyer.encode(w);
        self.pool.encode(w);
        w.u64(self.bid_id);
        w.u64(self.sequence);
        w.u64(self.created_at);
        w.u64(self.expires_at);
        self.demand.encode(w);
        w.u32(self.hours);
        w.u32(self.count);
    }
}

impl Decode for Bid {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Bid {
            buyer: NodeId::decode(r)?,
            pool: PoolId::decode(r)?,
            bid_id: r.u64("bid id")?,
            sequence: r.u64("sequence")?,
            created_at: r.u64("created at")?,
            expires_at: r.u64("expires at")?,
            demand: Demand::decode(r)?,
            hours: r.u32("hours")?,
            count: r.u32("count")?,
        })
    }
}
