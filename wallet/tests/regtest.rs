//! The wallet against a real Bitcoin Core regtest node, for both chain sources: compact block filters
//! (the light client, over P2P) and bitcoind RPC. Every payment is a real transaction made by another
//! xov wallet; blocks come from `generatetoaddress`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast::Receiver;
use xov_testnet::bitcoind::Bitcoind;
use xov_wallet::*;

mod common;
use common::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits for the first event matching `pred`, failing after WAIT with what was seen.
async fn wait_for(
    rx: &mut Receiver<WalletEvent>,
    what: &str,
    pred: impl Fn(&WalletEvent) -> bool,
) -> WalletEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if pred(&e) => return e,
            Ok(Ok(e)) => seen.push(e),
            Ok(Err(e)) => panic!("event stream broke while waiting for {what}: {e}"),
            Err(_) => panic!("timed out waiting for {what}; saw {seen:?}"),
        }
    }
}

fn mine(btc: &Bitcoind, n: u32) -> Instant {
    tokio::task::block_in_place(|| btc.mine(n).expect("mine"));
    Instant::now()
}

fn is_status(id: &str, status: InvoiceStatus) -> impl Fn(&WalletEvent) -> bool + '_ {
    move |e| matches!(e, WalletEvent::InvoiceUpdated { invoice, status: s, .. } if invoice == id && *s == status)
}

const TWO_CONFS: PaymentPolicy = PaymentPolicy {
    min_confirmations: 2,
    zero_conf_max_sat: 0,
};

