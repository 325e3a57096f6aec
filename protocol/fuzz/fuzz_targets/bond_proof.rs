#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::validate::validate_bond_proof;
use xov_protocol::BondProof;
use xov_protocol_fuzz::{decode_canonical, NOW};

fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode_canonical::<BondProof>(data) else {
        return;
    };
    let _ = validate_bond_proof(&msg, NOW);
    let b = msg.body();
    let _ = b.binding_message();
    for height in [0, b.locktime.saturating_sub(1), b.locktime, u32::MAX] {
        assert!(b.value_at(height) <= b.amount_sats.saturating_mul(4));
    }
    assert_eq!(b.value_at(b.locktime), 0);
});
