"""Forward benchmark: how fast pacs-edge empties its queue into a DICOM archive,
side by side with DCMTK storescu and pynetdicom's storescu sending the same files
to the same archive, in one run. pacs-edge is measured as configured by default (a
study's instances in arrival order, so one association per study at a time) and,
with several associations, unordered (a study spread over all of them, as several
storescu processes do).

The archive is DCMTK storescp --fork (TCP_NODELAY=1), fresh for every pass. For
pacs-edge, the corpus is ingested first while the archive is down, so the queue
holds all of it; the clock runs from "retry now" to an empty queue. Figures: MB/s,
sender CPU-seconds per GB, and whether every object arrived. Report ratios: the
machine is shared and noisy, so only figures from the same run compare.

    python -m bench.forward --quick     # ~130 MB corpus, one pass (make bench)
    python -m bench.forward             # ~400 MB corpus, median of 3 (make bench-full)
    python -m bench.forward --wan 20    # also: a 20 MB/s link, as stored vs JPEG-LS

The WAN scenario caps the destination's `bandwidth` (the forwarder's own throttle) and
drains the same queue twice: objects as stored, then `transfer_syntax =
"jpeg-ls-lossless"`. MB/s there is the corpus's native size over the drain time.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import results
from bench.corpus import Corpus, Mix, build
from bench.peers import DcmtkStorescp, PacsEdge, free_port, spread
from bench.scratch import scratch

SENDERS = (
    "pacs-edge forwarder",
    "DCMTK storescu",
    "pynetdicom storescu",
    "pacs-edge, unordered",
)


@dataclass
class Pass:
    sender: str
    associations: int
    seconds: float
    mb_per_s: float
    cpu_s_per_gb: float
    arrived: int
    expected: int


def _archive(workdir: Path, port: int) -> DcmtkStorescp:
    archive = DcmtkStorescp(workdir / "archive")
    archive.port = port
    archive.start()
    return archive


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _client(sender: str, port: int) -> list[str]:
    if sender == "DCMTK storescu":
        return ["storescu", "-aec", "PACS_EDGE", "127.0.0.1", str(port)]
    return [
        sys.executable,
        "-m",
        "pynetdicom",
        "storescu",
        "-aec",
        "PACS_EDGE",
        "127.0.0.1",
        str(port),
    ]


def _spread(client: list[str], files: list[Path], associations: int) -> None:
    """Send `files` with `associations` client processes at once (TCP_NODELAY=1)."""
    for output in spread(lambda _i: client, files, associations):
        print(f"  {client[0]} failed:\n{output}")


def client_pass(sender: str, corpus: Corpus, associations: int, workdir: Path) -> Pass:
    archive = _archive(workdir, free_port())
    try:
        cpu_before = _children_cpu()
        started = time.perf_counter()
        _spread(_client(sender, archive.port), corpus.files, associations)
        seconds = time.perf_counter() - started
        cpu = _children_cpu() - cpu_before
        return _pass(sender, associations, seconds, cpu, corpus, archive.stored())
    finally:
        archive.stop()


def edge_pass(
    corpus: Corpus,
    associations: int,
    workdir: Path,
    ordered: bool,
    extra: str = "",
    label: str = "",
) -> Pass:
    """The edge's queue, filled while the archive was down, drained into it; `extra`
    is more TOML for the destination."""
    archive_port = free_port()
    config = workdir / "edge.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "[[destination]]\n"
        'name = "archive"\nkind = "dicom"\nhost = "127.0.0.1"\n'
        f'port = {archive_port}\ncalled_ae = "PACS_EDGE"\nassociations = {associations}\n'
        f"ordered = {'true' if ordered else 'false'}\n{extra}"
        '[logging]\nlevel = "WARNING"\n'
    )
    edge = PacsEdge(workdir / "edge", "fsync", config)
    edge.start()
    archive = None
    try:
        # Ingest everything while the archive is down: the queue holds the corpus.
        _spread(_client("DCMTK storescu", edge.port), corpus.files, 4)
        archive = _archive(workdir, archive_port)
        assert edge.meter is not None
        cpu_before = edge.meter.cpu_seconds()
        started = time.perf_counter()
        edge.api("/api/v1/queues/archive/retry", "POST")
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            dest = edge.api("/api/v1/queues")["archive"]
            assert isinstance(dest, dict)
            if dest["depth"] == 0 and dest["in_flight"] == 0:
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        cpu = edge.meter.cpu_seconds() - cpu_before
        sender = label or (SENDERS[0] if ordered else SENDERS[3])
        return _pass(sender, associations, seconds, cpu, corpus, archive.stored())
    finally:
        if archive is not None:
            archive.stop()
        edge.stop()


def _pass(
    sender: str, associations: int, seconds: float, cpu: float, corpus: Corpus, arrived: int
) -> Pass:
    size = corpus.bytes
    return Pass(
        sender=sender,
        associations=associations,
        seconds=round(seconds, 3),
        mb_per_s=round(size / seconds / 1e6, 1),
        cpu_s_per_gb=round(cpu / (size / 1e9), 2),
        arrived=arrived,
        expected=len(corpus.files),
    )


def measure(sender: str, corpus: Corpus, associations: int, workdir: Path, repeat: int) -> Pass:
    passes = []
    for _ in range(repeat):
        if sender in (SENDERS[0], SENDERS[3]):
            passes.append(edge_pass(corpus, associations, workdir, sender == SENDERS[0]))
        else:
            passes.append(client_pass(sender, corpus, associations, workdir))
    passes.sort(key=lambda p: p.mb_per_s)
    return passes[len(passes) // 2]


def wan(corpus: Corpus, workdir: Path, mb_per_s: int, repeat: int) -> list[Pass]:
    """The same queue over a `mb_per_s` link, as stored and as JPEG-LS (median each)."""
    found = []
    for syntax in ("as-stored", "jpeg-ls-lossless"):
        extra = f'bandwidth = "{mb_per_s}MB"\ntransfer_syntax = "{syntax}"\n'
        label = f"pacs-edge, {mb_per_s} MB/s link, {syntax}"
        runs = sorted(
            (edge_pass(corpus, 2, workdir, False, extra, label) for _ in range(repeat)),
            key=lambda p: p.mb_per_s,
        )
        found.append(runs[len(runs) // 2])
    return found


def table(passes: list[Pass]) -> str:
    lines = []
    for n in sorted({p.associations for p in passes}):
        group = {p.sender: p for p in passes if p.associations == n}
        dcmtk, pynet = group.get(SENDERS[1]), group.get(SENDERS[2])
        lines += [
            f"\n**{n} association{'s' if n > 1 else ''}**\n",
            "| sender | MB/s | sender CPU-s/GB | x DCMTK storescu | x pynetdicom storescu "
            "| all arrived |",
            "|---|---:|---:|---:|---:|:---:|",
        ]
        for p in group.values():
            vs_dcmtk = f"{p.mb_per_s / dcmtk.mb_per_s:.2f}" if dcmtk else "-"
            vs_pynet = f"{p.mb_per_s / pynet.mb_per_s:.2f}" if pynet else "-"
            arrived = "yes" if p.arrived == p.expected else f"NO ({p.arrived}/{p.expected})"
            lines.append(
                f"| {p.sender} | {p.mb_per_s} | {p.cpu_s_per_gb} | {vs_dcmtk} | {vs_pynet} "
                f"| {arrived} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small corpus, one pass")
    parser.add_argument("--associations", default="1,4")
    parser.add_argument("--wan", type=int, default=0, help="also drain over a link of N MB/s")
    parser.add_argument("--only-wan", action="store_true", help="only the WAN scenario")
    args = parser.parse_args(argv)
    corpus = build(Mix(ct=160, mr=10, cr=4) if args.quick else Mix(ct=480, mr=30, cr=12))
    repeat = 1 if args.quick else 3
    print(
        f"corpus {corpus.name}: {len(corpus.files)} objects, {corpus.bytes / 1e6:.0f} MB; "
        f"{os.cpu_count()} cores; {repeat} pass(es) per point; archive: DCMTK storescp --fork",
        flush=True,
    )
    passes: list[Pass] = []
    with scratch("pacs-edge-bench-") as tmp:
        levels = [] if args.only_wan else [int(x) for x in args.associations.split(",")]
        if levels:
            print("warm-up pass (not measured) ...", flush=True)
            for sender in SENDERS[:3]:
                measure(sender, corpus, 1, Path(tmp) / "w", 1)
        for step, n in enumerate(levels):
            # Unordered differs from ordered only when several associations share a study.
            senders = list(SENDERS if n > 1 else SENDERS[:3])
            for sender in senders[step:] + senders[:step]:  # rotate who goes first
                result = measure(sender, corpus, n, Path(tmp) / "p", repeat)
                passes.append(result)
                print(
                    f"  {result.sender:<22} {n:>2} assoc  {result.mb_per_s:>7} MB/s  "
                    f"{result.cpu_s_per_gb:>6} CPU-s/GB  arrived {result.arrived}/"
                    f"{result.expected}",
                    flush=True,
                )
        if args.wan:
            over_wan = wan(corpus, Path(tmp) / "wan", args.wan, repeat)
            passes += over_wan
            for p in over_wan:
                print(f"  {p.sender:<44} drained in {p.seconds:>7} s  {p.mb_per_s:>7} MB/s")
    text = table(passes)
    if args.wan:
        stored, jpegls = passes[-2:]
        text += (
            f"\n\nOver a {args.wan} MB/s link, JPEG-LS drained the queue "
            f"{stored.seconds / jpegls.seconds:.2f}x faster than sending as stored "
            f"({stored.seconds} s -> {jpegls.seconds} s).\n"
        )
    print(text)
    results.save_runs("forward", corpus, repeat, passes, text + "\n")
    lost = [p for p in passes if p.sender.startswith("pacs-edge") and p.arrived != p.expected]
    if lost:
        print(f"pacs-edge did not deliver every object in {len(lost)} pass(es)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
