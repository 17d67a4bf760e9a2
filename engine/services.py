"""What every part of one engine process shares, and nothing of the engine itself.

The running configuration lives here and only here: a reload swaps `config` whole,
so a part reads `shared.config` when it needs a value and keeps no copy. Storage,
metrics and the audit log are the same for every part. The engine's own pieces
(the association hub, the C-STORE service, the forwarder ...) are not in this
container: each part is handed the few it needs, so none imports the server and no
import circle forms around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from monitoring.audit import AuditLog
from monitoring.metrics import Metrics
from policies.config import Config
from storage.committer import GroupCommitter
from storage.index import Index
from storage.layout import DataLayout

Role = Literal["all", "ingest", "background"]


@dataclass
class Shared:
    config: Config  # swapped by a reload: read it here each time, never keep a copy
    layout: DataLayout
    index: Index
    committer: GroupCommitter
    metrics: Metrics
    audit: AuditLog
    role: Role = "all"
    ready: bool = False
