//! The lease state machine, shared by buyer and provider. Pure: the node feeds it events (from the wallet,
//! the provisioner, the clock) and persists the new state before acting on it, so a crash resumes from a
//! state that says exactly which external action may be half done.
//!
//! Lease notices ([`LeaseNotice`]) are how the two parties tell each other about a lease. They are versioned by
//! kind: a notice's body starts with a tag byte fixed forever, an unknown tag is
//! [`DecodeError::UnknownVariant`] (a newer kind of notice: drop it quietly), and every string and list in a
//! notice has a bound that decoding enforces, so a notice of any kind fits [`crate::signed::Kind::LeaseNotice`]'s
//! size limit.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::identity::NodeId;
use crate::receipt::{ProviderReceipt, SignedReceipt};
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

impl Default for LeaseState {
    /// A new lease starts as an order.
    fn default() -> Self {
        LeaseState::Ordered
    }
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
            // A payment seen that never confirms does not hold the machine forever.
            (S::PaymentSeen, E::InvoiceExpired) => S::Expired,
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

/// Longest human-readable message in a [`LeaseStatus`].
pub const MAX_NOTICE_MESSAGE: usize = 256;
/// Longest [`Access::server_id`].
pub const MAX_SERVER_ID: usize = 64;
/// Most entries in [`Access::addresses`].
pub const MAX_ACCESS_ADDRESSES: usize = 8;
/// Longest entry of [`Access::addresses`].
pub const MAX_ACCESS_ADDRESS: usize = 64;

/// Whether `a` can stand in [`Access::addresses`] as far as its characters go: not empty, no control
/// characters or spaces (the notice's checks; its length is the decoder's, [`MAX_ACCESS_ADDRESS`]).
pub fn is_access_address(a: &str) -> bool {
    !a.is_empty() && !a.chars().any(|c| c.is_control() || c == ' ')
}
/// Longest [`Access::user`].
pub const MAX_ACCESS_USER: usize = 32;
/// Longest [`Access::image`].
pub const MAX_ACCESS_IMAGE: usize = 64;
/// Most entries in [`Access::open_ports`].
pub const MAX_OPEN_PORTS: usize = 16;
/// Longest nested receipt (provider-signed or countersigned) inside a notice; both are well under this.
const MAX_NESTED_RECEIPT: usize = 512;

/// How the buyer reaches the machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Access {
    /// The cloud's id of the server; at most [`MAX_SERVER_ID`] bytes.
    pub server_id: String,
    /// IP addresses or host names to SSH to: at most [`MAX_ACCESS_ADDRESSES`], each at most
    /// [`MAX_ACCESS_ADDRESS`] bytes.
    pub addresses: Vec<String>,
    /// The login user; at most [`MAX_ACCESS_USER`] bytes.
    pub user: String,
    /// The image the machine booted; at most [`MAX_ACCESS_IMAGE`] bytes.
    pub image: String,
    /// The TCP port its SSH server answers on at those addresses (22 unless the provider maps another).
    pub ssh_port: u16,
    /// Every TCP port the provider's firewall opens to the machine, the SSH port included; ascending, at
    /// most [`MAX_OPEN_PORTS`].
    pub open_ports: Vec<u16>,
}

impl Encode for Access {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.server_id);
        w.seq(&self.addresses);
        w.str(&self.user);
        w.str(&self.image);
        w.u16(self.ssh_port);
        w.seq(&self.open_ports);
    }
}

impl Decode for Access {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let server_id = r.str("server id", MAX_SERVER_ID)?;
        let count = r.u16("addresses")? as usize;
        if count > MAX_ACCESS_ADDRESSES {
            return Err(DecodeError::LengthTooLarge {
                field: "addresses",
                len: count,
                max: MAX_ACCESS_ADDRESSES,
            });
        }
        let mut addresses = Vec::with_capacity(count);
        for _ in 0..count {
            addresses.push(r.str("address", MAX_ACCESS_ADDRESS)?);
        }
        Ok(Access {
            server_id,
            addresses,
            user: r.str("user", MAX_ACCESS_USER)?,
            image: r.str("image", MAX_ACCESS_IMAGE)?,
            ssh_port: r.u16("ssh port")?,
            open_ports: r.seq("open ports", MAX_OPEN_PORTS)?,
        })
    }
}

