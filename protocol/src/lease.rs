//! The lease state machine, shared by buyer and provider. Pure: the node feeds it events (from the wallet,
//! the provisioner, the clock) and persists the new state before acting on it, so a crash resumes from a
//! state that says exactly which external action may be half done.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::identity::NodeId;
use crate::signed::MessageId;

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// The provider received the order and is checking admission.
    Ordered,
    /// An invoice was issued; waiting for payment.
    Invoiced,
    /// A payment is in the mempool or below the confirmation policy.
    PaymentSeen,
    /// Paid and confirmed: the machine may be launched.
    Funded,
    /// The launch was requested from the cloud; a crash here means "find the tagged server, do not boot again".
    Provisioning,
    Running,
    /// Funds will run out soon; the buyer was warned.
    Warned,
    /// Funds ran out; the machine still runs for the grace period.
    Grace,
    /// The machine is stopped; deleted when the hold period ends.
    Halted,
    /// Terminal: the machine is deleted and receipts were exchanged.
    Closed,
    /// Terminal: the provider refused the order.
    Refused,
    /// Terminal: the invoice expired unpaid.
    Expired,
    /// Terminal: the launch failed; any funds are refunded.
    Failed,
}

/// What happened to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseEvent {
    Refused,
    InvoiceIssued,
    PaymentSeen,
    PaymentConfirmed,
    /// The paying transaction left the best chain.
    PaymentReorged,
    InvoiceExpired,
    LaunchRequested,
    Launched,
    LaunchFailed,
    /// More money arrived at the lease's address.
    ToppedUp,
    BalanceLow,
    Drained,
    GraceOver,
    /// The buyer cancelled.
    Cancelled,
    Deleted,
}

pub const ALL_STATES: [LeaseState; 13] = [
    LeaseState::Ordered,
    LeaseState::Invoiced,
    LeaseState::PaymentSeen,
    LeaseState::Funded,
    LeaseState::Provisioning,
    LeaseState::Running,
    LeaseState::Warned,
    LeaseState::Grace,
    LeaseState::Halted,
    LeaseState::Closed,
    LeaseState::Refused,
    LeaseState::Expired,
    LeaseState::Failed,
];

pub const ALL_EVENTS: [LeaseEvent; 15] = [
    LeaseEvent::Refused,
    LeaseEvent::InvoiceIssued,
    LeaseEvent::PaymentSeen,
    LeaseEvent::PaymentConfirmed,
    LeaseEvent::PaymentReorged,
    LeaseEvent::InvoiceExpired,
    LeaseEvent::LaunchRequested,
    LeaseEvent::Launched,
    LeaseEvent::LaunchFailed,
    LeaseEvent::ToppedUp,
    LeaseEvent::BalanceLow,
    LeaseEvent::Drained,
    LeaseEvent::GraceOver,
    LeaseEvent::Cancelled,
    LeaseEvent::Deleted,
];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("event {event:?} is not allowed in lease state {state:?}")]
pub struct TransitionError {
    pub state: LeaseState,
    pub event: LeaseEvent,
}

impl LeaseState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            LeaseState::Closed | LeaseState::Refused | LeaseState::Expired | LeaseState::Failed
        )
    }

    /// Whether a machine may exist for the lease in this state (what reconciliation compares against).
    pub fn may_have_machine(self) -> bool {
        matches!(
            self,
            LeaseState::Provisioning
                | LeaseState::Running
                | LeaseState::Warned
                | LeaseState::Grace
                | LeaseState::Halted
        )
    }

    /// The state after `event`, or an error if the event makes no sense here.
    pub fn apply(self, event: LeaseEvent) -> Result<LeaseState, TransitionError> {
        use LeaseEvent as E;
        use LeaseState as S;
        let next = match (self, event) {
            (S::Ordered, E::Refused) => S::Refused,
            (S::Ordered, E::InvoiceIssued) => S::Invoiced,
            (S::Invoiced, E::PaymentSeen) => S::PaymentSeen,
            (S::Invoiced | S::PaymentSeen, E::PaymentConfirmed) => S::Funded,
            (S::Invoiced, E::InvoiceExpired) => S::Expired,
            (S::PaymentSeen | S::Funded, E::PaymentReorged) => S::Invoiced,
            // Once a payment is seen the buyer can no longer walk away for free: it confirms (then a cancel
            // refunds from Funded) or it is reorged out (back to Invoiced).
            (S::Invoiced, E::Cancelled) => S::Expired,
            (S::Funded, E::LaunchRequested) => S::Provisioning,
            (S::Funded, E::Cancelled) => S::Failed,
            (S::Provisioning, E::Launched) => S::Running,
            (S::Provisioning, E::LaunchFailed) => S::Failed,
            (S::Running, E::BalanceLow) => S::Warned,
            (S::Running | S::Warned, E::Drained) => S::Grace,
            (S::Warned | S::Grace | S::Halted, E::ToppedUp) => S::Running,
            (S::Running, E::ToppedUp) => S::Running,
            (S::Grace, E::GraceOver) => S::Halted,
            (S::Running | S::Warned | S::Grace, E::Cancelled) => S::Halted,
            (S::Halted, E::Deleted) => S::Closed,
            (state, event) => return Err(TransitionError { state, event }),
        };
        Ok(next)
    }

    /// Wire number of the state; fixed forever, independent of any list order.
    fn tag(self) -> u8 {
        match self {
            LeaseState::Ordered => 0,
            LeaseState::Invoiced => 1,
            LeaseState::PaymentSeen => 2,
            LeaseState::Funded => 3,
            LeaseState::Provisioning => 4,
            LeaseState::Running => 5,
            LeaseState::Warned => 6,
            LeaseState::Grace => 7,
            LeaseState::Halted => 8,
            LeaseState::Closed => 9,
            LeaseState::Refused => 10,
            LeaseState::Expired => 11,
            LeaseState::Failed => 12,
        }
    }
}

