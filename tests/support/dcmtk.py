"""Running DCMTK's command-line tools as real peers."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

# storescu proposes only uncompressed syntaxes unless told which compressed one.
_PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def propose_flag(transfer_syntax_uid: str) -> str | None:
    """The storescu option that proposes exactly this syntax, if DCMTK has one."""
    return _PROPOSE.get(transfer_syntax_uid)


def storescu(
    port: int,
    files: list[Path],
    transfer_syntax_uid: str | None = None,
    nodelay: bool = True,
    calling_ae: str = "STORESCU",
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    flag = propose_flag(transfer_syntax_uid) if transfer_syntax_uid else None
    cmd = [
        "storescu",
        "-R",
        "-aet",
        calling_ae,
        "-aec",
        "PACS_EDGE",
        "-to",
        "30",
        "-ta",
        "30",
        *([flag] if flag else []),
        "127.0.0.1",
        str(port),
        *map(str, files),
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def dcmdump_ok(path: Path) -> bool:
    result = subprocess.run(
        ["dcmdump", "-q", str(path)], capture_output=True, timeout=60, check=False
    )
    return result.returncode == 0


def storescu_verbose(
    port: int, files: list[Path], calling_ae: str, halt: bool = True
) -> subprocess.Popen[str]:
    """storescu -v in the background: its output says which files got Success.
    `halt`: stop at the first failed store (storescu's default), or send the rest."""
    options = ["-v", "-R", "-aet", calling_ae, "-aec", "PACS_EDGE", "-to", "30", "-ta", "30"]
    if not halt:
        options.append("--no-halt")
    return subprocess.Popen(
        ["storescu", *options, "127.0.0.1", str(port), *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"TCP_NODELAY": "1", "PATH": os.environ["PATH"]},
    )


def acknowledged(output: str) -> set[str]:
    """Files storescu -v got a Success response for."""
    done, current = set(), None
    for line in output.splitlines():
        if match := re.match(r"I: Sending file: (.+)$", line):
            current = match[1]
        elif "Received Store Response (Success)" in line and current:
            done.add(current)
    return done
