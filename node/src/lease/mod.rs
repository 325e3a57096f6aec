//! Leases, both sides: the records (`record`), the pure machine that decides (`machine`), and the driver
//! that does the I/O around it (`driver`: network, wallet, cloud, store).

pub mod driver;
pub mod machine;
pub mod record;
