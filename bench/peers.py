"""The SCPs measured side by side, each started fresh on 127.0.0.1 with its own
empty storage, and how to count what each one stored (a run that lost objects is
not a fast run)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench import balancer
from bench.scratch import discard
from engine.ops.client import OpsClient

AE_TITLE = "PACS_EDGE"


def spread(command: Callable[[int], list[str]], files: list[Path], associations: int) -> list[str]:
    """Send `files`, dealt round-robin, with `associations` client processes at once
    (TCP_NODELAY=1); `command(i)` is process i's command line before the files.
    Returns the end of the output of each process that failed."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    procs = [
        subprocess.Popen(
            [*command(i), *map(str, files[i::associations])],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for i in range(associations)
        if files[i::associations]
    ]
    failed = []
    for proc in procs:
        output = proc.communicate(timeout=1800)[0]
        if proc.returncode != 0:
            failed.append(output.decode(errors="replace")[-1500:])
    return failed


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default floor


_PORT_FLOOR = 10000
_handed_out: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 for a server this process is about to start.

    Asking the kernel for port 0 returns one from the ephemeral range, and the
    server binds it some time later: in between, any outgoing connection (a test
    opens thousands) may take it, and the server fails with "address already in
    use". Ports below the ephemeral range are never picked for outgoing
    connections, so we hand those out, each once per process, starting at a place
    that depends on the pid so that two runs side by side rarely meet.
    """
    ceiling = max(_ephemeral_floor(), _PORT_FLOOR + 1000)
    span = ceiling - _PORT_FLOOR
    start = os.getpid() * 97 % span
    for step in range(span):
        port = _PORT_FLOOR + (start + step) % span
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or in TIME_WAIT
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 between {_PORT_FLOOR} and {ceiling}")


_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PR_SET_PDEATHSIG = 1


class Meter:
    """CPU time of a server with everything it forks, and its peak RSS.

    Each server runs in its own cpuacct cgroup (v1, root only) so that the children
    of `storescp --fork` count in full. Without it, CPU falls back to /proc, which
    sees only children already reaped: the report says which. Peak RSS is the main
    process's VmHWM (a memory cgroup would count the page cache of written files).
    """

    def __init__(self, name: str) -> None:
        self.groups: dict[str, Path] = {}
        group = _CGROUP_ROOT / "cpuacct" / f"pacs-edge-bench-{name}-{os.getpid()}"
        try:
            group.mkdir(exist_ok=True)
            self.groups["cpuacct"] = group
        except OSError:
            pass  # no cgroups here: /proc accounting, flagged as inexact
        self.exact = bool(self.groups)
        self.pid = 0

    def enter(self) -> None:
        """Runs in the child before exec: join the cgroups, and end with the benchmark
        (PR_SET_PDEATHSIG: a killed benchmark must not leave servers running)."""
        for group in self.groups.values():
            (group / "cgroup.procs").write_text(str(os.getpid()))
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) seconds from cpuacct.stat, or zeros without cgroups."""
        if not self.exact:
            return 0.0, 0.0
        stat = dict(
            line.split()
            for line in (self.groups["cpuacct"] / "cpuacct.stat").read_text().splitlines()
        )
        tick = os.sysconf("SC_CLK_TCK")
        return int(stat["user"]) / tick, int(stat["system"]) / tick

    def cpu_seconds(self) -> float:
        if self.exact:
            return int((self.groups["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
        return ticks / os.sysconf("SC_CLK_TCK")

    def peak_bytes(self) -> int:
        """Peak RSS of the server and its live children (pacs-edge's workers), summed."""
        return tree_kb(self.pid, "VmHWM") * 1024

    def close(self) -> None:
        for group in self.groups.values():
            # Stray children (storescp --fork's, still finishing) go back to the root
            # group; one may fork while we move them, hence a few rounds.
            for _ in range(50):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                        (group.parent / "cgroup.procs").write_text(pid)
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def tree_kb(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in kB (VmHWM, VmRSS, RssAnon) summed over `pid` and
    its live descendants."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue  # a child that just ended (ENOENT or ESRCH mid-read)
        total += sum(int(x.split()[1]) for x in lines if x.startswith(f"{field}:"))
    return total


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


class Peer(ABC):
    name: str
    called_ae = AE_TITLE
    start_timeout = 30.0  # seconds until the port must listen

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.meter: Meter | None = None

    @abstractmethod
    def command(self) -> list[str]: ...

    def env(self) -> dict[str, str]:
        return {**os.environ, "TCP_NODELAY": "1"}

    def start(self) -> None:
        discard(self.workdir)
        self.workdir.mkdir(parents=True)
        self.prepare()
        self.meter = Meter(type(self).__name__.lower())
        log = (self.workdir / "server.log").open("wb")
        with log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.workdir,
                preexec_fn=self.meter.enter,
            )
        self.meter.pid = self.proc.pid
        try:
            wait_for_port(self.port, self.proc, self.start_timeout)
        except RuntimeError as exc:
            tail = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} did not start: {exc}\n{tail}") from exc

    def prepare(self) -> None:
        """Create what the server needs before it starts (peers add config files)."""
        (self.workdir / "out").mkdir(exist_ok=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @abstractmethod
    def stored(self) -> int:
        """How many objects the server holds."""

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None
        if self.meter is not None:
            self.meter.close()
        discard(self.workdir)


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


class PacsEdge(Peer):
    def __init__(
        self, workdir: Path, durability: str, config: Path | None = None, workers: int = 1
    ) -> None:
        super().__init__(workdir)
        self.name = f"pacs-edge ({durability})"
        if workers > 1:
            self.name = f"pacs-edge ({durability}, {workers} workers)"
        self.durability = durability
        self.http_port = free_port()
        self.config = config
        self.workers = workers

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            *(["--config", str(self.config)] if self.config else []),
            "--data-dir",
            str(self.workdir / "d"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--durability",
            self.durability,
            "--workers",
            str(self.workers),
        ]

    def start(self) -> None:
        super().start()
        # The port opens with the first worker; measure once every process is up
        # and its start-up CPU (imports, index check) is spent.
        deadline = time.monotonic() + 2 * self.start_timeout
        while time.monotonic() < deadline:
            try:
                workers = self.status()["workers"]
            except OSError:
                workers = {"running": 0, "expected": 1}
            if workers["running"] >= workers["expected"]:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(
                f"{self.name}: not every worker started within {2 * self.start_timeout:g} s"
            )
        time.sleep(1.0)

    def api(self, path: str, method: str = "GET") -> dict[str, Any]:
        """One ops HTTP call, its JSON answer."""
        client = OpsClient(f"http://127.0.0.1:{self.http_port}")
        try:
            return dict(client.json(path, method))
        finally:
            client.close()

    def status(self) -> dict[str, Any]:
        return self.api("/api/v1/status")

    def stored(self) -> int:
        return int(self.status()["instances"])


class DcmtkStorescp(Peer):
    name = "DCMTK storescp --fork"

    def command(self) -> list[str]:
        out = self.workdir / "out"
        out.mkdir(exist_ok=True)
        return [
            "storescp",
            "--fork",
            "-pm",
            "+xa",
            "-pdu",
            "131072",
            "-aet",
            AE_TITLE,
            "-od",
            str(out),
            str(self.port),
        ]

    def stored(self) -> int:
        return _count_files(self.workdir / "out")


class DcmtkDiscarding(DcmtkStorescp):
    """storescp --ignore: receives every object and answers Success, stores nothing.
    Not a peer to compare with: the latency the client and the DICOM exchange cost
    alone, a floor no SCP can beat with the same client (`bench.ingest`)."""

    name = "DCMTK storescp --ignore"

    def command(self) -> list[str]:
        storescp, *rest = super().command()
        return [storescp, "--ignore", *rest]


class PynetdicomStorescp(Peer):
    name = "pynetdicom storescp"

    def command(self) -> list[str]:
        out = self.workdir / "out"
        out.mkdir(exist_ok=True)
        return [
            sys.executable,
            "-m",
            "pynetdicom",
            "storescp",
            str(self.port),
            "-aet",
            AE_TITLE,
            "-od",
            str(out),
        ]

    def stored(self) -> int:
        return _count_files(self.workdir / "out")


class Orthanc(Peer):
    name = "Orthanc (fsync)"
    called_ae = "ORTHANC"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.http_port = free_port()

    def prepare(self) -> None:
        config = {
            "Name": "bench",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": "ORTHANC",
            "DicomPort": self.port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "StorageCompression": False,
            "SyncStorageArea": True,
            "Plugins": [],
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": True,
        }
        (self.workdir / "orthanc.json").write_text(json.dumps(config))

    def command(self) -> list[str]:
        return ["Orthanc", str(self.workdir / "orthanc.json")]

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def stored(self) -> int:
        url = f"http://127.0.0.1:{self.http_port}/statistics"
        with urllib.request.urlopen(url, timeout=10) as rsp:
            return int(json.load(rsp)["CountInstances"])


class BalancedEdge(PacsEdge):
    """pacs-edge behind HAProxy as deploy/haproxy.cfg sets it up (PROXY v2 from
    127.0.0.9, health checks on /readyz). HAProxy runs in the same CPU meter: what
    the balancer costs counts against the edge."""

    def __init__(self, workdir: Path, durability: str, workers: int = 1) -> None:
        super().__init__(workdir, durability, workers=workers)
        self.name += " via HAProxy"
        self.balancer_port = self.port
        self.port = free_port()  # the edge's own, until start() is done
        self.haproxy: subprocess.Popen[bytes] | None = None

    def prepare(self) -> None:
        super().prepare()
        self.config = self.workdir / "edge.toml"
        self.config.write_text(f'[dicom]\ntrusted_proxies = ["{balancer.SOURCE}/32"]\n')

    def start(self) -> None:
        super().start()  # the edge, on its own port
        cfg = self.workdir / "haproxy.cfg"
        nodes = [balancer.Node("edge1", self.port, self.http_port)]
        admin = self.workdir / "admin.sock"
        cfg.write_text(balancer.render(self.balancer_port, free_port(), nodes, admin))
        assert self.meter is not None
        with (self.workdir / "haproxy.log").open("wb") as log:
            self.haproxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.meter.enter,
            )
        self.port = self.balancer_port  # clients go through HAProxy from now on
        wait_for_port(self.port, self.haproxy)
        deadline = time.monotonic() + 30
        while balancer.states(admin).get(("pacs_edge", "edge1")) != "UP":
            if time.monotonic() > deadline:
                raise RuntimeError("HAProxy did not see the edge UP within 30 s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.haproxy is not None:
            self.haproxy.terminate()
            self.haproxy.wait(timeout=30)
            self.haproxy = None
        super().stop()
