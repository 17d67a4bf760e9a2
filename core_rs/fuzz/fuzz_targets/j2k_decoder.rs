//! Any bytes as a JPEG 2000 / HTJ2K frame of any small layout: OpenJPEG through our
//! wrapper never crashes, and what comes back is exactly one frame of that layout
//! (the dataset sizes it; a codestream that says otherwise is refused).
#![no_main]

use core_rs::codec::j2k_decode;
use core_rs_fuzz::small_layout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((layout, _, stream)) = small_layout(data) else {
        return;
    };
    if let Ok(frame) = j2k_decode(stream, &layout) {
        assert_eq!(frame.len(), layout.frame_bytes());
    }
});
