//! Fee bumping (RBF) against a real Bitcoin Core regtest node over RPC: a payment stuck at a low fee is
//! replaced by one paying the same recipient more fee, bitcoind swaps it in its mempool, it confirms, and the
//! wallet's history and balance show the replacement only. Bumping what cannot be bumped (confirmed,
//! unknown, someone else's, already replaced, or at a rate no higher) is a typed error.
//!
//! Invariant: every wait is on wallet events or bitcoind's answers, never on the clock.

use xov_testnet::bitcoind::Bitcoind;
use xov_wallet::*;

mod common;
use common::*;

/// Mines one block and waits until `w` has it; returns its height.
async fn mine_one(btc: &Bitcoind, w: &XovWallet) -> u32 {
    let mut rx = w.subscribe();
    let height = tokio::task::block_in_place(|| {
        btc.mine(1).unwrap();
        btc.height().unwrap()
    }) as u32;
    until(&mut rx, "the new block", || w.tip_height() == height).await;
    height
}

fn mempool_fee_sat(btc: &Bitcoind, txid: &str) -> Option<u64> {
    let entry = tokio::task::block_in_place(|| btc.cli(&["getmempoolentry", txid])).ok()?;
    entry["fees"]["base"]
        .as_f64()
        .map(|btc| (btc * 1e8).round() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_fee_payment_is_bumped_and_confirms() {
    if xov_testnet::skip_e2e("wallet fee bump on regtest") {
        return;
    }
    let btc = tokio::task::block_in_place(Bitcoind::start).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let provider = funded(dir.path(), &btc, "provider").await;
    let customer = open(dir.path(), "customer", source(Source::Rpc, &btc)).await;
    let mut cust_rx = customer.subscribe();
    let to = customer.new_address().unwrap();
    let amount = 100_000;

    let old = provider.send(&to, amount, Some(1)).await.expect("sent");
    let old_fee = mempool_fee_sat(&btc, &old).expect("bitcoind has the payment");
    // Make bitcoind's miner leave it out: its fee counts as 1 BTC less.
    tokio::task::block_in_place(|| btc.cli(&["prioritisetransaction", &old, "0", "-100000000"]))
        .expect("prioritisetransaction");
    mine_one(&btc, &provider).await;
    assert_eq!(provider.tx_status(&old), TxStatus::Unconfirmed);
    assert!(
        mempool_fee_sat(&btc, &old).is_some(),
        "still in the mempool"
    );

    match provider.bump_fee(&old, Some(1)).await {
        Err(WalletError::FeeTooLow {
            old_sat_per_vb,
            asked_sat_per_vb: 1,
        }) => assert!(old_sat_per_vb >= 1),
        other => panic!("same rate: expected FeeTooLow, got {other:?}"),
    }

    // Default rate (regtest has no estimate): above the old one, and bitcoind takes it.
    let first = provider
        .bump_fee(&old, None)
        .await
        .expect("bumped at the default rate");
    assert!(
        first.fee_sat_per_vb >= 2 && first.new_fee_sat > old_fee,
        "{first:?}"
    );
    assert_eq!(
        mempool_fee_sat(&btc, &first.new_txid),
        Some(first.new_fee_sat)
    );
    assert_eq!(provider.tx_status(&old), TxStatus::Unknown);
    let old = first.new_txid.clone();
    let old_fee = first.new_fee_sat;
    // Make bitcoind's miner leave this one out as well.
    tokio::task::block_in_place(|| btc.cli(&["prioritisetransaction", &old, "0", "-100000000"]))
        .expect("prioritisetransaction");
    mine_one(&btc, &provider).await;
    assert_eq!(provider.tx_status(&old), TxStatus::Unconfirmed);

    let bumped = provider.bump_fee(&old, Some(10)).await.expect("bumped");
    assert_eq!(bumped.old_txid, old);
    assert_ne!(bumped.new_txid, old);
    assert_eq!(bumped.old_fee_sat, old_fee);
    assert_eq!(bumped.fee_sat_per_vb, 10);
    assert!(
        bumped.new_fee_sat >= 3 * old_fee,
        "several times the fee: {bumped:?}"
    );
    assert_eq!(
        mempool_fee_sat(&btc, &bumped.new_txid),
        Some(bumped.new_fee_sat),
        "bitcoind has the replacement, with the fee the wallet reports"
    );
    assert_eq!(mempool_fee_sat(&btc, &old), None, "and not the original");
    assert_eq!(provider.replacement_of(&old), Some(bumped.new_txid.clone()));
    assert_eq!(provider.replacement_of(&bumped.new_txid), None);
    // Recorded at once: the wallet sees the replacement and not the original.
    assert_eq!(provider.tx_status(&bumped.new_txid), TxStatus::Unconfirmed);
    assert_eq!(provider.tx_status(&old), TxStatus::Unknown);
    let history = provider.history();
    assert!(history.iter().any(|h| h.txid == bumped.new_txid
        && h.height.is_none()
        && h.fee_sat == Some(bumped.new_fee_sat)));
    assert!(!history.iter().any(|h| h.txid == old));
    match provider.bump_fee(&old, Some(20)).await {
        Err(WalletError::NotReplaceable { txid, .. }) => assert_eq!(txid, old),
        other => panic!("replaced already: expected NotReplaceable, got {other:?}"),
    }

    let height = mine_one(&btc, &provider).await;
    assert_eq!(
        provider.tx_status(&bumped.new_txid),
        TxStatus::Confirmed { height }
    );
    assert_eq!(provider.tx_status(&old), TxStatus::Unknown);
    until(&mut cust_rx, "recipient paid", || {
        customer.balance().confirmed_sat == amount
    })
    .await;
    let history = provider.history();
    assert!(history
        .iter()
        .any(|h| h.txid == bumped.new_txid && h.height == Some(height)));
    assert!(!history
        .iter()
        .any(|h| h.txid == old || h.txid == first.old_txid));
    let b = provider.balance();
    assert_eq!(b.pending_sat, 0, "nothing left pending: {b:?}");

    // What the wallet recorded survives a restart.
    provider.shutdown().await;
    let reopened = open(dir.path(), "provider", source(Source::Rpc, &btc)).await;
    assert_eq!(
        reopened.tx_status(&bumped.new_txid),
        TxStatus::Confirmed { height }
    );
    assert_eq!(reopened.tx_status(&old), TxStatus::Unknown);
    assert_eq!(reopened.tx_status(&first.old_txid), TxStatus::Unknown);
    // A caller that recorded the first txid follows it to the one that confirmed, after a restart too.
    for replaced in [&old, &first.old_txid] {
        assert_eq!(
            reopened.replacement_of(replaced),
            Some(bumped.new_txid.clone())
        );
    }
    reopened.shutdown().await;
    customer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bumping_a_confirmed_or_unknown_tx_is_a_typed_error() {
    if xov_testnet::skip_e2e("wallet fee bump on regtest") {
        return;
    }
    let btc = tokio::task::block_in_place(Bitcoind::start).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let provider = funded(dir.path(), &btc, "provider").await;
    let customer = open(dir.path(), "customer", source(Source::Rpc, &btc)).await;
    let mut cust_rx = customer.subscribe();
    let inv = customer
        .create_invoice("inv-1", 50_000, u64::MAX, PaymentPolicy::default())
        .unwrap();

    let txid = provider
        .send(&inv.address, 50_000, Some(2))
        .await
        .expect("sent");
    // The recipient sees it unconfirmed, but it is not the recipient's to replace.
    until(&mut cust_rx, "payment seen", || {
        customer.tx_status(&txid) == TxStatus::Unconfirmed
    })
    .await;
    match customer.bump_fee(&txid, Some(10)).await {
        Err(WalletError::NotReplaceable { txid: t, .. }) => assert_eq!(t, txid),
        other => panic!("someone else's payment: expected NotReplaceable, got {other:?}"),
    }

    let height = mine_one(&btc, &provider).await;
    match provider.bump_fee(&txid, Some(10)).await {
        Err(WalletError::AlreadyConfirmed { txid: t, height: h }) => {
            assert_eq!((t.as_str(), h), (txid.as_str(), height))
        }
        other => panic!("confirmed: expected AlreadyConfirmed, got {other:?}"),
    }
    match provider.bump_fee(&txid, None).await {
        Err(WalletError::AlreadyConfirmed { .. }) => {}
        other => panic!("confirmed, default rate: expected AlreadyConfirmed, got {other:?}"),
    }

    let unknown = "11".repeat(32);
    match provider.bump_fee(&unknown, Some(10)).await {
        Err(WalletError::NoSuchTx(t)) => assert_eq!(t, unknown),
        other => panic!("unknown txid: expected NoSuchTx, got {other:?}"),
    }
    assert!(matches!(
        provider.bump_fee("not-a-txid", None).await,
        Err(WalletError::NoSuchTx(_))
    ));
    let after = provider.history();
    assert!(
        after.iter().all(|h| h.height.is_some()),
        "nothing was broadcast"
    );

    customer.shutdown().await;
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_stuck_for_n_blocks_is_bumped_automatically() {
    if xov_testnet::skip_e2e("wallet automatic fee bump on regtest") {
        return;
    }
    let btc = tokio::task::block_in_place(Bitcoind::start).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let provider = funded(dir.path(), &btc, "provider").await;
    let customer = open(dir.path(), "customer", source(Source::Rpc, &btc)).await;
    let mut cust_rx = customer.subscribe();
    let to = customer.new_address().unwrap();
    let amount = 100_000;

    let old = provider.send(&to, amount, Some(1)).await.expect("sent");
    let old_fee = mempool_fee_sat(&btc, &old).expect("bitcoind has the payment");
    // Make bitcoind's miner leave it out: its fee counts as 1 BTC less.
    tokio::task::block_in_place(|| btc.cli(&["prioritisetransaction", &old, "0", "-100000000"]))
        .expect("prioritisetransaction");
    assert!(provider.bump_stuck(2).await.is_empty(), "just sent");

    mine_one(&btc, &provider).await;
    assert_eq!(provider.tx_status(&old), TxStatus::Unconfirmed);
    assert!(
        provider.bump_stuck(2).await.is_empty(),
        "one block is not two"
    );

    mine_one(&btc, &provider).await;
    assert_eq!(provider.tx_status(&old), TxStatus::Unconfirmed);
    let bumped = provider.bump_stuck(2).await;
    assert_eq!(bumped.len(), 1, "{bumped:?}");
    let bumped = bumped.into_iter().next().unwrap().expect("bumped");
    assert_eq!(bumped.old_txid, old);
    assert_eq!(bumped.old_fee_sat, old_fee);
    assert!(bumped.new_fee_sat > old_fee, "{bumped:?}");
    assert_eq!(
        mempool_fee_sat(&btc, &bumped.new_txid),
        Some(bumped.new_fee_sat),
        "bitcoind has the replacement, at the higher fee"
    );
    assert_eq!(mempool_fee_sat(&btc, &old), None, "and not the original");
    assert_eq!(provider.replacement_of(&old), Some(bumped.new_txid.clone()));
    assert_eq!(provider.replacement_of(&bumped.new_txid), None);
    // Idempotent at one height: the replacement starts its own count.
    assert!(provider.bump_stuck(2).await.is_empty(), "same height");

    let height = mine_one(&btc, &provider).await;
    assert_eq!(
        provider.tx_status(&bumped.new_txid),
        TxStatus::Confirmed { height }
    );
    until(&mut cust_rx, "recipient paid", || {
        customer.balance().confirmed_sat == amount
    })
    .await;
    assert!(provider.bump_stuck(2).await.is_empty(), "nothing stuck");
    mine_one(&btc, &provider).await;
    mine_one(&btc, &provider).await;
    assert!(
        provider.bump_stuck(2).await.is_empty(),
        "nothing stuck, blocks later"
    );

    provider.shutdown().await;
    customer.shutdown().await;
}
