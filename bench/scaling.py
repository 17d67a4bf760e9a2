"""Scaling benchmark: pacs-edge with --workers 1 vs 2, and behind HAProxy vs direct.

All in one run, beside DCMTK storescp --fork (one process per association, the
scaling reference), over 4 and 16 parallel associations of the load generator
(bench/loadgen.py). The same corpus, fresh storage for each point, the peer order rotated per level.
Figures are ratios against the 1-worker edge and DCMTK measured in this run.

    python -m bench.scaling --quick     # ~130 MB corpus, one pass (make bench)
    python -m bench.scaling             # ~400 MB corpus, median of 3 (make bench-full)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench import results
from bench.corpus import Mix, build
from bench.ingest import Make, Run, dealt, measure, side_by_side
from bench.peers import BalancedEdge, DcmtkStorescp, PacsEdge
from bench.scratch import scratch


def lineup() -> list[tuple[str, Make]]:
    return [
        ("DCMTK storescp --fork", DcmtkStorescp),
        ("pacs-edge (fsync), 1 worker", lambda d: PacsEdge(d, "fsync", workers=1)),
        ("pacs-edge (fsync), 2 workers", lambda d: PacsEdge(d, "fsync", workers=2)),
        ("pacs-edge (os), 1 worker", lambda d: PacsEdge(d, "os", workers=1)),
        ("pacs-edge (os), 2 workers", lambda d: PacsEdge(d, "os", workers=2)),
        ("pacs-edge (fsync), 2 workers, via HAProxy", lambda d: BalancedEdge(d, "fsync", 2)),
    ]


def table(runs: list[Run]) -> str:
    lines = []
    for n in sorted({r.associations for r in runs}):
        group = {r.peer: r for r in runs if r.associations == n}
        base = group.get("pacs-edge (fsync), 1 worker")
        dcmtk = group.get("DCMTK storescp --fork")
        lines += [
            f"\n**{n} associations**\n",
            "| SCP | MB/s | objects/s | CPU-s/GB | peak RSS MB | x 1-worker fsync "
            "| x DCMTK | all stored |",
            "|---|---:|---:|---:|---:|---:|---:|:---:|",
        ]
        for r in group.values():
            vs_base = f"{r.mb_per_s / base.mb_per_s:.2f}" if base else "-"
            vs_dcmtk = f"{r.mb_per_s / dcmtk.mb_per_s:.2f}" if dcmtk else "-"
            stored = "yes" if r.complete else f"NO ({r.stored}/{r.expected})"
            lines.append(
                f"| {r.peer} | {r.mb_per_s} | {r.objects_per_s} | {r.cpu_s_per_gb} | "
                f"{r.peak_rss_mb} | {vs_base} | {vs_dcmtk} | {stored} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small corpus, one pass")
    parser.add_argument("--associations", default="4,16")
    args = parser.parse_args(argv)
    corpus = build(Mix(ct=160, mr=10, cr=4) if args.quick else Mix(ct=480, mr=30, cr=12))
    repeat = 1 if args.quick else 3
    levels = [int(n) for n in args.associations.split(",")]
    peers = lineup()
    print(
        f"corpus {corpus.name}: {len(corpus.files)} objects, {corpus.bytes / 1e6:.0f} MB; "
        f"{os.cpu_count()} cores; {repeat} pass(es) per point",
        flush=True,
    )
    runs: list[Run] = []
    with scratch("pacs-edge-bench-") as tmp:
        print("warm-up pass (not measured) ...", flush=True)
        for label, make in peers:
            measure(label, make, Path(tmp) / "peer", 1, dealt(corpus, 4))
        for step, n in enumerate(levels):
            among = peers[step:] + peers[:step]
            for run in side_by_side(among, Path(tmp) / "peer", repeat, dealt(corpus, n)):
                runs.append(run)
                print(
                    f"  {run.peer:<42} {n:>2} assoc  {run.mb_per_s:>7} MB/s  "
                    f"{run.objects_per_s:>7} obj/s  {run.cpu_s_per_gb:>6} CPU-s/GB  "
                    f"stored {run.stored}/{run.expected}",
                    flush=True,
                )
    text = table(runs)
    print(text)
    results.save_runs("scaling", corpus, repeat, runs, text + "\n")
    lost = [r for r in runs if r.peer.startswith("pacs-edge") and not r.complete]
    if lost:
        print(f"pacs-edge did not store every object in {len(lost)} run(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
