"""The bench's scratch folder, where every pass's server keeps its files.

Each pass gets a fresh folder inside it. On ext4 without a journal (this machine's
root filesystem, and some edge servers'), creating a file skips every free inode of
the block group that was deleted in the last 1-6 minutes, one buffer-cache lookup
each: a pass that creates its files where the pass before deleted thousands paid
180-230 µs per file instead of 7 (python3 -c of os.open in a loop), a third of the
engine's CPU, and as much again for DCMTK, in whatever order the passes happened to
run. So nothing is deleted while the bench measures: a pass's folder is `discard`ed
(its files emptied, which frees their blocks but not their inodes, and the folder
moved aside), and the scratch folder is deleted whole when the bench ends. What an
earlier run deleted is forgotten at the start: ext4 only skips an inode whose
inode-table block is still in the buffer cache, so the scratch folder drops the clean page
cache (as root) before the first pass. It also carries ext4's "top directory" flag
(chattr +T), so each pass's folder lands in a block group of ext4's choosing, as
folders at the root do.
See docs/decisions/0038.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import stat
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

# linux/fs.h: FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (a long, read and written as 4 bytes
# by ext4, as chattr does) and FS_TOPDIR_FL.
_GETFLAGS = 0x80086601
_SETFLAGS = 0x40086602
TOPDIR = 0x00020000

_discarded = itertools.count(1)


def _flags_of(fd: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(fd, _GETFLAGS, struct.pack("i", 0)))[0])


def flags(folder: Path) -> int:
    """The folder's inode flags (lsattr's letters, as bits)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _flags_of(fd)
    finally:
        os.close(fd)


def spread(folder: Path) -> str:
    """Set the top-directory flag on `folder`; "" once set, else why it could not be
    (another filesystem than ext2/3/4, or no permission): the bench still runs."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, _SETFLAGS, struct.pack("i", _flags_of(fd) | TOPDIR))
    except OSError as exc:
        return f"{exc.strerror or exc}"
    finally:
        os.close(fd)
    return ""


def discard(folder: Path) -> None:
    """Put a pass's folder out of the way without freeing an inode: each regular file
    is emptied (its blocks go back to the filesystem) and the folder is renamed
    beside itself; `scratch` deletes it with everything else when the bench ends."""
    if not folder.exists():
        return
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.truncate(path, 0)
    folder.rename(folder.with_name(f"{folder.name}.discarded-{next(_discarded)}"))


def forget_deletions() -> str:
    """Write everything out and drop the clean page cache, inode-table blocks with
    the dates of recent deletions among it; "" once done, else why not (not root)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


@contextlib.contextmanager
def scratch(prefix: str, forget: bool = True) -> Iterator[Path]:
    """A temporary folder in the working directory (on the disk under test, not a
    tmpfs), spread across block groups where the filesystem allows; says which.
    `forget`: first drop the page cache, and with it earlier runs' deletions."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=Path.cwd()) as tmp:
        folder = Path(tmp)
        why = spread(folder)
        where = "spread over block groups (ext4 +T)" if not why else f"not spread ({why})"
        if forget:
            kept = forget_deletions()
            where += "; page cache dropped" if not kept else f"; page cache kept ({kept})"
        print(f"scratch folder {folder.name}: {where}", flush=True)
        yield folder
