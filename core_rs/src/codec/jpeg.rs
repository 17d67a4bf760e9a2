//! JPEG decoding (ISO/IEC 10918-1: baseline, extended 12-bit, lossless with any
//! predictor, SV1 included) through the `TurboJPEG` 3 API of libjpeg-turbo 3.1
//! (crate turbojpeg-sys, which builds it from source by cmake, with its SIMD code,
//! and links it statically). Decision 0021.
//!
//! The stream's header is checked against the dataset's layout before anything is
//! decoded, and the decoder is told the pixel count it may produce, so a peer's
//! stream never sizes an allocation. Warnings (a truncated scan that libjpeg would
//! fill with grey) stop the decode: an object comes out exact or not at all.

use std::ffi::CStr;

use turbojpeg_sys::{
    size_t, tj3Decompress12, tj3Decompress16, tj3Decompress8, tj3DecompressHeader, tj3Destroy,
    tj3Get, tj3GetErrorStr, tj3Init, tj3Set, tjhandle, TJCS_TJCS_YCbCr, TJCS_TJCS_GRAY,
    TJCS_TJCS_RGB, TJINIT_TJINIT_DECOMPRESS, TJPARAM_TJPARAM_COLORSPACE as COLORSPACE,
    TJPARAM_TJPARAM_JPEGHEIGHT as HEIGHT, TJPARAM_TJPARAM_JPEGWIDTH as WIDTH,
    TJPARAM_TJPARAM_LOSSLESS as LOSSLESS, TJPARAM_TJPARAM_MAXMEMORY as MAXMEMORY,
    TJPARAM_TJPARAM_MAXPIXELS as MAXPIXELS, TJPARAM_TJPARAM_PRECISION as PRECISION,
    TJPARAM_TJPARAM_STOPONWARNING as STOPONWARNING, TJPF_TJPF_GRAY as PF_GRAY,
    TJPF_TJPF_RGB as PF_RGB,
};

use super::{CodecError, Layout};

/// Intermediate buffers (progressive scans, lossless rows) in MB: a 4096 x 4096
/// colour progressive image needs ~200.
const MAX_MEMORY_MB: i32 = 512;

/// What the stream says about itself, read before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub rows: u32,
    pub columns: u32,
    pub precision: u8,
    pub lossless: bool,
    /// The colour space libjpeg reads from the markers: `TurboJPEG`'s TJCS value.
    pub colorspace: i32,
}

/// A `TurboJPEG` decompressor, destroyed on every path out of a call.
struct Decompressor(tjhandle);

impl Decompressor {
    fn new() -> Result<Self, CodecError> {
        // SAFETY: tj3Init has no preconditions; a null result is checked below.
        let handle = unsafe { tj3Init(TJINIT_TJINIT_DECOMPRESS.cast_signed()) };
        if handle.is_null() {
            return Err(CodecError::Corrupt(
                "libjpeg-turbo could not allocate a decoder".into(),
            ));
        }
        Ok(Self(handle))
    }

    fn get(&self, param: u32) -> i32 {
        // SAFETY: the handle is valid while `self` lives; tj3Get only reads it.
        unsafe { tj3Get(self.0, param.cast_signed()) }
    }

    fn set(&self, param: u32, value: i32) -> Result<(), CodecError> {
        // SAFETY: as in `get`.
        self.check(
            unsafe { tj3Set(self.0, param.cast_signed(), value) },
            "setup",
        )
    }

    fn check(&self, code: i32, doing: &str) -> Result<(), CodecError> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle,
        // valid until the next call on it; it is copied at once.
        let message = unsafe { CStr::from_ptr(tj3GetErrorStr(self.0)) };
        Err(CodecError::Corrupt(format!(
            "JPEG {doing}: {}",
            message.to_string_lossy()
        )))
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came non-null from tj3Init and is destroyed once, here.
        unsafe { tj3Destroy(self.0) }
    }
}

fn read_header(tj: &Decompressor, data: &[u8]) -> Result<Header, CodecError> {
    // SAFETY: libjpeg-turbo reads at most `data.len()` bytes of `data` during the call.
    tj.check(
        unsafe { tj3DecompressHeader(tj.0, data.as_ptr(), data.len() as size_t) },
        "header",
    )?;
    let dimension = |param| u32::try_from(tj.get(param)).unwrap_or(0);
    Ok(Header {
        rows: dimension(HEIGHT),
        columns: dimension(WIDTH),
        precision: u8::try_from(tj.get(PRECISION)).unwrap_or(0),
        lossless: tj.get(LOSSLESS) == 1,
        colorspace: tj.get(COLORSPACE),
    })
}

