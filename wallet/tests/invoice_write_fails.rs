//! A failed invoice write loses nothing and announces nothing: while the store refuses writes, a payment to an
//! invoice is neither announced (no event) nor shown (`invoice()` keeps what is on disk), so the lease engine
//! never acts on an assessment a crash could take back; once writes work again the wallet writes and
//! announces it by itself, with no further change on the chain. Bitcoind RPC source, real regtest node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use xov_testnet::bitcoind::Bitcoind;
use xov_wallet::bdk::ChangeSet;
use xov_wallet::*;

mod common;
use common::*;

/// A file store whose invoice writes fail while `fail` is set; each refused write is reported on `refused`.
struct Flaky {
    inner: FileStore,
    fail: Arc<AtomicBool>,
    refused: Mutex<mpsc::Sender<String>>,
}

impl WalletStore for Flaky {
    fn load_changeset(&self) -> Result<Option<ChangeSet>, WalletError> {
        self.inner.load_changeset()
    }
    fn save_changeset(&mut self, full: &ChangeSet) -> Result<(), WalletError> {
        self.inner.save_changeset(full)
    }
    fn load_invoices(&self) -> Result<Vec<Invoice>, WalletError> {
        self.inner.load_invoices()
    }
    fn save_invoice(&mut self, invoice: &Invoice) -> Result<(), WalletError> {
        if self.fail.load(Ordering::SeqCst) {
            let _ = self.refused.lock().unwrap().send(invoice.id.clone());
            return Err(WalletError::Io {
                what: "cannot write invoice",
                path: invoice.id.clone(),
                source: std::io::Error::other("disk full (test)"),
            });
        }
        self.inner.save_invoice(invoice)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_invoice_cannot_be_written_is_announced_once_it_is() {
    if xov_testnet::skip_e2e("wallet invoice write fails") {
        return;
    }
    let btc = tokio::task::block_in_place(Bitcoind::start).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let payer = funded(dir.path(), &btc, "payer").await;
    let fail = Arc::new(AtomicBool::new(false));
    let (tx, refused) = mpsc::channel();
    let store = Flaky {
        inner: FileStore::new(dir.path().join("receiver")).unwrap(),
        fail: fail.clone(),
        refused: Mutex::new(tx),
    };
    let cfg = WalletConfig {
        network: Network::Regtest,
        mnemonic_path: dir.path().join("receiver.mnemonic"),
        passphrase: String::new(),
        file_passphrase: None,
        chain: source(Source::Rpc, &btc),
        lookahead: 50,
    };
    let receiver = XovWallet::open(cfg, Box::new(store)).await.unwrap();
    let mut rx = receiver.subscribe();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let policy = PaymentPolicy {
        min_confirmations: 1,
        zero_conf_max_sat: 0,
    };
    let inv = receiver
        .create_invoice("inv-w", 40_000, now + 3600, policy)
        .unwrap();

    fail.store(true, Ordering::SeqCst);
    payer.pay(&inv.uri(), None).await.expect("payer pays");
    // The receiver sees the payment in the mempool and fails to write the invoice's new state.
    let id = tokio::task::block_in_place(|| refused.recv_timeout(WAIT)).expect("a refused write");
    assert_eq!(id, "inv-w");
    while let Ok(e) = rx.try_recv() {
        assert!(
            !matches!(
                &e,
                WalletEvent::PaymentSeen { .. } | WalletEvent::InvoiceUpdated { .. }
            ),
            "announced although the invoice was not written: {e:?}"
        );
    }
    let shown = receiver.invoice("inv-w").unwrap();
    assert_eq!(shown.status, InvoiceStatus::Unpaid, "{shown:?}");
    assert!(shown.payments.is_empty(), "{shown:?}");

    // Writes work again: the same payment is written and announced, with no new block or transaction.
    fail.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(WalletEvent::PaymentSeen {
                invoice,
                amount_sat,
                ..
            })) if invoice == "inv-w" => {
                assert_eq!(amount_sat, 40_000);
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("event stream broke: {e}"),
            Err(_) => panic!(
                "the payment was never announced after writes worked again: {:?}",
                receiver.invoice("inv-w")
            ),
        }
    }
    assert_eq!(
        receiver.invoice("inv-w").unwrap().status,
        InvoiceStatus::Seen
    );
    receiver.shutdown().await;
    payer.shutdown().await;
}
