"""Recall benchmark: a purged 500-instance CT study brought back from central
storage, pacs-edge beside DCMTK's movescu receiving the same C-MOVE from the same
Orthanc, in one run.

The edge ingests the study (fsync), forwards it to Orthanc with storage commitment,
and purges it (a keep_days = 0 rule); then `POST /api/v1/recalls/<uid>` times the
recall until every instance is hot again. movescu, as its own move destination, then
pulls the same study from the same Orthanc into a folder. Orthanc's sending side is
shared, so the ratio says whether the edge's receiving side (durable and indexed)
keeps up with DCMTK's (files written, no syncs). Issue 6's goal: within 60 s.

    python -m bench.recall [--instances 500]     # ~2 min
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydicom

from bench import results
from bench.corpus import ct_slice, write_series
from bench.peers import Orthanc, PacsEdge, free_port

_MOVESCU_AE = "MOVESCU"


class CentralOrthanc(Orthanc):
    """Orthanc as central storage: storage commitment and C-MOVE to these AEs."""

    def __init__(self, workdir: Path, modalities: dict[str, tuple[str, str, int]]) -> None:
        super().__init__(workdir)
        self.modalities = modalities

    def prepare(self) -> None:
        super().prepare()
        path = self.workdir / "orthanc.json"
        config = json.loads(path.read_text())
        config["DicomModalities"] = {k: list(v) for k, v in self.modalities.items()}
        path.write_text(json.dumps(config))


def _wait(what: str, done: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _tiers(edge: PacsEdge) -> dict[str, int]:
    found = edge.status()["storage"]["tiers"]
    return {tier: int(t["instances"]) for tier, t in found.items()}


def run(instances: int, workdir: Path, movescu_first: bool) -> dict[str, Any]:
    print(f"making a {instances}-instance CT study (512x512x16-bit) ...", flush=True)
    study_dir = workdir / "study"
    study_dir.mkdir()
    files = write_series(ct_slice(), instances, "CT", study_dir)
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    config = workdir / "edge.toml"
    edge = PacsEdge(workdir / "edge", "fsync", config=config)
    movescu_port = free_port()
    central = CentralOrthanc(
        workdir / "orthanc",
        {
            "edge": ("PACS_EDGE", "127.0.0.1", edge.port),
            "movescu": (_MOVESCU_AE, "127.0.0.1", movescu_port),
        },
    )
    central.start()
    config.write_text(
        "[[destination]]\n"
        'name = "central"\nkind = "dicom"\nhost = "127.0.0.1"\n'
        f'port = {central.port}\ncalled_ae = "ORTHANC"\ncommitment = true\nrecall = true\n'
        "associations = 4\n"
        '[lifecycle]\nwindow = ""\ninterval = 1.0\n'
        '[[lifecycle.rule]]\nname = "purge-when-committed"\nkeep_days = 0\n'
    )
    edge.start()
    try:
        print("ingest, forward with commitment, purge ...", flush=True)
        subprocess.run(
            ["storescu", "-aec", "PACS_EDGE", "127.0.0.1", str(edge.port), *map(str, files)],
            check=True,
            capture_output=True,
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
            timeout=600,
        )
        _wait("the study purged", lambda: _tiers(edge)["central"] == instances, 600)
        study = edge.api(f"/api/v1/instances/{_first_uid(files[0])}")["study_instance_uid"]
        # Stop purging what comes back: the recalled study is what a user needs now.
        config.write_text(config.read_text().split("[[lifecycle.rule]]")[0])
        edge.api("/api/v1/reload", method="POST")

        def recall() -> tuple[float, dict[str, Any], int]:
            print("recall into pacs-edge ...", flush=True)
            started = time.monotonic()
            edge.api(f"/api/v1/recalls/{study}", method="POST")
            _wait(
                "the recall",
                lambda: edge.api(f"/api/v1/recalls/{study}")["state"] != "running",
                600,
            )
            seconds = time.monotonic() - started
            return seconds, edge.api(f"/api/v1/recalls/{study}"), _tiers(edge)["hot"]

        if movescu_first:
            movescu_seconds, received, moved = _movescu(study, central, movescu_port, workdir)
            edge_seconds, progress, hot = recall()
        else:
            edge_seconds, progress, hot = recall()
            movescu_seconds, received, moved = _movescu(study, central, movescu_port, workdir)
    finally:
        edge.stop()
        central.stop()
    ok = progress["state"] == "done" and hot == instances and received == instances
    return {
        "instances": instances,
        "megabytes": round(megabytes, 1),
        "order": "movescu first" if movescu_first else "pacs-edge first",
        "edge_seconds": round(edge_seconds, 2),
        "edge_state": progress["state"],
        "edge_hot_after": hot,
        "movescu_seconds": round(movescu_seconds, 2),
        "movescu_received": received,
        "movescu_rc": moved,
        "correct": ok,
    }


def _movescu(study: str, central: Orthanc, port: int, workdir: Path) -> tuple[float, int, int]:
    """DCMTK movescu as its own move destination: seconds, files received, exit code."""
    print("the same C-MOVE into DCMTK movescu ...", flush=True)
    out = workdir / "movescu"
    out.mkdir()
    started = time.monotonic()
    moved = subprocess.run(
        [
            "movescu",
            "-S",
            "-aet",
            _MOVESCU_AE,
            "-aec",
            "ORTHANC",
            "-aem",
            _MOVESCU_AE,
            "--port",
            str(port),
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(central.port),
        ],
        capture_output=True,
        text=True,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        timeout=600,
        check=False,
    )
    seconds = time.monotonic() - started
    return seconds, sum(1 for _ in out.iterdir()), moved.returncode


def _first_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument(
        "--movescu-first", action="store_true", help="measure movescu before the edge"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-recall-") as tmp:
        found = run(args.instances, Path(tmp), args.movescu_first)
    ratio = found["movescu_seconds"] / max(found["edge_seconds"], 1e-9)
    lines = [
        f"{found['instances']} CT instances, {found['megabytes']} MB, from Orthanc by C-MOVE "
        f"({found['order']}):",
        f"  pacs-edge recall (durable, indexed): {found['edge_seconds']:.1f} s "
        f"({found['edge_state']}, {found['edge_hot_after']} hot)",
        f"  DCMTK movescu (files, no syncs):     {found['movescu_seconds']:.1f} s "
        f"({found['movescu_received']} received)",
        f"  pacs-edge speed / movescu's: {ratio:.2f}x; correct: {found['correct']}",
        f"  goal: within 60 s: {'met' if found['edge_seconds'] <= 60 else 'NOT met'}",
    ]
    print("\n".join(lines))
    results.save("recall", found, "```\n" + "\n".join(lines) + "\n```\n")
    return 0 if found["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