/// The stream's header, and its samples (interleaved, one byte per sample up to 8
/// bits of precision, else two little-endian bytes) once `accept` found the header
/// fits the dataset.
pub fn decode(
    data: &[u8],
    layout: &Layout,
    accept: impl FnOnce(&Header) -> Result<(), CodecError>,
) -> Result<(Vec<u8>, Header), CodecError> {
    let tj = Decompressor::new()?;
    let header = read_header(&tj, data)?;
    accept(&header)?;
    let pixels = i32::try_from(u64::from(layout.rows) * u64::from(layout.columns))
        .map_err(|_| CodecError::Unsupported("image too large for libjpeg-turbo".into()))?;
    tj.set(MAXPIXELS, pixels)?;
    tj.set(MAXMEMORY, MAX_MEMORY_MB)?;
    tj.set(STOPONWARNING, 1)?;
    let format = if layout.components == 3 {
        PF_RGB
    } else {
        PF_GRAY
    };
    let samples = layout.rows as usize * layout.columns as usize * usize::from(layout.components);
    let size = data.len() as size_t;
    let code;
    let out = if header.precision <= 8 {
        let mut out = vec![0u8; samples];
        // SAFETY: `out` holds rows x columns x components samples of one byte, which
        // is what the decoder writes for this header (checked by `accept` against the
        // layout) with pitch 0 (unpadded rows); it reads `data` within its length.
        code = unsafe { tj3Decompress8(tj.0, data.as_ptr(), size, out.as_mut_ptr(), 0, format) };
        out
    } else {
        let mut wide = vec![0u16; samples];
        // SAFETY: as above, with samples of 16 bits; tj3Decompress12 writes i16s,
        // which have u16's size and alignment, with values in 0..4096.
        code = unsafe {
            if header.precision <= 12 {
                tj3Decompress12(
                    tj.0,
                    data.as_ptr(),
                    size,
                    wide.as_mut_ptr().cast(),
                    0,
                    format,
                )
            } else {
                tj3Decompress16(tj.0, data.as_ptr(), size, wide.as_mut_ptr(), 0, format)
            }
        };
        wide.iter().flat_map(|s| s.to_le_bytes()).collect()
    };
    tj.check(code, "decode")?;
    Ok((out, header))
}

/// Colour spaces as `Header::colorspace` gives them.
pub const GRAY: i32 = TJCS_TJCS_GRAY.cast_signed();
pub const RGB: i32 = TJCS_TJCS_RGB.cast_signed();
pub const YCBCR: i32 = TJCS_TJCS_YCbCr.cast_signed();

#[must_use]
pub fn colour_name(colorspace: i32) -> &'static str {
    match colorspace {
        GRAY => "grey",
        RGB => "RGB",
        YCBCR => "YCbCr",
        _ => "CMYK/YCCK or unknown",
    }
}

/// A JPEG made by libjpeg-turbo for the tests: lossless at `precision` bits with
/// `predictor` (1 is SV1; 1..=7), or lossy 4:2:0 when `precision` is None.
#[cfg(test)]
pub fn encode_for_tests(
    frame: &[u8],
    layout: &Layout,
    precision: Option<u8>,
    predictor: i32,
) -> Vec<u8> {
    use turbojpeg_sys::{
        tj3Compress12, tj3Compress16, tj3Compress8, tj3Free, TJINIT_TJINIT_COMPRESS,
        TJPARAM_TJPARAM_LOSSLESSPSV, TJPARAM_TJPARAM_QUALITY, TJPARAM_TJPARAM_SUBSAMP,
        TJSAMP_TJSAMP_420, TJSAMP_TJSAMP_GRAY,
    };
    let colour = layout.components == 3;
    let format = if colour { PF_RGB } else { PF_GRAY };
    let (width, height) = (layout.columns.cast_signed(), layout.rows.cast_signed());
    let wide: Vec<u16> = frame
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    // SAFETY: a compressor handle used and destroyed here; the source buffers hold
    // width x height x components samples of the size each function reads; the
    // output buffer is allocated by libjpeg-turbo, copied, then freed by tj3Free.
    unsafe {
        let tj = tj3Init(TJINIT_TJINIT_COMPRESS.cast_signed());
        assert!(!tj.is_null());
        let sampling = if colour {
            TJSAMP_TJSAMP_420
        } else {
            TJSAMP_TJSAMP_GRAY
        };
        tj3Set(tj, TJPARAM_TJPARAM_SUBSAMP.cast_signed(), sampling);
        if let Some(bits) = precision {
            tj3Set(tj, LOSSLESS.cast_signed(), 1);
            tj3Set(tj, TJPARAM_TJPARAM_LOSSLESSPSV.cast_signed(), predictor);
            tj3Set(tj, PRECISION.cast_signed(), i32::from(bits));
        } else {
            tj3Set(tj, TJPARAM_TJPARAM_QUALITY.cast_signed(), 90);
        }
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut size: size_t = 0;
        let code = match precision {
            Some(bits) if bits > 12 => tj3Compress16(
                tj,
                wide.as_ptr(),
                width,
                0,
                height,
                format,
                &raw mut out,
                &raw mut size,
            ),
            Some(bits) if bits > 8 => tj3Compress12(
                tj,
                wide.as_ptr().cast(),
                width,
                0,
                height,
                format,
                &raw mut out,
                &raw mut size,
            ),
            _ => tj3Compress8(
                tj,
                frame.as_ptr(),
                width,
                0,
                height,
                format,
                &raw mut out,
                &raw mut size,
            ),
        };
        assert_eq!(code, 0, "{:?}", CStr::from_ptr(tj3GetErrorStr(tj)));
        let jpeg = std::slice::from_raw_parts(out, size as usize).to_vec();
        tj3Free(out.cast());
        tj3Destroy(tj);
        jpeg
    }
}
