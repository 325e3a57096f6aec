//! Writes the seed corpus of every node fuzz target into `corpus/<target>/`: valid lease-channel requests and
//! responses (an order, notices of a simulated lease's whole life, a bid answer, an invoice, a refusal), sync
//! pages (a book page with offers, a withdrawal and the lease's receipt, charters, another chain, requests)
//! and a few lease-machine scripts.
//!
//! Run from `node/fuzz`: `cargo run --example seeds` (stable is enough, but a debug build of the node comes
//! first). Quicker after `cargo fuzz build`: build the example with the flags `cargo fuzz build -v` shows
//! (`--example seeds` instead of `--bins`, same target dir) and run the binary with
//! `ASAN_OPTIONS=detect_leaks=0`. Files are named `seed-N` and overwritten; `corpus/lease_machine/seed-3` is
//! a script the fuzzer found (it pays a lease more than the world can settle; the target now caps that).

use std::fs;
use std::path::Path;

use xov_node::lease::machine::Action;
use xov_node::network::lease_wire::{LeaseRequest, LeaseResponse};
use xov_node::network::sync::{SyncRequest, SyncResponse};
use xov_node_fuzz::{
    buyer_key, cbor_encode, lease_order, pool, provider_key, provider_offer, world_with_lease,
    CHAIN, NOW,
};
use xov_protocol::{
    Chain, Invoice, LeaseNotice, NoticeBody, Offer, OfferKey, OfferWithdrawal, OrderRefusal, Signed,
};

fn write(target: &str, seeds: &[Vec<u8>]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    for (i, s) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i}")), s).unwrap();
    }
    println!("{target}: {} seeds", seeds.len());
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// A simulated lease from payment to receipt: one notice of each kind the two sides sent (re-dated to `NOW`
/// and signed again, so that they validate at the fuzz targets' clock), and the countersigned receipt.
fn lease_life() -> (Vec<Signed<LeaseNotice>>, Option<Vec<u8>>) {
    let (mut w, id) = world_with_lease();
    // Actions wait up to 20 s, so the notices of a step can be read before the next step delivers them.
    w.faults.max_delay = 20;
    let amount = w.prov(&id).amount_sat;
    w.pay(&id, amount, false, true);
    w.mine();
    w.mine();
    let mut notices: Vec<Signed<LeaseNotice>> = Vec::new();
    let mut step = 0;
    while step < 400 {
        for op in &w.ops {
            if let Action::Send(n) = &op.action {
                let tag = (n.body().from, n.body().body.tag());
                if !notices
                    .iter()
                    .any(|m| (m.body().from, m.body().body.tag()) == tag)
                {
                    notices.push(n.clone());
                }
            }
        }
        if step == 10 {
            w.input(
                xov_node::sim::Side::Buyer,
                &id,
                xov_node::lease::machine::Input::Cancel,
            );
        }
        w.step(30);
        if step % 10 == 0 {
            w.mine();
        }
        step += 1;
    }
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    let redated = notices
        .into_iter()
        .map(|n| {
            let mut b = n.body().clone();
            b.at = NOW;
            let key = if b.from == provider_key().node_id() {
                provider_key()
            } else {
                buyer_key()
            };
            Signed::sign(b, &key)
        })
        .collect();
    (redated, w.buy(&id).countersigned_hex.as_deref().map(hex))
}

