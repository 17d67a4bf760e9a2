//! A-ASSOCIATE-RQ decoding and A-ASSOCIATE-AC encoding (PS3.8 9.3.2, 9.3.3 and
//! Annex D): the association set-up, beside `pdu`'s P-DATA framing.
//!
//! The negotiation itself (which contexts, which syntax, which roles) is decided in
//! Python (`engine.dicom.negotiation`); this module only reads and writes the bytes.
//! Through pynetdicom's PDU classes the same work cost ~12 ms of the event loop for
//! a storescu request of 120 contexts.

use crate::error::{abort_reason, CoreError, Result};

const ASSOCIATE_RQ: u8 = 0x01;
const ASSOCIATE_AC: u8 = 0x02;
const APPLICATION_CONTEXT_ITEM: u8 = 0x10;
const CONTEXT_RQ_ITEM: u8 = 0x20;
const CONTEXT_AC_ITEM: u8 = 0x21;
const ABSTRACT_SYNTAX_ITEM: u8 = 0x30;
const TRANSFER_SYNTAX_ITEM: u8 = 0x40;
const USER_INFORMATION_ITEM: u8 = 0x50;
const MAX_LENGTH_ITEM: u8 = 0x51;
const IMPLEMENTATION_CLASS_ITEM: u8 = 0x52;
const ROLE_SELECTION_ITEM: u8 = 0x54;
const IMPLEMENTATION_VERSION_ITEM: u8 = 0x55;
const EXTENDED_NEGOTIATION_ITEM: u8 = 0x56;
/// Protocol version, reserved, called AE, calling AE, 32 reserved bytes.
const FIXED_FIELDS: usize = 68;

pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedContext {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
}

/// SCP/SCU Role Selection (PS3.7 D.3.3.4) for one SOP class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSelection {
    pub sop_class_uid: String,
    pub scu: bool,
    pub scp: bool,
}

/// SOP Class Extended Negotiation (PS3.7 D.3.3.5): the class and its service-class
/// application information, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedNegotiation {
    pub sop_class_uid: String,
    pub info: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssociateRq {
    pub protocol_version: u16,
    pub called_ae: String,
    pub calling_ae: String,
    pub application_context: String,
    pub contexts: Vec<ProposedContext>,
    /// Maximum Length Received: 0 means no limit (PS3.8 D.1).
    pub max_pdu: u32,
    pub implementation_class_uid: String,
    pub implementation_version_name: String,
    pub roles: Vec<RoleSelection>,
    pub extended: Vec<ExtendedNegotiation>,
}

/// One presentation context's answer: its ID, result (PS3.8 Table 9-18) and syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextResult {
    pub id: u8,
    pub result: u8,
    pub transfer_syntax: String,
}

/// Answered with A-ABORT, "invalid PDU parameter value" (PS3.8 Table 9-26).
fn malformed(what: impl Into<String>) -> CoreError {
    CoreError::protocol(
        abort_reason::INVALID_PDU_PARAMETER,
        format!("undecodable A-ASSOCIATE-RQ: {}", what.into()),
    )
}

/// The items in `data`: (type, value), each checked to fit.
fn items<'a>(mut data: &'a [u8], within: &str) -> Result<Vec<(u8, &'a [u8])>> {
    let mut found = Vec::new();
    while !data.is_empty() {
        if data.len() < 4 {
            return Err(malformed(format!(
                "{} stray bytes at the end of {within}",
                data.len()
            )));
        }
        let kind = data[0];
        let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let Some(value) = data.get(4..4 + length) else {
            return Err(malformed(format!(
                "item 0x{kind:02x} of {length} bytes runs past the end of {within}"
            )));
        };
        found.push((kind, value));
        data = &data[4 + length..];
    }
    Ok(found)
}

/// A UID as sent: some stacks pad it with a NUL or a space.
fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .trim_end_matches(['\0', ' '])
        .to_owned()
}

fn ae_title(value: &[u8]) -> String {
    String::from_utf8_lossy(value).trim().to_owned()
}

fn uid_and_rest<'a>(value: &'a [u8], item: &str) -> Result<(String, &'a [u8])> {
    let Some(length) = value.get(..2) else {
        return Err(malformed(format!("{item} item too short")));
    };
    let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
    let Some(uid) = value.get(2..2 + length) else {
        return Err(malformed(format!("{item} item's UID runs past the item")));
    };
    Ok((text(uid), &value[2 + length..]))
}

