"""Demographics typed at the device, set back to the worklist's (IHE PIR's intent):
an arriving image whose Accession Number (else Study Instance UID) names a mirrored
worklist item gets that item's patient name, ID, issuer, birth date and sex, on its
index record and on the copies forwarded by routes with `coerce_from_worklist`.
The stored bytes stay as the device sent them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policies.rules import with_values
from storage.index import Instance, with_demographics
from storage.worklist import WorklistCache

DEMOGRAPHICS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")


@dataclass(frozen=True)
class Correction:
    values: dict[str, str]  # keyword -> the worklist's value, where it differs
    before: dict[str, str]  # keyword -> what the device sent

    def applied(self, instance: Instance) -> Instance:
        """The index record with the worklist's demographics (the forwarded copies get
        them through their routes' coercion)."""
        return with_demographics(instance, self.values, correct=False)

    def coerce(self, base: dict[str, Any] | None) -> dict[str, Any] | None:
        """A route's coercion (policies.rules.Coercion, as a dict) with these values set."""
        return with_values(base, self.values)


def correction(cache: WorklistCache, attrs: dict[str, str]) -> Correction | None:
    item = cache.item_for(attrs.get("AccessionNumber", ""), attrs.get("StudyInstanceUID", ""))
    if item is None:
        return None
    values, before = {}, {}
    for keyword in DEMOGRAPHICS:
        wanted = str(item.get(keyword, "") or "").strip()
        if wanted and wanted != attrs.get(keyword, ""):
            values[keyword] = wanted
            before[keyword] = attrs.get(keyword, "")
    return Correction(values, before) if values else None