/// Where a lease stands, as its provider tells the buyer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub state: LeaseState,
    /// Confirmed sats received on the lease's address.
    pub paid_sats: u64,
    /// Sats refunded to the buyer so far (value sent, fees excluded).
    pub refunded_sats: u64,
    /// Unix seconds the machine started running.
    pub started_at: Option<u64>,
    /// Unix seconds the paid time runs out (before any grace period).
    pub runs_until: Option<u64>,
    /// How to reach the machine, once it runs.
    pub access: Option<Access>,
    /// For people; at most [`MAX_NOTICE_MESSAGE`] bytes.
    pub message: String,
}

impl Encode for LeaseStatus {
    fn encode(&self, w: &mut Writer) {
        self.state.encode(w);
        w.u64(self.paid_sats);
        w.u64(self.refunded_sats);
        w.option(&self.started_at);
        w.option(&self.runs_until);
        w.option(&self.access);
        w.str(&self.message);
    }
}

impl Decode for LeaseStatus {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(LeaseStatus {
            state: LeaseState::decode(r)?,
            paid_sats: r.u64("paid")?,
            refunded_sats: r.u64("refunded")?,
            started_at: r.option("started at")?,
            runs_until: r.option("runs until")?,
            access: r.option("access")?,
            message: r.str("message", MAX_NOTICE_MESSAGE)?,
        })
    }
}

/// What a lease notice says. The wire tag of each kind is fixed forever ([`NoticeBody::tag`]); a tag this code
/// does not know decodes to [`DecodeError::UnknownVariant`] (field `"notice body"`), never to
/// [`DecodeError::InvalidTag`], so a receiver can drop a newer kind of notice quietly and still treat every
/// other decoding error as garbage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeBody {
    /// provider → buyer: where the lease stands now (sent on every change, re-sent until acknowledged).
    /// Tag 6: the status whose [`Access`] names the SSH port and the open ports. Tag 1, the status before
    /// them, is refused (`UnknownVariant`), so a node never reads a machine's access without its port.
    Status(LeaseStatus),
    /// buyer → provider: end the lease now; the unused part is refunded.
    Cancel,
    /// buyer → provider: please send your current Status (after a reconnect).
    StatusRequest,
    /// provider → buyer: the lease ended; the provider-signed receipt for the buyer to check and countersign.
    Receipt(ProviderReceipt),
    /// buyer → provider: the receipt countersigned.
    Countersigned(SignedReceipt),
}

impl NoticeBody {
    /// Wire tag of the kind of notice.
    pub fn tag(&self) -> u8 {
        match self {
            NoticeBody::Status(_) => 6,
            NoticeBody::Cancel => 2,
            NoticeBody::StatusRequest => 3,
            NoticeBody::Receipt(_) => 4,
            NoticeBody::Countersigned(_) => 5,
        }
    }
}

/// Reads a u32-length-prefixed nested encoding of at most `max` bytes without copying it.
fn nested<'a>(r: &mut Reader<'a>, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
    let len = r.u32(what)? as usize;
    if len > max {
        return Err(DecodeError::LengthTooLarge {
            field: what,
            len,
            max,
        });
    }
    r.take(len, what)
}

impl Encode for NoticeBody {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            NoticeBody::Status(s) => s.encode(w),
            NoticeBody::Cancel | NoticeBody::StatusRequest => {}
            NoticeBody::Receipt(p) => w.bytes(&p.to_canonical_bytes()),
            NoticeBody::Countersigned(s) => w.bytes(&s.to_bytes()),
        }
    }
}

impl Decode for NoticeBody {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8("notice body")? {
            6 => NoticeBody::Status(LeaseStatus::decode(r)?),
            2 => NoticeBody::Cancel,
            3 => NoticeBody::StatusRequest,
            4 => NoticeBody::Receipt(ProviderReceipt::from_canonical_bytes(nested(
                r,
                "receipt",
                MAX_NESTED_RECEIPT,
            )?)?),
            5 => NoticeBody::Countersigned(SignedReceipt::from_bytes(nested(
                r,
                "countersigned receipt",
                MAX_NESTED_RECEIPT,
            )?)?),
            tag => {
                return Err(DecodeError::UnknownVariant {
                    field: "notice body",
                    tag,
                })
            }
        })
    }
}

/// A signed note from one party of a lease to the other, sent directly (not gossiped). `seq` orders the
/// notices of one sender about one lease: it strictly increases, and a receiver applies a notice only if its
/// `seq` is above the last it applied from that sender for that lease, so re-sent and reordered notices are
/// harmless.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseNotice {
    pub from: NodeId,
    /// The lease: the message id of the buyer's order.
    pub lease_id: MessageId,
    /// Per lease and sender, strictly increasing; a receiver ignores a notice whose seq is not above the last
    /// it applied.
    pub seq: u64,
    /// Unix seconds the sender wrote the notice.
    pub at: u64,
    pub body: NoticeBody,
}

