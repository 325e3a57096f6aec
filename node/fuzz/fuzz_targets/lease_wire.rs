#![no_main]

//! The direct lease channel (`/xov/lease/4`): the input is what a peer sends, decoded as libp2p's cbor codec
//! decodes it into a `LeaseRequest` (provider side) and into a `LeaseResponse` (buyer side). Every byte string
//! inside is then taken the way the lease driver takes it:
//!
//! - `Order`: decoded as `Signed<Order>`, `validate_order`, then the provider's pure admission checks
//!   (`check_order_parties` with the signer as the sending peer, `check_order` against the provider's offer);
//!   a refusal must display.
//! - `Notice`: decoded as `Signed<LeaseNotice>` and `validate_notice`d. Then, since a lease's counterparty can
//!   sign whatever it likes, the notice's body is re-signed by the simulator's counterparty for its lease and
//!   delivered to that side's lease machine (through the driver's `apply_input`, as `on_notice` does).
//! - `BidAnswer`: each offer decoded and `validate_offer`ed, then the whole answer given to a `BidBoard` with
//!   the bid open; what the board keeps must be valid, the answering provider's own, in the bid's pool, on the
//!   buyer's chain and meet the bid, and at most 8.
//! - `Invoice`: decoded as `Signed<Invoice>`, `validate_invoice`, compared with the order as the buyer does,
//!   its address checked for the buyer's network and turned into a payment URI.
//!
//! Nothing may panic; accepted values must re-encode to what they decode from.

use libfuzzer_sys::fuzz_target;
use xov_node::lease::machine::{self, Input};
use xov_node::market::bids::BidBoard;
use xov_node::network::lease_wire::{LeaseRequest, LeaseResponse};
use xov_node::sim::Side;
use xov_node_fuzz::{
    buyer_bid, buyer_key, cbor_decode, check_cbor_roundtrip, lease_order, provider_key,
    provider_offer, world_with_lease, CHAIN, NOW,
};
use xov_protocol::validate::{validate_invoice, validate_notice, validate_offer, validate_order};
use xov_protocol::{Invoice, LeaseNotice, Offer, Order, Signed};

fn order(bytes: &[u8]) {
    let Ok(order) = Signed::<Order>::from_bytes(bytes) else {
        return;
    };
    if validate_order(&order, NOW).is_err() {
        return;
    }
    assert!(order.verify(), "a validated order's signature must verify");
    let o = order.body();
    let me = provider_key().node_id();
    let refusal = machine::check_order_parties(o, Some(o.buyer), &me, CHAIN)
        .and_then(|()| machine::check_order(o, provider_offer().body()));
    if let Err(why) = refusal {
        let _ = why.to_string();
        let _ = why.is_retryable_with_newer_offer();
    }
}

fn notice(bytes: &[u8]) {
    let Ok(n) = Signed::<LeaseNotice>::from_bytes(bytes) else {
        return;
    };
    if validate_notice(&n, NOW).is_ok() {
        assert!(n.verify(), "a validated notice's signature must verify");
    }
    // The counterparty, signing what it likes about the lease both hold: the provider hears the buyer, the
    // buyer hears the provider.
    for to in [Side::Provider, Side::Buyer] {
        let (mut w, id) = world_with_lease();
        let order = lease_order(&w, &id);
        let from = match to {
            Side::Provider => buyer_key(),
            Side::Buyer => provider_key(),
        };
        let mut body = n.body().clone();
        body.from = from.node_id();
        body.lease_id = order.id();
        let forged = Signed::sign(body, &from);
        if validate_notice(&forged, NOW).is_err() {
            continue;
        }
        let rec = w.node(to).mem[&id].clone();
        if rec.counterparty != forged.body().from.to_string() {
            continue;
        }
        w.input(to, &id, Input::Notice(forged.body().clone()));
        // Whatever the notice said, the machine goes on: what it asked for runs, and it ticks.
        w.now += 30;
        w.run_ops();
        w.tick_all();
        w.run_ops();
    }
}

