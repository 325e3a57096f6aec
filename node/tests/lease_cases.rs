//! Named regressions of the lease machine, scripted (no randomness) in the simulator's world. Each fails if
//! the bug it is named after comes back.

mod sim;

use std::collections::HashMap;

use sim::{sim_terms, CloudFault, LeaseSpec, MState, Side, World};
use xov_node::lease::driver::busy;
use xov_node::lease::machine::{self, ActionKind, Alert, Input, Terms};
use xov_node::lease::record::{Budget, LeaseRecord, NotDelivering};
use xov_protocol::{
    Arch, Chain, InstanceType, LeaseNotice, LeaseState, LeaseStatus, Location, NoticeBody, Offer,
    Order, OrderRefusal, PoolId, ProviderReceipt, Receipt,
};

/// The cases are scripted with one block of depth; refund depth has a case of its own.
fn world() -> World {
    World::new(
        1,
        Terms {
            refund_confirmations: 1,
            ..sim_terms()
        },
    )
}

fn lease(w: &mut World, price: u64, refund: bool) -> String {
    w.open_lease(LeaseSpec {
        price,
        min_lease_secs: 60,
        refund_address: refund.then(|| "bcrt1qrefund".to_string()),
        invoice_ttl: 900,
        offer_id: 1,
        budget: None,
    })
}

/// Pays `amount`, confirms it, and runs until the lease's machine runs.
fn run_with(w: &mut World, id: &str, amount: u64) {
    w.pay(id, amount, false, true);
    w.mine();
    w.step(0);
    let id2 = id.to_string();
    w.until(1, 50, "machine running", move |w| {
        w.prov(&id2).state == LeaseState::Running
    });
}

fn no_violations(w: &World) {
    assert!(
        w.violations.is_empty(),
        "{}\n{}",
        w.violations.join("\n"),
        w.dump()
    );
}

fn state_is(id: &str, s: LeaseState) -> impl Fn(&World) -> bool {
    let id = id.to_string();
    move |w: &World| w.prov(&id).state == s
}

#[test]
fn refund_loop_cancelled_lease_never_restarts_and_refunds_once() {
    let mut w = world();
    let id = lease(&mut w, 3600, true);
    run_with(&mut w, &id, 3600);
    for _ in 0..10 {
        w.step(30);
    }
    w.input(Side::Buyer, &id, Input::Cancel);
    w.until(10, 100, "halted and refunded", |w| {
        let p = w.prov(&id);
        p.state == LeaseState::Halted
            && p.refunds.iter().all(|r| r.broadcast)
            && !p.refunds.is_empty()
    });
    let p = w.prov(&id).clone();
    assert!(p.cancelled);
    assert_eq!(p.refunds.len(), 1, "{}", w.dump());
    assert_eq!(p.refunds[0].value_sat, 3600 - machine::charge_sat(&p));
    let run = w.run_secs(&id);
    // A tiny top-up after the cancellation: never restarts the machine, and is itself refunded.
    w.pay(&id, 700, false, false);
    w.mine();
    for _ in 0..5 {
        w.step(5);
        assert_ne!(
            w.machines.get(&id).map(|m| m.state),
            Some(MState::Running),
            "{}",
            w.dump()
        );
    }
    assert_eq!(
        w.run_secs(&id),
        run,
        "the cancelled lease's machine ran again"
    );
    // A second cancel refunds nothing more.
    w.input(Side::Buyer, &id, Input::Cancel);
    w.input(Side::Provider, &id, Input::Cancel);
    w.settle(200);
    let p = w.prov(&id).clone();
    assert_eq!(w.run_secs(&id), run);
    let top_up_back =
        p.refunds.iter().skip(1).map(|r| r.value_sat).sum::<u64>() + p.written_off_sat;
    assert_eq!(
        top_up_back,
        700,
        "the top-up is refunded or written off: {}",
        w.dump()
    );
    assert_eq!(
        machine::refund_values(&p) + p.written_off_sat + machine::earned_sat(&p, &w.terms),
        4300
    );
    assert!(p.refunds.len() <= 2);
    for ((_, _), txids) in &w.broadcasts {
        assert_eq!(txids.len(), 1);
    }
    assert_eq!(p.state, LeaseState::Closed);
    no_violations(&w);
}

#[test]
fn large_unconfirmed_top_up_does_not_count_with_zero_conf() {
    let mut terms = sim_terms();
    terms.zero_conf_max_sat = 2000;
    let mut w = World::new(2, terms);
    let id = lease(&mut w, 3600, true);
    run_with(&mut w, &id, 600);
    let until = w.prov(&id).runs_until.expect("metered");
    w.pay(&id, 100_000, false, true);
    w.step(1);
    let p = w.prov(&id).clone();
    assert_eq!(
        p.zero_conf_sat, 0,
        "a 100000-sat payment is over the zero-conf limit"
    );
    assert_eq!(
        p.runs_until,
        Some(until),
        "an unconfirmed large top-up extended the lease"
    );
    w.mine();
    w.step(1);
    assert_eq!(
        w.prov(&id).runs_until,
        Some(until + 100_000),
        "{}",
        w.dump()
    );
    // A replaced payment never counts and is never refunded.
    let t = w.pay(&id, 1500, true, false);
    w.step(1);
    assert_eq!(
        w.prov(&id).runs_until,
        Some(until + 100_000),
        "an RBF payment counted"
    );
    w.replace(&t);
    w.step(1);
    w.input(Side::Buyer, &id, Input::Cancel);
    w.settle(300);
    let p = w.prov(&id).clone();
    assert_eq!(machine::confirmed_sat(&p, &w.terms), 100_600);
    assert_eq!(
        machine::refund_values(&p) + p.written_off_sat + machine::earned_sat(&p, &w.terms),
        100_600
    );
    no_violations(&w);
}

