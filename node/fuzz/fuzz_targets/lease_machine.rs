#![no_main]

//! The lease machine driven by a script: the input chooses the terms, the faults, the leases and then the
//! world's events one by one, and the lease simulator's world (`xov_node::sim`, the same one tests/lease_sim.rs
//! draws random schedules for) carries them out. Both nodes run the pure machine (`lease::machine::handle`
//! through the driver's `apply_input`) from fresh records: a provider and a buyer record per lease, each input
//! decided, persisted (the returned record replaces the stored one; writes may fail) and its actions run in
//! the world; crashes drop a node's memory and in-flight actions and restart it from its last persisted
//! records, as the driver restarts. After every step the simulator's invariants are checked (`World::check`:
//! received = earned + refunded + written off + owed, launches only when paid, budgets never overspent, ...)
//! and, at the end, once everything settled (`World::check_settled`). A violation fails the run.
//!
//! Input (all integers big-endian; a script that runs out of bytes ends there, then settles):
//!
//! | header byte  | meaning                                                                        |
//! |--------------|--------------------------------------------------------------------------------|
//! | terms        | bit 0: two confirmations (else one); bit 1: zero-conf payments up to `2000` sat |
//! | faults       | 0: a perfect world; else the simulator's random faults, seeded by this byte     |
//! | leases       | 1 + leases % 3 leases, each 5 bytes: price, shortest lease, refund address, invoice lifetime, budget |
//!
//! Then steps, each an opcode byte (`% 12`) and its operands:
//!
//! | op | operands        | event                                                                |
//! |----|-----------------|----------------------------------------------------------------------|
//! | 0  | secs u8         | the clock advances `secs`                                            |
//! | 1  | mins u8         | the clock advances `mins + 1` minutes                                |
//! | 2  | lease u8, kind u8, n u16 | the buyer pays the lease's address (kind: amount, RBF, told; at most 200,000 sat per lease in all) |
//! | 3  | per-mille u8    | a block confirms each unconfirmed payment with probability `4 * u8 / 1000` |
//! | 4  | vanish u8       | the last block is reorged away (its payments vanish if `vanish` is odd and nothing was refunded from them) |
//! | 5  | which u8        | an unconfirmed, never-confirmed payment is replaced                   |
//! | 6  | lease u8        | the buyer cancels                                                    |
//! | 7, 8 | -             | the provider (7) or the buyer (8) crashes and restarts               |
//! | 9  | -               | the provider goes silent, or speaks again                            |
//! | 10 | -               | the buyer's wallet runs dry, or has funds again                      |
//! | 11 | -               | nothing (a tick)                                                     |
//!
//! After each step the world runs what is due, ticks every lease and runs what is due again (as the
//! simulator's schedules do).

use libfuzzer_sys::fuzz_target;
use xov_node::lease::machine::{self, Input};
use xov_node::lease::record::Budget;
use xov_node::sim::{sim_terms, Faults, LeaseSpec, Side, World};

/// Steps per script: enough for several lease lifetimes, few enough to keep a run fast.
const MAX_STEPS: usize = 256;
/// Most sats paid to one lease's address, all payments together: at the lowest price (3,600 sat an hour) that
/// buys 55 hours, well within what `World::settle` runs (about 245 simulated hours), so every lease can end.
/// (The simulator's schedules pay at most 100,000 sat at a time.)
const MAX_PAID_PER_LEASE: u64 = 200_000;

struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
}

fn fail(w: &World, when: &str) -> ! {
    panic!(
        "invariant violated {when}:\n{}\n{}",
        w.violations.join("\n"),
        w.dump()
    );
}

