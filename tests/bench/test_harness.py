"""The benchmark harness measures what it claims: the load generator's objects reach
real SCPs (DCMTK storescp, the engine) whole and distinct, failures are counted as
failures, and the raw limits, plots and soak verdicts come from the figures."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from bench import corpus, ingest, limits, loadgen, plots, scratch, soak, worklist
from bench.ingest import Run
from bench.peers import DcmtkStorescp, free_port
from tests.support.process import EngineProcess, launch, wait_until

TINY = corpus.Mix(ct=3, mr=1, us=1)


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> corpus.Corpus:
    monkeypatch.setattr(corpus, "CACHE", tmp_path / "cache")
    return corpus.build(TINY)


def test_corpus_is_cached_and_records_where_the_uids_are(tiny: corpus.Corpus) -> None:
    assert [i.modality for i in tiny.items] == ["CT"] * 3 + ["MR", "US"]
    assert corpus.build(TINY).items == tiny.items  # from the manifest, not rebuilt
    for item in tiny.items:
        data = item.path.read_bytes()
        ds = pydicom.dcmread(item.path)
        uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        for at, uid in zip(item.uid_offsets, uids, strict=True):
            assert data[at : at + len(uid)].decode() == uid
        assert item.offset + item.length == len(data)
        assert item.sop_instance == ds.SOPInstanceUID


def test_relabelled_sends_reach_dcmtk_as_distinct_whole_objects(
    tiny: corpus.Corpus, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    scp = launch(
        ["storescp", "-aet", "ARCHIVE", "-od", str(out), str(port)], tmp_path / "scp.log", tmp_path
    )
    try:
        wait_until(lambda: _listening(port), 10, "storescp to listen")
        stream = loadgen.Stream("MOD01", tiny.items, repeat=False, fresh_uids=True, study_size=2)
        first = loadgen.run("127.0.0.1", port, "ARCHIVE", [stream])
        second = loadgen.run("127.0.0.1", port, "ARCHIVE", [stream])
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    assert len(first.ok) == len(second.ok) == len(tiny.items), first.errors + second.errors
    files = sorted(out.iterdir())
    assert len(files) == 2 * len(tiny.items)  # every send a new SOP Instance UID
    sent = {i.sop_instance[: -corpus.SUFFIX] for i in tiny.items}
    studies = set()
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.SOPInstanceUID[: -corpus.SUFFIX] in sent
        assert len(ds.PixelData) == ds.Rows * ds.Columns * ds.SamplesPerPixel * 2 // (
            16 // ds.BitsAllocated
        )
        studies.add(ds.StudyInstanceUID)
    assert len(studies) > 2  # new studies every `study_size` sends
    assert all(s.seconds > 0 for s in first.ok + second.ok)


def _listening(port: int) -> bool:
    result = subprocess.run(
        ["echoscu", "-aec", "ARCHIVE", "127.0.0.1", str(port)], capture_output=True, check=False
    )
    return result.returncode == 0


def test_what_the_load_generator_counts_is_what_the_engine_stored(
    tiny: corpus.Corpus, engine_factory: Callable[..., EngineProcess]
) -> None:
    engine = engine_factory()
    result = loadgen.run("127.0.0.1", engine.port, "PACS_EDGE", loadgen.dealt(tiny, 2))
    assert len(result.ok) == len(tiny.items)
    assert engine.status()["instances"] == len(tiny.items)
    assert result.bytes == tiny.bytes


def test_refused_associations_count_as_failures_not_throughput(
    tiny: corpus.Corpus, engine_factory: Callable[..., EngineProcess]
) -> None:
    engine = engine_factory({"dicom": {"allowed_calling_aes": ["CT1"]}})
    result = loadgen.run("127.0.0.1", engine.port, "PACS_EDGE", loadgen.dealt(tiny, 2))
    assert result.ok == []
    assert len(result.samples) == len(tiny.items)
    assert any("calling AE title not recognized" in e for e in result.errors), result.errors
    assert engine.status()["instances"] == 0


def test_regional_rates_follow_the_study_mix(tiny: corpus.Corpus) -> None:
    streams = loadgen.regional(tiny, studies_per_day=4000, peak=3, modalities=20)
    by_modality: dict[str, float] = {}
    for s in streams:
        assert s.fresh_uids
        assert s.repeat
        assert 0 <= s.phase < 1
        modality = s.items[0].modality
        by_modality[modality] = by_modality.get(modality, 0) + (s.rate or 0)
    assert set(by_modality) == {"CT", "MR", "US"}  # what the corpus has
    ct_share, ct_objects = loadgen.REGION["CT"]
    assert by_modality["CT"] == pytest.approx(4000 * ct_share * ct_objects * 3 / 86400)


def test_the_discarding_floor_is_a_real_exchange_that_stores_nothing(
    tiny: corpus.Corpus, tmp_path: Path
) -> None:
    paced = [loadgen.Stream("CT01", tiny.items, rate=50, repeat=True, fresh_uids=True)]
    # Raises if the SCP kept any object (then it would not be a floor).
    floor = ingest._discarding_floor(tmp_path / "peer", tiny, paced, 1.0)
    assert floor.name == ingest.DISCARDING
    assert 0 < floor.p50_ms <= floor.p99_ms  # answered: nan when every send failed


def test_a_storescu_pass_counts_the_clients_cpu_and_how_busy_the_box_was(
    tiny: corpus.Corpus, tmp_path: Path
) -> None:
    """storescu's processes are the bench's children: their CPU is read once they are
    reaped, so a point where client and server fill the box says so."""
    peer = DcmtkStorescp(tmp_path / "peer")
    peer.start()
    try:
        run = ingest.send(peer, tiny, 2, "storescu")
    finally:
        peer.stop()
    assert run.stored == run.expected == len(tiny.items)
    assert run.client_cpu_s_per_gb > 0  # 0 before: storescu's CPU went uncounted
    assert 0 < run.busy <= 1.1  # a share of every core over the pass's wall time


def test_raw_limits_and_floors_are_measured(tiny: corpus.Corpus, tmp_path: Path) -> None:
    assert limits.loopback(tiny, 2).mb_per_s > 0
    assert limits.write_fdatasync(tiny, 2, tmp_path / "w").mb_per_s > 0
    assert list((tmp_path / "w").iterdir()) == []  # cleaned up
    durable = limits.write_fdatasync(tiny, 2, tmp_path / "w", rename=True, mix="large")
    assert (durable.name, durable.mix) == (ingest.DURABLE_RAW, "large")
    assert durable.mb_per_s > 0
    assert list((tmp_path / "w").iterdir()) == []  # the 256 folders too
    floors = limits.latency_floors(tmp_path / "f", count=20, rate=200)
    assert [f.name for f in floors] == ["loopback round trip", "write+fdatasync"]
    assert all(0 < f.p50_ms <= f.p99_ms for f in floors)


def _run(peer: str, n: int, scenario: str, latencies: list[float]) -> Run:
    return Run(
        peer, n, 1.0, 100.0 * n, 10.0, 3.0, 50.0, 2.0, 1.0, 10, 10, scenario,
        latencies_ms=latencies,
    )  # fmt: skip


def test_the_scratch_folder_spreads_each_pass_over_block_groups(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The bench's passes must not create their files where the pass before deleted
    thousands (bench/scratch.py): ext4's top-directory flag, read back by lsattr."""
    monkeypatch.chdir(tmp_path)
    with scratch.scratch("t-", forget=False) as folder:
        assert folder.parent == tmp_path  # on the disk under test, not a tmpfs /tmp
        shown = subprocess.run(
            ["lsattr", "-d", str(folder)], capture_output=True, text=True, check=False
        )
        if shown.returncode != 0:
            pytest.skip(f"not an ext2/3/4 folder here: {shown.stderr.strip()}")
        letters = shown.stdout.split()[0]
        assert "T" in letters, letters
        assert scratch.flags(folder) & scratch.TOPDIR
        plain = folder / "plain"
        plain.mkdir()
        assert not scratch.flags(plain) & scratch.TOPDIR  # the flag is not inherited


