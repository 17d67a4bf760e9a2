//! The warm tier's object format: a stored Part-10 file, compressed so that it comes
//! back byte for byte (docs/decisions/0017).
//!
//! A warm file is a run of segments, each one piece of the original file in order:
//!
//! ```text
//! magic "PEWARM\0\x01"
//! segment*   kind u8 | raw length u32 LE | stored length u32 LE | stored bytes
//! end        kind 0  | original length u64 LE | BLAKE3 of the original (32 bytes)
//! ```
//!
//! Kinds: zstd of the bytes; zstd of 16-bit samples byte-shuffled (all low bytes,
//! then all high bytes: each plane compresses far better than the interleave); and
//! one JPEG-LS frame (a 12-byte layout header, then the stream), used where it is
//! smaller than the frame's shuffled zstd. Native pixel data
//! goes frame by frame, everything else in zstd chunks, so memory stays at one frame
//! plus one chunk whatever the object's size. `pack` returns only after decoding its
//! own output and finding the original's length and hash: the trailer is the proof,
//! and `unpack` checks it again on every restore.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::codec::{self, CodecError, Layout};
use crate::error::{CoreError, Result};

pub const MAGIC: &[u8; 8] = b"PEWARM\0\x01";
/// The raw size of one zstd segment: big enough for zstd's window to pay off,
/// small enough that restoring holds little memory.
const CHUNK: usize = 4 << 20;
/// No segment of ours is larger; a bigger length field means a damaged file, and
/// must not size an allocation.
const MAX_SEGMENT: usize = 256 << 20;
/// A frame this large goes through zstd in chunks instead of JPEG-LS whole.
const MAX_JPEGLS_FRAME: usize = 64 << 20;
const LAYOUT_HEADER: usize = 12;

const END: u8 = 0;
const ZSTD: u8 = 1;
const SHUFFLED16: u8 = 2;
const JPEGLS: u8 = 3;

/// What native pixel data gets; whatever JPEG-LS refuses goes through zstd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelCodec {
    Zstd,
    JpegLs,
}

/// Where an object's native pixel data lies: `frames` frames of `layout` from the
/// file offset of the Pixel Data value.
#[derive(Debug, Clone, Copy)]
pub struct Pixels {
    pub offset: u64,
    pub frames: u32,
    pub layout: Layout,
}

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub pixels: Option<Pixels>,
    pub codec: PixelCodec,
    pub level: i32,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Packed {
    pub original: u64,
    pub stored: u64,
    pub jpegls_frames: u32,
    /// Frames JPEG-LS was asked for but could not carry (they went through zstd).
    pub fallback_frames: u32,
    pub fallback_reason: Option<String>,
}

/// Compress `src` into `dst` (created or truncated) following `plan`, verified.
pub fn pack(src: &Path, dst: &Path, plan: &Plan, durable: bool) -> Result<Packed> {
    let file = File::open(src)?;
    let total = file.metadata()?.len();
    let mut input = BufReader::with_capacity(1 << 20, file);
    let out = File::create(dst)?;
    let mut writer = Writer {
        out: BufWriter::with_capacity(1 << 20, out),
        compressor: zstd::bulk::Compressor::new(plan.level)?,
        hasher: blake3::Hasher::new(),
        packed: Packed {
            original: total,
            ..Packed::default()
        },
    };
    writer.out.write_all(MAGIC)?;
    let mut done = 0u64;
    if let Some(pixels) = plan.pixels {
        let frame_bytes = pixels.layout.frame_bytes() as u64;
        let end = u64::from(pixels.frames)
            .checked_mul(frame_bytes)
            .and_then(|n| n.checked_add(pixels.offset))
            .filter(|&end| end <= total && frame_bytes > 0)
            .ok_or_else(|| {
                CoreError::Dataset(format!(
                    "{} frame(s) of {frame_bytes} bytes at offset {} do not fit a {total}-byte file",
                    pixels.frames, pixels.offset
                ))
            })?;
        writer.bytes(&mut input, pixels.offset)?;
        let mut frame = vec![0u8; frame_bytes as usize];
        for _ in 0..pixels.frames {
            input.read_exact(&mut frame)?;
            writer.hasher.update(&frame);
            writer.frame(&frame, &pixels.layout, plan.codec)?;
        }
        done = end;
    }
    writer.bytes(&mut input, total - done)?;
    let hash = writer.hasher.finalize();
    writer.out.write_all(&[END])?;
    writer.out.write_all(&total.to_le_bytes())?;
    writer.out.write_all(hash.as_bytes())?;
    let file = writer
        .out
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    if durable {
        file.sync_data()?;
    }
    let mut packed = writer.packed;
    packed.stored = file.metadata()?.len();
    let (length, restored) = unpack_into(dst, &mut io::sink())?;
    if length != total || restored != hash {
        return Err(CodecError::Mismatch(format!(
            "warm copy of {} restores to {length} bytes of another hash",
            src.display()
        ))
        .into());
    }
    Ok(packed)
}

