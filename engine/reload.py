"""Hot reload: SIGHUP or POST /api/v1/reload re-reads the config file.

What can change without a restart takes effect at once: the calling-AE allowlist,
[[calling_ae]] rules, trusted proxies and called-AE check (for the next
association), log level, audit patient fields, forward settings, destinations
and routing rules (for the next object; only destinations whose settings changed
restart their workers, and their jobs stay queued), the lifecycle rules, watermarks
and window (from the next pass) and storage.disk_high_watermark. Everything else (ports, data
directory, durability, PDU size ...) is kept as it runs and reported as "needs a
restart". A file that does not validate is
refused with its field and reason, and the running configuration stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from policies.config import Config, ConfigError
from policies.rules import Router

if TYPE_CHECKING:
    from engine.server import Services

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
    # Validated together (lifecycle.high_watermark < storage.disk_high_watermark).
    storage = running.storage.model_copy(
        update={"disk_high_watermark": new.storage.disk_high_watermark}
    )
    merged = running.model_copy(
        update={
            "dicom": dicom,
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


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found: list[str] = []
        for key in sorted(set(a) | set(b)):
            found += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return found
    return [] if a == b else [prefix.rstrip(".")]


def _changed(a: Any, b: Any) -> list[str]:
    return _differences(a.model_dump(), b.model_dump())


class Reloader:
    def __init__(
        self, svc: Services, load: Callable[[], Config], fan_out: Callable[[], None] | None = None
    ) -> None:
        self._svc = svc
        self._load = load
        self._fan_out = fan_out  # the background process tells the workers (SIGHUP)

    async def reload(self, from_api: bool = False) -> tuple[int, dict[str, Any]]:
        """`from_api`: POST /api/v1/reload, which the workers do not see otherwise
        (a SIGHUP reaches them from the supervisor)."""
        svc = self._svc
        svc.audit.reopen()  # SIGHUP is also logrotate's signal
        if from_api and self._fan_out is not None:
            self._fan_out()
        try:
            new = self._load()
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            svc.audit.write("config_reload_refused", error=str(exc))
            return 400, {"error": str(exc), "running": "unchanged"}
        running = svc.config
        merged, needs_restart = merge(running, new)
        changed = _changed(running, merged)
        svc.config = merged
        logging.getLogger().setLevel(merged.logging.level)
        svc.audit.set_patient_identifiers(merged.audit.patient_identifiers)
        svc.store.use_router(Router(merged.route, [d.name for d in merged.destination]))
        restarted = await svc.forwarder.reconfigure(merged)
        if svc.lifecycle is not None:
            svc.lifecycle.use(merged)
        if needs_restart:
            log.warning(
                "reload: %s changed but only apply after a restart", ", ".join(needs_restart)
            )
        log.info("configuration reloaded: %s", ", ".join(changed) or "nothing changed")
        svc.audit.write(
            "config_reloaded", changed=changed, needs_restart=needs_restart, restarted=restarted
        )
        return 200, {
            "changed": changed,
            "destinations_restarted": restarted,
            "needs_restart": needs_restart,
        }
