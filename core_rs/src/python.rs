//! The one binding layer: exposes the plain-Rust data plane as `core_rs._core`.
//!
//! Rules kept here and nowhere else: inputs arrive through the buffer protocol
//! (zero-copy), work over `DETACH_THRESHOLD` bytes runs with the GIL released through
//! `run_detached`, and every `CoreError` maps to one class of `core_rs._errors`.

// pyo3 extracts arguments (PyBuffer, Vec, PathBuf) by value; they cannot be borrowed.
#![allow(clippy::needless_pass_by_value)]

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::associate::{self, ContextResult, ExtendedNegotiation, RoleSelection};
use crate::catalog;
use crate::codec;
use crate::command::{self, Response};
use crate::dataset::{self, Syntax};
use crate::error::CoreError;
use crate::pdu::Limits;
use crate::pump::{Back, Completions, Ended, Pump};
use crate::receiver::{Context, Receiver, RxEvent};
use crate::spool::{self, Part10Upload, SpoolWriter, StoredObject};
use crate::warm;

pyo3::import_exception!(core_rs._errors, ProtocolError);
pyo3::import_exception!(core_rs._errors, CommandError);
pyo3::import_exception!(core_rs._errors, DatasetError);
pyo3::import_exception!(core_rs._errors, StorageError);
pyo3::import_exception!(core_rs._errors, OutOfSpaceError);
pyo3::import_exception!(core_rs._errors, CodecError);
pyo3::import_exception!(core_rs._errors, NotRepresentable);
pyo3::import_exception!(core_rs._errors, VerificationFailed);
pyo3::import_exception!(core_rs._errors, RecordError);

/// Below this many bytes releasing and re-taking the GIL costs more than it frees
/// (measured: a 16 KiB BLAKE3+write takes ~5 µs, a detach/attach pair ~1 µs and a
/// possible wait for the GIL much more under load).
const DETACH_THRESHOLD: usize = 16 * 1024;

fn run_detached<T, F>(py: Python<'_>, work_bytes: usize, work: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    if work_bytes < DETACH_THRESHOLD {
        work()
    } else {
        py.detach(work)
    }
}

fn to_pyerr(err: CoreError) -> PyErr {
    Python::attach(|py| {
        let message = err.to_string();
        match err {
            CoreError::Protocol { reason, .. } => ProtocolError::new_err((message, reason)),
            CoreError::Command(_) => CommandError::new_err(message),
            CoreError::Dataset(_) => DatasetError::new_err(message),
            CoreError::NoSpace(io) | CoreError::Io(io) => {
                let errno = io.raw_os_error().unwrap_or(0);
                let mapped = if matches!(errno, 28 | 122) {
                    OutOfSpaceError::new_err((errno, message))
                } else {
                    StorageError::new_err((errno, message))
                };
                mapped.set_cause(py, Some(PyErr::from(io)));
                mapped
            }
            CoreError::Codec(codec::CodecError::Unsupported(_)) => {
                NotRepresentable::new_err(message)
            }
            CoreError::Codec(codec::CodecError::Mismatch(_)) => {
                VerificationFailed::new_err(message)
            }
            CoreError::Codec(codec::CodecError::Corrupt(_)) => CodecError::new_err(message),
            CoreError::Record(_) => RecordError::new_err(message),
        }
    })
}

/// Borrow a contiguous buffer's bytes for the duration of one call.
fn with_bytes<T>(buffer: &PyBuffer<u8>, f: impl FnOnce(&[u8]) -> T) -> PyResult<T> {
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err("buffer must be C-contiguous"));
    }
    // SAFETY: the buffer is contiguous and stays exported (so a bytearray cannot be
    // resized or freed) until `buffer` drops after this call. The caller promises not
    // to mutate it meanwhile: the engine hands in its own receive buffer from the one
    // event-loop thread, which is inside this call.
    let bytes =
        unsafe { std::slice::from_raw_parts(buffer.buf_ptr().cast::<u8>(), buffer.len_bytes()) };
    Ok(f(bytes))
}

#[pyclass(module = "core_rs._core", name = "Command", frozen, get_all)]
pub struct PyCommand {
    context_id: u8,
    command_field: u16,
    message_id: u16,
    message_id_being_responded_to: Option<u16>,
    affected_sop_class_uid: String,
    affected_sop_instance_uid: String,
    priority: u16,
    has_dataset: bool,
    status: Option<u16>,
    error_comment: String,
    move_originator_ae: String,
    move_destination: String,
    requested_sop_class_uid: String,
    requested_sop_instance_uid: String,
}

