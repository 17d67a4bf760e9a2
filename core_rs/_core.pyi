"""Type stub of the compiled module core_rs._core (kept honest by mypy.stubtest)."""

from os import PathLike
from typing import final

from typing_extensions import Buffer

from core_rs._errors import CommandError, ProtocolError

__all__ = [
    "BUILD_PROFILE",
    "HTJ2K_BACKEND",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "KEY_ATTRIBUTES",
    "Command",
    "Completions",
    "ControlPdu",
    "DatasetReceived",
    "Part10Upload",
    "PixelLayout",
    "Receiver",
    "SpoolFile",
    "StoredObject",
    "WarmPacked",
    "__version__",
    "catalog_count",
    "catalog_retier",
    "decode_associate_rq",
    "encode_associate_ac",
    "encode_message",
    "encode_response",
    "encode_store_request",
    "hash_file",
    "htj2k_encode",
    "j2k_decode",
    "jpeg_decode",
    "jpeg_decode_ybr",
    "jpegls_decode",
    "jpegls_encode",
    "key_attributes",
    "quick_ack",
    "rle_decode",
    "rle_encode",
    "sync_filesystem",
    "warm_pack",
    "warm_unpack",
]

__version__: str
# "OpenJPH 0.9.0 (system library)", or the pure-Rust fallback's name.
HTJ2K_BACKEND: str
BUILD_PROFILE: str
IMPLEMENTATION_CLASS_UID: str
IMPLEMENTATION_VERSION_NAME: str
KEY_ATTRIBUTES: tuple[str, ...]  # the keywords the ingest parser reads from every object

