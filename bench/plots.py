"""The ingest benchmark's figures as PNGs a person reads at a glance: throughput
against concurrency (with the raw limits as dashed lines) and store-latency CDFs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from bench.ingest import Run
    from bench.limits import Limit


def _throughput(runs: list[Run], found: list[Limit], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    runs = [r for r in runs if r.mix == "CT-heavy"]
    found = [x for x in found if x.mix == "CT-heavy"]
    for peer in dict.fromkeys(r.peer for r in runs if r.scenario == "throughput"):
        points = sorted(
            (r.associations, r.mb_per_s)
            for r in runs
            if r.peer == peer and r.scenario == "throughput"
        )
        ax.plot(*zip(*points, strict=True), marker="o", label=peer)
        lost = [
            (r.associations, r.mb_per_s)
            for r in runs
            if r.peer == peer and r.scenario == "throughput" and not r.complete
        ]
        if lost:  # a run that did not store everything is not a fast run: mark it
            ax.plot(*zip(*lost, strict=True), "x", color="red", markersize=12, mew=2)
    for name, style in (("write+fdatasync", "--"), ("loopback TCP", ":")):
        points = sorted((x.associations, x.mb_per_s) for x in found if x.name == name)
        if points:
            ax.plot(*zip(*points, strict=True), style, color="grey", label=f"raw: {name}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("parallel associations")
    ax.set_ylabel("MB/s (log)")
    ax.set_title("Ingest throughput, modality mix, same client and run (x: objects lost)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cdf(runs: list[Run], scenario: str, title: str, path: Path) -> Path | None:
    chosen = [r for r in runs if r.scenario == scenario and r.latencies_ms]
    if not chosen:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for run in chosen:
        values = sorted(run.latencies_ms)
        fraction = [(i + 1) / len(values) for i in range(len(values))]
        ax.plot(values, fraction, label=f"{run.peer} (p99 {run.p99_ms} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("store latency, C-STORE-RQ to RSP, ms (log)")
    ax.set_ylabel("fraction of objects")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(runs: list[Run], found: list[Limit], stem: Path) -> list[Path]:
    """PNG files next to the run's JSON (`stem`-*.png); the paths written."""
    written = [_throughput(runs, found, Path(f"{stem}-throughput.png"))]
    n = max((r.associations for r in runs if r.scenario == "latency"), default=16)
    for scenario, title in (
        ("latency", f"Store latency, 0.5 MB CT, {n} associations at a fixed rate"),
        ("throughput", "Store latency, modality mix, 16 associations, saturated"),
    ):
        chosen = runs if scenario == "latency" else [r for r in runs if r.associations == 16]
        png = _cdf(chosen, scenario, title, Path(f"{stem}-latency-{scenario}.png"))
        if png:
            written.append(png)
    return written
