"""Prometheus metrics on GET /metrics: what the ops team graphs and is paged on.

Two kinds. Events are counted where they happen (an association accepted, an
object stored, an object forwarded) in prometheus-client counters and histograms.
State is read when Prometheus scrapes (queue depths from LMDB, disk, the host), by
`StateCollector`, so a gauge is never stale and the hot path pays nothing for it.

With several worker processes (engine.workers) counters and histograms live in
prometheus-client's multiprocess files under <data_dir>/run/metrics, and the
background process, which serves /metrics, adds them up.

Labels are bounded: no UIDs and no patient data, and at most `_MAX_LABEL_VALUES`
calling AE titles or modalities (further ones count as "other"), so a misconfigured
modality cannot blow up Prometheus' memory.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: doubles output, unused
_MAX_LABEL_VALUES = 200
_OTHER = "other"
# From a fast local write (ms) to a slow disk or a 450 MB tomosynthesis view (s).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _BoundedLabel:
    """Maps label values to themselves until `limit` distinct ones, then to "other"."""

    def __init__(self, limit: int = _MAX_LABEL_VALUES) -> None:
        self._seen: set[str] = set()
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = value or "unknown"
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self._limit:
                return _OTHER
            self._seen.add(value)
        return value


@dataclass(frozen=True)
class DestinationState:
    depth: int
    oldest_age_seconds: float
    in_flight: int
    waiting_commitment: int
    committed: int
    dead: int
    circuit_open: bool


@dataclass(frozen=True)
class State:
    """What the engine is, at scrape time (see engine.server)."""

    site: str
    ae_title: str
    ready: bool
    associations_active: int
    instances_stored: int
    bytes_stored: int
    data_paths: dict[str, Path]
    destinations: dict[str, DestinationState]
    tiers: dict[str, tuple[int, int]]  # tier: (instances, bytes; see Index.tier_totals)
    refusing: bool  # new associations refused: data disk over storage.disk_high_watermark
    catalog_damaged: bool = False  # the index's catalog awaits a rebuild (at restart)
    index_bytes: int = 0  # up to LMDB's last page (Index.space)
    index_map_bytes: int = 0  # storage.index_map_size: no write passes it
    # Seconds since each worklist source's mirror was last refreshed (None: never).
    worklist_ages: dict[str, float | None] = field(default_factory=dict)


class Metrics:
    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        # Where counters are kept; in a worker process they also go to the files.
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # What /metrics shows: this process's counters, or every process's.
        self._events = r
        if multiprocess_dir is not None:
            self._events = CollectorRegistry()
            MultiProcessCollector(self._events, str(multiprocess_dir))  # type: ignore[no-untyped-call]
        self._exposed = self._events
        self._ae = _BoundedLabel()
        self._address = _BoundedLabel()
        self._modality = _BoundedLabel()
        # Per object, labels() validates and locks: its children are kept per sender.
        self._stored_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._status_children: dict[int, Any] = {}
        self.associations = Counter(
            "pacs_edge_associations",
            "Associations by calling AE and result (accepted, rejected, aborted).",
            ["calling_ae", "result"],
            registry=r,
        )
        self.sources = Counter(
            "pacs_edge_association_sources",
            "Associations by the client's address (the modality's, not a load balancer's) "
            "and result.",
            ["address", "result"],
            registry=r,
        )
        self.refused_connections = Counter(
            "pacs_edge_refused_connections",
            "TCP connections closed at accept: too many had not associated yet "
            "(dicom.max_pending_connections).",
            registry=r,
        )
        self.instances_received = Counter(
            "pacs_edge_instances_received",
            "Instances acknowledged with Success, by calling AE and modality.",
            ["calling_ae", "modality"],
            registry=r,
        )
        self.bytes_received = Counter(
            "pacs_edge_bytes_received",
            "Dataset bytes acknowledged with Success, by calling AE.",
            ["calling_ae"],
            registry=r,
        )
        self.store_duration = Histogram(
            "pacs_edge_store_duration_seconds",
            "From an object's last PDV to its C-STORE-RSP (durable and indexed).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.duplicates = Counter(
            "pacs_edge_duplicates",
            "Known SOP Instance UIDs received again, by outcome (identical, replaced, kept, "
            "rejected).",
            ["outcome"],
            registry=r,
        )
        self.statuses = Counter(
            "pacs_edge_dimse_responses",
            "C-STORE/C-ECHO response statuses sent, by status (hex).",
            ["status"],
            registry=r,
        )
        self.forwarded = Counter(
            "pacs_edge_forward_instances",
            "Forward attempts by destination and result (sent, failed, dead).",
            ["destination", "result"],
            registry=r,
        )
        self.forwarded_bytes = Counter(
            "pacs_edge_forward_bytes",
            "Dataset bytes of forward attempts by destination and result (sent, failed, dead).",
            ["destination", "result"],
            registry=r,
        )
        self.transcodes = Counter(
            "pacs_edge_transcodes",
            "Forwarded copies transcoded by codec and outcome: verified (sent), "
            "not_representable (sent as stored), mismatch (did not round-trip; sent as stored).",
            ["codec", "outcome"],
            registry=r,
        )
        self.lifecycle_objects = Counter(
            "pacs_edge_lifecycle_objects",
            "Lifecycle actions on stored objects: migrated (hot to warm, verified), purged "
            "(local copy deleted, destinations committed it), mismatch (warm copy did not "
            "restore; kept hot), failed.",
            ["action"],
            registry=r,
        )
        self.lifecycle_freed = Counter(
            "pacs_edge_lifecycle_freed_bytes",
            "Data disk bytes freed by lifecycle actions (migrated: saved by packing).",
            ["action"],
            registry=r,
        )
        self.forward_duration = Histogram(
            "pacs_edge_forward_duration_seconds",
            "Sending one instance to a destination, until its answer.",
            ["destination"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        if multiprocess_dir is None:  # process_cpu_seconds_total, process_resident_memory_bytes
            ProcessCollector(registry=r)
        else:  # the same names, for the supervisor and every process it started
            self._exposed.register(ProcessTreeCollector(os.getppid()))

    def watch(self, state: Callable[[], State]) -> None:
        """Read the engine's state at every scrape."""
        self._exposed.register(StateCollector(state))

    def totals(self, by_label: dict[str, str]) -> dict[str, dict[str, float]]:
        """Counters' values summed by one label each ({name: label}), over every
        process, in one collection (with workers, one read of every process's file)."""
        found: dict[str, dict[str, float]] = {name: {} for name in by_label}
        for family in self._events.collect():
            label = by_label.get(family.name)
            if label is None:
                continue
            sums = found[family.name]
            for sample in family.samples:
                if sample.name == f"{family.name}_total":
                    key = sample.labels.get(label, "")
                    sums[key] = sums.get(key, 0.0) + sample.value
        return found

    # ---- events --------------------------------------------------------------------

    def association(self, calling_ae: str, result: str, address: str = "") -> None:
        self.associations.labels(self._ae(calling_ae), result).inc()
        if address:
            self.sources.labels(self._address(address), result).inc()

    def stored(self, calling_ae: str, modality: str, size: int, seconds: float) -> None:
        children = self._stored_children.get((calling_ae, modality))
        if children is None:
            ae = self._ae(calling_ae)
            children = (
                self.instances_received.labels(ae, self._modality(modality)),
                self.bytes_received.labels(ae),
            )
            if len(self._stored_children) < _MAX_LABEL_VALUES:
                self._stored_children[(calling_ae, modality)] = children
        children[0].inc()
        children[1].inc(size)
        self.store_duration.observe(seconds)

    def status(self, status: int) -> None:
        """A DIMSE status answered (its hex label: 0x0000, 0xa700, ...)."""
        child = self._status_children.get(status)
        if child is None:
            child = self._status_children[status] = self.statuses.labels(f"{status:#06x}")
        child.inc()

    def forward(self, destination: str, result: str, size: int, seconds: float) -> None:
        self.forwarded.labels(destination, result).inc()
        self.forwarded_bytes.labels(destination, result).inc(size)
        if seconds > 0:
            self.forward_duration.labels(destination).observe(seconds)

    def transcoded(self, codec: str, outcome: str) -> None:
        self.transcodes.labels(codec, outcome).inc()

    def lifecycle(self, action: str, freed: int) -> None:
        self.lifecycle_objects.labels(action).inc()
        if freed > 0:
            self.lifecycle_freed.labels(action).inc(freed)

    def render(self) -> bytes:
        return generate_latest(self._exposed)


