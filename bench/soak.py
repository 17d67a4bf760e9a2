"""Soak: a steady regional load on pacs-edge with its forwarder on, for a duration.

The edge (fsync, its defaults) forwards everything to a DCMTK storescp --fork
archive; the load generator sends the regional mix at a rate target with fresh UIDs
on every send, each modality on its own association(s). Every few seconds it samples
the forward queue's depth and the edge's resident memory (every process). The
answer to "can this box run like this all day":

- queue bounded: the deepest queue in the last third of the run is no deeper than
  in the middle third plus one second of intake (forward keeps up with intake);
- memory flat: mean anonymous RSS (heap, stacks) in the last third within 10% + 5 MB
  of the middle third (the first third is warm-up: caches, allocator arenas); the
  file-mapped rest grows with the index by design (LMDB is mmap'd) and is reported;
- nothing lost: every object sent got Success, and everything reached the archive
  once the load stopped.

    python -m bench.soak --duration 600                    # 4,000 studies/day, 3x peak
    python -m bench.soak --duration 120 --studies-per-day 40000
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen, results
from bench.corpus import QUICK, build
from bench.peers import DcmtkStorescp, PacsEdge, free_port, tree_kb
from bench.scratch import scratch


@dataclass
class Tick:
    seconds: float
    depth: int
    sent: int
    rss_mb: float
    anon_mb: float  # heap and stacks; the rest of RSS is mapped files (LMDB's map grows)


def _sample(edge: PacsEdge, began: float) -> Tick:
    central = edge.status()["destinations"]["central"]
    return Tick(
        round(time.perf_counter() - began, 1),
        int(central["depth"]),
        int(central["sent"]),
        round(tree_kb(edge.pid, "VmRSS") / 1024, 1),
        round(tree_kb(edge.pid, "RssAnon") / 1024, 1),
    )


def verdict(ticks: list[Tick], intake_per_s: float) -> dict[str, Any]:
    third = max(1, len(ticks) // 3)
    middle, last = ticks[third : 2 * third] or ticks, ticks[2 * third :] or ticks
    depth_limit = max(t.depth for t in middle) + intake_per_s
    anon_middle = sum(t.anon_mb for t in middle) / len(middle)
    anon_last = sum(t.anon_mb for t in last) / len(last)
    return {
        "queue_bounded": max(t.depth for t in last) <= depth_limit,
        "max_depth_last_third": max(t.depth for t in last),
        "depth_limit": round(depth_limit, 1),
        "memory_flat": anon_last <= anon_middle * 1.1 + 5,
        "anon_middle_mb": round(anon_middle, 1),
        "anon_last_mb": round(anon_last, 1),
        "rss_first_mb": ticks[0].rss_mb,
        "rss_last_mb": ticks[-1].rss_mb,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--studies-per-day", type=float, default=4000)
    parser.add_argument("--peak", type=float, default=3.0)
    parser.add_argument("--modalities", type=int, default=24)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    args = parser.parse_args(argv)
    corpus = build(QUICK)
    streams = loadgen.regional(corpus, args.studies_per_day, args.peak, args.modalities)
    intake = sum(s.rate or 0 for s in streams)
    print(
        f"soak: {args.studies_per_day:g} studies/day at {args.peak:g}x peak = {intake:.1f} "
        f"objects/s from {len(streams)} devices for {args.duration:g} s; forwarding to "
        "DCMTK storescp --fork",
        flush=True,
    )
    ticks: list[Tick] = []
    with scratch("pacs-edge-bench-") as tmp:
        archive = DcmtkStorescp(Path(tmp) / "archive")
        archive.start()
        config = Path(tmp) / "edge.toml"
        config.write_text(
            "[[destination]]\n"
            f'name = "central"\nkind = "dicom"\nhost = "127.0.0.1"\nport = {archive.port}\n'
            f'called_ae = "{archive.called_ae}"\nassociations = 2\n'
        )
        edge = PacsEdge(Path(tmp) / "edge", "fsync", config=config)
        edge.http_port = free_port()
        edge.start()
        try:
            began = time.perf_counter()
            done = threading.Event()

            def watch() -> None:
                while not done.wait(args.interval):
                    ticks.append(_sample(edge, began))
                    t = ticks[-1]
                    print(
                        f"  {t.seconds:>6.0f} s  queue {t.depth:>5}  forwarded {t.sent:>7}  "
                        f"RSS {t.rss_mb:>6} MB (anonymous {t.anon_mb} MB)",
                        flush=True,
                    )

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            result = loadgen.run("127.0.0.1", edge.port, edge.called_ae, streams, args.duration)
            done.set()
            watcher.join()
            print(loadgen.summary(result))
            drained_at = time.perf_counter()
            deadline = drained_at + 120
            while (
                edge.status()["destinations"]["central"]["depth"] and time.perf_counter() < deadline
            ):
                time.sleep(0.5)
            drain = round(time.perf_counter() - drained_at, 1)
            stored, arrived = edge.stored(), archive.stored()
        finally:
            edge.stop()
            archive.stop()
    figures = verdict(ticks, intake)
    figures.update(
        sent=len(result.samples),
        acknowledged=len(result.ok),
        stored=stored,
        arrived=arrived,
        drain_seconds=drain,
        intake_objects_per_s=round(intake, 2),
        measured_objects_per_s=round(len(result.ok) / result.seconds, 2),
    )
    lost = figures["acknowledged"] != figures["sent"] or arrived != stored
    lines = [f"{k}: {v}" for k, v in figures.items()]
    print("\n".join(lines))
    latency = [s.seconds * 1000 for s in result.ok]
    results.save(
        "soak",
        {**figures, "ticks": [t.__dict__ for t in ticks], "latencies_ms": latency},
        "```\n" + loadgen.summary(result) + "\n" + "\n".join(lines) + "\n```\n",
    )
    ok = figures["queue_bounded"] and figures["memory_flat"] and not lost
    print("soak: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
