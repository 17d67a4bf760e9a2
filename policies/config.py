"""The engine's configuration: one TOML file of typed, validated sections.

Embedded defaults (``default.toml`` beside this module) are overlaid by the user's
file and then by command-line flags; the result is validated once, at start-up. A
bad value fails fast with a `ConfigError` that names the file, the field and why.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    model_validator,
)

from policies.http_access import TokenConfig, UserConfig
from policies.lifecycle import LifecycleConfig
from policies.rules import RouteConfig

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: no backslash, no controls


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says where and why."""


def _ae_title(value: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError("an AE title is 1-16 printable characters, not blank, no backslash")
    return value.strip()


AETitle = Annotated[str, AfterValidator(_ae_title)]
Size = Annotated[ByteSize, Field(gt=0)]  # "512MiB", "32GiB", "5MB" or a number of bytes
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Section):
    ae_title: AETitle
    data_dir: Path
    workers: Annotated[int, Field(ge=0, le=256)]  # 0: one ingest process per core
    site: Annotated[str, Field(pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]


class DicomConfig(_Section):
    host: str
    port: Port
    # The floor keeps per-PDU overhead sane; the ceiling bounds memory per association.
    max_pdu: Annotated[int, Field(ge=4096, le=16 * 2**20)]
    max_associations: Annotated[int, Field(ge=1, le=10_000)]
    # Connections that have not associated yet; more are closed at accept.
    max_pending_connections: Annotated[int, Field(ge=1, le=100_000)]
    check_called_ae: bool
    allowed_calling_aes: list[AETitle]
    artim_timeout: Seconds
    idle_timeout: Seconds
    shutdown_grace: Seconds
    trusted_proxies: list[IPvAnyNetwork]
    tls: TlsConfig


class TlsConfig(_Section):
    enabled: bool
    port: Port
    certificate: str
    private_key: str
    client_ca: str
    require_client_certificate: bool
    min_version: Literal["1.2", "1.3"]

    @model_validator(mode="after")
    def _files_given(self) -> TlsConfig:
        if self.enabled:
            needed = {"certificate": self.certificate, "private_key": self.private_key}
            if self.require_client_certificate:
                needed["client_ca"] = self.client_ca
            missing = [key for key, value in needed.items() if not value]
            if missing:
                raise ValueError(f"DICOM TLS is enabled but {', '.join(missing)} not set")
            for key, value in needed.items():
                if not Path(value).is_file():
                    raise ValueError(f"{key} {value!r} is not a readable file")
        return self


class CallingAEConfig(_Section):
    """What one calling AE may do; AEs without an entry follow [dicom]."""

    ae_title: AETitle
    networks: list[IPvAnyNetwork] = []  # source addresses allowed; empty: any
    max_associations: Annotated[int, Field(ge=1, le=10_000)] | None = None
    tls_names: list[str] = []  # client certificate CN/DNS names required; empty: none
    query: bool = True  # may C-FIND (Query/Retrieve)
    retrieve: bool = True  # may C-MOVE
    # Where it listens, so that it can be a C-MOVE destination; unset: it cannot.
    host: str = ""
    port: Port | None = None
    # Worklist answers' PatientName: as the RIS has it, or in pinyin (Latin letters,
    # ISO_IR 100) for a device that cannot show Chinese characters.
    worklist_names: Literal["as-is", "pinyin"] = "as-is"


class HttpTlsConfig(_Section):
    enabled: bool
    certificate: str
    private_key: str

    @model_validator(mode="after")
    def _files_given(self) -> HttpTlsConfig:
        if self.enabled:
            for key in ("certificate", "private_key"):
                value = getattr(self, key)
                if not value:
                    raise ValueError(f"HTTPS is enabled but {key} is not set")
                if not Path(value).is_file():
                    raise ValueError(f"{key} {value!r} is not a readable file")
        return self


class HttpConfig(_Section):
    host: str
    port: Port
    token: list[TokenConfig]  # empty (and no users): loopback clients only
    user: list[UserConfig]
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)]
    tls: HttpTlsConfig

    @model_validator(mode="after")
    def _names_distinct(self) -> HttpConfig:
        for kind, entries, keys in (
            ("token", self.token, ("name", "sha256")),
            ("user", self.user, ("name",)),
        ):
            for key in keys:
                values = [getattr(entry, key) for entry in entries]
                twice = sorted({value for value in values if values.count(value) > 1})
                if twice:
                    raise ValueError(f"http.{kind} {key} {twice[0]!r} is listed twice")
        return self