/// Decode a whole A-ASSOCIATE-RQ PDU (its 6-byte header included).
pub fn decode_associate_rq(pdu: &[u8]) -> Result<AssociateRq> {
    if pdu.len() < 6 || pdu[0] != ASSOCIATE_RQ {
        return Err(malformed("not an A-ASSOCIATE-RQ PDU"));
    }
    let length = u32::from_be_bytes([pdu[2], pdu[3], pdu[4], pdu[5]]) as usize;
    let Some(body) = pdu.get(6..6 + length) else {
        return Err(malformed("shorter than its length field"));
    };
    let Some(fixed) = body.get(..FIXED_FIELDS) else {
        return Err(malformed("shorter than its fixed fields"));
    };
    let mut request = AssociateRq {
        protocol_version: u16::from_be_bytes([fixed[0], fixed[1]]),
        called_ae: ae_title(&fixed[4..20]),
        calling_ae: ae_title(&fixed[20..36]),
        ..AssociateRq::default()
    };
    for (kind, value) in items(&body[FIXED_FIELDS..], "the PDU")? {
        match kind {
            APPLICATION_CONTEXT_ITEM => request.application_context = text(value),
            CONTEXT_RQ_ITEM => request.contexts.push(proposed_context(value)?),
            USER_INFORMATION_ITEM => user_information(value, &mut request)?,
            _ => {} // PS3.8 9.3.1: unknown items are ignored
        }
    }
    Ok(request)
}

fn proposed_context(value: &[u8]) -> Result<ProposedContext> {
    let Some(&id) = value.first() else {
        return Err(malformed("empty presentation context item"));
    };
    let mut context = ProposedContext {
        id,
        abstract_syntax: String::new(),
        transfer_syntaxes: Vec::new(),
    };
    for (kind, sub) in items(value.get(4..).unwrap_or_default(), "a presentation context")? {
        match kind {
            ABSTRACT_SYNTAX_ITEM => context.abstract_syntax = text(sub),
            TRANSFER_SYNTAX_ITEM => {
                let syntax = text(sub);
                if !syntax.is_empty() && !context.transfer_syntaxes.contains(&syntax) {
                    context.transfer_syntaxes.push(syntax);
                }
            }
            _ => {}
        }
    }
    Ok(context)
}

fn user_information(value: &[u8], request: &mut AssociateRq) -> Result<()> {
    for (kind, sub) in items(value, "the user information")? {
        match kind {
            MAX_LENGTH_ITEM => {
                let Ok(bytes) = <[u8; 4]>::try_from(sub) else {
                    return Err(malformed("maximum length item is not 4 bytes"));
                };
                request.max_pdu = u32::from_be_bytes(bytes);
            }
            IMPLEMENTATION_CLASS_ITEM => request.implementation_class_uid = text(sub),
            IMPLEMENTATION_VERSION_ITEM => request.implementation_version_name = text(sub),
            ROLE_SELECTION_ITEM => {
                let (sop_class_uid, roles) = uid_and_rest(sub, "role selection")?;
                let [scu, scp] = roles else {
                    return Err(malformed("role selection item's roles are not 2 bytes"));
                };
                request.roles.push(RoleSelection {
                    sop_class_uid,
                    scu: *scu == 1,
                    scp: *scp == 1,
                });
            }
            EXTENDED_NEGOTIATION_ITEM => {
                let (sop_class_uid, info) = uid_and_rest(sub, "extended negotiation")?;
                request.extended.push(ExtendedNegotiation {
                    sop_class_uid,
                    info: info.to_vec(),
                });
            }
            _ => {} // asynchronous operations, user identity, ...: not negotiated here
        }
    }
    Ok(())
}

fn push_item(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.push(0);
    // Item lengths are u16: every value here is a UID, an AE title or a few bytes.
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

fn with_uid(uid: &str, rest: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(2 + uid.len() + rest.len());
    value.extend_from_slice(&(uid.len() as u16).to_be_bytes());
    value.extend_from_slice(uid.as_bytes());
    value.extend_from_slice(rest);
    value
}

fn ae_field(title: &str) -> [u8; 16] {
    let mut field = [b' '; 16];
    for (slot, byte) in field.iter_mut().zip(title.bytes()) {
        *slot = byte;
    }
    field
}

/// What this side says about itself in its user information item.
pub struct Implementation<'a> {
    pub max_pdu: u32,
    pub class_uid: &'a str,
    pub version_name: &'a str,
}