#[pymethods]
impl PyCommand {
    fn __repr__(&self) -> String {
        format!(
            "Command(context_id={}, command_field={:#06x}, message_id={}, sop_instance={:?})",
            self.context_id, self.command_field, self.message_id, self.affected_sop_instance_uid
        )
    }
}

#[pyclass(module = "core_rs._core", name = "ControlPdu", frozen, get_all)]
pub struct PyControlPdu {
    pdu_type: u8,
    data: Py<PyBytes>,
}

#[pyclass(module = "core_rs._core", name = "DatasetReceived", frozen, get_all)]
pub struct PyDatasetReceived {
    context_id: u8,
    spool: Option<Py<PySpoolFile>>,
    /// 0 with a spool; without, the failure status its command is answered with.
    status: u16,
}

#[pyclass(module = "core_rs._core", name = "SpoolFile", frozen)]
pub struct PySpoolFile {
    writer: Mutex<Option<SpoolWriter>>,
    dataset_length: u64,
}

impl PySpoolFile {
    /// A spool is finished or read once; the second call is a bug in the caller.
    fn take_writer(&self) -> PyResult<SpoolWriter> {
        self.writer
            .lock()
            .map_err(|_| PyRuntimeError::new_err("spool lock poisoned"))?
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("spool file already finished or discarded"))
    }
}

#[pymethods]
impl PySpoolFile {
    #[getter]
    fn dataset_length(&self) -> u64 {
        self.dataset_length
    }

    /// fdatasync (if durable) and move into the object store; releases the GIL.
    fn finish(
        &self,
        py: Python<'_>,
        objects_dir: PathBuf,
        durable: bool,
    ) -> PyResult<PyStoredObject> {
        let writer = self.take_writer()?;
        let stored = py
            .detach(move || writer.finish(&objects_dir, durable))
            .map_err(to_pyerr)?;
        Ok(PyStoredObject::from(stored))
    }

    /// The dataset bytes of a small message (at most `limit`); the spool is deleted.
    fn read_dataset<'py>(&self, py: Python<'py>, limit: u64) -> PyResult<Bound<'py, PyBytes>> {
        let writer = self.take_writer()?;
        let data = writer.into_dataset(limit).map_err(to_pyerr)?;
        Ok(PyBytes::new(py, &data))
    }

    /// Delete the spool file now (it is also deleted when garbage-collected).
    fn discard(&self) {
        if let Ok(mut guard) = self.writer.lock() {
            guard.take();
        }
    }
}

/// A Part-10 file arriving in pieces (STOW-RS): `write` each piece, then `finish`.
#[pyclass(module = "core_rs._core", name = "Part10Upload")]
pub struct PyPart10Upload {
    inner: Option<Part10Upload>,
}

#[pymethods]
impl PyPart10Upload {
    #[new]
    #[pyo3(signature = (spool_path, source_ae, write_behind = false))]
    fn new(spool_path: PathBuf, source_ae: &str, write_behind: bool) -> Self {
        Self {
            inner: Some(Part10Upload::new(spool_path, source_ae, write_behind)),
        }
    }

    fn write(&mut self, py: Python<'_>, data: PyBuffer<u8>) -> PyResult<()> {
        let upload = self
            .inner
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("upload already finished"))?;
        with_bytes(&data, |bytes| {
            run_detached(py, bytes.len(), || upload.write(bytes))
        })?
        .map_err(to_pyerr)
    }

    /// (spool, SOP Class UID, SOP Instance UID, Transfer Syntax UID) from the meta.
    fn finish(&mut self, py: Python<'_>) -> PyResult<(Py<PySpoolFile>, String, String, String)> {
        let upload = self
            .inner
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("upload already finished"))?;
        let (writer, meta) = upload.finish().map_err(to_pyerr)?;
        let dataset_length = writer.dataset_len();
        let spool = Py::new(
            py,
            PySpoolFile {
                writer: Mutex::new(Some(writer)),
                dataset_length,
            },
        )?;
        Ok((
            spool,
            meta.sop_class_uid,
            meta.sop_instance_uid,
            meta.transfer_syntax_uid,
        ))
    }
}

#[pyclass(module = "core_rs._core", name = "StoredObject", frozen, get_all)]
pub struct PyStoredObject {
    path: String,
    hash: String,
    meta_length: u64,
    dataset_length: u64,
    existed: bool,
    attributes: Vec<(String, Vec<u8>)>,
    parse_problem: Option<String>,
}

impl From<StoredObject> for PyStoredObject {
    fn from(s: StoredObject) -> Self {
        Self {
            path: s.path.to_string_lossy().into_owned(),
            hash: s.hash,
            meta_length: s.meta_len,
            dataset_length: s.dataset_len,
            existed: s.existed,
            attributes: named(s.attributes),
            parse_problem: s.parse_problem,
        }
    }
}

