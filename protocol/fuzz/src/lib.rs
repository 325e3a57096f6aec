//! Helpers shared by the fuzz targets in `fuzz_targets/`.

use xov_protocol::{AnyMessage, Message, Signed};

/// The fixed clock the targets validate against (the same instant the protocol tests use).
pub const NOW: u64 = 1_800_000_000;

/// Decodes `data` as a `Signed<T>`. When decoding succeeds, asserts what canonical encoding promises: the value
/// re-encodes to exactly the input, decodes again to the same value, and `AnyMessage` agrees. Also checks that
/// computing the id and verifying the signature do not panic.
pub fn decode_canonical<T>(data: &[u8]) -> Option<Signed<T>>
where
    T: Message + PartialEq + std::fmt::Debug,
{
    let msg = Signed::<T>::from_bytes(data).ok()?;
    let bytes = msg.to_bytes();
    assert_eq!(bytes, data, "accepted input does not re-encode to itself");
    assert_eq!(Signed::<T>::from_bytes(&bytes).as_ref(), Ok(&msg));
    assert!(bytes.len() <= T::KIND.max_size());
    let any = AnyMessage::from_bytes(data).expect("AnyMessage refused what Signed<T> accepted");
    assert_eq!(any.kind(), T::KIND);
    let _ = msg.id();
    let _ = msg.verify();
    Some(msg)
}
