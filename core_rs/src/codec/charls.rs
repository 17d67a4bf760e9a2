//! JPEG-LS (ISO/IEC 14495-1) through the C API of `CharLS` (crate charls-sys, which
//! builds `CharLS` 2.4.5 from source and links it statically): the one place with
//! `unsafe` outside pyo3. Each call owns its encoder/decoder handle for one frame and frees it
//! on every path (`Handle`'s Drop).

use std::ffi::CStr;

use super::{CodecError, Layout};

use charls_sys::{
    charls_frame_info as FrameInfo, charls_get_error_message,
    charls_interleave_mode_none as INTERLEAVE_NONE,
    charls_interleave_mode_sample as INTERLEAVE_SAMPLE, charls_jpegls_decoder_create,
    charls_jpegls_decoder_decode_to_buffer, charls_jpegls_decoder_destroy,
    charls_jpegls_decoder_get_destination_size, charls_jpegls_decoder_get_frame_info,
    charls_jpegls_decoder_read_header, charls_jpegls_decoder_set_source_buffer,
    charls_jpegls_encoder_create, charls_jpegls_encoder_destroy,
    charls_jpegls_encoder_encode_from_buffer, charls_jpegls_encoder_get_bytes_written,
    charls_jpegls_encoder_get_estimated_destination_size,
    charls_jpegls_encoder_set_destination_buffer, charls_jpegls_encoder_set_frame_info,
    charls_jpegls_encoder_set_interleave_mode, charls_jpegls_encoder_set_near_lossless,
};

fn check(code: i32, doing: &str) -> Result<(), CodecError> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: CharLS returns a pointer to a static, NUL-terminated message for any
    // value, known or not; it is never freed.
    let message = unsafe { CStr::from_ptr(charls_get_error_message(code)) };
    Err(CodecError::Corrupt(format!(
        "JPEG-LS {doing}: {} (CharLS error {code})",
        message.to_string_lossy()
    )))
}

/// Frees a `CharLS` handle on every path out of a call.
struct Handle<T> {
    ptr: *mut T,
    destroy: unsafe extern "C" fn(*const T),
}

impl<T> Handle<T> {
    fn new(ptr: *mut T, destroy: unsafe extern "C" fn(*const T)) -> Result<Self, CodecError> {
        if ptr.is_null() {
            return Err(CodecError::Corrupt(
                "CharLS could not allocate a codec".into(),
            ));
        }
        Ok(Self { ptr, destroy })
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came non-null from the matching `_create` and is destroyed
        // exactly once, here.
        unsafe { (self.destroy)(self.ptr) }
    }
}

fn frame_info(layout: &Layout) -> FrameInfo {
    FrameInfo {
        width: layout.columns,
        height: layout.rows,
        bits_per_sample: i32::from(layout.bits_stored),
        component_count: i32::from(layout.components),
    }
}

/// Lossless JPEG-LS of one frame laid out as `layout` says (samples interleaved,
/// little-endian, `layout.bytes_per_sample()` bytes each).
pub fn encode(frame: &[u8], layout: &Layout) -> Result<Vec<u8>, CodecError> {
    let info = frame_info(layout);
    // SAFETY: the handle is valid until `encoder` drops at the end of this function;
    // CharLS copies `info` and reads `frame` only within `encode_from_buffer`, whose
    // size argument is the slice's length; it writes at most `capacity` bytes into
    // `out`, whose length is `capacity` and which outlives the call.
    unsafe {
        let encoder = Handle::new(
            charls_jpegls_encoder_create(),
            charls_jpegls_encoder_destroy,
        )?;
        check(
            charls_jpegls_encoder_set_frame_info(encoder.ptr, &raw const info),
            "frame",
        )?;
        check(
            charls_jpegls_encoder_set_near_lossless(encoder.ptr, 0),
            "near-lossless",
        )?;
        let mode = if layout.components > 1 {
            INTERLEAVE_SAMPLE
        } else {
            INTERLEAVE_NONE
        };
        check(
            charls_jpegls_encoder_set_interleave_mode(encoder.ptr, mode),
            "interleave",
        )?;
        let mut capacity = 0usize;
        check(
            charls_jpegls_encoder_get_estimated_destination_size(encoder.ptr, &raw mut capacity),
            "size estimate",
        )?;
        let mut out = vec![0u8; capacity];
        check(
            charls_jpegls_encoder_set_destination_buffer(
                encoder.ptr,
                out.as_mut_ptr().cast(),
                out.len(),
            ),
            "destination",
        )?;
        check(
            charls_jpegls_encoder_encode_from_buffer(
                encoder.ptr,
                frame.as_ptr().cast(),
                frame.len(),
                0,
            ),
            "encode",
        )?;
        let mut written = 0usize;
        check(
            charls_jpegls_encoder_get_bytes_written(encoder.ptr, &raw mut written),
            "encode",
        )?;
        out.truncate(written);
        Ok(out)
    }
}

/// Decodes one JPEG-LS frame into interleaved little-endian samples; the layout is
/// the stream's own (rows, columns, components, precision).
pub fn decode(data: &[u8], max_bytes: usize) -> Result<(Vec<u8>, Layout), CodecError> {
    // SAFETY: as in `encode`: CharLS reads `data` within its length while the handle
    // lives, and writes at most `size` bytes into `out`, whose length is `size`.
    unsafe {
        let decoder = Handle::new(
            charls_jpegls_decoder_create(),
            charls_jpegls_decoder_destroy,
        )?;
        check(
            charls_jpegls_decoder_set_source_buffer(decoder.ptr, data.as_ptr().cast(), data.len()),
            "source",
        )?;
        check(charls_jpegls_decoder_read_header(decoder.ptr), "header")?;
        let mut info = FrameInfo {
            width: 0,
            height: 0,
            bits_per_sample: 0,
            component_count: 0,
        };
        check(
            charls_jpegls_decoder_get_frame_info(decoder.ptr, &raw mut info),
            "header",
        )?;
        let layout = Layout::from_stream(&info)?;
        let mut size = 0usize;
        check(
            charls_jpegls_decoder_get_destination_size(decoder.ptr, 0, &raw mut size),
            "size",
        )?;
        if size > max_bytes || size != layout.frame_bytes() {
            return Err(CodecError::Corrupt(format!(
                "JPEG-LS frame of {size} bytes; expected {} (at most {max_bytes})",
                layout.frame_bytes()
            )));
        }
        let mut out = vec![0u8; size];
        check(
            charls_jpegls_decoder_decode_to_buffer(decoder.ptr, out.as_mut_ptr().cast(), size, 0),
            "decode",
        )?;
        Ok((out, layout))
    }
}

impl Layout {
    fn from_stream(info: &FrameInfo) -> Result<Self, CodecError> {
        let bits = u8::try_from(info.bits_per_sample)
            .ok()
            .filter(|b| (2..=16).contains(b));
        let components = u8::try_from(info.component_count)
            .ok()
            .filter(|c| matches!(c, 1 | 3));
        match (bits, components) {
            (Some(bits_stored), Some(components)) => Ok(Layout {
                rows: info.height,
                columns: info.width,
                components,
                bits_allocated: if bits_stored > 8 { 16 } else { 8 },
                bits_stored,
                signed: false,
            }),
            _ => Err(CodecError::Corrupt(format!(
                "JPEG-LS stream with {} bits and {} components",
                info.bits_per_sample, info.component_count
            ))),
        }
    }
}
