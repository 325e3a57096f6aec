#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::validate::validate_bid;
use xov_protocol::Bid;
use xov_protocol_fuzz::{decode_canonical, NOW};

fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode_canonical::<Bid>(data) else {
        return;
    };
    let _ = validate_bid(&msg, NOW);
    let _ = validate_bid(&msg, msg.body().created_at);
});
