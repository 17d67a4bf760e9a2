"""Worklist benchmark: how fast a modality gets its worklist from the edge, beside the RIS.

A synthetic RIS worklist for one site (`--items` scheduled procedure steps over
yesterday, today and tomorrow; five modalities, twelve station AE titles), written
as worklist files with DCMTK dump2dcm, is served by DCMTK wlmscpfs (the RIS) and by
Orthanc's worklist plugin (a peer on the same files). pacs-edge mirrors the RIS
([[worklist_source]], decision 27), with its default durability ("fsync"), and
answers the same queries twice:
- "RIS up": each query goes to the RIS first, and its answer is the RIS's;
- "RIS down" (wlmscpfs stopped): from the edge's mirror.

The clients are those modalities have: pynetdicom, one association per server and
`--repeat` queries of each kind (p50 / p99), and DCMTK findscu -W, one query
repeated on one association (`--repeat`), so the figure is per query without
process start and association set-up: (time of 41 repeats - time of 1) / 40.
Ratios are against wlmscpfs in the same run. No goal is set by an issue; the table
says how the edge compares. DCMTK's processes run with TCP_NODELAY=1, as the ingest
bench runs them: without it, Nagle's algorithm against the peer's delayed ACK adds
~40 ms per side to every DCMTK query (88 ms against 3.7 ms per findscu query to
wlmscpfs, 60 items, neither side set against both).

    python -m bench.worklist                 # 900 items, 100 queries of each kind
    python -m bench.worklist --items 90 --repeat 20
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from bench import results
from bench.peers import PacsEdge, free_port, wait_for_port
from bench.query import per_query_ms, percentile

RIS_AE = "RIS"
MODALITIES = ["CT"] * 4 + ["MR"] * 3 + ["CR"] * 3 + ["US"] * 2 + ["MG"]
STATIONS = 12  # station AE titles, spread over the modalities
WORKLIST_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


@dataclass(frozen=True)
class Step:
    accession: str
    patient_id: str
    name: str
    modality: str
    station: str
    date: str


def synthetic(items: int, seed: int = 5) -> list[Step]:
    rng = random.Random(seed)
    today = datetime.date.today()
    days = [(today + datetime.timedelta(days=d)).strftime("%Y%m%d") for d in (-1, 0, 1)]
    steps = []
    for n in range(items):
        modality = rng.choice(MODALITIES)
        station = f"{modality}{rng.randrange(STATIONS // 4) + 1}"
        steps.append(
            Step(
                accession=f"A{n:06d}",
                patient_id=f"P{rng.randrange(items * 2):06d}",
                name=f"PATIENT{n}^TEST",
                modality=modality,
                station=station,
                date=days[n % 3],
            )
        )
    return steps


def write_worklist(folder: Path, steps: list[Step]) -> None:
    """One .wl file per step, made by dump2dcm as a RIS's export would be."""
    folder.mkdir(parents=True)
    (folder / "lockfile").touch()
    for n, step in enumerate(steps):
        worklist_file(
            f"""(0008,0050) SH [{step.accession}]
(0010,0010) PN [{step.name}]
(0010,0020) LO [{step.patient_id}]
(0010,0030) DA [19800101]
(0010,0040) CS [O]
(0020,000d) UI [1.2.826.0.1.3680043.8.498.77.{n + 1}]
(0032,1060) LO [{step.modality} exam]
(0040,0100) SQ
(fffe,e000) -
(0008,0060) CS [{step.modality}]
(0040,0001) AE [{step.station}]
(0040,0002) DA [{step.date}]
(0040,0003) TM [{8 + n % 10:02d}{n % 60:02d}00]
(0040,0006) PN [SMITH^ANNA]
(0040,0007) LO [{step.modality} routine]
(0040,0009) SH [S{n:06d}]
(0040,0010) SH [{step.station}]
(0040,0011) SH [ROOM{n % 7}]
(fffe,e00d) -
(fffe,e0dd) -
(0040,1001) SH [RP{n:06d}]
""",
            folder / f"{n}.wl",
        )


