"""Where a benchmark run is kept: bench/results/<name>-<time>.json (every figure)
and bench/results/latest-<name>.md (the tables the README quotes). Git ignores both."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.corpus import Corpus

FOLDER = Path(__file__).parent / "results"


def save_runs(
    name: str, corpus: Corpus, repeat: int, runs: list[Any], markdown: str, **extra: list[Any]
) -> Path:
    """Every run of a benchmark (dataclasses) with what it ran on, and `extra` lists
    of dataclasses (the raw limits) under their keyword."""
    figures = {
        "corpus": corpus.name,
        "objects": len(corpus.files),
        "bytes": corpus.bytes,
        "cores": os.cpu_count(),
        "median_of": repeat,
        "runs": [asdict(r) for r in runs],
        **{key: [asdict(x) for x in rows] for key, rows in extra.items()},
    }
    return save(name, figures, markdown)


def save(name: str, figures: dict[str, Any], markdown: str) -> Path:
    FOLDER.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = FOLDER / f"{name}-{stamp}.json"
    path.write_text(json.dumps(figures, indent=1))
    (FOLDER / f"latest-{name}.md").write_text(markdown)
    return path
