"""Load generator: K simulated modalities pushing a corpus to any C-STORE SCP.

It is the edge's own C-STORE SCU (engine/dicom/client.py: Rust framing and response
decoding, zero-copy P-DATA from 1 MiB file windows) driven by one asyncio loop, so
the client costs less CPU per GB than DCMTK storescu (bench.forward measures both)
and is not what a benchmark measures. Every object is timed from its C-STORE-RQ to
its C-STORE-RSP: the latency a modality sees.

Two ways to drive it:
- throughput: the corpus dealt over N associations, each sent once, as fast as the
  SCP takes it (what `bench.ingest` does at 1/4/16/64 associations);
- rate: each modality on its own association(s) at a target rate, for a duration,
  every send with fresh UIDs (capacity planning and soak):

    python -m bench.loadgen 127.0.0.1 11112 --studies-per-day 4000 --peak 3 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import random
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.corpus import FULL, QUICK, SUFFIX, UID_LENGTH, Corpus, Item, build
from engine.dicom.client import Payload, PeerUnavailable, Requestor

MAX_PDU = 262144  # what we propose to receive; the SCP's own maximum governs what we send


@dataclass(frozen=True)
class Relabelled(Payload):
    """A stored object sent with new UIDs: `patches` overwrite bytes of its first
    window (where group 0008 and 0020 are), lengths unchanged."""

    patches: tuple[tuple[int, bytes], ...] = ()

    def windows(self) -> Iterator[tuple[bytes, bool]]:
        first = True
        for window, last in super().windows():
            if first and self.patches:
                patched = bytearray(window)
                for at, data in self.patches:
                    patched[at : at + len(data)] = data
                window = bytes(patched)
            first = False
            yield window, last


@dataclass
class Stream:
    """One association's work: a calling AE, its objects, and how to pace them."""

    calling_ae: str
    items: list[Item]
    rate: float | None = None  # objects/s; None: as fast as the SCP answers
    repeat: bool = False  # cycle through `items` with fresh UIDs until the deadline
    fresh_uids: bool = False  # new Study/Series/SOP UIDs on every send
    study_size: int = 1  # sends per new study when fresh_uids
    phase: float = 0.0  # 0..1 of one interval: devices are not in lockstep


@dataclass(frozen=True)
class Sample:
    modality: str
    bytes: int
    start: float  # seconds since the run began
    seconds: float  # C-STORE-RQ to C-STORE-RSP
    status: int  # DIMSE status; -1: the association failed


@dataclass
class Result:
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.status == 0]

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.ok)


_serial = itertools.count(1)  # makes every relabelled send's UIDs unique within a run


def _payload(item: Item, stream: Stream) -> tuple[Payload, str]:
    if not stream.fresh_uids:
        return Payload(item.path, item.offset, item.length), item.sop_instance
    n = next(_serial) % 10**SUFFIX
    study = n // stream.study_size
    suffixes = (study, study, n)
    patches = tuple(
        (at - item.offset + UID_LENGTH - SUFFIX, f"{s:0{SUFFIX}d}".encode())
        for at, s in zip(item.uid_offsets, suffixes, strict=True)
    )
    uid = item.sop_instance[:-SUFFIX] + f"{n:0{SUFFIX}d}"
    return Relabelled(item.path, item.offset, item.length, patches=patches), uid


async def _run_stream(
    host: str,
    port: int,
    called_ae: str,
    stream: Stream,
    began: float,
    deadline: float,
    result: Result,
) -> None:
    contexts = sorted({(i.sop_class, i.transfer_syntax) for i in stream.items})
    try:
        assoc = await Requestor.open(
            host, port, stream.calling_ae, called_ae, contexts, MAX_PDU, 10.0, 600.0
        )
    except PeerUnavailable as exc:
        result.errors.append(f"{stream.calling_ae}: {exc}")
        result.samples += [Sample(i.modality, i.size, 0.0, 0.0, -1) for i in stream.items]
        return
    order = itertools.cycle(stream.items) if stream.repeat else iter(stream.items)
    try:
        for sent, item in enumerate(order):
            now = time.perf_counter()
            if stream.repeat and now >= deadline:
                break
            if stream.rate:
                due = began + (sent + stream.phase) / stream.rate
                if stream.repeat and due >= deadline:
                    break  # a slow device's next object would fall after the run
                if due > now:
                    await asyncio.sleep(due - now)
            context = assoc.accepted.get((item.sop_class, item.transfer_syntax))
            if context is None:
                result.errors.append(f"{stream.calling_ae}: {item.modality} context refused")
                result.samples.append(Sample(item.modality, item.size, 0.0, 0.0, -1))
                continue
            payload, uid = _payload(item, stream)
            start = time.perf_counter()
            try:
                rsp = await assoc.store(context, item.sop_class, uid, payload, 1, None)
                status = rsp.status
            except PeerUnavailable as exc:
                result.errors.append(f"{stream.calling_ae}: {exc}")
                status = -1
            end = time.perf_counter()
            result.samples.append(
                Sample(item.modality, item.size, start - began, end - start, status)
            )
            if status == -1:
                return
    finally:
        await assoc.release()