#[test]
fn failed_launch_after_create_deletes_the_machine_and_transient_errors_retry() {
    let mut w = world();
    let id = lease(&mut w, 3600, true);
    let mut script = vec![CloudFault::Transient];
    script.extend(std::iter::repeat_n(CloudFault::BootTimeout, 500));
    w.cloud_script.insert(id.clone(), script.into());
    w.pay(&id, 3600, false, true);
    w.mine();
    w.step(0);
    assert_eq!(w.prov(&id).state, LeaseState::Provisioning);
    assert!(w.prov(&id).attempts >= 1, "the transient error is retried");
    w.until(5, 40, "a machine building", |w| {
        w.machines.contains_key(&id)
    });
    for _ in 0..20 {
        w.step(5);
        assert!(w.creates[&id] <= 1);
    }
    w.until(10, 100, "failed", state_is(&id, LeaseState::Failed));
    w.cloud_script.remove(&id);
    w.settle(100);
    assert!(
        !w.machines.contains_key(&id),
        "the failed lease's machine was left: {}",
        w.dump()
    );
    assert_eq!(w.creates[&id], 1);
    let p = w.prov(&id).clone();
    assert_eq!(
        machine::refund_values(&p),
        3600,
        "everything is refunded: {}",
        w.dump()
    );
    assert_eq!(machine::charge_sat(&p), 0);
    // Launch fails after the server was created: the server is deleted.
    let id2 = lease(&mut w, 3600, true);
    w.cloud_script
        .insert(id2.clone(), vec![CloudFault::FailAfterCreate].into());
    w.pay(&id2, 3600, false, true);
    w.mine();
    w.step(0);
    assert_eq!(w.prov(&id2).state, LeaseState::Failed);
    w.settle(100);
    assert!(!w.machines.contains_key(&id2));
    assert_eq!(machine::refund_values(w.prov(&id2)), 3600);
    no_violations(&w);
}

#[test]
fn confirmed_top_up_during_stop_is_not_lost() {
    let mut w = world();
    let id = lease(&mut w, 3600, true);
    run_with(&mut w, &id, 120);
    w.stop_delay = 100;
    w.until(5, 100, "a stop in flight", |w| {
        w.ops.iter().any(|o| o.action == machine::Action::Stop)
    });
    w.pay(&id, 3600, false, true);
    w.mine();
    // The start takes a while too (ticks come in between).
    w.start_delay = 20;
    w.until(5, 60, "the stop done", |w| {
        !w.ops.iter().any(|o| o.action == machine::Action::Stop)
    });
    assert!(w
        .prov(&id)
        .history
        .iter()
        .any(|h| h.detail.contains("topped up")));
    w.until(5, 60, "running again", |w| {
        w.machines[&id].state == MState::Running && !w.prov(&id).machine_stopped
    });
    assert_eq!(w.prov(&id).state, LeaseState::Running);
    // The paid time is honoured, and the lease still ends when it is used up.
    w.until(
        30,
        400,
        "halted after the paid time",
        state_is(&id, LeaseState::Halted),
    );
    let p = w.prov(&id).clone();
    assert!(p.charged_secs >= 3600 + 120, "{}", w.dump());
    w.settle(100);
    let p = w.prov(&id).clone();
    assert_eq!(machine::earned_sat(&p, &w.terms), 3720, "{}", w.dump());
    no_violations(&w);
}

fn false_receipt(w: &World, id: &str, paid: u64, refunded: u64, run: u64, seq: u64) -> Input {
    let pr = ProviderReceipt::sign(
        Receipt {
            lease_id: id.parse().unwrap(),
            pool: w.pool,
            provider: w.provider.key.node_id(),
            buyer: w.buyer.key.node_id(),
            started_at: w.now - run,
            ended_at: w.now,
            paid_sats: paid,
            refunded_sats: refunded,
        },
        &w.provider.key,
    );
    Input::Notice(LeaseNotice {
        from: w.provider.key.node_id(),
        lease_id: id.parse().unwrap(),
        seq,
        at: w.now,
        body: NoticeBody::Receipt(pr),
    })
}

/// Found by the simulator (schedules reshuffled when orders gained their chain): a top-up confirmed while the
/// lease was halted, the provider said so, then a reorg took it away in the instant the lease closed. The
/// buyer kept the larger figure of its last status over the receipt's, so the two sides never agreed on what
/// was paid. The receipt, the provider's newest word, replaces the buyer's view as a status does.
#[test]
fn the_receipt_replaces_the_buyers_view_of_what_was_paid() {
    let mut w = world();
    let id = lease(&mut w, 3600, true);
    run_with(&mut w, &id, 3600);
    let (seq, started) = (w.buy(&id).peer_seq, w.buy(&id).started_at);
    let status = Input::Notice(LeaseNotice {
        from: w.provider.key.node_id(),
        lease_id: id.parse().unwrap(),
        seq: seq + 1,
        at: w.now,
        body: NoticeBody::Status(LeaseStatus {
            state: LeaseState::Halted,
            paid_sats: 3600 + 92_552,
            refunded_sats: 0,
            started_at: started,
            runs_until: None,
            access: None,
            message: "92552 sat confirmed".into(),
        }),
    });
    assert!(w.input(Side::Buyer, &id, status));
    assert_eq!(w.buy(&id).paid_sat, 3600 + 92_552);
    let run = w.now - started.unwrap();
    assert!(w.input(
        Side::Buyer,
        &id,
        false_receipt(&w, &id, 3600, 0, run, seq + 2)
    ));
    let b = w.buy(&id);
    assert_eq!(b.state, LeaseState::Closed);
    assert_eq!((b.paid_sat, b.refunded_sat), (3600, 0));
}

#[test]
fn buyer_times_out_a_lease_that_never_starts_and_refuses_a_false_receipt() {
    let mut terms = sim_terms();
    terms.launch_deadline_secs = 5000;
    let mut w = World::new(5, terms);
    let id = lease(&mut w, 3600, true);
    w.cloud_script.insert(
        id.clone(),
        std::iter::repeat_n(CloudFault::Transient, 1000).collect(),
    );
    w.pay(&id, 3600, false, true);
    w.mine();
    let paid_at = w.now;
    w.until(30, 60, "stalled", |w| w.buy(&id).stalled);
    assert!(w.now >= paid_at + w.terms.start_timeout_secs);
    assert!(w.alerts.iter().any(|(s, a)| *s == Side::Buyer
        && matches!(a, Alert::NotStarted { lease_id, .. } if *lease_id == id)));
    // A receipt saying less was paid than this node sent.
    let n = false_receipt(&w, &id, 1000, 0, 0, 1000);
    w.input(Side::Buyer, &id, n);
    w.step(0);
    assert!(w.buy(&id).countersigned_hex.is_none());
    assert!(w.alerts.iter().any(|(s, a)| *s == Side::Buyer
        && matches!(a, Alert::ReceiptRefused { lease_id, .. } if *lease_id == id)));
    // A receipt keeping more than the run time at the price.
    let id2 = lease(&mut w, 3600, true);
    w.pay(&id2, 3600, false, true);
    let n = false_receipt(&w, &id2, 3600, 0, 10, 1000);
    w.input(Side::Buyer, &id2, n);
    assert!(w.buy(&id2).countersigned_hex.is_none());
    assert!(w.alerts.iter().any(|(s, a)| *s == Side::Buyer
        && matches!(a, Alert::ReceiptRefused { lease_id, .. } if *lease_id == id2)));
    assert!(!w.published.iter().any(|(s, _)| *s == Side::Buyer));
}

