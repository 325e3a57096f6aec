#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::lease::ALL_EVENTS;
use xov_protocol::LeaseNotice;
use xov_protocol_fuzz::decode_canonical;

// There is no validate_* for lease notices; beyond decoding, drive the decoded state through every event.
fuzz_target!(|data: &[u8]| {
    let Some(msg) = decode_canonical::<LeaseNotice>(data) else {
        return;
    };
    let state = msg.body().state;
    for event in ALL_EVENTS {
        let next = state.apply(event);
        if state.is_terminal() {
            assert!(next.is_err(), "terminal state {state:?} accepted {event:?}");
        }
    }
});
