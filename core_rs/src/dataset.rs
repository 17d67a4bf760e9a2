//! Streaming extraction of the index's key attributes from a dataset as it arrives
//! (PS3.5 7.1, 7.5): element headers are walked, unwanted values are skipped without
//! being buffered, and parsing stops before pixel data. Memory is O(1) per object.

use flate2::{Decompress, FlushDecompress, Status};

/// How a dataset is encoded on the wire (PS3.5 10, A.1-A.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    ImplicitLittle,
    ExplicitLittle,
    ExplicitBig,
    DeflatedExplicitLittle,
}

impl Syntax {
    /// Every encapsulated (compressed) syntax encodes its dataset as explicit VR LE.
    #[must_use]
    pub fn from_uid(uid: &str) -> Self {
        match uid.trim_end_matches('\0') {
            "1.2.840.10008.1.2" => Self::ImplicitLittle,
            "1.2.840.10008.1.2.2" => Self::ExplicitBig,
            "1.2.840.10008.1.2.1.99" => Self::DeflatedExplicitLittle,
            _ => Self::ExplicitLittle,
        }
    }
}

/// (tag, keyword) of the attributes the index keeps, in tag order.
pub const KEY_ATTRIBUTES: &[(u32, &str)] = &[
    (0x0008_0005, "SpecificCharacterSet"),
    (0x0008_0016, "SOPClassUID"),
    (0x0008_0018, "SOPInstanceUID"),
    (0x0008_0020, "StudyDate"),
    (0x0008_0021, "SeriesDate"),
    (0x0008_0030, "StudyTime"),
    (0x0008_0050, "AccessionNumber"),
    (0x0008_0060, "Modality"),
    (0x0008_0090, "ReferringPhysicianName"),
    (0x0008_1030, "StudyDescription"),
    (0x0008_103E, "SeriesDescription"),
    (0x0010_0010, "PatientName"),
    (0x0010_0020, "PatientID"),
    (0x0010_0021, "IssuerOfPatientID"),
    (0x0010_0030, "PatientBirthDate"),
    (0x0010_0040, "PatientSex"),
    (0x0018_0015, "BodyPartExamined"),
    (0x0020_000D, "StudyInstanceUID"),
    (0x0020_000E, "SeriesInstanceUID"),
    (0x0020_0010, "StudyID"),
    (0x0020_0011, "SeriesNumber"),
    (0x0020_0013, "InstanceNumber"),
    (0x0028_0008, "NumberOfFrames"),
];
/// Past the last key attribute's group nothing more is needed.
const STOP_TAG: u32 = 0x0029_0000;
/// Longer values are not key attributes worth indexing (LO is 64 chars, PN 5x64).
const MAX_VALUE: u32 = 1024;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: u32 = 0xFFFE_E000;
const ITEM_END: u32 = 0xFFFE_E00D;
const SEQUENCE_END: u32 = 0xFFFE_E0DD;
/// Nested sequences deeper than this are not walked further (no stack blow-up).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Sequence { implicit: bool },
    Item { implicit: bool },
}

struct Header {
    tag: u32,
    vr: [u8; 2],
    len: u32,
    size: usize,
}

// Four independent facts of parser state (encoding, endianness, VR checked, done);
// an enum would only rename them.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug)]
pub struct HeadParser {
    implicit: bool,
    /// Whether the first element's VR was checked against the declared syntax.
    vr_checked: bool,
    big_endian: bool,
    inflater: Option<(Decompress, Vec<u8>)>,
    carry: Vec<u8>,
    skip: u64,
    pending: Option<(u32, usize)>,
    stack: Vec<Frame>,
    done: bool,
    problem: Option<String>,
    found: Vec<(u32, Vec<u8>)>,
}

impl HeadParser {
    #[must_use]
    pub fn new(syntax: Syntax) -> Self {
        Self {
            implicit: syntax == Syntax::ImplicitLittle,
            vr_checked: false,
            big_endian: syntax == Syntax::ExplicitBig,
            inflater: (syntax == Syntax::DeflatedExplicitLittle)
                .then(|| (Decompress::new(false), vec![0u8; 16 * 1024])),
            carry: Vec::with_capacity(16),
            skip: 0,
            pending: None,
            stack: Vec::new(),
            done: false,
            problem: None,
            found: Vec::new(),
        }
    }