fn offer(w: &World, created_at: u64) -> Offer {
    Offer {
        provider: w.provider.key.node_id(),
        pool: w.pool,
        offer_id: 1,
        sequence: 1,
        created_at,
        expires_at: created_at + 86_400,
        instance: InstanceType {
            vcpus: 2,
            ram_mib: 2048,
            disk_gib: 20,
            gpu: None,
            arch: Arch::X86_64,
        },
        images: vec!["debian-12".into()],
        price_sats_per_hour: 3600,
        min_lease_secs: 3600,
        max_lease_secs: 24 * 3600,
        location: Location {
            country: "DE".into(),
            region: "fsn".into(),
        },
        capacity: 4,
        bond: None,
        chain: Chain::REGTEST,
        extra_ports: vec![],
    }
}

#[test]
fn dust_or_replaced_payment_does_not_hold_capacity_forever() {
    let mut w = world();
    // Seen, then replaced: back to Invoiced, and it expires with the invoice.
    let a = lease(&mut w, 3600, true);
    let t = w.pay(&a, 3600, true, true);
    w.step(1);
    assert_eq!(w.prov(&a).state, LeaseState::PaymentSeen);
    w.replace(&t);
    w.step(1);
    assert_eq!(w.prov(&a).state, LeaseState::Invoiced);
    // Seen and never confirmed: expires at invoice_expires_at + payment_seen_ttl.
    let b = lease(&mut w, 3600, true);
    w.pay(&b, 3600, false, true);
    w.step(1);
    assert_eq!(w.prov(&b).state, LeaseState::PaymentSeen);
    // Dust: never seen as payment, expires with the invoice; once confirmed, written off.
    let c = lease(&mut w, 36_000, true);
    w.pay(&c, 300, false, true);
    w.step(1);
    assert_eq!(w.prov(&c).state, LeaseState::Invoiced);
    let expires = w.prov(&a).invoice_expires_at;
    w.until(30, 40, "expired", state_is(&a, LeaseState::Expired));
    assert!(w.now >= expires && w.now < expires + 31);
    assert_eq!(w.prov(&c).state, LeaseState::Expired);
    assert_eq!(w.prov(&b).state, LeaseState::PaymentSeen);
    let b_exp = w.prov(&b).invoice_expires_at + w.terms.payment_seen_ttl_secs;
    w.until(
        30,
        40,
        "seen payment lapsed",
        state_is(&b, LeaseState::Expired),
    );
    assert!(w.now >= b_exp && w.now < b_exp + 31);
    assert!(machine::refund_values(w.prov(&a)) == 0);
    w.settle(100);
    // The late confirmation of b's payment is refunded; the dust written off.
    assert_eq!(machine::refund_values(w.prov(&b)), 3600);
    assert_eq!(w.prov(&c).written_off_sat, 300);
    no_violations(&w);

    // Capacity: a lease running since before the offer was made is already subtracted from it.
    let o = offer(&w, T_OFFER);
    let mk = |state: LeaseState, started: Option<u64>, i: u8| LeaseRecord {
        id: format!("{i:064x}"),
        offer_id: 1,
        state,
        started_at: started,
        ..LeaseRecord::default()
    };
    let mut m: HashMap<String, LeaseRecord> = HashMap::new();
    for (i, r) in [
        mk(LeaseState::Running, Some(T_OFFER - 10), 1),
        mk(LeaseState::Running, Some(T_OFFER + 10), 2),
        mk(LeaseState::PaymentSeen, None, 3),
        mk(LeaseState::Expired, None, 4),
        mk(LeaseState::Closed, Some(T_OFFER + 10), 5),
    ]
    .into_iter()
    .enumerate()
    {
        m.insert(format!("{i}"), r);
    }
    assert_eq!(busy(&m, &o), 2);
}

const T_OFFER: u64 = sim::T0 + 1000;

#[test]
fn late_payment_is_refunded_exactly_once_even_across_a_crash() {
    let mut w = world();
    let id = lease(&mut w, 3600, true);
    w.until(60, 30, "expired", state_is(&id, LeaseState::Expired));
    let mut crashed = false;
    w.crash_hook = Some(Box::new(move |input, rec| {
        let hit = !crashed
            && matches!(input, Input::RefundBuilt { result: Ok(_), .. })
            && rec.refunds.iter().any(|r| r.tx.is_some());
        crashed |= hit;
        hit
    }));
    w.pay(&id, 5000, false, false);
    w.mine();
    w.step(0);
    w.step(1);
    assert_eq!(
        w.provider.crashes, 1,
        "the crash after the refund was built happened"
    );
    w.until(1, 30, "refund sent", |w| {
        w.prov(&id).refunds.iter().all(|r| r.broadcast)
    });
    w.crash(Side::Provider);
    w.settle(50);
    let p = w.prov(&id).clone();
    assert_eq!(p.refunds.len(), 1);
    assert_eq!(p.refunds[0].value_sat, 5000);
    assert_eq!(
        w.build_attempts[&(id.clone(), 1)],
        1,
        "the refund was built twice"
    );
    assert_eq!(w.broadcasts[&(id.clone(), 1)].len(), 1);
    assert_eq!(
        w.buy(&id).refunded_sat,
        5000 - sim::REFUND_FEE,
        "the buyer is told what the refund delivers"
    );
    // Without a refund address: owed, and the buyer is not told it was refunded.
    let id2 = lease(&mut w, 3600, false);
    w.until(60, 30, "expired", state_is(&id2, LeaseState::Expired));
    w.pay(&id2, 5000, false, false);
    w.mine();
    w.settle(50);
    let p = w.prov(&id2).clone();
    assert_eq!(p.owed_sat, 5000);
    assert_eq!(p.refunded_sat, 0);
    assert!(p.refunds.is_empty());
    assert_eq!(w.buy(&id2).refunded_sat, 0);
    assert_eq!(w.buy(&id2).paid_sat, 5000);
    assert!(w.alerts.iter().any(|(s, a)| *s == Side::Provider
        && matches!(a, Alert::RefundOwed { lease_id, sat: 5000 } if *lease_id == id2)));
    no_violations(&w);
}

