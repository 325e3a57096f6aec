//! Invoices: one fresh address per lease, and what the payments seen on it mean.
//!
//! Classification is a pure function of the invoice, the payments to its address, the chain tip and the
//! provider's policy, so it is tested without a chain and re-derived from scratch after every chain update
//! (a reorg simply yields a different answer).

use serde::{Deserialize, Serialize};

/// When the provider counts money as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentPolicy {
    /// Confirmations a payment needs.
    pub min_confirmations: u32,
    /// Unconfirmed payments count at once when the invoice is at most this many sats and the paying
    /// transaction does not signal replace-by-fee (0 = never).
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
    pub pending_sat: u64,
}

/// Whether a payment counts under the policy for an invoice of `amount` sats.
pub fn counts(p: &Payment, tip: u32, amount: u64, policy: &PaymentPolicy) -> bool {
    p.confirmations(tip) >= policy.min_confirmations.max(1)
        || (p.height.is_none() && !p.rbf && amount <= policy.zero_conf_max_sat)
}

/// Classifies an invoice. Payments are taken in the order they were seen; the invoice is covered by the
/// first prefix whose counted sum reaches the amount, and anything counted beyond it is a top-up when it
/// came in a later payment, an overpayment when the covering payment itself was larger than needed.
pub fn assess(inv: &Invoice, payments: &[Payment], tip: u32, now: u64) -> Assessment {
    let mut ordered: Vec<&Payment> = payments.iter().collect();
    ordered.sort_by_key(|p| (p.seen_at, p.txid.clone(), p.vout));
    let mut settled = 0u64;
    let mut pending = 0u64;
    let mut covered_by: Option<(&Payment, u64)> = None; // (payment, settled sum right after it)
    for p in &ordered {
        if counts(p, tip, inv.amount_sat, &inv.policy) {
            settled += p.amount_sat;
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

    #[test]
    fn a_reorged_payment_stops_counting() {
        let i = inv(5000, TWO);
        let confirmed = [pay("a", 5000, Some(5), 200, false)];
        assert!(assess(&i, &confirmed, 6, 200).status.is_paid());
        let reorged = [pay("a", 5000, None, 200, false)];
        assert_eq!(assess(&i, &reorged, 6, 200).status, InvoiceStatus::Seen);
    }
}