class Hl7Config(_Section):
    """HL7 v2 ADT from the HIS over MLLP (engine.hl7): patient updates and merges."""

    enabled: bool
    host: str
    port: Port


class StorageConfig(_Section):
    durability: Literal["fsync", "os"]
    on_duplicate: Literal["replace", "keep", "reject"]
    index_map_size: Size
    verify_on_start: Literal["none", "size", "hash"]
    # Above this share of the data disk used: /readyz 503 and new associations are
    # refused (transient), so that nothing accepted is ever dropped.
    disk_high_watermark: Annotated[float, Field(gt=0, le=1)]


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class AuditConfig(_Section):
    path: str  # "": <data_dir>/audit.jsonl
    patient_identifiers: bool


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"  # used in URLs, LMDB keys and metric labels
Name = Annotated[str, Field(pattern=_NAME)]


class ForwardConfig(_Section):
    """How every destination retries; a destination may override the numbers."""

    batch_size: Annotated[int, Field(ge=1, le=1000)]
    retry_base_delay: Seconds
    retry_max_delay: Seconds
    max_attempts: Annotated[int, Field(ge=1, le=1000)]
    max_busy_attempts: Annotated[int, Field(ge=1, le=10_000)]
    breaker_threshold: Annotated[int, Field(ge=1, le=1000)]
    commitment_timeout: Seconds
    # After an N-ACTION, how long to keep its association for a report on it;
    # archives that report later, on an association of their own, cost this each time.
    commitment_wait: Annotated[float, Field(ge=0, le=600)]


class _Destination(_Section):
    name: Name
    batch_size: Annotated[int, Field(ge=1, le=1000)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=1000)] | None = None
    associations: Annotated[int, Field(ge=1, le=64)] = 2
    # Bytes per second over all of this destination's connections; 0: no cap.
    bandwidth: Annotated[ByteSize, Field(ge=0)] = ByteSize(0)
    connect_timeout: Seconds = 10.0
    timeout: Seconds = 60.0  # one response (C-STORE-RSP, STOW-RS answer) may take this long
    # A study's instances in arrival order: one association per study at a time.
    # false: a large study spreads over all associations, in no particular order.
    ordered: bool = True
    # What the destination receives: objects as stored; native pixel data as
    # verified JPEG-LS or HTJ2K lossless; or "uncompressed": compressed objects
    # decoded (storage.transcode.DECODERS).
    # "as-stored-or-uncompressed": as stored, decoded only where the destination
    # refuses the stored syntax (what C-MOVE destinations get).
    transfer_syntax: Literal[
        "as-stored",
        "as-stored-or-uncompressed",
        "jpeg-ls-lossless",
        "htj2k-lossless",
        "uncompressed",
    ] = "as-stored"


class DicomDestination(_Destination):
    kind: Literal["dicom"]
    host: str
    port: Port
    called_ae: AETitle
    calling_ae: AETitle | None = None  # default: [node] ae_title
    max_pdu: Annotated[int, Field(ge=4096, le=16 * 2**20)] = 262144
    commitment: bool = False
    # Seconds to keep the N-ACTION's association for a report on it; None: [forward]'s.
    # 0 for an archive that always reports later on its own association (Orthanc).
    commitment_wait: Annotated[float, Field(ge=0, le=600)] | None = None
    # It sends studies back on C-MOVE to our AE title (it must know our address):
    # `pacs-edge recall` asks it. What comes back is not forwarded again.
    recall: bool = False


