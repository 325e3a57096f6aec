//! Writes a seed corpus for every fuzz target into `corpus/<target>/` (valid, signed messages of each kind and
//! a few book scripts), so the fuzzers start past the framing and the key checks.
//!
//! Run from `protocol/fuzz`: `cargo run --example seeds` (stable is enough). `corpus/` is git-ignored.

use std::fs;
use std::path::Path;

use xov_protocol::*;
use xov_protocol_fuzz::NOW;

fn key(n: u8) -> Keypair {
    Keypair::from_secret_bytes(&[n; 32])
}

fn charter(founder: &Keypair, publish: PublishPolicy) -> PoolCharter {
    PoolCharter {
        name: "seed-pool".into(),
        founder: founder.node_id(),
        created_at: NOW - 1000,
        rules: PoolRules {
            publish,
            ..PoolRules::default()
        },
        chain: Chain::SIGNET,
    }
}

fn offer(
    provider: &Keypair,
    pool: PoolId,
    offer_id: u64,
    sequence: u64,
    price: u64,
    gpu: bool,
) -> Offer {
    Offer {
        provider: provider.node_id(),
        pool,
        offer_id,
        sequence,
        created_at: NOW - 10,
        expires_at: NOW + 3600 + sequence,
        instance: InstanceType {
            vcpus: 2,
            ram_mib: 4096,
            disk_gib: 40,
            gpu: gpu.then(|| Gpu {
                model: "A100".into(),
                count: 1,
            }),
            arch: Arch::X86_64,
        },
        images: vec!["debian-12".into(), "ubuntu-24.04".into()],
        price_sats_per_hour: price,
        min_lease_secs: 3600,
        max_lease_secs: 30 * 24 * 3600,
        location: Location {
            country: "DE".into(),
            region: "Bavaria".into(),
        },
        capacity: 4,
        bond: gpu.then_some(BondRef {
            txid: [7; 32],
            vout: 1,
        }),
        chain: Chain::SIGNET,
        extra_ports: if gpu { vec![8888] } else { vec![80, 443] },
    }
}

fn withdrawal(provider: &Keypair, pool: PoolId, offer_id: u64, sequence: u64) -> OfferWithdrawal {
    OfferWithdrawal {
        provider: provider.node_id(),
        pool,
        offer_id,
        sequence,
        created_at: NOW - 5,
        expires_at: NOW + 3600,
    }
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).expect("create corpus directory");
    fs::write(d.join(name), bytes).expect("write seed");
}

