//! Any bytes as an A-ASSOCIATE-RQ: the decoder never panics, and what it accepts
//! can be answered: the acceptance it encodes is a well-formed A-ASSOCIATE-AC.
#![no_main]

use core_rs::associate::{decode_associate_rq, encode_associate_ac, ContextResult, Implementation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = decode_associate_rq(data) else {
        return;
    };
    let results: Vec<ContextResult> = request
        .contexts
        .iter()
        .map(|c| ContextResult {
            id: c.id,
            result: 0,
            transfer_syntax: c.transfer_syntaxes.first().cloned().unwrap_or_default(),
        })
        .collect();
    let us = Implementation {
        max_pdu: 16384,
        class_uid: "1.2.3",
        version_name: "FUZZ",
    };
    let ac = encode_associate_ac(
        &request.called_ae,
        &request.calling_ae,
        &results,
        &us,
        &request.roles,
        &request.extended,
    );
    let length = u32::from_be_bytes([ac[2], ac[3], ac[4], ac[5]]) as usize;
    assert_eq!(ac.len(), 6 + length);
});