async fn scenario(kind: Source) {
    if xov_testnet::skip_e2e("wallet regtest") {
        return;
    }
    let btc = tokio::task::block_in_place(Bitcoind::start).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let payer = open(dir.path(), "payer", source(kind, &btc)).await;
    let receiver = open(dir.path(), "receiver", source(kind, &btc)).await;
    let mut pay_rx = payer.subscribe();
    let mut rx = receiver.subscribe();

    // Fund the payer with a mature coinbase.
    let funding = payer.new_address().unwrap();
    tokio::task::block_in_place(|| btc.mine_to(101, &funding).unwrap());
    until(&mut pay_rx, "payer funded", || {
        payer.balance().confirmed_sat > 0
    })
    .await;

    let mut delays = Vec::new();

    // 1. Unpaid -> seen -> confirmed, paid from a BIP21 URI.
    let inv1 = receiver
        .create_invoice("inv-1", 50_000, now() + 3600, TWO_CONFS)
        .unwrap();
    assert_eq!(inv1.status, InvoiceStatus::Unpaid);
    assert!(inv1
        .uri()
        .starts_with(&format!("bitcoin:{}?amount=0.0005", inv1.address)));
    let txid = payer
        .pay(&inv1.uri(), None)
        .await
        .expect("payer pays the invoice");
    if let Source::Rpc = kind {
        // bitcoind RPC sees the mempool: seen before any block.
        let e = wait_for(
            &mut rx,
            "payment seen in mempool",
            |e| matches!(e, WalletEvent::PaymentSeen { invoice, .. } if invoice == "inv-1"),
        )
        .await;
        assert_eq!(
            e,
            WalletEvent::PaymentSeen {
                invoice: "inv-1".into(),
                txid: txid.clone(),
                amount_sat: 50_000,
                confirmations: 0
            }
        );
        mine(&btc, 1);
    } else {
        // The light client learns of payments from blocks: seen at the first confirmation.
        mine(&btc, 1);
        let e = wait_for(
            &mut rx,
            "payment seen in a block",
            |e| matches!(e, WalletEvent::PaymentSeen { invoice, .. } if invoice == "inv-1"),
        )
        .await;
        assert_eq!(
            e,
            WalletEvent::PaymentSeen {
                invoice: "inv-1".into(),
                txid: txid.clone(),
                amount_sat: 50_000,
                confirmations: 1
            }
        );
    }
    until(&mut rx, "inv-1 seen", || {
        receiver.invoice("inv-1").unwrap().status == InvoiceStatus::Seen
    })
    .await;
    let t = mine(&btc, 1);
    wait_for(&mut rx, "payment confirmed", |e| matches!(e, WalletEvent::PaymentConfirmed { invoice, confirmations: 2, .. } if invoice == "inv-1")).await;
    delays.push(t.elapsed());
    wait_for(
        &mut rx,
        "inv-1 paid",
        is_status("inv-1", InvoiceStatus::Paid),
    )
    .await;

    // 2. Partial, 3. over, 4. late payments.
    let inv2 = receiver
        .create_invoice("inv-2", 100_000, now() + 3600, TWO_CONFS)
        .unwrap();
    let inv3 = receiver
        .create_invoice("inv-3", 30_000, now() + 3600, TWO_CONFS)
        .unwrap();
    let inv4 = receiver
        .create_invoice("inv-4", 20_000, now().saturating_sub(1), TWO_CONFS)
        .unwrap();
    receiver.refresh().unwrap();
    assert_eq!(
        receiver.invoice("inv-4").unwrap().status,
        InvoiceStatus::Expired
    );
    payer.send(&inv2.address, 40_000, None).await.unwrap();
    payer.send(&inv3.address, 45_000, None).await.unwrap();
    payer.send(&inv4.address, 20_000, Some(3)).await.unwrap();
    mine(&btc, 1);
    let t = mine(&btc, 1);
    wait_for(
        &mut rx,
        "inv-2 partial",
        is_status("inv-2", InvoiceStatus::Partial),
    )
    .await;
    delays.push(t.elapsed());
    until(&mut rx, "inv-3 overpaid and inv-4 paid late", || {
        receiver.invoice("inv-3").unwrap().status == InvoiceStatus::Overpaid
            && receiver.invoice("inv-4").unwrap().status == InvoiceStatus::PaidLate
    })
    .await;

    // Refund: what arrived on the overpaid invoice goes back to an address the payer gave.
    let refund_to = payer.new_address().unwrap();
    let before = payer.balance();
    receiver
        .refund_invoice("inv-3", &refund_to, None)
        .await
        .expect("refund");
    mine(&btc, 1);
    until(&mut pay_rx, "payer got the refund", || {
        let b = payer.balance();
        b.confirmed_sat + b.pending_sat > before.confirmed_sat + before.pending_sat + 40_000
    })
    .await;
    assert!(
        matches!(
            receiver.refund_invoice("inv-3", &refund_to, None).await,
            Err(WalletError::InsufficientFunds(_))
        ),
        "nothing left to refund twice"
    );

    // 5. A second payment to a paid invoice's address is a top-up.
    payer.send(&inv1.address, 20_000, None).await.unwrap();
    mine(&btc, 1);
    let t = mine(&btc, 1);
    let e = wait_for(&mut rx, "top-up counted", |e| {
        matches!(e, WalletEvent::InvoiceUpdated { invoice, settled_sat, .. } if invoice == "inv-1" && *settled_sat > 50_000)
    })
    .await;
    delays.push(t.elapsed());
    assert_eq!(
        e,
        WalletEvent::InvoiceUpdated {
            invoice: "inv-1".into(),
            status: InvoiceStatus::Paid,
            settled_sat: 70_000,
            zero_conf_sat: 0,
            pending_sat: 0
        }
    );

    // 6. Many unpaid invoices do not blind the wallet: the last of more invoices than the lookahead is seen.
    let mut last = None;
    for i in 0..120 {
        last = Some(
            receiver
                .create_invoice(&format!("bulk-{i}"), 10_000, now() + 3600, TWO_CONFS)
                .unwrap(),
        );
    }
    let last = last.unwrap();
    payer.send(&last.address, 10_000, None).await.unwrap();
    mine(&btc, 2);
    wait_for(
        &mut rx,
        "the 120th unpaid invoice is paid",
        is_status("bulk-119", InvoiceStatus::Paid),
    )
    .await;

    // 7. Reorg: the paying block is invalidated and its transaction kept out of new blocks.
    let inv5 = receiver
        .create_invoice("inv-5", 25_000, now() + 3600, TWO_CONFS)
        .unwrap();
    let txid5 = payer.send(&inv5.address, 25_000, None).await.unwrap();
    let paying_block = tokio::task::block_in_place(|| btc.mine(1).unwrap())[0].clone();
    mine(&btc, 1);
    wait_for(
        &mut rx,
        "inv-5 paid",
        is_status("inv-5", InvoiceStatus::Paid),
    )
    .await;
    tokio::task::block_in_place(|| {
        btc.cli(&["invalidateblock", &paying_block]).unwrap();
        btc.cli(&["prioritisetransaction", &txid5, "0", "-100000000"])
            .unwrap();
    });
    // Neither source sees a chain shrink by itself: the reorg is noticed when the competing branch's blocks
    // arrive (they do not contain the payment, which was made unminable).
    mine(&btc, 3);
    let e = wait_for(
        &mut rx,
        "payment reorged out",
        |e| matches!(e, WalletEvent::PaymentReorged { invoice, .. } if invoice == "inv-5"),
    )
    .await;
    assert_eq!(
        e,
        WalletEvent::PaymentReorged {
            invoice: "inv-5".into(),
            txid: txid5.clone(),
            amount_sat: 25_000
        }
    );
    until(&mut rx, "inv-5 no longer paid", || {
        !receiver.invoice("inv-5").unwrap().status.is_paid()
    })
    .await;

    // 8. A restarted wallet keeps its state: chain position, invoices, payments.
    let tip = receiver.tip_height();
    let before = receiver.invoices();
    receiver.shutdown().await;
    let receiver = open(dir.path(), "receiver", source(kind, &btc)).await;
    assert_eq!(receiver.tip_height(), tip, "no rescan from genesis");
    assert_eq!(receiver.invoices(), before);
    assert_eq!(receiver.invoice("inv-1").unwrap().settled_sat, 70_000);
    let mut rx = receiver.subscribe();
    mine(&btc, 1);
    wait_for(
        &mut rx,
        "restarted wallet follows the chain",
        |e| matches!(e, WalletEvent::TipChanged { height } if *height > tip),
    )
    .await;

    let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
    println!("BENCH chain-event-delay source={kind:?} samples_ms={ms:?}");
    payer.shutdown().await;
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_block_filters() {
    scenario(Source::Filters).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoind_rpc() {
    scenario(Source::Rpc).await;
}