/// Restore a warm file's original bytes into `dst`, checking its length and hash.
pub fn unpack(src: &Path, dst: &Path, durable: bool) -> Result<u64> {
    let file = File::create(dst)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let (length, _) = unpack_into(src, &mut out)?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    if durable {
        file.sync_data()?;
    }
    Ok(length)
}

struct Writer {
    out: BufWriter<File>,
    compressor: zstd::bulk::Compressor<'static>,
    hasher: blake3::Hasher,
    packed: Packed,
}

impl Writer {
    fn segment(&mut self, kind: u8, raw: usize, stored: &[&[u8]]) -> Result<()> {
        let length: usize = stored.iter().map(|part| part.len()).sum();
        self.out.write_all(&[kind])?;
        self.out.write_all(&(raw as u32).to_le_bytes())?;
        self.out.write_all(&(length as u32).to_le_bytes())?;
        for part in stored {
            self.out.write_all(part)?;
        }
        Ok(())
    }

    fn zstd(&mut self, raw: usize, data: &[u8]) -> Result<()> {
        let compressed = self.compressor.compress(data)?;
        self.segment(ZSTD, raw, &[&compressed])
    }

    /// `count` bytes of `input`, hashed, as zstd chunks.
    fn bytes(&mut self, input: &mut impl Read, count: u64) -> Result<()> {
        let mut left = count;
        let mut chunk = vec![0u8; CHUNK.min(count as usize)];
        while left > 0 {
            let n = CHUNK.min(left as usize);
            input.read_exact(&mut chunk[..n])?;
            self.hasher.update(&chunk[..n]);
            self.zstd(n, &chunk[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// One native frame: with `JpegLs`, whichever of JPEG-LS and shuffled zstd is
    /// smaller (zstd wins on flat colour and repeated content); else shuffled zstd.
    fn frame(&mut self, frame: &[u8], layout: &Layout, codec: PixelCodec) -> Result<()> {
        let zstd = self.zstd_frame(frame, layout)?;
        if codec == PixelCodec::JpegLs {
            let attempt = if frame.len() > MAX_JPEGLS_FRAME {
                Err(CodecError::Unsupported(format!(
                    "a {}-byte frame is over the {MAX_JPEGLS_FRAME}-byte JPEG-LS limit",
                    frame.len()
                )))
            } else {
                codec::jpegls_encode_verified(frame, layout)
            };
            match attempt {
                Ok(stream) => {
                    let zstd_size: usize = zstd.iter().map(|(_, _, c)| c.len() + 9).sum();
                    if stream.len() + LAYOUT_HEADER + 9 < zstd_size {
                        self.packed.jpegls_frames += 1;
                        let header = layout_header(layout);
                        return self.segment(JPEGLS, frame.len(), &[&header, &stream]);
                    }
                }
                Err(e) => self.fell_back(e.to_string()),
            }
        }
        for (kind, raw, compressed) in zstd {
            self.segment(kind, raw, &[&compressed])?;
        }
        Ok(())
    }

    /// A frame's zstd segments, 16-bit samples byte-shuffled (an even chunk size
    /// keeps every sample whole within one segment).
    fn zstd_frame(&mut self, frame: &[u8], layout: &Layout) -> Result<Vec<(u8, usize, Vec<u8>)>> {
        let shuffle = layout.bits_allocated == 16;
        let mut out = Vec::new();
        for piece in frame.chunks(CHUNK) {
            if shuffle {
                out.push((
                    SHUFFLED16,
                    piece.len(),
                    self.compressor.compress(&shuffle16(piece))?,
                ));
            } else {
                out.push((ZSTD, piece.len(), self.compressor.compress(piece)?));
            }
        }
        Ok(out)
    }

    fn fell_back(&mut self, why: String) {
        self.packed.fallback_frames += 1;
        self.packed.fallback_reason.get_or_insert(why);
    }
}

fn layout_header(layout: &Layout) -> [u8; LAYOUT_HEADER] {
    let mut header = [0u8; LAYOUT_HEADER];
    header[..4].copy_from_slice(&layout.rows.to_le_bytes());
    header[4..8].copy_from_slice(&layout.columns.to_le_bytes());
    header[8] = layout.components;
    header[9] = layout.bits_allocated;
    header[10] = layout.bits_stored;
    header[11] = u8::from(layout.signed);
    header
}

fn read_layout(header: &[u8]) -> Layout {
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    Layout {
        rows: word(0),
        columns: word(4),
        components: header[8],
        bits_allocated: header[9],
        bits_stored: header[10],
        signed: header[11] != 0,
    }
}

/// All low bytes of 16-bit samples, then all high bytes (an odd last byte stays last).
fn shuffle16(data: &[u8]) -> Vec<u8> {
    let pairs = data.len() / 2;
    let mut out = vec![0u8; data.len()];
    for (i, pair) in data.chunks_exact(2).enumerate() {
        out[i] = pair[0];
        out[pairs + i] = pair[1];
    }
    if data.len() % 2 == 1 {
        out[data.len() - 1] = data[data.len() - 1];
    }
    out
}

fn unshuffle16(data: &[u8]) -> Vec<u8> {
    let pairs = data.len() / 2;
    let mut out = vec![0u8; data.len()];
    for i in 0..pairs {
        out[2 * i] = data[i];
        out[2 * i + 1] = data[pairs + i];
    }
    if data.len() % 2 == 1 {
        out[data.len() - 1] = data[data.len() - 1];
    }
    out
}

fn corrupt(why: impl Into<String>) -> CoreError {
    CodecError::Corrupt(format!("damaged warm file: {}", why.into())).into()
}

/// Decode every segment of `src` into `out`; the length and hash of what came out,
/// checked against the trailer.
fn unpack_into(src: &Path, out: &mut impl Write) -> Result<(u64, blake3::Hash)> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(src)?);
    let mut magic = [0u8; 8];
    read_or_corrupt(&mut input, &mut magic, "too short")?;
    if &magic != MAGIC {
        return Err(corrupt("not a pacs-edge warm file (bad magic)"));
    }
    let mut decompressor = zstd::bulk::Decompressor::new()?;
    let mut hasher = blake3::Hasher::new();
    let mut length = 0u64;
    let mut stored = Vec::new();
    loop {
        let mut head = [0u8; 1];
        read_or_corrupt(&mut input, &mut head, "cut before its end marker")?;
        if head[0] == END {
            let mut trailer = [0u8; 40];
            read_or_corrupt(&mut input, &mut trailer, "cut in its trailer")?;
            if input.read(&mut [0u8; 1])? != 0 {
                return Err(corrupt("bytes after the end marker"));
            }
            let expected_length = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
            let expected_hash = blake3::Hash::from_bytes(trailer[8..].try_into().expect("32"));
            let hash = hasher.finalize();
            if expected_length != length || expected_hash != hash {
                return Err(CodecError::Mismatch(format!(
                    "warm file {} restores to {length} bytes that do not match its trailer",
                    src.display()
                ))
                .into());
            }
            return Ok((length, hash));
        }
        let mut sizes = [0u8; 8];
        read_or_corrupt(&mut input, &mut sizes, "cut in a segment header")?;
        let raw = u32::from_le_bytes(sizes[..4].try_into().expect("4")) as usize;
        let size = u32::from_le_bytes(sizes[4..].try_into().expect("4")) as usize;
        if raw > MAX_SEGMENT || size > MAX_SEGMENT + LAYOUT_HEADER {
            return Err(corrupt(format!("segment of {raw} / {size} bytes")));
        }
        stored.resize(size, 0);
        read_or_corrupt(&mut input, &mut stored, "cut in a segment")?;
        let data = match head[0] {
            ZSTD => inflate(&mut decompressor, &stored, raw)?,
            SHUFFLED16 => unshuffle16(&inflate(&mut decompressor, &stored, raw)?),
            JPEGLS if size >= LAYOUT_HEADER => {
                let layout = read_layout(&stored[..LAYOUT_HEADER]);
                codec::jpegls_decode(&stored[LAYOUT_HEADER..], &layout)?
            }
            kind => return Err(corrupt(format!("unknown segment kind {kind}"))),
        };
        if data.len() != raw {
            return Err(corrupt(format!(
                "segment gave {} of {raw} bytes",
                data.len()
            )));
        }
        hasher.update(&data);
        out.write_all(&data)?;
        length += raw as u64;
    }
}

fn inflate(
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    stored: &[u8],
    raw: usize,
) -> Result<Vec<u8>> {
    decompressor
        .decompress(stored, raw)
        .map_err(|e| corrupt(format!("zstd segment: {e}")))
}

fn read_or_corrupt(input: &mut impl Read, buf: &mut [u8], why: &str) -> Result<()> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt(why)
        } else {
            e.into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(bits_allocated: u8, bits_stored: u8) -> Layout {
        Layout {
            rows: 64,
            columns: 48,
            components: 1,
            bits_allocated,
            bits_stored,
            signed: false,
        }
    }

    /// A fake object: a header, `frames` smooth frames, a trailer.
    fn object(dir: &Path, l: &Layout, frames: u32) -> (std::path::PathBuf, Pixels) {
        let mut bytes = b"DICM header bytes that are not pixels ".repeat(40);
        let offset = bytes.len() as u64;
        let mut noise = 12_345u32;
        for f in 0..frames {
            for i in 0..l.frame_bytes() / l.bytes_per_sample() {
                // A gradient with noise in the low bits: JPEG-LS beats zstd on it.
                noise = noise.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let (x, y) = (i % l.columns as usize, i / l.columns as usize);
                let v =
                    (x * 5 + y * 3 + (noise >> 29) as usize + f as usize) % (1 << l.bits_stored);
                if l.bits_allocated == 16 {
                    bytes.extend_from_slice(&(v as u16).to_le_bytes());
                } else {
                    bytes.push(v as u8);
                }
            }
        }
        bytes.extend_from_slice(b"after the pixels");
        let path = dir.join(format!("object-{}-{frames}", l.bits_allocated));
        std::fs::write(&path, &bytes).unwrap();
        let pixels = Pixels {
            offset,
            frames,
            layout: *l,
        };
        (path, pixels)
    }

    fn round_trip(src: &Path, plan: &Plan) -> Packed {
        let warm = src.with_extension("warm");
        let back = src.with_extension("back");
        let packed = pack(src, &warm, plan, false).unwrap();
        assert_eq!(unpack(&warm, &back, false).unwrap(), packed.original);
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(src).unwrap());
        packed
    }

