//! Any frame in any layout the codecs accept: a verified JPEG-LS or HTJ2K encode
//! either refuses it with a reason or returns a stream that decodes back to exactly
//! that frame. Never a panic, never a silent difference.
#![no_main]

use core_rs::codec::{
    htj2k_encode_verified, j2k_decode, jpegls_decode, jpegls_encode_verified, CodecError, Layout,
};
use libfuzzer_sys::fuzz_target;

type Codec = fn(&[u8], &Layout) -> Result<Vec<u8>, CodecError>;

fuzz_target!(|data: &[u8]| {
    let Some((head, pixels)) = data.split_first_chunk::<4>() else {
        return;
    };
    let bits_allocated = if head[0] & 1 == 0 { 8 } else { 16 };
    let components = if head[0] & 2 == 0 { 1 } else { 3 };
    let layout = Layout {
        rows: u32::from(head[1] % 32) + 1,
        columns: u32::from(head[2] % 32) + 1,
        components,
        bits_allocated,
        bits_stored: (head[3] % bits_allocated) + 1,
        signed: head[0] & 4 != 0,
    };
    let size = layout.frame_bytes();
    if pixels.len() < size {
        return;
    }
    let frame = &pixels[..size];
    let (encode, decode): (Codec, Codec) = if head[0] & 8 == 0 {
        (jpegls_encode_verified, jpegls_decode)
    } else {
        (htj2k_encode_verified, j2k_decode)
    };
    match encode(frame, &layout) {
        Ok(encoded) => assert_eq!(decode(&encoded, &layout).unwrap(), frame),
        Err(CodecError::Unsupported(_)) => {}
        Err(other) => panic!("{layout:?}: {other}"),
    }
});
