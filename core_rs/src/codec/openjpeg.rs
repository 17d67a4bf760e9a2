//! JPEG 2000 and HTJ2K decoding (ISO/IEC 15444-1 and -15) through `OpenJPEG` 2.5
//! (crate openjpeg-sys, which builds it from source and links it statically). The
//! codestream is read from memory; every handle is freed on every path (`Owned`);
//! the SIZ marker is checked against the dataset's layout before `OpenJPEG` reads
//! it, so the peer's codestream never sizes an allocation of ours.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use openjpeg_sys as opj;

use super::{CodecError, Layout};

/// The codestream being read, and how far.
struct Source<'a> {
    data: &'a [u8],
    at: usize,
}

unsafe extern "C" fn read(buffer: *mut c_void, wanted: usize, user: *mut c_void) -> usize {
    // SAFETY: `user` is the `Source` that `decode` owns for the whole decode, and
    // OpenJPEG hands a `buffer` with room for `wanted` bytes; we copy at most that.
    unsafe {
        let source = &mut *user.cast::<Source>();
        let left = source.data.len() - source.at;
        if left == 0 {
            return usize::MAX; // OpenJPEG's "end of stream"
        }
        let count = wanted.min(left);
        ptr::copy_nonoverlapping(source.data.as_ptr().add(source.at), buffer.cast(), count);
        source.at += count;
        count
    }
}

unsafe extern "C" fn skip(count: i64, user: *mut c_void) -> i64 {
    // SAFETY: as in `read`; only `at` changes, kept within the data.
    let source = unsafe { &mut *user.cast::<Source>() };
    let target = i64::try_from(source.at)
        .unwrap_or(i64::MAX)
        .saturating_add(count);
    match usize::try_from(target) {
        Ok(to) if to <= source.data.len() => {
            source.at = to;
            count
        }
        _ => -1,
    }
}

unsafe extern "C" fn seek(position: i64, user: *mut c_void) -> c_int {
    // SAFETY: as in `skip`.
    let source = unsafe { &mut *user.cast::<Source>() };
    match usize::try_from(position) {
        Ok(to) if to <= source.data.len() => {
            source.at = to;
            1
        }
        _ => 0,
    }
}

unsafe extern "C" fn collect(message: *const c_char, user: *mut c_void) {
    // SAFETY: `user` is the `String` that `decode` owns for the whole decode, and
    // OpenJPEG passes a NUL-terminated message valid for this call.
    unsafe {
        let errors = &mut *user.cast::<String>();
        if errors.len() < 1000 {
            errors.push_str(CStr::from_ptr(message).to_string_lossy().trim());
            errors.push_str("; ");
        }
    }
}

unsafe extern "C" fn ignore(_message: *const c_char, _user: *mut c_void) {}