def worklist_file(dump: str, path: Path) -> None:
    """A worklist file at `path` from dcmdump's text form (UTF-8), by DCMTK dump2dcm."""
    text = path.with_suffix(".dump")
    text.write_text(dump, encoding="utf-8")
    subprocess.run(["dump2dcm", "--write-xfer-little", str(text), str(path)], check=True)
    text.unlink()


def kinds(steps: list[Step], rng: random.Random) -> dict[str, Callable[[], dict[str, str]]]:
    """What modalities ask: their station's or their modality's steps today, or one
    patient or accession (a walk-in, a barcode)."""
    today = datetime.date.today().strftime("%Y%m%d")
    todays = [s for s in steps if s.date == today]
    return {
        "station, today": lambda: {
            "ScheduledStationAETitle": rng.choice(todays).station,
            "ScheduledProcedureStepStartDate": today,
        },
        "modality, today": lambda: {
            "Modality": rng.choice(todays).modality,
            "ScheduledProcedureStepStartDate": today,
        },
        "PatientID": lambda: {"PatientID": rng.choice(steps).patient_id},
        "AccessionNumber": lambda: {"AccessionNumber": rng.choice(steps).accession},
    }


STEP_KEYS = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate")


def identifier(keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"):
        setattr(ds, keyword, keys.get(keyword, ""))
    step = Dataset()
    for keyword in STEP_KEYS:
        setattr(step, keyword, keys.get(keyword, ""))
    step.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def findscu_args(keys: dict[str, str]) -> list[str]:
    args = ["-k", "PatientName", "-k", "StudyInstanceUID"]
    for keyword in ("PatientID", "AccessionNumber"):
        args += ["-k", f"{keyword}={keys.get(keyword, '')}"]
    for keyword in STEP_KEYS:
        args += ["-k", f"ScheduledProcedureStepSequence[0].{keyword}={keys.get(keyword, '')}"]
    return [*args, "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID"]


@dataclass
class Server:
    name: str
    port: int
    called_ae: str


def measure_pynetdicom(
    server: Server, steps: list[Step], repeat: int
) -> dict[str, tuple[float, float, int]]:
    """Per query kind: p50 and p99 ms, and the median number of answers."""
    ae = AE(ae_title="CT1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.called_ae)
    assert assoc.is_established, f"{server.name}: no association"
    out = {}
    try:
        for name, make in kinds(steps, random.Random(3)).items():
            times, answers = [], []
            for _ in range(repeat):
                ds = identifier(make())
                started = time.perf_counter()
                found = 0
                for status, _ in assoc.send_c_find(ds, ModalityWorklistInformationFind):
                    assert status is not None, f"{server.name}: no answer"
                    assert "Status" in status, f"{server.name}: no status"
                    if status.Status in (0xFF00, 0xFF01):
                        found += 1
                    else:
                        assert status.Status == 0, f"{server.name} {name}: {status.Status:#06x}"
                times.append((time.perf_counter() - started) * 1e3)
                answers.append(found)
            median = statistics.median_low(answers)
            out[name] = (percentile(times, 0.5), percentile(times, 0.99), median)
    finally:
        assoc.release()
    return out


def measure_findscu(server: Server, steps: list[Step]) -> dict[str, float]:
    """Per query kind: ms per query, from findscu -W --repeat (bench.query.per_query_ms)."""
    out = {}
    for name, make in kinds(steps, random.Random(3)).items():
        command = ["findscu", "-W", "-aet", "CT1", "-aec", server.called_ae]
        command += [*findscu_args(make()), "127.0.0.1", str(server.port)]
        out[name] = per_query_ms(command, DCMTK_ENV)
    return out


@dataclass
class Ris:
    """DCMTK wlmscpfs serving the worklist folder as AE title RIS."""

    proc: subprocess.Popen[bytes]
    port: int

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@contextmanager
def wlmscpfs(root: Path) -> Iterator[Ris]:
    port = free_port()
    proc = subprocess.Popen(
        ["wlmscpfs", "-dfp", str(root), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=DCMTK_ENV,
    )
    ris = Ris(proc, port)
    try:
        wait_for_port(port, proc)
        yield ris
    finally:
        ris.kill()


@contextmanager
def orthanc(workdir: Path, worklists: Path) -> Iterator[Server]:
    workdir.mkdir()
    port, http_port = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowFindWorklist": True,
        "Plugins": [str(WORKLIST_PLUGIN)],
        "Worklists": {"Enable": True, "Database": str(worklists)},
    }
    (workdir / "orthanc.json").write_text(json.dumps(config))
    log = (workdir / "orthanc.log").open("wb")
    proc = subprocess.Popen(
        ["Orthanc", str(workdir / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, proc, timeout=60)
        yield Server("Orthanc worklist plugin", port, "ORTHANC")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def edge_config(path: Path, ris_port: int) -> Path:
    path.write_text(
        "[[worklist_source]]\n"
        'name = "ris"\n'
        'host = "127.0.0.1"\n'
        f"port = {ris_port}\n"
        f'called_ae = "{RIS_AE}"\n'
        "poll_interval = 60\n"
        "days_ahead = 1\n"
        "days_behind = 1\n"
    )
    return path


def mirrored(edge: PacsEdge, items: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if edge.status().get("worklist", {}).get("ris", {}).get("items") == items:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the edge did not mirror the RIS's {items} items in {timeout:g} s")


@dataclass
class Measured:
    """One server's figures, per query kind."""

    pynetdicom: dict[str, tuple[float, float, int]]  # p50 ms, p99 ms, answers (median)
    findscu: dict[str, float]  # ms per query


Figures = dict[str, Measured]


def run(items: int, repeat: int, workdir: Path) -> Figures:
    steps = synthetic(items)
    worklists = workdir / "worklists"
    write_worklist(worklists / RIS_AE, steps)
    figures: Figures = {}

    def measure(server: Server) -> None:
        print(f"  {server.name} ...", flush=True)
        figures[server.name] = Measured(
            measure_pynetdicom(server, steps, repeat), measure_findscu(server, steps)
        )

    with orthanc(workdir / "orthanc", worklists / RIS_AE) as peer:
        measure(peer)
    with wlmscpfs(worklists) as ris:
        measure(Server("DCMTK wlmscpfs (the RIS)", ris.port, RIS_AE))
        edge = PacsEdge(workdir / "edge", "fsync", edge_config(workdir / "edge.toml", ris.port))
        edge.start()
        try:
            mirrored(edge, items)
            measure(Server("pacs-edge, RIS up (proxied)", edge.port, edge.called_ae))
            ris.kill()
            measure(Server("pacs-edge, RIS down (mirror)", edge.port, edge.called_ae))
        finally:
            edge.stop()
    return figures


def render(items: int, repeat: int, figures: Figures) -> str:
    reference = figures["DCMTK wlmscpfs (the RIS)"]
    lines = [
        f"**Modality Worklist C-FIND, {items} scheduled steps over three days** "
        f"(pynetdicom: {repeat} queries of each kind on one association; findscu -W: "
        "per query on one association; x: against wlmscpfs in the same run)",
        "",
        "| query | answers | server | pynetdicom p50 / p99 ms | findscu ms |",
        "|---|---:|---|---:|---:|",
    ]
    for kind, (ref_p50, _, _) in reference.pynetdicom.items():
        ref_findscu = reference.findscu[kind]
        for server, measured in figures.items():
            p50, p99, answers = measured.pynetdicom[kind]
            findscu = measured.findscu[kind]
            lines.append(
                f"| {kind} | {answers} | {server} | {p50:.2f} / {p99:.2f} "
                f"({p50 / ref_p50:.2f}x) | {findscu:.2f} ({findscu / ref_findscu:.2f}x) |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=900)
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()
    for tool in ("wlmscpfs", "findscu", "dump2dcm", "Orthanc"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: run `make system-deps`")
    with tempfile.TemporaryDirectory(prefix="pacs-edge-worklist-") as tmp:
        print(f"worklist of {args.items} steps; {args.repeat} queries of each kind per server")
        figures = run(args.items, args.repeat, Path(tmp))
    table = render(args.items, args.repeat, figures)
    print(table)
    saved = {server: asdict(measured) for server, measured in figures.items()}
    results.save("worklist", {"items": args.items, "repeat": args.repeat, **saved}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
