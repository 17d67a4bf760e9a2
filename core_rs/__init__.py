"""pacs-edge's Rust data plane, as Python sees it.

The compiled module ``core_rs._core`` does every per-byte loop (PDU framing, command
sets, spooling, BLAKE3, key-attribute parsing, pixel codecs); this facade re-exports
it with the exception hierarchy of ``core_rs._errors``. Import from here, never from ``_core``.
"""

from core_rs._core import (
    BUILD_PROFILE,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    KEY_ATTRIBUTES,
    Command,
    ControlPdu,
    DatasetReceived,
    PixelLayout,
    Receiver,
    SpoolFile,
    StoredObject,
    __version__,
    encode_message,
    encode_response,
    encode_store_request,
    hash_file,
    jpegls_decode,
    jpegls_encode,
    key_attributes,
    rle_decode,
    rle_encode,
)
from core_rs._errors import (
    CodecError,
    CommandError,
    CoreError,
    DatasetError,
    NotRepresentable,
    OutOfSpaceError,
    ProtocolError,
    StorageError,
    VerificationFailed,
)

__all__ = [
    "BUILD_PROFILE",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "KEY_ATTRIBUTES",
    "CodecError",
    "Command",
    "CommandError",
    "ControlPdu",
    "CoreError",
    "DatasetError",
    "DatasetReceived",
    "NotRepresentable",
    "OutOfSpaceError",
    "PixelLayout",
    "ProtocolError",
    "Receiver",
    "SpoolFile",
    "StorageError",
    "StoredObject",
    "VerificationFailed",
    "__version__",
    "encode_message",
    "encode_response",
    "encode_store_request",
    "hash_file",
    "jpegls_decode",
    "jpegls_encode",
    "key_attributes",
    "rle_decode",
    "rle_encode",
]
