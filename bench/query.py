"""Query benchmark: C-FIND latency against an index of a regional site's size.

An index of 50,000 studies / 1,000,000 instances (20,000 patients, a year of study
dates, five modalities, Latin and Chinese names) is written straight through
storage.index, as the group commit writes it; then a pacs-edge on that data
directory answers pynetdicom C-FINDs on one association, and the same queries run
in-process through storage.query (the index's share of the time). Each query kind
runs `--repeat` times with random values; the figures are p50 and p99 in ms, with
the answers per query. Goals (issue 16): p50 <= 3 ms, p99 <= 20 ms.

    python -m bench.query                # 50,000 studies (~3 min to build)
    python -m bench.query --studies 5000 # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from bench import results
from bench.peers import free_port, wait_for_port
from engine.dicom.client import Requestor
from storage.index import Index, Instance
from storage.query import Query, search

SURNAMES = [
    "SMITH",
    "JONES",
    "GARCIA",
    "MUELLER",
    "ROSSI",
    "DUBOIS",
    "KOWALSKI",
    "SILVA",
    "NOVAK",
    "HANSEN",
    "AHMADI",
    "REZAEI",
    "WANG",
    "LI",
    "ZHANG",
    "CHEN",
    "LIU",
]
GIVEN = ["ANNA", "JOHN", "MARIA", "WEI", "FANG", "ALI", "SARA", "PETER", "LENA", "OMID"]
CHINESE = {"WANG": "王", "LI": "李", "ZHANG": "张", "CHEN": "陈", "LIU": "刘"}
MODALITIES = ["CT"] * 8 + ["MR"] * 5 + ["CR"] * 4 + ["US"] * 2 + ["MG"]
SERIES_PER_STUDY, INSTANCES_PER_SERIES = 2, 10


@dataclass(frozen=True)
class Study:
    uid: str
    patient_id: str
    name: str
    date: str
    accession: str
    modality: str


def synthetic(studies: int, seed: int = 7) -> list[Study]:
    rng = random.Random(seed)
    patients = max(1, studies * 2 // 5)
    names = {}
    for p in range(patients):
        surname, given = rng.choice(SURNAMES), rng.choice(GIVEN)
        name = f"{surname}^{given}"
        if surname in CHINESE:
            name += f"={CHINESE[surname]}^{given.lower()}"
        names[f"PID{p:06d}"] = name
    out = []
    for s in range(studies):
        pid = f"PID{rng.randrange(patients):06d}"
        day = time.strftime("%Y%m%d", time.gmtime(1_700_000_000 + rng.randrange(365) * 86400))
        out.append(
            Study(
                f"1.2.826.0.1.3680043.10.9.{s}",
                pid,
                names[pid],
                day,
                f"ACC{s:07d}",
                rng.choice(MODALITIES),
            )
        )
    return out


def build(path: Path, studies: list[Study]) -> float:
    """Write every instance through Index.apply, 2,000 a transaction; seconds taken."""
    index = Index(path, 64 * 2**30, durable=False)
    index.upgrade()
    started = time.perf_counter()
    batch: list[tuple[Instance, list[object]]] = []
    for n, study in enumerate(studies):
        for series in range(SERIES_PER_STUDY):
            series_uid = f"{study.uid}.{series}"
            for i in range(INSTANCES_PER_SERIES):
                uid = f"{series_uid}.{i}"
                batch.append(
                    (
                        Instance(
                            sop_instance_uid=uid,
                            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                            study_instance_uid=study.uid,
                            series_instance_uid=series_uid,
                            patient_id=study.patient_id,
                            patient_name=study.name,
                            modality=study.modality,
                            study_date=study.date,
                            study_description="",
                            accession_number=study.accession,
                            series_number=str(series),
                            instance_number=str(i),
                            transfer_syntax_uid="1.2.840.10008.1.2.1",
                            calling_ae="BENCH",
                            hash=f"{n:032x}{series:016x}{i:016x}",
                            meta_length=200,
                            dataset_length=500_000,
                            received_at=time.time(),
                        ),
                        [],
                    )
                )
        if len(batch) >= 2000:
            index.apply(batch, "replace")  # type: ignore[arg-type]
            batch = []
        if n and n % 5000 == 0:
            print(f"\r  indexed {n} of {len(studies)} studies", end="", flush=True)
    if batch:
        index.apply(batch, "replace")  # type: ignore[arg-type]
    index.close()
    print()
    return time.perf_counter() - started


def kinds(studies: list[Study], rng: random.Random) -> dict[str, Callable[[], dict[str, str]]]:
    def one() -> Study:
        return rng.choice(studies)

    return {
        "PatientID": lambda: {"PatientID": one().patient_id},
        "AccessionNumber": lambda: {"AccessionNumber": one().accession},
        "StudyDate, one day": lambda: {"StudyDate": one().date},
        "StudyDate, 3 days + MG": lambda: {
            "StudyDate": _three_days(one().date),
            "ModalitiesInStudy": "MG",
        },
        "PatientName prefix": lambda: {"PatientName": one().name.split("=")[0][:-2] + "*"},
        "PatientName, Chinese": lambda: {"PatientName": rng.choice(list(CHINESE.values())) + "^f*"},
    }


def _three_days(day: str) -> str:
    first = datetime.datetime.strptime(day, "%Y%m%d")
    return f"{day}-{(first + datetime.timedelta(days=2)):%Y%m%d}"


RETURN_KEYS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
)


def identifier(keys: dict[str, str]) -> Dataset:
    """A STUDY-level identifier: the return keys, then `keys` to match (UTF-8 when
    a value is not ASCII)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in RETURN_KEYS:
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    if not all(value.isascii() for value in keys.values()):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    studies = synthetic(args.studies)
    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="pacs-edge-query-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        instances = args.studies * SERIES_PER_STUDY * INSTANCES_PER_SERIES
        print(f"building an index of {args.studies} studies, {instances} instances ...")
        took = build(data / "index.lmdb", studies)
        print(f"  {took:.0f} s ({instances / took:.0f} instances/s through Index.apply)")
        index = Index(data / "index.lmdb", 64 * 2**30, durable=False)
        in_process: dict[str, list[float]] = {}
        for name, make in kinds(studies, rng).items():
            times = []
            for _ in range(args.repeat):
                query = Query("STUDY", {**dict.fromkeys(RETURN_KEYS, ""), **make()})
                started = time.perf_counter()
                list(search(index, query))
                times.append((time.perf_counter() - started) * 1e3)
            in_process[name] = times
        index.close()
        port, http_port = free_port(), free_port()
        engine = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "serve",
                "--data-dir",
                str(data),
                "--workers",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--http-port",
                str(http_port),
                "--durability",
                "os",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, engine, timeout=600)
            rows = measure(port, studies, rng, args.repeat, in_process)
            lean = asyncio.run(measure_lean(port, studies, random.Random(11), args.repeat))
            dcmtk = measure_findscu(port, studies, random.Random(11))
            qido = measure_qido(http_port, studies, max(5, args.repeat // 20))
            for row in rows:
                row["lean_p50_ms"], row["lean_p99_ms"] = lean[str(row["query"])]
                row["findscu_ms"] = dcmtk[str(row["query"])]
        finally:
            engine.terminate()
            engine.wait(timeout=60)
    table = render(args.studies, instances, rows) + "\n" + render_qido(qido)
    print(table)
    results.save(
        "query",
        {"studies": args.studies, "instances": instances, "rows": rows, "qido": qido},
        table,
    )
    return 0


def measure(
    port: int,
    studies: list[Study],
    rng: random.Random,
    repeat: int,
    in_process: dict[str, list[float]],
) -> list[dict[str, float | str]]:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS_EDGE")
    assert assoc.is_established, "no association"
    rows: list[dict[str, float | str]] = []
    try:
        for name, make in kinds(studies, rng).items():
            times, answers = [], []
            for _ in range(repeat):
                ds = identifier(make())
                started = time.perf_counter()
                found = sum(
                    1
                    for status, _ in assoc.send_c_find(
                        ds, StudyRootQueryRetrieveInformationModelFind
                    )
                    if status.Status == 0xFF00
                )
                times.append((time.perf_counter() - started) * 1e3)
                answers.append(found)
            index_ms = in_process[name]
            rows.append(
                {
                    "query": name,
                    "answers": statistics.median(answers),
                    "p50_ms": percentile(times, 0.5),
                    "p99_ms": percentile(times, 0.99),
                    "index_p50_ms": percentile(index_ms, 0.5),
                    "index_p99_ms": percentile(index_ms, 0.99),
                }
            )
    finally:
        assoc.release()
    return rows


async def measure_lean(
    port: int, studies: list[Study], rng: random.Random, repeat: int
) -> dict[str, tuple[float, float]]:
    """The same queries from a client that sends each request in one write and sets
    TCP_NODELAY (engine.dicom.client): what the server itself takes."""
    find = str(StudyRootQueryRetrieveInformationModelFind)
    explicit_le = "1.2.840.10008.1.2.1"
    assoc = await Requestor.open(
        "127.0.0.1", port, "BENCH", "PACS_EDGE", [(find, explicit_le)], 262144, 10, 60
    )
    context = assoc.accepted[(find, explicit_le)]
    out = {}
    try:
        for name, make in kinds(studies, rng).items():
            times = []
            for n in range(repeat):
                ds = identifier(make())
                buffer = DicomBytesIO()
                buffer.is_implicit_VR, buffer.is_little_endian = False, True
                write_dataset(buffer, ds)
                command = _find_rq(find, n + 1)
                started = time.perf_counter()
                statuses = await assoc.exchange(context, command, bytes(buffer.getvalue()))
                times.append((time.perf_counter() - started) * 1e3)
                assert statuses[-1] == 0x0000, f"{name}: final status {statuses[-1]:#06x}"
            out[name] = (percentile(times, 0.5), percentile(times, 0.99))
    finally:
        await assoc.release()
    return out


def measure_findscu(port: int, studies: list[Study], rng: random.Random) -> dict[str, float]:
    """DCMTK findscu: one query repeated on one association (`--repeat`), so the
    figure is per query without process start and association set-up: (time of 41
    repeats - time of 1) / 40. One value per kind, so a mean, not percentiles."""
    out = {}
    for name, make in kinds(studies, rng).items():
        keys = make()
        args = [
            "findscu",
            "-S",
            "-aet",
            "BENCH",
            "-aec",
            "PACS_EDGE",
            "-k",
            "QueryRetrieveLevel=STUDY",
        ]
        for keyword in RETURN_KEYS:
            args += ["-k", keyword if keyword not in keys else f"{keyword}={keys[keyword]}"]
        for keyword, value in keys.items():
            if keyword not in RETURN_KEYS:
                args += ["-k", f"{keyword}={value}"]
        if not all(value.isascii() for value in keys.values()):
            args += ["-k", "SpecificCharacterSet=ISO_IR 192"]
        out[name] = per_query_ms([*args, "127.0.0.1", str(port)])
    return out


def per_query_ms(findscu: list[str], env: dict[str, str] | None = None) -> float:
    """ms per query of a findscu command line (host and port last): the time of 41
    repeats on one association less that of 1, over 40. Process start, association
    set-up and release fall out."""
    seconds = []
    for repeat in (1, 41):
        started = time.perf_counter()
        subprocess.run(
            [*findscu[:-2], "--repeat", str(repeat), *findscu[-2:]],
            capture_output=True,
            check=True,
            timeout=120,
            env=env,
        )
        seconds.append(time.perf_counter() - started)
    return (seconds[1] - seconds[0]) / 40 * 1e3


def _find_rq(sop_class: str, message_id: int) -> bytes:
    ds = Dataset()
    ds.AffectedSOPClassUID = sop_class
    ds.CommandField = 0x0020
    ds.MessageID = message_id
    ds.Priority = 0
    ds.CommandDataSetType = 0x0000
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = True, True
    write_dataset(buffer, ds)
    body = bytes(buffer.getvalue())
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def measure_qido(http_port: int, studies: list[Study], repeat: int) -> list[dict[str, float | str]]:
    """QIDO-RS study lists of thousands of studies, as a viewer's worklist asks for
    them: the time to the whole JSON body with curl (the server's figure; a C client
    adds little), and with httpx including parsing the JSON in Python."""
    days = sorted({s.date for s in studies})
    month = f"{days[0]}-{days[min(len(days) - 1, 30)]}"
    lists = {
        "first 5,000 studies (no filter)": {"limit": "5000"},
        f"a month of studies ({month})": {"StudyDate": month, "limit": "5000"},
    }
    base = f"http://127.0.0.1:{http_port}/dicom-web"
    rows: list[dict[str, float | str]] = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for name, params in lists.items():
            url = httpx.URL(f"{base}/studies", params=params)
            curl = [_curl_seconds(str(url)) * 1e3 for _ in range(repeat)]
            times, count = [], 0
            for _ in range(repeat):
                started = time.perf_counter()
                body = client.get("/studies", params=params).json()
                times.append((time.perf_counter() - started) * 1e3)
                count = len(body)
            rows.append(
                {
                    "query": name,
                    "studies": count,
                    "curl_p50_ms": statistics.median(curl),
                    "curl_max_ms": max(curl),
                    "p50_ms": statistics.median(times),
                    "max_ms": max(times),
                }
            )
    return rows


def _curl_seconds(url: str) -> float:
    done = subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{time_total}", url],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return float(done.stdout)


def render_qido(rows: list[dict[str, float | str]]) -> str:
    lines = [
        "**QIDO-RS study lists** (curl: the whole body received; httpx: received and "
        "parsed in Python)",
        "",
        "| list | studies | curl p50 / max ms | httpx + parse p50 / max ms "
        "| goal (5,000 studies <= 300 ms, curl) |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        per_5000 = float(row["curl_p50_ms"]) * 5000 / max(1, int(row["studies"]))
        lines.append(
            f"| {row['query']} | {row['studies']} "
            f"| {float(row['curl_p50_ms']):.0f} / {float(row['curl_max_ms']):.0f} "
            f"| {float(row['p50_ms']):.0f} / {float(row['max_ms']):.0f} "
            f"| {'met' if per_5000 <= 300 else 'NOT met'} |"
        )
    return "\n".join(lines) + "\n"


def render(studies: int, instances: int, rows: list[dict[str, float | str]]) -> str:
    lines = [
        f"**C-FIND, Study Root, STUDY level, {studies:,} studies / {instances:,} instances** "
        "(pynetdicom SCU on one association; index: storage.query in-process)",
        "",
        "| query | answers (median) | pynetdicom p50 / p99 ms | DCMTK findscu mean ms "
        "| lean client p50 / p99 ms | index p50 / p99 ms | goal (p50 <= 3, p99 <= 20) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        met = float(row["p50_ms"]) <= 3 and float(row["p99_ms"]) <= 20
        lean = float(row["lean_p50_ms"]) <= 3 and float(row["lean_p99_ms"]) <= 20
        lines.append(
            f"| {row['query']} | {row['answers']:g} "
            f"| {float(row['p50_ms']):.2f} / {float(row['p99_ms']):.2f} "
            f"| {float(row['findscu_ms']):.2f} "
            f"| {float(row['lean_p50_ms']):.2f} / {float(row['lean_p99_ms']):.2f} "
            f"| {float(row['index_p50_ms']):.2f} / {float(row['index_p99_ms']):.2f} "
            f"| pynetdicom {'met' if met else 'NOT met'}, lean {'met' if lean else 'NOT met'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