#[pymethods]
impl PyStoredObject {
    /// The attributes as text, keyword -> value without PS3.5's NUL and space
    /// padding, when every value is ASCII (the common subset of every character
    /// set); None when one is not, and `attributes` must be decoded with the
    /// object's Specific Character Set. Per object, this spares Python a dict, an
    /// ASCII test and a decode of each value.
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        if !self.attributes.iter().all(|(_, value)| value.is_ascii()) {
            return Ok(None);
        }
        let text = PyDict::new(py);
        for (keyword, value) in &self.attributes {
            // ASCII, so UTF-8: the conversion cannot fail.
            let value = std::str::from_utf8(value).unwrap_or_default();
            text.set_item(keyword, value.trim_matches(['\0', ' ']))?;
        }
        Ok(Some(text))
    }
}

fn named(attributes: Vec<(u32, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    attributes
        .into_iter()
        .map(|(tag, v)| (dataset::keyword(tag).to_owned(), v))
        .collect()
}

#[pyclass(module = "core_rs._core", name = "Receiver")]
pub struct PyReceiver {
    /// None while the receiver is with its pump thread.
    inner: Option<Receiver>,
    pump: Option<Pump>,
    /// The receiver's count of unanswered requests, reachable while it is pumping.
    open: Arc<AtomicUsize>,
}

impl PyReceiver {
    fn receiver(&mut self) -> PyResult<&mut Receiver> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("the receiver is with its pump thread"))
    }
}

#[pymethods]
impl PyReceiver {
    #[new]
    #[pyo3(signature = (spool_dir, spool_prefix, max_pdu, max_control = 1 << 20, write_behind = false))]
    fn new(
        spool_dir: PathBuf,
        spool_prefix: String,
        max_pdu: u32,
        max_control: u32,
        write_behind: bool,
    ) -> Self {
        let limits = Limits {
            max_pdata: max_pdu,
            max_control,
        };
        let receiver =
            Receiver::new(limits, spool_dir, spool_prefix).with_write_behind(write_behind);
        Self {
            open: receiver.open_requests(),
            inner: Some(receiver),
            pump: None,
        }
    }

    /// `contexts`: (ID, abstract syntax UID, transfer syntax UID) of each accepted one.
    fn establish(&mut self, calling_ae: &str, contexts: Vec<(u8, String, String)>) -> PyResult<()> {
        let contexts: Vec<(u8, Context)> = contexts
            .into_iter()
            .map(|(id, abstract_syntax, transfer_syntax)| {
                let context = Context {
                    abstract_syntax,
                    transfer_syntax,
                };
                (id, context)
            })
            .collect();
        self.receiver()?.establish(calling_ae, &contexts);
        Ok(())
    }

    #[getter]
    fn at_boundary(&self) -> bool {
        self.inner.as_ref().is_some_and(Receiver::at_boundary)
    }

