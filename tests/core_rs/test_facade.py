"""The Rust/Python boundary: buffers in, one exception hierarchy out, and the
Rust header parser agrees with pydicom on every public test file."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import blake3
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.tag import Tag

import core_rs
from tests.support.corpus import public_corpus


def test_version_and_build() -> None:
    assert core_rs.__version__.count(".") == 2
    assert core_rs.BUILD_PROFILE in {"release", "debug"}


def test_htj2k_encodes_with_the_system_openjph_when_it_is_installed() -> None:
    """`make build-deps` installs libopenjph-dev and the Makefile's build requires it:
    an extension built without it (the pure-Rust fallback) fails here, so CI runs the
    system-library path (decision 0035)."""
    header = Path("/usr/include/openjph/ojph_codestream.h")
    expected = "OpenJPH" if header.exists() else "openjph-core"
    assert core_rs.HTJ2K_BACKEND.startswith(expected), core_rs.HTJ2K_BACKEND


def test_exception_hierarchy() -> None:
    assert issubclass(core_rs.ProtocolError, core_rs.CoreError)
    assert issubclass(core_rs.ProtocolError, ValueError)
    assert issubclass(core_rs.OutOfSpaceError, core_rs.StorageError)
    assert issubclass(core_rs.StorageError, OSError)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_takes_any_contiguous_buffer(kind: type, tmp_path: Path) -> None:
    receiver = core_rs.Receiver(tmp_path, "t", 16384)
    release_rq = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    (event,) = receiver.feed(kind(release_rq))
    assert isinstance(event, core_rs.ControlPdu)
    assert event.pdu_type == 5
    assert event.data == release_rq


def test_non_contiguous_buffer_is_refused(tmp_path: Path) -> None:
    receiver = core_rs.Receiver(tmp_path, "t", 16384)
    with pytest.raises(ValueError, match="contiguous"):
        receiver.feed(memoryview(b"\x05\x00" * 10)[::2])


def test_protocol_error_carries_the_abort_reason(tmp_path: Path) -> None:
    receiver = core_rs.Receiver(tmp_path, "t", 16384)
    with pytest.raises(core_rs.ProtocolError) as caught:
        receiver.feed(b"\x04\x00\x00\x01\x00\x00")  # P-DATA of 65536 > 16384
    assert caught.value.reason == 6
    assert "exceeds the negotiated maximum" in str(caught.value)


def test_missing_file_is_a_storage_error_with_cause(tmp_path: Path) -> None:
    with pytest.raises(core_rs.StorageError) as caught:
        core_rs.hash_file(tmp_path / "missing", 0)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_hash_file_matches_blake3(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"meta" + bytes(range(256)) * 5000)
    assert core_rs.hash_file(path, 4) == blake3.blake3(path.read_bytes()[4:]).hexdigest()


KEYS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "StudyDate",
    "AccessionNumber",
    "PatientID",
    "PatientName",
    "InstanceNumber",
    "SeriesNumber",
    "SpecificCharacterSet",
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom, on the odd corpus
def test_key_attributes_agree_with_pydicom() -> None:
    files, _ = public_corpus()
    compared = 0
    for f in files:
        ours = dict(core_rs.key_attributes(f.dataset_bytes, f.transfer_syntax_uid))
        ds = pydicom.dcmread(f.path, stop_before_pixels=True)
        their_sop = str(ds.SOPInstanceUID)
        for keyword in KEYS:
            element = ds.get_item(Tag(keyword))
            if element is None:
                assert keyword not in ours, f"{f.path.name}: {keyword}"
                continue
            raw = element.value if isinstance(element.value, bytes) else None
            if raw is None:
                continue  # pydicom already converted it; compared through text below
            assert ours.get(keyword) == raw, f"{f.path.name}: {keyword}"
            compared += 1
        sop = ours.get("SOPInstanceUID", b"").decode().rstrip("\0 ")
        assert sop == their_sop, f.path.name
    assert compared > 500


_SYS_CACHESTAT = 451  # the same number on every Linux architecture


class _CacheStat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")
    ]


def _dirty_pages(path: Path) -> tuple[int, int]:
    """(dirty, cached) pages of `path` in the page cache, by Linux's cachestat(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    whole = (ctypes.c_uint64 * 2)(0, 0)  # offset 0, length 0: the whole file
    stat = _CacheStat()
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syscall(_SYS_CACHESTAT, fd, whole, ctypes.byref(stat), 0) != 0:
            error = ctypes.get_errno()
            if error == errno.ENOSYS:
                pytest.skip("this kernel has no cachestat(2) (Linux >= 6.5)")
            raise OSError(error, os.strerror(error), str(path))
    finally:
        os.close(fd)
    return stat.dirty, stat.cache


@pytest.mark.parametrize("write_behind", [True, False])
def test_write_behind_sends_spool_bytes_to_the_disk_as_they_land(
    write_behind: bool, tmp_path: Path
) -> None:
    """Durability "fsync" spools start their disk writes as every MiB lands, so the
    group commit's sync waits for little (decision 0036); without it the pages stay
    dirty until the OS's writeback, ~30 s later."""
    upload = core_rs.Part10Upload(tmp_path / "spool", "TEST", write_behind)
    upload.write(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    for _ in range(16):
        upload.write(os.urandom(512 * 1024))
    dirty, cached = _dirty_pages(tmp_path / "spool")
    assert cached >= 2048  # 8 MiB of 4 KiB pages; at most the last 1 MiB unsent
    if write_behind:
        assert dirty < cached // 4, (dirty, cached)
    else:
        assert dirty > cached // 2, (dirty, cached)


@pytest.mark.parametrize("name", ["Doe^John", "Wang^Fang=王^芳"])
def test_stored_objects_give_their_attributes_as_text_when_ascii(name: str, tmp_path: Path) -> None:
    """`text` spares Python the decoding of ASCII values (every character set's
    common subset); any other value leaves it to the Specific Character Set."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = name
    ds.StudyDescription = "HEAD "  # PS3.5 pads to an even length with a space
    source = tmp_path / "in.dcm"
    ds.save_as(source, enforce_file_format=True)
    objects = tmp_path / "objects"
    for byte in range(256):
        (objects / f"{byte:02x}").mkdir(parents=True)
    upload = core_rs.Part10Upload(tmp_path / "spool", "TEST")
    upload.write(source.read_bytes())
    spool, *_ = upload.finish()
    stored = spool.finish(objects, False)
    raw = dict(stored.attributes)
    assert raw["PatientName"].rstrip(b" ") == name.encode()  # as sent, padded
    if name.isascii():
        assert stored.text is not None
        assert stored.text["PatientName"] == name
        assert stored.text["StudyDescription"] == "HEAD"
        assert stored.text["SOPInstanceUID"] == ds.SOPInstanceUID
        assert stored.text.keys() == raw.keys()
    else:
        assert stored.text is None
