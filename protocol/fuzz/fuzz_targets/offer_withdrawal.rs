#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::validate::validate_withdrawal;
use xov_protocol::OfferWithdrawal;
use xov_protocol_fuzz::{decode_canonical, NOW};

fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode_canonical::<OfferWithdrawal>(data) else {
        return;
    };
    let _ = validate_withdrawal(&msg, NOW, None);
    let _ = validate_withdrawal(&msg, msg.body().created_at, None);
});
