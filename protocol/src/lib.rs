//! xov's wire protocol: the messages nodes exchange, their canonical encoding and signatures, the rules a
//! message must pass, the offer book, the lease state machine, and trust (receipts, fidelity bonds, pool
//! load, admission limits).
//!
//! Every market lives on one bitcoin network ([`Chain`]): pool charters, offers and orders name it, so a
//! pool's id and its offers differ per chain and nodes of different chains never share a pool.
//!
//! This crate does no I/O: no sockets, no files, no clock, no OS randomness. Time and randomness are
//! parameters, so every behaviour here is deterministic and can be tested and fuzzed exhaustively.

pub mod admission;
pub mod bid;
pub mod bond;
pub mod book;
pub mod chain;
pub mod demand;
pub mod encoding;
pub mod explain;
pub(crate) mod hex;
pub mod identity;
pub mod invoice;
pub mod lease;
pub mod metering;
pub mod offer;
pub mod order;
pub mod pool;
pub mod pool_load;
pub mod receipt;
pub mod refusal;
pub mod sig;
pub mod signed;
pub mod trust;
pub mod validate;

pub use admission::{
    admit, AdmissionPolicy, AnonymousLimits, Exceeded, Limits, Refusal, TierLimits,
};
pub use bid::Bid;
pub use bond::{bond_binding_message, bond_value, BondProof};
pub use book::{
    bucket_of, differing_buckets, BucketSum, Inserted, OfferBook, OfferKey, OfferQuery,
    DIGEST_BUCKETS,
};
pub use chain::{Chain, ChainParseError};
pub use demand::{Demand, GpuWanted};
pub use encoding::{Decode, DecodeError, Encode};
pub use explain::explain_no_match;
pub use identity::{Keypair, NodeId, NodeIdError};
pub use invoice::Invoice;
pub use lease::{Access, LeaseEvent, LeaseNotice, LeaseState, LeaseStatus, NoticeBody};
pub use metering::{price_for_hours, Meter, Phase};
pub use offer::{Arch, BondRef, Gpu, InstanceType, Location, Offer, OfferWithdrawal};
pub use order::Order;
pub use pool::{public_charter, PoolCharter, PoolId, PoolRules, PublishPolicy, PUBLIC_POOL_NAME};
pub use pool_load::{LoadCap, LoadCaps, LoadReport, LoadTotal, PoolLoad, MAX_LOAD_REPORTS};
pub use receipt::{CountersignError, ProviderReceipt, Receipt, SignedReceipt};
pub use refusal::OrderRefusal;
pub use signed::{upgrade, AnyMessage, Kind, Message, MessageId, Signed};
pub use trust::{
    Added, BondStatus, BondStatusError, ReceiptKey, Tier, TrustError, TrustLedger, TrustReport,
};
pub use validate::{check_ssh_public_key, SshKeyError, ValidationError};