    /// A request whose dataset came in a spool is answered: one fewer open, so a
    /// pump that stopped reading on at its bound reads on again once restarted.
    fn answered(&self) {
        // Never below zero: one answered twice must not let the pump run ahead.
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    fn feed(&mut self, py: Python<'_>, data: PyBuffer<u8>) -> PyResult<Vec<Py<PyAny>>> {
        let inner = self.receiver()?;
        let events = with_bytes(&data, |bytes| {
            run_detached(py, bytes.len(), || inner.feed(bytes))
        })?
        .map_err(to_pyerr)?;
        events_to_py(py, events)
    }

    /// Hand the receiver to this association's pump thread (started on first use,
    /// reading a duplicate of `fd`); `completions` names `token` whenever it has
    /// something for `collect`. It reads on past requests with datasets while fewer
    /// than `max_open` are unanswered. A pump cancelled before is not any more.
    fn pump(
        &mut self,
        fd: i32,
        completions: &PyCompletions,
        token: u64,
        buffer_len: usize,
        quiet_after: f64,
        max_open: usize,
    ) -> PyResult<()> {
        let receiver = self
            .inner
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the receiver is already pumping"))?;
        if self.pump.is_none() {
            let spawned = duplicate(fd).and_then(|socket| {
                Pump::spawn(
                    socket,
                    buffer_len,
                    Arc::clone(&completions.inner),
                    token,
                    Duration::from_secs_f64(quiet_after),
                    max_open,
                )
            });
            match spawned {
                Ok(pump) => self.pump = Some(pump),
                Err(err) => {
                    self.inner = Some(receiver);
                    return Err(to_pyerr(CoreError::Io(err)));
                }
            }
        }
        if let Some(pump) = &self.pump {
            if let Err(receiver) = pump.start(Box::new(receiver)) {
                self.inner = Some(*receiver);
                return Err(PyRuntimeError::new_err("the pump thread is gone"));
            }
        }
        Ok(())
    }

    /// What the pump handed over: `(events, back, error)`. `events`: what it
    /// decoded since the last call, in order (maybe none); None when its run ended
    /// without any (the socket closed, went quiet, or the pump was cancelled) and the
    /// caller reads the socket itself again. `back`: the receiver is here again.
    /// `error`: the protocol error that ended the run, to act on after `events`.
    #[allow(clippy::type_complexity)]
    fn collect(
        &mut self,
        py: Python<'_>,
    ) -> PyResult<(Option<Vec<Py<PyAny>>>, bool, Option<PyErr>)> {
        let pump = self
            .pump
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("no pump has run"))?;
        let Back {
            mut events,
            returned,
        } = pump.take();
        let Some((receiver, ended)) = returned else {
            return Ok((Some(events_to_py(py, events)?), false, None));
        };
        self.inner = Some(receiver);
        let error = match ended {
            Ended::Events(more) => {
                events.extend(more);
                None
            }
            Ended::Failed(err) => Some(to_pyerr(err)),
            Ended::Closed | Ended::Quiet | Ended::Cancelled => None,
        };
        let events = if events.is_empty() && error.is_none() {
            None
        } else {
            Some(events_to_py(py, events)?)
        };
        Ok((events, true, error))
    }

    /// Ask for the receiver back now (`collect` follows).
    fn cancel_pump(&self) {
        if let Some(pump) = &self.pump {
            pump.cancel();
        }
    }

    /// The association is over: a pump run in progress is cancelled (`collect`
    /// still follows; then call this again). With the receiver here, its pump thread
    /// ends (closing its duplicate of the socket) and a dataset still arriving is
    /// dropped, its spool file deleted.
    fn close(&mut self) {
        self.cancel_pump();
        if let Some(receiver) = self.inner.as_mut() {
            receiver.abandon();
            self.pump = None;
        }
    }
}

/// A descriptor of our own for the socket `fd` names, for a thread to read while the
/// event loop owns (and may close) the original.
fn duplicate(fd: i32) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the caller's transport keeps `fd` open for the duration of this call,
    // which only duplicates it (F_DUPFD_CLOEXEC); the borrow does not outlive it.
    unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
}

/// Where pump threads announce that a receiver is back: the event loop watches
/// `fileno()` and calls `take()` for the tokens.
#[pyclass(module = "core_rs._core", name = "Completions", frozen)]
pub struct PyCompletions {
    inner: Arc<Completions>,
}

