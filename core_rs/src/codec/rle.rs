//! DICOM RLE Lossless (PS3.5 Annex G), in plain Rust: a 64-byte header of segment
//! offsets, then one `PackBits` segment per byte plane of each sample, most significant
//! byte first. Decoding is linear in the output, which is sized by the dataset's
//! layout, never by the stream: a hostile stream cannot make it allocate or loop more.

use super::{CodecError, Layout};

const HEADER: usize = 64;
const MAX_SEGMENTS: usize = 15;

fn corrupt(why: impl Into<String>) -> CodecError {
    CodecError::Corrupt(format!("RLE: {}", why.into()))
}

fn segments(layout: &Layout) -> usize {
    usize::from(layout.components) * layout.bytes_per_sample()
}

fn check(layout: &Layout) -> Result<(), CodecError> {
    // At most 15 segments: 3 samples of 4 bytes fit.
    if !matches!(layout.bits_allocated, 8 | 16 | 32) || !matches!(layout.components, 1 | 3) {
        return Err(CodecError::Unsupported(format!(
            "RLE: 8, 16 or 32 bits allocated, 1 or 3 samples; not {} bits, {} samples",
            layout.bits_allocated, layout.components
        )));
    }
    Ok(())
}

/// Decode one `PackBits` segment into exactly `out.len()` bytes.
fn unpack(segment: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let (mut at, mut written) = (0, 0);
    while written < out.len() {
        let Some(&header) = segment.get(at) else {
            return Err(corrupt(format!(
                "segment ends after {written} of {} bytes",
                out.len()
            )));
        };
        at += 1;
        let n = header.cast_signed();
        if n >= 0 {
            let count = usize::from(n.unsigned_abs()) + 1;
            let literal = segment
                .get(at..at + count)
                .ok_or_else(|| corrupt("literal run past the end of its segment"))?;
            let end = (written + count).min(out.len());
            out[written..end].copy_from_slice(&literal[..end - written]);
            written = end;
            at += count;
        } else if n != -128 {
            let count = usize::from(n.unsigned_abs()) + 1;
            let &value = segment
                .get(at)
                .ok_or_else(|| corrupt("replicate run past the end of its segment"))?;
            let end = (written + count).min(out.len());
            out[written..end].fill(value);
            written = end;
            at += 1;
        }
    }
    Ok(())
}

/// Encode one row of bytes the `PackBits` way: runs of 3 or more repeat, the rest literal.
fn pack(row: &[u8], out: &mut Vec<u8>) {
    let mut at = 0;
    while at < row.len() {
        let value = row[at];
        let run = row[at..]
            .iter()
            .take(128)
            .take_while(|&&b| b == value)
            .count();
        if run >= 3 {
            // -(run - 1) as a signed byte: run is 3..=128, so this fits.
            out.push((257 - run) as u8);
            out.push(value);
            at += run;
            continue;
        }
        // A literal until the next run of 3 (or 128 bytes).
        let start = at;
        while at < row.len() && at - start < 128 {
            if at + 2 < row.len() && row[at] == row[at + 1] && row[at] == row[at + 2] {
                break;
            }
            at += 1;
        }
        out.push((at - start - 1) as u8);
        out.extend_from_slice(&row[start..at]);
    }
}

/// Decode one RLE frame into native little-endian, interleaved samples.
pub fn decode(data: &[u8], layout: &Layout) -> Result<Vec<u8>, CodecError> {
    check(layout)?;
    let header = data
        .get(..HEADER)
        .ok_or_else(|| corrupt("frame shorter than its 64-byte header"))?;
    let word =
        |n: usize| u32::from_le_bytes([header[n], header[n + 1], header[n + 2], header[n + 3]]);
    let count = word(0) as usize;
    let expected = segments(layout);
    if count != expected {
        return Err(corrupt(format!(
            "{count} segments; the dataset's layout needs {expected}"
        )));
    }
    let pixels = (layout.rows as usize) * (layout.columns as usize);
    let bytes = layout.bytes_per_sample();
    let mut planes = vec![vec![0u8; pixels]; count];
    for (s, plane) in planes.iter_mut().enumerate() {
        let start = word(4 + 4 * s) as usize;
        let end = if s + 1 < count {
            word(8 + 4 * s) as usize
        } else {
            data.len()
        };
        let segment = data
            .get(start..end)
            .filter(|_| start >= HEADER)
            .ok_or_else(|| {
                corrupt(format!(
                    "segment {} at {start}..{end} is outside the frame",
                    s + 1
                ))
            })?;
        unpack(segment, plane)?;
    }
    Ok(interleave(planes, usize::from(layout.components), bytes))
}