@final
class Command:
    @property
    def context_id(self) -> int: ...
    @property
    def command_field(self) -> int: ...
    @property
    def message_id(self) -> int: ...
    @property
    def message_id_being_responded_to(self) -> int | None: ...
    @property
    def affected_sop_class_uid(self) -> str: ...
    @property
    def affected_sop_instance_uid(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def has_dataset(self) -> bool: ...
    @property
    def status(self) -> int | None: ...
    @property
    def error_comment(self) -> str: ...
    @property
    def move_originator_ae(self) -> str: ...
    @property
    def move_destination(self) -> str: ...
    @property
    def requested_sop_class_uid(self) -> str: ...
    @property
    def requested_sop_instance_uid(self) -> str: ...

@final
class ControlPdu:
    @property
    def pdu_type(self) -> int: ...
    @property
    def data(self) -> bytes: ...

@final
class StoredObject:
    @property
    def path(self) -> str: ...
    @property
    def hash(self) -> str: ...
    @property
    def meta_length(self) -> int: ...
    @property
    def dataset_length(self) -> int: ...
    @property
    def existed(self) -> bool: ...
    @property
    def attributes(self) -> list[tuple[str, bytes]]: ...
    @property
    def text(self) -> dict[str, str] | None: ...
    @property
    def parse_problem(self) -> str | None: ...

@final
class SpoolFile:
    @property
    def dataset_length(self) -> int: ...
    def finish(self, objects_dir: str | PathLike[str], durable: bool) -> StoredObject: ...
    def read_dataset(self, limit: int) -> bytes: ...
    def discard(self) -> None: ...

@final
class Part10Upload:
    def __new__(
        cls, spool_path: str | PathLike[str], source_ae: str, write_behind: bool = ...
    ) -> Part10Upload: ...
    def write(self, data: Buffer) -> None: ...
    def finish(self) -> tuple[SpoolFile, str, str, str]: ...

@final
class DatasetReceived:
    @property
    def context_id(self) -> int: ...
    @property
    def spool(self) -> SpoolFile | None: ...
    @property
    def status(self) -> int:
        """0 with a spool. Without one, the DIMSE failure status its command gets:
        0x0122 when its SOP class is not its context's, 0x0211 when no service here
        takes a dataset with it."""

@final
class Receiver:
    def __new__(
        cls,
        spool_dir: str | PathLike[str],
        spool_prefix: str,
        max_pdu: int,
        max_control: int = ...,
        write_behind: bool = ...,
    ) -> Receiver: ...
    def establish(self, calling_ae: str, contexts: list[tuple[int, str, str]]) -> None:
        """(context ID, abstract syntax UID, transfer syntax UID) of each accepted
        context. A command whose SOP class is not its context's gets no spool: its
        dataset is consumed, never written."""
    @property
    def at_boundary(self) -> bool: ...
    def feed(self, data: Buffer) -> list[ControlPdu | Command | DatasetReceived]: ...
    def answered(self) -> None:
        """A request whose dataset came in a spool is answered (decision 43)."""
    def pump(
        self,
        fd: int,
        completions: Completions,
        token: int,
        buffer_len: int,
        quiet_after: float,
        max_open: int,
    ) -> None: ...
    def collect(
        self,
    ) -> tuple[
        list[ControlPdu | Command | DatasetReceived] | None,
        bool,
        ProtocolError | CommandError | None,
    ]:
        """(events since the last call, or None when the run ended without any; the
        receiver is back; the protocol error that ended the run, after the events)."""
    def cancel_pump(self) -> None: ...
    def close(self) -> None: ...

@final
class Completions:
    def __new__(cls) -> Completions: ...
    def fileno(self) -> int: ...
    def take(self) -> list[int]: ...

def encode_response(
    context_id: int,
    max_pdu: int,
    command_field: int,
    message_id_being_responded_to: int,
    status: int,
    affected_sop_class_uid: str = "",
    affected_sop_instance_uid: str = "",
    error_comment: str = "",
) -> bytes:
    """A response's command set, framed as the P-DATA-TF PDU(s) carrying it."""

def encode_message(context_id: int, command: bool, data: Buffer, max_pdu: int) -> bytes: ...
def encode_store_request(
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    priority: int,
    move_originator_ae: str = "",
    move_originator_message_id: int = 0,
) -> bytes: ...
def hash_file(path: str | PathLike[str], offset: int) -> str: ...
def sync_filesystem(path: str | PathLike[str]) -> None: ...
def catalog_count(
    series: bytes | None,
    study: bytes | None,
    patient: bytes | None,
    instance: dict[str, object],
    sign: int,
) -> tuple[bytes | None, bytes | None, bytes | None, int, bool]:
    """An instance (its record's ``__dict__``) counted in (``sign`` 1) or out (-1) of
    its series, study and patient records, each as stored (None: none yet). Returns
    the three records after it (None: gone; the patient's also when the instance
    names none), +1/-1/0 as the series record came, went or stayed, and whether the
    study's search keys may have changed. Raises RecordError on a damaged record."""

def catalog_retier(record: bytes, old_tier: str, new_tier: str) -> bytes:
    """A series or study record with one instance moved from ``old_tier`` to
    ``new_tier``. Raises RecordError on a damaged record."""

def quick_ack(fd: int) -> None: ...
def decode_associate_rq(
    pdu: bytes,
) -> tuple[
    int,  # protocol version
    str,  # called AE title
    str,  # calling AE title
    str,  # application context name
    list[tuple[int, str, list[str]]],  # (context ID, abstract syntax, transfer syntaxes)
    int,  # maximum length received, 0: no limit
    str,  # implementation class UID
    str,  # implementation version name
    list[tuple[str, bool, bool]],  # role selection: (SOP class, SCU role, SCP role)
    list[tuple[str, bytes]],  # extended negotiation: (SOP class, application information)
]: ...
def encode_associate_ac(
    called_ae: str,
    calling_ae: str,
    results: list[tuple[int, int, str]],
    max_pdu: int,
    roles: list[tuple[str, bool, bool]],
    extended: list[tuple[str, bytes]],
) -> bytes: ...

@final
class PixelLayout:
    """One frame's samples: interleaved, little-endian, 8 or 16 bits allocated."""

    def __new__(
        cls,
        rows: int,
        columns: int,
        samples_per_pixel: int,
        bits_allocated: int,
        bits_stored: int,
        signed: bool,
    ) -> PixelLayout: ...
    @property
    def rows(self) -> int: ...
    @property
    def columns(self) -> int: ...
    @property
    def samples_per_pixel(self) -> int: ...
    @property
    def bits_allocated(self) -> int: ...
    @property
    def bits_stored(self) -> int: ...
    @property
    def signed(self) -> bool: ...
    @property
    def frame_bytes(self) -> int: ...

def htj2k_encode(frame: Buffer, layout: PixelLayout) -> bytes:
    """Lossless HTJ2K (the system's OpenJPH, or openjph-core without it: HTJ2K_BACKEND),
    returned only once OpenJPEG decodes it back to `frame` exactly.
    Raises NotRepresentable, VerificationFailed or CodecError."""

def j2k_decode(data: Buffer, layout: PixelLayout) -> bytes:
    """One JPEG 2000 or HTJ2K frame (J2K codestream or JP2) to native samples;
    CodecError if it does not fit `layout`, NotRepresentable for other layouts."""

def jpeg_decode(data: Buffer, layout: PixelLayout) -> bytes:
    """One JPEG frame (baseline, extended 12-bit, lossless any predictor) to native
    samples exactly as coded; NotRepresentable for a colour stream libjpeg reads as
    YCbCr (see jpeg_decode_ybr), CodecError if it does not fit `layout`."""

def jpeg_decode_ybr(data: Buffer, layout: PixelLayout) -> bytes:
    """As jpeg_decode, for a YBR_FULL(_422) dataset: YCbCr streams come out RGB."""

def jpegls_encode(frame: Buffer, layout: PixelLayout) -> bytes:
    """Lossless JPEG-LS, returned only once it decodes back to `frame` exactly.
    Raises NotRepresentable, VerificationFailed or CodecError."""

def jpegls_decode(data: Buffer, layout: PixelLayout) -> bytes:
    """One JPEG-LS frame to native samples; CodecError if it does not fit `layout`."""

@final
class WarmPacked:
    """What `warm_pack` did: bytes before and after, and how the frames went."""

    @property
    def original(self) -> int: ...
    @property
    def stored(self) -> int: ...
    @property
    def jpegls_frames(self) -> int: ...
    @property
    def fallback_frames(self) -> int: ...
    @property
    def fallback_reason(self) -> str | None: ...

def warm_pack(
    src: str | PathLike[str],
    dst: str | PathLike[str],
    codec: str,
    level: int,
    durable: bool,
    pixel_offset: int = 0,
    frames: int = 0,
    layout: PixelLayout | None = None,
) -> WarmPacked:
    """Compress a stored file into a warm file that restores byte for byte; it is
    decoded and its length and BLAKE3 compared before this returns. `codec` is
    "zstd" or "jpeg-ls" for the native pixel data that `pixel_offset`, `frames` and
    `layout` locate. Raises VerificationFailed, DatasetError or StorageError."""

def warm_unpack(src: str | PathLike[str], dst: str | PathLike[str], durable: bool) -> int:
    """Restore a warm file's original bytes into `dst` (their length is returned);
    CodecError or VerificationFailed if the file is damaged."""

def key_attributes(data: Buffer, transfer_syntax_uid: str) -> list[tuple[str, bytes]]: ...
def rle_encode(frame: Buffer, layout: PixelLayout) -> bytes:
    """DICOM RLE Lossless, returned only once it decodes back to `frame` exactly."""

def rle_decode(data: Buffer, layout: PixelLayout) -> bytes:
    """One RLE frame to native samples; CodecError if it does not fit `layout`."""
