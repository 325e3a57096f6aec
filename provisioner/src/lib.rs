//! xov-provisioner: the `Provisioner` trait through which a node launches, inspects and deletes leased
//! machines, and its OpenStack backend (Keystone v3, Nova v2.1).
//!
//! Not yet implemented: see the provisioner issue. The crate exists so the workspace has its final shape and
//! the dependency direction (node → provisioner) is fixed from the start.
