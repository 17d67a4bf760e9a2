"""The worklist mirror's items as a process keeps them decoded (storage.worklist):
what a poll changes is what the next query sees, what it removes is forgotten, and
an answer rewritten for a device (pinyin) leaves the kept item as the RIS sent it."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset
from pydicom.sequence import Sequence

from engine.worklist.names import in_pinyin
from storage import worklist
from storage.index import Index


def item(accession: str, name: str, station: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber, ds.PatientName, ds.PatientID = accession, name, f"P{accession}"
    step = Dataset()
    step.ScheduledStationAETitle, step.ScheduledProcedureStepID = station, f"S{accession}"
    step.Modality, step.ScheduledProcedureStepStartDate = "CT", "20261206"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def query(**step_keys: str) -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.AccessionNumber = "", ""
    step = Dataset()
    for keyword in ("ScheduledStationAETitle", "Modality", "ScheduledProcedureStepStartDate"):
        setattr(step, keyword, step_keys.get(keyword, ""))
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def names(cache: worklist.WorklistCache, identifier: Dataset) -> list[str]:
    answers = worklist.match(identifier)
    return sorted(str(i.PatientName) for i in cache.items(["ris"]) if answers(i))


def test_each_query_sees_the_mirror_as_the_last_poll_left_it(tmp_path: Path) -> None:
    index = Index(tmp_path / "index", 2**24, durable=False)
    try:
        cache = index.worklist
        cache.replace("ris", [item("A1", "Wang^Fang", "CT1"), item("A2", "Doe^John", "CT2")])
        assert names(cache, query(ScheduledStationAETitle="CT1")) == ["Wang^Fang"]
        assert names(cache, query(ScheduledStationAETitle="CT*")) == ["Doe^John", "Wang^Fang"]

        # A poll (here, or in another process: the bytes tell) renames and moves one.
        cache.replace("ris", [item("A1", "王^芳芳", "CT2"), item("A2", "Doe^John", "CT2")])
        assert names(cache, query(ScheduledStationAETitle="CT1")) == []
        assert names(cache, query(ScheduledStationAETitle="CT2")) == ["Doe^John", "王^芳芳"]

        # An answer in pinyin for an old device does not change the kept item.
        (kept,) = [i for i in cache.items(["ris"]) if str(i.AccessionNumber) == "A1"]
        sent = in_pinyin(worklist.answer(query(), kept))
        assert str(sent.PatientName) == "WANG^FANGFANG"
        assert names(cache, query(ScheduledStationAETitle="CT2")) == ["Doe^John", "王^芳芳"]

        # What a poll removes is forgotten, not kept decoded for good.
        cache.replace("ris", [item("A2", "Doe^John", "CT2")])
        assert names(cache, query()) == ["Doe^John"]
        assert len(cache._decoded) == 1
    finally:
        index.close()