#[test]
fn one_slow_lease_does_not_hold_up_another() {
    let mut w = world();
    let a = lease(&mut w, 3600, true);
    let b = lease(&mut w, 3600, true);
    w.stuck.insert(a.clone(), 100_000);
    w.pay(&a, 120, false, true);
    w.pay(&b, 120, false, true);
    w.mine();
    w.until(1, 20, "both running", |w| {
        w.prov(&a).state == LeaseState::Running && w.prov(&b).state == LeaseState::Running
    });
    let started = w.now;
    w.until(5, 200, "b closed", state_is(&b, LeaseState::Closed));
    assert!(
        w.now <= started + 120 + 30 + 60 + 60,
        "b ended late: {}",
        w.now - started
    );
    assert!(!w.machines.contains_key(&b));
    assert_eq!(w.prov(&a).state, LeaseState::Grace);
    assert_eq!(
        w.machines[&a].state,
        MState::Running,
        "a's stop keeps failing"
    );
    assert!(w.prov(&a).attempts > 2);
    w.stuck.clear();
    w.settle(100);
    no_violations(&w);
}

#[test]
fn an_order_for_another_pool_or_with_a_bad_key_is_refused_at_admission() {
    let w = world();
    let o = offer(&w, sim::T0);
    let good = Order {
        buyer: w.buyer.key.node_id(),
        provider: w.provider.key.node_id(),
        pool: w.pool,
        offer_id: 1,
        offer_sequence: 1,
        image: "debian-12".into(),
        hours: 2,
        ssh_public_key: sim::SSH_KEY.into(),
        refund_address: None,
        created_at: sim::T0,
        nonce: 1,
        chain: Chain::REGTEST,
        extra_ports: vec![],
    };
    assert_eq!(machine::check_order(&good, &o), Ok(()));
    let r = machine::check_order(
        &Order {
            pool: PoolId([7; 32]),
            ..good.clone()
        },
        &o,
    );
    assert!(matches!(r, Err(OrderRefusal::WrongPool { .. })), "{r:?}");
    let r = machine::check_order(
        &Order {
            ssh_public_key: "localhost".into(),
            ..good.clone()
        },
        &o,
    );
    assert!(matches!(r, Err(OrderRefusal::BadSshKey { .. })), "{r:?}");
    let r = machine::check_order(
        &Order {
            hours: 25,
            ..good.clone()
        },
        &o,
    );
    assert!(
        matches!(r, Err(OrderRefusal::HoursOutOfRange { .. })),
        "{r:?}"
    );
    let r = machine::check_order(
        &Order {
            hours: 0,
            ..good.clone()
        },
        &o,
    );
    assert!(
        matches!(r, Err(OrderRefusal::HoursOutOfRange { .. })),
        "{r:?}"
    );
    let r = machine::check_order(
        &Order {
            offer_sequence: 2,
            ..good.clone()
        },
        &o,
    );
    assert!(matches!(r, Err(OrderRefusal::OfferChanged { .. })), "{r:?}");
    let r = machine::check_order(
        &Order {
            image: "windows".into(),
            ..good.clone()
        },
        &o,
    );
    assert!(matches!(r, Err(OrderRefusal::NoSuchImage { .. })), "{r:?}");
    // Ports: those the offer allows are taken, any other is refused naming what is allowed.
    let mut web = o.clone();
    web.extra_ports = vec![80, 443];
    let asks = |ports: &[u16]| Order {
        extra_ports: ports.to_vec(),
        ..good.clone()
    };
    assert_eq!(machine::check_order(&asks(&[443]), &web), Ok(()));
    let r = machine::check_order(&asks(&[80, 8080]), &web);
    assert_eq!(
        r,
        Err(OrderRefusal::PortNotOffered {
            offer_id: 1,
            port: 8080,
            allowed: vec![80, 443]
        })
    );
    assert_eq!(
        r.unwrap_err().to_string(),
        "offer 1 does not open port 8080 to its machines; it allows 80, 443 besides SSH"
    );
    let r = machine::check_order(&asks(&[80]), &o);
    assert!(
        matches!(&r, Err(OrderRefusal::PortNotOffered { allowed, .. }) if allowed.is_empty()),
        "an offer of SSH only: {r:?}"
    );
    assert!(r.unwrap_err().to_string().ends_with("it allows SSH only"));
}

/// An order for another bitcoin network is refused before the provider looks at its offers or invoices:
/// nothing can be paid across networks. Sender and addressee are checked first.
#[test]
fn an_order_for_another_chain_is_refused_before_anything_is_invoiced() {
    let w = world();
    let (buyer, provider) = (w.buyer.key.node_id(), w.provider.key.node_id());
    let order = Order {
        buyer,
        provider,
        pool: w.pool,
        offer_id: 1,
        offer_sequence: 1,
        image: "debian-12".into(),
        hours: 2,
        ssh_public_key: sim::SSH_KEY.into(),
        refund_address: None,
        created_at: sim::T0,
        nonce: 1,
        chain: Chain::SIGNET,
        extra_ports: vec![],
    };
    let r = machine::check_order_parties(&order, Some(buyer), &provider, Chain::REGTEST);
    assert_eq!(
        r,
        Err(OrderRefusal::WrongChain {
            provider: Chain::REGTEST,
            order: Chain::SIGNET
        })
    );
    let refusal = r.unwrap_err();
    assert!(refusal.buyers_fault());
    assert!(
        refusal.to_string().contains("nothing was invoiced"),
        "{refusal}"
    );
    // The same order on the provider's chain passes; a stranger's or a misaddressed one does not.
    let same = Order {
        chain: Chain::REGTEST,
        ..order.clone()
    };
    assert_eq!(
        machine::check_order_parties(&same, Some(buyer), &provider, Chain::REGTEST),
        Ok(())
    );
    assert_eq!(
        machine::check_order_parties(&order, Some(provider), &provider, Chain::REGTEST),
        Err(OrderRefusal::NotFromBuyer)
    );
    assert_eq!(
        machine::check_order_parties(&order, Some(buyer), &buyer, Chain::REGTEST),
        Err(OrderRefusal::WrongProvider)
    );
}

