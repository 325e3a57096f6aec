#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::validate::validate_load_report;
use xov_protocol::{LoadReport, PoolLoad};
use xov_protocol_fuzz::{decode_canonical, NOW};

fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode_canonical::<LoadReport>(data) else {
        return;
    };
    let _ = validate_load_report(&msg, NOW);
    let mut load = PoolLoad::default();
    assert!(load.observe(&msg));
    assert!(!load.observe(&msg), "the same report twice is not newer");
    let b = msg.body();
    let caps = [(
        b.provider,
        xov_protocol::LoadCap {
            running_leases: u64::MAX,
            running_sats_per_hour: u64::MAX,
        },
    )]
    .into_iter()
    .collect();
    let total = load.total(&b.pool, b.at.saturating_sub(1), &caps);
    assert_eq!(total.running_sats_per_hour, b.running_sats_per_hour);
});
