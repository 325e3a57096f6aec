//! Invoices: one fresh address per lease, and what the payments seen on it mean.
//!
//! Classification is a pure function of the invoice, the payments to its address, the chain tip and the
//! provider's policy, so it is tested without a chain and re-derived from scratch after every chain update
//! (a reorg simply yields a different answer).
//!
//! Invariants:
//! - A payment counts once it has `min_confirmations` (at least 1). Before that it counts only on the
//!   zero-conf allowance: its own amount is at most `zero_conf_max_sat`, it does not signal RBF while
//!   unconfirmed, and the sats an invoice counts this way stay within `zero_conf_max_sat` in total, charged
//!   in seen order. The invoice's amount plays no part: a large top-up to a small invoice's address does
//!   not count unconfirmed (any mempool transaction is replaceable under full RBF; the cap bounds the loss).
//! - `zero_conf_sat` is part of `settled_sat`, never on top of it.

use serde::{Deserialize, Serialize};

/// When the provider counts money as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentPolicy {
    /// Confirmations a payment needs.
    pub min_confirmations: u32,
    /// Payments without enough confirmations count at once when the payment itself is at most this many
    /// sats and the paying transaction does not signal replace-by-fee; per invoice, at most this many sats
    /// count that way in total (0 = never).
    pub zero_conf_max_sat: u64,
}

impl Default for PaymentPolicy {
    fn default() -> Self {
        PaymentPolicy {
            min_confirmations: 1,
            zero_conf_max_sat: 0,
        }
    }
}

/// One output paying an invoice's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub txid: String,
    pub vout: u32,
    pub amount_sat: u64,
    /// Height of the block that holds it; None while unconfirmed.
    pub height: Option<u32>,
    /// When it was first seen (mempool) or its block's time, unix seconds.
    pub seen_at: u64,
    /// Whether the paying transaction signals replace-by-fee.
    pub rbf: bool,
}

impl Payment {
    pub fn confirmations(&self, tip: u32) -> u32 {
        self.height.map_or(0, |h| tip.saturating_sub(h) + 1)
    }
}

/// Where an invoice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Nothing seen.
    Unpaid,
    /// Payments seen that do not count yet (unconfirmed, or below the confirmations required).
    Seen,
    /// Counted payments cover part of the amount.
    Partial,
    /// Counted payments cover the amount (later payments are top-ups).
    Paid,
    /// Counted payments exceed the amount by more than a top-up would explain at the time it was paid.
    Overpaid,
    /// Covered, but the payment that completed it came after the invoice expired.
    PaidLate,
    /// Expired with nothing counted.
    Expired,
}

impl InvoiceStatus {
    /// Whether the invoice's amount is covered (the lease may start).
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            InvoiceStatus::Paid | InvoiceStatus::Overpaid | InvoiceStatus::PaidLate
        )
    }
}

/// An invoice and what is known about its payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// The caller's id (the lease id).
    pub id: String,
    pub address: String,
    /// Index of the address on the wallet's external keychain.
    pub index: u32,
    pub amount_sat: u64,
    pub created_at: u64,
    pub expires_at: u64,
    pub policy: PaymentPolicy,
    pub status: InvoiceStatus,
    /// Sum of payments that count under the policy.
    pub settled_sat: u64,
    /// The part of `settled_sat` counted on the zero-conf allowance (not yet at `min_confirmations`).
    #[serde(default)]
    pub zero_conf_sat: u64,
    /// Sum of payments seen that do not count yet.
    pub pending_sat: u64,
    pub payments: Vec<Payment>,
}

impl Invoice {
    /// The BIP21 URI for paying it.
    pub fn uri(&self) -> String {
        crate::bip21::uri(&self.address, Some(self.amount_sat), Some(&self.id))
    }
}

/// The result of looking at an invoice's payments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub status: InvoiceStatus,
    pub settled_sat: u64,
    /// The part of `settled_sat` counted on the zero-conf allowance.
    pub zero_conf_sat: u64,
    pub pending_sat: u64,
}

