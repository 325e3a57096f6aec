//! Payouts against a real Bitcoin Core regtest node over RPC: built and signed without touching the wallet,
//! broadcast as often as the caller likes (the same txid each time, never an error for a transaction the
//! node has), paying the recipient the value less the fee; and a payout too small to clear the dust limit
//! once the fee is out is a typed error.

use xov_testnet::bitcoind::Bitcoind;
use xov_wallet::*;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payout_pays_value_minus_fee_and_is_idempotent_to_broadcast() {
    if xov_testnet::skip_e2e("wallet payout on regtest") {
        return;
    }
    let btc = tokio::task::block_in_place(Bitcoind::start).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let provider = funded(dir.path(), &btc, "provider").await;
    let customer = open(dir.path(), "customer", source(Source::Rpc, &btc)).await;
    let mut rx = provider.subscribe();
    let mut cust_rx = customer.subscribe();
    let refund_to = customer.new_address().unwrap();
    check_address(&refund_to, Network::Regtest).expect("a regtest address");
    assert!(matches!(
        check_address(&refund_to, Network::Bitcoin),
        Err(WalletError::BadAddress { .. })
    ));

    let value = 100_000;
    let balance_before = provider.balance();
    let signed = provider
        .build_payout(&refund_to, value, Some(5))
        .await
        .expect("payout builds");
    assert!(signed.fee_sat > 0);
    assert_eq!(
        signed.sent_sat + signed.fee_sat,
        value,
        "the fee comes out of the value"
    );
    assert_eq!(
        provider.tx_status(&signed.txid),
        TxStatus::Unknown,
        "building neither broadcasts nor applies"
    );
    let b = provider.balance();
    assert_eq!(
        (b.confirmed_sat, b.pending_sat),
        (balance_before.confirmed_sat, balance_before.pending_sat)
    );
    // The caller persists the payout as JSON between the steps.
    let stored: SignedTx = serde_json::from_str(&serde_json::to_string(&signed).unwrap()).unwrap();
    assert_eq!(stored, signed);

    let first = provider.broadcast_signed(&stored).await.expect("broadcast");
    let again = provider
        .broadcast_signed(&stored)
        .await
        .expect("broadcasting a transaction in the mempool again is Ok");
    assert_eq!(
        (first.as_str(), again.as_str()),
        (signed.txid.as_str(), signed.txid.as_str())
    );
    assert_eq!(provider.tx_status(&signed.txid), TxStatus::Unconfirmed);
    let entry = tokio::task::block_in_place(|| btc.cli(&["getmempoolentry", &signed.txid]))
        .expect("bitcoind has it in its mempool");
    let fee_btc = entry["fees"]["base"].as_f64().expect("mempool entry fee");
    assert_eq!(
        (fee_btc * 1e8).round() as u64,
        signed.fee_sat,
        "the fee bitcoind sees"
    );

    let height = tokio::task::block_in_place(|| {
        btc.mine(1).unwrap();
        btc.height().unwrap()
    }) as u32;
    until(&mut rx, "payout confirmed", || {
        provider.tx_status(&signed.txid) == TxStatus::Confirmed { height }
    })
    .await;
    until(&mut cust_rx, "recipient paid", || {
        customer.balance().confirmed_sat == value - signed.fee_sat
    })
    .await;

    // Once in a block: Ok from the wallet that made it (it sees it confirmed) and from one that has never
    // seen it (bitcoind answers "already in the chain", RPC_VERIFY_ALREADY_IN_CHAIN).
    assert_eq!(
        provider.broadcast_signed(&signed).await.expect("confirmed"),
        signed.txid
    );
    let bystander = open(dir.path(), "bystander", source(Source::Rpc, &btc)).await;
    assert_eq!(
        bystander
            .broadcast_signed(&signed)
            .await
            .expect("already in the chain is Ok"),
        signed.txid
    );
    assert_eq!(customer.balance().confirmed_sat, value - signed.fee_sat);

    // A mangled payout is refused before it reaches the chain.
    let mut wrong = signed.clone();
    wrong.txid = "00".repeat(32);
    assert!(matches!(
        provider.broadcast_signed(&wrong).await,
        Err(WalletError::BadSignedTx(_))
    ));

    bystander.shutdown().await;
    customer.shutdown().await;
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payout_below_dust_is_a_typed_error() {
    if xov_testnet::skip_e2e("wallet payout on regtest") {
        return;
    }
    let btc = tokio::task::block_in_place(Bitcoind::start).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let provider = funded(dir.path(), &btc, "provider").await;
    let to = provider.new_address().unwrap();

    // P2WPKH dust is 294 sat; at 2 sat/vB a payout's fee is about 280 sat.
    for value in [0, 200, 500] {
        match provider.build_payout(&to, value, Some(2)).await {
            Err(WalletError::BelowDust { value_sat, fee_sat }) => {
                assert_eq!(value_sat, value);
                assert!(fee_sat > 0, "names the fee it would have cost");
            }
            other => panic!("payout of {value} sat: expected BelowDust, got {other:?}"),
        }
    }
    // Just enough: the recipient gets at least the dust limit.
    let ok = provider
        .build_payout(&to, 1_000, Some(2))
        .await
        .expect("1000 sat clears the dust limit");
    assert!(ok.sent_sat >= 294 && ok.sent_sat + ok.fee_sat == 1_000);
    assert!(matches!(
        provider.build_payout("not-an-address", 10_000, None).await,
        Err(WalletError::BadAddress { .. })
    ));
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_of_the_whole_balance_takes_the_fee_out_of_it() {
    // A provider whose wallet holds only a lease's payment refunds that payment: nothing more is there to
    // pay the fee with, so the fee must come out of the refund.
    if xov_testnet::skip_e2e("wallet payout on regtest") {
        return;
    }
    let btc = tokio::task::block_in_place(Bitcoind::start).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let funder = funded(dir.path(), &btc, "funder").await;
    let provider = open(dir.path(), "provider", source(Source::Rpc, &btc)).await;
    let buyer = open(dir.path(), "buyer", source(Source::Rpc, &btc)).await;
    let mut rx = provider.subscribe();
    let lease_address = provider.new_address().unwrap();
    funder.send(&lease_address, 1_500, Some(2)).await.unwrap();
    tokio::task::block_in_place(|| btc.mine(1).unwrap());
    until(&mut rx, "the payment confirmed", || {
        provider.balance().confirmed_sat == 1_500
    })
    .await;
    let refund_to = buyer.new_address().unwrap();
    let signed = provider
        .build_payout(&refund_to, 1_500, Some(2))
        .await
        .expect("the whole balance pays out, fee included");
    assert_eq!(signed.sent_sat + signed.fee_sat, 1_500);
    provider.broadcast_signed(&signed).await.unwrap();
    tokio::task::block_in_place(|| btc.mine(1).unwrap());
    until(&mut rx, "the payout confirmed", || {
        matches!(provider.tx_status(&signed.txid), TxStatus::Confirmed { .. })
    })
    .await;
    assert_eq!(provider.balance().confirmed_sat, 0, "nothing left behind");

    // Nearly the whole balance: the change left would be about the dust limit, which makes the fee flip
    // between two shapes of transaction; the payout still builds, and gives up no more than the value.
    let second = open(dir.path(), "second", source(Source::Rpc, &btc)).await;
    let mut rx2 = second.subscribe();
    let lease_address = second.new_address().unwrap();
    funder.send(&lease_address, 1_500, Some(2)).await.unwrap();
    tokio::task::block_in_place(|| btc.mine(1).unwrap());
    until(&mut rx2, "the second payment confirmed", || {
        second.balance().confirmed_sat == 1_500
    })
    .await;
    let signed = second
        .build_payout(&refund_to, 1_485, Some(2))
        .await
        .expect("a payout of 1485 of 1500 sat builds");
    assert_eq!(signed.sent_sat + signed.fee_sat, 1_485);
    second.broadcast_signed(&signed).await.unwrap();
    tokio::task::block_in_place(|| btc.mine(1).unwrap());
    until(&mut rx2, "the near-whole payout confirmed", || {
        matches!(second.tx_status(&signed.txid), TxStatus::Confirmed { .. })
    })
    .await;
    assert!(
        second.balance().confirmed_sat <= 15,
        "the value left the wallet; at most the 15 sat not refunded remain"
    );
    for w in [funder, provider, buyer, second] {
        w.shutdown().await;
    }
}