/// An `OpenJPEG` object, destroyed once on every path out of `decode`.
struct Owned<T> {
    ptr: *mut T,
    destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr` came from the matching OpenJPEG constructor and is
            // destroyed exactly once, here.
            unsafe { (self.destroy)(self.ptr) }
        }
    }
}

fn corrupt(doing: &str, errors: &str) -> CodecError {
    let why = errors.trim_end_matches("; ");
    CodecError::Corrupt(format!(
        "JPEG 2000 {doing} failed{}",
        if why.is_empty() {
            String::new()
        } else {
            format!(": {why}")
        }
    ))
}

/// At most this many tiles: `OpenJPEG` allocates per tile while reading the main
/// header, so a forged SIZ with millions of tiles costs gigabytes before any check of
/// ours could run (found by the `j2k_decoder` fuzz target). Real images use 1 to ~100.
const MAX_TILES: u64 = 4096;

/// Check a J2K codestream's SIZ marker (ISO/IEC 15444-1 A.5.1) against `layout`
/// before `OpenJPEG` reads anything: image size, components, their precision (no
/// wider than Bits Allocated) and subsampling (none), and tile count. A JP2
/// file is checked at its contiguous codestream box.
fn check_siz(data: &[u8], layout: &Layout) -> Result<(), CodecError> {
    let start = if data.get(4..8) == Some(b"jP  ") {
        data.windows(4)
            .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
            .ok_or_else(|| corrupt("header", "no codestream in the JP2 file"))?
    } else {
        0
    };
    let siz = data.get(start..).unwrap_or_default();
    if siz.len() < 42 || siz[..4] != [0xFF, 0x4F, 0xFF, 0x51] {
        return Err(corrupt("header", "no SOC and SIZ markers at the start"));
    }
    let word = |at: usize| u32::from_be_bytes([siz[at], siz[at + 1], siz[at + 2], siz[at + 3]]);
    let (x1, y1, x0, y0) = (word(8), word(12), word(16), word(20));
    let (tile_w, tile_h, tile_x0, tile_y0) = (word(24), word(28), word(32), word(36));
    let components = u16::from_be_bytes([siz[40], siz[41]]);
    let width = x1.saturating_sub(x0);
    let height = y1.saturating_sub(y0);
    if width != layout.columns
        || height != layout.rows
        || components != u16::from(layout.components)
    {
        return Err(CodecError::Corrupt(format!(
            "JPEG 2000 codestream is {width} x {height} x {components}; the dataset says {} x {} x {}",
            layout.columns, layout.rows, layout.components
        )));
    }
    let parameters = siz.get(42..42 + 3 * usize::from(components));
    for (n, ssiz) in parameters.unwrap_or_default().chunks_exact(3).enumerate() {
        let precision = u32::from(ssiz[0] & 0x7F) + 1;
        if ssiz[1] != 1 || ssiz[2] != 1 {
            return Err(CodecError::Corrupt(format!(
                "JPEG 2000 codestream is subsampled (component {n}); the dataset is not"
            )));
        }
        if precision > u32::from(layout.bits_allocated) {
            return Err(CodecError::Corrupt(format!(
                "JPEG 2000 component {n} has {precision} bits; the dataset allocates {}",
                layout.bits_allocated
            )));
        }
    }
    if parameters.is_none() {
        return Err(corrupt("header", "SIZ cut in its component list"));
    }
    if tile_w == 0 || tile_h == 0 || tile_x0 > x0 || tile_y0 > y0 {
        return Err(corrupt("header", "invalid tile grid"));
    }
    let across = u64::from(x1 - tile_x0).div_ceil(u64::from(tile_w));
    let down = u64::from(y1 - tile_y0).div_ceil(u64::from(tile_h));
    if across * down > MAX_TILES {
        return Err(CodecError::Corrupt(format!(
            "JPEG 2000 codestream claims {} tiles (at most {MAX_TILES} taken)",
            across * down
        )));
    }
    Ok(())
}

/// One JPEG 2000 or HTJ2K frame (a J2K codestream, or a JP2 file) to native samples
/// laid out as `layout` (interleaved, little-endian; signed samples sign-extended).
pub fn decode(data: &[u8], layout: &Layout) -> Result<Vec<u8>, CodecError> {
    check_siz(data, layout)?;
    let format = if data.get(4..8) == Some(b"jP  ") {
        opj::OPJ_CODEC_FORMAT::OPJ_CODEC_JP2
    } else {
        opj::OPJ_CODEC_FORMAT::OPJ_CODEC_J2K
    };
    let mut source = Source { data, at: 0 };
    let mut errors = String::new();
    // SAFETY: every pointer handed to OpenJPEG stays valid while it is used:
    // `source` and `errors` outlive `stream` and `codec`, which `Owned` destroys
    // (in reverse order) before this block ends; the image is read only after a
    // successful decode, `numcomps` (checked to be `layout.components`) components
    // of exactly `samples` values each (checked before each is read).
    unsafe {
        let codec = Owned {
            ptr: opj::opj_create_decompress(format),
            destroy: opj::opj_destroy_codec,
        };
        if codec.ptr.is_null() {
            return Err(corrupt("set-up", "no codec"));
        }
        let user = (&raw mut errors).cast::<c_void>();
        opj::opj_set_error_handler(codec.ptr, Some(collect), user);
        opj::opj_set_warning_handler(codec.ptr, Some(ignore), ptr::null_mut());
        opj::opj_set_info_handler(codec.ptr, Some(ignore), ptr::null_mut());
        let mut parameters = std::mem::zeroed::<opj::opj_dparameters_t>();
        opj::opj_set_default_decoder_parameters(&raw mut parameters);
        if opj::opj_setup_decoder(codec.ptr, &raw mut parameters) == 0 {
            return Err(corrupt("set-up", &errors));
        }
        let stream = Owned {
            ptr: opj::opj_stream_create(1 << 16, 1),
            destroy: opj::opj_stream_destroy,
        };
        if stream.ptr.is_null() {
            return Err(corrupt("set-up", "no stream"));
        }
        opj::opj_stream_set_read_function(stream.ptr, Some(read));
        opj::opj_stream_set_skip_function(stream.ptr, Some(skip));
        opj::opj_stream_set_seek_function(stream.ptr, Some(seek));
        opj::opj_stream_set_user_data(stream.ptr, (&raw mut source).cast(), None);
        opj::opj_stream_set_user_data_length(stream.ptr, data.len() as u64);
        let mut image = Owned {
            ptr: ptr::null_mut::<opj::opj_image_t>(),
            destroy: opj::opj_image_destroy,
        };
        if opj::opj_read_header(stream.ptr, codec.ptr, &raw mut image.ptr) == 0
            || image.ptr.is_null()
        {
            return Err(corrupt("header", &errors));
        }
        if opj::opj_decode(codec.ptr, stream.ptr, image.ptr) == 0
            || opj::opj_end_decompress(codec.ptr, stream.ptr) == 0
        {
            return Err(corrupt("decode", &errors));
        }
        let header = &*image.ptr;
        if header.comps.is_null() || header.numcomps != u32::from(layout.components) {
            return Err(corrupt(
                "decode",
                "the image has another number of components",
            ));
        }
        let samples = layout.rows as usize * layout.columns as usize;
        let mut planes = Vec::with_capacity(usize::from(layout.components));
        for n in 0..usize::from(layout.components) {
            let component = &*header.comps.add(n);
            if component.data.is_null() || component.w as usize * component.h as usize != samples {
                return Err(corrupt("decode", "a component came out of another size"));
            }
            planes.push(std::slice::from_raw_parts(component.data, samples));
        }
        Ok(interleave(&planes, layout))
    }
}

/// Planes of decoded samples to interleaved little-endian native samples.
fn interleave(planes: &[&[i32]], layout: &Layout) -> Vec<u8> {
    let mut out = Vec::with_capacity(layout.frame_bytes());
    let samples = planes.first().map_or(0, |plane| plane.len());
    for i in 0..samples {
        for plane in planes {
            // Two's complement truncation: a signed sample comes out sign-extended to
            // the container, an unsigned one as it is (both checked to fit).
            let value = plane[i].cast_unsigned();
            if layout.bits_allocated == 8 {
                out.push(value.to_le_bytes()[0]);
            } else {
                out.extend_from_slice(&value.to_le_bytes()[..2]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            rows: 4,
            columns: 4,
            components: 1,
            bits_allocated: 16,
            bits_stored: 12,
            signed: false,
        }
    }

    #[test]
    fn garbage_and_cut_streams_fail_cleanly() {
        assert!(matches!(
            decode(b"not a codestream at all", &layout()),
            Err(CodecError::Corrupt(_))
        ));
        // SOC, then a SIZ marker cut short.
        assert!(decode(&[0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00], &layout()).is_err());
        assert!(decode(&[], &layout()).is_err());
    }

    /// SOC + a SIZ for a 4 x 4 image of one component in one tile.
    fn siz() -> Vec<u8> {
        let mut out = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00, 0x00];
        for value in [4u32, 4, 0, 0, 4, 4, 0, 0] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        out.extend_from_slice(&[0x00, 0x01, 0x0B, 0x01, 0x01]);
        out
    }

    #[test]
    fn the_siz_marker_is_checked_before_openjpeg_reads_it() {
        let l = layout();
        assert!(check_siz(&siz(), &l).is_ok());
        let other = Layout { columns: 5, ..l };
        assert!(check_siz(&siz(), &other).is_err());
        // Forged: a million 1 x 1 tiles of a 1000 x 1000 image.
        let mut forged = siz();
        forged[8..12].copy_from_slice(&1000u32.to_be_bytes());
        forged[12..16].copy_from_slice(&1000u32.to_be_bytes());
        forged[24..28].copy_from_slice(&1u32.to_be_bytes());
        forged[28..32].copy_from_slice(&1u32.to_be_bytes());
        let big = Layout {
            rows: 1000,
            columns: 1000,
            ..l
        };
        let err = check_siz(&forged, &big).unwrap_err();
        assert!(err.to_string().contains("1000000 tiles"), "{err}");
        assert!(check_siz(&siz()[..20], &l).is_err());
    }

    #[test]
    fn signed_samples_come_out_sign_extended() {
        let plane = [-5i32, 7, 0, -2048];
        let signed = Layout {
            rows: 1,
            columns: 4,
            signed: true,
            ..layout()
        };
        let out = interleave(&[&plane], &signed);
        let back: Vec<i16> = out
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        assert_eq!(back, [-5, 7, 0, -2048]);
    }
}