#[test]
fn a_reorg_after_launch_halts_when_the_payment_no_longer_covers_the_run() {
    let mut w = world();
    let id = lease(&mut w, 3600, true);
    run_with(&mut w, &id, 3600);
    w.step(60);
    w.reorg(true);
    w.until(5, 60, "halted", state_is(&id, LeaseState::Halted));
    assert_ne!(w.machines[&id].state, MState::Running);
    w.settle(100);
    let p = w.prov(&id).clone();
    assert_eq!(p.state, LeaseState::Closed);
    assert!(
        p.refunds.is_empty(),
        "refunded money that is gone: {}",
        w.dump()
    );
    assert_eq!(p.written_off_sat + p.owed_sat, 0);
    assert_eq!(machine::confirmed_sat(&p, &w.terms), 0);
    assert!(w.broadcasts.is_empty());
    no_violations(&w);
}

#[test]
fn a_payment_is_refunded_only_once_it_is_deep_enough() {
    // A refund paid out of a payment that a reorg then removes is money the provider never received.
    let mut w = World::new(
        1,
        Terms {
            refund_confirmations: 3,
            ..sim_terms()
        },
    );
    let id = lease(&mut w, 3600, true);
    run_with(&mut w, &id, 3600);
    w.step(30);
    w.input(Side::Buyer, &id, Input::Cancel);
    w.until(10, 50, "halted", state_is(&id, LeaseState::Halted));
    assert!(
        w.prov(&id).refunds.is_empty(),
        "one confirmation is not deep enough to refund: {}",
        w.dump()
    );
    // The paying block is reorged out and the payment double-spent: nothing was refunded from it.
    w.reorg(true);
    w.settle(100);
    let p = w.prov(&id).clone();
    assert!(p.refunds.is_empty(), "{}", w.dump());
    assert_eq!(machine::refund_values(&p), 0);
    no_violations(&w);

    // The same with a payment that gets deep: the unused part is refunded once it is three blocks deep.
    let mut w = World::new(
        1,
        Terms {
            refund_confirmations: 3,
            ..sim_terms()
        },
    );
    let id = lease(&mut w, 3600, true);
    run_with(&mut w, &id, 3600);
    w.step(30);
    w.input(Side::Buyer, &id, Input::Cancel);
    w.until(10, 50, "halted", state_is(&id, LeaseState::Halted));
    assert!(w.prov(&id).refunds.is_empty());
    w.mine();
    w.mine();
    w.step(1);
    w.until(1, 50, "refunded", |w| {
        w.prov(&id).refunds.iter().any(|r| r.broadcast)
    });
    let p = w.prov(&id).clone();
    assert_eq!(p.refunds.len(), 1);
    assert_eq!(p.refunds[0].value_sat, 3600 - machine::charge_sat(&p));
    no_violations(&w);
}

#[test]
fn a_machine_gone_behind_the_nodes_back_ends_the_lease_and_refunds_the_rest() {
    let mut w = world();
    let id = lease(&mut w, 3600, true);
    run_with(&mut w, &id, 3600);
    w.step(60);
    // Someone deletes the server in the cloud; the provider restarts and asks for it again.
    w.machines.remove(&id);
    w.crash(Side::Provider);
    w.settle(200);
    let p = w.prov(&id).clone();
    assert_eq!(p.state, LeaseState::Closed, "{}", w.dump());
    assert!(!p.machine_may_exist);
    assert_eq!(
        machine::refund_values(&p) + p.written_off_sat + machine::earned_sat(&p, &w.terms),
        3600,
        "the unused part goes back: {}",
        w.dump()
    );
    assert!(machine::refund_values(&p) > 0, "{}", w.dump());
    no_violations(&w);
}

/// A cloud may give a machine more addresses than a notice carries, or a name longer than one: the provider
/// tells the buyer what fits (the first usable ones), never a notice the buyer's node drops unread. Before,
/// the running notice failed to decode on the buyer's side and was acknowledged as dropped: the buyer waited
/// in `provisioning` for a machine that ran.
#[test]
fn a_machine_with_more_addresses_than_a_notice_carries_still_reaches_the_buyer() {
    let mut w = world();
    let long = format!("{}.example.net", "h".repeat(70));
    let mut given = vec![long, "with space".to_string(), String::new()];
    given.extend((1..=10).map(|i| format!("10.0.0.{i}")));
    w.machine_addresses = given;
    let id = lease(&mut w, 3600, true);
    run_with(&mut w, &id, 3600);
    let id2 = id.clone();
    w.until(1, 50, "the buyer sees it running", move |w| {
        w.buy(&id2).state == LeaseState::Running
    });
    let shown = w
        .buy(&id)
        .instance
        .clone()
        .expect("the buyer has the access details");
    let want: Vec<String> = (1..=8).map(|i| format!("10.0.0.{i}")).collect();
    assert_eq!(shown.addresses, want, "{}", w.dump());
    no_violations(&w);
}

// ------------------------------------------------------------------------------- paying in slices

/// 3600 sats/h, slices of 600 s (600 sat), the offer's shortest lease 60 s; `slices` slices' worth.
fn budget_lease(w: &mut World, slices: u64) -> String {
    w.open_lease(LeaseSpec {
        price: 3600,
        min_lease_secs: 60,
        refund_address: Some("bcrt1qrefund".to_string()),
        invoice_ttl: 900,
        offer_id: 1,
        budget: Some(Budget {
            total_sat: 600 * slices,
            slice_sat: 600,
            slice_secs: 600,
        }),
    })
}

