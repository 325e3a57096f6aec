#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::validate::validate_invoice;
use xov_protocol::Invoice;
use xov_protocol_fuzz::{decode_canonical, NOW};

fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode_canonical::<Invoice>(data) else {
        return;
    };
    let _ = validate_invoice(&msg, NOW);
    let _ = validate_invoice(&msg, msg.body().created_at);
});
