"""Routing rules: which destinations an object goes to, how urgently, and what is
changed on the forwarded copy (never on the edge's stored copy).

Rules come from `[[route]]` in the config, are validated with the rest of it and
compiled once into a `Router`; a rule that cannot work (unknown keyword, bad regex,
undefined destination) stops start-up with its name and field. First match wins,
unless a rule says `stop = false`; without rules every object goes everywhere.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

CALLING_AE = "calling_ae"  # a match key that is not a DICOM attribute
PRIORITIES = {"high": 0, "normal": 1, "low": 2}  # the queue key's priority byte
# The forwarder's C-STORE command names these; a coercion must not make them disagree.
_NOT_COERCIBLE = frozenset({"SOPInstanceUID", "SOPClassUID", "TransferSyntaxUID"})


def _keyword(value: str) -> str:
    if value != CALLING_AE and tag_for_keyword(value) is None:
        raise ValueError(
            f"{value!r} is not a DICOM keyword (like Modality or StationName) nor calling_ae"
        )
    return value


def _coercible(value: str) -> str:
    if tag_for_keyword(value) is None:
        raise ValueError(f"{value!r} is not a DICOM keyword")
    if value in _NOT_COERCIBLE:
        raise ValueError(f"{value} cannot be coerced: the DIMSE command carries it")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc
    return value


Keyword = Annotated[str, AfterValidator(_keyword)]
Coercible = Annotated[str, AfterValidator(_coercible)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    """One test on one attribute; a bare string in the config means `equals`."""

    equals: str | None = None
    glob: str | None = None
    regex: Annotated[str, AfterValidator(_regex)] | None = None
    present: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [k for k in ("equals", "glob", "regex", "present") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of equals, glob, regex, present")
        return self


class Coercion(_Strict):
    set: dict[Coercible, str] = {}
    prefix: dict[Coercible, str] = {}
    delete: list[Coercible] = []

    def __bool__(self) -> bool:
        return bool(self.set or self.prefix or self.delete)

    def apply(self, ds: Dataset) -> None:
        """Change the forwarded copy's dataset in place."""
        for keyword, value in self.set.items():
            setattr(ds, keyword, value)
        for keyword, value in self.prefix.items():  # only an existing, non-empty value
            if keyword in ds and ds[keyword].value not in (None, ""):
                ds[keyword].value = value + str(ds[keyword].value)
        for keyword in self.delete:
            if keyword in ds:
                delattr(ds, keyword)


class RouteConfig(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    destinations: list[str]
    priority: Literal["high", "normal", "low"] = "normal"
    stop: bool = True  # false: later rules may add destinations too
    match: dict[Keyword, str | Condition] = {}
    coerce: Coercion = Coercion()
    # Demographics the device typed are set back to the mirrored worklist item's
    # (matched by AccessionNumber, else StudyInstanceUID): engine.worklist.coercion.
    coerce_from_worklist: bool = False


def with_values(coerce: dict[str, Any] | None, values: dict[str, str]) -> dict[str, Any] | None:
    """A coercion (a dumped Coercion) that also sets `values` (corrected demographics)
    first, so the route's own prefix/delete still apply on top. A value outside
    ASCII re-declares the copy as ISO_IR 192 (pydicom re-encodes the other text)."""
    if not values:
        return coerce
    merged = dict(coerce or {})
    new = {**values, **merged.get("set", {})}
    if not all(v.isascii() for v in values.values()):
        new["SpecificCharacterSet"] = "ISO_IR 192"
    merged["set"] = new
    return merged


@dataclass(frozen=True)
class Route:
    destination: str
    priority: int
    coerce: dict[str, Any] | None  # the rule's Coercion, dumped once; never mutated
    from_worklist: bool = False


@dataclass(frozen=True)
class _Compiled:
    name: str
    tests: tuple[tuple[str, Any], ...]  # (attribute, predicate on its text or None)
    routes: tuple[Route, ...]
    stop: bool


def predicate(spec: str | Condition) -> Any:
    """A compiled test of one attribute's text (None when absent)."""
    if isinstance(spec, str):
        return lambda value: value == spec
    if spec.equals is not None:
        expected = spec.equals
        return lambda value: value == expected
    if spec.glob is not None:
        pattern = re.compile(fnmatch.translate(spec.glob))
        return lambda value: value is not None and pattern.match(value) is not None
    if spec.regex is not None:
        regex = re.compile(spec.regex)
        return lambda value: value is not None and regex.search(value) is not None
    wanted = spec.present
    return lambda value: (value not in (None, "")) == wanted


class Router:
    def __init__(self, rules: Iterable[RouteConfig], destinations: list[str]) -> None:
        self._compiled: list[_Compiled] = []
        for rule in rules:
            names = destinations if "*" in rule.destinations else rule.destinations
            # Dumped here, not per object: every queued job carries this dict.
            coerce = rule.coerce.model_dump() if rule.coerce else None
            routes = tuple(
                Route(d, PRIORITIES[rule.priority], coerce, rule.coerce_from_worklist)
                for d in names
            )
            tests = tuple((key, predicate(spec)) for key, spec in rule.match.items())
            self._compiled.append(_Compiled(rule.name, tests, routes, rule.stop))
        self._everywhere = tuple(Route(d, PRIORITIES["normal"], None) for d in destinations)
        self.keywords = frozenset(key for rule in self._compiled for key, _ in rule.tests)

    def route(self, attributes: Mapping[str, str]) -> list[Route]:
        """Destinations for an object, given its attributes (and `calling_ae`)."""
        if not self._compiled:
            return list(self._everywhere)
        chosen: dict[str, Route] = {}
        for rule in self._compiled:
            if all(test(attributes.get(key)) for key, test in rule.tests):
                for route in rule.routes:
                    chosen.setdefault(route.destination, route)
                if rule.stop:
                    return list(chosen.values())
        return list(chosen.values()) if chosen else list(self._everywhere)
