//! What the wallet's regtest tests share: the two chain sources against one bitcoind, opening a wallet in a
//! temp dir, and waiting on wallet events (never on the clock).
#![allow(dead_code)]

use std::time::Duration;

use tokio::sync::broadcast::Receiver;
use xov_testnet::bitcoind::Bitcoind;
use xov_wallet::*;

pub const WAIT: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug)]
pub enum Source {
    Filters,
    Rpc,
}

pub fn source(kind: Source, btc: &Bitcoind) -> ChainSource {
    match kind {
        Source::Filters => ChainSource::CompactFilters {
            peers: vec![btc.p2p_addr()],
        },
        Source::Rpc => ChainSource::BitcoindRpc {
            url: btc.rpc_url(),
            cookie_file: btc.cookie_file(),
            // as the node runs it (node/src/config.rs): blocks are pushed, the mempool is read this often
            poll_ms: 200,
        },
    }
}

pub async fn open(dir: &std::path::Path, name: &str, chain: ChainSource) -> XovWallet {
    let cfg = WalletConfig {
        network: Network::Regtest,
        mnemonic_path: dir.join(format!("{name}.mnemonic")),
        passphrase: String::new(),
        file_passphrase: None,
        chain,
        lookahead: 50,
    };
    XovWallet::open(cfg, Box::new(FileStore::new(dir.join(name)).unwrap()))
        .await
        .expect("wallet opens")
}

/// A funded wallet (a mature coinbase) and the node it follows over RPC.
pub async fn funded(dir: &std::path::Path, btc: &Bitcoind, name: &str) -> XovWallet {
    let w = open(dir, name, source(Source::Rpc, btc)).await;
    let mut rx = w.subscribe();
    let funding = w.new_address().unwrap();
    tokio::task::block_in_place(|| btc.mine_to(101, &funding).unwrap());
    until(&mut rx, "wallet funded", || w.balance().confirmed_sat > 0).await;
    w
}

/// Waits until `cond` holds, re-checking after every wallet event.
pub async fn until(rx: &mut Receiver<WalletEvent>, what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("event stream broke while waiting for {what}: {e}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}
