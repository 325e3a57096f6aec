// Automatically generated mod.rs
pub mod dht;