impl Encode for LeaseNotice {
    fn encode(&self, w: &mut Writer) {
        self.from.encode(w);
        self.lease_id.encode(w);
        w.u64(self.seq);
        w.u64(self.at);
        self.body.encode(w);
    }
}

impl Decode for LeaseNotice {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(LeaseNotice {
            from: NodeId::decode(r)?,
            lease_id: MessageId::decode(r)?,
            seq: r.u64("seq")?,
            at: r.u64("at")?,
            body: NoticeBody::decode(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::pool::PoolId;
    use crate::receipt::Receipt;
    use crate::signed::{AnyMessage, Kind, Signed};

    fn key(n: u8) -> Keypair {
        Keypair::from_secret_bytes(&[n; 32])
    }

    fn half_receipt() -> ProviderReceipt {
        ProviderReceipt::sign(
            Receipt {
                lease_id: MessageId([5; 32]),
                pool: PoolId([6; 32]),
                provider: key(1).node_id(),
                buyer: key(2).node_id(),
                started_at: 1_000,
                ended_at: 4_600,
                paid_sats: u64::MAX,
                refunded_sats: 100,
            },
            &key(1),
        )
    }

    fn full_status() -> LeaseStatus {
        LeaseStatus {
            state: LeaseState::Running,
            paid_sats: u64::MAX,
            refunded_sats: u64::MAX,
            started_at: Some(u64::MAX),
            runs_until: Some(u64::MAX),
            access: Some(Access {
                server_id: "s".repeat(MAX_SERVER_ID),
                addresses: vec!["a".repeat(MAX_ACCESS_ADDRESS); MAX_ACCESS_ADDRESSES],
                user: "u".repeat(MAX_ACCESS_USER),
                image: "i".repeat(MAX_ACCESS_IMAGE),
                ssh_port: u16::MAX,
                open_ports: (1..=MAX_OPEN_PORTS as u16).collect(),
            }),
            message: "m".repeat(MAX_NOTICE_MESSAGE),
        }
    }

    fn every_body() -> Vec<NoticeBody> {
        vec![
            NoticeBody::Status(full_status()),
            NoticeBody::Status(LeaseStatus {
                state: LeaseState::Invoiced,
                paid_sats: 0,
                refunded_sats: 0,
                started_at: None,
                runs_until: None,
                access: None,
                message: String::new(),
            }),
            NoticeBody::Cancel,
            NoticeBody::StatusRequest,
            NoticeBody::Receipt(half_receipt()),
            NoticeBody::Countersigned(half_receipt().countersign(&key(2)).unwrap()),
        ]
    }

    fn notice(body: NoticeBody) -> LeaseNotice {
        LeaseNotice {
            from: key(1).node_id(),
            lease_id: MessageId([5; 32]),
            seq: u64::MAX,
            at: u64::MAX,
            body,
        }
    }

    #[test]
    fn every_kind_of_notice_round_trips_and_fits_the_size_limit() {
        for body in every_body() {
            let n = notice(body);
            let bytes = n.to_canonical_bytes();
            assert_eq!(bytes[80], n.body.tag());
            assert_eq!(LeaseNotice::from_canonical_bytes(&bytes), Ok(n.clone()));
            let signed = Signed::sign(n.clone(), &key(1));
            let wire = signed.to_bytes();
            assert!(
                wire.len() <= Kind::LeaseNotice.max_size(),
                "{} bytes",
                wire.len()
            );
            assert_eq!(
                AnyMessage::from_bytes(&wire),
                Ok(AnyMessage::LeaseNotice(signed))
            );
            let json = serde_json::to_string(&n).unwrap();
            assert_eq!(
                serde_json::from_str::<LeaseNotice>(&json).unwrap(),
                n,
                "{json}"
            );
        }
    }

    #[test]
    fn a_status_without_ports_is_refused_not_misread() {
        // Tag 1 was the status whose access named no SSH port; the tag-6 status replaced it.
        let mut w = Writer::new();
        w.u8(1);
        full_status().encode(&mut w);
        assert_eq!(
            NoticeBody::from_canonical_bytes(&w.into_bytes()),
            Err(DecodeError::UnknownVariant {
                field: "notice body",
                tag: 1
            })
        );
        let ok = NoticeBody::Status(full_status()).to_canonical_bytes();
        assert_eq!(ok[0], 6);
        assert_eq!(
            NoticeBody::from_canonical_bytes(&ok),
            Ok(NoticeBody::Status(full_status()))
        );
    }

    #[test]
    fn the_largest_notices_fit_with_room_to_spare() {
        let status = Signed::sign(notice(NoticeBody::Status(full_status())), &key(1));
        assert_eq!(status.to_bytes().len(), 1177);
        let countersigned = Signed::sign(
            notice(NoticeBody::Countersigned(
                half_receipt().countersign(&key(2)).unwrap(),
            )),
            &key(1),
        );
        assert_eq!(countersigned.to_bytes().len(), 449);
        assert!(2 * 1177 <= Kind::LeaseNotice.max_size());
    }

    #[test]
    fn an_unknown_kind_of_notice_is_told_apart_from_garbage() {
        let mut bytes = notice(NoticeBody::Cancel).to_canonical_bytes();
        bytes[80] = 7;
        assert_eq!(
            LeaseNotice::from_canonical_bytes(&bytes),
            Err(DecodeError::UnknownVariant {
                field: "notice body",
                tag: 7
            })
        );
        // A newer notice may carry a body this code cannot parse; the tag alone decides.
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            LeaseNotice::from_canonical_bytes(&bytes),
            Err(DecodeError::UnknownVariant { tag: 7, .. })
        ));
        bytes[80] = 0;
        assert!(matches!(
            LeaseNotice::from_canonical_bytes(&bytes),
            Err(DecodeError::UnknownVariant { tag: 0, .. })
        ));
        // Garbage inside a known kind is not "unknown".
        let mut status = notice(NoticeBody::Status(full_status())).to_canonical_bytes();
        status[81 + 1 + 8 + 8] = 2; // the started_at presence byte
        assert!(matches!(
            LeaseNotice::from_canonical_bytes(&status),
            Err(DecodeError::InvalidTag {
                field: "started at",
                tag: 2
            })
        ));
        // Through the envelope, too.
        let wire = Signed::sign(notice(NoticeBody::Cancel), &key(1)).to_bytes();
        let mut wire = wire;
        let at = 6 + 80;
        wire[at] = 9;
        assert!(matches!(
            Signed::<LeaseNotice>::from_bytes(&wire),
            Err(DecodeError::UnknownVariant { tag: 9, .. })
        ));
    }

    #[test]
    fn oversize_strings_and_lists_are_refused() {
        let too_long = |f: &dyn Fn(&mut LeaseStatus)| {
            let mut s = full_status();
            f(&mut s);
            let bytes = notice(NoticeBody::Status(s)).to_canonical_bytes();
            match LeaseNotice::from_canonical_bytes(&bytes) {
                Err(DecodeError::LengthTooLarge { field, .. }) => field,
                other => panic!("expected LengthTooLarge, got {other:?}"),
            }
        };
        assert_eq!(too_long(&|s| s.message.push('m')), "message");
        fn access(s: &mut LeaseStatus) -> &mut Access {
            s.access.as_mut().unwrap()
        }
        assert_eq!(too_long(&|s| access(s).server_id.push('s')), "server id");
        assert_eq!(too_long(&|s| access(s).addresses[3].push('a')), "address");
        assert_eq!(
            too_long(&|s| access(s).addresses.push("b".into())),
            "addresses"
        );
        assert_eq!(too_long(&|s| access(s).user.push('u')), "user");
        assert_eq!(too_long(&|s| access(s).image.push('i')), "image");
        assert_eq!(
            too_long(&|s| access(s).open_ports.push(u16::MAX)),
            "open ports"
        );
    }

    #[test]
    fn nested_receipts_must_be_canonical() {
        let mut bytes = notice(NoticeBody::Receipt(half_receipt())).to_canonical_bytes();
        // Claim one byte more than the receipt and append it: the nested decoder refuses the leftover.
        let len = u32::from_be_bytes(bytes[81..85].try_into().unwrap());
        bytes[81..85].copy_from_slice(&(len + 1).to_be_bytes());
        bytes.push(0);
        assert_eq!(
            LeaseNotice::from_canonical_bytes(&bytes),
            Err(DecodeError::TrailingBytes(1))
        );
        bytes[81..85].copy_from_slice(&(MAX_NESTED_RECEIPT as u32 + 1).to_be_bytes());
        assert!(matches!(
            LeaseNotice::from_canonical_bytes(&bytes),
            Err(DecodeError::LengthTooLarge {
                field: "receipt",
                ..
            })
        ));
    }

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