class DicomWebDestination(_Destination):
    kind: Literal["dicomweb"]
    url: Annotated[str, Field(pattern=r"^https?://")]
    headers: dict[str, str] = {}  # e.g. Authorization for a cloud archive


Destination = Annotated[DicomDestination | DicomWebDestination, Field(discriminator="kind")]


class MppsDestination(_Destination):
    """Where Modality Performed Procedure Steps received here are relayed (the RIS),
    through the same durable queues, backoff and dead letters as forwarding."""

    kind: Literal["mpps"] = "mpps"
    host: str
    port: Port
    called_ae: AETitle
    calling_ae: AETitle | None = None  # default: [node] ae_title
    associations: Annotated[int, Field(ge=1, le=1)] = 1  # one: steps go in order


class WorklistSourceConfig(_Section):
    """An upstream RIS whose Modality Worklist the edge mirrors (engine.worklist)."""

    name: Name
    host: str
    port: Port
    called_ae: AETitle
    calling_ae: AETitle | None = None  # default: [node] ae_title
    poll_interval: Seconds = 60.0
    days_ahead: Annotated[int, Field(ge=0, le=365)] = 1
    days_behind: Annotated[int, Field(ge=0, le=365)] = 0
    # A modality's query waits this long for the RIS, then is answered from the cache.
    timeout: Annotated[float, Field(gt=0, le=60)] = 3.0
    # What the RIS's answers are encoded in when they carry no Specific Character Set
    # (DCMTK's wlmscpfs sends none by default), e.g. "ISO_IR 192"; "": the default
    # repertoire, as PS3.5 says.
    character_set: str = ""


class Config(_Section):
    node: NodeConfig
    dicom: DicomConfig
    http: HttpConfig
    hl7: Hl7Config
    storage: StorageConfig
    logging: LoggingConfig
    audit: AuditConfig
    forward: ForwardConfig
    destination: list[Destination]
    route: list[RouteConfig]
    calling_ae: list[CallingAEConfig]
    worklist_source: list[WorklistSourceConfig]
    mpps_destination: list[MppsDestination]
    lifecycle: LifecycleConfig

    @property
    def durable(self) -> bool:
        return self.storage.durability == "fsync"

    @property
    def queues(self) -> list[Any]:
        """Every destination with a forward queue: objects' and MPPS relays'."""
        return [*self.destination, *self.mpps_destination]

    @property
    def ingest_workers(self) -> int:
        """[node] workers, with 0 meaning one per core."""
        return self.node.workers or os.cpu_count() or 1

    @property
    def audit_path(self) -> Path:
        return Path(self.audit.path) if self.audit.path else self.node.data_dir / "audit.jsonl"

    def calling_ae_entry(self, ae_title: str) -> CallingAEConfig | None:
        for entry in self.calling_ae:
            if entry.ae_title == ae_title:
                return entry
        return None

    @model_validator(mode="after")
    def _names_resolve(self) -> Config:
        titles = [entry.ae_title for entry in self.calling_ae]
        for title in titles:
            if titles.count(title) > 1:
                raise ValueError(f"calling_ae {title!r} is listed twice")
        names = [d.name for d in self.destination]
        relays = [d.name for d in self.mpps_destination]
        for name in names + relays:
            if (names + relays).count(name) > 1:
                raise ValueError(
                    f"destination name {name!r} is used twice (destinations and "
                    "mpps_destinations share one namespace: their queues do)"
                )
        sources = [w.name for w in self.worklist_source]
        for name in sources:
            if sources.count(name) > 1:
                raise ValueError(f"worklist_source name {name!r} is used twice; names are unique")
        refuse = self.storage.disk_high_watermark
        if self.lifecycle.high_watermark >= refuse:
            raise ValueError(
                f"lifecycle.high_watermark {self.lifecycle.high_watermark} must be below "
                f"storage.disk_high_watermark {refuse}, where new associations are refused: "
                "purging has to start first"
            )
        for rule in self.route:
            unknown = [d for d in rule.destinations if d != "*" and d not in names]
            if unknown:
                raise ValueError(
                    f"route {rule.name!r}: destinations {unknown} are not defined "
                    f"(defined: {names or 'none'})"
                )
        return self


