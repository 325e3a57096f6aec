#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::validate::validate_order;
use xov_protocol::Order;
use xov_protocol_fuzz::{decode_canonical, NOW};

fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode_canonical::<Order>(data) else {
        return;
    };
    let _ = validate_order(&msg, NOW);
});
