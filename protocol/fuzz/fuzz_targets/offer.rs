#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::validate::{validate_offer, MAX_HOURS};
use xov_protocol::{Chain, Offer, PoolCharter, PoolRules};
use xov_protocol_fuzz::{decode_canonical, NOW};

fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode_canonical::<Offer>(data) else {
        return;
    };
    let _ = validate_offer(&msg, NOW, None);
    // Against a charter for the offer's own author, so the charter checks run past the pool id comparison only
    // when the fuzzer reproduces the pool id; mostly this exercises `WrongPool`. Then against the same charter
    // on the offer's own chain and on another one (`ChainMismatch` once the pool id matches).
    let mut charter = PoolCharter {
        name: "fuzz".into(),
        founder: msg.body().provider,
        created_at: NOW,
        rules: PoolRules::default(),
        chain: msg.body().chain,
    };
    let _ = validate_offer(&msg, NOW, Some(&charter));
    charter.chain = if msg.body().chain == Chain::REGTEST {
        Chain::SIGNET
    } else {
        Chain::REGTEST
    };
    let _ = validate_offer(&msg, NOW, Some(&charter));
    let _ = validate_offer(&msg, msg.body().created_at, None);
    // Metering is only ever asked about lease lengths up to MAX_HOURS (and the offer's own maximum). Beyond
    // about 2^54 s at the highest prices, `cost_msat` overflows u128.
    let _ = msg.body().cost_msat(MAX_HOURS as u64 * 3600);
    let _ = msg.body().cost_msat(msg.body().max_lease_secs as u64);
});
