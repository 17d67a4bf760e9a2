//! Any bytes as an RLE frame of any layout: the decoder never panics, and what it
//! returns is exactly one frame of that layout (the dataset sizes it, not the stream).
#![no_main]

use core_rs::codec::{rle_decode, Layout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, stream)) = data.split_first_chunk::<3>() else {
        return;
    };
    let layout = Layout {
        rows: u32::from(head[0] % 64) + 1,
        columns: u32::from(head[1] % 64) + 1,
        components: if head[2] & 1 == 0 { 1 } else { 3 },
        bits_allocated: [8, 16, 32][usize::from(head[2] >> 1) % 3],
        bits_stored: 8,
        signed: false,
    };
    if let Ok(frame) = rle_decode(stream, &layout) {
        assert_eq!(frame.len(), layout.frame_bytes());
    }
});
