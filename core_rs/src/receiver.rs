//! The data plane of one association: PDU decoding, command-set assembly, and
//! dataset streaming into spool files. Control PDUs and decoded commands go up to
//! the Python state machine as events; dataset bytes never leave Rust.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::command::{
    self, Command, C_FIND_RQ, C_GET_RQ, C_MOVE_RQ, C_STORE_RQ, MAX_COMMAND_LEN, N_CREATE_RQ,
    N_EVENT_REPORT_RQ, N_SET_RQ,
};
use crate::dataset::Syntax;
use crate::error::{abort_reason, CoreError, Result};
use crate::part10;
use crate::pdu::{Decoder, Event, Limits};
use crate::spool::SpoolWriter;

#[derive(Debug)]
pub enum RxEvent {
    /// A non-P-DATA PDU, header included (A-ASSOCIATE-RQ, A-RELEASE-RQ, A-ABORT, ...).
    Control { pdu_type: u8, pdu: Vec<u8> },
    /// A complete command set.
    Command { context_id: u8, command: Command },
    /// The dataset that followed the last command is complete: in a spool, or
    /// consumed and dropped, and why.
    Dataset {
        context_id: u8,
        spool: std::result::Result<Box<SpoolWriter>, Refusal>,
    },
}

/// Why a command's dataset was consumed without being written: each is the DIMSE
/// failure status the command is answered with (PS3.7 C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No service here takes a dataset with this command (0x0211).
    UnrecognizedOperation,
    /// Its SOP class is not the abstract syntax of its presentation context (0x0122).
    SopClassNotSupported,
}

impl Refusal {
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Refusal::UnrecognizedOperation => 0x0211,
            Refusal::SopClassNotSupported => 0x0122,
        }
    }
}

#[derive(Debug)]
struct Incoming {
    context_id: u8,
    spool: std::result::Result<Box<SpoolWriter>, Refusal>,
}

/// An accepted presentation context: what may be sent on it, and how it is encoded.
#[derive(Debug, Clone)]
pub struct Context {
    pub abstract_syntax: String,
    pub transfer_syntax: String,
}

/// A context as the assembler keeps it: with its transfer syntax parsed once.
#[derive(Debug, Clone)]
struct Accepted {
    context: Context,
    syntax: Syntax,
}

#[derive(Debug)]
struct Assembler {
    contexts: Vec<Option<Accepted>>,
    established: bool,
    spool_dir: PathBuf,
    spool_prefix: String,
    /// Spools start their disk writes as bytes land (durability "fsync").
    write_behind: bool,
    calling_ae: String,
    sequence: u64,
    command: Vec<u8>,
    command_context: Option<u8>,
    dataset: Option<Incoming>,
}

#[derive(Debug)]
pub struct Receiver {
    decoder: Decoder,
    assembler: Assembler,
    /// Requests whose dataset arrived in a spool and that are not answered yet:
    /// `feed` counts them up, the state machine down (through `open_requests`). A
    /// pump reads on past an object only while few are open (decision 43).
    open: Arc<AtomicUsize>,
}

fn unexpected(message: String) -> CoreError {
    CoreError::protocol(abort_reason::UNEXPECTED_PDU, message)
}