#[pymethods]
impl PyCompletions {
    #[new]
    fn new() -> PyResult<Self> {
        let inner = Completions::new().map_err(|e| to_pyerr(CoreError::Io(e)))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    fn fileno(&self) -> i32 {
        self.inner.fd()
    }

    fn take(&self) -> Vec<u64> {
        self.inner.take()
    }
}

fn events_to_py(py: Python<'_>, events: Vec<RxEvent>) -> PyResult<Vec<Py<PyAny>>> {
    events
        .into_iter()
        .map(|event| event_to_py(py, event))
        .collect()
}

fn event_to_py(py: Python<'_>, event: RxEvent) -> PyResult<Py<PyAny>> {
    Ok(match event {
        RxEvent::Control { pdu_type, pdu } => Py::new(
            py,
            PyControlPdu {
                pdu_type,
                data: PyBytes::new(py, &pdu).unbind(),
            },
        )?
        .into_any(),
        RxEvent::Command {
            context_id,
            command: c,
        } => Py::new(
            py,
            PyCommand {
                context_id,
                has_dataset: c.has_dataset(),
                command_field: c.command_field,
                message_id: c.message_id,
                message_id_being_responded_to: c.message_id_being_responded_to,
                affected_sop_class_uid: c.affected_sop_class_uid,
                affected_sop_instance_uid: c.affected_sop_instance_uid,
                priority: c.priority,
                status: c.status,
                error_comment: c.error_comment,
                move_originator_ae: c.move_originator_ae,
                move_destination: c.move_destination,
                requested_sop_class_uid: c.requested_sop_class_uid,
                requested_sop_instance_uid: c.requested_sop_instance_uid,
            },
        )?
        .into_any(),
        RxEvent::Dataset { context_id, spool } => {
            let (spool, status) = match spool {
                Ok(w) => {
                    let dataset_length = w.dataset_len();
                    let writer = Mutex::new(Some(*w));
                    let file = PySpoolFile {
                        writer,
                        dataset_length,
                    };
                    (Some(Py::new(py, file)?), 0)
                }
                Err(why) => (None, why.status()),
            };
            let received = PyDatasetReceived {
                context_id,
                spool,
                status,
            };
            Py::new(py, received)?.into_any()
        }
    })
}

// The A-ASSOCIATE values cross the boundary as tuples (the .pyi names each field).
type ContextTuple = (u8, String, Vec<String>);
type RoleTuple = (String, bool, bool);

impl From<RoleSelection> for RoleTuple {
    fn from(r: RoleSelection) -> Self {
        (r.sop_class_uid, r.scu, r.scp)
    }
}

impl From<RoleTuple> for RoleSelection {
    fn from((sop_class_uid, scu, scp): RoleTuple) -> Self {
        Self {
            sop_class_uid,
            scu,
            scp,
        }
    }
}

impl From<(u8, u8, String)> for ContextResult {
    fn from((id, result, transfer_syntax): (u8, u8, String)) -> Self {
        Self {
            id,
            result,
            transfer_syntax,
        }
    }
}

impl From<(String, Vec<u8>)> for ExtendedNegotiation {
    fn from((sop_class_uid, info): (String, Vec<u8>)) -> Self {
        Self {
            sop_class_uid,
            info,
        }
    }
}

fn converted<A, B: From<A>>(items: Vec<A>) -> Vec<B> {
    items.into_iter().map(B::from).collect()
}

/// An A-ASSOCIATE-RQ PDU as plain values (`engine.dicom.negotiation` names them).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn decode_associate_rq<'py>(
    py: Python<'py>,
    pdu: &[u8],
) -> PyResult<(
    u16,
    String,
    String,
    String,
    Vec<ContextTuple>,
    u32,
    String,
    String,
    Vec<RoleTuple>,
    Vec<(String, Bound<'py, PyBytes>)>,
)> {
    let rq = associate::decode_associate_rq(pdu).map_err(to_pyerr)?;
    let contexts = rq
        .contexts
        .into_iter()
        .map(|c| (c.id, c.abstract_syntax, c.transfer_syntaxes))
        .collect();
    let extended = rq
        .extended
        .into_iter()
        .map(|e| (e.sop_class_uid, PyBytes::new(py, &e.info)))
        .collect();
    Ok((
        rq.protocol_version,
        rq.called_ae,
        rq.calling_ae,
        rq.application_context,
        contexts,
        rq.max_pdu,
        rq.implementation_class_uid,
        rq.implementation_version_name,
        converted(rq.roles),
        extended,
    ))
}

/// An A-ASSOCIATE-AC PDU answering `called_ae`/`calling_ae`'s request.
#[pyfunction]
fn encode_associate_ac<'py>(
    py: Python<'py>,
    called_ae: &str,
    calling_ae: &str,
    results: Vec<(u8, u8, String)>,
    max_pdu: u32,
    roles: Vec<RoleTuple>,
    extended: Vec<(String, Vec<u8>)>,
) -> Bound<'py, PyBytes> {
    let us = associate::Implementation {
        max_pdu,
        class_uid: crate::part10::IMPLEMENTATION_CLASS_UID,
        version_name: crate::part10::IMPLEMENTATION_VERSION_NAME,
    };
    let pdu = associate::encode_associate_ac(
        called_ae,
        calling_ae,
        &converted(results),
        &us,
        &converted(roles),
        &converted(extended),
    );
    PyBytes::new(py, &pdu)
}

/// A response's command set, framed as the P-DATA-TF PDU(s) that carry it on
/// `context_id`: one call and one copy into Python per response, not two of each.
#[pyfunction]
#[pyo3(signature = (context_id, max_pdu, command_field, message_id_being_responded_to, status, affected_sop_class_uid = "", affected_sop_instance_uid = "", error_comment = ""))]
#[allow(clippy::too_many_arguments)]
fn encode_response<'py>(
    py: Python<'py>,
    context_id: u8,
    max_pdu: u32,
    command_field: u16,
    message_id_being_responded_to: u16,
    status: u16,
    affected_sop_class_uid: &str,
    affected_sop_instance_uid: &str,
    error_comment: &str,
) -> Bound<'py, PyBytes> {
    let command = command::encode_response(&Response {
        command_field,
        message_id_being_responded_to,
        affected_sop_class_uid,
        affected_sop_instance_uid,
        status,
        error_comment,
    });
    PyBytes::new(
        py,
        &crate::pdu::encode_message(context_id, true, &command, max_pdu),
    )
}

