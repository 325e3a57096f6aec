//! Who a gossiped message is from: its author's identity, proven by the author's signature, as opposed to
//! the peer that relayed it to us. Rate limits on gossip apply to the origin (this file), so an honest relay
//! that forwards many parties' messages is never blamed for their volume, and one party cannot get more
//! through by sending via many relays.
//!
//! Invariants:
//! - [`verified_origin`] names an origin only when the author's signature checks (both signatures for a
//!   dual-signed receipt, whose origin is its provider): nobody can spend another identity's allowance by
//!   forging messages in its name.
//! - The check costs one or two ed25519 verifications and is bounded by the per-peer limit in front of it.

use xov_protocol::{AnyMessage, Message, NodeId, Signed};

fn signed<T: Message>(m: &Signed<T>) -> Option<NodeId> {
    m.verify().then(|| *m.body().author())
}

/// The message's author when its signature(s) verify, `None` otherwise (a forgery: the relay is to blame).
pub fn verified_origin(msg: &AnyMessage) -> Option<NodeId> {
    match msg {
        AnyMessage::Offer(m) => signed(m),
        AnyMessage::OfferWithdrawal(m) => signed(m),
        AnyMessage::Bid(m) => signed(m),
        AnyMessage::PoolCharter(m) => signed(m),
        AnyMessage::Order(m) => signed(m),
        AnyMessage::Invoice(m) => signed(m),
        AnyMessage::LeaseNotice(m) => signed(m),
        AnyMessage::BondProof(m) => signed(m),
        AnyMessage::LoadReport(m) => signed(m),
        AnyMessage::Receipt(r) => (r.provider_signature_valid() && r.buyer_signature_valid())
            .then_some(r.receipt().provider),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use xov_protocol::{Keypair, LoadReport, PoolId};

    fn report(author: &Keypair, provider: NodeId) -> AnyMessage {
        AnyMessage::LoadReport(Signed::sign(
            LoadReport {
                provider,
                pool: PoolId([7; 32]),
                running_leases: 1,
                running_sats_per_hour: 1_000,
                at: 1_700_000_000,
            },
            author,
        ))
    }

    #[test]
    fn the_origin_is_the_signing_author_and_a_forgery_has_none() {
        let (alice, mallory) = (Keypair::generate(&mut OsRng), Keypair::generate(&mut OsRng));
        assert_eq!(
            verified_origin(&report(&alice, alice.node_id())),
            Some(alice.node_id())
        );
        assert_eq!(
            verified_origin(&report(&mallory, alice.node_id())),
            None,
            "signed by someone else in alice's name"
        );
    }
}
