//! The lease simulator's in-memory world (feature `sim`; used by tests/lease_sim.rs, tests/lease_cases.rs and
//! the `lease_machine` fuzz target in node/fuzz): a provider node and a buyer node running the pure lease machine
//! (`lease::machine::handle` through `lease::driver::apply_input`), with an in-memory store (writes may fail),
//! a chain and wallet, a refund wallet, a cloud with faults, a lossy network, crashes at action boundaries
//! (restart = rebuild from the store) and a clock the world advances. Deterministic: everything random comes
//! from one seeded splitmix64. Buyers may pay in slices up to a budget (the buyer's wallet builds and
//! broadcasts them into the same chain), and the network between the two may go silent for a while (a
//! provider that stops answering): a buyer never pays more than its budget, each slice at most once, and
//! never decides a slice later than the freshness window after the provider went silent.
//!
//! [`World::check`] checks the machine's invariants after a step (money: received = earned + refunded +
//! written off + owed, launches only when paid, ...) and [`World::check_settled`] once everything has settled;
//! both record what they find in [`World::violations`].
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::lease::driver::apply_input;
use crate::lease::machine::{
    self, Action, ActionKind, Alert, CloudError, Ctx, Input, RefundError, SliceError, Terms,
};
use crate::lease::record::{
    Budget, InstanceInfo, LeaseRecord, PaymentOut, RefundTx, Role, SentPayment, Slice,
};
use xov_protocol::{
    Decode, Keypair, LeaseEvent, LeaseNotice, LeaseState, Order, PoolId, ProviderReceipt, Signed,
    SignedReceipt,
};

pub const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFMq1LDz2jg9w7mOpwiKfpc7OclyFbnfAmDxnjAXHk82 buyer@laptop";
pub const T0: u64 = 1_800_000_000;
pub const REFUND_FEE: u64 = 150;
/// The network fee a buyer's slice pays on top of its amount.
pub const SLICE_FEE: u64 = 110;
pub const DUST: u64 = 294;

// ------------------------------------------------------------------------------------------ rng

/// splitmix64: tiny, seeded, good enough for schedules.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.below(1000) < per_mille as u64
    }
}

// ------------------------------------------------------------------------------------------ world

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Provider,
    Buyer,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Provider => Side::Buyer,
            Side::Buyer => Side::Provider,
        }
    }
}

pub struct Node {
    pub side: Side,
    pub key: Keypair,
    pub mem: HashMap<String, LeaseRecord>,
    pub store: HashMap<String, LeaseRecord>,
    pub inflight: HashSet<(String, ActionKind)>,
    /// Leases whose cloud answer could not be stored (like the driver): `Restarted` at the next tick.
    pub unsure: HashSet<String>,
    /// Bumped at every crash: results of actions started before it are lost.
    pub epoch: u64,
    pub crashes: u64,
}

impl Node {
    fn new(side: Side, key: Keypair) -> Self {
        Node {
            side,
            key,
            mem: HashMap::new(),
            store: HashMap::new(),
            inflight: HashSet::new(),
            unsure: HashSet::new(),
            epoch: 0,
            crashes: 0,
        }
    }
}

/// One output paying a lease's address in the sim chain.
#[derive(Debug, Clone)]
pub struct Pay {
    pub lease: String,
    pub txid: String,
    pub amount: u64,
    pub height: Option<u32>,
    pub rbf: bool,
    pub ever_confirmed: bool,
    /// Replaced or reorged away for good.
    pub gone: bool,
}

/// What a scripted cloud operation does instead of succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudFault {
    /// Unreachable: nothing happens, Transient.
    Transient,
    /// Launch: the server is created, then goes to ERROR (stays until deleted): LaunchFailed.
    FailAfterCreate,
    /// Launch: the server is created but still building when the call gives up: Transient.
    BootTimeout,
    /// Do the operation normally.
    Ok,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MState {
    Building,
    Running,
    Stopped,
    Error,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub state: MState,
    pub since: u64,
    pub run_secs: u64,
}

impl Machine {
    fn set(&mut self, s: MState, now: u64) {
        if s == self.state {
            return;
        }
        if self.state == MState::Running {
            self.run_secs += now.saturating_sub(self.since);
        }
        if s == MState::Running && self.state != MState::Running {
            self.since = now;
        }
        self.state = s;
    }
}

/// Fault probabilities, per mille (all 0 = scripted, perfect world).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub persist_fail: u32,
    pub lose_notice: u32,
    pub cloud_transient: u32,
    pub launch_fail_after_create: u32,
    pub boot_timeout: u32,
    pub stuck_stop: u32,
    pub refund_later: u32,
    /// Crash of the node between persisting and acting, or between an action's effect and its result.
    pub crash_at_boundary: u32,
    /// Orphaned operations at a crash happened in the cloud/wallet (else they never reached it).
    pub orphan_applies: u32,
    /// Largest random delay of an action, in sim seconds (0: done at the next `run_ops`).
    pub max_delay: u64,
    pub slow_boot: u32,
}

