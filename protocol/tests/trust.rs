//! Trust from evidence: what a node counts, what it refuses to count, and how admission follows.

mod common;

use common::*;
use proptest::prelude::*;
use xov_protocol::trust::{TRUSTED_MIN_SCORE, UNBONDED_CAP_SATS};
use xov_protocol::validate::*;
use xov_protocol::*;

fn bond(value: u64) -> BondStatus {
    bond_at(0, value)
}

/// A bond at output `vout` of the same transaction: one bond outpoint backs one identity, so each bonded
/// node of a test needs its own.
fn bond_at(vout: u32, value: u64) -> BondStatus {
    BondStatus {
        txid: [3; 32],
        vout,
        amount_sats: value,
        locktime: 1_000_000,
        value_sats: value,
        spent: false,
        checked_at_height: 900_000,
    }
}

#[test]
fn a_receipt_with_either_signature_forged_is_rejected_and_not_counted() {
    let (p, b, mallory) = (key(1), key(2), key(3));
    let honest = receipt(1, &p, &b, 50_000, NOW);
    // Mallory writes a receipt in the provider's name and countersigns it as the buyer... with her own key.
    let body = honest.receipt().clone();
    let not_the_provider = SignedReceipt::from_parts(body.clone(), [0; 64], *honest.buyer_sig());
    let not_the_buyer = SignedReceipt::from_parts(
        body.clone(),
        *honest.provider_sig(),
        *receipt(1, &p, &mallory, 50_000, NOW).buyer_sig(),
    );
    let mut ledger = TrustLedger::new();
    ledger.set_bond(p.node_id(), bond(1_000_000)).unwrap();
    for (forged, signer) in [
        (not_the_provider, p.node_id()),
        (not_the_buyer, b.node_id()),
    ] {
        assert_eq!(
            validate_receipt(&forged, NOW),
            Err(ValidationError::BadSignature(signer))
        );
        let err = ledger.add_receipt(forged, NOW).unwrap_err();
        assert!(err.is_forgery(), "{err}");
    }
    assert!(ledger.is_empty());
    assert_eq!(ledger.score(&b.node_id(), NOW).tier, Tier::Anonymous);
}

#[test]
fn a_double_counted_lease_counts_for_nothing() {
    let (p, b) = (key(1), key(2));
    let first = receipt(1, &p, &b, 50_000, NOW);
    let inflated = receipt(1, &p, &b, 5_000_000, NOW);
    let mut ledger = TrustLedger::new();
    ledger.set_bond(p.node_id(), bond(10_000_000)).unwrap();
    assert_eq!(ledger.add_receipt(first.clone(), NOW), Ok(Added::New));
    assert_eq!(ledger.score(&b.node_id(), NOW).score, 50_000);
    assert_eq!(
        ledger.add_receipt(inflated, NOW),
        Err(TrustError::Conflict {
            lease_id: first.id()
        })
    );
    let rep = ledger.score(&b.node_id(), NOW);
    assert_eq!((rep.score, rep.conflicted_receipts), (0, 1));
    // Another lease between the same parties still counts.
    ledger
        .add_receipt(receipt(2, &p, &b, 20_000, NOW), NOW)
        .unwrap();
    assert_eq!(ledger.score(&b.node_id(), NOW).score, 20_000);
}

#[test]
fn receipt_rules_are_enforced_one_by_one() {
    let (p, b) = (key(1), key(2));
    let signed = |f: &dyn Fn(&mut Receipt)| {
        let mut r = receipt(1, &p, &b, 1000, NOW).receipt().clone();
        f(&mut r);
        ProviderReceipt::sign(r, &p).countersign(&b).unwrap()
    };
    let field = |f: &dyn Fn(&mut Receipt)| match validate_receipt(&signed(f), NOW) {
        Err(ValidationError::OutOfRange { field, .. }) => field,
        other => panic!("expected OutOfRange, got {other:?}"),
    };
    assert_eq!(field(&|r| r.started_at = r.ended_at + 1), "ended_at");
    assert_eq!(
        field(&|r| {
            r.paid_sats = 10;
            r.refunded_sats = 11
        }),
        "refunded"
    );
    assert_eq!(
        field(&|r| {
            r.paid_sats = 0;
            r.refunded_sats = 0
        }),
        "paid"
    );
    assert!(matches!(
        validate_receipt(
            &signed(&|r| r.ended_at = NOW + MAX_CLOCK_SKEW_SECS + 1),
            NOW
        ),
        Err(ValidationError::FromTheFuture { .. })
    ));
    assert!(matches!(
        validate_receipt(
            &signed(&|r| {
                r.ended_at = NOW - MAX_RECEIPT_AGE_SECS;
                r.started_at = r.ended_at
            }),
            NOW
        ),
        Err(ValidationError::Expired { .. })
    ));
    // Provider = buyer cannot even be countersigned honestly by another key; signed by the one key it is
    // still refused.
    let mut selfie = receipt(1, &p, &b, 1000, NOW).receipt().clone();
    selfie.buyer = p.node_id();
    let selfie = ProviderReceipt::sign(selfie, &p).countersign(&p).unwrap();
    assert!(matches!(
        validate_receipt(&selfie, NOW),
        Err(ValidationError::OutOfRange { field: "buyer", .. })
    ));
}

