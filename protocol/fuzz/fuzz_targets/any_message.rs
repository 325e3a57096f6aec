#![no_main]

use libfuzzer_sys::fuzz_target;
use xov_protocol::validate::{
    validate_bid, validate_bond_proof, validate_charter, validate_invoice, validate_load_report,
    validate_notice, validate_offer, validate_order, validate_receipt, validate_withdrawal,
};
use xov_protocol::AnyMessage;
use xov_protocol_fuzz::NOW;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = AnyMessage::from_bytes(data) else {
        return;
    };
    assert_eq!(
        msg.to_bytes(),
        data,
        "accepted input does not re-encode to itself"
    );
    assert_eq!(msg.kind() as u8, data[1]);
    assert!(data.len() <= msg.kind().max_size());
    assert_eq!(AnyMessage::from_bytes(&msg.to_bytes()).as_ref(), Ok(&msg));
    match &msg {
        AnyMessage::Offer(m) => {
            let _ = m.id();
            let _ = m.verify();
            let _ = validate_offer(m, NOW, None);
        }
        AnyMessage::OfferWithdrawal(m) => {
            let _ = m.id();
            let _ = m.verify();
            let _ = validate_withdrawal(m, NOW, None);
        }
        AnyMessage::Bid(m) => {
            let _ = m.id();
            let _ = m.verify();
            let _ = validate_bid(m, NOW);
        }
        AnyMessage::PoolCharter(m) => {
            let _ = m.id();
            let _ = m.verify();
            let _ = validate_charter(m, NOW);
        }
        AnyMessage::Order(m) => {
            let _ = m.id();
            let _ = m.verify();
            let _ = validate_order(m, NOW);
        }
        AnyMessage::Invoice(m) => {
            let _ = m.id();
            let _ = m.verify();
            let _ = validate_invoice(m, NOW);
        }
        AnyMessage::LeaseNotice(m) => {
            let _ = m.id();
            let _ = m.verify();
            let _ = validate_notice(m, NOW);
        }
        AnyMessage::Receipt(m) => {
            let _ = m.id();
            let _ = m.message_id();
            let _ = m.verify();
            let _ = validate_receipt(m, NOW);
        }
        AnyMessage::BondProof(m) => {
            let _ = m.id();
            let _ = m.verify();
            let _ = validate_bond_proof(m, NOW);
        }
        AnyMessage::LoadReport(m) => {
            let _ = m.id();
            let _ = m.verify();
            let _ = validate_load_report(m, NOW);
        }
    }
});
