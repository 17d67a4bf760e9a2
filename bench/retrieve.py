"""Retrieve benchmark: C-MOVE and WADO-RS out of pacs-edge beside Orthanc serving the
same study, in one run.

A CT study (512x512x16-bit slices) is stored into both servers; then DCMTK movescu
asks each to move it to the same DCMTK storescp (a workstation at the site), and
curl retrieves it over WADO-RS (multipart/related, as stored; Orthanc through
its Debian DICOMweb plugin), in alternating order, `--repeat` times. Figures: MB/s
from the request to the last byte, the server's CPU-seconds per GB from its own
cgroup, and whether every instance arrived. Ratios are against Orthanc in the same run.

    python -m bench.retrieve [--instances 500] [--repeat 3]     # ~2 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import results
from bench.corpus import ct_slice, write_series
from bench.peers import Orthanc, PacsEdge, Peer, free_port, wait_for_port

_WORKSTATION = "WORKSTATION"
_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}
# curl's output for counting parts: in memory where there is a tmpfs, so the client
# does not wait on a disk the servers are reading from.
_SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


class SourceOrthanc(Orthanc):
    """Orthanc that knows the workstation as a C-MOVE destination."""

    def __init__(self, workdir: Path, workstation_port: int) -> None:
        super().__init__(workdir)
        self.workstation_port = workstation_port

    def prepare(self) -> None:
        super().prepare()
        path = self.workdir / "orthanc.json"
        config = json.loads(path.read_text())
        config["DicomModalities"] = {
            "workstation": [_WORKSTATION, "127.0.0.1", self.workstation_port]
        }
        config["DicomAlwaysAllowMove"] = True  # movescu's AE is not one of its modalities
        config["Plugins"] = ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"]
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        path.write_text(json.dumps(config))


def _wado(server: Peer, study: str, out: Path) -> tuple[float, float, int]:
    """The study over WADO-RS with curl (a C client, so the client is not the
    bottleneck): seconds, server CPU-seconds, parts (instances) received."""
    assert server.meter is not None
    port = getattr(server, "http_port")  # noqa: B009 - both peers have one
    cpu = server.meter.cpu_seconds()
    started = time.monotonic()
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-H",
            'Accept: multipart/related; type="application/dicom"; transfer-syntax=*',
            "-o",
            str(out),
            "-w",
            "%{content_type}",
            f"http://127.0.0.1:{port}/dicom-web/studies/{study}",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=_ENV,
        timeout=600,
    )
    seconds = time.monotonic() - started
    used = server.meter.cpu_seconds() - cpu
    boundary = done.stdout.split("boundary=")[1].split(";")[0].strip('"')
    parts = out.read_bytes().count(b"--" + boundary.encode() + b"\r\n")
    out.unlink()
    return seconds, used, parts


def _move(server: Peer, study: str, received: Path) -> tuple[float, float, int]:
    """movescu asks `server` to send `study` to the workstation: seconds, server
    CPU-seconds, files that arrived."""
    shutil.rmtree(received, ignore_errors=True)
    received.mkdir()
    assert server.meter is not None
    cpu = server.meter.cpu_seconds()
    started = time.monotonic()
    subprocess.run(
        [
            "movescu",
            "-S",
            "-aet",
            "MOVESCU",
            "-aec",
            server.called_ae,
            "-aem",
            _WORKSTATION,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(server.port),
        ],
        check=True,
        capture_output=True,
        env=_ENV,
        timeout=600,
    )
    seconds = time.monotonic() - started
    return seconds, server.meter.cpu_seconds() - cpu, sum(1 for _ in received.iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-retrieve-") as tmp:
        work = Path(tmp)
        (work / "study").mkdir()
        files = write_series(ct_slice(), args.instances, "CT", work / "study")
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        import pydicom

        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        received = work / "received"
        port = free_port()
        received.mkdir()
        workstation = subprocess.Popen(
            ["storescp", "-od", str(received), "-aet", _WORKSTATION, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_ENV,
        )
        config = work / "edge.toml"
        config.write_text(
            "".join(f'[[calling_ae]]\nae_title = "{ae}"\n' for ae in ("STORESCU", "MOVESCU"))
            + f'[[calling_ae]]\nae_title = "{_WORKSTATION}"\nhost = "127.0.0.1"\nport = {port}\n'
        )
        servers: list[Peer] = [
            PacsEdge(work / "edge", "fsync", config=config),
            SourceOrthanc(work / "orthanc", port),
        ]
        figures: dict[str, list[tuple[float, float, int]]] = {s.name: [] for s in servers}
        web: dict[str, list[tuple[float, float, int]]] = {s.name: [] for s in servers}
        try:
            wait_for_port(port, workstation)
            for server in servers:
                server.start()
                subprocess.run(
                    [
                        "storescu",
                        "-aec",
                        server.called_ae,
                        "127.0.0.1",
                        str(server.port),
                        *map(str, files),
                    ],
                    check=True,
                    capture_output=True,
                    env=_ENV,
                    timeout=600,
                )
            print(f"{args.instances} CT instances ({megabytes:.0f} MB) stored in both; moving ...")
            for n in range(args.repeat):
                for server in servers if n % 2 == 0 else servers[::-1]:
                    figures[server.name].append(_move(server, study, received))
                    web[server.name].append(_wado(server, study, _SCRATCH / "wado.out"))
        finally:
            for server in servers:
                server.stop()
            workstation.terminate()
            workstation.wait(timeout=30)
    table = (
        _table(
            figures,
            megabytes,
            args,
            f"**C-MOVE of a {args.instances}-instance CT study ({megabytes:.0f} MB) to DCMTK "
            f"storescp, asked by DCMTK movescu** (median of {args.repeat})",
        )
        + "\n"
        + _table(
            web,
            megabytes,
            args,
            f"**WADO-RS retrieve of the same study (multipart/related, as stored), curl "
            f"client** (median of {args.repeat})",
        )
    )
    print(table)
    results.save("retrieve", {"move": figures, "wado": web}, table)
    complete = all(
        r[2] == args.instances for runs in (*figures.values(), *web.values()) for r in runs
    )
    return 0 if complete else 1


def _table(
    figures: dict[str, list[tuple[float, float, int]]],
    megabytes: float,
    args: argparse.Namespace,
    title: str,
) -> str:
    rows = []
    for name, runs in figures.items():
        seconds = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        rows.append(
            (
                name,
                megabytes / seconds,
                cpu / (megabytes / 1000),
                all(r[2] == args.instances for r in runs),
            )
        )
    orthanc = next(r for r in rows if r[0].startswith("Orthanc"))
    lines = [
        title,
        "",
        "| server | MB/s | server CPU-s/GB | x Orthanc MB/s | all arrived |",
        "|---|---:|---:|---:|:---:|",
    ]
    for name, rate, cpu_per_gb, ok in rows:
        lines.append(
            f"| {name} | {rate:.1f} | {cpu_per_gb:.2f} | {rate / orthanc[1]:.2f} | "
            f"{'yes' if ok else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