def _defaults() -> dict[str, Any]:
    text = resources.files("policies").joinpath("default.toml").read_text("utf-8")
    return tomllib.loads(text)


def _overlay(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError, source: str, data: dict[str, Any]) -> str:
    found: dict[str, list[tuple[str, str]]] = {}
    for item in error.errors():
        loc = _in_data(item["loc"], data)
        field = _name_list_items(loc, data)
        given = item.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key; check the spelling against policies/default.toml"
        elif item["type"] in ("byte_size", "byte_size_unit"):
            message = "a size is a number with an optional unit, like 512MiB or 32GiB"
        elif item["type"] in ("union_tag_not_found", "union_tag_invalid"):
            tag = item["ctx"]["discriminator"].strip("'")
            expected = item["ctx"].get("expected_tags", "'dicom', 'dicomweb'")
            message = f"needs {tag} = one of {expected}"
            field = f"{field}.{tag}"
        where = f"{field}: " if field else ""  # a check across sections names its fields
        found.setdefault(field, []).append((item["type"], f"  {where}{message}{shown}"))
    lines = [f"invalid configuration in {source}:"]
    for field, errors in found.items():
        # A value that may be a string or a table fails both ways; the type
        # complaint of the branch it was not meant for is noise.
        deeper = any(other.startswith(field + ".") for other in found)
        meant = [line for kind, line in errors if not (kind.endswith("_type") and deeper)]
        lines.extend(meant)
    return "\n".join(lines)


def _in_data(loc: tuple[int | str, ...], data: Any) -> tuple[int | str, ...]:
    """Drop the parts of a pydantic location that name its own machinery (union
    branches, validators, "[key]") rather than a key or index of the file."""
    kept: list[int | str] = []
    node: Any = data
    for part in loc:
        child = _child(node, part)
        if child is not _MISSING:
            node = child
            kept.append(part)
        elif isinstance(node, dict) and isinstance(part, str) and not _is_branch(part):
            node = None  # a key the file lacks: the error is about it, keep it
            kept.append(part)
    return tuple(kept)


_MISSING = object()


def _child(node: Any, part: int | str) -> Any:
    if isinstance(node, dict):
        return node.get(part, _MISSING) if isinstance(part, str) else _MISSING
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _MISSING


def _is_branch(part: str) -> bool:
    return (
        part[:1].isupper() or part.startswith("function-") or part in {"str", "dicom", "dicomweb"}
    )


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file at `path`, then `overrides` ({"section": {"key": v}})."""
    data = _defaults()
    source = "the embedded defaults"
    if path is not None:
        source = str(path)
        try:
            with path.open("rb") as handle:
                data = _overlay(data, tomllib.load(handle))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    if overrides:
        data = _overlay(data, overrides)
        source += " and the command line"
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, data)) from exc


def _name_list_items(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """`route.2.match.Modalty` -> `route[2] "mg-both".match.Modalty`: admins know names."""
    if loc[:2] == ("lifecycle", "rule"):  # lifecycle.rule[1] "ct-mr".warm_codec
        rules = data.get("lifecycle", {})
        named = _name_list_items(loc[1:], rules if isinstance(rules, dict) else {})
        return f"lifecycle.{named}"
    if len(loc) >= 2 and loc[0] in ("route", "destination", "rule") and isinstance(loc[1], int):
        items = data.get(str(loc[0]), [])
        if loc[1] < len(items) and isinstance(items[loc[1]], dict) and "name" in items[loc[1]]:
            rest = ".".join(str(part) for part in loc[2:])
            named = f'{loc[0]}[{loc[1]}] "{items[loc[1]]["name"]}"'
            return f"{named}.{rest}" if rest else named
    return ".".join(str(part) for part in loc)
