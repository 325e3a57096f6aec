//! Property tests of the encoding, signatures and the offer book.

mod common;

use common::*;
use proptest::prelude::*;
use xov_protocol::validate::*;
use xov_protocol::*;

fn round_trip<T: Message + PartialEq + std::fmt::Debug>(msg: &Signed<T>) {
    let bytes = msg.to_bytes();
    let back = Signed::<T>::from_bytes(&bytes).expect("own encoding decodes");
    assert_eq!(&back, msg);
    assert!(back.verify(), "signature survives the round trip");
    // Canonical: re-encoding the decoded value yields the same bytes, and so the same id.
    assert_eq!(back.to_bytes(), bytes);
    assert_eq!(back.id(), msg.id());
    // The untyped decoder agrees.
    assert_eq!(AnyMessage::from_bytes(&bytes).unwrap().to_bytes(), bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn offers_round_trip(o in arb_signed_offer()) { round_trip(&o); }

    #[test]
    fn withdrawals_round_trip(w in arb_signed_withdrawal()) { round_trip(&w); }

    #[test]
    fn bids_round_trip(b in arb_signed_bid()) { round_trip(&b); }

    #[test]
    fn charters_round_trip(c in arb_signed_charter()) { round_trip(&c); }

    #[test]
    fn bond_proofs_round_trip(b in arb_signed_bond_proof()) {
        round_trip(&b);
        prop_assert_eq!(validate_bond_proof(&b, NOW), Ok(()));
    }

    #[test]
    fn load_reports_round_trip(l in arb_signed_load_report()) {
        round_trip(&l);
        prop_assert_eq!(validate_load_report(&l, NOW), Ok(()));
    }

    /// Receipts have their own (dual-signed) form; it round-trips like every other message.
    #[test]
    fn receipts_round_trip(r in arb_signed_receipt()) {
        let bytes = r.to_bytes();
        let back = SignedReceipt::from_bytes(&bytes).expect("own encoding decodes");
        prop_assert_eq!(&back, &r);
        prop_assert!(back.verify());
        prop_assert_eq!(back.to_bytes(), bytes.clone());
        prop_assert_eq!(back.message_id(), r.message_id());
        prop_assert_eq!(back.id(), r.receipt().lease_id);
        let any = AnyMessage::from_bytes(&bytes).unwrap();
        prop_assert_eq!(any.kind(), Kind::Receipt);
        prop_assert_eq!(any.to_bytes(), bytes);
        prop_assert_eq!(any.id(), r.message_id());
        prop_assert_eq!(validate_receipt(&r, NOW), Ok(()));
    }

    /// Flipping any single bit of a receipt makes it fail to decode, fail to verify, or fail validation.
    #[test]
    fn any_single_bit_tamper_of_a_receipt_fails(r in arb_signed_receipt(), bit in any::<prop::sample::Index>()) {
        let mut bytes = r.to_bytes();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        if let Ok(m) = SignedReceipt::from_bytes(&bytes) {
            prop_assert!(!m.verify(), "tampered bit {} still verifies", i);
        }
    }

    /// Whatever bytes a decoder accepts re-encode to exactly those bytes: no two encodings of one value.
    #[test]
    fn accepted_garbage_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = AnyMessage::from_bytes(&bytes) {
            prop_assert_eq!(m.to_bytes(), bytes);
        }
    }

    /// Arbitrary bytes placed in a valid frame: decoding either fails cleanly or is canonical.
    #[test]
    fn framed_garbage_never_panics(kind in 1u8..=10, body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut bytes = vec![signed::VERSION, kind];
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&[0u8; 64]);
        if let Ok(m) = AnyMessage::from_bytes(&bytes) {
            prop_assert_eq!(m.to_bytes(), bytes);
        }
    }

    /// Flipping any single bit of a signed offer makes it fail to decode or fail to verify.
    #[test]
    fn any_single_bit_tamper_fails(o in arb_signed_offer(), bit in any::<prop::sample::Index>()) {
        let mut bytes = o.to_bytes();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        match Signed::<Offer>::from_bytes(&bytes) {
            Err(_) => {}
            Ok(m) => prop_assert!(!m.verify(), "tampered bit {} still verifies", i),
        }
    }

    /// Any arrival order of the same offers and withdrawals ends in the same book.
    #[test]
    fn supersession_is_order_independent(
        offers in proptest::collection::vec(arb_signed_offer(), 1..24),
        withdrawals in proptest::collection::vec(arb_signed_withdrawal(), 0..6),
        seed in any::<u64>(),
    ) {
        #[derive(Clone)]
        enum Msg { O(Box<Signed<Offer>>), W(Signed<OfferWithdrawal>) }
        let mut msgs: Vec<Msg> = offers.into_iter().map(|o| Msg::O(Box::new(o))).chain(withdrawals.into_iter().map(Msg::W)).collect();
        let apply = |msgs: &[Msg]| {
            let mut book = OfferBook::new();
            for m in msgs {
                match m {
                    Msg::O(o) => { let _ = book.insert((**o).clone(), NOW); }
                    Msg::W(w) => { let _ = book.withdraw(w, NOW); }
                }
            }
            book
        };
        let reference = apply(&msgs).fingerprint();
        // Deterministic Fisher-Yates shuffles driven by the seed.
        let mut state = seed | 1;
        for _ in 0..4 {
            for i in (1..msgs.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                msgs.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(apply(&msgs).fingerprint(), reference.clone());
        }
    }

    /// Query results are exactly the live matching offers, cheapest first: compared with a linear scan.
    #[test]
    fn query_equals_linear_scan(
        offers in proptest::collection::vec(arb_signed_offer(), 0..40),
        min_vcpus in 0u32..300, max_price in proptest::option::of(1u64..100_000),
        limit in 0usize..10, now_offset in 0u64..4000,
    ) {
        let mut book = OfferBook::new();
        for o in &offers { let _ = book.insert(o.clone(), NOW - 200); }
        let now = NOW - 200 + now_offset;
        let q = OfferQuery { pool: Some(pool()), demand: Demand { min_vcpus, max_price_sats_per_hour: max_price, ..Demand::default() }, limit };
        let got: Vec<_> = book.query(&q, now).into_iter().map(|o| o.id()).collect();
        let mut expected: Vec<_> = book.iter()
            .filter(|o| o.body().expires_at > now && q.demand.matches(o.body()))
            .map(|o| ((o.body().price_sats_per_hour, OfferKey::of(o.body())), o.id()))
            .collect();
        expected.sort();
        let mut expected: Vec<_> = expected.into_iter().map(|(_, id)| id).collect();
        if limit > 0 { expected.truncate(limit); }
        prop_assert_eq!(got, expected);
    }

    /// Every generated offer that is live passes validation; the same offer signed by another key does not.
    #[test]
    fn validation_accepts_honest_and_rejects_foreign_signatures(o in arb_signed_offer()) {
        let body = o.body().clone();
        let live = body.expires_at > NOW;
        let ttl_ok = body.expires_at - body.created_at >= 60;
        if live && ttl_ok {
            prop_assert_eq!(validate_offer(&o, NOW, None), Ok(()));
            let forged = Signed::sign(body.clone(), &key(99));
            prop_assert_eq!(validate_offer(&forged, NOW, None), Err(ValidationError::BadSignature(body.provider)));
        }
    }
}

/// The encoding of a fixed offer must never change, on any platform: its id is pinned here. If this fails, the
/// wire format changed and needs a new version number, not a new expected value. (Version 2 pinned a new
/// value: offers gained their chain, regtest here; version 3: offers gained the ports a buyer may open.)
#[test]
fn canonical_encoding_is_stable() {
    let mut body = offer(&key(1), 7, 3, 1200);
    body.extra_ports = vec![80, 443];
    let o = Signed::sign(body, &key(1));
    let bytes = o.to_bytes();
    assert_eq!(bytes[0], 3, "version byte");
    let end = bytes.len() - 64;
    assert_eq!(
        &bytes[end - 6..end],
        &[0, 2, 0, 80, 1, 187],
        "the extra ports end the body: their count, then each, big-endian"
    );
    assert_eq!(
        &bytes[end - 6 - 32..end - 6],
        Chain::REGTEST.as_bytes(),
        "the chain before them"
    );
    assert_eq!(bytes[1], Kind::Offer as u8);
    assert_eq!(
        o.id().to_string(),
        include_str!("offer-vector.id").trim(),
        "wire format of Offer changed"
    );
}