#[pyfunction]
#[pyo3(signature = (message_id, sop_class_uid, sop_instance_uid, priority, move_originator_ae = "", move_originator_message_id = 0))]
fn encode_store_request<'py>(
    py: Python<'py>,
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    priority: u16,
    move_originator_ae: &str,
    move_originator_message_id: u16,
) -> Bound<'py, PyBytes> {
    let originator = (!move_originator_ae.is_empty())
        .then_some((move_originator_ae, move_originator_message_id));
    let bytes = crate::command::encode_store_request(
        message_id,
        sop_class_uid,
        sop_instance_uid,
        priority,
        originator,
    );
    PyBytes::new(py, &bytes)
}

#[pyfunction]
fn encode_message(
    py: Python<'_>,
    context_id: u8,
    command: bool,
    data: PyBuffer<u8>,
    max_pdu: u32,
) -> PyResult<Bound<'_, PyBytes>> {
    let out = with_bytes(&data, |bytes| {
        crate::pdu::encode_message(context_id, command, bytes, max_pdu)
    })?;
    Ok(PyBytes::new(py, &out))
}

/// `TCP_QUICKACK` on an association's socket, by descriptor (no Python socket object).
#[pyfunction]
fn quick_ack(fd: i32) -> PyResult<()> {
    crate::net::quick_ack(fd).map_err(|e| to_pyerr(CoreError::Io(e)))
}

type Records<'py> = (
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
    i8,
    bool,
);

/// One instance (its record's fields, as `Instance.__dict__`) counted in (`sign` 1)
/// or out (-1) of its series, study and patient records (`catalog::count`).
#[pyfunction]
fn catalog_count<'py>(
    py: Python<'py>,
    series: Option<&[u8]>,
    study: Option<&[u8]>,
    patient: Option<&[u8]>,
    instance: &Bound<'py, PyDict>,
    sign: i64,
) -> PyResult<Records<'py>> {
    // Interned once: a key whose hash is cached makes each lookup one probe.
    static NAMES: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();
    let names = NAMES.get_or_init(py, || {
        let all = catalog::fields().chain(["tier"]);
        all.map(|name| PyString::intern(py, name).unbind())
            .collect()
    });
    // The values are borrowed from the Python strings, which `held` keeps alive.
    let held = names
        .iter()
        .map(|name| instance.get_item(name.bind(py)))
        .collect::<PyResult<Vec<_>>>()?;
    let mut texts = Vec::with_capacity(held.len());
    for value in &held {
        texts.push(match value {
            // Missing or None (a record of an older version): says nothing, as "" does.
            Some(value) if !value.is_none() => value.cast::<PyString>()?.to_str()?,
            _ => "",
        });
    }
    let tier = texts.pop().unwrap_or_default(); // the last name is "tier"
    let facts = catalog::Facts {
        fields: catalog::fields().zip(texts).collect(),
        tier,
        dataset_length: instance
            .get_item(pyo3::intern!(py, "dataset_length"))?
            .map_or(Ok(0), |v| v.extract())?,
    };
    let counted = catalog::count(series, study, patient, &facts, sign).map_err(to_pyerr)?;
    let bytes = |raw: Option<Vec<u8>>| raw.map(|r| PyBytes::new(py, &r));
    Ok((
        bytes(counted.series),
        bytes(counted.study),
        bytes(counted.patient),
        counted.series_link,
        counted.rekey,
    ))
}

/// A series or study record with one instance moved between tiers.
#[pyfunction]
fn catalog_retier<'py>(
    py: Python<'py>,
    record: &[u8],
    old_tier: &str,
    new_tier: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let moved = catalog::retier(record, old_tier, new_tier).map_err(to_pyerr)?;
    Ok(PyBytes::new(py, &moved))
}

/// One durable sync of the filesystem holding `path` (decision 0031).
#[pyfunction]
fn sync_filesystem(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    py.detach(move || spool::sync_filesystem(&path))
        .map_err(to_pyerr)
}

#[pyfunction]
fn hash_file(py: Python<'_>, path: PathBuf, offset: u64) -> PyResult<String> {
    py.detach(move || spool::hash_file(&path, offset))
        .map_err(to_pyerr)
}

#[pyfunction]
fn key_attributes(
    py: Python<'_>,
    data: PyBuffer<u8>,
    transfer_syntax_uid: &str,
) -> PyResult<Vec<(String, Vec<u8>)>> {
    let syntax = Syntax::from_uid(transfer_syntax_uid);
    let found = with_bytes(&data, |bytes| {
        run_detached(py, bytes.len(), || dataset::key_attributes(bytes, syntax))
    })?;
    Ok(named(found))
}

