//! What the decoder targets share: a small frame layout drawn from an input's first
//! three bytes, so that one input is a layout and a stream together.

use core_rs::codec::Layout;

/// The layout the first three bytes of `data` pick, its third byte (bit 3 and up are
/// left to the target), and the rest of `data`: rows and columns 1 to 64, 1 or 3
/// samples (bit 0), 8 or 16 bits allocated and stored (bit 1), signed (bit 2).
#[must_use]
pub fn small_layout(data: &[u8]) -> Option<(Layout, u8, &[u8])> {
    let (head, stream) = data.split_first_chunk::<3>()?;
    let bits_allocated = if head[2] & 2 == 0 { 8 } else { 16 };
    let layout = Layout {
        rows: u32::from(head[0] % 64) + 1,
        columns: u32::from(head[1] % 64) + 1,
        components: if head[2] & 1 == 0 { 1 } else { 3 },
        bits_allocated,
        bits_stored: bits_allocated,
        signed: head[2] & 4 != 0,
    };
    Some((layout, head[2], stream))
}
