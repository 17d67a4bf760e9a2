//! Sans-IO decoder and encoder of the DICOM upper-layer PDU stream (PS3.8 9.3).
//!
//! `Decoder::feed` takes whatever bytes the socket produced and reports complete
//! control PDUs and pieces of P-DATA-TF presentation data values (PDVs). PDV payloads
//! are handed out as slices of the input, never buffered whole, so a 256 KiB PDU costs
//! no 256 KiB allocation and no copy; the peer never chooses an allocation size.

use crate::error::{abort_reason, CoreError, Result};

pub const A_ASSOCIATE_RQ: u8 = 0x01;
pub const A_ASSOCIATE_AC: u8 = 0x02;
pub const A_ASSOCIATE_RJ: u8 = 0x03;
pub const P_DATA_TF: u8 = 0x04;
pub const A_RELEASE_RQ: u8 = 0x05;
pub const A_RELEASE_RP: u8 = 0x06;
pub const A_ABORT: u8 = 0x07;

const HEADER_LEN: usize = 6;
/// PDV item header: 4-byte item length, context ID, message control header.
const PDV_HEADER_LEN: usize = 6;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Our Maximum Length Receive: the largest P-DATA-TF variable field we accept.
    pub max_pdata: u32,
    /// The largest association-control PDU we accept (A-ASSOCIATE-RQ with its items).
    pub max_control: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pdata: 256 * 1024,
            max_control: 1024 * 1024,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole non-P-DATA PDU, header included, for the control plane to decode.
    Control { pdu_type: u8, pdu: Vec<u8> },
    /// A piece of one PDV's payload; `end` marks the PDV's last piece.
    Pdv {
        context_id: u8,
        command: bool,
        last: bool,
        data: &'a [u8],
        end: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum State {
    PduHeader,
    Control {
        pdu_type: u8,
        need: usize,
    },
    PdvHeader {
        pdu_left: u32,
    },
    PdvBody {
        pdu_left: u32,
        pdv_left: u32,
        context_id: u8,
        command: bool,
        last: bool,
    },
    Failed,
}

#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    state: State,
    header: [u8; HEADER_LEN],
    have: usize,
    control: Vec<u8>,
}

