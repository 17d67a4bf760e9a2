//! Lossless HTJ2K encoding through the system's `OpenJPH` (Debian's libopenjph-dev),
//! reached through the C shim in `openjph_shim.cpp` that build.rs compiles when
//! pkg-config finds the library (decision 0035). The shim catches every C++
//! exception; here each call's buffers are sized and owned by Rust. Only encoding:
//! this `OpenJPH` (0.9) aborts the process on some damaged codestreams, so decoding
//! stays with `OpenJPEG`, which also verifies every frame made here.

use std::ffi::{c_char, c_int, c_void, CStr};

use super::{CodecError, Layout};

type Sink = unsafe extern "C" fn(user: *mut c_void, data: *const u8, len: usize);

extern "C" {
    fn pe_ojph_version() -> *const c_char;
    #[allow(clippy::too_many_arguments)]
    fn pe_ojph_encode(
        samples: *const u8,
        width: u32,
        height: u32,
        components: u32,
        bytes_per_sample: u32,
        bits_stored: u32,
        is_signed: c_int,
        levels: u32,
        sink: Sink,
        user: *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
}

/// The library's version, "0.9.0".
pub fn version() -> String {
    // SAFETY: the shim returns a pointer to its own static NUL-terminated buffer.
    unsafe { CStr::from_ptr(pe_ojph_version()) }
        .to_string_lossy()
        .into_owned()
}

unsafe extern "C" fn collect(user: *mut c_void, data: *const u8, len: usize) {
    // SAFETY: `user` is the `Vec` that `encode` owns for the whole call, and the shim
    // passes a piece of OpenJPH's output, `len` bytes valid for this call.
    unsafe {
        let out = &mut *user.cast::<Vec<u8>>();
        out.extend_from_slice(std::slice::from_raw_parts(data, len));
    }
}

/// Lossless HTJ2K of one frame of masked samples (the bits above Bits Stored zero),
/// interleaved, little-endian; `levels` wavelet levels.
pub fn encode(samples: &[u8], layout: &Layout, levels: u32) -> Result<Vec<u8>, CodecError> {
    debug_assert_eq!(samples.len(), layout.frame_bytes());
    let mut out = Vec::with_capacity(samples.len() / 2);
    let mut error = [0u8; 300];
    // SAFETY: `samples` holds `layout.frame_bytes()` bytes (checked by the caller),
    // which is what the shim reads for this shape; `out` and `error` outlive the
    // call, and `error`'s length is passed with it.
    let status = unsafe {
        pe_ojph_encode(
            samples.as_ptr(),
            layout.columns,
            layout.rows,
            u32::from(layout.components),
            layout.bytes_per_sample() as u32,
            u32::from(layout.bits_stored),
            c_int::from(layout.signed),
            levels,
            collect,
            (&raw mut out).cast(),
            error.as_mut_ptr().cast(),
            error.len(),
        )
    };
    if status == 0 {
        return Ok(out);
    }
    let why = CStr::from_bytes_until_nul(&error).map_or_else(
        |_| String::from("no message"),
        |m| m.to_string_lossy().into_owned(),
    );
    Err(CodecError::Corrupt(format!(
        "HTJ2K encode (OpenJPH): {why}"
    )))
}
