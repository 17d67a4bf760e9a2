"""Where a benchmark run is kept: bench/results/<name>-<time>.json (every figure)
and bench/results/latest-<name>.md (the tables the README quotes). Git ignores both."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).parent / "results"


def save(name: str, figures: dict[str, Any], markdown: str) -> Path:
    FOLDER.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = FOLDER / f"{name}-{stamp}.json"
    path.write_text(json.dumps(figures, indent=1))
    (FOLDER / f"latest-{name}.md").write_text(markdown)
    return path