impl Decoder {
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::PduHeader,
            header: [0; HEADER_LEN],
            have: 0,
            control: Vec::new(),
        }
    }

    /// True when no PDU is partly received: a clean place for the peer to close.
    #[must_use]
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::PduHeader) && self.have == 0
    }

    /// Decode `input`, calling `sink` for each event in stream order.
    ///
    /// After an error the decoder stays failed: the association must be aborted.
    pub fn feed<'a, F>(&mut self, input: &'a [u8], mut sink: F) -> Result<()>
    where
        F: FnMut(Event<'a>) -> Result<()>,
    {
        let result = self.feed_inner(input, &mut sink);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn feed_inner<'a, F>(&mut self, input: &'a [u8], sink: &mut F) -> Result<()>
    where
        F: FnMut(Event<'a>) -> Result<()>,
    {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Failed => {
                    return Err(CoreError::protocol(
                        abort_reason::NOT_SPECIFIED,
                        "data after a protocol error",
                    ))
                }
                State::PduHeader => {
                    at += self.fill_header(&input[at..], HEADER_LEN);
                    if self.have == HEADER_LEN {
                        self.have = 0;
                        self.start_pdu(sink)?;
                    }
                }
                State::Control { pdu_type, need } => {
                    let n = need.min(input.len() - at);
                    self.control.extend_from_slice(&input[at..at + n]);
                    at += n;
                    if n == need {
                        self.state = State::PduHeader;
                        let pdu = std::mem::take(&mut self.control);
                        sink(Event::Control { pdu_type, pdu })?;
                    } else {
                        self.state = State::Control {
                            pdu_type,
                            need: need - n,
                        };
                    }
                }
                State::PdvHeader { pdu_left } => {
                    at += self.fill_header(&input[at..], PDV_HEADER_LEN);
                    if self.have == PDV_HEADER_LEN {
                        self.have = 0;
                        self.start_pdv(pdu_left, sink)?;
                    }
                }
                State::PdvBody {
                    pdu_left,
                    pdv_left,
                    context_id,
                    command,
                    last,
                } => {
                    let n = (pdv_left as usize).min(input.len() - at);
                    let end = n == pdv_left as usize;
                    // n <= pdv_left <= pdu_left, both u32.
                    let (pdu_left, pdv_left) = (pdu_left - n as u32, pdv_left - n as u32);
                    self.state = if end {
                        next_after_pdv(pdu_left)?
                    } else {
                        State::PdvBody {
                            pdu_left,
                            pdv_left,
                            context_id,
                            command,
                            last,
                        }
                    };
                    let data = &input[at..at + n];
                    at += n;
                    sink(Event::Pdv {
                        context_id,
                        command,
                        last,
                        data,
                        end,
                    })?;
                }
            }
        }
        Ok(())
    }

    fn fill_header(&mut self, input: &[u8], want: usize) -> usize {
        let n = (want - self.have).min(input.len());
        self.header[self.have..self.have + n].copy_from_slice(&input[..n]);
        self.have += n;
        n
    }

    fn start_pdu<'a, F>(&mut self, sink: &mut F) -> Result<()>
    where
        F: FnMut(Event<'a>) -> Result<()>,
    {
        let pdu_type = self.header[0];
        let length = u32::from_be_bytes([
            self.header[2],
            self.header[3],
            self.header[4],
            self.header[5],
        ]);
        match pdu_type {
            P_DATA_TF => {
                if length > self.limits.max_pdata {
                    return Err(CoreError::protocol(
                        abort_reason::INVALID_PDU_PARAMETER,
                        format!(
                            "P-DATA-TF of {length} bytes exceeds the negotiated maximum of {}",
                            self.limits.max_pdata
                        ),
                    ));
                }
                self.state = next_after_pdv(length).and_then(|s| {
                    if length == 0 {
                        Err(CoreError::protocol(
                            abort_reason::INVALID_PDU_PARAMETER,
                            "P-DATA-TF without any PDV item",
                        ))
                    } else {
                        Ok(s)
                    }
                })?;
                Ok(())
            }
            A_ASSOCIATE_RQ | A_ASSOCIATE_AC | A_ASSOCIATE_RJ | A_RELEASE_RQ | A_RELEASE_RP
            | A_ABORT => {
                let fixed = matches!(
                    pdu_type,
                    A_ASSOCIATE_RJ | A_RELEASE_RQ | A_RELEASE_RP | A_ABORT
                );
                if fixed && length != 4 {
                    return Err(CoreError::protocol(
                        abort_reason::INVALID_PDU_PARAMETER,
                        format!("PDU type {pdu_type:#04x} must be 4 bytes long, not {length}"),
                    ));
                }
                if length > self.limits.max_control {
                    return Err(CoreError::protocol(
                        abort_reason::INVALID_PDU_PARAMETER,
                        format!(
                            "association PDU of {length} bytes exceeds the limit of {}",
                            self.limits.max_control
                        ),
                    ));
                }
                self.control.clear();
                self.control.extend_from_slice(&self.header);
                if length == 0 {
                    let pdu = std::mem::take(&mut self.control);
                    self.state = State::PduHeader;
                    return sink(Event::Control { pdu_type, pdu });
                }
                self.state = State::Control {
                    pdu_type,
                    need: length as usize,
                };
                Ok(())
            }
            other => Err(CoreError::protocol(
                abort_reason::UNRECOGNIZED_PDU,
                format!("unknown PDU type {other:#04x}"),
            )),
        }
    }

    fn start_pdv<'a, F>(&mut self, pdu_left: u32, sink: &mut F) -> Result<()>
    where
        F: FnMut(Event<'a>) -> Result<()>,
    {
        let h = self.header;
        let item_len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let pdu_left = pdu_left - PDV_HEADER_LEN as u32;
        // The item length counts the context ID and control header (2 bytes).
        if item_len < 2 || item_len - 2 > pdu_left {
            return Err(CoreError::protocol(
                abort_reason::INVALID_PDU_PARAMETER,
                format!("PDV item length {item_len} does not fit its P-DATA-TF PDU"),
            ));
        }
        let (context_id, control) = (h[4], h[5]);
        let (command, last) = (control & 0x01 != 0, control & 0x02 != 0);
        let pdv_left = item_len - 2;
        if pdv_left == 0 {
            self.state = next_after_pdv(pdu_left)?;
            return sink(Event::Pdv {
                context_id,
                command,
                last,
                data: &[],
                end: true,
            });
        }
        self.state = State::PdvBody {
            pdu_left,
            pdv_left,
            context_id,
            command,
            last,
        };
        Ok(())
    }
}

/// After a PDV: another PDV item, or the next PDU. Trailing bytes too short for a
/// PDV header are a framing error.
fn next_after_pdv(pdu_left: u32) -> Result<State> {
    match pdu_left {
        0 => Ok(State::PduHeader),
        n if n < PDV_HEADER_LEN as u32 => Err(CoreError::protocol(
            abort_reason::INVALID_PDU_PARAMETER,
            format!("{n} trailing bytes in a P-DATA-TF PDU"),
        )),
        n => Ok(State::PdvHeader { pdu_left: n }),
    }
}

/// Encode one message (command set or dataset) as P-DATA-TF PDUs of at most
/// `max_pdu` bytes of variable field each (0: the peer set no limit).
#[must_use]
pub fn encode_message(context_id: u8, command: bool, data: &[u8], max_pdu: u32) -> Vec<u8> {
    // A PDU's variable field carries one PDV: 6 bytes of item header plus payload.
    let per_pdu = if max_pdu == 0 {
        data.len().max(1)
    } else {
        (max_pdu as usize).saturating_sub(PDV_HEADER_LEN).max(1)
    };
    let mut out = Vec::with_capacity(data.len() + 12 * (data.len() / per_pdu + 1));
    let mut chunks = data.chunks(per_pdu).peekable();
    if chunks.peek().is_none() {
        push_pdv(&mut out, context_id, command, true, &[]);
    }
    while let Some(chunk) = chunks.next() {
        push_pdv(
            &mut out,
            context_id,
            command,
            chunks.peek().is_none(),
            chunk,
        );
    }
    out
}

fn push_pdv(out: &mut Vec<u8>, context_id: u8, command: bool, last: bool, payload: &[u8]) {
    // Payloads are bounded by the u32 max PDU above.
    let item_len = payload.len() as u32 + 2;
    out.extend_from_slice(&[P_DATA_TF, 0]);
    out.extend_from_slice(&(item_len + 4).to_be_bytes());
    out.extend_from_slice(&item_len.to_be_bytes());
    out.push(context_id);
    out.push(u8::from(command) | (u8::from(last) << 1));
    out.extend_from_slice(payload);
}

/// A whole PDU or PDV as the decoder reports it, owned: for tests and the fuzz target.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Unit {
    Control(Vec<u8>),
    Pdv {
        context_id: u8,
        command: bool,
        last: bool,
        data: Vec<u8>,
    },
}