#[test]
fn bond_proof_and_load_report_rules_are_enforced() {
    let k = key(1);
    let check = |f: &dyn Fn(&mut BondProof)| {
        let mut b = bond_proof(&k, 100_000, 1000);
        f(&mut b);
        validate_bond_proof(&Signed::sign(b, &k), NOW)
    };
    assert_eq!(check(&|_| {}), Ok(()));
    let field = |r: Result<(), ValidationError>| match r {
        Err(ValidationError::OutOfRange { field, .. }) => field,
        other => panic!("expected OutOfRange, got {other:?}"),
    };
    assert_eq!(field(check(&|b| b.amount_sats = 0)), "bond amount");
    assert_eq!(
        field(check(&|b| b.amount_sats = 2_100_000_000_000_001)),
        "bond amount"
    );
    assert_eq!(field(check(&|b| b.locktime = 0)), "bond locktime");
    assert_eq!(field(check(&|b| b.locktime = 500_000_000)), "bond locktime");
    assert_eq!(field(check(&|b| b.bond_pubkey[0] = 4)), "bond pubkey");
    assert_eq!(
        field(check(&|b| b.binding_sig = [0; 64])),
        "binding signature"
    );
    assert!(matches!(
        check(&|b| b.created_at = NOW + 301),
        Err(ValidationError::FromTheFuture { .. })
    ));
    let forged = Signed::sign(bond_proof(&k, 100_000, 1000), &key(2));
    assert_eq!(
        validate_bond_proof(&forged, NOW),
        Err(ValidationError::BadSignature(k.node_id()))
    );

    assert_eq!(
        validate_load_report(&load_report(&k, 2, 300, NOW), NOW),
        Ok(())
    );
    assert_eq!(
        validate_load_report(&load_report(&k, 0, 0, NOW), NOW),
        Ok(())
    );
    for (leases, rate) in [(0, 5), (2, 0), (3, 2)] {
        assert!(matches!(
            validate_load_report(&load_report(&k, leases, rate, NOW), NOW),
            Err(ValidationError::OutOfRange {
                field: "running sats per hour",
                ..
            })
        ));
    }
    assert!(matches!(
        validate_load_report(&load_report(&k, 1, 1, NOW - MAX_LOAD_REPORT_AGE_SECS), NOW),
        Err(ValidationError::Expired { .. })
    ));
    assert!(matches!(
        validate_load_report(&load_report(&k, 1, 1, NOW + 301), NOW),
        Err(ValidationError::FromTheFuture { .. })
    ));
}

#[test]
fn the_bond_binding_message_is_pinned() {
    // The wallet signs these 32 bytes with the bond key; changing them orphans every published bond.
    let m = bond_binding_message(&key(1).node_id(), &[7; 32], 1);
    let hex: String = m.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        include_str!("bond-binding-vector.hex").trim(),
        "bond binding message changed"
    );
}

#[test]
fn an_anonymous_buyer_is_refused_in_a_busy_pool_and_admitted_with_the_bond_it_was_told_of() {
    let policy = AdmissionPolicy::default();
    let buyer = key(2).node_id();
    let mut ledger = TrustLedger::new();
    let mut load = PoolLoad::default();
    for (i, rate) in [(10u8, 30_000u64), (11, 40_000)] {
        load.observe(&load_report(&key(i), 10, rate, NOW - 5));
    }
    // Both reporters offer enough capacity to back their reports.
    let mut book = OfferBook::new();
    for i in [10u8, 11] {
        book.insert(Signed::sign(offer(&key(i), 1, 1, 20_000), &key(i)), NOW)
            .unwrap();
    }
    let global = load.global_sats_per_hour(&pool(), NOW, &book.load_caps(&pool(), NOW));
    assert_eq!(global, 70_000);
    let refusal = admit(&policy, &ledger.score(&buyer, NOW), 0, 0, 600, global).unwrap_err();
    let needed = refusal.bond_value_needed_sats.expect("a bond would help");
    assert!(refusal.to_string().contains(&format!("{needed} sats")));
    // A bond worth one sat less is not enough; the value named is.
    ledger.set_bond(buyer, bond(needed - 1)).unwrap();
    assert!(admit(&policy, &ledger.score(&buyer, NOW), 0, 0, 600, global).is_err());
    ledger.set_bond(buyer, bond(needed)).unwrap();
    assert_eq!(
        admit(&policy, &ledger.score(&buyer, NOW), 0, 0, 600, global),
        Ok(())
    );
    // Spending the bond takes it away again.
    let mut spent = bond(needed);
    spent.spent = true;
    ledger.set_bond(buyer, spent).unwrap();
    assert!(admit(&policy, &ledger.score(&buyer, NOW), 0, 0, 600, global).is_err());
}

