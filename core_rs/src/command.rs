//! DIMSE command sets (PS3.7 6.3, 9.3): group 0000, always implicit VR little endian.

use crate::error::{CoreError, Result};

pub const C_STORE_RQ: u16 = 0x0001;
pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
/// Query/Retrieve requests: their identifiers are read back from a spool file.
pub const C_GET_RQ: u16 = 0x0010;
pub const C_FIND_RQ: u16 = 0x0020;
pub const C_MOVE_RQ: u16 = 0x0021;
pub const C_ECHO_RQ: u16 = 0x0030;
/// Modality Performed Procedure Step messages: their datasets are relayed.
pub const N_SET_RQ: u16 = 0x0120;
pub const N_CREATE_RQ: u16 = 0x0140;
/// `CommandDataSetType` value meaning "no dataset follows" (PS3.7 E.1-1).
pub const NO_DATASET: u16 = 0x0101;
/// Command sets are a few hundred bytes; anything this large is hostile.
pub const MAX_COMMAND_LEN: usize = 64 * 1024;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Command {
    pub command_field: u16,
    pub message_id: u16,
    pub message_id_being_responded_to: Option<u16>,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    pub priority: u16,
    pub data_set_type: u16,
    pub status: Option<u16>,
    pub error_comment: String,
    pub move_originator_ae: String,
    pub move_originator_message_id: Option<u16>,
    /// C-MOVE-RQ: the AE title the sub-operations go to.
    pub move_destination: String,
    /// N-SET-RQ (and N-GET, N-ACTION): the object the request is about (PS3.7 10.1).
    pub requested_sop_class_uid: String,
    pub requested_sop_instance_uid: String,
}

impl Command {
    #[must_use]
    pub fn has_dataset(&self) -> bool {
        self.data_set_type != NO_DATASET
    }

    /// The SOP class the request is about: Affected, or Requested for the
    /// N-services that name their object that way (N-SET).
    #[must_use]
    pub fn sop_class_uid(&self) -> &str {
        if self.affected_sop_class_uid.is_empty() {
            &self.requested_sop_class_uid
        } else {
            &self.affected_sop_class_uid
        }
    }
}

fn us(tag: u32, value: &[u8]) -> Result<u16> {
    match value {
        [a, b] => Ok(u16::from_le_bytes([*a, *b])),
        _ => Err(CoreError::Command(format!(
            "({:04X},{:04X}) must be 2 bytes",
            tag >> 16,
            tag & 0xffff
        ))),
    }
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .trim_end_matches(['\0', ' '])
        .trim_start()
        .to_owned()
}

/// Decode a command set; every element must lie in group 0000 and within the buffer.
pub fn decode(bytes: &[u8]) -> Result<Command> {
    let mut cmd = Command {
        data_set_type: NO_DATASET,
        ..Command::default()
    };
    let mut seen_field = false;
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 8) else {
            return Err(CoreError::Command(format!(
                "truncated element header at offset {at}"
            )));
        };
        let group = u16::from_le_bytes([header[0], header[1]]);
        let element = u16::from_le_bytes([header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if group != 0x0000 {
            return Err(CoreError::Command(format!(
                "element ({group:04X},{element:04X}) outside group 0000"
            )));
        }
        let start = at + 8;
        let Some(value) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
            return Err(CoreError::Command(format!(
                "element (0000,{element:04X}) of {len} bytes overruns the command set"
            )));
        };
        let tag = u32::from(element);
        match element {
            0x0002 => cmd.affected_sop_class_uid = text(value),
            0x0003 => cmd.requested_sop_class_uid = text(value),
            0x0100 => {
                cmd.command_field = us(tag, value)?;
                seen_field = true;
            }
            0x0110 => cmd.message_id = us(tag, value)?,
            0x0120 => cmd.message_id_being_responded_to = Some(us(tag, value)?),
            0x0600 => cmd.move_destination = text(value),
            0x0700 => cmd.priority = us(tag, value)?,
            0x0800 => cmd.data_set_type = us(tag, value)?,
            0x0900 => cmd.status = Some(us(tag, value)?),
            0x0902 => cmd.error_comment = text(value),
            0x1000 => cmd.affected_sop_instance_uid = text(value),
            0x1001 => cmd.requested_sop_instance_uid = text(value),
            0x1030 => cmd.move_originator_ae = text(value),
            0x1031 => cmd.move_originator_message_id = Some(us(tag, value)?),
            _ => {}
        }
        at = start + len;
    }
    if !seen_field {
        return Err(CoreError::Command("no (0000,0100) Command Field".into()));
    }
    Ok(cmd)
}

/// A response command set (C-ECHO-RSP, C-STORE-RSP, ...), encoded with its group length.
#[derive(Debug, Clone, Default)]
pub struct Response<'a> {
    pub command_field: u16,
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: &'a str,
    pub affected_sop_instance_uid: &'a str,
    pub status: u16,
    pub error_comment: &'a str,
}

fn push(out: &mut Vec<u8>, element: u16, value: &[u8], pad: u8) {
    let padded = value.len() + value.len() % 2;
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    // Command values are short strings and integers: far below u32::MAX.
    out.extend_from_slice(&(padded as u32).to_le_bytes());
    out.extend_from_slice(value);
    if padded != value.len() {
        out.push(pad);
    }
}

