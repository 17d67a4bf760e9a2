"""The warm tier restores every object byte for byte, and the index keeps each
instance in exactly one tier with counts that add up."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.data import get_testdata_files

import core_rs
from storage.index import Index, Instance, Outcome
from storage.layout import DataLayout
from storage.queue import Target
from storage.tiers import Tiers, pack, pixel_plan
from tests.storage.test_queue import instance
from tests.support.corpus import public_corpus

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def every_dicom_file() -> list[Path]:
    """pydicom-data and pydicom's test files, sendable or not: packing takes any file."""
    return sorted({Path(p) for p in get_testdata_files("**/*") if p.endswith(".dcm")})


def test_every_test_file_restores_byte_for_byte(tmp_path: Path) -> None:
    sendable = {f.path: f.transfer_syntax_uid for f in public_corpus()[0]}
    sizes: Counter[str] = Counter()
    planned = jpegls_frames = 0
    files = every_dicom_file()
    assert len(files) > 100
    for n, path in enumerate(files):
        original = path.read_bytes()
        plan, _why = pixel_plan(path, sendable.get(path, ""))
        planned += plan is not None
        for codec in ("zstd", "jpeg-ls"):
            warm, back = tmp_path / f"{n}.{codec}", tmp_path / f"{n}.back"
            packed = pack(path, warm, plan, codec, 3, durable=False)
            assert packed.original == len(original)
            assert packed.stored == warm.stat().st_size
            assert core_rs.warm_unpack(warm, back, durable=False) == len(original)
            assert back.read_bytes() == original, f"{path.name} ({codec}) did not restore"
            if plan is not None:
                sizes[codec] += packed.stored
                jpegls_frames += packed.jpegls_frames if codec == "jpeg-ls" else 0
            warm.unlink()
        sizes["native"] += len(original) if plan is not None else 0
    # Native images exist in the corpus; "jpeg-ls" keeps each frame's smaller coding
    # (JPEG-LS for most, shuffled zstd where that wins) and packs smaller than zstd.
    assert planned >= 40, planned
    assert jpegls_frames >= 25, jpegls_frames
    assert sizes["jpeg-ls"] < sizes["zstd"] < sizes["native"], sizes
    print(
        f"{planned} native images: zstd {sizes['native'] / sizes['zstd']:.2f}x, "
        f"jpeg-ls {sizes['native'] / sizes['jpeg-ls']:.2f}x"
    )


