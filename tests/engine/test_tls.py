"""DICOM TLS on its own port, with DCMTK storescu +tls as the modality.

Certificates come from the openssl command line (a site CA, the node, a modality
and a modality signed by some other CA); client certificates are required, and
CT1's must carry its name.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.corpus import SourceFile, make_series
from tests.support.process import AE_TITLE, EngineProcess, free_port, wait_until


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip


def make_leaf(folder: Path, name: str, common_name: str, ca: str) -> None:
    (folder / f"{name}.ext").write_text(f"subjectAltName=DNS:{common_name},IP:127.0.0.1\n")
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={common_name}",
        cwd=folder,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    folder = tmp_path / "pki"
    folder.mkdir()
    make_ca(folder, "site-ca")
    make_ca(folder, "other-ca")
    make_leaf(folder, "node", "pacs-edge.site1.example", "site-ca")
    make_leaf(folder, "ct1", "ct1.site1.example", "site-ca")
    make_leaf(folder, "rogue", "ct1.site1.example", "other-ca")  # right name, wrong CA
    return folder


def storescu_tls(
    port: int, files: list[SourceFile], calling_ae: str, tls: list[str]
) -> subprocess.CompletedProcess[str]:
    options = [*tls, "-aet", calling_ae, "-aec", AE_TITLE, "-to", "20", "-ta", "20"]
    return subprocess.run(
        ["storescu", *options, "127.0.0.1", str(port), *(str(f.path) for f in files)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], "TCP_NODELAY": "1"},
        check=False,
    )


def test_dicom_tls_with_client_certificates(
    engine_factory: Callable[..., EngineProcess], pki: Path, tmp_path: Path
) -> None:
    tls_port = free_port()
    node = engine_factory(
        {
            "dicom": {
                "tls": {
                    "enabled": True,
                    "port": tls_port,
                    "certificate": str(pki / "node.crt"),
                    "private_key": str(pki / "node.key"),
                    "client_ca": str(pki / "site-ca.crt"),
                    "require_client_certificate": True,
                }
            },
            "calling_ae": [
                {"ae_title": "CT1", "tls_names": ["ct1.site1.example"]},
                {"ae_title": "XR1"},
            ],
        }
    )
    trust = ["+cf", str(pki / "site-ca.crt")]
    files = make_series(tmp_path / "ct", 3)

    # CT1 with its certificate: stored.
    ok = storescu_tls(
        tls_port, files, "CT1", ["+tls", str(pki / "ct1.key"), str(pki / "ct1.crt"), *trust]
    )
    assert ok.returncode == 0, ok.stderr
    assert all(node.instance(f.sop_instance_uid) for f in files)

    more = make_series(tmp_path / "more", 1)
    # A certificate from another CA, and no certificate at all: the handshake fails.
    rogue = storescu_tls(
        tls_port, more, "CT1", ["+tls", str(pki / "rogue.key"), str(pki / "rogue.crt"), *trust]
    )
    assert rogue.returncode != 0
    anonymous = storescu_tls(tls_port, more, "CT1", ["+tla", *trust])
    assert anonymous.returncode != 0
    # CT1 without TLS, on the plain port: refused, calling AE not recognized.
    plain = storescu_tls(node.port, more, "CT1", [])
    assert plain.returncode != 0
    assert "Calling AE Title Not Recognized" in plain.stderr + plain.stdout
    assert node.instance(more[0].sop_instance_uid) is None
    # XR1 needs no certificate name: a site certificate over TLS is enough, and so
    # is the plain port. The node kept serving through the refusals.
    xr = storescu_tls(
        tls_port, more, "XR1", ["+tls", str(pki / "ct1.key"), str(pki / "ct1.crt"), *trust]
    )
    assert xr.returncode == 0, xr.stderr
    assert node.instance(more[0].sop_instance_uid) is not None

    audit = node.data_dir / "audit.jsonl"
    wait_until(lambda: "tls_names" in audit.read_text(), 5, "the audit log")
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    accepted = [e for e in events if e["event"] == "association_accepted"]
    assert accepted[0]["calling_ae"] == "CT1"
    assert accepted[0]["tls_names"] == ["ct1.site1.example"]
    refused = [e for e in events if e["event"] == "association_rejected"]
    assert any("must use DICOM TLS" in e["why"] for e in refused), refused