impl Receiver {
    #[must_use]
    pub fn new(limits: Limits, spool_dir: PathBuf, spool_prefix: String) -> Self {
        Self {
            decoder: Decoder::new(limits),
            assembler: Assembler {
                // Sized at `establish`: ~10 KB a connection that never associates
                // would otherwise pay for nothing.
                contexts: Vec::new(),
                established: false,
                spool_dir,
                spool_prefix,
                write_behind: false,
                calling_ae: String::new(),
                sequence: 0,
                command: Vec::new(),
                command_context: None,
                dataset: None,
            },
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The count of open requests, shared: whoever answers one takes it down
    /// (`answered`), from any thread, while the receiver may be with its pump.
    #[must_use]
    pub fn open_requests(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.open)
    }

    #[must_use]
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Spool files start their disk writes as the bytes arrive, so the group
    /// commit's sync finds them written (durability "fsync", decision 36).
    #[must_use]
    pub fn with_write_behind(mut self, on: bool) -> Self {
        self.assembler.write_behind = on;
        self
    }

    /// The association is accepted: P-DATA may flow on these contexts, by ID.
    pub fn establish(&mut self, calling_ae: &str, contexts: &[(u8, Context)]) {
        let asm = &mut self.assembler;
        calling_ae.trim().clone_into(&mut asm.calling_ae);
        asm.contexts = vec![None; 256];
        for (id, context) in contexts {
            asm.contexts[usize::from(*id)] = Some(Accepted {
                context: context.clone(),
                syntax: Syntax::from_uid(&context.transfer_syntax),
            });
        }
        asm.established = true;
    }

    #[must_use]
    pub fn at_boundary(&self) -> bool {
        self.decoder.at_boundary()
            && self.assembler.dataset.is_none()
            && self.assembler.command.is_empty()
    }

    /// A dataset is arriving: what follows until its last fragment is only
    /// dataset PDVs (or an abort), which a pump thread can take without the state machine.
    #[must_use]
    pub fn streaming(&self) -> bool {
        self.assembler.dataset.is_some()
    }

    /// The association is over: a dataset still arriving is dropped (its spool
    /// file deleted) now, not whenever the receiver itself is freed.
    pub fn abandon(&mut self) {
        self.assembler.dataset = None;
        self.assembler.command.clear();
        self.assembler.command_context = None;
    }

    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<RxEvent>> {
        let mut events = Vec::new();
        let asm = &mut self.assembler;
        self.decoder.feed(input, |event| match event {
            Event::Control { pdu_type, pdu } => {
                events.push(RxEvent::Control { pdu_type, pdu });
                Ok(())
            }
            Event::Pdv {
                context_id,
                command,
                last,
                data,
                end,
            } => asm.on_pdv(context_id, command, last && end, data, &mut events),
        })?;
        let opened = events
            .iter()
            .filter(|event| matches!(event, RxEvent::Dataset { spool: Ok(_), .. }))
            .count();
        if opened > 0 {
            self.open.fetch_add(opened, Ordering::AcqRel);
        }
        Ok(events)
    }
}

impl Assembler {
    fn context(&self, context_id: u8) -> Result<&Accepted> {
        self.contexts
            .get(usize::from(context_id))
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                CoreError::protocol(
                    abort_reason::INVALID_PDU_PARAMETER,
                    format!("PDV for presentation context {context_id}, which was not accepted"),
                )
            })
    }

    fn on_pdv(
        &mut self,
        context_id: u8,
        is_command: bool,
        complete: bool,
        data: &[u8],
        events: &mut Vec<RxEvent>,
    ) -> Result<()> {
        if !self.established {
            return Err(unexpected(
                "P-DATA-TF before the association was accepted".into(),
            ));
        }
        self.context(context_id)?;
        if !is_command {
            return self.on_dataset(context_id, complete, data, events);
        }
        if self.dataset.is_some() {
            return Err(unexpected(
                "command PDV while a dataset is still arriving".into(),
            ));
        }
        if self.command_context.is_some_and(|c| c != context_id) {
            return Err(unexpected(
                "command fragments on two presentation contexts".into(),
            ));
        }
        if self.command.len() + data.len() > MAX_COMMAND_LEN {
            return Err(CoreError::protocol(
                abort_reason::INVALID_PDU_PARAMETER,
                format!("command set longer than {MAX_COMMAND_LEN} bytes"),
            ));
        }
        self.command.extend_from_slice(data);
        self.command_context = Some(context_id);
        if !complete {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.command);
        self.command_context = None;
        let command = command::decode(&bytes)?;
        if command.has_dataset() {
            let accepted = self.context(context_id)?.clone();
            // Objects, the storage commitment reports the forwarder waits for,
            // Query/Retrieve identifiers and MPPS messages; any other dataset is
            // consumed and dropped (the command gets "unrecognized"). So is one
            // whose SOP class is not its context's (0x0122): refused before
            // anything of it is written.
            let taken = matches!(
                command.command_field,
                C_STORE_RQ
                    | N_EVENT_REPORT_RQ
                    | C_FIND_RQ
                    | C_MOVE_RQ
                    | C_GET_RQ
                    | N_CREATE_RQ
                    | N_SET_RQ
            );
            let spool = if command.sop_class_uid() != accepted.context.abstract_syntax {
                Err(Refusal::SopClassNotSupported)
            } else if !taken {
                Err(Refusal::UnrecognizedOperation)
            } else {
                let ts_uid = &accepted.context.transfer_syntax;
                Ok(Box::new(self.open_spool(&command, ts_uid, accepted.syntax)))
            };
            self.dataset = Some(Incoming { context_id, spool });
        }
        events.push(RxEvent::Command {
            context_id,
            command,
        });
        Ok(())
    }

    fn on_dataset(
        &mut self,
        context_id: u8,
        complete: bool,
        data: &[u8],
        events: &mut Vec<RxEvent>,
    ) -> Result<()> {
        let Some(incoming) = self.dataset.as_mut() else {
            return Err(unexpected(
                "dataset PDV without a command announcing it".into(),
            ));
        };
        if incoming.context_id != context_id {
            return Err(unexpected(format!(
                "dataset PDV on context {context_id}; its command came on {}",
                incoming.context_id
            )));
        }
        if let Ok(spool) = incoming.spool.as_mut() {
            spool.write(data);
        }
        if complete {
            if let Some(incoming) = self.dataset.take() {
                events.push(RxEvent::Dataset {
                    context_id,
                    spool: incoming.spool,
                });
            }
        }
        Ok(())
    }

    fn open_spool(&mut self, command: &Command, ts_uid: &str, syntax: Syntax) -> SpoolWriter {
        self.sequence += 1;
        let path = self
            .spool_dir
            .join(format!("{}-{}.part", self.spool_prefix, self.sequence));
        let meta = part10::file_meta(
            &command.affected_sop_class_uid,
            &command.affected_sop_instance_uid,
            ts_uid,
            &self.calling_ae,
        );
        SpoolWriter::create(path, &meta, syntax, self.write_behind)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::command::{encode_response, Response};
    use crate::pdu::encode_message;

    /// Secondary Capture, the SOP class of `store_rq`.
    pub(crate) const SC_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.7";

    pub(crate) fn context(abstract_syntax: &str, transfer_syntax: &str) -> Context {
        Context {
            abstract_syntax: abstract_syntax.into(),
            transfer_syntax: transfer_syntax.into(),
        }
    }

    pub(crate) fn store_rq() -> Vec<u8> {
        // A C-STORE-RQ command set, built with the response encoder's element writer
        // semantics: command field 0x0001, dataset present (0x0000).
        let mut rq = encode_response(&Response {
            command_field: C_STORE_RQ,
            message_id_being_responded_to: 1,
            affected_sop_class_uid: SC_IMAGE,
            affected_sop_instance_uid: "1.2.3.4",
            status: 0,
            error_comment: "",
        });
        // flip CommandDataSetType (0000,0800) from 0x0101 to 0x0000
        let pos = rq.windows(4).position(|w| w == [0, 0, 0, 8]).unwrap();
        rq[pos + 8] = 0;
        rq[pos + 9] = 0;
        rq
    }

    /// A receiver established on context 1 (`abstract_syntax`, explicit VR little
    /// endian) spooling into a fresh folder of its own (removed when the test ends,
    /// passed or failed), and the wire of one message of `store_rq` with
    /// `command_field` in place of C-STORE's and 5,000 dataset bytes on that context.
    fn one_message(
        abstract_syntax: &str,
        command_field: u16,
    ) -> (Receiver, tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::TempDir::new().unwrap();
        let mut rx = Receiver::new(Limits::default(), dir.path().to_path_buf(), "t".into());
        rx.establish(
            "CT1",
            &[(1, context(abstract_syntax, "1.2.840.10008.1.2.1"))],
        );
        let mut command = store_rq();
        // (0000,0100) Command Field, implicit VR: tag, length 2, then its value.
        let tag = [0, 0, 0, 1, 2, 0, 0, 0];
        let pos = command.windows(8).position(|w| w == tag).unwrap() + 8;
        command[pos..pos + 2].copy_from_slice(&command_field.to_le_bytes());
        let mut wire = encode_message(1, true, &command, 0);
        wire.extend(encode_message(1, false, &[9u8; 5000], 1024));
        (rx, dir, wire)
    }

    fn one_store(abstract_syntax: &str) -> (Receiver, tempfile::TempDir, Vec<u8>) {
        one_message(abstract_syntax, C_STORE_RQ)
    }

    /// Feeds `one_message`'s wire in 777-byte reads, checking that nothing is ever on
    /// disk, and returns why its dataset was refused.
    fn refused(message: (Receiver, tempfile::TempDir, Vec<u8>)) -> Refusal {
        let (mut rx, dir, wire) = message;
        let mut events = Vec::new();
        for chunk in wire.chunks(777) {
            events.extend(rx.feed(chunk).unwrap());
            // Nothing of it is ever on disk, not even while it arrives.
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
        assert_eq!(events.len(), 2);
        assert!(rx.at_boundary());
        match events.pop().unwrap() {
            RxEvent::Dataset {
                spool: Err(why), ..
            } => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn streams_a_store_into_a_spool() {
        let (mut rx, _dir, wire) = one_store(SC_IMAGE);
        let mut events = Vec::new();
        for chunk in wire.chunks(777) {
            events.extend(rx.feed(chunk).unwrap());
        }
        assert_eq!(events.len(), 2);
        let RxEvent::Dataset {
            spool: Ok(spool), ..
        } = events.pop().unwrap()
        else {
            panic!()
        };
        assert_eq!(spool.dataset_len(), 5000);
        assert!(rx.at_boundary());
    }

    #[test]
    fn a_store_on_another_sop_class_context_is_consumed_not_spooled() {
        let mr_image = "1.2.840.10008.5.1.4.1.1.4";
        let why = refused(one_store(mr_image));
        assert_eq!(why, Refusal::SopClassNotSupported);
        assert_eq!(why.status(), 0x0122);
    }

    #[test]
    fn a_dataset_no_service_takes_is_consumed_not_spooled() {
        // C-ECHO carries no dataset; one announced with it is nobody's to keep.
        let why = refused(one_message(SC_IMAGE, command::C_ECHO_RQ));
        assert_eq!(why, Refusal::UnrecognizedOperation);
        assert_eq!(why.status(), 0x0211);
    }

    #[test]
    fn pdata_before_association_and_unknown_context_are_protocol_errors() {
        let dir = std::env::temp_dir();
        let mut rx = Receiver::new(Limits::default(), dir.clone(), "t".into());
        let wire = encode_message(1, true, &store_rq(), 0);
        assert!(matches!(
            rx.feed(&wire),
            Err(CoreError::Protocol { reason: 2, .. })
        ));
        let mut rx = Receiver::new(Limits::default(), dir, "t".into());
        rx.establish("X", &[(3, context(SC_IMAGE, "1.2.840.10008.1.2"))]);
        assert!(matches!(
            rx.feed(&wire),
            Err(CoreError::Protocol { reason: 6, .. })
        ));
    }
}