/// One frame's pixel layout, as the Image Pixel module describes it.
#[pyclass(module = "core_rs._core", name = "PixelLayout", frozen, get_all)]
#[derive(Clone, Copy)]
pub struct PyPixelLayout {
    rows: u32,
    columns: u32,
    samples_per_pixel: u8,
    bits_allocated: u8,
    bits_stored: u8,
    signed: bool,
}

#[pymethods]
impl PyPixelLayout {
    #[new]
    #[pyo3(signature = (rows, columns, samples_per_pixel, bits_allocated, bits_stored, signed))]
    fn new(
        rows: u32,
        columns: u32,
        samples_per_pixel: u8,
        bits_allocated: u8,
        bits_stored: u8,
        signed: bool,
    ) -> Self {
        Self {
            rows,
            columns,
            samples_per_pixel,
            bits_allocated,
            bits_stored,
            signed,
        }
    }

    #[getter]
    fn frame_bytes(&self) -> usize {
        codec::Layout::from(*self).frame_bytes()
    }
}

impl From<PyPixelLayout> for codec::Layout {
    fn from(l: PyPixelLayout) -> Self {
        Self {
            rows: l.rows,
            columns: l.columns,
            components: l.samples_per_pixel,
            bits_allocated: l.bits_allocated,
            bits_stored: l.bits_stored,
            signed: l.signed,
        }
    }
}

/// One codec call on one frame's bytes, with the GIL released.
fn run_codec<'py>(
    py: Python<'py>,
    data: &PyBuffer<u8>,
    layout: &Bound<'py, PyPixelLayout>,
    codec: fn(&[u8], &codec::Layout) -> Result<Vec<u8>, codec::CodecError>,
) -> PyResult<Bound<'py, PyBytes>> {
    let layout = codec::Layout::from(*layout.get());
    let out = with_bytes(data, |bytes| py.detach(|| codec(bytes, &layout)))?
        .map_err(|e| to_pyerr(e.into()))?;
    Ok(PyBytes::new(py, &out))
}

/// One `#[pyfunction]` per codec call, each a frame's bytes and its layout in and
/// bytes out through `run_codec`; the argument keeps its name (`frame` to encode,
/// `data` to decode) for the stub.
macro_rules! codec_functions {
    ($($(#[doc = $doc:literal])* $name:ident($arg:ident) => $codec:path;)*) => {$(
        $(#[doc = $doc])*
        #[pyfunction]
        fn $name<'py>(
            py: Python<'py>,
            $arg: PyBuffer<u8>,
            layout: &Bound<'py, PyPixelLayout>,
        ) -> PyResult<Bound<'py, PyBytes>> {
            run_codec(py, &$arg, layout, $codec)
        }
    )*};
}

codec_functions! {
    /// Lossless JPEG-LS of one native frame, verified by decoding.
    jpegls_encode(frame) => codec::jpegls_encode_verified;
    /// One JPEG-LS frame back to native samples.
    jpegls_decode(data) => codec::jpegls_decode;
    /// Lossless HTJ2K of one native frame (`OpenJPH`, or openjph-core without it),
    /// verified by decoding with `OpenJPEG`.
    htj2k_encode(frame) => codec::htj2k_encode_verified;
    /// One JPEG frame (baseline, extended, lossless) back to native samples as coded.
    jpeg_decode(data) => codec::jpeg_decode;
    /// One JPEG frame of a `YBR_FULL(_422)` dataset back to RGB samples.
    jpeg_decode_ybr(data) => codec::jpeg_decode_ybr;
    /// One JPEG 2000 or HTJ2K frame back to native samples.
    j2k_decode(data) => codec::j2k_decode;
    /// DICOM RLE Lossless of one native frame, verified by decoding.
    rle_encode(frame) => codec::rle_encode_verified;
    /// One RLE frame back to native samples.
    rle_decode(data) => codec::rle_decode;
}

/// What packing an object into the warm tier did (`warm_pack`).
#[pyclass(module = "core_rs._core", name = "WarmPacked", frozen, get_all)]
pub struct PyWarmPacked {
    original: u64,
    stored: u64,
    jpegls_frames: u32,
    fallback_frames: u32,
    fallback_reason: Option<String>,
}

