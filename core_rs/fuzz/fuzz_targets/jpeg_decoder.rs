//! Any bytes as a JPEG frame of any small layout, as coded or as a YBR dataset:
//! libjpeg-turbo through our wrapper never crashes, and what comes back is exactly
//! one frame of that layout (the dataset sizes it; a stream that says otherwise is
//! refused, and so is one that only warns, such as a cut scan).
#![no_main]

use core_rs::codec::{jpeg_decode, jpeg_decode_ybr, Layout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, stream)) = data.split_first_chunk::<3>() else {
        return;
    };
    let bits_allocated = if head[2] & 2 == 0 { 8 } else { 16 };
    let layout = Layout {
        rows: u32::from(head[0] % 64) + 1,
        columns: u32::from(head[1] % 64) + 1,
        components: if head[2] & 1 == 0 { 1 } else { 3 },
        bits_allocated,
        bits_stored: bits_allocated,
        signed: head[2] & 4 != 0,
    };
    let decode = if head[2] & 8 == 0 {
        jpeg_decode
    } else {
        jpeg_decode_ybr
    };
    if let Ok(frame) = decode(stream, &layout) {
        assert_eq!(frame.len(), layout.frame_bytes());
    }
});
