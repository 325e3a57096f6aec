#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::lease::ALL_EVENTS;
use xov_protocol::validate::validate_notice;
use xov_protocol::{LeaseNotice, NoticeBody};
use xov_protocol_fuzz::{decode_canonical, NOW};

// Beyond decoding: validation must not panic, nested receipts re-encode canonically, and a status's state is
// driven through every event.
fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode_canonical::<LeaseNotice>(data) else {
        return;
    };
    let _ = validate_notice(&msg, NOW);
    match &msg.body().body {
        NoticeBody::Status(status) => {
            let state = status.state;
            for event in ALL_EVENTS {
                let next = state.apply(event);
                if state.is_terminal() {
                    assert!(next.is_err(), "terminal state {state:?} accepted {event:?}");
                }
            }
        }
        NoticeBody::Receipt(receipt) => {
            let _ = receipt.verify();
        }
        NoticeBody::Countersigned(receipt) => {
            let _ = receipt.verify();
            let _ = receipt.message_id();
        }
        NoticeBody::Cancel | NoticeBody::StatusRequest => {}
    }
});