def test_a_damaged_warm_file_is_refused_never_restored(tmp_path: Path) -> None:
    source = next(f for f in public_corpus()[0] if f.path.name == "CT_small.dcm")
    plan, _ = pixel_plan(source.path, source.transfer_syntax_uid)
    assert plan is not None
    warm = tmp_path / "ct.warm"
    core_rs.warm_pack(source.path, warm, "jpeg-ls", 3, False, plan.offset, plan.frames, plan.layout)
    good = warm.read_bytes()
    for at in (10, len(good) // 3, len(good) // 2, len(good) - 5):
        damaged = bytearray(good)
        damaged[at] ^= 0x21
        warm.write_bytes(bytes(damaged))
        with pytest.raises(core_rs.CodecError):
            core_rs.warm_unpack(warm, tmp_path / "out", False)
    warm.write_bytes(good[: len(good) // 2])
    with pytest.raises(core_rs.CodecError, match="damaged warm file"):
        core_rs.warm_unpack(warm, tmp_path / "out", False)


def record(uid: str, received_at: float, size: int = 1000) -> Instance:
    """test_queue's instance, with a 200-byte file meta and a chosen arrival time."""
    return replace(instance(uid, "1.2.3", size), meta_length=200, received_at=received_at)


@pytest.fixture
def index(tmp_path: Path) -> Index:
    made = Index(tmp_path / "index.lmdb", 2**26, durable=False)
    made.upgrade()
    return made


def test_a_record_is_indexed_as_stored_whether_or_not_built_that_way(index: Index) -> None:
    now = time.time()
    built = replace(record("2.1", now), stored_length=1200, destinations=("central",))
    stale = replace(record("2.2", now), stored_length=1200, destinations=("elsewhere",))
    index.apply([(built, [Target("central", 1)]), (stale, [Target("central", 1)])], "replace")
    for uid in ("2.1", "2.2"):
        kept = index.get(uid)
        assert kept is not None
        assert (kept.tier, kept.stored_length, kept.destinations) == ("hot", 1200, ("central",))


def test_tiers_by_age_and_counts_add_up(index: Index) -> None:
    now = time.time()
    batch = [(record(f"1.{n}", now - n * 60), [Target("central", 1)]) for n in range(5)]
    outcomes, _, jobs = index.apply(batch, "replace")
    assert outcomes == [Outcome.STORED] * 5
    assert {job.hash for job in jobs} == {instance.hash for instance, _ in batch}
    assert [i.sop_instance_uid for i in index.by_age("hot", page=2)] == [
        "1.4",
        "1.3",
        "1.2",
        "1.1",
        "1.0",
    ]
    assert index.tier_totals()["hot"] == (5, 5 * 1200)
    oldest = next(iter(index.by_age("hot")))
    assert oldest.destinations == ("central",)
    warm = index.set_tier(oldest.sop_instance_uid, oldest.hash, "warm", 300)
    assert warm is not None
    assert warm.local_length == 300
    assert index.set_tier(oldest.sop_instance_uid, "0" * 64, "central", 0) is None  # other version
    assert index.tier_totals() == {"hot": (4, 4800), "warm": (1, 300), "central": (0, 0)}
    index.set_tier(oldest.sop_instance_uid, oldest.hash, "central", 0)
    assert index.tier_totals()["central"] == (1, 1000)
    assert [i.sop_instance_uid for i in index.by_age("warm")] == []
    assert index.totals().instances == 5  # a purged instance is still indexed


def test_the_tier_walk_passes_a_damaged_record_by(index: Index) -> None:
    """The lifecycle walks a tier oldest first; a record that does not decode is
    left where it is and the walk goes on, even past a page of nothing else."""
    now = time.time()
    batch = [(record(f"1.{n}", now - n * 60), [Target("central", 1)]) for n in range(5)]
    index.apply(batch, "replace")
    with index._env.begin(write=True) as txn:  # the three oldest damaged on purpose
        for uid in ("1.4", "1.3", "1.2"):
            txn.put(uid.encode(), b"{not json", db=index._instances)
    assert [i.sop_instance_uid for i in index.by_age("hot", page=2)] == ["1.1", "1.0"]


def test_sending_a_purged_object_again_makes_it_hot(index: Index) -> None:
    first = record("1.9", time.time())
    index.apply([(first, [Target("central", 1)])], "replace")
    index.set_tier(first.sop_instance_uid, first.hash, "warm", 400)
    outcomes, unreferenced, jobs = index.apply([(first, [Target("central", 1)])], "replace")
    assert outcomes == [Outcome.IDENTICAL]
    assert not jobs
    assert unreferenced == [(first.hash, "warm")]  # the warm copy goes; the new hot file stays
    again = index.get(first.sop_instance_uid)
    assert again is not None
    assert again.tier == "hot"
    assert again.local_length == 1200
    assert index.tier_totals()["warm"] == (0, 0)
    # Replacing a warm instance with other content frees its warm file.
    index.set_tier(first.sop_instance_uid, first.hash, "warm", 400)
    other = replace(first, hash="f" * 64)
    outcomes, unreferenced, _ = index.apply([(other, [])], "replace")
    assert outcomes == [Outcome.REPLACED]
    assert unreferenced == [(first.hash, "warm")]
    assert index.tier_totals() == {"hot": (1, 1200), "warm": (0, 0), "central": (0, 0)}


def test_an_index_from_before_tiers_is_upgraded_once(tmp_path: Path) -> None:
    index = Index(tmp_path / "old.lmdb", 2**26, durable=False)
    index.apply([(record(f"2.{n}", time.time()), []) for n in range(3)], "replace")
    # What an index written before tiers looks like: no schema, no by-age keys, and
    # only its two counts of everything, each under a key of its own.
    with index._env.begin(write=True) as txn:
        txn.drop(index._by_age, delete=False)
        txn.delete(b"counts", db=index._totals)
        txn.put(b"instances", b"3", db=index._totals)
        txn.put(b"bytes", b"3000", db=index._totals)
    assert index.upgrade() == 3
    assert index.upgrade() == 0
    assert index.tier_totals()["hot"] == (3, 3600)
    assert index.totals().instances == 3
    assert len(list(index.by_age("hot"))) == 3
    with index._env.begin() as txn:
        assert txn.get(b"instances", db=index._totals) is None  # in the one record now


def test_schema_3_counts_are_gathered_into_one_record_not_recounted(index: Index) -> None:
    """An index of schema 3 kept each count under a key of its own. Start-up moves
    them into the one record as they are (a recount reads every instance record)."""
    now = time.time()
    index.apply([(record(f"5.{n}", now), []) for n in range(3)], "replace")
    index.set_tier("5.0", index.get("5.0").hash, "warm", 300)  # type: ignore[union-attr]
    expected = (index.totals(), index.tier_totals())
    schema_3 = {
        b"instances": b"3",
        b"bytes": b"3000",
        b"tier:hot:objects": b"2",
        b"tier:hot:bytes": b"2400",
        b"tier:warm:objects": b"1",
        b"tier:warm:bytes": b"300",
        # and the instance record's count, kept by a schema 3 index as it found it
        b"tier:central:objects": b"7",
        b"tier:central:bytes": b"7000",
    }
    with index._env.begin(write=True) as txn:
        txn.delete(b"counts", db=index._totals)
        for name, value in schema_3.items():
            txn.put(name, value, db=index._totals)
        txn.put(b"schema", b"3", db=index._totals)
    assert index.upgrade() == 0  # nothing recounted
    assert index.totals() == expected[0]
    assert index.tier_totals() == {**expected[1], "central": (7, 7000)}
    with index._env.begin() as txn:
        assert all(txn.get(name, db=index._totals) is None for name in schema_3)
        assert txn.get(b"schema", db=index._totals) == b"4"
    index.apply([(record("5.9", now), [])], "replace")  # counted on from there
    assert index.totals().instances == 4
    assert index.tier_totals()["hot"] == (3, 3600)


def test_purge_needs_this_version_committed_everywhere(tmp_path: Path, index: Index) -> None:
    layout = DataLayout(tmp_path / "data")
    tiers = Tiers(index, layout, durable=False)
    routed = record("3.1", time.time())
    index.apply([(routed, [Target("a", 1), Target("b", 1)])], "replace")
    instance = index.get("3.1")
    assert instance is not None
    assert "not yet delivered to a" in tiers.unsafe_to_purge(instance, "committed")
    job_a, job_b = index.queues.jobs("a", 10)[0], index.queues.jobs("b", 10)[0]
    with index._env.begin(write=True) as txn:
        index.queues._mark_done(txn, job_a, "committed", time.time())
        index.queues._mark_done(txn, replace(job_b, hash="e" * 64), "committed", time.time())
    assert "b has another version" in tiers.unsafe_to_purge(instance, "committed")
    with index._env.begin(write=True) as txn:
        index.queues._mark_done(txn, job_b, "sent", time.time())
    assert "not yet committed there" in tiers.unsafe_to_purge(instance, "committed")
    assert tiers.unsafe_to_purge(instance, "sent") == ""
    local_only = record("3.2", time.time())
    index.apply([(local_only, [])], "replace")
    kept = index.get("3.2")
    assert kept is not None
    assert "only copy" in tiers.unsafe_to_purge(kept, "sent")


def test_start_up_finishes_a_tier_move_a_crash_cut_short(tmp_path: Path, index: Index) -> None:
    """Each point a stop can fall between a move's steps leaves one copy too many;
    recovery deletes exactly the one the record does not name, never the other."""
    from storage.recovery import finish_tier_move

    layout = DataLayout(tmp_path / "data")
    layout.prepare()

    def stored(uid: str) -> tuple[Instance, Path, Path]:
        index.apply([(record(uid, time.time()), [])], "replace")
        found = index.get(uid)
        assert found is not None
        hot, warm = layout.object_path(found.hash), layout.warm_path(found.hash)
        for path in (hot, warm):
            path.parent.mkdir(parents=True, exist_ok=True)
        hot.write_bytes(b"hot")
        return found, hot, warm

    # Migrate cut after the warm file's rename, before the record switched: the warm
    # copy goes, the hot one (the record's) stays.
    one, hot, warm = stored("4.1")
    index.begin_tier_move(one, "warm")
    warm.write_bytes(b"warm")
    assert finish_tier_move(index, layout) == [warm]
    assert hot.exists()
    assert index.tier_move() is None
    # Migrate cut after the switch, before the hot file was deleted: the hot one goes.
    two, hot, warm = stored("4.2")
    index.begin_tier_move(two, "warm")
    warm.write_bytes(b"warm")
    assert index.set_tier(two.sop_instance_uid, two.hash, "warm", 4) is not None
    assert finish_tier_move(index, layout) == [hot]
    assert warm.exists()
    # Purge cut after the switch to central: the local file goes.
    moved = index.get("4.2")
    assert moved is not None
    assert index.set_tier(moved.sop_instance_uid, moved.hash, "central", 0) is not None
    assert finish_tier_move(index, layout) == [warm]
    # A move that finished, then the object came back (re-sent): nothing is deleted.
    three, hot, warm = stored("4.3")
    assert index.set_tier(three.sop_instance_uid, three.hash, "central", 0) is not None
    hot.unlink()  # the purge finished
    index.apply([(record("4.3", time.time()), [])], "replace")  # hot again
    hot.write_bytes(b"hot")
    assert finish_tier_move(index, layout) == []
    assert hot.exists()
    assert finish_tier_move(index, layout) == []  # nothing journalled any more