def test_a_discarded_pass_keeps_its_inodes_until_the_bench_ends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Deleting a pass's files would leave recently deleted inodes for the next pass's
    file creations to skip (bench/scratch.py): its files are emptied, not removed."""
    monkeypatch.chdir(tmp_path)
    with scratch.scratch("t-", forget=False) as folder:
        peer = folder / "peer"
        (peer / "objects").mkdir(parents=True)
        (peer / "objects" / "a.dcm").write_bytes(b"x" * 100_000)
        inode = (peer / "objects" / "a.dcm").stat().st_ino
        scratch.discard(peer)
        assert not peer.exists()  # the next pass makes a fresh one
        (kept,) = folder.glob("peer.discarded-*/objects/a.dcm")
        assert (kept.stat().st_ino, kept.stat().st_size) == (inode, 0)
        scratch.discard(peer)  # nothing there: nothing to do
    assert not list(tmp_path.iterdir())  # the scratch folder deletes it all at the end


def test_goals_judge_each_mix_against_its_own_peers_and_ceiling() -> None:
    runs = []
    for mix, edge_mb_s in (("CT-heavy", 130.0), ("large", 90.0)):
        for peer, mb_s in (("pacs-edge (os)", edge_mb_s), ("pacs-edge (fsync)", edge_mb_s / 2)):
            runs.append(_run(peer, 4, "throughput", []))
            runs[-1].mb_per_s, runs[-1].mix = mb_s, mix
        runs.append(_run("DCMTK storescp --fork", 4, "throughput", []))
        runs[-1].mb_per_s, runs[-1].mix = 100.0, mix
    for peer, mb_s, cpu in (("pacs-edge (os)", 110.0, 0.7), ("DCMTK storescp --fork", 100.0, 1.0)):
        runs.append(_run(peer, 4, "small PDUs", []))  # storescu --max-send-pdu 16384
        runs[-1].mb_per_s, runs[-1].cpu_s_per_gb = mb_s, cpu
    # storescu at 16: both passes filled the box, so the line says what 1.2x needs
    for peer, mb_s, cpu, client, busy in (
        ("pacs-edge (os)", 110.0, 0.9, 1.2, 0.95),
        ("DCMTK storescp --fork", 100.0, 1.1, 1.1, 0.9),
    ):
        runs.append(_run(peer, 16, "calibration", []))
        runs[-1].mb_per_s, runs[-1].cpu_s_per_gb = mb_s, cpu
        runs[-1].client_cpu_s_per_gb, runs[-1].busy = client, busy
    for peer, p99 in (("pacs-edge (fsync)", 7.0), ("pacs-edge (os)", 4.0)):
        runs.append(_run(peer, 16, "latency", [1.0, 2.0]))
        runs[-1].p99_ms = p99
    found = [limits.Limit(ingest.DURABLE_RAW, 4, 50.0, "large")]
    floors = [limits.Floor("write+fdatasync", 2.0, 4.0), limits.Floor(ingest.DISCARDING, 1, 5.0)]
    lines = ingest.goals(runs, found, floors)
    assert (
        "16 assoc, 100 CT objects/s: pacs-edge (fsync) p99 7.0 ms = 1.75x the "
        "write+fdatasync floor (goal <= 1.5: NOT met)"
    ) in lines
    # the latency goal is fsync mode's: "os" mode is shown beside it, not judged
    assert (
        "16 assoc, 100 CT objects/s: pacs-edge (os) p99 4.0 ms = 1.00x the "
        "write+fdatasync floor (no goal: it makes nothing durable)"
    ) in lines
    assert (
        "16 assoc, 100 CT objects/s: an SCP that stores nothing (DCMTK storescp --ignore) "
        "p99 5.0 ms = 1.25x the write+fdatasync floor: the client and the DICOM exchange alone"
    ) in lines
    assert any(
        line.startswith("CT-heavy,  4 assoc, load generator: pacs-edge (os) 1.30x")
        and "met" in line
        for line in lines
    ), lines
    assert any(
        line.startswith("large,  4 assoc, load generator: pacs-edge (os) 0.90x")
        and "NOT met" in line
        for line in lines
    ), lines
    assert (
        "CT-heavy,  4 assoc, storescu, 16 KiB PDUs: pacs-edge (os) 1.10x DCMTK storescp MB/s "
        "(goal >= 1.2: NOT met), 0.70x its CPU-s/GB (goal <= 0.8: met)"
    ) in lines
    # (1.1 + 1.1) / 1.2 - 1.2 = 0.63; the 16 KiB line above has no client CPU: no bound
    assert (
        "CT-heavy, 16 assoc, storescu: pacs-edge (os) 1.10x DCMTK storescp MB/s "
        "(goal >= 1.2: NOT met), 0.82x its CPU-s/GB (goal <= 0.8: NOT met); the box was "
        "95% and 90% busy: 1.2x needs <= 0.63 server CPU-s/GB beside the client's 1.2"
    ) in lines
    # fsync mode against the large mix's own raw ceiling; the CT-heavy one has none here
    assert [line for line in lines if "raw" in line] == [
        f"large,  4 assoc: pacs-edge (fsync) 0.90x raw {ingest.DURABLE_RAW} (goal >= 0.9: met); "
        "0.50x its own os mode, which is at 1.80x the ceiling"
    ]
    # the 1.2x-DCMTK goal is "os" mode's: DCMTK syncs nothing, fsync mode is not judged by it
    assert (
        "CT-heavy,  4 assoc, load generator: pacs-edge (fsync) 0.65x DCMTK storescp MB/s "
        "(no goal: DCMTK makes nothing durable)"
    ) in lines


def test_plots_are_png_files(tmp_path: Path) -> None:
    runs = [
        _run(peer, n, "throughput", [1.0, 2.0, 3.0])
        for peer in ("pacs-edge (fsync)", "DCMTK storescp --fork")
        for n in (1, 4, 16)
    ]
    runs.append(_run("pacs-edge (fsync)", 16, "latency", [1.0, 1.5, 9.0]))
    found = [limits.Limit("write+fdatasync", n, 300.0) for n in (1, 4, 16)]
    written = plots.draw(runs, found, tmp_path / "ingest")
    assert [p.name for p in written] == [
        "ingest-throughput.png",
        "ingest-latency-latency.png",
        "ingest-latency-throughput.png",
    ]
    for png in written:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(png) > 10_000


def test_soak_verdicts() -> None:
    steady = [soak.Tick(5.0 * k, 3 + k % 2, 10 * k, 80.0 + k, 50.0 + k % 3) for k in range(30)]
    assert soak.verdict(steady, intake_per_s=10)["queue_bounded"]
    assert soak.verdict(steady, intake_per_s=10)["memory_flat"]
    growing = [soak.Tick(5.0 * k, 20 * k, 10 * k, 80.0 + 3 * k, 50.0 + 3 * k) for k in range(30)]
    result = soak.verdict(growing, intake_per_s=10)
    assert not result["queue_bounded"]
    assert not result["memory_flat"]


def test_codec_bench_measures_both_codecs_on_the_same_pixels(tiny: corpus.Corpus) -> None:
    from bench import codecs

    rows = []
    for item in tiny.items:
        row = codecs.Row(item.modality)
        codecs.measure(row, pydicom.dcmread(item.path))  # asserts both round-trip
        rows.append(row)
    for row in rows:
        assert row.objects == 1
        assert row.native / row.ours > 1.5  # real CT/MR/US pixels compress
        assert abs(row.ours / row.theirs - 1) < 0.05  # the same codec, the same size
        assert min(row.ours_encode_s, row.theirs_decode_s) > 0
    assert "| CT | 16 | 1 |" in codecs.table(rows)


def test_callgrind_counts_self_instructions_per_group(tmp_path: Path) -> None:
    from bench import profile

    dump = tmp_path / "callgrind.out.1"
    dump.write_text(
        "version: 1\npositions: line\nevents: Ir\n"
        "ob=(1) /usr/lib/libpython3.11.so.1.0\nfl=(1) ceval.c\nfn=(1) eval\n"
        "10 500\n+2 100\n"
        "cob=(2) /work/core_rs/_core.abi3.so\ncfn=(2) blake3\ncalls=3 0\n"
        "12 9000\n"  # the call's inclusive cost: billed where the callee counts it
        "ob=(2)\nfl=(2) hash.rs\nfn=(2)\n5 9000\n"
        "ob=(3) /usr/lib/x86_64-linux-gnu/libc.so.6\nfn=(3) memcpy\n* 40\n"
    )
    assert profile.instructions_by_group(dump) == {"python": 600, "core_rs": 9000, "libc": 40}


class _Stand:
    """Stands in for a server: what is tested is the order the harness runs passes in."""

    def __init__(self, name: str, started: list[str]) -> None:
        self.name, self.started = name, started

    def start(self) -> None:
        self.started.append(self.name)

    def stop(self) -> None:
        pass


def test_peers_of_a_point_alternate_pass_by_pass_and_keep_their_own_median(
    tmp_path: Path,
) -> None:
    started: list[str] = []
    speeds = {"A": iter([1.0, 5.0, 3.0]), "B": iter([9.0, 2.0, 4.0])}

    def one_pass(peer: object) -> Run:
        assert isinstance(peer, _Stand)
        run = _run("?", 4, "throughput", [])
        run.mb_per_s = next(speeds[peer.name])
        return run

    peers = [(name, lambda _dir, n=name: _Stand(n, started)) for name in ("A", "B")]
    runs = ingest.side_by_side(peers, tmp_path, 3, one_pass)  # type: ignore[arg-type]
    assert started == ["A", "B", "B", "A", "A", "B"]  # never one peer's passes in a row
    assert [(r.peer, r.mb_per_s) for r in runs] == [("A", 3.0), ("B", 4.0)]


def test_the_worklist_bench_asks_every_server_the_same_and_gets_the_same_answers(
    tmp_path: Path,
) -> None:
    """Real wlmscpfs, Orthanc's worklist plugin and the edge (proxying, then from its
    mirror with the RIS stopped), asked the same queries by pynetdicom and findscu -W."""
    figures = worklist.run(items=30, repeat=3, workdir=tmp_path)
    assert list(figures) == [
        "Orthanc worklist plugin",
        "DCMTK wlmscpfs (the RIS)",
        "pacs-edge, RIS up (proxied)",
        "pacs-edge, RIS down (mirror)",
    ]
    counts = {
        server: {kind: answers for kind, (_, _, answers) in measured.pynetdicom.items()}
        for server, measured in figures.items()
    }
    reference = counts["DCMTK wlmscpfs (the RIS)"]
    assert set(reference) == {"station, today", "modality, today", "PatientID", "AccessionNumber"}
    assert all(n >= 1 for n in reference.values()), reference
    for server, found in counts.items():
        assert found == reference, server
    for measured in figures.values():
        assert all(ms > 0 for ms in measured.findscu.values())
    table = worklist.render(30, 3, figures)
    assert table.count("| pacs-edge, RIS down (mirror) |") == 4