fuzz_target!(|data: &[u8]| {
    let mut s = Script(data);
    let (Some(terms_bits), Some(fault_seed), Some(leases)) = (s.u8(), s.u8(), s.u8()) else {
        return;
    };
    let mut terms = sim_terms();
    terms.min_confirmations = 1 + (terms_bits & 1) as u32;
    terms.zero_conf_max_sat = if terms_bits & 2 != 0 { 2000 } else { 0 };
    let mut w = World::new(fault_seed as u64, terms);
    if fault_seed != 0 {
        // The simulator's schedules' faults (tests/lease_sim.rs), drawn from the world's seeded generator.
        w.faults = Faults::schedule();
    }
    let mut ids = Vec::new();
    for k in 0..1 + leases % 3 {
        let (Some(p), Some(m), Some(r), Some(t), Some(b)) =
            (s.u8(), s.u8(), s.u8(), s.u8(), s.u8())
        else {
            return;
        };
        let price = (1 + p as u64 % 10) * 3600;
        let min_lease_secs = 60 + m as u32;
        // A budget of 1 to 5 slices, each at least the shortest lease (as the simulator draws them).
        let budget = (b & 1 != 0).then(|| {
            let slice_secs = (min_lease_secs as u64).max(600 * (1 + (b as u64 >> 1) % 6));
            let slice_sat = (price * slice_secs).div_ceil(3600);
            let slices = 1 + (b as u64 >> 4) % 5;
            Budget {
                total_sat: slice_sat * slices - (slice_sat / 2) * (b as u64 >> 7),
                slice_sat,
                slice_secs,
            }
        });
        ids.push(w.open_lease(LeaseSpec {
            price,
            min_lease_secs,
            refund_address: (r % 8 != 0).then(|| format!("bcrt1qrefund{k}")),
            invoice_ttl: 300 + 6 * t as u64,
            offer_id: k as u64 + 1,
            budget,
        }));
    }
    let lease = |i: u8| ids[i as usize % ids.len()].clone();
    for _ in 0..MAX_STEPS {
        let Some(op) = s.u8() else { break };
        match op % 12 {
            0 => {
                let Some(secs) = s.u8() else { break };
                w.now += secs as u64;
            }
            1 => {
                let Some(mins) = s.u8() else { break };
                w.now += (mins as u64 + 1) * 60;
            }
            2 => {
                let (Some(i), Some(kind), Some(n)) = (s.u8(), s.u8(), s.u16()) else {
                    break;
                };
                let id = lease(i);
                let rec = w.prov(&id).clone();
                let ms = machine::min_start(&rec).max(1);
                let n = n as u64;
                let amount = match kind % 4 {
                    0 => ms + n,
                    1 => ms * (1 + n % 3),
                    2 => rec.price_sats_per_hour * (30 + n % 1800) / 3600 + 1,
                    _ => n * 16,
                }
                .max(100);
                let paid: u64 = w
                    .pays
                    .iter()
                    .filter(|p| p.lease == id)
                    .map(|p| p.amount)
                    .sum();
                if paid + amount > MAX_PAID_PER_LEASE {
                    continue;
                }
                let rbf = kind & 4 != 0;
                // The buyer's node pays only its live leases; otherwise the payment came from elsewhere.
                let tell = kind & 8 == 0 && !w.buy(&id).state.is_terminal();
                w.pay(&id, amount, rbf, tell);
            }
            3 => {
                let Some(p) = s.u8() else { break };
                w.mine_some((p as u32 * 4).min(1000));
            }
            4 => {
                let Some(v) = s.u8() else { break };
                if w.tip > 100 {
                    // As the simulator: money that counted and was then given back in part does not vanish
                    // (money gone is not the machine's to prevent).
                    let top = w.tip;
                    let risky = w.pays.iter().filter(|p| p.height == Some(top)).any(|p| {
                        let l = w.prov(&p.lease);
                        !l.refunds.is_empty() || l.written_off_sat > 0 || l.owed_sat > 0
                    });
                    w.reorg(v & 1 != 0 && !risky);
                }
            }
            5 => {
                let Some(i) = s.u8() else { break };
                let cands: Vec<String> = w
                    .pays
                    .iter()
                    .filter(|p| p.height.is_none() && !p.ever_confirmed && !p.gone)
                    .map(|p| p.txid.clone())
                    .collect();
                if !cands.is_empty() {
                    let t = cands[i as usize % cands.len()].clone();
                    w.replace(&t);
                }
            }
            6 => {
                let Some(i) = s.u8() else { break };
                let id = lease(i);
                w.input(Side::Buyer, &id, Input::Cancel);
            }
            7 => w.crash(Side::Provider),
            8 => w.crash(Side::Buyer),
            9 => w.silent_from = w.silent_from.is_none().then_some(w.now),
            10 => w.buyer_broke = !w.buyer_broke,
            _ => {}
        }
        w.steps += 1;
        w.run_ops();
        w.tick_all();
        w.run_ops();
        w.check();
        if !w.violations.is_empty() {
            fail(&w, &format!("at step {}", w.steps));
        }
    }
    w.settle(3000);
    if !w.violations.is_empty() {
        fail(&w, "once settled");
    }
});
