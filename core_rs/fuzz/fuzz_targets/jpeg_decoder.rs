//! Any bytes as a JPEG frame of any small layout, as coded or as a YBR dataset:
//! libjpeg-turbo through our wrapper never crashes, and what comes back is exactly
//! one frame of that layout (the dataset sizes it; a stream that says otherwise is
//! refused, and so is one that only warns, such as a cut scan).
#![no_main]

use core_rs::codec::{jpeg_decode, jpeg_decode_ybr};
use core_rs_fuzz::small_layout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((layout, flags, stream)) = small_layout(data) else {
        return;
    };
    let decode = if flags & 8 == 0 {
        jpeg_decode
    } else {
        jpeg_decode_ybr
    };
    if let Ok(frame) = decode(stream, &layout) {
        assert_eq!(frame.len(), layout.frame_bytes());
    }
});