async def _run(
    host: str, port: int, called_ae: str, streams: list[Stream], duration: float
) -> Result:
    result = Result()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    await asyncio.gather(
        *(_run_stream(host, port, called_ae, s, began, began + duration, result) for s in streams)
    )
    result.seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    result.client_cpu_seconds = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return result


def run(host: str, port: int, called_ae: str, streams: list[Stream], duration: float = 0) -> Result:
    """Drive `streams` in parallel (one association each) on a fresh event loop."""
    try:
        import uvloop

        return uvloop.run(_run(host, port, called_ae, streams, duration))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(_run(host, port, called_ae, streams, duration))


def dealt(corpus: Corpus, associations: int) -> list[Stream]:
    """The corpus dealt round-robin over `associations` (as N storescu processes do)."""
    return [
        Stream(f"MOD{n:02d}", corpus.items[n::associations])
        for n in range(associations)
        if corpus.items[n::associations]
    ]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was measured."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# A regional mix by study, for rate targets: share of studies, objects per study.
# From a typical radiology case mix (projection radiography most studies, CT and MR
# most bytes); change it here for another region.
REGION = {
    "CR": (0.25, 2),
    "DX": (0.20, 2),
    "CT": (0.20, 300),
    "US": (0.15, 40),
    "MR": (0.10, 150),
    "MG": (0.10, 4),
}


def regional(corpus: Corpus, studies_per_day: float, peak: float, modalities: int) -> list[Stream]:
    """Streams that send `studies_per_day` at `peak` times the daily mean rate, spread
    over `modalities` devices (each with its own association), fresh UIDs per send."""
    streams = []
    kinds = [m for m in REGION if corpus.only(m).items]
    for k, modality in enumerate(kinds):
        share, per_study = REGION[modality]
        per_second = studies_per_day * share * per_study * peak / 86400
        devices = max(1, round(modalities * share))
        for d in range(devices):
            streams.append(
                Stream(
                    f"{modality}{k}{d:02d}",
                    corpus.only(modality).items,
                    rate=per_second / devices,
                    repeat=True,
                    fresh_uids=True,
                    study_size=per_study,
                    phase=random.random(),
                )
            )
    return streams


def summary(result: Result) -> str:
    ok = result.ok
    lines = [
        f"{len(ok)}/{len(result.samples)} objects stored, {result.bytes / 1e6:.0f} MB in "
        f"{result.seconds:.1f} s: {result.bytes / 1e6 / max(result.seconds, 1e-9):.1f} MB/s, "
        f"client CPU {result.client_cpu_seconds:.1f} s"
    ]
    for modality in sorted({s.modality for s in ok}):
        ms = [s.seconds * 1000 for s in ok if s.modality == modality]
        lines.append(
            f"  {modality:<3} {len(ms):>6} objects  latency ms p50 {percentile(ms, 50):.1f}  "
            f"p99 {percentile(ms, 99):.1f}  max {max(ms):.1f}"
        )
    lines += [f"  error: {e}" for e in result.errors[:10]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--called-ae", default="PACS_EDGE")
    parser.add_argument("--full", action="store_true", help="the full corpus (~600 MB)")
    parser.add_argument("--associations", type=int, default=0, help="throughput: deal over N")
    parser.add_argument("--studies-per-day", type=float, default=4000)
    parser.add_argument("--peak", type=float, default=3.0, help="peak over the daily mean")
    parser.add_argument("--modalities", type=int, default=24, help="devices sending at once")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds, rate mode")
    args = parser.parse_args(argv)
    corpus = build(FULL if args.full else QUICK)
    if args.associations:
        streams = dealt(corpus, args.associations)
    else:
        streams = regional(corpus, args.studies_per_day, args.peak, args.modalities)
        need = sum(s.rate or 0 for s in streams)
        print(
            f"{args.studies_per_day:g} studies/day at {args.peak:g}x peak: {len(streams)} "
            f"devices, {need:.1f} objects/s for {args.duration:g} s",
            flush=True,
        )
    result = run(args.host, args.port, args.called_ae, streams, args.duration)
    print(summary(result))
    return 0 if len(result.ok) == len(result.samples) else 1


if __name__ == "__main__":
    sys.exit(main())
