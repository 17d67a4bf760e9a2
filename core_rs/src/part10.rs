//! The DICOM Part-10 file preamble and File Meta Information (PS3.10 7.1), written in
//! front of the dataset bytes exactly as the modality sent them; and read back from the
//! start of a file a client uploads (STOW-RS), so its dataset is stored the same way.

use crate::error::{CoreError, Result};

/// pacs-edge's Implementation Class UID (a UUID-derived 2.25 root, PS3.5 B.2).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.250390454986342387839870427946582063611";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("PACSEDGE_", env!("CARGO_PKG_VERSION"));

fn element(out: &mut Vec<u8>, element: u16, vr: [u8; 2], value: &[u8], pad: u8) {
    let len = value.len() + value.len() % 2;
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&vr);
    // Meta values are UIDs (<= 64) and short strings: the 16-bit form always fits.
    if &vr == b"OB" {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(len as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(len as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
    if len != value.len() {
        out.push(pad);
    }
}

/// Preamble, "DICM" and group 0002 for one object.
#[must_use]
pub fn file_meta(
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax_uid: &str,
    source_ae: &str,
) -> Vec<u8> {
    let mut group = Vec::with_capacity(256);
    element(&mut group, 0x0001, *b"OB", &[0, 1], 0);
    element(&mut group, 0x0002, *b"UI", sop_class_uid.as_bytes(), 0);
    element(&mut group, 0x0003, *b"UI", sop_instance_uid.as_bytes(), 0);
    element(
        &mut group,
        0x0010,
        *b"UI",
        transfer_syntax_uid.as_bytes(),
        0,
    );
    element(
        &mut group,
        0x0012,
        *b"UI",
        IMPLEMENTATION_CLASS_UID.as_bytes(),
        0,
    );
    element(
        &mut group,
        0x0013,
        *b"SH",
        IMPLEMENTATION_VERSION_NAME.as_bytes(),
        b' ',
    );
    let source_ae = source_ae.trim();
    if !source_ae.is_empty() {
        element(&mut group, 0x0016, *b"AE", source_ae.as_bytes(), b' ');
    }
    let mut out = Vec::with_capacity(132 + 12 + group.len());
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    element(
        &mut out,
        0x0000,
        *b"UL",
        &(group.len() as u32).to_le_bytes(),
        0,
    );
    out.extend_from_slice(&group);
    out
}

/// What a Part-10 file's meta says about its dataset (PS3.10 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
}

/// Meta of a file larger than this is refused: real ones are a few hundred bytes.
pub const MAX_META: usize = 64 * 1024;

/// Reads the preamble, "DICM" and group 0002 at the start of `data`.
/// `Ok(None)`: more bytes are needed; `Ok(Some((meta, n)))`: the dataset starts at `n`.
pub fn read_meta(data: &[u8]) -> Result<Option<(Meta, usize)>> {
    if data.len() < 132 {
        return Ok(None);
    }
    if &data[128..132] != b"DICM" {
        return Err(CoreError::Dataset(
            "not a DICOM Part-10 file: no \"DICM\" after the 128-byte preamble".into(),
        ));
    }
    let (mut sop_class, mut sop_instance, mut syntax) = (None, None, None);
    let mut at = 132;
    loop {
        // The next element's group tells whether the meta goes on; 6 more say how long.
        if data.len() < at + 2 {
            return more_or_too_long(at);
        }
        if u16::from_le_bytes([data[at], data[at + 1]]) != 0x0002 {
            break;
        }
        if data.len() < at + 8 {
            return more_or_too_long(at);
        }
        let element = u16::from_le_bytes([data[at + 2], data[at + 3]]);
        let vr = [data[at + 4], data[at + 5]];
        let (start, len) = if matches!(
            &vr,
            b"OB" | b"OW" | b"OF" | b"OD" | b"OL" | b"OV" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR"
        ) {
            if data.len() < at + 12 {
                return more_or_too_long(at);
            }
            let len =
                u32::from_le_bytes([data[at + 8], data[at + 9], data[at + 10], data[at + 11]]);
            (at + 12, len as usize)
        } else {
            (
                at + 8,
                usize::from(u16::from_le_bytes([data[at + 6], data[at + 7]])),
            )
        };
        if start.saturating_add(len) > MAX_META {
            return Err(CoreError::Dataset(format!(
                "File Meta Information longer than {MAX_META} bytes"
            )));
        }
        if data.len() < start + len {
            return Ok(None);
        }
        let text = || {
            String::from_utf8_lossy(&data[start..start + len])
                .trim_end_matches(['\0', ' '])
                .to_owned()
        };
        match element {
            0x0002 => sop_class = Some(text()),
            0x0003 => sop_instance = Some(text()),
            0x0010 => syntax = Some(text()),
            _ => {}
        }
        at = start + len;
    }
    let need = |value: Option<String>, name: &str| {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| CoreError::Dataset(format!("the File Meta Information has no {name}")))
    };
    let meta = Meta {
        sop_class_uid: need(sop_class, "Media Storage SOP Class UID (0002,0002)")?,
        sop_instance_uid: need(sop_instance, "Media Storage SOP Instance UID (0002,0003)")?,
        transfer_syntax_uid: need(syntax, "Transfer Syntax UID (0002,0010)")?,
    };
    Ok(Some((meta, at)))
}

fn more_or_too_long(at: usize) -> Result<Option<(Meta, usize)>> {
    if at > MAX_META {
        return Err(CoreError::Dataset(format!(
            "File Meta Information longer than {MAX_META} bytes"
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_length_and_padding() {
        let meta = file_meta(
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3",
            "1.2.840.10008.1.2.1",
            "CT1",
        );
        assert_eq!(&meta[128..132], b"DICM");
        let gl = u32::from_le_bytes(meta[140..144].try_into().unwrap()) as usize;
        assert_eq!(gl, meta.len() - 144);
        assert_eq!(meta.len() % 2, 0);
        // odd-length UID "1.2.3" is NUL padded, odd AE "CT1" space padded
        assert!(meta.windows(6).any(|w| w == b"1.2.3\0"));
        assert!(meta.windows(4).any(|w| w == b"CT1 "));
    }

    #[test]
    fn reads_back_what_it_writes_in_any_split() {
        let mut file = file_meta(
            "1.2.840.10008.5.1.4.1.1.7",
            "1.2.3",
            "1.2.840.10008.1.2.1",
            "X",
        );
        let at = file.len();
        file.extend_from_slice(&[0x08, 0x00, 0x16, 0x00]);
        for cut in 0..at {
            assert_eq!(read_meta(&file[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (meta, start) = read_meta(&file).unwrap().unwrap();
        assert_eq!(start, at);
        assert_eq!(meta.sop_instance_uid, "1.2.3");
        assert_eq!(meta.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    }

    #[test]
    fn refuses_what_is_not_part10() {
        assert!(read_meta(&[0u8; 200]).is_err());
        let mut no_syntax = vec![0u8; 128];
        no_syntax.extend_from_slice(b"DICM");
        no_syntax.extend_from_slice(&[2, 0, 2, 0, b'U', b'I', 2, 0, b'1', 0]);
        no_syntax.extend_from_slice(&[8, 0, 0, 0, b'U', b'L', 0, 0]);
        let err = read_meta(&no_syntax).unwrap_err().to_string();
        assert!(err.contains("(0002,0003)"), "{err}");
    }
}
