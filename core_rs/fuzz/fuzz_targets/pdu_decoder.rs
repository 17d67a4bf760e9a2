//! Any byte stream: the decoder never panics, and whatever it decodes survives
//! read -> write -> read unchanged. The first byte picks a split point, so partial
//! feeds are covered too.
#![no_main]

use core_rs::pdu::{decode_all, encode_all, Decoder, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_pdata: 64 * 1024,
        max_control: 64 * 1024,
    };
    if let Ok(units) = decode_all(data, limits) {
        let again = decode_all(&encode_all(&units), limits).expect("re-encoded stream decodes");
        assert_eq!(again, units);
    }
    if let Some((&split, rest)) = data.split_first() {
        let at = usize::from(split).min(rest.len());
        let mut decoder = Decoder::new(limits);
        let _ = decoder
            .feed(&rest[..at], |_| Ok(()))
            .and_then(|()| decoder.feed(&rest[at..], |_| Ok(())));
    }
});
