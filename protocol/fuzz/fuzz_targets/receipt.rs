#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::validate::validate_receipt;
use xov_protocol::{AnyMessage, Kind, SignedReceipt, TrustLedger};
use xov_protocol_fuzz::NOW;

// Receipts have their own dual-signed form, so `decode_canonical` (generic over `Signed<T>`) does not apply;
// the same promises are checked here, then the receipt goes through the trust ledger.
fuzz_target!(|data: &[u8]| {
    let Ok(msg) = SignedReceipt::from_bytes(data) else {
        return;
    };
    let bytes = msg.to_bytes();
    assert_eq!(bytes, data, "accepted input does not re-encode to itself");
    assert_eq!(SignedReceipt::from_bytes(&bytes).as_ref(), Ok(&msg));
    assert!(bytes.len() <= Kind::Receipt.max_size());
    let any = AnyMessage::from_bytes(data).expect("AnyMessage refused what SignedReceipt accepted");
    assert_eq!(any.kind(), Kind::Receipt);
    let valid = validate_receipt(&msg, NOW).is_ok();
    let mut ledger = TrustLedger::new();
    assert_eq!(ledger.add_receipt(msg.clone(), NOW).is_ok(), valid);
    let r = msg.receipt();
    for node in [r.provider, r.buyer] {
        let report = ledger.score(&node, NOW);
        assert!(report.score <= xov_protocol::trust::UNBONDED_CAP_SATS);
    }
});