/// How a payment counts under an invoice's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// It does not count (yet).
    No,
    /// It has the confirmations the policy asks for.
    Confirmed,
    /// It counts on the zero-conf allowance.
    ZeroConf,
}

impl Counted {
    pub fn counts(self) -> bool {
        self != Counted::No
    }
}

/// How one payment counts, given how many sats the invoice may still count on the zero-conf allowance
/// (`zero_conf_room`: `zero_conf_max_sat` less what earlier payments already took of it).
pub fn counts(p: &Payment, tip: u32, policy: &PaymentPolicy, zero_conf_room: u64) -> Counted {
    if p.confirmations(tip) >= policy.min_confirmations.max(1) {
        Counted::Confirmed
    } else if (p.height.is_some() || !p.rbf)
        && p.amount_sat <= policy.zero_conf_max_sat
        && p.amount_sat <= zero_conf_room
    {
        Counted::ZeroConf
    } else {
        Counted::No
    }
}

/// How each of an invoice's payments counts (aligned with `payments`). Payments are taken in seen order,
/// each zero-conf one charged against the invoice's `zero_conf_max_sat`; one that no longer fits does not
/// count, a later smaller one still may.
pub fn counted(payments: &[Payment], tip: u32, policy: &PaymentPolicy) -> Vec<Counted> {
    let mut order: Vec<usize> = (0..payments.len()).collect();
    order.sort_by_key(|&i| seen_key(&payments[i]));
    let mut out = vec![Counted::No; payments.len()];
    let mut room = policy.zero_conf_max_sat;
    for i in order {
        let c = counts(&payments[i], tip, policy, room);
        if c == Counted::ZeroConf {
            room -= payments[i].amount_sat;
        }
        out[i] = c;
    }
    out
}

fn seen_key(p: &Payment) -> (u64, &str, u32) {
    (p.seen_at, p.txid.as_str(), p.vout)
}