/// Steps `dt` at a time until `f` holds, mining a block whenever a payment waits in the mempool (as the
/// e2e tests do), for at most `max` steps.
fn until_mining(w: &mut World, dt: u64, max: u32, what: &str, f: impl Fn(&World) -> bool) {
    for _ in 0..max {
        if f(w) {
            return;
        }
        if w.pays.iter().any(|p| p.height.is_none() && !p.gone) {
            w.mine();
        }
        w.step(dt);
    }
    assert!(f(w), "never reached: {what}\n{}", w.dump());
}

fn slices_paid(w: &World, id: &str) -> usize {
    w.buy(id).slices.iter().filter(|s| s.broadcast).count()
}

fn withheld_alerts(w: &World, id: &str) -> Vec<NotDelivering> {
    w.alerts
        .iter()
        .filter_map(|(s, a)| match a {
            Alert::SliceWithheld { lease_id, reason } if *s == Side::Buyer && lease_id == id => {
                Some(reason.clone())
            }
            _ => None,
        })
        .collect()
}

/// The budget's whole path: the first slice goes out with the order; each next one when the paid time is
/// `warn_before + slice_lead` from its end, after a fresh status (asked for, as the last one is stale by
/// then) shows the machine running and every slice counted, and before the provider would warn; three
/// slices and no more, the budget exactly; then the lease drains and closes.
#[test]
fn a_budget_is_paid_in_slices_before_the_warning_and_never_beyond() {
    let mut w = world();
    let id = budget_lease(&mut w, 3);
    w.step(0);
    assert_eq!(slices_paid(&w, &id), 1, "the first slice goes out at once");
    assert_eq!(w.payments_of(&id).len(), 1);
    until_mining(&mut w, 1, 50, "running", |w| {
        w.buy(&id).state == LeaseState::Running
    });
    for n in 2..=3u32 {
        until_mining(&mut w, 5, 400, "next slice paid", |w| {
            slices_paid(w, &id) == n as usize
        });
        let b = w.buy(&id).clone();
        let s = b.slices.last().unwrap();
        assert_eq!(s.n, n);
        // Decided when due: no earlier than the lead before the end, and the provider had not warned.
        let p = w.prov(&id).clone();
        assert!(
            !p.history
                .iter()
                .any(|h| h.state == LeaseState::Warned && h.at <= s.at),
            "the provider warned before slice {n}: {}",
            w.dump()
        );
        // The last status was stale by then: a fresh one was asked for and came.
        let asked = b.status_asked_at.expect("a status was asked for");
        assert!(b.status_at.unwrap() >= asked, "{}", w.dump());
    }
    until_mining(&mut w, 10, 600, "closed", |w| {
        w.buy(&id).state == LeaseState::Closed
    });
    let b = w.buy(&id).clone();
    assert_eq!(
        b.slices.len(),
        3,
        "no slice beyond the budget: {}",
        w.dump()
    );
    let paid: u64 = w.payments_of(&id).iter().map(|p| p.amount_sat).sum();
    assert_eq!(paid, 1800, "exactly the budget reached the lease's address");
    assert!(b.budget_spent);
    assert!(
        b.history
            .iter()
            .any(|h| h.detail.starts_with("budget spent")),
        "{}",
        w.dump()
    );
    assert!(withheld_alerts(&w, &id).is_empty());
    let e = machine::exposure(&b, w.now, &w.terms).unwrap();
    let bv = e.budget.unwrap();
    assert_eq!((bv.spent_sat, bv.slices_paid, bv.left_sat), (1800, 3, 0));
    assert!(bv.done);
    assert_eq!(e.at_risk_sat, 0, "a closed lease holds nothing of ours");
    w.settle(300);
    no_violations(&w);
}

/// A provider that stops answering (its node gone: no status, requests unanswered) gets no further slice,
/// however long the buyer waits past the moment it was due; the history says so and an alert is raised
/// once. When it answers again before the lease ended, slices resume.
#[test]
fn a_provider_that_goes_silent_gets_no_further_slice() {
    let mut w = world();
    let id = budget_lease(&mut w, 3);
    w.step(0);
    until_mining(&mut w, 1, 50, "running", |w| {
        w.buy(&id).state == LeaseState::Running
    });
    w.silent_from = Some(w.now);
    let due = machine::next_slice_due(w.buy(&id), &w.terms).unwrap();
    let fresh = w.terms.status_fresh_secs;
    until_mining(&mut w, 5, 400, "withheld", |w| {
        w.buy(&id).withheld.is_some()
    });
    assert!(w.now >= due, "nothing withheld before the slice was due");
    // Well past the moment the next slice was due, and the freshness window: still one slice.
    while w.now < due + 4 * fresh {
        w.step(5);
    }
    let b = w.buy(&id).clone();
    assert_eq!(b.slices.len(), 1, "{}", w.dump());
    assert_eq!(w.payments_of(&id).len(), 1);
    assert!(matches!(
        b.withheld,
        Some(NotDelivering::StatusStale { .. })
    ));
    assert!(
        b.history.iter().any(|h| h
            .detail
            .starts_with("next slice withheld: the provider has not answered")),
        "{}",
        w.dump()
    );
    let alerts = withheld_alerts(&w, &id);
    assert_eq!(alerts.len(), 1, "one alert, not one per tick: {alerts:?}");
    let e = machine::exposure(&b, w.now, &w.terms).unwrap();
    assert_eq!(e.budget.unwrap().withheld, b.withheld);
    w.settle(300);
    no_violations(&w);
}

/// A provider whose fresh status does not count a payment this node saw confirmed a while ago gets no
/// further slice (it could be pocketing them).
#[test]
fn a_provider_that_does_not_count_a_payment_gets_no_further_slice() {
    let mut w = world();
    let id = budget_lease(&mut w, 3);
    w.step(0);
    until_mining(&mut w, 1, 50, "running", |w| {
        w.buy(&id).state == LeaseState::Running
    });
    until_mining(&mut w, 5, 400, "second slice confirmed", |w| {
        w.buy(&id).sent.len() == 2 && w.buy(&id).sent.iter().all(|p| p.confirmed_at.is_some())
    });
    // Just before the third slice is due, the provider reports only the first slice paid.
    let b = w.buy(&id).clone();
    let due = machine::next_slice_due(&b, &w.terms).unwrap();
    while w.now + 5 < due {
        w.step(5);
    }
    let b = w.buy(&id).clone();
    let forged = Input::Notice(LeaseNotice {
        from: w.provider.key.node_id(),
        lease_id: id.parse().unwrap(),
        seq: b.peer_seq + 1_000_000,
        at: w.now,
        body: NoticeBody::Status(LeaseStatus {
            state: LeaseState::Running,
            paid_sats: 600,
            refunded_sats: 0,
            started_at: b.started_at,
            runs_until: b.runs_until,
            access: None,
            message: "running".into(),
        }),
    });
    assert!(w.input(Side::Buyer, &id, forged));
    for _ in 0..20 {
        w.step(5);
    }
    let b = w.buy(&id).clone();
    assert_eq!(b.slices.len(), 2, "{}", w.dump());
    assert_eq!(
        withheld_alerts(&w, &id).first(),
        Some(&NotDelivering::PaymentsNotCounted {
            confirmed_sat: 1200,
            counted_sat: 600
        })
    );
    no_violations(&w);
}