impl Encode for LeaseState {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.tag())
    }
}

impl Decode for LeaseState {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = r.u8("lease state")?;
        ALL_STATES
            .iter()
            .copied()
            .find(|s| s.tag() == tag)
            .ok_or(DecodeError::InvalidTag {
                field: "lease state",
                tag,
            })
    }
}

/// Longest human-readable detail in a lease notice.
pub const MAX_NOTICE_DETAIL: usize = 1024;

/// A signed note from one party of a lease to the other: the state it moved to and why (refusal reasons,
/// drain warnings, instance details). Later work adds structured payloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseNotice {
    pub from: NodeId,
    pub lease_id: MessageId,
    pub state: LeaseState,
    pub at: u64,
    pub detail: String,
}

impl Encode for LeaseNotice {
    fn encode(&self, w: &mut Writer) {
        self.from.encode(w);
        self.lease_id.encode(w);
        self.state.encode(w);
        w.u64(self.at);
        w.str(&self.detail);
    }
}

impl Decode for LeaseNotice {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(LeaseNotice {
            from: NodeId::decode(r)?,
            lease_id: MessageId::decode(r)?,
            state: LeaseState::decode(r)?,
            at: r.u64("at")?,
            detail: r.str("detail", MAX_NOTICE_DETAIL)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_accept_no_event() {
        for s in ALL_STATES.iter().filter(|s| s.is_terminal()) {
            for e in ALL_EVENTS {
                assert!(s.apply(e).is_err(), "{s:?} accepted {e:?}");
            }
        }
    }

    #[test]
    fn every_non_terminal_state_can_reach_a_terminal_state() {
        for start in ALL_STATES {
            let mut seen = vec![start];
            let mut frontier = vec![start];
            while let Some(s) = frontier.pop() {
                for e in ALL_EVENTS {
                    if let Ok(n) = s.apply(e) {
                        if !seen.contains(&n) {
                            seen.push(n);
                            frontier.push(n);
                        }
                    }
                }
            }
            assert!(seen.iter().any(|s| s.is_terminal()), "{start:?} is a trap");
        }
    }

    #[test]
    fn no_path_launches_without_confirmed_payment() {
        // Exhaustive over every state and event: Provisioning is entered only from Funded, and Funded only on
        // a confirmed payment. This is the "never launch unpaid" guarantee.
        for s in ALL_STATES {
            for e in ALL_EVENTS {
                match s.apply(e) {
                    Ok(LeaseState::Provisioning) => {
                        assert_eq!((s, e), (LeaseState::Funded, LeaseEvent::LaunchRequested))
                    }
                    Ok(LeaseState::Funded) => assert_eq!(e, LeaseEvent::PaymentConfirmed),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn a_reorg_before_launch_returns_to_waiting_for_payment() {
        assert_eq!(
            LeaseState::Funded.apply(LeaseEvent::PaymentReorged),
            Ok(LeaseState::Invoiced)
        );
        assert!(LeaseState::Running
            .apply(LeaseEvent::PaymentReorged)
            .is_err());
    }

    #[test]
    fn state_tags_round_trip() {
        for s in ALL_STATES {
            assert_eq!(
                LeaseState::from_canonical_bytes(&s.to_canonical_bytes()),
                Ok(s)
            );
        }
        assert!(LeaseState::from_canonical_bytes(&[ALL_STATES.len() as u8]).is_err());
    }
}
