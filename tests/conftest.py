"""Shared fixtures: real engine processes and real DICOM peers on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.orthanc import DICOMWEB_PLUGIN
from tests.support.process import EngineProcess

PEER_TOOLS = (
    *("storescu", "storescp", "echoscu", "dcmdump", "Orthanc", "prometheus", "promtool"),
    *("haproxy", "openssl", "chromium"),
)


def pytest_configure(config: pytest.Config) -> None:
    """With the venv activated, its bin/ comes first on PATH, and pynetdicom puts
    apps there named like DCMTK's (storescu, storescp, echoscu, movescu...) that
    take other arguments. The tests' peers are DCMTK's: the venv's bin/ goes."""
    venv_bin = str(Path(sys.prefix) / "bin")
    if sys.prefix != sys.base_prefix:
        kept = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin]
        os.environ["PATH"] = os.pathsep.join(kept)


@pytest.fixture(scope="session", autouse=True)
def _real_peers_installed() -> None:
    missing = [tool for tool in PEER_TOOLS if shutil.which(tool) is None]
    if not DICOMWEB_PLUGIN.exists():
        missing.append(str(DICOMWEB_PLUGIN))
    if missing:
        pytest.exit(
            f"real peers missing ({', '.join(missing)}): run `make test`, which "
            "installs DCMTK, Orthanc (+DICOMweb), Prometheus, HAProxy, openssl and chromium "
            "from Debian",
            returncode=3,
        )


@pytest.fixture
def engine_factory(tmp_path: Path) -> Iterator[Callable[..., EngineProcess]]:
    made: list[EngineProcess] = []

    def make(
        settings: dict[str, Any] | None = None,
        name: str = "node",
        start: bool = True,
        data_dir: Path | None = None,
    ) -> EngineProcess:
        workdir = tmp_path / f"{name}{len(made)}"
        workdir.mkdir()
        engine = EngineProcess(workdir, settings, data_dir)
        made.append(engine)
        return engine.start() if start else engine

    yield make
    for engine in made:
        engine.close()
        # Shown by pytest only when the test failed.
        print(f"----- {engine.workdir.name} log -----\n{engine.log()[-20000:]}")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Small real filesystems (tmpfs, `size` like "12m") to fill up; needs root."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a {size} tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def engine(engine_factory: Callable[..., EngineProcess]) -> EngineProcess:
    return engine_factory()


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