#[must_use]
pub fn encode_response(rsp: &Response<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(160);
    if !rsp.affected_sop_class_uid.is_empty() {
        push(&mut body, 0x0002, rsp.affected_sop_class_uid.as_bytes(), 0);
    }
    push(&mut body, 0x0100, &rsp.command_field.to_le_bytes(), 0);
    push(
        &mut body,
        0x0120,
        &rsp.message_id_being_responded_to.to_le_bytes(),
        0,
    );
    push(&mut body, 0x0800, &NO_DATASET.to_le_bytes(), 0);
    push(&mut body, 0x0900, &rsp.status.to_le_bytes(), 0);
    if !rsp.error_comment.is_empty() {
        // Error Comment is LO: at most 64 characters.
        let comment = &rsp.error_comment.as_bytes()[..rsp.error_comment.len().min(64)];
        push(&mut body, 0x0902, comment, b' ');
    }
    if !rsp.affected_sop_instance_uid.is_empty() {
        push(
            &mut body,
            0x1000,
            rsp.affected_sop_instance_uid.as_bytes(),
            0,
        );
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    push(&mut out, 0x0000, &(body.len() as u32).to_le_bytes(), 0);
    out.extend_from_slice(&body);
    out
}

/// A C-STORE-RQ command set (PS3.7 9.3.1.1), always followed by a dataset.
#[must_use]
pub fn encode_store_request(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    priority: u16,
    move_originator: Option<(&str, u16)>,
) -> Vec<u8> {
    const C_STORE_RQ: u16 = 0x0001;
    const HAS_DATASET: u16 = 0x0000; // any value but 0x0101
    let mut body = Vec::with_capacity(160);
    push(&mut body, 0x0002, sop_class_uid.as_bytes(), 0);
    push(&mut body, 0x0100, &C_STORE_RQ.to_le_bytes(), 0);
    push(&mut body, 0x0110, &message_id.to_le_bytes(), 0);
    push(&mut body, 0x0700, &priority.to_le_bytes(), 0);
    push(&mut body, 0x0800, &HAS_DATASET.to_le_bytes(), 0);
    push(&mut body, 0x1000, sop_instance_uid.as_bytes(), 0);
    // A C-MOVE's sub-operation names who asked for it (PS3.7 9.3.1.1).
    if let Some((ae, originator_message_id)) = move_originator {
        push(&mut body, 0x1030, ae.as_bytes(), b' ');
        push(&mut body, 0x1031, &originator_message_id.to_le_bytes(), 0);
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    push(&mut out, 0x0000, &(body.len() as u32).to_le_bytes(), 0);
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_sub_operation_names_its_originator() {
        let bytes = encode_store_request(3, "1.2", "1.2.3", 0, Some(("VIEWER", 17)));
        let cmd = decode(&bytes).unwrap();
        assert_eq!(cmd.move_originator_ae, "VIEWER");
        assert_eq!(cmd.move_originator_message_id, Some(17));
    }

    #[test]
    fn n_set_names_the_requested_object() {
        let mut body = Vec::new();
        push(&mut body, 0x0003, b"1.2.840.10008.3.1.2.3.3", 0);
        push(&mut body, 0x0100, &0x0120u16.to_le_bytes(), 0);
        push(&mut body, 0x0110, &5u16.to_le_bytes(), 0);
        push(&mut body, 0x0800, &0u16.to_le_bytes(), 0);
        push(&mut body, 0x1001, b"1.2.3.9", 0);
        let cmd = decode(&body).unwrap();
        assert_eq!(cmd.requested_sop_class_uid, "1.2.840.10008.3.1.2.3.3");
        assert_eq!(cmd.requested_sop_instance_uid, "1.2.3.9");
        assert!(cmd.affected_sop_class_uid.is_empty());
    }

    #[test]
    fn store_request_decodes_back() {
        let bytes = encode_store_request(9, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", 2, None);
        let cmd = decode(&bytes).unwrap();
        assert_eq!(cmd.command_field, 0x0001);
        assert_eq!(cmd.message_id, 9);
        assert_eq!(cmd.affected_sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        assert_eq!(cmd.affected_sop_instance_uid, "1.2.3.4");
        assert_eq!(cmd.priority, 2);
        assert!(cmd.has_dataset());
    }

    #[test]
    fn response_decodes_back() {
        let bytes = encode_response(&Response {
            command_field: 0x8001,
            message_id_being_responded_to: 7,
            affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
            affected_sop_instance_uid: "1.2.3",
            status: 0xA700,
            error_comment: "disk full",
        });
        let cmd = decode(&bytes).unwrap();
        assert_eq!(cmd.command_field, 0x8001);
        assert_eq!(cmd.message_id_being_responded_to, Some(7));
        assert_eq!(cmd.status, Some(0xA700));
        assert_eq!(cmd.affected_sop_instance_uid, "1.2.3");
        assert!(!cmd.has_dataset());
        // group length equals the bytes after it
        let gl = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(gl, bytes.len() - 12);
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(&[1, 2, 3]).is_err());
        assert!(decode(&[8, 0, 0x10, 0, 2, 0, 0, 0, 1, 0]).is_err()); // group 0008
        assert!(decode(&[0, 0, 0, 1, 0xff, 0xff, 0, 0]).is_err()); // overrun
        assert!(decode(&[0, 0, 0x10, 1, 2, 0, 0, 0, 1, 0]).is_err()); // no command field
        assert!(decode(&[0, 0, 0, 1, 3, 0, 0, 0, 1, 0, 0]).is_err()); // US of 3 bytes
    }
}
