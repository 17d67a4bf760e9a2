"""Lifecycle rules: how long an object stays hot, what the warm tier packs it with,
when the edge may let go of its local copy, and when heavy work may run.

`[lifecycle]` in the config holds the watermarks and the schedule window, and
`[[lifecycle.rule]]` the rules, matched like routing rules (first match wins) on
what the index records of an object. An object no rule matches stays hot and is
purged only when the disk needs the space (and its destinations committed it).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from policies.rules import Condition, predicate
from storage.index import Instance

# What a lifecycle rule can test: the attributes every index record carries.
MATCHABLE = {
    "Modality": "modality",
    "SOPClassUID": "sop_class_uid",
    "PatientID": "patient_id",
    "StudyDescription": "study_description",
    "AccessionNumber": "accession_number",
    "StudyDate": "study_date",
    "TransferSyntaxUID": "transfer_syntax_uid",
    "calling_ae": "calling_ae",
}
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
Days = Annotated[float, Field(ge=0, le=36500)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


def _matchable(value: str) -> str:
    if value not in MATCHABLE:
        raise ValueError(
            f"{value!r} cannot be matched here; lifecycle rules test {', '.join(MATCHABLE)}"
        )
    return value


def _window(value: str) -> str:
    if value and (not _WINDOW.match(value) or value[:5] == value[6:]):
        raise ValueError('a window is "HH:MM-HH:MM" (local time, may cross midnight) or ""')
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LifecycleRule(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    match: dict[Annotated[str, AfterValidator(_matchable)], str | Condition] = {}
    # After hot_days in the hot tier, pack into the warm tier with this codec.
    warm_codec: Literal["none", "zstd", "jpeg-ls"] = "none"
    hot_days: Days = 7.0
    # Purge (once committed) this many days after it was received; None: only
    # when the disk needs the space.
    keep_days: Days | None = None
    purge: bool = True  # false: never purge these here, whatever the disk


class LifecycleConfig(_Strict):
    high_watermark: Fraction  # above this share of the data disk used, purge ...
    low_watermark: Fraction  # ... committed objects, oldest first, down to this
    window: Annotated[str, AfterValidator(_window)]  # warm packing only then
    interval: Annotated[float, Field(ge=1, le=86400)]
    purge_when: Literal["committed", "sent"]
    zstd_level: Annotated[int, Field(ge=1, le=19)]
    # HL7 messages received and MPPS messages relayed are kept this long; 0: for good.
    message_keep_days: Days
    rule: list[LifecycleRule]

    @model_validator(mode="after")
    def _marks_in_order(self) -> LifecycleConfig:
        if self.low_watermark >= self.high_watermark:
            raise ValueError(
                f"low_watermark {self.low_watermark} must be below high_watermark "
                f"{self.high_watermark}"
            )
        return self


# What applies to an object no rule matches: stay hot, purge when the disk needs it.
_DEFAULT = LifecycleRule.model_construct(name="")


class Lifecycle:
    def __init__(self, config: LifecycleConfig) -> None:
        self.config = config
        self._rules: list[tuple[tuple[tuple[str, Any], ...], LifecycleRule]] = []
        for rule in config.rule:
            tests = tuple((MATCHABLE[key], predicate(spec)) for key, spec in rule.match.items())
            self._rules.append((tests, rule))

    def policy(self, instance: Instance) -> LifecycleRule:
        """The first rule that matches `instance`, else the defaults (name "")."""
        for tests, policy in self._rules:
            if all(test(getattr(instance, field) or None) for field, test in tests):
                return policy
        return _DEFAULT

    @property
    def shortest_keep_days(self) -> float | None:
        """The soonest any rule purges by age (None: only the disk purges)."""
        days = [policy.keep_days for _, policy in self._rules if policy.keep_days is not None]
        return min(days) if days else None

    @property
    def shortest_hot_days(self) -> float | None:
        """The soonest any rule packs into the warm tier (None: no rule packs)."""
        days = [p.hot_days for _, p in self._rules if p.warm_codec != "none"]
        return min(days) if days else None

    @property
    def packs(self) -> bool:
        """Does any rule move objects to the warm tier?"""
        return self.shortest_hot_days is not None

    def in_window(self, now: datetime) -> bool:
        window = self.config.window
        if not window:
            return True
        start, end = _minutes(window[:5]), _minutes(window[6:])
        minute = now.hour * 60 + now.minute
        if start < end:
            return start <= minute < end
        return minute >= start or minute < end  # crosses midnight


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)
