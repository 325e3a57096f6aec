//! A buyer's order for one machine from one offer, sent to the provider directly (not gossiped).
//! The lease id is the order's message id, so both sides name the lease the same way from the first message.
//!
//! Invariant: an order names the bitcoin network the buyer pays on ([`Chain`]), so a provider on another
//! network refuses it (`OrderRefusal::WrongChain`) before it invoices anything.

use serde::{Deserialize, Serialize};

use crate::chain::Chain;
use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::identity::NodeId;
use crate::pool::PoolId;

/// Longest SSH public key line accepted (an RSA-4096 key is about 750 bytes).
pub const MAX_SSH_KEY: usize = 4096;
/// Longest bitcoin address or URI carried in a message.
pub const MAX_ADDRESS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Order {
    pub buyer: NodeId,
    pub provider: NodeId,
    pub pool: PoolId,
    pub offer_id: u64,
    /// The offer version the buyer saw; the provider refuses if its terms changed since.
    pub offer_sequence: u64,
    pub image: String,
    pub hours: u32,
    pub ssh_public_key: String,
    /// Where refunds of unused or undeliverable funds go.
    pub refund_address: Option<String>,
    pub created_at: u64,
    /// Distinguishes two otherwise identical orders.
    pub nonce: u64,
    /// The bitcoin network the buyer pays on: the offer's.
    pub chain: Chain,
    /// TCP ports besides SSH the buyer wants opened to the machine, each among its offer's
    /// [`crate::Offer::extra_ports`]: ascending, distinct, not 0, at most [`crate::offer::MAX_EXTRA_PORTS`].
    pub extra_ports: Vec<u16>,
}

impl Encode for Order {
    fn encode(&self, w: &mut Writer) {
        self.buyer.encode(w);
        self.provider.encode(w);
        self.pool.encode(w);
        w.u64(self.offer_id);
        w.u64(self.offer_sequence);
        w.str(&self.image);
        w.u32(self.hours);
        w.str(&self.ssh_public_key);
        w.option(&self.refund_address);
        w.u64(self.created_at);
        w.u64(self.nonce);
        self.chain.encode(w);
        w.seq(&self.extra_ports);
    }
}

impl Decode for Order {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Order {
            buyer: NodeId::decode(r)?,
            provider: NodeId::decode(r)?,
            pool: PoolId::decode(r)?,
            offer_id: r.u64("offer id")?,
            offer_sequence: r.u64("offer sequence")?,
            image: r.str("image", crate::offer::MAX_LABEL)?,
            hours: r.u32("hours")?,
            ssh_public_key: r.str("ssh key", MAX_SSH_KEY)?,
            refund_address: match r.u8("refund address")? {
                0 => None,
                1 => Some(r.str("refund address", MAX_ADDRESS)?),
                tag => {
                    return Err(DecodeError::InvalidTag {
                        field: "refund address",
                        tag,
                    })
                }
            },
            created_at: r.u64("created at")?,
            nonce: r.u64("nonce")?,
            chain: Chain::decode(r)?,
            extra_ports: r.seq("extra ports", crate::offer::MAX_EXTRA_PORTS)?,
        })
    }
}
