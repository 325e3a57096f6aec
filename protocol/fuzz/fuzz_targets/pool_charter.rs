#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::validate::validate_charter;
use xov_protocol::PoolCharter;
use xov_protocol_fuzz::{decode_canonical, NOW};

fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode_canonical::<PoolCharter>(data) else {
        return;
    };
    let _ = validate_charter(&msg, NOW);
    let charter = msg.body();
    let _ = charter.pool_id();
    let _ = charter.may_publish(&charter.founder);
});
