// Automatically generated mod.rs
pub mod compat;
pub mod gossipsub;
