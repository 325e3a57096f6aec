//! xov's wire protocol: the messages nodes exchange, their canonical encoding and signatures, the rules a
//! message must pass, the offer book, and the lease state machine.
//!
//! This crate does no I/O: no sockets, no files, no clock, no OS randomness. Time and randomness are
//! parameters, so every behaviour here is deterministic and can be tested and fuzzed exhaustively.

pub mod bid;
pub mod book;
pub mod demand;
pub mod encoding;
pub mod explain;
pub mod identity;
pub mod invoice;
pub mod lease;
pub mod metering;
pub mod offer;
pub mod order;
pub mod pool;
pub mod signed;
pub mod validate;

pub use bid::Bid;
pub use book::{Inserted, OfferBook, OfferKey, OfferQuery};
pub use demand::{Demand, GpuWanted};
pub use encoding::{Decode, DecodeError, Encode};
pub use explain::explain_no_match;
pub use identity::{Keypair, NodeId, NodeIdError};
pub use invoice::Invoice;
pub use lease::{LeaseEvent, LeaseNotice, LeaseState};
pub use metering::{price_for_hours, Meter, Phase};
pub use offer::{Arch, BondRef, Gpu, InstanceType, Location, Offer, OfferWithdrawal};
pub use order::Order;
pub use pool::{public_charter, PoolCharter, PoolId, PoolRules, PublishPolicy, PUBLIC_POOL_NAME};
pub use signed::{AnyMessage, Kind, Message, MessageId, Signed};
pub use validate::ValidationError;
