//! The lease simulator's world lives in the library (`xov_node::sim`, feature `sim`, enabled for the tests by
//! the crate's dev-dependency on itself) so that the `lease_machine` fuzz target (node/fuzz) reuses it.

pub use xov_node::sim::*;