/// One book-script operation that inserts or withdraws `msg` (opcode 0, u16 length, bytes).
fn op_msg(script: &mut Vec<u8>, msg: &[u8]) {
    script.push(0);
    script.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    script.extend_from_slice(msg);
}

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let dir = corpus.as_path();
    let (p1, p2, buyer, founder) = (key(1), key(2), key(3), key(4));
    let pool = charter(&founder, PublishPolicy::Anyone).pool_id();

    let offers = [
        Signed::sign(offer(&p1, pool, 1, 1, 100, false), &p1),
        Signed::sign(offer(&p1, pool, 1, 2, 90, false), &p1),
        Signed::sign(offer(&p2, pool, 7, 1, 100, true), &p2),
        Signed::sign(offer(&p2, PoolId([9; 32]), 8, 0, 5000, false), &p2),
    ];
    let withdrawals = [
        Signed::sign(withdrawal(&p1, pool, 1, 1), &p1),
        Signed::sign(withdrawal(&p2, pool, 7, 5), &p2),
    ];
    let charters = [
        Signed::sign(charter(&founder, PublishPolicy::Anyone), &founder),
        Signed::sign(
            charter(
                &founder,
                PublishPolicy::AllowList(vec![p1.node_id(), p2.node_id()]),
            ),
            &founder,
        ),
    ];
    let bids = [
        Signed::sign(
            Bid {
                buyer: buyer.node_id(),
                pool,
                bid_id: 1,
                sequence: 1,
                created_at: NOW,
                expires_at: NOW + 600,
                demand: Demand {
                    min_vcpus: 2,
                    image: Some("debian-12".into()),
                    max_price_sats_per_hour: Some(200),
                    ports: vec![443],
                    ..Demand::default()
                },
                hours: 24,
                count: 1,
            },
            &buyer,
        ),
        Signed::sign(
            Bid {
                buyer: buyer.node_id(),
                pool,
                bid_id: 2,
                sequence: 0,
                created_at: NOW,
                expires_at: NOW + 600,
                demand: Demand {
                    gpu: GpuWanted::Some {
                        model: Some("A100".into()),
                        min_count: 1,
                    },
                    arch: Some(Arch::Aarch64),
                    country: Some("DE".into()),
                    region: Some("Bavaria".into()),
                    max_price_sats_per_hour: Some(10_000),
                    ..Demand::default()
                },
                hours: 1,
                count: 3,
            },
            &buyer,
        ),
    ];
    let order = Signed::sign(
        Order {
            buyer: buyer.node_id(),
            provider: p1.node_id(),
            pool,
            offer_id: 1,
            offer_sequence: 2,
            image: "debian-12".into(),
            hours: 24,
            ssh_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFMq1LDz2jg9w7mOpwiKfpc7OclyFbnfAmDxnjAXHk82 buyer@example".into(),
            refund_address: Some("bc1qexampleexampleexampleexampleexample0".into()),
            created_at: NOW,
            nonce: 42,
            chain: Chain::SIGNET,
            extra_ports: vec![80],
        },
        &buyer,
    );
    let invoice = Signed::sign(
        Invoice {
            provider: p1.node_id(),
            buyer: buyer.node_id(),
            lease_id: order.id(),
            address: "bc1qexampleexampleexampleexampleexample1".into(),
            amount_sats: 2160,
            price_sats_per_hour: 90,
            hours: 24,
            min_confirmations: 1,
            created_at: NOW,
            expires_at: NOW + 900,
        },
        &p1,
    );
    let receipts = [
        ProviderReceipt::sign(
            Receipt {
                lease_id: order.id(),
                pool,
                provider: p1.node_id(),
                buyer: buyer.node_id(),
                started_at: NOW - 7200,
                ended_at: NOW - 60,
                paid_sats: 2160,
                refunded_sats: 180,
            },
            &p1,
        )
        .countersign(&buyer)
        .expect("the buyer countersigns"),
        ProviderReceipt::sign(
            Receipt {
                lease_id: MessageId([3; 32]),
                pool,
                provider: p2.node_id(),
                buyer: buyer.node_id(),
                started_at: NOW - 30 * 24 * 3600,
                ended_at: NOW - 29 * 24 * 3600,
                paid_sats: 1_000_000,
                refunded_sats: 0,
            },
            &p2,
        )
        .countersign(&buyer)
        .expect("the buyer countersigns"),
    ];
    // One status per state (the running ones with access details), and every other kind of notice.
    let mut notices: Vec<_> = lease::ALL_STATES
        .iter()
        .enumerate()
        .map(|(i, &state)| {
            let running = state.may_have_machine();
            Signed::sign(
                LeaseNotice {
                    from: p1.node_id(),
                    lease_id: order.id(),
                    seq: i as u64 + 1,
                    at: NOW,
                    body: NoticeBody::Status(LeaseStatus {
                        state,
                        paid_sats: if running { 2160 } else { 0 },
                        refunded_sats: 0,
                        started_at: running.then_some(NOW - 60),
                        runs_until: running.then_some(NOW + 24 * 3600),
                        access: running.then(|| Access {
                            server_id: "4711".into(),
                            addresses: vec!["203.0.113.7".into(), "2001:db8::7".into()],
                            user: "root".into(),
                            image: "debian-12".into(),
                            ssh_port: 22,
                            open_ports: vec![22, 8080],
                        }),
                        message: format!("now {state:?}"),
                    }),
                },
                &p1,
            )
        })
        .collect();
    let buyer_notice = |seq, body| {
        Signed::sign(
            LeaseNotice {
                from: buyer.node_id(),
                lease_id: order.id(),
                seq,
                at: NOW,
                body,
            },
            &buyer,
        )
    };
    notices.push(buyer_notice(1, NoticeBody::Cancel));
    notices.push(buyer_notice(2, NoticeBody::StatusRequest));
    notices.push(buyer_notice(
        3,
        NoticeBody::Countersigned(receipts[0].clone()),
    ));
    notices.push(Signed::sign(
        LeaseNotice {
            from: p1.node_id(),
            lease_id: order.id(),
            seq: 100,
            at: NOW,
            body: NoticeBody::Receipt(ProviderReceipt::from_parts(
                receipts[0].receipt().clone(),
                *receipts[0].provider_sig(),
            )),
        },
        &p1,
    ));
    let bond_proofs = [
        Signed::sign(
            BondProof {
                node: p1.node_id(),
                txid: [7; 32],
                vout: 1,
                amount_sats: 1_000_000,
                locktime: 900_000,
                bond_pubkey: [2; 33],
                binding_sig: [5; 64],
                created_at: NOW - 100,
                height: 850_000,
            },
            &p1,
        ),
        Signed::sign(
            BondProof {
                node: buyer.node_id(),
                txid: [8; 32],
                vout: 0,
                amount_sats: 50_000,
                locktime: 1,
                bond_pubkey: [3; 33],
                binding_sig: [6; 64],
                created_at: NOW,
                height: 0,
            },
            &buyer,
        ),
    ];
    let load_reports = [
        Signed::sign(
            LoadReport {
                provider: p1.node_id(),
                pool,
                running_leases: 3,
                running_sats_per_hour: 270,
                at: NOW - 30,
            },
            &p1,
        ),
        Signed::sign(
            LoadReport {
                provider: p2.node_id(),
                pool,
                running_leases: 0,
                running_sats_per_hour: 0,
                at: NOW,
            },
            &p2,
        ),
    ];

    let mut all: Vec<Vec<u8>> = Vec::new();
    for (i, m) in offers.iter().enumerate() {
        write(dir, "offer", &format!("seed-{i}"), &m.to_bytes());
        all.push(m.to_bytes());
    }
    for (i, m) in withdrawals.iter().enumerate() {
        write(dir, "offer_withdrawal", &format!("seed-{i}"), &m.to_bytes());
        all.push(m.to_bytes());
    }
    for (i, m) in charters.iter().enumerate() {
        write(dir, "pool_charter", &format!("seed-{i}"), &m.to_bytes());
        all.push(m.to_bytes());
    }
    for (i, m) in bids.iter().enumerate() {
        write(dir, "bid", &format!("seed-{i}"), &m.to_bytes());
        all.push(m.to_bytes());
    }
    write(dir, "order", "seed-0", &order.to_bytes());
    all.push(order.to_bytes());
    write(dir, "invoice", "seed-0", &invoice.to_bytes());
    all.push(invoice.to_bytes());
    for (i, m) in notices.iter().enumerate() {
        write(dir, "lease_notice", &format!("seed-{i}"), &m.to_bytes());
        all.push(m.to_bytes());
    }
    for (i, m) in receipts.iter().enumerate() {
        write(dir, "receipt", &format!("seed-{i}"), &m.to_bytes());
        all.push(m.to_bytes());
    }
    for (i, m) in bond_proofs.iter().enumerate() {
        write(dir, "bond_proof", &format!("seed-{i}"), &m.to_bytes());
        all.push(m.to_bytes());
    }
    for (i, m) in load_reports.iter().enumerate() {
        write(dir, "load_report", &format!("seed-{i}"), &m.to_bytes());
        all.push(m.to_bytes());
    }
    for (i, bytes) in all.iter().enumerate() {
        write(dir, "any_message", &format!("seed-{i}"), bytes);
    }

    // Book scripts: inserts, a supersession, withdrawals, queries, and the clock running out.
    let mut script = Vec::new();
    for o in &offers {
        op_msg(&mut script, &o.to_bytes());
    }
    script.extend_from_slice(&[3, 0b011]);
    script.extend_from_slice(&150u64.to_be_bytes());
    script.push(0);
    op_msg(&mut script, &withdrawals[0].to_bytes());
    op_msg(&mut script, &offers[0].to_bytes());
    op_msg(&mut script, &withdrawals[1].to_bytes());
    script.extend_from_slice(&[3, 0b100, 2, 10]);
    script.push(2);
    script.extend_from_slice(&3601u32.to_be_bytes());
    script.extend_from_slice(&[3, 0, 0]);
    write(dir, "book", "seed-0", &script);

    let mut reversed = Vec::new();
    for o in offers.iter().rev() {
        op_msg(&mut reversed, &o.to_bytes());
    }
    for w in withdrawals.iter().rev() {
        op_msg(&mut reversed, &w.to_bytes());
    }
    reversed.extend_from_slice(&[3, 0, 0]);
    write(dir, "book", "seed-1", &reversed);

    eprintln!("wrote seeds under {}", dir.display());
}