/// Classifies an invoice. Payments are taken in the order they were seen; the invoice is covered by the
/// first prefix whose counted sum reaches the amount, and anything counted beyond it is a top-up when it
/// came in a later payment, an overpayment when the covering payment itself was larger than needed.
pub fn assess(inv: &Invoice, payments: &[Payment], tip: u32, now: u64) -> Assessment {
    let how = counted(payments, tip, &inv.policy);
    let mut ordered: Vec<(&Payment, Counted)> = payments.iter().zip(how).collect();
    ordered.sort_by(|a, b| seen_key(a.0).cmp(&seen_key(b.0)));
    let mut settled = 0u64;
    let mut zero_conf = 0u64;
    let mut pending = 0u64;
    let mut covered_by: Option<(&Payment, u64)> = None; // (payment, settled sum right after it)
    for (p, c) in ordered {
        if c.counts() {
            settled += p.amount_sat;
            if c == Counted::ZeroConf {
                zero_conf += p.amount_sat;
            }
            if covered_by.is_none() && settled >= inv.amount_sat {
                covered_by = Some((p, settled));
            }
        } else {
            pending += p.amount_sat;
        }
    }
    let status = match covered_by {
        Some((p, _)) if p.seen_at > inv.expires_at => InvoiceStatus::PaidLate,
        Some((_, at_cover)) if at_cover > inv.amount_sat => InvoiceStatus::Overpaid,
        Some(_) => InvoiceStatus::Paid,
        None if settled > 0 => InvoiceStatus::Partial,
        None if pending > 0 => InvoiceStatus::Seen,
        None if now >= inv.expires_at => InvoiceStatus::Expired,
        None => InvoiceStatus::Unpaid,
    };
    Assessment {
        status,
        settled_sat: settled,
        zero_conf_sat: zero_conf,
        pending_sat: pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(amount: u64, policy: PaymentPolicy) -> Invoice {
        Invoice {
            id: "lease".into(),
            address: "bcrt1q".into(),
            index: 0,
            amount_sat: amount,
            created_at: 100,
            expires_at: 1000,
            policy,
            status: InvoiceStatus::Unpaid,
            settled_sat: 0,
            zero_conf_sat: 0,
            pending_sat: 0,
            payments: vec![],
        }
    }

    fn pay(txid: &str, amount: u64, height: Option<u32>, seen_at: u64, rbf: bool) -> Payment {
        Payment {
            txid: txid.into(),
            vout: 0,
            amount_sat: amount,
            height,
            seen_at,
            rbf,
        }
    }

    const TWO: PaymentPolicy = PaymentPolicy {
        min_confirmations: 2,
        zero_conf_max_sat: 0,
    };

    #[test]
    fn unpaid_seen_paid_by_confirmations() {
        let i = inv(5000, TWO);
        assert_eq!(assess(&i, &[], 10, 200).status, InvoiceStatus::Unpaid);
        let mempool = [pay("a", 5000, None, 200, false)];
        assert_eq!(assess(&i, &mempool, 10, 200).status, InvoiceStatus::Seen);
        let one = [pay("a", 5000, Some(10), 200, false)];
        assert_eq!(
            assess(&i, &one, 10, 200).status,
            InvoiceStatus::Seen,
            "1 of 2 confirmations"
        );
        let a = assess(&i, &one, 11, 200);
        assert_eq!(
            (a.status, a.settled_sat, a.pending_sat),
            (InvoiceStatus::Paid, 5000, 0)
        );
    }

    #[test]
    fn partial_over_late_and_top_up() {
        let i = inv(5000, TWO);
        assert_eq!(
            assess(&i, &[pay("a", 2000, Some(1), 200, false)], 10, 200).status,
            InvoiceStatus::Partial
        );
        assert_eq!(
            assess(&i, &[pay("a", 7000, Some(1), 200, false)], 10, 200).status,
            InvoiceStatus::Overpaid
        );
        assert_eq!(
            assess(&i, &[pay("a", 5000, Some(1), 1001, false)], 10, 2000).status,
            InvoiceStatus::PaidLate
        );
        let topped = [
            pay("a", 5000, Some(1), 200, false),
            pay("b", 3000, Some(2), 300, false),
        ];
        let a = assess(&i, &topped, 10, 300);
        assert_eq!(
            (a.status, a.settled_sat),
            (InvoiceStatus::Paid, 8000),
            "a later payment is a top-up"
        );
        assert_eq!(assess(&i, &[], 10, 1000).status, InvoiceStatus::Expired);
    }

    #[test]
    fn zero_conf_only_small_and_without_rbf() {
        let policy = PaymentPolicy {
            min_confirmations: 1,
            zero_conf_max_sat: 10_000,
        };
        let small = inv(5000, policy);
        assert_eq!(
            assess(&small, &[pay("a", 5000, None, 200, false)], 10, 200).status,
            InvoiceStatus::Paid
        );
        assert_eq!(
            assess(&small, &[pay("a", 5000, None, 200, true)], 10, 200).status,
            InvoiceStatus::Seen,
            "RBF never counts unconfirmed"
        );
        let big = inv(50_000, policy);
        assert_eq!(
            assess(&big, &[pay("a", 50_000, None, 200, false)], 10, 200).status,
            InvoiceStatus::Seen
        );
    }

    const ZC: PaymentPolicy = PaymentPolicy {
        min_confirmations: 1,
        zero_conf_max_sat: 10_000,
    };

    #[test]
    fn a_large_unconfirmed_top_up_to_a_small_invoice_does_not_count() {
        let small = inv(5000, ZC);
        let paid = [pay("a", 5000, None, 200, false)];
        let a = assess(&small, &paid, 10, 200);
        assert_eq!(
            (a.status, a.settled_sat, a.zero_conf_sat, a.pending_sat),
            (InvoiceStatus::Paid, 5000, 5000, 0)
        );
        // A top-up larger than the allowance, though the invoice is small: seen, not counted.
        let topped = [
            pay("a", 5000, None, 200, false),
            pay("b", 1_000_000, None, 300, false),
        ];
        let a = assess(&small, &topped, 10, 300);
        assert_eq!(
            (a.status, a.settled_sat, a.zero_conf_sat, a.pending_sat),
            (InvoiceStatus::Paid, 5000, 5000, 1_000_000)
        );
        // Paying the small invoice with one large unconfirmed payment does not count either.
        let one_big = [pay("a", 1_000_000, None, 200, false)];
        let a = assess(&small, &one_big, 10, 200);
        assert_eq!((a.status, a.settled_sat), (InvoiceStatus::Seen, 0));
        // Once confirmed, it counts in full.
        let mined = [
            pay("a", 5000, Some(10), 200, false),
            pay("b", 1_000_000, Some(10), 300, false),
        ];
        let a = assess(&small, &mined, 10, 300);
        assert_eq!(
            (a.status, a.settled_sat, a.zero_conf_sat, a.pending_sat),
            (InvoiceStatus::Paid, 1_005_000, 0, 0)
        );
    }

    #[test]
    fn zero_conf_total_is_capped_per_invoice() {
        let i = inv(30_000, ZC);
        // Three 4000-sat payments: the first two fit in the 10 000-sat allowance, the third does not.
        let three = [
            pay("c", 4000, None, 300, false),
            pay("a", 4000, None, 100, false),
            pay("b", 4000, None, 200, false),
        ];
        assert_eq!(
            counted(&three, 10, &ZC),
            vec![Counted::No, Counted::ZeroConf, Counted::ZeroConf],
            "charged in seen order, not in the order given"
        );
        let a = assess(&i, &three, 10, 300);
        assert_eq!(
            (a.status, a.settled_sat, a.zero_conf_sat, a.pending_sat),
            (InvoiceStatus::Partial, 8000, 8000, 4000)
        );
        // A later payment that still fits in what is left counts.
        let with_small = [
            pay("a", 4000, None, 100, false),
            pay("b", 4000, None, 200, false),
            pay("c", 4000, None, 300, false),
            pay("d", 2000, None, 400, false),
        ];
        let a = assess(&i, &with_small, 10, 400);
        assert_eq!(
            (a.settled_sat, a.zero_conf_sat, a.pending_sat),
            (10_000, 10_000, 4000)
        );
        // Confirmed payments do not use the allowance up.
        let mixed = [
            pay("a", 9000, Some(10), 100, false),
            pay("b", 9000, None, 200, false),
            pay("c", 9000, None, 300, false),
        ];
        let a = assess(&i, &mixed, 10, 300);
        assert_eq!(
            (a.settled_sat, a.zero_conf_sat, a.pending_sat),
            (18_000, 9000, 9000)
        );
        // RBF-signalling payments never count unconfirmed, and take nothing of the allowance.
        let rbf = [
            pay("a", 9000, None, 100, true),
            pay("b", 9000, None, 200, false),
        ];
        let a = assess(&i, &rbf, 10, 200);
        assert_eq!(
            (a.settled_sat, a.zero_conf_sat, a.pending_sat),
            (9000, 9000, 9000)
        );
    }

    #[test]
    fn a_shallow_confirmation_keeps_a_zero_conf_payment_counted() {
        let policy = PaymentPolicy {
            min_confirmations: 3,
            zero_conf_max_sat: 10_000,
        };
        let i = inv(5000, policy);
        for (height, tip) in [(None, 10), (Some(10), 10), (Some(10), 11)] {
            let a = assess(&i, &[pay("a", 5000, height, 200, false)], tip, 200);
            assert_eq!((a.status, a.zero_conf_sat), (InvoiceStatus::Paid, 5000));
        }
        let a = assess(&i, &[pay("a", 5000, Some(10), 200, false)], 12, 200);
        assert_eq!((a.status, a.zero_conf_sat), (InvoiceStatus::Paid, 0));
    }

    #[test]
    fn a_reorged_payment_stops_counting() {
        let i = inv(5000, TWO);
        let confirmed = [pay("a", 5000, Some(5), 200, false)];
        assert!(assess(&i, &confirmed, 6, 200).status.is_paid());
        let reorged = [pay("a", 5000, None, 200, false)];
        assert_eq!(assess(&i, &reorged, 6, 200).status, InvoiceStatus::Seen);
    }
}