class StateCollector(Collector):
    def __init__(self, state: Callable[[], State]) -> None:
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with destinations and paths: collected, not declared

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        info = GaugeMetricFamily(
            "pacs_edge_info",
            "The node's configured site code and AE title ('site' is the scrape config's).",
            labels=["site_code", "ae_title"],
        )
        info.add_metric([state.site, state.ae_title], 1.0)
        yield info
        yield _gauge("pacs_edge_ready", "1 when /readyz answers 200, else 0.", float(state.ready))
        yield _gauge(
            "pacs_edge_associations_active", "Established associations.", state.associations_active
        )
        yield _gauge(
            "pacs_edge_instances_stored", "Instances in the index.", state.instances_stored
        )
        yield _gauge("pacs_edge_stored_bytes", "Dataset bytes in the index.", state.bytes_stored)
        tier_bytes = GaugeMetricFamily(
            "pacs_edge_tier_bytes",
            "Bytes of a storage tier's files on this node (hot, warm); for central, the "
            "dataset bytes only the destinations now hold.",
            labels=["tier"],
        )
        tier_objects = GaugeMetricFamily(
            "pacs_edge_tier_objects", "Instances in a storage tier.", labels=["tier"]
        )
        for tier, (objects, size) in state.tiers.items():
            tier_objects.add_metric([tier], objects)
            tier_bytes.add_metric([tier], size)
        yield tier_bytes
        yield tier_objects
        yield _gauge(
            "pacs_edge_disk_refusing",
            "1 while new associations are refused because the data disk is over "
            "storage.disk_high_watermark (objects wait for their destinations), else 0.",
            float(state.refusing),
        )
        yield _gauge(
            "pacs_edge_index_catalog_damaged",
            "1 once a damaged catalog record (series, study or patient) was found: the "
            "objects it counts are refused (0xA700) until a restart rebuilds the catalog.",
            float(state.catalog_damaged),
        )
        yield _gauge(
            "pacs_edge_index_bytes",
            "Bytes of the index's LMDB file up to its last page (a high-water mark: freed "
            "pages below it are reused first).",
            state.index_bytes,
        )
        yield _gauge(
            "pacs_edge_index_map_bytes",
            "storage.index_map_size: once the index would pass it, every store is refused "
            "(0xA700) until it is raised and the engine restarted.",
            state.index_map_bytes,
        )
        if state.worklist_ages:
            ages = GaugeMetricFamily(
                "pacs_edge_worklist_age_seconds",
                "Seconds since the worklist source's mirror was last refreshed (a poll or "
                "a forwarded query); +Inf if never. Modalities are answered from the "
                "mirror while the source cannot be reached.",
                labels=["source"],
            )
            for source, age in state.worklist_ages.items():
                ages.add_metric([source], float("inf") if age is None else age)
            yield ages
        yield from _destinations(state.destinations)
        yield from _disks(state.data_paths)
        yield from _host()


