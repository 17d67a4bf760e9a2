//! Lossless HTJ2K (ISO/IEC 15444-15) encoding through `openjph-core`, a pure-Rust
//! port of `OpenJPH` (decision 0020): no C++ to build and no `unsafe` here. A young
//! crate, vendored with a fix (core_rs/vendor/openjph-core/PATCHED.md): a panic
//! inside it is caught and becomes an error, and every frame it makes is decoded
//! again by `OpenJPEG`, an independent implementation, before use.
//!
//! The codestream is one tile, reversible 5/3 wavelet, no colour transform (so an
//! RGB or `YBR_FULL` dataset keeps its Photometric Interpretation), 64 x 64 blocks.

use std::panic::{catch_unwind, AssertUnwindSafe};

use openjph_core::codestream::Codestream;
use openjph_core::file::MemOutfile;
use openjph_core::types::{Point, Size};

use super::{CodecError, Layout};

/// Lossless HTJ2K of one frame of `bits_stored` samples as the codec sees them
/// (masked: the bits above Bits Stored are zero), interleaved, little-endian.
pub fn encode(samples: &[u8], layout: &Layout, levels: u32) -> Result<Vec<u8>, CodecError> {
    let run = catch_unwind(AssertUnwindSafe(|| encode_frame(samples, layout, levels)));
    run.unwrap_or_else(|_| Err(CodecError::Corrupt("the HTJ2K encoder panicked".into())))
}

fn encode_frame(samples: &[u8], layout: &Layout, levels: u32) -> Result<Vec<u8>, CodecError> {
    let failed = |e: openjph_core::OjphError| CodecError::Corrupt(format!("HTJ2K encode: {e}"));
    let (width, height) = (layout.columns, layout.rows);
    let components = u32::from(layout.components);
    let mut cs = Codestream::new();
    let siz = cs.access_siz_mut();
    siz.set_image_extent(Point::new(width, height));
    siz.set_tile_size(Size::new(width, height));
    siz.set_num_components(components);
    for c in 0..components {
        siz.set_comp_info(
            c,
            Point::new(1, 1),
            u32::from(layout.bits_stored),
            layout.signed,
        );
    }
    let cod = cs.access_cod_mut();
    cod.set_num_decomposition(levels);
    cod.set_reversible(true);
    cod.set_color_transform(false);
    cs.set_planar(0);
    let mut out = MemOutfile::with_capacity(samples.len() / 2);
    cs.write_headers(&mut out, &[]).map_err(failed)?;
    let per_row = layout.columns as usize * usize::from(layout.components);
    let mut line = vec![0i32; layout.columns as usize];
    for row in 0..layout.rows as usize {
        for c in 0..usize::from(layout.components) {
            for (x, value) in line.iter_mut().enumerate() {
                let n = row * per_row + x * usize::from(layout.components) + c;
                *value = sample(samples, n, layout);
            }
            cs.exchange(&line, c as u32).map_err(failed)?;
        }
    }
    cs.flush(&mut out).map_err(failed)?;
    Ok(out.get_data().to_vec())
}

/// Sample `n` as a number: the low `bits_stored` bits, two's complement when signed.
fn sample(samples: &[u8], n: usize, layout: &Layout) -> i32 {
    let low = if layout.bits_allocated == 8 {
        i32::from(samples[n])
    } else {
        i32::from(u16::from_le_bytes([samples[2 * n], samples[2 * n + 1]]))
    };
    if layout.signed {
        let shift = 32 - u32::from(layout.bits_stored);
        (low << shift) >> shift
    } else {
        low
    }
}
