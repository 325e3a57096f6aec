//! xov-testnet: brings up a local xov market for tests and demos — bitcoind regtest, the OpenStack lab and
//! N nodes — and runs scenarios against it.
//!
//! Today it holds the scripts beside this crate (`setup.sh`, `run.sh`, `test.sh`); the harnesses that start
//! bitcoind and the OpenStack lab arrive with the wallet, provisioner and lease-lifecycle work.