    #[test]
    fn every_plan_restores_the_exact_bytes() {
        let tmp = tempdir();
        let dir = tmp.path();
        for l in [layout(16, 12), layout(8, 8)] {
            let (src, pixels) = object(dir, &l, 3);
            let plan = |codec| Plan {
                pixels: Some(pixels),
                codec,
                level: 3,
            };
            let zstd = round_trip(&src, &plan(PixelCodec::Zstd));
            let jpegls = round_trip(&src, &plan(PixelCodec::JpegLs));
            assert!(zstd.stored < zstd.original, "{l:?}: {zstd:?}");
            // A noisy gradient: JPEG-LS is the smaller coding of every frame.
            assert_eq!(jpegls.jpegls_frames, 3, "{l:?}: {jpegls:?}");
            assert!(jpegls.stored < zstd.stored, "{l:?}: {jpegls:?} vs {zstd:?}");
            round_trip(
                &src,
                &Plan {
                    pixels: None,
                    codec: PixelCodec::Zstd,
                    level: 1,
                },
            );
        }
    }

    /// Two 16-bit frames (12 bits stored), edited by `edit` (the file's bytes and
    /// where Pixel Data starts), packed with JPEG-LS asked for and restored.
    fn jpegls_after(edit: impl FnOnce(&mut [u8], usize, usize)) -> Packed {
        let tmp = tempdir();
        let dir = tmp.path();
        let l = layout(16, 12);
        let (src, pixels) = object(dir, &l, 2);
        let mut bytes = std::fs::read(&src).unwrap();
        edit(&mut bytes, pixels.offset as usize, l.frame_bytes());
        std::fs::write(&src, &bytes).unwrap();
        let plan = Plan {
            pixels: Some(pixels),
            codec: PixelCodec::JpegLs,
            level: 3,
        };
        round_trip(&src, &plan)
    }

