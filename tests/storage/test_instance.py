"""Instance.of, the fast way the index builds its records, builds what the dataclass
builds, and refuses what the dataclass refuses."""

from __future__ import annotations

import dataclasses

import pytest

from storage.index import Instance
from tests.support.records import instance


def test_of_builds_what_the_dataclass_builds() -> None:
    full = dataclasses.replace(instance("1.2.3"), tier="warm", corrections={"PatientID": "P9"})
    assert Instance.of(dict(full.__dict__)) == full
    # Only the required fields: the defaults fill the rest, each record its own dict.
    required = {
        f.name: getattr(full, f.name)
        for f in dataclasses.fields(Instance)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    first, second = Instance.of(dict(required)), Instance(**required)
    assert first == second
    assert first.tier == "hot"
    assert first.destinations == ()
    assert first.corrections == {}
    assert first.corrections is not Instance.of(dict(required)).corrections
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.tier = "central"  # type: ignore[misc]


def test_of_refuses_what_the_dataclass_refuses() -> None:
    values = dict(instance("1.2.3").__dict__)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Instance.of({**values, "colour": "blue"})
    del values["hash"]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'hash'"):
        Instance.of(values)


def test_a_record_decodes_to_what_was_encoded() -> None:
    record = dataclasses.replace(instance("1.2.4"), destinations=("central",))
    assert Instance.decode(record.encode()) == record