/// Each slice is paid exactly once across crashes: a signed transaction lost before it was stored is never
/// sent (a new one is built from the stored intent), and one broadcast whose result was lost is sent again
/// as the same transaction, which the chain already has.
#[test]
fn a_slice_is_paid_exactly_once_across_crashes() {
    let mut w = world();
    let id = budget_lease(&mut w, 2);
    w.input(Side::Buyer, &id, Input::Tick);
    assert_eq!(w.buy(&id).slices.len(), 1, "the intent is stored first");
    // Built and signed, then the node dies before storing it.
    assert!(w.run_op(Side::Buyer, ActionKind::PaySlice(1), true));
    assert!(w.buy(&id).slices[0].tx.is_none());
    assert!(w.payments_of(&id).is_empty(), "never sent");
    // Built again from the intent, stored; broadcast, then the node dies before storing that.
    assert!(w.run_op(Side::Buyer, ActionKind::PaySlice(1), false));
    let tx = w.buy(&id).slices[0].tx.clone().expect("stored");
    assert!(tx.txid.ends_with("-2"), "a second build: {}", tx.txid);
    assert!(w.run_op(Side::Buyer, ActionKind::SendSlice(1), true));
    assert!(!w.buy(&id).slices[0].broadcast);
    // After the restart the same transaction goes out again: one payment on the chain.
    w.step(0);
    let s = w.buy(&id).slices[0].clone();
    assert!(s.broadcast);
    let pays = w.payments_of(&id);
    assert_eq!(pays.len(), 1, "{pays:?}");
    assert_eq!(
        (pays[0].txid.as_str(), pays[0].amount_sat),
        (tx.txid.as_str(), 600)
    );
    assert_eq!(w.buy(&id).sent.len(), 1);
    until_mining(&mut w, 5, 600, "closed", |w| {
        w.buy(&id).state == LeaseState::Closed
    });
    assert_eq!(
        w.payments_of(&id).iter().map(|p| p.amount_sat).sum::<u64>(),
        1200
    );
    w.settle(300);
    no_violations(&w);
}

/// A lease cancelled before its slice was built pays nothing: the intent is dropped, never built.
#[test]
fn a_slice_not_yet_built_is_dropped_when_the_lease_is_cancelled() {
    let mut w = world();
    let id = budget_lease(&mut w, 2);
    w.input(Side::Buyer, &id, Input::Tick);
    w.input(Side::Buyer, &id, Input::Cancel);
    w.step(0);
    let b = w.buy(&id).clone();
    assert!(b.slices[0].abandoned && b.slices[0].tx.is_none());
    assert!(w.payments_of(&id).is_empty());
    w.settle(100);
    no_violations(&w);
}

/// A budget is planned against each offer: the slice defaults to an hour (or the offer's shortest lease if
/// longer), must fit the offer's lease bounds, and the first slice must pay the shortest lease, or the
/// machine would never start; the invoice is the budget's worth in whole hours within the bounds.
#[test]
fn a_budget_is_planned_within_the_offers_lease_bounds() {
    use machine::{plan_budget, slice_secs_of, BudgetError};
    let w = world();
    let mut o = offer(&w, w.now); // 3600 sats/h, leases of 1 h to 24 h
    assert_eq!(slice_secs_of(0.01), Ok(36));
    assert_eq!(slice_secs_of(1.5), Ok(5400));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 0.0001] {
        assert!(
            matches!(slice_secs_of(bad), Err(BudgetError::BadSliceHours(_))),
            "{bad}"
        );
    }
    let (b, hours) = plan_budget(10_000, None, 0, &o).unwrap();
    assert_eq!(
        (b.slice_secs, b.slice_sat, b.total_sat),
        (3600, 3600, 10_000)
    );
    assert_eq!(hours, 3, "the budget's worth, rounded up");
    assert_eq!(
        plan_budget(10_000, None, 5, &o).unwrap().1,
        5,
        "hours asked win"
    );
    assert_eq!(
        plan_budget(10_000, Some(36), 0, &o),
        Err(BudgetError::SliceTooShort {
            slice_secs: 36,
            min_secs: 3600
        })
    );
    assert_eq!(
        plan_budget(10_000, Some(25 * 3600), 0, &o),
        Err(BudgetError::SliceTooLong {
            slice_secs: 25 * 3600,
            max_secs: 24 * 3600
        })
    );
    assert_eq!(
        plan_budget(3000, None, 0, &o),
        Err(BudgetError::BelowShortestLease {
            budget_sat: 3000,
            min_sat: 3600
        })
    );
    assert_eq!(plan_budget(0, None, 0, &o), Err(BudgetError::ZeroBudget));
    // Short leases allowed: fractional slices; the shortest lease sets the default when longer than an hour.
    o.min_lease_secs = 30;
    let (b, hours) = plan_budget(1080, Some(36), 0, &o).unwrap();
    assert_eq!((b.slice_secs, b.slice_sat, hours), (36, 36, 1));
    o.min_lease_secs = 2 * 3600;
    assert_eq!(
        plan_budget(100_000, None, 0, &o).unwrap().0.slice_secs,
        7200
    );
    assert_eq!(
        plan_budget(100_000, None, 0, &o).unwrap().1,
        24,
        "28 h of budget, but the offer sells 24 h at most"
    );
}