/// Attack 3 of issue 15: one identity gossiping a huge load report must not shut the pool to new buyers.
#[test]
fn a_load_report_counts_only_as_far_as_the_reporters_live_offers_back_it() {
    struct Case {
        name: &'static str,
        /// The reporter's offers in the pool: (price, capacity).
        offers: &'static [(u64, u32)],
        reported_sats_per_hour: u64,
        /// The pool rate admission then sees.
        want_rate: u64,
    }
    let cases = [
        Case {
            name: "an identity with no offers does not change admission",
            offers: &[],
            reported_sats_per_hour: 1_000_000_000,
            want_rate: 0,
        },
        Case {
            name: "an inflated report by a real provider is capped by its offers",
            offers: &[(500, 4), (1000, 2)],
            reported_sats_per_hour: 1_000_000_000,
            want_rate: 500 * 4 + 1000 * 2,
        },
        Case {
            name: "an honest report within the offers counts in full",
            offers: &[(500, 4)],
            reported_sats_per_hour: 1500,
            want_rate: 1500,
        },
    ];
    let policy = AdmissionPolicy::default();
    let buyer = TrustLedger::new().score(&key(2).node_id(), NOW);
    let unloaded = policy.limits(Tier::Anonymous, 0);
    for c in cases {
        let reporter = key(10);
        let mut book = OfferBook::new();
        for (i, &(price, capacity)) in c.offers.iter().enumerate() {
            let mut o = offer(&reporter, i as u64, 1, price);
            o.capacity = capacity;
            book.insert(Signed::sign(o, &reporter), NOW).unwrap();
        }
        // An expired offer backs nothing.
        let mut gone = offer(&reporter, 99, 1, 1_000_000);
        gone.expires_at = NOW + 1;
        book.insert(Signed::sign(gone, &reporter), NOW).unwrap();
        let mut load = PoolLoad::default();
        assert!(load.observe(&load_report(
            &reporter,
            1000,
            c.reported_sats_per_hour,
            NOW - 5
        )));
        let rate = load.global_sats_per_hour(&pool(), NOW + 1, &book.load_caps(&pool(), NOW + 1));
        assert_eq!(rate, c.want_rate, "{}", c.name);
        if c.offers.is_empty() {
            assert_eq!(
                policy.limits(buyer.tier, rate),
                unloaded,
                "{}: admission unchanged",
                c.name
            );
            assert_eq!(
                admit(&policy, &buyer, 0, 0, 600, rate),
                Ok(()),
                "{}",
                c.name
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// More sats in any receipt, or another receipt, never lowers the score of the receipt's own parties.
    /// (It may lower a third node's: a bond's lending is capped in total, so more weight with one node
    /// shrinks the others' shares of it. Together, what bonds lend never exceeds their value.)
    #[test]
    fn score_is_monotone_in_sats(
        receipts in proptest::collection::vec(arb_signed_receipt(), 1..16),
        bonded in proptest::collection::vec(0u64..2_000_000, 4),
        which in any::<prop::sample::Index>(), extra in 1u64..10_000_000,
    ) {
        let mut base = TrustLedger::with_local(key(4).node_id());
        let mut more = TrustLedger::with_local(key(4).node_id());
        for (i, v) in bonded.iter().enumerate() {
            if *v > 0 {
                base.set_bond(key(i as u8 + 1).node_id(), bond_at(i as u32, *v)).unwrap();
                more.set_bond(key(i as u8 + 1).node_id(), bond_at(i as u32, *v)).unwrap();
            }
        }
        let i = which.index(receipts.len());
        for (j, r) in receipts.iter().enumerate() {
            let _ = base.add_receipt(r.clone(), NOW);
            let mut body = r.receipt().clone();
            if j == i {
                body.paid_sats += extra;
            }
            let p = (1..=4).map(key).find(|k| k.node_id() == body.provider).unwrap();
            let b = (1..=4).map(key).find(|k| k.node_id() == body.buyer).unwrap();
            let _ = more.add_receipt(ProviderReceipt::sign(body, &p).countersign(&b).unwrap(), NOW);
        }
        let changed = receipts[i].receipt();
        for node in [changed.provider, changed.buyer] {
            let (a, b) = (base.score(&node, NOW), more.score(&node, NOW));
            prop_assert!(b.score >= a.score, "node {}: {} then {}", node, a.score, b.score);
            prop_assert!(b.tier >= a.tier);
        }
        for l in [&base, &more] {
            let lent: u64 = (1..=4).map(|n| l.score(&key(n).node_id(), NOW).bonded_receipt_weight_sats).sum();
            prop_assert!(lent <= bonded.iter().sum::<u64>(), "bonds worth {:?} lent {}", bonded, lent);
        }
        // Adding a receipt never lowers a score either (unless it double-counts a lease).
        let extra_receipt = receipt(200, &key(1), &key(2), extra, NOW);
        let before = base.score(&key(2).node_id(), NOW).score;
        if base.add_receipt(extra_receipt, NOW).is_ok() {
            prop_assert!(base.score(&key(2).node_id(), NOW).score >= before);
        }
    }

    /// Without any bond around, no number of receipts lifts a node out of Anonymous.
    #[test]
    fn unbonded_receipts_alone_never_reach_basic(receipts in proptest::collection::vec(arb_signed_receipt(), 0..40)) {
        let mut ledger = TrustLedger::new();
        for r in receipts {
            let _ = ledger.add_receipt(r, NOW);
        }
        for n in 1..=4 {
            let rep = ledger.score(&key(n).node_id(), NOW);
            prop_assert!(rep.score <= UNBONDED_CAP_SATS);
            prop_assert_eq!(rep.tier, Tier::Anonymous);
        }
    }

    /// Anonymous limits never loosen as the pool's global rate grows, and reach zero leases eventually.
    #[test]
    fn anonymous_limits_tighten_as_the_pool_fills(
        base_leases in 0u32..100, base_rate in 0u64..10_000_000, reference in 1u64..1_000_000,
        g1 in 0u64..u64::MAX / 2, dg in 0u64..u64::MAX / 2,
    ) {
        let policy = AdmissionPolicy {
            anonymous: AnonymousLimits {
                max_concurrent_leases: base_leases,
                max_sats_per_hour: base_rate,
                reference_sats_per_hour: reference,
            },
            ..AdmissionPolicy::default()
        };
        let (a, b) = (policy.limits(Tier::Anonymous, g1), policy.limits(Tier::Anonymous, g1 + dg));
        prop_assert!(b.max_concurrent_leases <= a.max_concurrent_leases);
        prop_assert!(b.max_sats_per_hour <= a.max_sats_per_hour);
        prop_assert!(a.max_concurrent_leases <= base_leases && a.max_sats_per_hour <= base_rate);
        let full = policy.limits(Tier::Anonymous, reference.saturating_mul(base_leases as u64 + 1));
        prop_assert_eq!(full.max_concurrent_leases, 0);
        // A request admitted in the busier pool is admitted in the quieter one.
        let report = TrustReport::anonymous(key(1).node_id(), NOW);
        if admit(&policy, &report, 0, 0, 1, g1 + dg).is_ok() {
            prop_assert!(admit(&policy, &report, 0, 0, 1, g1).is_ok());
        }
    }

    /// Whatever a refusal says a bond must be worth, a bond of that value gets the same request in.
    #[test]
    fn the_bond_a_refusal_names_admits(
        running in 0u32..20, running_rate in 0u64..100_000, requested in 1u64..500_000,
        global in 0u64..1_000_000, own_bond in 0u64..50_000,
    ) {
        let policy = AdmissionPolicy::default();
        let buyer = key(2).node_id();
        let mut ledger = TrustLedger::new();
        if own_bond > 0 {
            ledger.set_bond(buyer, bond(own_bond)).unwrap();
        }
        if let Err(refusal) = admit(&policy, &ledger.score(&buyer, NOW), running, running_rate, requested, global) {
            prop_assert!(!refusal.to_string().is_empty());
            if let Some(value) = refusal.bond_value_needed_sats {
                prop_assert!(value > own_bond);
                ledger.set_bond(buyer, bond(value)).unwrap();
                prop_assert_eq!(
                    admit(&policy, &ledger.score(&buyer, NOW), running, running_rate, requested, global),
                    Ok(())
                );
            }
        }
    }
}

#[test]
fn the_top_tier_is_reachable_by_bond_alone() {
    let mut ledger = TrustLedger::new();
    ledger
        .set_bond(key(1).node_id(), bond(TRUSTED_MIN_SCORE))
        .unwrap();
    assert_eq!(ledger.score(&key(1).node_id(), NOW).tier, Tier::Trusted);
}

#[test]
fn a_receipt_reusing_an_honest_lease_id_under_other_keys_does_not_erase_the_honest_one() {
    let (a, b, x, y) = (key(1), key(2), key(5), key(6));
    let honest = receipt(1, &a, &b, 50_000, NOW);
    // Two throwaway keys sign a receipt with the honest lease's id.
    let fake = receipt(1, &x, &y, 9_000_000, NOW);
    assert_eq!(fake.id(), honest.id());
    let mut ledger = TrustLedger::new();
    ledger.set_bond(a.node_id(), bond(1_000_000)).unwrap();
    ledger.set_bond(b.node_id(), bond_at(1, 1_000_000)).unwrap();
    assert_eq!(ledger.add_receipt(honest.clone(), NOW), Ok(Added::New));
    assert_eq!(ledger.add_receipt(fake.clone(), NOW), Ok(Added::New));
    // The honest receipt still counts for both honest parties, nothing is conflicted.
    for n in [&a, &b] {
        let rep = ledger.score(&n.node_id(), NOW);
        assert_eq!(rep.conflicted_receipts, 0, "{rep:?}");
        assert_eq!(rep.bonded_receipt_weight_sats, 50_000, "{rep:?}");
        assert_eq!(rep.receipts_as_provider + rep.receipts_as_buyer, 1);
    }
    // The honest party gossiping its receipt again is not blamed for anything.
    assert_eq!(
        ledger.add_receipt(honest.clone(), NOW),
        Ok(Added::Duplicate)
    );
    // The fake one counts only for its own (unbonded) signers, as unbonded weight.
    let rep = ledger.score(&x.node_id(), NOW);
    assert_eq!(
        (
            rep.unbonded_receipt_weight_sats,
            rep.bonded_receipt_weight_sats
        ),
        (UNBONDED_CAP_SATS, 0)
    );
    assert_eq!(ledger.counted_receipts().count(), 2);
    // The other order gives the same scores.
    let mut other = TrustLedger::new();
    other.set_bond(a.node_id(), bond(1_000_000)).unwrap();
    other.set_bond(b.node_id(), bond_at(1, 1_000_000)).unwrap();
    other.add_receipt(fake, NOW).unwrap();
    other.add_receipt(honest, NOW).unwrap();
    for n in [&a, &b, &x, &y] {
        assert_eq!(
            other.score(&n.node_id(), NOW),
            ledger.score(&n.node_id(), NOW)
        );
    }
}

#[test]
fn one_bonded_node_lends_at_most_its_bond_in_total_to_fifty_fake_buyers() {
    const V: u64 = 100_000;
    let bonded = key(1);
    let mut ledger = TrustLedger::new();
    ledger.set_bond(bonded.node_id(), bond(V)).unwrap();
    let buyers: Vec<Keypair> = (0..50).map(|i| key(100 + i)).collect();
    for (i, buyer) in buyers.iter().enumerate() {
        ledger
            .add_receipt(receipt(i as u8, &bonded, buyer, 5_000_000, NOW), NOW)
            .unwrap();
    }
    let lent: u64 = buyers
        .iter()
        .map(|b| ledger.score(&b.node_id(), NOW).bonded_receipt_weight_sats)
        .sum();
    assert!(lent <= V, "one bond of {V} lent {lent} in total");
    // Shared in proportion: each of the 50 equal receipts gets a fiftieth.
    assert_eq!(
        ledger
            .score(&buyers[0].node_id(), NOW)
            .bonded_receipt_weight_sats,
        V / 50
    );
}

#[test]
fn a_second_identity_presenting_the_same_bond_outpoint_gets_nothing() {
    let (owner, sybil) = (key(1).node_id(), key(2).node_id());
    let mut ledger = TrustLedger::new();
    ledger.set_bond(owner, bond(50_000)).unwrap();
    assert_eq!(
        ledger.set_bond(sybil, bond(50_000)),
        Err(BondStatusError::OutpointTaken {
            txid: [3; 32],
            vout: 0,
            owner,
            claimant: sybil
        })
    );
    assert_eq!(ledger.score(&owner, NOW).bond_value_sats, 50_000);
    assert_eq!(ledger.score(&sybil, NOW).bond_value_sats, 0);
    assert_eq!(ledger.score(&sybil, NOW).tier, Tier::Anonymous);
}