/// Compress a stored file into a warm file that restores byte for byte, verified
/// before it returns; `pixel_offset`/`frames`/`layout` locate native pixel data.
#[pyfunction]
#[pyo3(signature = (src, dst, codec, level, durable, pixel_offset = 0, frames = 0, layout = None))]
#[allow(clippy::too_many_arguments)] // one keyword each, as Python calls it
fn warm_pack(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    codec: &str,
    level: i32,
    durable: bool,
    pixel_offset: u64,
    frames: u32,
    layout: Option<Bound<'_, PyPixelLayout>>,
) -> PyResult<PyWarmPacked> {
    let codec = match codec {
        "zstd" => warm::PixelCodec::Zstd,
        "jpeg-ls" => warm::PixelCodec::JpegLs,
        other => {
            return Err(PyValueError::new_err(format!(
                "warm codec {other:?}: expected \"zstd\" or \"jpeg-ls\""
            )))
        }
    };
    let pixels = layout.map(|layout| warm::Pixels {
        offset: pixel_offset,
        frames,
        layout: (*layout.get()).into(),
    });
    let plan = warm::Plan {
        pixels,
        codec,
        level,
    };
    let packed = py
        .detach(move || warm::pack(&src, &dst, &plan, durable))
        .map_err(to_pyerr)?;
    Ok(PyWarmPacked {
        original: packed.original,
        stored: packed.stored,
        jpegls_frames: packed.jpegls_frames,
        fallback_frames: packed.fallback_frames,
        fallback_reason: packed.fallback_reason,
    })
}

/// Restore a warm file's original bytes into `dst`; its length and BLAKE3 are checked.
#[pyfunction]
fn warm_unpack(py: Python<'_>, src: PathBuf, dst: PathBuf, durable: bool) -> PyResult<u64> {
    py.detach(move || warm::unpack(&src, &dst, durable))
        .map_err(to_pyerr)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Which HTJ2K encoder this build linked (decision 0035), for the bench and logs.
    m.add("HTJ2K_BACKEND", codec::htj2k_backend())?;
    m.add(
        "BUILD_PROFILE",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    m.add(
        "IMPLEMENTATION_CLASS_UID",
        crate::part10::IMPLEMENTATION_CLASS_UID,
    )?;
    m.add(
        "IMPLEMENTATION_VERSION_NAME",
        crate::part10::IMPLEMENTATION_VERSION_NAME,
    )?;
    let keywords: Vec<&str> = crate::dataset::KEY_ATTRIBUTES
        .iter()
        .map(|(_, k)| *k)
        .collect();
    m.add("KEY_ATTRIBUTES", PyTuple::new(m.py(), keywords)?)?;
    m.add_class::<PyReceiver>()?;
    m.add_class::<PyCompletions>()?;
    m.add_class::<PyCommand>()?;
    m.add_class::<PyControlPdu>()?;
    m.add_class::<PyDatasetReceived>()?;
    m.add_class::<PySpoolFile>()?;
    m.add_class::<PyPart10Upload>()?;
    m.add_class::<PyStoredObject>()?;
    m.add_class::<PyPixelLayout>()?;
    m.add_class::<PyWarmPacked>()?;
    m.add_function(wrap_pyfunction!(warm_pack, m)?)?;
    m.add_function(wrap_pyfunction!(warm_unpack, m)?)?;
    m.add_function(wrap_pyfunction!(jpegls_encode, m)?)?;
    m.add_function(wrap_pyfunction!(jpegls_decode, m)?)?;
    m.add_function(wrap_pyfunction!(htj2k_encode, m)?)?;
    m.add_function(wrap_pyfunction!(j2k_decode, m)?)?;
    m.add_function(wrap_pyfunction!(jpeg_decode, m)?)?;
    m.add_function(wrap_pyfunction!(jpeg_decode_ybr, m)?)?;
    m.add_function(wrap_pyfunction!(rle_encode, m)?)?;
    m.add_function(wrap_pyfunction!(rle_decode, m)?)?;
    m.add_function(wrap_pyfunction!(encode_response, m)?)?;
    m.add_function(wrap_pyfunction!(encode_message, m)?)?;
    m.add_function(wrap_pyfunction!(encode_store_request, m)?)?;
    m.add_function(wrap_pyfunction!(hash_file, m)?)?;
    m.add_function(wrap_pyfunction!(sync_filesystem, m)?)?;
    m.add_function(wrap_pyfunction!(catalog_count, m)?)?;
    m.add_function(wrap_pyfunction!(catalog_retier, m)?)?;
    m.add_function(wrap_pyfunction!(quick_ack, m)?)?;
    m.add_function(wrap_pyfunction!(decode_associate_rq, m)?)?;
    m.add_function(wrap_pyfunction!(encode_associate_ac, m)?)?;
    m.add_function(wrap_pyfunction!(key_attributes, m)?)?;
    Ok(())
}
