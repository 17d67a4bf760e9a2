"""A real Orthanc (Debian package) as the central archive: DICOM, REST, DICOMweb."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.peers import free_port
from tests.support.process import launch, wait_up

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
WORKLIST_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")


class OrthancProcess:
    def __init__(
        self,
        workdir: Path,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        count_receptions: bool = False,
        dicomweb_servers: dict[str, str] | None = None,
        worklists: Path | None = None,
    ):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.http_port = free_port()
        self.ae_title = "ORTHANC"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "orthanc.log"
        config: dict[str, Any] = {
            "Name": "central",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "DicomAet": self.ae_title,
            "DicomPort": self.port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": True,
            "StorageCompression": False,
            "OverwriteInstances": True,
            # Orthanc sends storage commitment reports to these, on an association of its own.
            "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
            "Plugins": [str(DICOMWEB_PLUGIN)],
            # Other DICOMweb servers Orthanc can query and retrieve from, as a client.
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "Servers": {name: [url] for name, url in (dicomweb_servers or {}).items()},
            },
        }
        if worklists is not None:  # its worklist plugin serves the .wl files there
            config["Plugins"] = [*config["Plugins"], str(WORKLIST_PLUGIN)]
            config["Worklists"] = {"Enable": True, "Database": str(worklists)}
            config["DicomAlwaysAllowFindWorklist"] = True  # the edge is not in its modalities
            # Its answers are in DefaultEncoding (Latin-1 unless set), which has no
            # Chinese: a RIS for Chinese names answers in UTF-8.
            config["DefaultEncoding"] = "Utf8"
        # Every instance Orthanc stores, re-sent copies included (OverwriteInstances):
        # one line per reception, written by a Lua hook in Orthanc itself.
        self.receptions = workdir / "received.txt"
        if count_receptions:
            script = workdir / "count.lua"
            script.write_text(
                "function OnStoredInstance(instanceId, tags, metadata, origin)\n"
                f"  local out = io.open('{self.receptions}', 'a')\n"
                "  out:write(tags['SOPInstanceUID'] .. '\\n')\n"
                "  out:close()\n"
                "end\n"
            )
            config["LuaScripts"] = [str(script)]
        (workdir / "orthanc.json").write_text(json.dumps(config, indent=1))

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def start(self, timeout: float = 60) -> OrthancProcess:
        command = ["Orthanc", str(self.workdir / "orthanc.json")]
        self.proc = launch(command, self.log_path, self.workdir)
        wait_up(self.proc, lambda: bool(self.get("/system")), timeout, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _request(self, path: str, data: bytes | None = None) -> bytes:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as rsp:
            return bytes(rsp.read())

    def get(self, path: str) -> Any:
        return json.loads(self._request(path))

    def post(self, path: str, body: Any) -> Any:
        return json.loads(self._request(path, json.dumps(body).encode()))

    def count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def sop_instance_uids(self) -> list[str]:
        """Every stored instance's SOP Instance UID, duplicates included if any."""
        uids = []
        for orthanc_id in self.get("/instances"):
            tags = self.get(f"/instances/{orthanc_id}/simplified-tags")
            uids.append(tags["SOPInstanceUID"])
        return uids

    def _instance_id(self, sop_instance_uid: str) -> str | None:
        found = json.loads(self._request("/tools/lookup", sop_instance_uid.encode()))
        return next((item["ID"] for item in found if item["Type"] == "Instance"), None)

    def file(self, sop_instance_uid: str, transcode: str = "") -> bytes | None:
        """The stored file; with `transcode`, as Orthanc re-encodes it in that syntax."""
        orthanc_id = self._instance_id(sop_instance_uid)
        if orthanc_id is None:
            return None
        query = f"?transcode={transcode}" if transcode else ""
        return self._request(f"/instances/{orthanc_id}/file{query}")

    def tags(self, sop_instance_uid: str) -> dict[str, Any] | None:
        orthanc_id = self._instance_id(sop_instance_uid)
        if orthanc_id is None:
            return None
        return dict(self.get(f"/instances/{orthanc_id}/simplified-tags"))

    def wait_for(self, count: int, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        have = -1
        while time.monotonic() < deadline:
            try:
                have = self.count()
            except (OSError, urllib.error.URLError):
                have = -1
            if have >= count:
                return have
            time.sleep(0.2)
        return have
