//! The node tests use the testnet crate's process harness (real `xov` daemons, CLI calls, timed waits).
#![allow(unused_imports)]

pub use xov_testnet::node::*;

pub mod adversary;
