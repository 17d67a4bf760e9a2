"""The catalog and its queries on a real LMDB index: every matching kind of PS3.4
C.2.2.2, each level, the keys that drive a query, and records kept right as
instances come, change tier and go."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from storage.index import Index, Instance
from storage.query import Query, QueryError, availability, search
from tests.storage.test_queue import instance


def make(uid: str, study: str, series: str, **fields: Any) -> Instance:
    base = instance(uid, study)
    return replace(base, series_instance_uid=series, **fields)


@pytest.fixture
def index(tmp_path: Path) -> Index:
    index = Index(tmp_path / "index.lmdb", 2**26, durable=False)
    index.upgrade()
    chen = {"patient_id": "P2", "patient_name": "Chen^Wei=陈^伟", "patient_sex": "M"}
    records = [
        make(
            "1.1",
            "S1",
            "S1.1",
            patient_id="P1",
            patient_name="Doe^Jane",
            study_date="20240105",
            accession_number="A1",
            modality="CT",
            study_time="101500",
            patient_sex="F",
        ),
        make(
            "1.2",
            "S1",
            "S1.1",
            patient_id="P1",
            patient_name="Doe^Jane",
            study_date="20240105",
            accession_number="A1",
            modality="CT",
            instance_number="2",
        ),
        make(
            "1.3",
            "S1",
            "S1.2",
            patient_id="P1",
            patient_name="Doe^Jane",
            study_date="20240105",
            accession_number="A1",
            modality="SR",
        ),
        make(
            "2.1", "S2", "S2.1", study_date="20240301", accession_number="A2", modality="MR", **chen
        ),
        make(
            "3.1",
            "S3",
            "S3.1",
            patient_id="P1",
            patient_name="Doe^Jane",
            study_date="20231231",
            accession_number="A3",
            modality="MG",
        ),
    ]
    index.apply([(r, []) for r in records], "replace")
    return index


def uids(index: Index, level: str, **keys: str) -> list[str]:
    unique = {
        "PATIENT": "PatientID",
        "STUDY": "StudyInstanceUID",
        "SERIES": "SeriesInstanceUID",
        "IMAGE": "SOPInstanceUID",
    }[level]
    return sorted(a[unique] for a in search(index, Query(level, keys)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, ["S1", "S2", "S3"]),  # universal
        ({"PatientID": "P1"}, ["S1", "S3"]),
        ({"PatientID": "P*"}, ["S1", "S2", "S3"]),  # wildcard: no key drives it
        ({"AccessionNumber": "A2"}, ["S2"]),
        ({"StudyDate": "20240101-20241231"}, ["S1", "S2"]),
        ({"StudyDate": "-20240105"}, ["S1", "S3"]),
        ({"StudyDate": "20240301-"}, ["S2"]),
        ({"StudyDate": "20240105"}, ["S1"]),
        ({"PatientName": "doe*"}, ["S1", "S3"]),  # prefix, case-insensitive
        ({"PatientName": "DOE^JANE"}, ["S1", "S3"]),
        ({"PatientName": "*wei"}, ["S2"]),
        ({"PatientName": "陈*"}, ["S2"]),  # the ideographic group matches too
        ({"PatientName": "D?e^J*"}, ["S1", "S3"]),
        ({"ModalitiesInStudy": "SR"}, ["S1"]),
        ({"ModalitiesInStudy": "MR\\MG"}, ["S2", "S3"]),
        ({"StudyInstanceUID": "S3\\S2\\S9"}, ["S2", "S3"]),  # UID list
        ({"PatientID": "P1", "StudyDate": "2024*"}, ["S1"]),
        ({"StudyTime": "1000-1100"}, ["S1"]),
        ({"PatientSex": "M"}, ["S2"]),
    ],
)
def test_study_level_matching(index: Index, keys: dict[str, str], expected: list[str]) -> None:
    assert uids(index, "STUDY", **keys) == expected


def test_study_answer_carries_the_requested_keys(index: Index) -> None:
    keys = {
        "PatientName": "",
        "ModalitiesInStudy": "",
        "NumberOfStudyRelatedSeries": "",
        "NumberOfStudyRelatedInstances": "",
        "StudyDate": "",
        "Unknown": "",
    }
    [answer] = search(index, Query("STUDY", {"AccessionNumber": "A1", **keys}))
    assert answer["StudyInstanceUID"] == "S1"
    assert answer["PatientName"] == "Doe^Jane"
    assert answer["ModalitiesInStudy"] == "CT\\SR"
    assert answer["NumberOfStudyRelatedSeries"] == "2"
    assert answer["NumberOfStudyRelatedInstances"] == "3"
    assert answer["Unknown"] == ""
    assert answer["_tiers"] == {"hot": 3}


def test_lower_levels_walk_their_parent(index: Index) -> None:
    assert uids(index, "SERIES", StudyInstanceUID="S1") == ["S1.1", "S1.2"]
    assert uids(index, "SERIES", StudyInstanceUID="S1", Modality="SR") == ["S1.2"]
    assert uids(index, "IMAGE", SeriesInstanceUID="S1.1") == ["1.1", "1.2"]
    assert uids(index, "IMAGE", SeriesInstanceUID="S1.1", InstanceNumber="2") == ["1.2"]
    [image] = search(
        index,
        Query(
            "IMAGE",
            {
                "SeriesInstanceUID": "S1.1",
                "SOPInstanceUID": "1.1",
                "SOPClassUID": "",
                "PatientID": "",
            },
        ),
    )
    assert image["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"
    assert image["PatientID"] == "P1"  # from the study, for a patient-root SCU
    with pytest.raises(QueryError, match="SeriesInstanceUID"):
        list(search(index, Query("IMAGE", {})))


def test_patient_level(index: Index) -> None:
    assert uids(index, "PATIENT") == ["P1", "P2"]
    [p1] = search(index, Query("PATIENT", {"PatientID": "P1", "NumberOfPatientRelatedStudies": ""}))
    assert p1["NumberOfPatientRelatedStudies"] == "2"


def test_records_follow_replacements_removals_and_tiers(index: Index) -> None:
    # The same instance again with another name: the study is found by the new one only.
    renamed = make(
        "3.1",
        "S3",
        "S3.1",
        patient_id="P1",
        patient_name="Roe^Jane",
        study_date="20231231",
        accession_number="A3",
        modality="MG",
        hash="f" * 64,
    )
    index.apply([(renamed, [])], "replace")
    assert uids(index, "STUDY", PatientName="ROE*") == ["S3"]
    assert uids(index, "STUDY", PatientName="DOE*") == ["S1"]
    record = index.get("2.1")
    assert record is not None
    index.set_tier("2.1", record.hash, "central", 0)
    [s2] = search(index, Query("STUDY", {"StudyInstanceUID": "S2"}))
    assert s2["_tiers"] == {"hot": 0, "central": 1}
    assert availability(s2["_tiers"], recallable=False) == "UNAVAILABLE"
    assert availability(s2["_tiers"], recallable=True) == "NEARLINE"
    assert availability({"hot": 3}, recallable=False) == "ONLINE"
    assert availability({"hot": 1, "warm": 2}, recallable=False) == "NEARLINE"


def test_upgrade_builds_the_catalog_of_an_older_index(tmp_path: Path, index: Index) -> None:
    from storage.index import _SCHEMA

    with index._env.begin(write=True) as txn:  # as schema 2 left it: no catalog
        txn.put(_SCHEMA, b"2", db=index._totals)
        index.catalog.clear(txn)
    assert uids(index, "STUDY") == []
    assert index.upgrade() == 5
    assert uids(index, "STUDY", PatientID="P1") == ["S1", "S3"]
    assert index.totals().studies == 3


def test_a_field_an_older_record_left_null_counts_as_empty(index: Index) -> None:
    """Records written before a field existed decode with null in it: the catalog
    counts such an instance, and its other fields still reach the study."""
    older = replace(
        make("4.1", "S4", "S4.1", patient_id="P4", patient_name="Old^Rec"),
        study_description=None,  # type: ignore[arg-type]
    )
    index.apply([(older, [])], "replace")
    [s4] = search(index, Query("STUDY", {"StudyInstanceUID": "S4", "PatientName": ""}))
    assert s4["PatientName"] == "Old^Rec"
    assert uids(index, "STUDY", PatientID="P4") == ["S4"]
