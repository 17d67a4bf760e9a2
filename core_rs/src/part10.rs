//! The DICOM Part-10 file preamble and File Meta Information (PS3.10 7.1), written in
//! front of the dataset bytes exactly as the modality sent them.

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
}