impl Faults {
    /// The faults of the random schedules (`tests/lease_sim.rs`, and the `lease_machine` fuzz target).
    pub fn schedule() -> Faults {
        Faults {
            persist_fail: 20,
            lose_notice: 100,
            cloud_transient: 80,
            launch_fail_after_create: 30,
            boot_timeout: 40,
            stuck_stop: 50,
            refund_later: 60,
            crash_at_boundary: 8,
            orphan_applies: 500,
            max_delay: 40,
            slow_boot: 100,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Op {
    pub side: Side,
    pub lease: String,
    pub action: Action,
    pub due: u64,
    pub epoch: u64,
    pub seq: u64,
}

pub type CrashHook = Box<dyn FnMut(&Input, &LeaseRecord) -> bool>;

pub struct World {
    pub rng: Rng,
    pub now: u64,
    pub terms: Terms,
    pub provider: Node,
    pub buyer: Node,
    pub pool: PoolId,
    pub pays: Vec<Pay>,
    pub tip: u32,
    pub machines: HashMap<String, Machine>,
    /// Running seconds of deleted machines, per lease.
    pub dead_run_secs: HashMap<String, u64>,
    pub creates: HashMap<String, u32>,
    /// Lease → scripted outcomes of its next cloud operations (consumed first).
    pub cloud_script: HashMap<String, std::collections::VecDeque<CloudFault>>,
    /// Lease → remaining transient failures of its stop ("stuck stop").
    pub stuck: HashMap<String, u32>,
    pub build_attempts: HashMap<(String, u32), u32>,
    /// (lease, refund id) → txids broadcast, and the value of each txid.
    pub broadcasts: BTreeMap<(String, u32), BTreeSet<String>>,
    pub tx_values: HashMap<String, u64>,
    pub ops: Vec<Op>,
    pub op_seq: u64,
    pub faults: Faults,
    pub alerts: Vec<(Side, Alert)>,
    pub published: Vec<(Side, SignedReceipt)>,
    pub violations: Vec<String>,
    /// Provider leases whose record has not yet taken in the latest chain view.
    pub chain_dirty: HashSet<String>,
    pub crash_hook: Option<CrashHook>,
    /// Scripted: every Stop takes this long (sim seconds) to complete.
    pub stop_delay: u64,
    /// Scripted: every Start takes this long.
    pub start_delay: u64,
    pub steps: u64,
    pub launches: u64,
    pub tx_counter: u64,
    /// (lease, slice number) → txids the buyer's wallet broadcast for it (one, ever).
    pub slice_broadcasts: BTreeMap<(String, u32), BTreeSet<String>>,
    pub slice_builds: HashMap<(String, u32), u32>,
    /// From this time the two nodes cannot reach each other (every notice is lost), until healed.
    pub silent_from: Option<u64>,
    /// Scripted: the buyer's wallet cannot pay slices (no funds).
    pub buyer_broke: bool,
    /// Slices decided, per lease: (number, when).
    pub slice_intents: Vec<(String, u32, u64)>,
    /// The addresses the cloud gives each machine (a real cloud may give more, or longer, than a notice
    /// carries).
    pub machine_addresses: Vec<String>,
}

pub struct LeaseSpec {
    pub price: u64,
    pub min_lease_secs: u32,
    pub refund_address: Option<String>,
    pub invoice_ttl: u64,
    pub offer_id: u64,
    /// The buyer pays in slices of this budget.
    pub budget: Option<Budget>,
}

impl Default for LeaseSpec {
    fn default() -> Self {
        LeaseSpec {
            price: 3600,
            min_lease_secs: 60,
            refund_address: Some("bcrt1qrefund".into()),
            invoice_ttl: 900,
            offer_id: 1,
            budget: None,
        }
    }
}

pub fn sim_terms() -> Terms {
    Terms {
        min_confirmations: 1,
        zero_conf_max_sat: 0,
        warn_before_secs: 60,
        grace_secs: 30,
        hold_secs: 60,
        payment_seen_ttl_secs: 600,
        launch_deadline_secs: 300,
        retry_base_secs: 5,
        retry_max_secs: 60,
        notice_retry_secs: 20,
        start_timeout_secs: 900,
        refund_min_sat: 600,
        refund_confirmations: 2,
        restart_min_secs: 60,
        slice_lead_secs: 60,
        status_fresh_secs: 120,
    }
}

/// The simulator's keys: `key_from(1, 7)` is the provider's, `key_from(2, 7)` the buyer's (fuzz targets sign
/// messages with them).
pub fn key_from(tag: u8, seed: u64) -> Keypair {
    let mut b = [tag; 32];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    Keypair::from_secret_bytes(&b)
}

impl World {
    pub fn new(seed: u64, terms: Terms) -> Self {
        World {
            rng: Rng(seed),
            now: T0,
            terms,
            provider: Node::new(Side::Provider, key_from(1, 7)),
            buyer: Node::new(Side::Buyer, key_from(2, 7)),
            pool: xov_protocol::public_charter(xov_protocol::Chain::REGTEST)
                .body()
                .pool_id(),
            pays: Vec::new(),
            tip: 100,
            machines: HashMap::new(),
            dead_run_secs: HashMap::new(),
            creates: HashMap::new(),
            cloud_script: HashMap::new(),
            stuck: HashMap::new(),
            build_attempts: HashMap::new(),
            broadcasts: BTreeMap::new(),
            tx_values: HashMap::new(),
            ops: Vec::new(),
            op_seq: 0,
            faults: Faults::default(),
            alerts: Vec::new(),
            published: Vec::new(),
            violations: Vec::new(),
            chain_dirty: HashSet::new(),
            crash_hook: None,
            stop_delay: 0,
            start_delay: 0,
            steps: 0,
            launches: 0,
            tx_counter: 0,
            slice_broadcasts: BTreeMap::new(),
            slice_builds: HashMap::new(),
            silent_from: None,
            buyer_broke: false,
            slice_intents: Vec::new(),
            machine_addresses: vec!["10.0.0.2".into()],
        }
    }

    pub fn node(&self, s: Side) -> &Node {
        match s {
            Side::Provider => &self.provider,
            Side::Buyer => &self.buyer,
        }
    }
    fn node_mut(&mut self, s: Side) -> &mut Node {
        match s {
            Side::Provider => &mut self.provider,
            Side::Buyer => &mut self.buyer,
        }
    }

    /// The provider's persisted record.
    pub fn prov(&self, id: &str) -> &LeaseRecord {
        &self.provider.store[id]
    }
    pub fn buy(&self, id: &str) -> &LeaseRecord {
        &self.buyer.store[id]
    }

    pub fn lease_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.provider.store.keys().cloned().collect();
        v.sort();
        v
    }

    /// An order admitted by the provider and invoiced; both sides' records, as `admit` and `order` build them.
    pub fn open_lease(&mut self, spec: LeaseSpec) -> String {
        let nonce = self.rng.next();
        let order = Order {
            buyer: self.buyer.key.node_id(),
            provider: self.provider.key.node_id(),
            pool: self.pool,
            offer_id: spec.offer_id,
            offer_sequence: 1,
            image: "debian-12".into(),
            hours: 1,
            ssh_public_key: SSH_KEY.into(),
            refund_address: spec.refund_address.clone(),
            created_at: self.now,
            nonce,
            chain: xov_protocol::Chain::REGTEST,
            extra_ports: vec![],
        };
        let signed = Signed::sign(order.clone(), &self.buyer.key);
        let id = signed.id().to_string();
        let amount = xov_protocol::price_for_hours(spec.price, 1);
        let base = |role: Role, counterparty: String| LeaseRecord {
            id: id.clone(),
            role,
            state: LeaseState::Ordered,
            counterparty,
            pool: self.pool.to_string(),
            offer_id: spec.offer_id,
            image: order.image.clone(),
            hours: 1,
            price_sats_per_hour: spec.price,
            min_lease_secs: spec.min_lease_secs,
            vcpus: 2,
            ram_mib: 2048,
            disk_gib: 20,
            ssh_public_key: SSH_KEY.into(),
            refund_address: spec.refund_address.clone(),
            order_hex: hex::encode(signed.to_bytes()),
            pay_address: Some(format!("bcrt1q{}", &id[..16])),
            amount_sat: amount,
            admitted_at: self.now,
            invoice_expires_at: self.now + spec.invoice_ttl,
            ..LeaseRecord::default()
        };
        let mut p = base(Role::Provider, self.buyer.key.node_id().to_string());
        p.set_state(LeaseState::Ordered, self.now, "order received");
        p.apply(LeaseEvent::InvoiceIssued, self.now, "invoiced")
            .unwrap();
        let mut b = base(Role::Buyer, self.provider.key.node_id().to_string());
        b.state = LeaseState::Invoiced;
        b.budget = spec.budget;
        b.invoice_min_confirmations = self.terms.min_confirmations;
        b.set_state(LeaseState::Invoiced, self.now, "invoice");
        self.provider.store.insert(id.clone(), p.clone());
        self.provider.mem.insert(id.clone(), p);
        self.buyer.store.insert(id.clone(), b.clone());
        self.buyer.mem.insert(id.clone(), b);
        id
    }

    // ------------------------------------------------------------------ applying inputs

    /// Decide, persist (may fail), then queue the actions. Returns whether the input was taken (persisted or
    /// nothing to persist).
    pub fn input(&mut self, side: Side, id: &str, input: Input) -> bool {
        let fail = self.rng.chance(self.faults.persist_fail);
        let now = self.now;
        let terms = self.terms.clone();
        let node = self.node_mut(side);
        let Node {
            mem, store, key, ..
        } = node;
        let ctx = Ctx { terms: &terms, key };
        let kept = input.clone();
        let slices_before = mem
            .get(id)
            .and_then(|l| l.slices.iter().map(|s| s.n).max())
            .unwrap_or(0);
        let res = apply_input(
            mem,
            &mut |r: &LeaseRecord| {
                if fail {
                    Err("disk full")
                } else {
                    store.insert(r.id.clone(), r.clone());
                    Ok(())
                }
            },
            id,
            input,
            now,
            &ctx,
        );
        let Ok(applied) = res else { return false };
        if side == Side::Buyer {
            if let Some(saved) = applied.saved.clone() {
                if saved.slices.iter().any(|s| s.n > slices_before) {
                    self.check_slice_intent(id, &saved);
                }
            }
        }
        if side == Side::Provider {
            if let Input::Payments { .. } = kept {
                self.chain_dirty.remove(id);
            }
        }
        // Crash between persisting and acting: the actions are lost, the record is not.
        let rec = self.node(side).store.get(id).cloned();
        let hit = match (self.crash_hook.as_mut(), rec.as_ref()) {
            (Some(hook), Some(r)) => {
                side == Side::Provider && applied.saved.is_some() && hook(&kept, r)
            }
            _ => false,
        };
        if hit {
            self.crash(side);
            return true;
        }
        if !applied.actions.is_empty() && self.rng.chance(self.faults.crash_at_boundary) {
            self.crash(side);
            return true;
        }
        for a in applied.actions {
            self.emit(side, id, a);
        }
        true
    }

    fn emit(&mut self, side: Side, id: &str, action: Action) {
        match &action {
            Action::Alert(a) => {
                self.alerts.push((side, a.clone()));
                return;
            }
            Action::PublishReceipt(r) => {
                if !r.verify() {
                    self.violations.push(format!(
                        "lease {id}: published a receipt that does not verify"
                    ));
                }
                self.published.push((side, r.clone()));
                return;
            }
            Action::Launch(_) => {
                self.launches += 1;
                self.check_launch(id);
            }
            _ => {}
        }
        let kind = action.kind();
        let node = self.node_mut(side);
        if !node.inflight.insert((id.to_string(), kind)) {
            return;
        }
        let epoch = node.epoch;
        let delay = if self.faults.max_delay == 0 {
            0
        } else {
            let mut d = self.rng.below(self.faults.max_delay + 1);
            if matches!(action, Action::Launch(_)) && self.rng.chance(self.faults.slow_boot) {
                d += self.rng.range(60, 400);
            }
            d
        } + match action {
            Action::Stop => self.stop_delay,
            Action::Start => self.start_delay,
            _ => 0,
        };
        self.op_seq += 1;
        self.ops.push(Op {
            side,
            lease: id.to_string(),
            action,
            due: self.now + delay,
            epoch,
            seq: self.op_seq,
        });
    }

    /// Invariants at the moment a buyer decides a slice: within the budget, one at a time, and (after the
    /// first) only while the provider delivers as the buyer saw it, and never once the provider has been
    /// silent for longer than the freshness window.
    fn check_slice_intent(&mut self, id: &str, b: &LeaseRecord) {
        let Some(slice) = b.slices.last().cloned() else {
            return;
        };
        self.slice_intents.push((id.to_string(), slice.n, self.now));
        let Some(budget) = b.budget else {
            self.violations
                .push(format!("lease {id}: slice {} without a budget", slice.n));
            return;
        };
        let committed: u64 = b.slices.iter().map(Slice::committed_sat).sum();
        if committed > budget.total_sat {
            self.violations.push(format!(
                "lease {id}: slices of {committed} sat decided, over the budget of {}",
                budget.total_sat
            ));
        }
        if b.slices.iter().filter(|s| s.pending()).count() > 1 {
            self.violations
                .push(format!("lease {id}: two slices under way at once"));
        }
        if slice.n < 2 {
            return;
        }
        let fresh = self.terms.status_fresh_secs;
        let running = matches!(
            b.state,
            LeaseState::Running | LeaseState::Warned | LeaseState::Grace
        );
        let sent: u64 = b.sent.iter().map(|p| p.amount_sat).sum();
        let why = if !running {
            Some(format!("the provider reports {:?}", b.state))
        } else if b.status_at.is_none_or(|s| self.now > s + fresh) {
            Some(format!("its latest status is from {:?}", b.status_at))
        } else if b.stalled {
            Some("the start timed out".to_string())
        } else if b.sent.iter().any(|p| p.confirmed_at.is_none()) {
            Some("a payment of ours is unconfirmed".to_string())
        } else if b.paid_sat < sent {
            Some(format!("it counts {} of our {sent} sat", b.paid_sat))
        } else if self.silent_from.is_some_and(|g| self.now > g + fresh) {
            Some(format!(
                "the provider has been silent since {}",
                self.silent_from.unwrap_or(0) - T0
            ))
        } else {
            None
        };
        if let Some(why) = why {
            self.violations.push(format!(
                "lease {id}: slice {} decided while the provider is not delivering: {why}",
                slice.n
            ));
        }
    }

    /// Invariant (a), at the moment a launch is asked: funds cover the shortest lease and it is not cancelled.
    fn check_launch(&mut self, id: &str) {
        let rec = self.provider.store[id].clone();
        let counted = counted_sat(&rec.payments, rec.tip, &self.terms);
        if rec.cancelled {
            self.violations
                .push(format!("lease {id}: launch asked for a cancelled lease"));
        }
        if counted < machine::min_start(&rec) {
            self.violations.push(format!(
                "lease {id}: launch asked with {counted} sat counted < min_start {}",
                machine::min_start(&rec)
            ));
        }
        if !self.chain_dirty.contains(id) {
            let live = counted_sat(&self.payments_of(id), self.tip, &self.terms);
            if live < machine::min_start(&rec) {
                self.violations.push(format!(
                    "lease {id}: launch asked while the chain shows {live} sat counted < min_start {}",
                    machine::min_start(&rec)
                ));
            }
        }
    }

    /// Loses the node's memory and in-flight actions; orphaned operations may still take effect. Restart
    /// rebuilds from the store and (provider) resumes like the driver: payments, refunds, ticks.
    pub fn crash(&mut self, side: Side) {
        let orphan_applies = self.faults.orphan_applies;
        let mut orphans = Vec::new();
        let mut keep = Vec::new();
        for op in std::mem::take(&mut self.ops) {
            if op.side == side {
                orphans.push(op);
            } else {
                keep.push(op);
            }
        }
        self.ops = keep;
        for op in orphans {
            if self.rng.chance(orphan_applies) {
                let _ = self.effect(&op);
            }
        }
        let node = self.node_mut(side);
        node.epoch += 1;
        node.crashes += 1;
        node.inflight.clear();
        node.mem = node.store.clone();
        self.restart(side);
    }

    fn restart(&mut self, side: Side) {
        let ids = self.lease_ids();
        if side == Side::Provider {
            for id in &ids {
                // Like the driver: the wallet's view first, then what the cloud did since the last stored
                // answer is unknown.
                let input = self.restarted_input(id);
                if !self.input(Side::Provider, id, input) {
                    self.provider.unsure.insert(id.clone());
                }
            }
            // Signed refunds broadcast before the crash are broadcast again (idempotent).
            let signed: Vec<(String, u32, RefundTx)> = self
                .provider
                .mem
                .values()
                .flat_map(|l| {
                    l.refunds
                        .iter()
                        .filter(|r| r.broadcast)
                        .filter_map(|r| r.tx.clone().map(|t| (l.id.clone(), r.id, t)))
                        .collect::<Vec<_>>()
                })
                .collect();
            for (lease, rid, tx) in signed {
                self.wallet_broadcast(&lease, rid, &tx);
            }
        }
        if side == Side::Buyer {
            // Like the driver: where the buyer's payments stand now, for its live leases it paid for.
            for id in &ids {
                if self.buyer.mem.get(id).is_some_and(paying) {
                    let input = self.confirmations_input(id);
                    self.input(Side::Buyer, id, input);
                }
            }
        }
        for id in &ids {
            if self
                .node(side)
                .mem
                .get(id)
                .is_some_and(machine::wants_ticks)
            {
                self.input(side, id, Input::Tick);
            }
        }
    }

    // ------------------------------------------------------------------ chain

    pub fn payments_of(&self, id: &str) -> Vec<PaymentOut> {
        self.pays
            .iter()
            .filter(|p| p.lease == id && !p.gone)
            .map(|p| PaymentOut {
                txid: p.txid.clone(),
                vout: 0,
                amount_sat: p.amount,
                height: p.height,
                rbf: p.rbf,
            })
            .collect()
    }

    /// `Restarted` with the wallet's current view, as the driver sends it.
    pub fn restarted_input(&self, id: &str) -> Input {
        Input::Restarted {
            view: Some((self.payments_of(id), self.tip)),
        }
    }

    pub fn payments_input(&self, id: &str) -> Input {
        Input::Payments {
            payments: self.payments_of(id),
            tip: self.tip,
        }
    }

    /// The buyer's wallet view of its own payments for a lease (by txid; gone ones unconfirmed).
    pub fn confirmations_input(&self, id: &str) -> Input {
        let txs = self
            .buyer
            .mem
            .get(id)
            .map(|l| {
                l.sent
                    .iter()
                    .flat_map(|p| p.txids())
                    .map(|t| {
                        let h = self
                            .pays
                            .iter()
                            .find(|p| p.txid == t && !p.gone)
                            .and_then(|p| p.height);
                        (t.to_string(), h)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Input::Confirmations { txs, tip: self.tip }
    }

    /// Feeds the wallet's view to every provider lease and every buyer lease (like the driver on
    /// `TipChanged`).
    pub fn feed_payments(&mut self) {
        // Every lease's view is stale from now until it is fed (a crash while feeding one restarts the
        // provider, which reads the chain afresh for all).
        for id in self.lease_ids() {
            self.chain_dirty.insert(id);
        }
        for id in self.lease_ids() {
            let input = self.payments_input(&id);
            self.input(Side::Provider, &id, input);
        }
        for id in self.lease_ids() {
            if self.buyer.mem.get(&id).is_some_and(paying) {
                let input = self.confirmations_input(&id);
                self.input(Side::Buyer, &id, input);
            }
        }
    }

    /// The buyer pays `amount` to the lease's address (unconfirmed). `tell_buyer`: the payment came from the
    /// buyer node's wallet (it gets `Input::Paid`).
    pub fn pay(&mut self, id: &str, amount: u64, rbf: bool, tell_buyer: bool) -> String {
        self.tx_counter += 1;
        let txid = format!("{:064x}", self.tx_counter);
        self.pays.push(Pay {
            lease: id.to_string(),
            txid: txid.clone(),
            amount,
            height: None,
            rbf,
            ever_confirmed: false,
            gone: false,
        });
        if tell_buyer {
            let p = SentPayment::new(txid.clone(), amount, self.now);
            self.input(Side::Buyer, id, Input::Paid(p));
        }
        self.feed_payments();
        txid
    }

    /// Mines a block confirming every unconfirmed payment (or each with probability `per_mille`).
    pub fn mine_some(&mut self, per_mille: u32) {
        self.tip += 1;
        for i in 0..self.pays.len() {
            if self.pays[i].height.is_none() && !self.pays[i].gone && self.rng.chance(per_mille) {
                self.pays[i].height = Some(self.tip);
                self.pays[i].ever_confirmed = true;
            }
        }
        self.feed_payments();
    }

    pub fn mine(&mut self) {
        self.mine_some(1000);
    }

    /// Removes the last block: its payments go back to the mempool, or vanish (double-spent) if `vanish`.
    pub fn reorg(&mut self, vanish: bool) {
        let top = self.tip;
        for p in self.pays.iter_mut().filter(|p| p.height == Some(top)) {
            p.height = None;
            if vanish {
                p.gone = true;
            }
        }
        self.tip -= 1;
        self.feed_payments();
    }

    /// An unconfirmed payment is replaced by one paying elsewhere.
    pub fn replace(&mut self, txid: &str) {
        if let Some(p) = self
            .pays
            .iter_mut()
            .find(|p| p.txid == txid && p.height.is_none())
        {
            p.gone = true;
        }
        self.feed_payments();
    }

    // ------------------------------------------------------------------ cloud, wallet, network

    fn cloud_fault(&mut self, id: &str, random: CloudFault) -> CloudFault {
        if let Some(f) = self.cloud_script.get_mut(id).and_then(|q| q.pop_front()) {
            return f;
        }
        random
    }

    /// Carries out an operation in the world; returns its result input (for the node that asked).
    fn effect(&mut self, op: &Op) -> Option<Input> {
        let id = op.lease.as_str();
        let now = self.now;
        let addresses = self.machine_addresses.clone();
        let info = |id: &str| InstanceInfo {
            server_id: format!("srv-{}", &id[..8]),
            addresses: addresses.clone(),
            image: "debian-12".into(),
            user: "debian".into(),
            ssh_port: 22,
            open_ports: vec![22],
        };
        match &op.action {
            Action::Launch(spec) => {
                if spec.lease_id != id {
                    self.violations
                        .push(format!("lease {id}: launch spec for another lease"));
                }
                let random = if self.rng.chance(self.faults.cloud_transient) {
                    CloudFault::Transient
                } else if self.rng.chance(self.faults.launch_fail_after_create) {
                    CloudFault::FailAfterCreate
                } else if self.rng.chance(self.faults.boot_timeout) {
                    CloudFault::BootTimeout
                } else {
                    CloudFault::Ok
                };
                let fault = self.cloud_fault(id, random);
                if fault == CloudFault::Transient {
                    return Some(Input::Launched(Err(CloudError::Transient {
                        detail: "cloud unreachable".into(),
                    })));
                }
                if let Some(m) = self.machines.get_mut(id) {
                    // A tagged server exists: follow it, never create a second.
                    return Some(match m.state {
                        MState::Error => Input::Launched(Err(CloudError::LaunchFailed {
                            detail: "server in ERROR".into(),
                        })),
                        MState::Building if fault == CloudFault::BootTimeout => {
                            Input::Launched(Err(CloudError::Transient {
                                detail: "still building".into(),
                            }))
                        }
                        _ => {
                            if m.state != MState::Running {
                                m.set(MState::Running, now);
                            }
                            Input::Launched(Ok(info(id)))
                        }
                    });
                }
                *self.creates.entry(id.to_string()).or_default() += 1;
                let state = match fault {
                    CloudFault::FailAfterCreate => MState::Error,
                    CloudFault::BootTimeout => MState::Building,
                    _ => MState::Running,
                };
                self.machines.insert(
                    id.to_string(),
                    Machine {
                        state,
                        since: now,
                        run_secs: 0,
                    },
                );
                Some(Input::Launched(match fault {
                    CloudFault::FailAfterCreate => Err(CloudError::LaunchFailed {
                        detail: "server went to ERROR".into(),
                    }),
                    CloudFault::BootTimeout => Err(CloudError::Transient {
                        detail: "boot timed out".into(),
                    }),
                    _ => Ok(info(id)),
                }))
            }
            Action::Stop | Action::Start | Action::Delete => {
                let mut random = if self.rng.chance(self.faults.cloud_transient) {
                    CloudFault::Transient
                } else {
                    CloudFault::Ok
                };
                if op.action == Action::Stop {
                    if let Some(n) = self.stuck.get_mut(id).filter(|n| **n > 0) {
                        *n -= 1;
                        random = CloudFault::Transient;
                    } else if self.rng.chance(self.faults.stuck_stop) {
                        self.stuck
                            .insert(id.to_string(), self.rng.range(2, 6) as u32);
                        random = CloudFault::Transient;
                    }
                }
                let fault = self.cloud_fault(id, random);
                let transient = CloudError::Transient {
                    detail: "state change timed out".into(),
                };
                if fault == CloudFault::Transient {
                    return Some(match op.action {
                        Action::Stop => Input::Stopped(Err(transient)),
                        Action::Start => Input::Started(Err(transient)),
                        _ => Input::Deleted(Err(transient)),
                    });
                }
                match op.action {
                    Action::Stop => Some(Input::Stopped(match self.machines.get_mut(id) {
                        None => Err(CloudError::NoMachine),
                        Some(m) => {
                            m.set(MState::Stopped, now);
                            Ok(())
                        }
                    })),
                    Action::Start => Some(Input::Started(match self.machines.get_mut(id) {
                        None => Err(CloudError::NoMachine),
                        Some(m) if m.state == MState::Error => Err(CloudError::Transient {
                            detail: "server in ERROR".into(),
                        }),
                        Some(m) => {
                            m.set(MState::Running, now);
                            Ok(())
                        }
                    })),
                    _ => {
                        if let Some(mut m) = self.machines.remove(id) {
                            m.set(MState::Stopped, now);
                            *self.dead_run_secs.entry(id.to_string()).or_default() += m.run_secs;
                        }
                        Some(Input::Deleted(Ok(())))
                    }
                }
            }
            Action::BuildRefund {
                id: rid,
                value_sat,
                address,
            } => {
                if address.is_empty() {
                    self.violations
                        .push(format!("lease {id}: refund to an empty address"));
                }
                if *value_sat < REFUND_FEE + DUST {
                    return Some(Input::RefundBuilt {
                        id: *rid,
                        result: Err(RefundError::Uneconomic {
                            value_sat: *value_sat,
                        }),
                    });
                }
                if self.rng.chance(self.faults.refund_later) {
                    return Some(Input::RefundBuilt {
                        id: *rid,
                        result: Err(RefundError::Later {
                            detail: "no spendable coins yet".into(),
                        }),
                    });
                }
                let n = self
                    .build_attempts
                    .entry((id.to_string(), *rid))
                    .or_default();
                *n += 1;
                let txid = format!("refund-{}-{rid}-{n}", &id[..8]);
                Some(Input::RefundBuilt {
                    id: *rid,
                    result: Ok(RefundTx {
                        txid,
                        raw_hex: "00".into(),
                        fee_sat: REFUND_FEE,
                        sent_sat: value_sat - REFUND_FEE,
                    }),
                })
            }
            Action::Broadcast { id: rid, tx } => {
                if self.rng.chance(self.faults.refund_later) {
                    return Some(Input::RefundSent {
                        id: *rid,
                        result: Err(RefundError::Later {
                            detail: "chain source not connected".into(),
                        }),
                    });
                }
                self.wallet_broadcast(id, *rid, tx);
                Some(Input::RefundSent {
                    id: *rid,
                    result: Ok(()),
                })
            }
            Action::PaySlice {
                n,
                amount_sat,
                address,
            } => {
                if op.side != Side::Buyer {
                    self.violations
                        .push(format!("lease {id}: the provider paid a slice"));
                }
                let expected = self.buyer.store.get(id).and_then(|l| l.pay_address.clone());
                if expected.as_deref() != Some(address.as_str()) {
                    self.violations.push(format!(
                        "lease {id}: slice {n} to another address {address}"
                    ));
                }
                if self.buyer_broke {
                    return Some(Input::SliceBuilt {
                        n: *n,
                        result: Err(SliceError::Funds {
                            detail: "no coins".into(),
                        }),
                    });
                }
                if self.rng.chance(self.faults.refund_later) {
                    return Some(Input::SliceBuilt {
                        n: *n,
                        result: Err(SliceError::Later {
                            detail: "chain source not connected".into(),
                        }),
                    });
                }
                let k = self.slice_builds.entry((id.to_string(), *n)).or_default();
                *k += 1;
                Some(Input::SliceBuilt {
                    n: *n,
                    result: Ok(RefundTx {
                        txid: format!("slice-{}-{n}-{k}", &id[..8]),
                        raw_hex: "00".into(),
                        fee_sat: SLICE_FEE,
                        sent_sat: *amount_sat,
                    }),
                })
            }
            Action::SendSlice { n, tx } => {
                if self.rng.chance(self.faults.refund_later) {
                    return Some(Input::SliceSent {
                        n: *n,
                        result: Err(SliceError::Later {
                            detail: "no peer asked for it yet".into(),
                        }),
                    });
                }
                let set = self
                    .slice_broadcasts
                    .entry((id.to_string(), *n))
                    .or_default();
                set.insert(tx.txid.clone());
                if set.len() > 1 {
                    let set = set.clone();
                    self.violations
                        .push(format!("lease {id}: slice {n} paid twice: {set:?}"));
                }
                // Broadcasting the same transaction again changes nothing on the chain.
                if !self.pays.iter().any(|p| p.txid == tx.txid) {
                    self.pays.push(Pay {
                        lease: id.to_string(),
                        txid: tx.txid.clone(),
                        amount: tx.sent_sat,
                        height: None,
                        rbf: true,
                        ever_confirmed: false,
                        gone: false,
                    });
                    self.tx_values
                        .insert(tx.txid.clone(), tx.sent_sat + tx.fee_sat);
                    self.feed_payments();
                }
                Some(Input::SliceSent {
                    n: *n,
                    result: Ok(()),
                })
            }
            Action::Send(n) => {
                let from = self.node(op.side).key.node_id();
                let b = n.body().clone();
                if !n.verify() || b.from != from || b.lease_id.to_string() != id {
                    self.violations
                        .push(format!("lease {id}: a notice that does not verify"));
                    return None;
                }
                if self.rng.chance(self.faults.lose_notice)
                    || self.silent_from.is_some_and(|g| self.now >= g)
                {
                    return None;
                }
                let to = op.side.other();
                let known = self
                    .node(to)
                    .mem
                    .get(id)
                    .is_some_and(|l| l.counterparty == from.to_string());
                if !known {
                    return None;
                }
                // What the receiver's network and lease engine take in: the wire bytes, decoded and
                // checked. A notice the receiver would drop is never one the sender may count as told.
                let taken = Signed::<LeaseNotice>::from_bytes(&n.to_bytes())
                    .map_err(|e| e.to_string())
                    .and_then(|m| {
                        xov_protocol::validate::validate_notice(&m, now)
                            .map(|()| m)
                            .map_err(|e| e.to_string())
                    });
                let b = match taken {
                    Ok(m) => m.body().clone(),
                    Err(e) => {
                        self.violations.push(format!(
                            "lease {id}: a notice the other side cannot take in ({e})"
                        ));
                        return None;
                    }
                };
                let seq = b.seq;
                // The receiver acknowledges once it has taken the notice in.
                self.input(to, id, Input::Notice(b))
                    .then_some(Input::Acked { seq })
            }
            Action::PublishReceipt(_) | Action::Alert(_) => None,
        }
    }

    fn wallet_broadcast(&mut self, lease: &str, rid: u32, tx: &RefundTx) {
        let set = self.broadcasts.entry((lease.to_string(), rid)).or_default();
        set.insert(tx.txid.clone());
        if set.len() > 1 {
            self.violations.push(format!(
                "lease {lease}: refund {rid} broadcast with two txids {set:?}"
            ));
        }
        self.tx_values
            .insert(tx.txid.clone(), tx.fee_sat + tx.sent_sat);
    }

    /// Runs the first due operation of `side` whose action is of `kind`: its effect happens, then its result
    /// is applied, or (`crash`) the node crashes first and the result is lost. False if there was none.
    pub fn run_op(&mut self, side: Side, kind: ActionKind, crash: bool) -> bool {
        let Some(i) = self
            .ops
            .iter()
            .position(|o| o.side == side && o.action.kind() == kind && o.due <= self.now)
        else {
            return false;
        };
        let op = self.ops.swap_remove(i);
        let result = self.effect(&op);
        if self.node(side).epoch != op.epoch {
            return true;
        }
        self.node_mut(side)
            .inflight
            .remove(&(op.lease.clone(), kind));
        if crash {
            self.crash(side);
            return true;
        }
        if let Some(input) = result {
            self.input(side, &op.lease, input);
        }
        true
    }

    /// Runs every operation due by now (and whatever they lead to that is also due).
    pub fn run_ops(&mut self) {
        for _ in 0..10_000 {
            let Some(i) = self
                .ops
                .iter()
                .enumerate()
                .filter(|(_, o)| o.due <= self.now)
                .min_by_key(|(_, o)| (o.due, o.seq))
                .map(|(i, _)| i)
            else {
                return;
            };
            let op = self.ops.swap_remove(i);
            let result = self.effect(&op);
            let node = self.node_mut(op.side);
            if node.epoch != op.epoch {
                continue;
            }
            node.inflight.remove(&(op.lease.clone(), op.action.kind()));
            if self.rng.chance(self.faults.crash_at_boundary) {
                // The effect happened; its result is lost with the node's memory.
                self.crash(op.side);
                continue;
            }
            if let Some(input) = result {
                let cloud = matches!(
                    input,
                    Input::Launched(_) | Input::Stopped(_) | Input::Started(_) | Input::Deleted(_)
                );
                if !self.input(op.side, &op.lease, input) && cloud {
                    self.node_mut(op.side).unsure.insert(op.lease.clone());
                }
            }
        }
        self.violations
            .push("operations never settle (10000 in one step)".into());
    }

    /// Ticks every lease that wants ticks on both nodes (like the driver's metering loop).
    pub fn tick_all(&mut self) {
        for side in [Side::Provider, Side::Buyer] {
            for id in self.lease_ids() {
                if self
                    .node(side)
                    .mem
                    .get(&id)
                    .is_some_and(machine::wants_ticks)
                {
                    if self.node_mut(side).unsure.remove(&id)
                        && !{
                            let input = self.restarted_input(&id);
                            self.input(side, &id, input)
                        }
                    {
                        self.node_mut(side).unsure.insert(id.clone());
                        continue;
                    }
                    self.input(side, &id, Input::Tick);
                }
            }
        }
    }

    /// Advances the clock, runs what is due, ticks, and checks the invariants.
    pub fn step(&mut self, dt: u64) {
        self.now += dt;
        self.steps += 1;
        self.run_ops();
        self.tick_all();
        self.run_ops();
        self.check();
    }

    /// Steps until `f` holds (or panics after `max` steps of `dt`).
    pub fn until(&mut self, dt: u64, max: u32, what: &str, f: impl Fn(&World) -> bool) {
        for _ in 0..max {
            if f(self) {
                return;
            }
            self.step(dt);
        }
        assert!(f(self), "never reached: {what}\n{}", self.dump());
    }

    // ------------------------------------------------------------------ invariants

    pub fn run_secs(&self, id: &str) -> u64 {
        let live = self.machines.get(id).map_or(0, |m| {
            m.run_secs
                + if m.state == MState::Running {
                    self.now.saturating_sub(m.since)
                } else {
                    0
                }
        });
        live + self.dead_run_secs.get(id).copied().unwrap_or(0)
    }

    fn ever_confirmed_sat(&self, id: &str) -> u64 {
        self.pays
            .iter()
            .filter(|p| p.lease == id && p.ever_confirmed && !p.gone)
            .map(|p| p.amount)
            .sum()
    }

    /// Invariants that hold after every step, on the persisted records.
    pub fn check(&mut self) {
        let terms = self.terms.clone();
        for id in self.lease_ids() {
            // (g) a budget is never overspent: what the buyer's wallet broadcast as slices, on the chain's
            // side of things.
            if let Some(b) = self.buyer.store.get(&id).and_then(|l| l.budget) {
                let paid: u64 = self
                    .slice_broadcasts
                    .range((id.clone(), 0)..=(id.clone(), u32::MAX))
                    .flat_map(|(_, t)| t.iter())
                    .filter_map(|t| self.pays.iter().find(|p| p.txid == *t))
                    .map(|p| p.amount)
                    .sum();
                if paid > b.total_sat {
                    self.violations.push(format!(
                        "lease {id}: slices of {paid} sat broadcast, over the budget of {}",
                        b.total_sat
                    ));
                }
            }
            let rec = self.provider.store[&id].clone();
            // (b) at most one machine per lease, ever; none the record does not know of.
            if self.creates.get(&id).copied().unwrap_or(0) > 1 {
                self.violations
                    .push(format!("lease {id}: a second machine was created"));
            }
            if !rec.machine_may_exist && self.machines.contains_key(&id) {
                self.violations.push(format!(
                    "lease {id}: a machine exists that the record ({:?}) does not know of",
                    rec.state
                ));
            }
            // (d) money.
            let given = machine::refund_values(&rec) + rec.written_off_sat + rec.owed_sat;
            let ever = self.ever_confirmed_sat(&id);
            if given > ever {
                self.violations.push(format!(
                    "lease {id}: refunded+written off+owed {given} > {ever} sat ever confirmed"
                ));
            }
            let earned = machine::earned_sat(&rec, &terms);
            let run = self.run_secs(&id);
            let max = (run as u128 * rec.price_sats_per_hour as u128).div_ceil(3600) as u64;
            if earned > max {
                self.violations.push(format!(
                    "lease {id}: earned {earned} > {max} sat for {run} s of running ({} s charged)",
                    rec.charged_secs
                ));
            }
            let sent: Vec<((String, u32), BTreeSet<String>)> = self
                .broadcasts
                .range((id.clone(), 0)..=(id.clone(), u32::MAX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for ((_, rid), txids) in sent {
                let ours = rec.refunds.iter().find(|r| r.id == rid);
                for t in txids {
                    match ours.and_then(|r| r.tx.as_ref()) {
                        Some(tx) if tx.txid == t => {}
                        _ => self.violations.push(format!(
                            "lease {id}: refund {rid} broadcast as {t}, which the record does not hold"
                        )),
                    }
                }
            }
            if rec.state.is_terminal()
                && rec.state != LeaseState::Closed
                && rec.started_at.is_none()
                && rec.charged_secs > 0
            {
                self.violations
                    .push(format!("lease {id}: charged without ever starting"));
            }
        }
    }

    /// Invariants once the world is quiet (settle phase over).
    pub fn check_settled(&mut self) {
        let terms = self.terms.clone();
        for id in self.lease_ids() {
            let p = self.provider.store[&id].clone();
            let b = self.buyer.store[&id].clone();
            if !p.state.is_terminal() {
                self.violations.push(format!(
                    "lease {id}: not settled: provider still {:?}",
                    p.state
                ));
                continue;
            }
            // (c) no machine once ended.
            if self.machines.contains_key(&id) || p.machine_may_exist {
                self.violations.push(format!(
                    "lease {id}: ended ({:?}) but a machine may remain (cloud: {})",
                    p.state,
                    self.machines.contains_key(&id)
                ));
            }
            // (d) received = earned + refunded + written off + owed; the wallet agrees.
            let confirmed = counted_confirmed(&self.payments_of(&id), self.tip, &terms);
            if machine::confirmed_sat(&p, &terms) != confirmed {
                self.violations.push(format!(
                    "lease {id}: record counts {} confirmed, the chain {confirmed}",
                    machine::confirmed_sat(&p, &terms)
                ));
            }
            let earned = machine::earned_sat(&p, &terms);
            let refunds = machine::refund_values(&p);
            let sum = earned + refunds + p.written_off_sat + p.owed_sat;
            if sum != confirmed {
                self.violations.push(format!(
                    "lease {id}: received {confirmed} != earned {earned} + refunded {refunds} + written off {} + owed {}",
                    p.written_off_sat, p.owed_sat
                ));
            }
            if p.refunds.iter().any(|r| !r.broadcast) {
                self.violations
                    .push(format!("lease {id}: a refund was never sent"));
            }
            let wallet: u64 = self
                .broadcasts
                .range((id.clone(), 0)..=(id.clone(), u32::MAX))
                .flat_map(|(_, t)| t.iter())
                .map(|t| self.tx_values.get(t).copied().unwrap_or(0))
                .sum();
            if wallet != refunds {
                self.violations.push(format!(
                    "lease {id}: the wallet sent {wallet} sat of refunds, the record says {refunds}"
                ));
            }
            // (e) confirmed money not earned goes back (written off only in small amounts).
            if p.refund_address.is_some() && p.owed_sat != 0 {
                self.violations.push(format!(
                    "lease {id}: {} sat owed despite a refund address",
                    p.owed_sat
                ));
            }
            if p.refund_address.is_none() && !p.refunds.is_empty() {
                self.violations
                    .push(format!("lease {id}: refunded without a refund address"));
            }
            let writeoffs = p.write_offs as u64;
            if p.written_off_sat > writeoffs * terms.refund_min_sat.max(REFUND_FEE + DUST) {
                self.violations.push(format!(
                    "lease {id}: {} sat written off in {writeoffs} write-offs",
                    p.written_off_sat
                ));
            }
            // (f) both sides agree.
            if b.state != p.state {
                self.violations.push(format!(
                    "lease {id}: buyer sees {:?}, provider {:?}",
                    b.state, p.state
                ));
                continue;
            }
            if p.state == LeaseState::Closed {
                let Some(h) = p.receipt_hex.clone() else {
                    self.violations
                        .push(format!("lease {id}: closed without a receipt"));
                    continue;
                };
                if b.receipt_hex.as_ref() != Some(&h) {
                    self.violations
                        .push(format!("lease {id}: the buyer holds another receipt"));
                    continue;
                }
                let pr = ProviderReceipt::from_canonical_bytes(&hex::decode(&h).unwrap()).unwrap();
                let r = pr.receipt();
                // Once the receipt is acknowledged, later changes (a late payment and its refund, a reorg)
                // reach the buyer as statuses again: both sides end with the same figures.
                if b.paid_sat != p.paid_sat || b.refunded_sat != p.refunded_sat {
                    self.violations.push(format!(
                        "lease {id}: closed, buyer paid/refunded {}/{} vs provider {}/{}",
                        b.paid_sat, b.refunded_sat, p.paid_sat, p.refunded_sat
                    ));
                }
                // The alert may be lost in a crash; the record's history keeps the refusal.
                let refused = b
                    .history
                    .iter()
                    .any(|h| h.detail.starts_with("receipt not countersigned"));
                if !refused {
                    if b.countersigned_hex.is_none() || p.countersigned_hex.is_none() {
                        self.violations.push(format!(
                            "lease {id}: receipt not countersigned on both sides (buyer {}, provider {})",
                            b.countersigned_hex.is_some(),
                            p.countersigned_hex.is_some()
                        ));
                    }
                } else {
                    // A refusal must have a reason that is true.
                    let sent: u64 = b.sent.iter().map(|s| s.amount_sat).sum();
                    let run = r.ended_at.saturating_sub(r.started_at);
                    let max = (run as u128 * b.price_sats_per_hour as u128).div_ceil(3600) as u64;
                    if r.paid_sats >= sent && r.net_sats() <= max {
                        self.violations.push(format!(
                            "lease {id}: the buyer refused a receipt that is true ({r:?}, sent {sent})"
                        ));
                    }
                }
            } else if b.paid_sat != p.paid_sat || b.refunded_sat != p.refunded_sat {
                self.violations.push(format!(
                    "lease {id}: buyer paid/refunded {}/{} vs provider {}/{}",
                    b.paid_sat, b.refunded_sat, p.paid_sat, p.refunded_sat
                ));
            }
        }
    }

    /// Stops faults and payments, confirms what is pending, and runs until nothing is left to do.
    pub fn settle(&mut self, max_steps: u32) {
        self.faults = Faults::default();
        self.crash_hook = None;
        self.silent_from = None;
        self.buyer_broke = false;
        self.mine();
        self.mine();
        for i in 0..max_steps {
            if i % 5 == 0 {
                self.mine();
            }
            self.step(if i < 50 { 30 } else { 300 });
            // A buyer's last slice may arrive as a lease ends: quiet only once every payment is deep enough
            // to be refunded, so money that came late has had its chance to go back.
            let depth = self
                .terms
                .refund_confirmations
                .max(self.terms.min_confirmations)
                .max(1);
            let deep = self
                .pays
                .iter()
                .filter(|p| !p.gone)
                .all(|p| p.height.is_some_and(|h| self.tip + 1 - h >= depth));
            let quiet = deep
                && self.ops.is_empty()
                && [Side::Provider, Side::Buyer]
                    .iter()
                    .all(|s| self.node(*s).mem.values().all(|l| !machine::wants_ticks(l)));
            if quiet {
                break;
            }
        }
        self.check_settled();
    }

    pub fn dump(&self) -> String {
        let mut s = format!("now={} tip={}\n", self.now - T0, self.tip);
        for id in self.lease_ids() {
            let p = &self.provider.store[&id];
            let b = &self.buyer.store[&id];
            s += &format!(
                "lease {}: provider {:?} paid {} refunded {} charged {}s cancelled {} may_exist {} stopped {} refunds {:?} written_off {} owed {} | buyer {:?} paid {} refunded {} | cloud {:?} run {}s\n",
                &id[..8], p.state, p.paid_sat, p.refunded_sat, p.charged_secs, p.cancelled,
                p.machine_may_exist, p.machine_stopped,
                p.refunds.iter().map(|r| (r.id, r.value_sat, r.tx.as_ref().map(|t| t.txid.clone()), r.broadcast)).collect::<Vec<_>>(),
                p.written_off_sat, p.owed_sat, b.state, b.paid_sat, b.refunded_sat,
                self.machines.get(&id).map(|m| m.state), self.run_secs(&id)
            );
            for h in p.history.iter().rev().take(12).rev() {
                s += &format!(
                    "    {:>6} {:?}: {}\n",
                    h.at.saturating_sub(T0),
                    h.state,
                    h.detail
                );
            }
        }
        s
    }
}

/// A buyer's lease the driver feeds its payments' confirmations to: live, and paid for by this node.
fn paying(l: &LeaseRecord) -> bool {
    !l.state.is_terminal() && !l.sent.is_empty()
}

/// Confirmed sats by the terms (independent of the machine's own function).
pub fn counted_confirmed(pays: &[PaymentOut], tip: u32, t: &Terms) -> u64 {
    pays.iter()
        .filter(|p| {
            p.height
                .is_some_and(|h| tip + 1 >= h && tip + 1 - h >= t.min_confirmations.max(1))
        })
        .map(|p| p.amount_sat)
        .sum()
}

/// Confirmed plus the zero-conf sats the policy allows.
pub fn counted_sat(pays: &[PaymentOut], tip: u32, t: &Terms) -> u64 {
    // Below the confirmations needed, a payment counts at once if small enough (and, in the mempool, not
    // signalling RBF), within one cap per lease: the wallet's rule.
    let mut zc = 0;
    for p in pays
        .iter()
        .filter(|p| p.confirmations(tip) < t.min_confirmations.max(1))
    {
        if (p.height.is_some() || !p.rbf)
            && p.amount_sat <= t.zero_conf_max_sat
            && zc + p.amount_sat <= t.zero_conf_max_sat
        {
            zc += p.amount_sat;
        }
    }
    counted_confirmed(pays, tip, t) + zc
}

pub fn min_start_of(price: u64, min_lease_secs: u32) -> u64 {
    ((price as u128 * min_lease_secs as u128).div_ceil(3600) as u64).max(1)
}

// ------------------------------------------------------------------------------------------ schedules

#[derive(Default)]
pub struct Stats {
    pub schedules: u64,
    pub steps: u64,
    /// Coverage of the buyer's slices: leases with a budget, slices decided (after the first, i.e. top-ups),
    /// slices withheld (alerts), and schedules where the provider went silent.
    pub budgets: u64,
    pub top_up_slices: u64,
    pub withheld: u64,
    pub silences: u64,
}

/// One random schedule from `seed`; Err carries the first violated invariant and the world's state.
pub fn run_schedule(seed: u64, stats: &mut Stats) -> Result<(), String> {
    let mut r = Rng(seed ^ 0x05EE_D0F1_EA5E);
    let mut terms = sim_terms();
    terms.min_confirmations = r.range(1, 2) as u32;
    terms.zero_conf_max_sat = if r.chance(400) { r.range(500, 5000) } else { 0 };
    let mut w = World::new(seed, terms);
    // Some clouds give a machine more addresses than a notice carries, some a host name too long for one.
    let many = r.range(1, 12);
    w.machine_addresses = (0..many)
        .map(|i| {
            if r.chance(100) {
                format!("{}.example.net", "h".repeat(60))
            } else {
                format!("10.0.{}.{}", i / 250, i % 250 + 2)
            }
        })
        .collect();
    w.faults = Faults::schedule();
    let n = w.rng.range(1, 3);
    let mut ids = Vec::new();
    for k in 0..n {
        let price = w.rng.range(1, 10) * 3600;
        let min_lease_secs = w.rng.range(60, 300) as u32;
        let refund_address = (!w.rng.chance(150)).then(|| format!("bcrt1qrefund{k}"));
        let invoice_ttl = w.rng.range(300, 1800);
        // A third of the buyers pay in slices: 1 to 5 slices, each at least the offer's shortest lease.
        let budget = w.rng.chance(330).then(|| {
            let slice_secs = w.rng.range(min_lease_secs as u64, 3600);
            let slice_sat = (price * slice_secs).div_ceil(3600);
            let slices = w.rng.range(1, 5);
            Budget {
                total_sat: slice_sat * slices - w.rng.below(slice_sat / 2),
                slice_sat,
                slice_secs,
            }
        });
        ids.push(w.open_lease(LeaseSpec {
            price,
            min_lease_secs,
            refund_address,
            invoice_ttl,
            offer_id: k + 1,
            budget,
        }));
    }
    // Some providers go silent for a while (the buyer hears nothing, and nothing it says arrives).
    let silence = w
        .rng
        .chance(200)
        .then(|| (w.rng.range(0, 4 * 3600), w.rng.range(600, 6 * 3600)));
    let steps = w.rng.range(20, 120);
    for _ in 0..steps {
        let dt = if w.rng.chance(40) {
            w.rng.range(3600, 6 * 3600)
        } else {
            w.rng.range(0, 90)
        };
        w.now += dt;
        if let Some((from, len)) = silence {
            w.silent_from = (w.now >= T0 + from && w.now < T0 + from + len).then_some(T0 + from);
        }
        // The world's events.
        let id = ids[w.rng.below(ids.len() as u64) as usize].clone();
        let rec = w.provider.store[&id].clone();
        let ms = machine::min_start(&rec);
        if w.rng.chance(250) {
            let amount = match w.rng.below(6) {
                0 => ms + w.rng.below(3 * ms),
                1 => ms.max(1) * w.rng.range(1, 2),
                2 => rec.price_sats_per_hour * w.rng.range(30, 1800) / 3600 + 1,
                3 => w.rng.range(100, 700),
                4 => w.rng.range(600, 3000),
                _ => w.rng.range(20_000, 100_000),
            };
            let rbf = w.rng.chance(300);
            let tell = !w.buyer.store[&id].state.is_terminal() && !w.rng.chance(100);
            w.pay(&id, amount, rbf, tell);
        }
        if w.rng.chance(300) {
            w.mine_some(800);
        }
        if w.rng.chance(40) && w.tip > 100 {
            // A payment that counted and was then given back in part must not vanish (money gone is not
            // the machine's to prevent); otherwise the reorged payments may vanish (double spend).
            let top = w.tip;
            let risky = w.pays.iter().filter(|p| p.height == Some(top)).any(|p| {
                let l = &w.provider.store[&p.lease];
                !l.refunds.is_empty() || l.written_off_sat > 0 || l.owed_sat > 0
            });
            let vanish = !risky && w.rng.chance(400);
            w.reorg(vanish);
        }
        if w.rng.chance(50) {
            let cands: Vec<String> = w
                .pays
                .iter()
                .filter(|p| p.height.is_none() && !p.ever_confirmed && !p.gone)
                .map(|p| p.txid.clone())
                .collect();
            if !cands.is_empty() {
                let t = cands[w.rng.below(cands.len() as u64) as usize].clone();
                w.replace(&t);
            }
        }
        if w.rng.chance(30) {
            w.input(Side::Buyer, &id, Input::Cancel);
        }
        if w.rng.chance(15) {
            w.crash(Side::Provider);
        }
        if w.rng.chance(10) {
            w.crash(Side::Buyer);
        }
        w.steps += 1;
        w.run_ops();
        w.tick_all();
        w.run_ops();
        w.check();
        if !w.violations.is_empty() {
            break;
        }
    }
    if w.violations.is_empty() {
        w.settle(3000);
    }
    stats.schedules += 1;
    stats.steps += w.steps;
    stats.budgets += ids
        .iter()
        .filter(|id| w.buyer.store[*id].budget.is_some())
        .count() as u64;
    stats.top_up_slices += w.slice_intents.iter().filter(|(_, n, _)| *n > 1).count() as u64;
    stats.withheld += w
        .alerts
        .iter()
        .filter(|(_, a)| matches!(a, Alert::SliceWithheld { .. }))
        .count() as u64;
    stats.silences += silence.is_some() as u64;
    if w.violations.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{}", w.violations.join("\n"), w.dump()))
    }
}
