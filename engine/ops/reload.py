"""Hot reload: SIGHUP or POST /api/v1/reload re-reads the config file.

What can change without a restart takes effect at once: the calling-AE allowlist,
[[calling_ae]] rules, trusted proxies and called-AE check (for the next
association), ops API tokens, log level, audit patient fields, forward settings, destinations
and routing rules (for the next object; only destinations whose settings changed
restart their workers, and their jobs stay queued), the lifecycle rules, watermarks
and window (from the next pass) and storage.disk_high_watermark. Everything else (ports, data
directory, durability, PDU size ...) is kept as it runs and reported as "needs a
restart". A file that does not validate is
refused with its field and reason, and the running configuration stays. What a
reload takes away (an allowed AE, a [[calling_ae]] entry, a destination, a route, a
token ...) is logged at WARNING and audited, one line each: an empty file is a valid
configuration, and it removes all of them. `pacs-edge reload --check FILE` shows all
this against the running engine without applying it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from policies.config import Config, ConfigError
from policies.http_access import Caller
from policies.rules import Router

if TYPE_CHECKING:
    from engine.dicom.store import StoreService
    from engine.forward.forwarder import Forwarder
    from engine.lifecycle import LifecycleWorker
    from engine.services import Shared

log = logging.getLogger(__name__)


def merge(running: Config, new: Config) -> tuple[Config, list[str]]:
    """The running config with the reloadable parts of `new`, and the keys of `new`
    that differ but only a restart would apply."""
    dicom = running.dicom.model_copy(
        update={
            "allowed_calling_aes": new.dicom.allowed_calling_aes,
            "check_called_ae": new.dicom.check_called_ae,
            "trusted_proxies": new.dicom.trusted_proxies,
        }
    )
    audit = running.audit.model_copy(update={"patient_identifiers": new.audit.patient_identifiers})
    http = running.http.model_copy(update={"token": new.http.token})
    # Validated together (lifecycle.high_watermark < storage.disk_high_watermark).
    storage = running.storage.model_copy(
        update={"disk_high_watermark": new.storage.disk_high_watermark}
    )
    merged = running.model_copy(
        update={
            "dicom": dicom,
            "http": http,
            "audit": audit,
            "storage": storage,
            "lifecycle": new.lifecycle,
            "logging": new.logging,
            "forward": new.forward,
            "destination": new.destination,
            "route": new.route,
            "calling_ae": new.calling_ae,
        }
    )
    return merged, _differences(merged.model_dump(), new.model_dump())


def removals(running: Config, merged: Config) -> list[str]:
    """What `merged` no longer has that `running` had, one line each: the things
    that, gone by mistake, let strangers in or stop objects reaching the center."""
    gone = [
        f"dicom.allowed_calling_aes {ae!r}"
        for ae in running.dicom.allowed_calling_aes
        if ae not in merged.dicom.allowed_calling_aes
    ]
    gone += [
        f"dicom.trusted_proxies {str(net)!r}"
        for net in running.dicom.trusted_proxies
        if net not in merged.dicom.trusted_proxies
    ]

    def keyed(config: Config) -> list[tuple[str, str, list[Any]]]:
        return [
            ("calling_ae", "ae_title", config.calling_ae),
            ("destination", "name", config.destination),
            ("route", "name", config.route),
            ("http.token", "name", config.http.token),
            ("lifecycle.rule", "name", config.lifecycle.rule),
        ]

    for (label, key, before), (_, _, after) in zip(keyed(running), keyed(merged), strict=True):
        kept = {getattr(item, key) for item in after}
        gone += [f"{label} {getattr(i, key)!r}" for i in before if getattr(i, key) not in kept]
    guarded = running.dicom.allowed_calling_aes or running.calling_ae
    if guarded and not (merged.dicom.allowed_calling_aes or merged.calling_ae):
        gone.append("the calling-AE allow-list itself: ANY calling AE may now associate")
    return gone


def shown(config: Config) -> dict[str, Any]:
    """The running configuration for GET /api/v1/config, secrets hidden (header
    values such as a cloud archive's Authorization)."""
    data = config.model_dump(mode="json")
    for dest in data["destination"]:
        if dest.get("headers"):
            dest["headers"] = dict.fromkeys(dest["headers"], "<hidden>")
    return data


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found: list[str] = []
        for key in sorted(set(a) | set(b)):
            found += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return found
    return [] if a == b else [prefix.rstrip(".")]


def changed(a: Config, b: Config) -> list[str]:
    return _differences(a.model_dump(), b.model_dump())


class Reloader:
    def __init__(
        self,
        shared: Shared,
        store: StoreService,
        forwarder: Forwarder,
        lifecycle: LifecycleWorker | None,
        load: Callable[[], Config],
        fan_out: Callable[[], None] | None = None,
    ) -> None:
        self._shared = shared
        self._store = store
        self._forwarder = forwarder
        self._lifecycle = lifecycle
        self._load = load
        self._fan_out = fan_out  # the background process tells the workers (SIGHUP)

    async def reload(
        self, from_api: bool = False, caller: Caller | None = None
    ) -> tuple[int, dict[str, Any]]:
        """`from_api`: POST /api/v1/reload, which the workers do not see otherwise
        (a SIGHUP reaches them from the supervisor). `caller`: who asked over HTTP."""
        svc = self._shared
        who = caller.audit_fields() if caller is not None else {"by": "SIGHUP"}
        svc.audit.reopen()  # SIGHUP is also logrotate's signal
        if from_api and self._fan_out is not None:
            self._fan_out()
        try:
            new = self._load()
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            svc.audit.write("config_reload_refused", error=str(exc), **who)
            return 400, {"error": str(exc), "running": "unchanged"}
        running = svc.config
        merged, needs_restart = merge(running, new)
        changes = changed(running, merged)
        gone = removals(running, merged)
        for item in gone:
            log.warning("reload removes %s", item)
            svc.audit.write("config_removed", item=item, **who)
        svc.config = merged
        logging.getLogger().setLevel(merged.logging.level)
        svc.audit.set_patient_identifiers(merged.audit.patient_identifiers)
        self._store.use_router(Router(merged.route, [d.name for d in merged.destination]))
        restarted = await self._forwarder.reconfigure(merged)
        if self._lifecycle is not None:
            self._lifecycle.use(merged)
        if needs_restart:
            log.warning(
                "reload: %s changed but only apply after a restart", ", ".join(needs_restart)
            )
        log.info("configuration reloaded: %s", ", ".join(changes) or "nothing changed")
        svc.audit.write(
            "config_reloaded",
            changed=changes,
            needs_restart=needs_restart,
            restarted=restarted,
            **who,
        )
        return 200, {
            "changed": changes,
            "removed": gone,
            "destinations_restarted": restarted,
            "needs_restart": needs_restart,
        }
