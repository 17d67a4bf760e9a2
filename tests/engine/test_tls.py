"""DICOM TLS on its own port, with DCMTK storescu +tls as the modality.

Certificates come from the openssl command line (a site CA, the node, a modality
and a modality signed by some other CA); client certificates are required, and
CT1's must carry its name.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.balancer import Node
from bench.peers import free_port
from tests.support.corpus import SourceFile, make_series
from tests.support.haproxy import SOURCE, HAProxyProcess
from tests.support.process import AE_TITLE, EngineProcess, wait_until


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


def tls_settings(pki: Path, port: int) -> dict[str, object]:
    return {
        "enabled": True,
        "port": port,
        "certificate": str(pki / "node.crt"),
        "private_key": str(pki / "node.key"),
        "client_ca": str(pki / "site-ca.crt"),
        "require_client_certificate": True,
    }


def test_dicom_tls_with_client_certificates(
    engine_factory: Callable[..., EngineProcess], pki: Path, tmp_path: Path
) -> None:
    tls_port = free_port()
    node = engine_factory(
        {
            "dicom": {"tls": tls_settings(pki, tls_port)},
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
    # The audit log reaches its file twice a second: wait for every line asserted on.
    wait_until(
        lambda: all(s in audit.read_text() for s in ("tls_names", "must use DICOM TLS")),
        5,
        "the audit log",
    )
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    accepted = [e for e in events if e["event"] == "association_accepted"]
    assert accepted[0]["calling_ae"] == "CT1"
    assert accepted[0]["tls_names"] == ["ct1.site1.example"]
    refused = [e for e in events if e["event"] == "association_rejected"]
    assert any("must use DICOM TLS" in e["why"] for e in refused), refused


def test_dicom_tls_through_haproxy_sees_the_modality(
    engine_factory: Callable[..., EngineProcess], pki: Path, tmp_path: Path
) -> None:
    """HAProxy passes TLS through with a PROXY v2 header in front of the handshake:
    the node reads the header in clear, then TLS, and knows the real client."""
    node = engine_factory(
        {
            "node": {"workers": 2},
            "dicom": {"tls": tls_settings(pki, free_port()), "trusted_proxies": [f"{SOURCE}/32"]},
            "calling_ae": [{"ae_title": "CT1", "tls_names": ["ct1.site1.example"]}],
        }
    )
    folder = tmp_path / "haproxy"
    folder.mkdir()
    tls_port = node.settings["dicom"]["tls"]["port"]
    haproxy = HAProxyProcess(
        folder, free_port(), [Node("edge1", node.port, node.http_port, tls_port)]
    ).start()
    try:
        wait_until(lambda: haproxy.state("edge1", "pacs_edge_tls") == "UP", 15, "HAProxy")
        files = make_series(tmp_path / "ct", 2)
        client = [
            "+tls",
            str(pki / "ct1.key"),
            str(pki / "ct1.crt"),
            "+cf",
            str(pki / "site-ca.crt"),
        ]
        stored = storescu_tls(haproxy.tls_port, files, "CT1", client)
        assert stored.returncode == 0, stored.stderr
        assert all(node.instance(f.sop_instance_uid) for f in files)
        # Straight to the node, a PROXY header from an untrusted address: closed.
        with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as sock:
            sock.sendall(b"PROXY TCP4 10.9.9.9 127.0.0.1 1 2\r\n")
            with contextlib.suppress(ConnectionResetError):  # closed with the header unread
                assert sock.recv(1) == b""
    finally:
        haproxy.close()
    assert node.stop() == 0
    events = [json.loads(line) for line in (node.data_dir / "audit.jsonl").read_text().splitlines()]
    accepted = [e for e in events if e["event"] == "association_accepted"]
    assert len(accepted) == 1
    assert accepted[0]["peer"].startswith("127.0.0.1:")
    assert accepted[0]["via"].startswith(f"{SOURCE}:")
    assert accepted[0]["tls_names"] == ["ct1.site1.example"]
    assert any(e["event"] == "proxy_header_refused" for e in events)