    /// True once every key attribute that can appear has been passed.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Why parsing stopped early, if it did (the object is still stored as sent).
    #[must_use]
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    #[must_use]
    pub fn into_attributes(self) -> Vec<(u32, Vec<u8>)> {
        self.found
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.done {
            return;
        }
        match self.inflater.take() {
            None => self.push_plain(data),
            Some((mut inflater, mut out)) => {
                let mut input = data;
                while !input.is_empty() && !self.done {
                    let (in0, out0) = (inflater.total_in(), inflater.total_out());
                    let status = inflater.decompress(input, &mut out, FlushDecompress::None);
                    let used = (inflater.total_in() - in0) as usize;
                    let made = (inflater.total_out() - out0) as usize;
                    input = &input[used..];
                    self.push_plain(&out[..made]);
                    match status {
                        Ok(Status::StreamEnd) => break,
                        Ok(_) if used == 0 && made == 0 => break,
                        Ok(_) => {}
                        Err(e) => return self.stop(format!("deflate stream: {e}")),
                    }
                }
                self.inflater = Some((inflater, out));
            }
        }
    }

    fn stop(&mut self, problem: String) {
        self.problem = Some(problem);
        self.done = true;
    }

    fn push_plain(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.done {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64);
                self.skip -= n;
                data = &data[n as usize..];
                continue;
            }
            if let Some((tag, len)) = self.pending {
                let n = (len - self.carry.len()).min(data.len());
                self.carry.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.carry.len() == len {
                    self.found.push((tag, std::mem::take(&mut self.carry)));
                    self.pending = None;
                }
                continue;
            }
            let before = self.carry.len();
            let take = (12 - before).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            match self.parse_header() {
                None => data = &data[take..],
                Some(header) => {
                    data = &data[header.size - before..];
                    self.carry.clear();
                    self.on_element(&header);
                }
            }
        }
    }

    fn implicit_here(&self) -> bool {
        match self.stack.last() {
            Some(Frame::Sequence { implicit } | Frame::Item { implicit }) => *implicit,
            None => self.implicit,
        }
    }

    fn u16_at(&self, at: usize) -> u16 {
        let b = [self.carry[at], self.carry[at + 1]];
        if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = [
            self.carry[at],
            self.carry[at + 1],
            self.carry[at + 2],
            self.carry[at + 3],
        ];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Parse the element header at the start of `carry`, or None if more bytes are needed.
    fn parse_header(&mut self) -> Option<Header> {
        if self.carry.len() < 8 {
            return None;
        }
        if !self.vr_checked {
            // Some writers label an implicit-VR dataset as explicit; like pydicom,
            // trust the bytes: a VR is two upper-case letters (PS3.5 6.2).
            self.vr_checked = true;
            if !self.implicit && !self.carry[4..6].iter().all(u8::is_ascii_uppercase) {
                self.implicit = true;
            }
        }
        let tag = (u32::from(self.u16_at(0)) << 16) | u32::from(self.u16_at(2));
        // Item and delimitation tags have no VR in any syntax (PS3.5 7.5).
        if tag >> 16 == 0xFFFE || self.implicit_here() {
            return Some(Header {
                tag,
                vr: *b"  ",
                len: self.u32_at(4),
                size: 8,
            });
        }
        let vr = [self.carry[4], self.carry[5]];
        let long = matches!(
            &vr,
            b"OB"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"OW"
                | b"SQ"
                | b"SV"
                | b"UC"
                | b"UN"
                | b"UR"
                | b"UT"
                | b"UV"
        );
        if !long {
            return Some(Header {
                tag,
                vr,
                len: u32::from(self.u16_at(6)),
                size: 8,
            });
        }
        if self.carry.len() < 12 {
            return None;
        }
        Some(Header {
            tag,
            vr,
            len: self.u32_at(8),
            size: 12,
        })
    }

    fn on_element(&mut self, h: &Header) {
        let implicit = self.implicit_here();
        match h.tag {
            ITEM => match self.stack.last() {
                Some(Frame::Sequence { implicit }) if h.len == UNDEFINED => {
                    let implicit = *implicit;
                    self.enter(Frame::Item { implicit });
                }
                Some(Frame::Sequence { .. }) => self.skip = u64::from(h.len),
                _ => self.stop("item outside a sequence".into()),
            },
            ITEM_END => {
                if !matches!(self.stack.pop(), Some(Frame::Item { .. })) {
                    self.stop("item delimiter outside an item".into());
                }
            }
            SEQUENCE_END => {
                if !matches!(self.stack.pop(), Some(Frame::Sequence { .. })) {
                    self.stop("sequence delimiter outside a sequence".into());
                }
            }
            tag => {
                if self.stack.is_empty() {
                    if tag >= STOP_TAG {
                        self.done = true;
                        return;
                    }
                    if h.len <= MAX_VALUE && KEY_ATTRIBUTES.iter().any(|(t, _)| *t == tag) {
                        if h.len == 0 {
                            self.found.push((tag, Vec::new()));
                        } else {
                            self.pending = Some((tag, h.len as usize));
                        }
                        return;
                    }
                }
                if h.len == UNDEFINED {
                    // Only SQ, UN and encapsulated data may be undefined; an undefined
                    // UN holds implicit VR LE (PS3.5 6.2.2 note).
                    self.enter(Frame::Sequence {
                        implicit: implicit || &h.vr == b"UN",
                    });
                } else {
                    self.skip = u64::from(h.len);
                }
            }
        }
    }

    fn enter(&mut self, frame: Frame) {
        if self.stack.len() >= MAX_DEPTH {
            self.stop(format!("sequences nested deeper than {MAX_DEPTH}"));
        } else {
            self.stack.push(frame);
        }
    }
}

