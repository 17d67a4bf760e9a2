"""The exceptions raised by core_rs: one class per kind of ``CoreError`` in Rust.

They subclass the builtin the caller would expect (bad input is a ``ValueError``,
a disk problem an ``OSError``) so generic handlers keep working.
"""


class CoreError(Exception):
    """Base of every error raised by the data plane."""


class ProtocolError(CoreError, ValueError):
    """The peer broke PS3.8 framing; abort the association with ``reason``."""

    def __init__(self, message: str, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


class CommandError(CoreError, ValueError):
    """A DIMSE command set could not be decoded."""


class DatasetError(CoreError, ValueError):
    """A dataset's encoding could not be walked."""


class StorageError(CoreError, OSError):
    """An object body could not be written, synced or moved."""


class OutOfSpaceError(StorageError):
    """The disk is full: answer C-STORE with 0xA700."""


class CodecError(CoreError, ValueError):
    """A compressed frame could not be decoded, or the codec failed."""


class NotRepresentable(CodecError):
    """The codec cannot carry these pixels losslessly: keep the object as it is."""


class VerificationFailed(CodecError):
    """An encoded frame did not decode to the original: it must not be used."""


class RecordError(CoreError, ValueError):
    """An index record is not what the catalog writes (a damaged index)."""