fn bid_answer(bid_id: u64, offers: &[Vec<u8>]) {
    let mut from = None;
    for bytes in offers {
        if let Ok(o) = Signed::<Offer>::from_bytes(bytes) {
            if validate_offer(&o, NOW, None).is_ok() {
                assert!(o.verify(), "a validated offer's signature must verify");
            }
            from.get_or_insert(o.body().provider);
        }
    }
    let from = from.unwrap_or_else(|| provider_key().node_id());
    let board = BidBoard::default();
    let bid = buyer_bid(bid_id);
    board.open(bid.clone());
    // The buyer knows the bid pool's charter (the public pool's rules).
    let charter_of = |p: &xov_protocol::PoolId| {
        (*p == bid.pool).then(|| xov_protocol::public_charter(CHAIN).into_body())
    };
    let answered = board.answer(Some(from), bid_id, offers, CHAIN, charter_of, NOW);
    let kept = board.close(bid_id);
    match answered {
        Ok(n) => assert!(n <= kept.len()),
        Err(why) => assert!(!why.to_string().is_empty()),
    }
    assert!(kept.len() <= 8, "an answer kept {} offers", kept.len());
    for o in &kept {
        assert!(
            validate_offer(o, NOW, None).is_ok(),
            "kept an invalid offer"
        );
        let b = o.body();
        assert_eq!(b.provider, from, "kept another provider's offer");
        assert_eq!(b.pool, bid.pool);
        assert_eq!(b.chain, CHAIN);
        assert!(
            bid.demand.matches(b),
            "kept an offer that does not meet the bid"
        );
    }
    // Answering a bid that is not open is refused, never a panic.
    assert!(BidBoard::default()
        .answer(Some(from), bid_id, offers, CHAIN, |_| None, NOW)
        .is_err());
}

fn invoice(bytes: &[u8]) {
    let Ok(invoice) = Signed::<Invoice>::from_bytes(bytes) else {
        return;
    };
    if validate_invoice(&invoice, NOW).is_err() {
        return;
    }
    assert!(
        invoice.verify(),
        "a validated invoice's signature must verify"
    );
    let i = invoice.body();
    // The buyer's comparison with its order (the fixture's), then the address for its network.
    let (w, id) = world_with_lease();
    let order = lease_order(&w, &id);
    let o = provider_offer();
    let _matches = i.provider == o.body().provider
        && i.buyer == buyer_key().node_id()
        && i.lease_id == order.id()
        && i.amount_sats == xov_protocol::price_for_hours(o.body().price_sats_per_hour, 1);
    for network in [
        xov_wallet::Network::Regtest,
        xov_wallet::Network::Signet,
        xov_wallet::Network::Bitcoin,
    ] {
        let _ = xov_wallet::check_address(&i.address, network);
    }
    let _ = xov_wallet::bip21::uri(&i.address, Some(i.amount_sats), Some("xov lease"));
}

fuzz_target!(|data: &[u8]| {
    if let Some(req) = cbor_decode::<LeaseRequest>(data) {
        check_cbor_roundtrip(&req);
        match req {
            LeaseRequest::Order(bytes) => order(&bytes),
            LeaseRequest::Notice(bytes) => notice(&bytes),
            LeaseRequest::BidAnswer { bid_id, offers } => bid_answer(bid_id, &offers),
        }
    }
    if let Some(resp) = cbor_decode::<LeaseResponse>(data) {
        check_cbor_roundtrip(&resp);
        match resp {
            LeaseResponse::Invoice(bytes) => invoice(&bytes),
            LeaseResponse::Refused(why) => {
                let _ = why.to_string();
                let _ = why.is_retryable_with_newer_offer();
            }
            LeaseResponse::BidNotTaken(why) => {
                let _ = why.len();
            }
            LeaseResponse::Ack | LeaseResponse::NotStored => {}
        }
    }
});
