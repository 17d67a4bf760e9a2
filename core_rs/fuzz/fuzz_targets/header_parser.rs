//! Any dataset bytes in any transfer syntax: the key-attribute parser never
//! panics and never returns a value longer than its limit.
#![no_main]

use core_rs::dataset::{key_attributes, Syntax};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let syntax = match which % 4 {
        0 => Syntax::ImplicitLittle,
        1 => Syntax::ExplicitLittle,
        2 => Syntax::ExplicitBig,
        _ => Syntax::DeflatedExplicitLittle,
    };
    for (_, value) in key_attributes(rest, syntax) {
        assert!(value.len() <= 1024);
    }
});