fn main() {
    let provider = provider_key();
    let (w, id) = world_with_lease();
    let order = lease_order(&w, &id);
    let offer = provider_offer();
    let (notices, receipt) = lease_life();
    let tags: Vec<String> = notices
        .iter()
        .map(|n| format!("{:?}", std::mem::discriminant(&n.body().body)))
        .collect();
    println!("lease notices: {} kinds {tags:?}", notices.len());
    let _ = NoticeBody::Cancel;

    // --------------------------------------------------------------- lease_wire
    let invoice = Signed::sign(
        Invoice {
            provider: provider.node_id(),
            buyer: buyer_key().node_id(),
            lease_id: order.id(),
            address: "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into(),
            amount_sats: 3600,
            price_sats_per_hour: 3600,
            hours: 1,
            min_confirmations: 1,
            created_at: NOW,
            expires_at: NOW + 900,
        },
        &provider,
    );
    let mut wire = vec![
        cbor_encode(&LeaseRequest::Order(order.to_bytes())),
        cbor_encode(&LeaseRequest::BidAnswer {
            bid_id: 7,
            offers: vec![offer.to_bytes()],
        }),
        cbor_encode(&LeaseResponse::Invoice(invoice.to_bytes())),
        cbor_encode(&LeaseResponse::Refused(OrderRefusal::OfferGone {
            offer_id: 1,
        })),
        cbor_encode(&LeaseResponse::Ack),
    ];
    wire.extend(
        notices
            .iter()
            .map(|n| cbor_encode(&LeaseRequest::Notice(n.to_bytes()))),
    );
    write("lease_wire", &wire);

    // --------------------------------------------------------------- sync_page
    let newer = Signed::sign(
        Offer {
            sequence: 2,
            price_sats_per_hour: 4000,
            ..offer.body().clone()
        },
        &provider,
    );
    let other = Signed::sign(
        Offer {
            offer_id: 2,
            ..offer.body().clone()
        },
        &provider,
    );
    let withdrawal = Signed::sign(
        OfferWithdrawal {
            provider: provider.node_id(),
            pool: pool(),
            offer_id: 2,
            sequence: 1,
            created_at: NOW - 5,
            expires_at: NOW + 3600,
        },
        &provider,
    );
    let sync = vec![
        cbor_encode(&SyncResponse::Book {
            pool: pool().0,
            offers: vec![offer.to_bytes(), newer.to_bytes(), other.to_bytes()],
            withdrawals: vec![withdrawal.to_bytes()],
            next: Some(OfferKey::of(offer.body())),
            evidence: receipt.into_iter().collect(),
        }),
        cbor_encode(&SyncResponse::Charters {
            charters: vec![xov_protocol::public_charter(CHAIN).to_bytes()],
            next: None,
        }),
        cbor_encode(&SyncResponse::OtherChain {
            chain: Chain::SIGNET,
        }),
        cbor_encode(&SyncRequest::Book {
            chain: CHAIN,
            pool: pool().0,
            after: None,
        }),
    ];
    write("sync_page", &sync);

    // --------------------------------------------------------------- lease_machine
    // Header: terms, faults, leases (+ 5 bytes per lease); then steps (see fuzz_targets/lease_machine.rs).
    let machine = vec![
        // Perfect world, one lease: paid (min start), two blocks, an hour, cancelled.
        vec![
            0, 0, 0, 1, 0, 1, 0, 0, /* pay */ 2, 0, 1, 0, 0, /* mine */ 3, 250, 3, 250,
            /* 30 min */ 1, 29, 11, 1, 29, /* cancel */ 6, 0, 1, 10,
        ],
        // Two leases, one with a budget of slices; reorg, replacement, crashes, silence.
        vec![
            1, 0, 1, 3, 40, 1, 10, 0, 5, 100, 1, 50, 0x35, /* pay both */ 2, 0, 0, 0, 100, 2,
            1, 5, 1, 0, /* mine */ 3, 250, 1, 5, /* reorg */ 4, 0, 3, 250, 3, 250, 1, 20,
            /* crash provider */ 7, 1, 10, /* silence */ 9, 1, 30, 9,
            /* crash buyer */ 8, 1, 59, 5, 0, 2, 1, 3, 0x10, 0, 3, 250,
        ],
        // Random faults, three leases, zero-conf, RBF payments and a dry buyer wallet.
        vec![
            2, 7, 2, 0, 0, 1, 0, 0, 9, 255, 0, 255, 0x81, 4, 8, 2, 30, 3, 2, 0, 0x04, 0, 0, 2, 1,
            0x01, 0, 0, 2, 2, 0x02, 0x10, 0, 0, 10, 3, 200, 0, 200, 1, 10, 10, 6, 2, 1, 90, 3, 250,
            1, 200,
        ],
    ];
    write("lease_machine", &machine);
}
