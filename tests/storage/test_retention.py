"""The message logs' pruning (storage.patients, storage.mpps) at its edges: the cutoff,
the batch limit, and a log emptied to its last message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import Dataset

import storage.patients
from storage.index import Index
from storage.queue import Outcome, Settlement


def test_hl7_messages_go_oldest_first_in_batches_up_to_the_cutoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = Index(tmp_path / "index", 2**24, durable=False)
    try:
        for n, at in enumerate((100.0, 101.0, 102.0, 103.0, 104.0)):
            monkeypatch.setattr(storage.patients.time, "time", lambda at=at: at)
            index.patients.log(f"C{n}", "MSH|...", "AA", "")
        assert index.patients.prune(before=103.0, limit=2) == 2
        assert index.patients.prune(before=103.0, limit=2) == 1  # 102: the cutoff is 103
        assert index.patients.prune(before=103.0, limit=2) == 0
        left = [m["key"] for m in index.patients.messages()]
        assert left == ["104.000000 C4", "103.000000 C3"]
        assert index.patients.prune(before=1e9, limit=10) == 2  # to the very last one
        assert index.patients.messages() == []
        assert index.patients.prune(before=1e9, limit=10) == 0  # an empty log
    finally:
        index.close()


def test_an_mpps_message_stays_while_a_destination_holds_it_as_a_dead_letter(
    tmp_path: Path,
) -> None:
    index = Index(tmp_path / "index", 2**24, durable=False)
    try:
        ds = Dataset()
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        (job,) = index.mpps.accept("create", "1.2.3", ds, "CT1", ["ris"])
        index.queues.settle([Settlement(job, Outcome.DEAD)])
        assert index.mpps.prune(before=time.time() + 1, destinations=["ris"], limit=10) == 0
        assert index.mpps.message("1.2.3#1") is not None

        assert index.queues.requeue_dead("ris") == 1
        (requeued,) = index.queues.jobs("ris", 10)
        index.queues.settle([Settlement(requeued, Outcome.SENT)])
        assert index.queues.delivery("ris", "1.2.3#1") is not None
        assert index.mpps.prune(before=time.time() + 1, destinations=["ris"], limit=10) == 1
        assert index.mpps.message("1.2.3#1") is None
        assert index.queues.delivery("ris", "1.2.3#1") is None
        # Its step went with its last message: the UID may be created again.
        assert index.mpps.accept("create", "1.2.3", ds, "CT1", ["ris"])
    finally:
        index.close()