/// Planes (sample by sample, most significant byte first) to native little-endian
/// interleaved samples; the common layouts get loops the compiler can vectorise.
fn interleave(mut planes: Vec<Vec<u8>>, components: usize, bytes: usize) -> Vec<u8> {
    if components * bytes == 1 {
        return planes.pop().unwrap_or_default();
    }
    match (components, bytes, planes.as_slice()) {
        (1, 2, [high, low]) => high.iter().zip(low).flat_map(|(&h, &l)| [l, h]).collect(),
        (3, 1, [r, g, b]) => r
            .iter()
            .zip(g)
            .zip(b)
            .flat_map(|((&r, &g), &b)| [r, g, b])
            .collect(),
        _ => {
            let stride = components * bytes;
            let mut out = vec![0u8; planes[0].len() * stride];
            for (s, plane) in planes.iter().enumerate() {
                // Segment s holds byte (bytes - 1 - s % bytes) of sample s / bytes.
                let offset = (s / bytes) * bytes + (bytes - 1 - s % bytes);
                for (sample, &value) in out[offset..].iter_mut().step_by(stride).zip(plane) {
                    *sample = value;
                }
            }
            out
        }
    }
}

/// Encode one native frame as RLE, each row of each plane on its own (PS3.5 G.3.1).
pub fn encode(frame: &[u8], layout: &Layout) -> Result<Vec<u8>, CodecError> {
    check(layout)?;
    let count = segments(layout);
    debug_assert!(count <= MAX_SEGMENTS);
    let (rows, columns) = (layout.rows as usize, layout.columns as usize);
    let bytes = layout.bytes_per_sample();
    let stride = usize::from(layout.components) * bytes;
    let mut out = vec![0u8; HEADER];
    out[..4].copy_from_slice(&(count as u32).to_le_bytes());
    let mut row = Vec::with_capacity(columns);
    for s in 0..count {
        let offset = (s / bytes) * bytes + (bytes - 1 - s % bytes);
        let start = u32::try_from(out.len()).map_err(|_| corrupt("frame over 4 GB"))?;
        out[4 + 4 * s..8 + 4 * s].copy_from_slice(&start.to_le_bytes());
        for r in 0..rows {
            row.clear();
            row.extend((0..columns).map(|c| frame[(r * columns + c) * stride + offset]));
            pack(&row, &mut out);
        }
        if out.len() % 2 == 1 {
            out.push(0x80); // pads the segment to even length: a no-op run (PS3.5 G.3.1)
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_round_trips_runs_literals_and_edges() {
        let mut row: Vec<u8> = vec![7; 300];
        row.extend(0..=255u8);
        row.extend([1, 1, 2, 2, 2, 3]);
        let mut packed = Vec::new();
        pack(&row, &mut packed);
        assert!(packed.len() < row.len());
        let mut back = vec![0u8; row.len()];
        unpack(&packed, &mut back).unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn truncated_or_lying_streams_fail_cleanly() {
        let layout = Layout {
            rows: 4,
            columns: 5,
            components: 3,
            bits_allocated: 16,
            bits_stored: 16,
            signed: false,
        };
        let frame: Vec<u8> = (0..layout.frame_bytes())
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let encoded = encode(&frame, &layout).unwrap();
        assert_eq!(decode(&encoded, &layout).unwrap(), frame);
        for cut in [10, 64, encoded.len() / 2, encoded.len() - 1] {
            assert!(decode(&encoded[..cut], &layout).is_err(), "cut at {cut}");
        }
        let mut lying = encoded.clone();
        lying[0] = 15;
        assert!(decode(&lying, &layout).is_err());
        let mut outside = encoded;
        outside[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&outside, &layout).is_err());
    }
}