/// Parse key attributes from a whole dataset buffer (tests, bulk import).
#[must_use]
pub fn key_attributes(data: &[u8], syntax: Syntax) -> Vec<(u32, Vec<u8>)> {
    let mut parser = HeadParser::new(syntax);
    parser.push(data);
    parser.into_attributes()
}

#[must_use]
pub fn keyword(tag: u32) -> &'static str {
    KEY_ATTRIBUTES
        .iter()
        .find(|(t, _)| *t == tag)
        .map_or("", |(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn explicit(tag: u32, vr: [u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(&vr);
        if matches!(&vr, b"SQ" | b"OB" | b"UN") {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn implicit(tag: u32, len: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn sample_explicit() -> Vec<u8> {
        let mut ds = explicit(0x0008_0016, *b"UI", b"1.2.840.10008.5.1.4.1.1.2\0");
        ds.extend(explicit(0x0008_0018, *b"UI", b"1.2.3.4\0"));
        // An undefined-length sequence holding a PatientID that must NOT be picked up.
        let mut sq = Vec::new();
        sq.extend_from_slice(&[
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        sq.extend(implicit(ITEM, UNDEFINED, &[]));
        sq.extend(explicit(0x0010_0020, *b"LO", b"WRONG "));
        sq.extend(implicit(ITEM_END, 0, &[]));
        sq.extend(implicit(SEQUENCE_END, 0, &[]));
        ds.extend(sq);
        ds.extend(explicit(0x0009_0010, *b"OB", &[0u8; 5000]));
        ds.extend(explicit(0x0010_0020, *b"LO", b"PID-1 "));
        ds.extend(explicit(0x0020_000D, *b"UI", b"1.2.3\0"));
        ds.extend(explicit(0x7FE0_0010, *b"OB", &[1u8; 64]));
        ds
    }

    fn get(attrs: &[(u32, Vec<u8>)], tag: u32) -> Option<&[u8]> {
        attrs
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn finds_top_level_attributes_at_any_split() {
        let ds = sample_explicit();
        for split in 0..ds.len() {
            let mut p = HeadParser::new(Syntax::ExplicitLittle);
            p.push(&ds[..split]);
            p.push(&ds[split..]);
            assert!(p.is_done(), "split {split}");
            assert!(p.problem().is_none());
            let attrs = p.into_attributes();
            assert_eq!(
                get(&attrs, 0x0010_0020),
                Some(&b"PID-1 "[..]),
                "split {split}"
            );
            assert_eq!(get(&attrs, 0x0008_0018), Some(&b"1.2.3.4\0"[..]));
            assert_eq!(get(&attrs, 0x0020_000D), Some(&b"1.2.3\0"[..]));
        }
    }

    #[test]
    fn implicit_vr() {
        let mut ds = implicit(0x0008_0018, 4, b"1.2\0");
        ds.extend(implicit(0x0008_1115, UNDEFINED, &[]));
        ds.extend(implicit(ITEM, 10, &[0u8; 10]));
        ds.extend(implicit(SEQUENCE_END, 0, &[]));
        ds.extend(implicit(0x0010_0020, 2, b"P1"));
        let attrs = key_attributes(&ds, Syntax::ImplicitLittle);
        assert_eq!(get(&attrs, 0x0010_0020), Some(&b"P1"[..]));
    }

    #[test]
    fn deflated() {
        let plain = sample_explicit();
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&plain).unwrap();
        let deflated = enc.finish().unwrap();
        let mut p = HeadParser::new(Syntax::DeflatedExplicitLittle);
        for chunk in deflated.chunks(7) {
            p.push(chunk);
        }
        assert_eq!(get(&p.into_attributes(), 0x0010_0020), Some(&b"PID-1 "[..]));
    }

    #[test]
    fn implicit_data_labelled_explicit_is_detected() {
        let mut ds = implicit(0x0008_0016, 4, b"1.2\0");
        ds.extend(implicit(0x0010_0020, 2, b"P1"));
        let attrs = key_attributes(&ds, Syntax::ExplicitLittle);
        assert_eq!(get(&attrs, 0x0010_0020), Some(&b"P1"[..]));
    }

    #[test]
    fn garbage_never_panics() {
        let mut p = HeadParser::new(Syntax::ExplicitLittle);
        p.push(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0, 1, 2, 3]);
        assert!(p.problem().is_some());
    }
}