    #[test]
    fn a_frame_zstd_packs_smaller_is_not_jpegls() {
        // A flat first frame: zstd's case.
        let packed = jpegls_after(|bytes, start, size| bytes[start..start + size].fill(0));
        assert_eq!((packed.jpegls_frames, packed.fallback_frames), (1, 0));
    }

    #[test]
    fn frames_jpegls_refuses_go_through_zstd_and_still_restore() {
        // A bit above Bits Stored in the first frame's first sample.
        let packed = jpegls_after(|bytes, start, _| bytes[start + 1] |= 0x80);
        assert_eq!((packed.jpegls_frames, packed.fallback_frames), (1, 1));
        assert!(packed.fallback_reason.unwrap().contains("Bits Stored"));
    }

    #[test]
    fn pixels_beyond_the_file_are_refused() {
        let tmp = tempdir();
        let dir = tmp.path();
        let (src, mut pixels) = object(dir, &layout(8, 8), 1);
        pixels.frames = 9;
        let plan = Plan {
            pixels: Some(pixels),
            codec: PixelCodec::Zstd,
            level: 3,
        };
        let err = pack(&src, &dir.join("x.warm"), &plan, false).unwrap_err();
        assert!(matches!(err, CoreError::Dataset(_)), "{err}");
    }

    #[test]
    fn damage_is_found_never_restored() {
        let tmp = tempdir();
        let dir = tmp.path();
        let (src, pixels) = object(dir, &layout(16, 16), 2);
        let warm = dir.join("d.warm");
        let plan = Plan {
            pixels: Some(pixels),
            codec: PixelCodec::Zstd,
            level: 3,
        };
        pack(&src, &warm, &plan, false).unwrap();
        let good = std::fs::read(&warm).unwrap();
        // Every single-byte flip and every cut fails; none restores other bytes quietly.
        for at in (0..good.len()).step_by(good.len() / 97 + 1) {
            let mut bad = good.clone();
            bad[at] ^= 0x5A;
            std::fs::write(&warm, &bad).unwrap();
            assert!(
                unpack(&warm, &dir.join("out"), false).is_err(),
                "flip at {at}"
            );
            std::fs::write(&warm, &good[..at]).unwrap();
            assert!(
                unpack(&warm, &dir.join("out"), false).is_err(),
                "cut at {at}"
            );
        }
    }

    #[test]
    fn shuffle_is_its_own_inverse_for_any_length() {
        for n in [0usize, 1, 2, 7, 64, 1001] {
            let data: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            assert_eq!(unshuffle16(&shuffle16(&data)), data);
        }
    }

    /// Removed with everything in it when the test ends, passed or failed.
    fn tempdir() -> tempfile::TempDir {
        tempfile::TempDir::new().unwrap()
    }
}