/// Found by the simulator: a status that spent hours on its way (sent before the buyer's node slept) counted
/// as fresh on arrival, and the buyer blamed the provider for a payment that status predated. A status is as
/// old as the provider signed it: an old one makes the buyer ask for a new one, which then decides.
#[test]
fn a_status_delayed_on_its_way_is_not_fresh() {
    let mut w = world();
    let id = budget_lease(&mut w, 2);
    w.step(0);
    until_mining(&mut w, 1, 50, "running", |w| {
        w.buy(&id).state == LeaseState::Running
    });
    let due = machine::next_slice_due(w.buy(&id), &w.terms).unwrap();
    while w.now + 5 < due {
        w.step(5);
    }
    w.now = due;
    let b = w.buy(&id).clone();
    let old = Input::Notice(LeaseNotice {
        from: w.provider.key.node_id(),
        lease_id: id.parse().unwrap(),
        seq: b.peer_seq + 1,
        at: w.now - 3 * w.terms.status_fresh_secs,
        body: NoticeBody::Status(LeaseStatus {
            state: LeaseState::Running,
            paid_sats: 600,
            refunded_sats: 0,
            started_at: b.started_at,
            runs_until: b.runs_until,
            access: None,
            message: "running".into(),
        }),
    });
    assert!(w.input(Side::Buyer, &id, old));
    let b = w.buy(&id).clone();
    assert_eq!(b.slices.len(), 1, "not paid on an old word: {}", w.dump());
    assert_eq!(
        b.status_asked_at,
        Some(w.now),
        "a fresh status is asked for"
    );
    assert!(b.withheld.is_none());
    // The provider answers at once: the slice goes out.
    w.step(0);
    assert_eq!(w.buy(&id).slices.len(), 2, "{}", w.dump());
    w.settle(300);
    no_violations(&w);
}

/// A slice signed just before the lease ended (as this node sees it) is still sent, as that transaction (it
/// may be out already; a provider refunds what arrives after the end), even by a node restarted since: an
/// ended lease with a slice under way is still ticked.
#[test]
fn a_slice_signed_as_the_lease_ends_is_still_sent_once() {
    let mut w = world();
    let id = budget_lease(&mut w, 2);
    w.input(Side::Buyer, &id, Input::Tick);
    assert!(w.run_op(Side::Buyer, ActionKind::PaySlice(1), false));
    assert!(w.buy(&id).slices[0].tx.is_some());
    // The lease ends (the provider says it expired) before the slice was broadcast, and that broadcast is
    // lost with the node's memory: the ended lease still sends it at the next tick.
    let status = Input::Notice(LeaseNotice {
        from: w.provider.key.node_id(),
        lease_id: id.parse().unwrap(),
        seq: 1,
        at: w.now,
        body: NoticeBody::Status(LeaseStatus {
            state: LeaseState::Expired,
            paid_sats: 0,
            refunded_sats: 0,
            started_at: None,
            runs_until: None,
            access: None,
            message: "invoice expired unpaid".into(),
        }),
    });
    assert!(w.input(Side::Buyer, &id, status));
    w.crash(Side::Buyer);
    w.step(0);
    let b = w.buy(&id).clone();
    assert!(b.state.is_terminal());
    assert!(b.slices[0].broadcast, "{}", w.dump());
    assert_eq!(w.payments_of(&id).len(), 1);
    w.settle(300);
    let b = w.buy(&id).clone();
    assert!(!machine::wants_ticks(&b), "nothing left under way");
    assert_eq!(
        w.slice_broadcasts.get(&(id.clone(), 1)).map(|t| t.len()),
        Some(1),
        "one transaction for slice 1"
    );
    no_violations(&w);
}

/// A refused order is ordered once more from the offer's newer version when the refusal says the offer
/// changed and the newer terms still fit: from the buyer's book when gossip brought that version already,
/// else from what the provider's refusal names (version and price: the order names the version, and the
/// invoice must match the price). A provider's capacity changes bump its offers' versions whenever other
/// leases start or end, so an order racing such a change must not fail for it (seen in CI: "offer ...
/// changed since you saw it (now version ... at 36000 sats/h)", the same price).
#[test]
fn an_order_refused_for_a_changed_offer_is_retried_at_the_newer_version() {
    let w = world();
    let asked = offer(&w, sim::T0);
    let newer = |sequence: u64, price: u64| Offer {
        sequence,
        price_sats_per_hour: price,
        ..asked.clone()
    };
    let changed = |sequence: u64, price: u64| OrderRefusal::OfferChanged {
        offer_id: asked.offer_id,
        sequence,
        price_sats_per_hour: price,
    };
    let same = asked.price_sats_per_hour;
    let cases: Vec<(
        &str,
        OrderRefusal,
        Option<Offer>,
        Option<u64>,
        Option<Offer>,
    )> = vec![
        (
            "newer version in the book",
            changed(2, same),
            Some(newer(2, same)),
            None,
            Some(newer(2, same)),
        ),
        (
            "newer version not in the book yet: the refusal's",
            changed(2, same),
            None,
            None,
            Some(newer(2, same)),
        ),
        (
            "the book holds the version asked only: the refusal's",
            changed(3, same),
            Some(asked.clone()),
            None,
            Some(newer(3, same)),
        ),
        (
            "the book's version is newer than the refusal's",
            changed(2, same),
            Some(newer(4, same + 1)),
            None,
            Some(newer(4, same + 1)),
        ),
        (
            "cheaper now, within the limit",
            changed(2, same - 100),
            None,
            Some(same),
            Some(newer(2, same - 100)),
        ),
        (
            "dearer than the buyer's limit now",
            changed(2, same + 1),
            None,
            Some(same),
            None,
        ),
        (
            "the book's dearer version over the limit",
            changed(2, same + 1),
            Some(newer(2, same + 1)),
            Some(same),
            None,
        ),
        (
            "a refusal naming no newer version",
            changed(1, same),
            None,
            None,
            None,
        ),
        (
            "another refusal",
            OrderRefusal::WrongPool {
                offer_id: asked.offer_id,
            },
            Some(newer(2, same)),
            None,
            None,
        ),
    ];
    for (name, why, in_book, max_price, want) in cases {
        assert_eq!(
            machine::renewed_offer(&asked, &why, in_book.as_ref(), max_price),
            want,
            "{name}"
        );
    }
}