class ProcessTreeCollector(Collector):
    """CPU and RSS of the whole process group (supervisor, workers, background),
    under prometheus-client's process metric names so dashboards need no change.
    A worker that ends takes its CPU seconds with it: the counter then drops, and
    Prometheus' rate() treats that as a counter reset."""

    def __init__(self, root: int) -> None:
        self._root = root

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        cpu = rss = 0.0
        try:
            root = psutil.Process(self._root)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for process in tree:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    cpu += times.user + times.system
                    rss += process.memory_info().rss
            except psutil.Error:
                continue  # ended meanwhile
        yield CounterMetricFamily(
            "process_cpu_seconds", "CPU seconds of all pacs-edge processes.", value=cpu
        )
        yield _gauge("process_resident_memory_bytes", "RSS of all pacs-edge processes.", rss)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _destinations(destinations: dict[str, DestinationState]) -> Iterator[Metric]:
    gauges = {
        "depth": ("pacs_edge_forward_queue_depth", "Jobs waiting to be sent."),
        "oldest_age_seconds": (
            "pacs_edge_forward_oldest_age_seconds",
            "Age of the oldest job waiting to be sent (0: queue empty).",
        ),
        "in_flight": ("pacs_edge_forward_in_flight", "Jobs being sent now."),
        "waiting_commitment": (
            "pacs_edge_forward_awaiting_commitment",
            "Instances sent, waiting for their storage commitment report.",
        ),
        "dead": ("pacs_edge_forward_dead_letters", "Jobs in dead letters (need an admin)."),
        "circuit_open": (
            "pacs_edge_forward_circuit_open",
            "1 while a destination is paused after failures, else 0.",
        ),
    }
    for attribute, (name, doc) in gauges.items():
        family = GaugeMetricFamily(name, doc, labels=["destination"])
        for dest, values in destinations.items():
            family.add_metric([dest], float(getattr(values, attribute)))
        yield family
    committed = CounterMetricFamily(
        "pacs_edge_forward_committed",
        "Instances a destination committed (storage commitment).",
        labels=["destination"],
    )
    for dest, values in destinations.items():
        committed.add_metric([dest], values.committed)
    yield committed


def _disks(paths: dict[str, Path]) -> Iterator[Metric]:
    free = GaugeMetricFamily(
        "pacs_edge_disk_free_bytes", "Free bytes on a data path's filesystem.", labels=["path"]
    )
    total = GaugeMetricFamily(
        "pacs_edge_disk_total_bytes", "Size of a data path's filesystem.", labels=["path"]
    )
    for name, path in paths.items():
        usage = shutil.disk_usage(path)
        free.add_metric([name], usage.free)
        total.add_metric([name], usage.total)
    yield free
    yield total


def _host() -> Iterator[Metric]:
    """The node itself: an edge server has no node_exporter more often than not."""
    for minutes, load in zip((1, 5, 15), psutil.getloadavg(), strict=True):
        yield _gauge(f"pacs_edge_node_load{minutes}", f"{minutes}-minute load average.", load)
    cpu = CounterMetricFamily(
        "pacs_edge_node_cpu_seconds", "CPU seconds of all cores, by mode.", labels=["mode"]
    )
    for mode, seconds in psutil.cpu_times()._asdict().items():
        if mode in _CPU_MODES:
            cpu.add_metric([mode], seconds)
    yield cpu
    memory = psutil.virtual_memory()
    yield _gauge("pacs_edge_node_memory_total_bytes", "Physical memory.", memory.total)
    yield _gauge(
        "pacs_edge_node_memory_available_bytes",
        "Memory available without swapping (MemAvailable).",
        memory.available,
    )
    yield _gauge("pacs_edge_up_since_seconds", "Unix time the engine started.", _STARTED)


_STARTED = time.time()
_CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