/// Joins the decoder's PDV pieces into owned units (tests, the fuzz target).
#[derive(Debug, Default)]
pub struct Collector {
    pub units: Vec<Unit>,
    pending: Vec<u8>,
}

impl Collector {
    pub fn push(&mut self, event: Event<'_>) {
        match event {
            Event::Control { pdu, .. } => self.units.push(Unit::Control(pdu)),
            Event::Pdv {
                context_id,
                command,
                last,
                data,
                end,
            } => {
                self.pending.extend_from_slice(data);
                if end {
                    let data = std::mem::take(&mut self.pending);
                    self.units.push(Unit::Pdv {
                        context_id,
                        command,
                        last,
                        data,
                    });
                }
            }
        }
    }
}

/// Decode a whole buffer into owned units, joining PDV pieces.
pub fn decode_all(input: &[u8], limits: Limits) -> Result<Vec<Unit>> {
    let mut collector = Collector::default();
    Decoder::new(limits).feed(input, |event| {
        collector.push(event);
        Ok(())
    })?;
    Ok(collector.units)
}

/// Re-encode decoded units; decoding the result gives the same units back.
#[must_use]
pub fn encode_all(units: &[Unit]) -> Vec<u8> {
    let mut out = Vec::new();
    for unit in units {
        match unit {
            Unit::Control(pdu) => out.extend_from_slice(pdu),
            Unit::Pdv {
                context_id,
                command,
                last,
                data,
            } => push_pdv(&mut out, *context_id, *command, *last, data),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release_rq() -> Vec<u8> {
        vec![A_RELEASE_RQ, 0, 0, 0, 0, 4, 0, 0, 0, 0]
    }

    fn sample_stream() -> Vec<u8> {
        let mut s = encode_message(1, true, b"command-bytes", 0);
        s.extend(encode_message(1, false, &[7u8; 1000], 300));
        s.extend(release_rq());
        s
    }

    #[test]
    fn decodes_the_same_at_every_split_point() {
        let stream = sample_stream();
        let whole = decode_all(&stream, Limits::default()).unwrap();
        assert_eq!(whole.len(), 1 + 4 + 1); // command, 4 fragments of 294 bytes, release
        for split in 0..stream.len() {
            let mut collector = Collector::default();
            let mut decoder = Decoder::new(Limits::default());
            for part in [&stream[..split], &stream[split..]] {
                decoder
                    .feed(part, |e| {
                        collector.push(e);
                        Ok(())
                    })
                    .unwrap();
            }
            let units = collector.units;
            assert_eq!(units, whole, "split at {split}");
            assert!(decoder.at_boundary());
        }
    }

    #[test]
    fn fragments_respect_max_pdu_and_mark_last() {
        let units = decode_all(
            &encode_message(3, false, &[1u8; 1000], 300),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(units.len(), 4);
        let lasts: Vec<bool> = units
            .iter()
            .map(|u| matches!(u, Unit::Pdv { last: true, .. }))
            .collect();
        assert_eq!(lasts, [false, false, false, true]);
    }

    #[test]
    fn round_trip_is_stable() {
        let units = decode_all(&sample_stream(), Limits::default()).unwrap();
        assert_eq!(
            decode_all(&encode_all(&units), Limits::default()).unwrap(),
            units
        );
    }

    fn reason_of(input: &[u8], limits: Limits) -> u8 {
        match decode_all(input, limits) {
            Err(CoreError::Protocol { reason, .. }) => reason,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn rejects_unknown_pdu_type() {
        assert_eq!(
            reason_of(&[0x09, 0, 0, 0, 0, 0], Limits::default()),
            abort_reason::UNRECOGNIZED_PDU
        );
    }

    #[test]
    fn rejects_pdata_over_the_negotiated_maximum() {
        let pdu = encode_message(1, false, &[0u8; 200], 0);
        let limits = Limits {
            max_pdata: 100,
            ..Limits::default()
        };
        assert_eq!(reason_of(&pdu, limits), abort_reason::INVALID_PDU_PARAMETER);
    }

    #[test]
    fn rejects_pdv_longer_than_its_pdu() {
        let mut pdu = encode_message(1, false, &[0u8; 20], 0);
        pdu[9] = 200; // PDV item length low byte
        assert_eq!(
            reason_of(&pdu, Limits::default()),
            abort_reason::INVALID_PDU_PARAMETER
        );
    }

    #[test]
    fn rejects_short_pdv_and_trailing_bytes() {
        // item length 1 (< 2)
        let pdu = [P_DATA_TF, 0, 0, 0, 0, 6, 0, 0, 0, 1, 1, 2];
        assert_eq!(
            reason_of(&pdu, Limits::default()),
            abort_reason::INVALID_PDU_PARAMETER
        );
        // PDU of 9 bytes: one empty PDV (6) and 3 stray bytes
        let pdu = [P_DATA_TF, 0, 0, 0, 0, 9, 0, 0, 0, 2, 1, 2, 0, 0, 0];
        assert_eq!(
            reason_of(&pdu, Limits::default()),
            abort_reason::INVALID_PDU_PARAMETER
        );
    }

    #[test]
    fn rejects_bad_fixed_length_and_oversized_control() {
        let abort = [A_ABORT, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0];
        assert_eq!(
            reason_of(&abort, Limits::default()),
            abort_reason::INVALID_PDU_PARAMETER
        );
        let rq = [A_ASSOCIATE_RQ, 0, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            reason_of(&rq, Limits::default()),
            abort_reason::INVALID_PDU_PARAMETER
        );
    }

    #[test]
    fn stays_failed_after_an_error() {
        let mut d = Decoder::new(Limits::default());
        assert!(d.feed(&[0x09, 0, 0, 0, 0, 0], |_| Ok(())).is_err());
        assert!(d.feed(&release_rq(), |_| Ok(())).is_err());
    }
}

/// The fuzz target's property, run on deterministic pseudo-random mutations of a
/// valid stream so that `cargo test` exercises it without a nightly toolchain.
#[cfg(test)]
mod random_inputs {
    use super::*;

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn mutated_streams_never_panic_and_round_trip() {
        let mut base = encode_message(1, true, b"command-set-bytes", 0);
        base.extend(encode_message(3, false, &[0xAB; 3000], 700));
        base.extend([A_RELEASE_RQ, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
        let limits = Limits {
            max_pdata: 4096,
            max_control: 4096,
        };
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut decoded_ok = 0;
        for _ in 0..20_000 {
            let mut input = base.clone();
            for _ in 0..=(rng.next() % 4) {
                let at = (rng.next() as usize) % input.len();
                match rng.next() % 3 {
                    0 => input[at] = rng.next() as u8,
                    1 => input.truncate(at),
                    _ => input.insert(at, rng.next() as u8),
                }
                if input.is_empty() {
                    break;
                }
            }
            if let Ok(units) = decode_all(&input, limits) {
                decoded_ok += 1;
                assert_eq!(decode_all(&encode_all(&units), limits).unwrap(), units);
            }
        }
        assert!(
            decoded_ok > 100,
            "mutations should not all be fatal: {decoded_ok}"
        );
    }
}