/// An A-ASSOCIATE-AC PDU: the called and calling AE titles echoed from the request,
/// every context's result, our user information, the role selection and extended
/// negotiation replies.
#[must_use]
pub fn encode_associate_ac(
    called_ae: &str,
    calling_ae: &str,
    results: &[ContextResult],
    us: &Implementation<'_>,
    roles: &[RoleSelection],
    extended: &[ExtendedNegotiation],
) -> Vec<u8> {
    let mut body = Vec::with_capacity(FIXED_FIELDS + 64 * results.len() + 128);
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&ae_field(called_ae));
    body.extend_from_slice(&ae_field(calling_ae));
    body.extend_from_slice(&[0; 32]);
    push_item(
        &mut body,
        APPLICATION_CONTEXT_ITEM,
        APPLICATION_CONTEXT.as_bytes(),
    );
    for result in results {
        let mut value = vec![result.id, 0, result.result, 0];
        push_item(
            &mut value,
            TRANSFER_SYNTAX_ITEM,
            result.transfer_syntax.as_bytes(),
        );
        push_item(&mut body, CONTEXT_AC_ITEM, &value);
    }
    let mut user = Vec::new();
    push_item(&mut user, MAX_LENGTH_ITEM, &us.max_pdu.to_be_bytes());
    push_item(
        &mut user,
        IMPLEMENTATION_CLASS_ITEM,
        us.class_uid.as_bytes(),
    );
    for role in roles {
        let flags = [u8::from(role.scu), u8::from(role.scp)];
        push_item(
            &mut user,
            ROLE_SELECTION_ITEM,
            &with_uid(&role.sop_class_uid, &flags),
        );
    }
    push_item(
        &mut user,
        IMPLEMENTATION_VERSION_ITEM,
        us.version_name.as_bytes(),
    );
    for reply in extended {
        let value = with_uid(&reply.sop_class_uid, &reply.info);
        push_item(&mut user, EXTENDED_NEGOTIATION_ITEM, &value);
    }
    push_item(&mut body, USER_INFORMATION_ITEM, &user);
    let mut pdu = Vec::with_capacity(6 + body.len());
    pdu.push(ASSOCIATE_AC);
    pdu.push(0);
    pdu.extend_from_slice(&(body.len() as u32).to_be_bytes());
    pdu.extend_from_slice(&body);
    pdu
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_bytes() -> Vec<u8> {
        let mut body = vec![0, 1, 0, 0];
        body.extend_from_slice(&ae_field("PACS_EDGE"));
        body.extend_from_slice(&ae_field("CT1"));
        body.extend_from_slice(&[0; 32]);
        push_item(
            &mut body,
            APPLICATION_CONTEXT_ITEM,
            APPLICATION_CONTEXT.as_bytes(),
        );
        let mut context = vec![1, 0, 0, 0];
        push_item(
            &mut context,
            ABSTRACT_SYNTAX_ITEM,
            b"1.2.840.10008.5.1.4.1.1.2\0",
        );
        push_item(&mut context, TRANSFER_SYNTAX_ITEM, b"1.2.840.10008.1.2.1");
        push_item(&mut context, TRANSFER_SYNTAX_ITEM, b"1.2.840.10008.1.2");
        push_item(&mut context, TRANSFER_SYNTAX_ITEM, b"1.2.840.10008.1.2.1");
        push_item(&mut body, CONTEXT_RQ_ITEM, &context);
        push_item(&mut body, 0x77, b"an item type nobody knows");
        let mut user = Vec::new();
        push_item(&mut user, MAX_LENGTH_ITEM, &16384u32.to_be_bytes());
        push_item(
            &mut user,
            IMPLEMENTATION_CLASS_ITEM,
            b"1.2.276.0.7230010.3.0.3.6.8",
        );
        push_item(
            &mut user,
            ROLE_SELECTION_ITEM,
            &with_uid("1.2.840.10008.1.20.1", &[0, 1]),
        );
        push_item(
            &mut user,
            EXTENDED_NEGOTIATION_ITEM,
            &with_uid("1.2.3", &[1, 0, 1]),
        );
        push_item(&mut user, IMPLEMENTATION_VERSION_ITEM, b"OFFIS_DCMTK_368");
        push_item(&mut body, USER_INFORMATION_ITEM, &user);
        let mut pdu = vec![ASSOCIATE_RQ, 0];
        pdu.extend_from_slice(&(body.len() as u32).to_be_bytes());
        pdu.extend_from_slice(&body);
        pdu
    }

    #[test]
    fn decodes_every_field_a_negotiation_needs() {
        let request = decode_associate_rq(&request_bytes()).unwrap();
        assert_eq!(request.protocol_version, 1);
        assert_eq!(
            (request.called_ae.as_str(), request.calling_ae.as_str()),
            ("PACS_EDGE", "CT1")
        );
        assert_eq!(request.application_context, APPLICATION_CONTEXT);
        assert_eq!(
            request.contexts,
            [ProposedContext {
                id: 1,
                abstract_syntax: "1.2.840.10008.5.1.4.1.1.2".into(), // NUL padding gone
                transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into(), "1.2.840.10008.1.2".into()],
            }]
        );
        assert_eq!(request.max_pdu, 16384);
        assert_eq!(
            request.implementation_class_uid,
            "1.2.276.0.7230010.3.0.3.6.8"
        );
        assert_eq!(request.implementation_version_name, "OFFIS_DCMTK_368");
        assert_eq!(
            request.roles,
            [RoleSelection {
                sop_class_uid: "1.2.840.10008.1.20.1".into(),
                scu: false,
                scp: true
            }]
        );
        assert_eq!(request.extended[0].info, [1, 0, 1]);
    }

    #[test]
    fn no_truncation_panics_and_overruns_are_errors() {
        let whole = request_bytes();
        for end in 0..whole.len() {
            let mut cut = whole[..end].to_vec();
            if cut.len() >= 6 {
                let length = (cut.len() - 6) as u32;
                cut[2..6].copy_from_slice(&length.to_be_bytes());
            }
            // A cut on an item boundary is a shorter, valid request; anything else fails.
            let _ = decode_associate_rq(&cut);
        }
        let mut overlong = whole.clone();
        overlong[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_associate_rq(&overlong).is_err());
        let mut bad_item = whole;
        let at = 6 + FIXED_FIELDS + 2; // the application context item's length
        bad_item[at..at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
        let err = decode_associate_rq(&bad_item).unwrap_err();
        assert!(err.to_string().contains("runs past the end"), "{err}");
    }

    #[test]
    fn the_acceptance_reads_back_as_items() {
        let request = decode_associate_rq(&request_bytes()).unwrap();
        let results = [ContextResult {
            id: 1,
            result: 0,
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
        }];
        let us = Implementation {
            max_pdu: 262_144,
            class_uid: "1.2.3.4",
            version_name: "PACS_EDGE",
        };
        let ac = encode_associate_ac(
            &request.called_ae,
            &request.calling_ae,
            &results,
            &us,
            &request.roles,
            &[],
        );
        assert_eq!(ac[0], ASSOCIATE_AC);
        assert_eq!(
            ac.len(),
            6 + u32::from_be_bytes([ac[2], ac[3], ac[4], ac[5]]) as usize
        );
        assert_eq!(&ac[10..26], b"PACS_EDGE       ");
        assert_eq!(&ac[26..42], b"CT1             ");
        let found = items(&ac[6 + FIXED_FIELDS..], "the AC").unwrap();
        let kinds: Vec<u8> = found.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                APPLICATION_CONTEXT_ITEM,
                CONTEXT_AC_ITEM,
                USER_INFORMATION_ITEM
            ]
        );
        assert_eq!(&found[1].1[..4], &[1, 0, 0, 0]);
        let user = items(found[2].1, "user information").unwrap();
        assert_eq!(user[0], (MAX_LENGTH_ITEM, &262_144u32.to_be_bytes()[..]));
        assert_eq!(user[2].0, ROLE_SELECTION_ITEM);
        assert_eq!(&user[2].1[user[2].1.len() - 2..], &[0, 1]);
    }
}
