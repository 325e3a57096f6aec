//! Fidelity bonds against a real Bitcoin Core regtest node, for both chain sources: a wallet locks coins in
//! a bond, another wallet checks the claim against the chain (right, wrong key, wrong locktime, wrong
//! amount, missing), the binding signature verifies, the bond survives a restart, and once the locktime
//! has passed the owner moves the coins back and the bond is reported spent.

use std::time::Duration;

use xov_testnet::bitcoind::Bitcoind;
use xov_wallet::bitcoin::absolute::LockTime;
use xov_wallet::bitcoin::hashes::{sha256, Hash};
use xov_wallet::bitcoin::OutPoint;
use xov_wallet::*;

mod common;
use common::*;

fn mine(btc: &Bitcoind, n: u32) {
    tokio::task::block_in_place(|| btc.mine(n).expect("mine"));
}

fn digest(text: &str) -> [u8; 32] {
    sha256::Hash::hash(text.as_bytes()).to_byte_array()
}

async fn scenario(kind: Source) {
    if xov_testnet::skip_e2e("wallet bonds on regtest") {
        return;
    }
    let btc = tokio::task::block_in_place(Bitcoind::start).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path(), "owner", source(kind, &btc)).await;
    let verifier = open(dir.path(), "verifier", source(kind, &btc)).await;
    let mut rx = owner.subscribe();

    let funding = owner.new_address().unwrap();
    tokio::task::block_in_place(|| btc.mine_to(101, &funding).unwrap());
    // At the chain's tip, not just funded: the light client may report a tip short of it first (the
    // coinbase already counts one block before), and the bond's height below is reckoned from this tip.
    let chain_tip = tokio::task::block_in_place(|| btc.height().unwrap()) as u32;
    until(&mut rx, "owner funded, at the chain's tip", || {
        owner.balance().confirmed_sat > 0 && owner.tip_height() == chain_tip
    })
    .await;

    // A locktime in the past is refused before any money moves.
    let tip = owner.tip_height();
    let past = owner
        .create_bond(100_000, LockTime::from_height(tip).unwrap(), None)
        .await;
    assert!(matches!(past, Err(WalletError::BadBond(_))), "{past:?}");

    // Lock 100 000 sat until 8 blocks from now.
    let unlock_at = tip + 8;
    let locktime = LockTime::from_height(unlock_at).unwrap();
    let bond = owner
        .create_bond(100_000, locktime, None)
        .await
        .expect("bond created");
    assert_eq!(bond.amount_sat, 100_000);
    assert_eq!(bond.locktime, locktime);
    assert_eq!(bond.key_index, 0);
    assert!(bond.script_pubkey.is_p2wsh());
    let op = bond.outpoint;
    in_mempool(&btc, &op.txid.to_string());
    mine(&btc, 1);
    until(&mut rx, "bond confirmed in the owner's wallet", || {
        owner.bond(op).and_then(|b| b.height).is_some()
    })
    .await;
    let bond = owner.bond(op).unwrap();
    let funded_at = bond.height.unwrap();
    assert_eq!(funded_at, tip + 1);
    assert_eq!(owner.list_bonds(), vec![bond.clone()]);

    // Another wallet checks the claim against the chain.
    let claim = bond.claim();
    let status = verifier
        .check_bond(&claim)
        .await
        .expect("the bond is found unspent");
    assert_eq!(status.amount_sat, 100_000);
    assert_eq!(status.height, Some(funded_at));
    assert!(status.confirmations >= 1);
    assert!(!status.locktime_passed);

    let (_, other_key) = {
        let sk = xov_wallet::bitcoin::secp256k1::SecretKey::from_slice(&[3; 32]).unwrap();
        let secp = xov_wallet::bitcoin::secp256k1::Secp256k1::new();
        (sk, sk.public_key(&secp).serialize())
    };
    let wrong_key = BondClaim {
        pubkey: other_key,
        ..claim.clone()
    };
    let r = verifier.check_bond(&wrong_key).await;
    assert!(matches!(r, Err(BondError::ScriptMismatch { .. })), "{r:?}");
    let wrong_locktime = BondClaim {
        locktime: LockTime::from_height(unlock_at + 1000).unwrap(),
        ..claim.clone()
    };
    let r = verifier.check_bond(&wrong_locktime).await;
    assert!(matches!(r, Err(BondError::ScriptMismatch { .. })), "{r:?}");
    let inflated = BondClaim {
        amount_sat: 1_000_000,
        ..claim.clone()
    };
    let r = verifier.check_bond(&inflated).await;
    assert!(
        matches!(
            r,
            Err(BondError::AmountMismatch {
                claimed_sat: 1_000_000,
                actual_sat: 100_000,
                ..
            })
        ),
        "{r:?}"
    );
    let missing = BondClaim {
        outpoint: OutPoint::new(op.txid, 7),
        ..claim.clone()
    };
    let r = verifier.check_bond(&missing).await;
    assert!(matches!(r, Err(BondError::NotFound { .. })), "{r:?}");
    if let Source::Filters = kind {
        let r = verifier
            .check_bond(&BondClaim {
                height_hint: None,
                ..claim.clone()
            })
            .await;
        assert!(matches!(r, Err(BondError::Unsupported(_))), "{r:?}");
    }

    // The binding signature: the owner signs the node binding with the bond key; anyone verifies.
    let binding = digest("node A binds bond");
    let sig = owner.sign_bond_binding(op, &binding).unwrap();
    verify_bond_binding(&bond.pubkey_bytes(), &binding, &sig).expect("binding verifies");
    assert!(matches!(
        verify_bond_binding(&bond.pubkey_bytes(), &digest("node B"), &sig),
        Err(BondError::BadSignature)
    ));
    assert!(matches!(
        verify_bond_binding(&other_key, &binding, &sig),
        Err(BondError::BadSignature)
    ));
    assert!(matches!(
        verifier.sign_bond_binding(op, &binding),
        Err(WalletError::NoSuchBond(_))
    ));

    // Still locked: the wallet refuses to try.
    let r = owner.unlock_bond(op, None).await;
    assert!(matches!(r, Err(WalletError::BondLocked(_))), "{r:?}");

    // The bond survives a restart (its locktime is not in the seed).
    owner.shutdown().await;
    let owner = open(dir.path(), "owner", source(kind, &btc)).await;
    let mut rx = owner.subscribe();
    assert_eq!(owner.list_bonds(), vec![bond.clone()]);

    // Past the locktime the coins go back to the wallet, and the bond is spent.
    let remaining = unlock_at.saturating_sub(btc_height(&btc));
    mine(&btc, remaining);
    until(&mut rx, "owner at the locktime", || {
        owner.tip_height() >= unlock_at
    })
    .await;
    let unlock_txid = owner.unlock_bond(op, None).await.expect("bond unlocked");
    in_mempool(&btc, &unlock_txid);
    if let Source::Rpc = kind {
        // bitcoind sees the spend in its mempool already.
        let r = verifier.check_bond(&claim).await;
        assert!(
            matches!(&r, Err(BondError::Spent { spending_txid: Some(t), .. }) if t.to_string() == unlock_txid),
            "{r:?}"
        );
    }
    mine(&btc, 1);
    until(
        &mut rx,
        "unlocking transaction confirmed in the wallet",
        || {
            owner
                .history()
                .iter()
                .any(|h| h.txid == unlock_txid && h.height.is_some() && h.received_sat > 99_000)
        },
    )
    .await;
    let r = verifier.check_bond(&claim).await;
    match kind {
        // The light client finds the spending block through the bond script in its filter.
        Source::Filters => assert!(
            matches!(&r, Err(BondError::Spent { spending_txid: Some(t), .. }) if t.to_string() == unlock_txid),
            "{r:?}"
        ),
        Source::Rpc => assert!(matches!(r, Err(BondError::Spent { .. })), "{r:?}"),
    }
    assert_eq!(
        owner.bond(op).unwrap().unlock_txid.map(|t| t.to_string()),
        Some(unlock_txid)
    );

    owner.shutdown().await;
    verifier.shutdown().await;
}

/// Waits until bitcoind holds `txid` in its mempool (a light client's broadcast returns once a peer has
/// the transaction, not once it has accepted it), so the next block includes it.
fn in_mempool(btc: &Bitcoind, txid: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    tokio::task::block_in_place(|| {
        while btc.cli(&["getmempoolentry", txid]).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{txid} never reached bitcoind's mempool"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

fn btc_height(btc: &Bitcoind) -> u32 {
    tokio::task::block_in_place(|| btc.height().expect("height")) as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bond_with_compact_block_filters() {
    scenario(Source::Filters).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bond_with_bitcoind_rpc() {
    scenario(Source::Rpc).await;
}
