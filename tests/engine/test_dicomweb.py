"""DICOMweb against a real engine: QIDO-RS, WADO-RS, WADO-URI and STOW-RS with
httpx as the client, and Orthanc's DICOMweb plugin as a viewer-side client would
use them. Retrieved objects are compared byte for byte with what was stored."""

from __future__ import annotations

import io
import socket
import ssl
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from tests.support.corpus import SourceFile, describe, make_large, make_series
from tests.support.dcmtk import storescu
from tests.support.orthanc import OrthancProcess
from tests.support.process import EngineProcess, launch, wait_until, wait_up, write_toml

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


def parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """A multipart/related body as (headers, bytes) per part, by the stdlib's parser."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + response.content)
    return [(dict(part.items()), part.get_payload(decode=True)) for part in message.iter_parts()]


def stow_body(files: list[bytes], content_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
            for data in files
        )
        + f"--{boundary}--\r\n".encode()
    )
    return body, f"{DICOM_MULTIPART}; boundary={boundary}"


def audit(engine: EngineProcess, event: str) -> list[dict[str, Any]]:
    return engine.audit(event)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EngineProcess, dict[str, Any]]]:
    """One engine with a CT study (C-STORE), an MR study with a Chinese name and a
    JPEG 2000 object (both by STOW-RS)."""
    tmp = tmp_path_factory.mktemp("web")
    engine = EngineProcess(tmp).start()
    ct = make_series(
        tmp / "ct",
        3,
        PatientID="P1",
        PatientName="Doe^Jane",
        StudyDate="20240105",
        AccessionNumber="ACC1",
    )
    assert storescu(engine.port, [f.path for f in ct]).returncode == 0
    mr = make_series(
        tmp / "mr",
        2,
        "MR_small.dcm",
        PatientID="P2",
        PatientName="Wang^Fang=王^芳",
        SpecificCharacterSet="ISO_IR 192",
        StudyDate="20240320",
        AccessionNumber="ACC2",
    )
    j2k = describe(Path(get_testdata_file("JPEG2000.dcm")))
    assert isinstance(j2k, SourceFile)
    body, content_type = stow_body([f.path.read_bytes() for f in [*mr, j2k]])
    url = f"http://127.0.0.1:{engine.http_port}/dicom-web"
    with httpx.Client(base_url=url, timeout=30) as client:
        stored = client.post("/studies", content=body, headers={"Content-Type": content_type})
        assert stored.status_code == 200, stored.text
        try:
            yield engine, {"ct": ct, "mr": mr, "j2k": j2k, "client": client}
        finally:
            engine.close()


def test_stow_rs_stores_like_c_store_and_answers_per_instance(
    web: tuple[EngineProcess, dict[str, Any]],
) -> None:
    engine, data = web
    for source in [*data["mr"], data["j2k"]]:
        record = engine.instance(source.sop_instance_uid)
        assert record is not None, source.sop_instance_uid
        assert record["calling_ae"] == "STOW-RS"
        # The dataset as sent, under our own meta: the same hash C-STORE would give.
        assert record["hash"] == source.blake3
        stored = engine.object_path(record["hash"]).read_bytes()
        assert stored[record["meta_length"] :] == source.dataset_bytes
    client: httpx.Client = data["client"]
    # Not DICOM, a part of another type, and an empty request: nothing stored, reasons given.
    body, content_type = stow_body([b"not a DICOM file at all" * 10])
    answer = client.post("/studies", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 409
    failed = answer.json()["00081198"]["Value"]
    assert failed[0]["00081197"]["Value"] == [0xC000]
    answer = client.post("/studies", content=b"{}", headers={"Content-Type": "application/json"})
    assert answer.status_code == 415
    assert "multipart/related" in answer.json()["error"]
    # One good and one bad part: 202, the good one stored and referenced.
    fresh = make_series(engine.workdir / "stow2", 1)
    body, content_type = stow_body([fresh[0].path.read_bytes(), b"\x00" * 200])
    answer = client.post("/studies", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 202, answer.text
    referenced = answer.json()["00081199"]["Value"]
    assert referenced[0]["00081155"]["Value"] == [fresh[0].sop_instance_uid]
    assert engine.instance(fresh[0].sop_instance_uid) is not None
    # A body that breaks multipart framing: 400 with the reason, what was stored listed.
    good = make_series(engine.workdir / "stow4", 1)[0]
    body, content_type = stow_body([good.path.read_bytes(), b"never read"])
    second = body.index(b"Content-Type", body.index(b"\r\n--") + 4)
    broken = body[:second] + b"Content-Type application/dicom" + body[second + 13 :]
    answer = client.post("/studies", content=broken, headers={"Content-Type": content_type})
    assert answer.status_code == 400, answer.text
    assert "malformed multipart body" in answer.json()["error"]
    assert answer.json()["stored"] == [good.sop_instance_uid]
    assert engine.instance(good.sop_instance_uid) is not None
    # A study path that the instance does not belong to: reported failed (0xA900).
    other = make_series(engine.workdir / "stow3", 1)
    body, content_type = stow_body([other[0].path.read_bytes()])
    answer = client.post("/studies/1.2.3.4", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 409
    assert answer.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]


def test_qido_rs_searches_every_level_with_availability(
    web: tuple[EngineProcess, dict[str, Any]],
) -> None:
    engine, data = web
    client: httpx.Client = data["client"]
    ct_study = pydicom.dcmread(data["ct"][0].path).StudyInstanceUID
    found = client.get("/studies", params={"PatientID": "P1"})
    assert found.status_code == 200
    assert found.headers["content-type"].startswith("application/dicom+json")
    (study,) = found.json()
    assert study["0020000D"]["Value"] == [ct_study]
    assert study["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    assert study["00080056"]["Value"] == ["ONLINE"]
    assert study["00201208"]["Value"] == [3]  # NumberOfStudyRelatedInstances, a number
    assert study["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{ct_study}")
    # By tag, by name prefix (case-insensitive), by date range; the Chinese name kept.
    assert len(client.get("/studies", params={"00100020": "P2"}).json()) == 1
    wang = client.get("/studies", params={"PatientName": "wang*"}).json()
    assert wang[0]["00100010"]["Value"] == [{"Alphabetic": "Wang^Fang", "Ideographic": "王^芳"}]
    in_range = client.get("/studies", params={"StudyDate": "20240101-20240131"}).json()
    assert [s["0020000D"]["Value"][0] for s in in_range] == [ct_study]
    # Series and instances, under a study and without one (relational).
    series = client.get(f"/studies/{ct_study}/series").json()
    assert len(series) == 1
    assert series[0]["00080060"]["Value"] == ["CT"]
    assert len(client.get("/series", params={"Modality": "MR"}).json()) == 1
    instances = client.get("/instances", params={"PatientID": "P1"}).json()
    assert sorted(i["00080018"]["Value"][0] for i in instances) == sorted(
        f.sop_instance_uid for f in data["ct"]
    )
    # includefield, limit and offset; a truncated page says there is more.
    page = client.get("/instances", params={"PatientID": "P1", "limit": 1, "offset": 1})
    assert len(page.json()) == 1
    assert "additional results" in page.headers["warning"]
    last = client.get("/instances", params={"PatientID": "P1", "limit": 2, "offset": 1})
    assert len(last.json()) == 2
    assert "warning" not in last.headers
    included = client.get("/studies", params={"PatientID": "P1", "includefield": "00100040"})
    assert "00100040" in included.json()[0]
    # Bad input: a JSON reason, nothing else disturbed.
    for params, word in (
        ({"NoSuchKey": "1"}, "unknown query parameter"),
        ({"StudyDate": "2024-01-01"}, "StudyDate"),
        ({"limit": "-3"}, "limit"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
    ):
        answer = client.get("/studies", params=params)
        assert answer.status_code == 400, params
        assert word in answer.json()["error"], params
    assert client.get("/studies", params={"PatientID": "P1"}).status_code == 200
    assert audit(engine, "http_query")[-1]["by"] == "loopback"


def test_wado_rs_returns_the_stored_bytes_or_decoded_pixels(
    web: tuple[EngineProcess, dict[str, Any]],
) -> None:
    engine, data = web
    client: httpx.Client = data["client"]
    ct_study = pydicom.dcmread(data["ct"][0].path).StudyInstanceUID
    answer = client.get(f"/studies/{ct_study}", headers={"Accept": f"{DICOM_MULTIPART}"})
    assert answer.status_code == 200
    got = parts(answer)
    assert len(got) == 3
    for headers, body in got:
        uid = headers["Content-Location"]
        record = engine.instance(uid)
        assert record is not None
        assert body == engine.object_path(record["hash"]).read_bytes()  # byte-identical
    # A CT slice asked for in JPEG-LS lossless: encoded (and verified) by core_rs.
    ct: SourceFile = data["ct"][0]
    ct_ds = pydicom.dcmread(ct.path)
    jpeg_ls = "1.2.840.10008.1.2.4.80"
    ((headers, body),) = parts(
        client.get(
            f"/studies/{ct_study}/series/{ct_ds.SeriesInstanceUID}/instances/{ct.sop_instance_uid}",
            headers={"Accept": f"{DICOM_MULTIPART}; transfer-syntax={jpeg_ls}"},
        )
    )
    assert f"transfer-syntax={jpeg_ls}" in headers["Content-Type"].replace('"', "")
    encoded = pydicom.dcmread(io.BytesIO(body))
    assert encoded.file_meta.TransferSyntaxUID == jpeg_ls
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(encoded.pixel_array, ct_ds.pixel_array)
    # The JPEG 2000 object asked for uncompressed: decoded by core_rs, same pixels.
    j2k: SourceFile = data["j2k"]
    source = pydicom.dcmread(j2k.path)
    path = (
        f"/studies/{source.StudyInstanceUID}/series/{source.SeriesInstanceUID}"
        f"/instances/{j2k.sop_instance_uid}"
    )
    accept = f"{DICOM_MULTIPART}; transfer-syntax={EXPLICIT_LE}"
    ((headers, body),) = parts(client.get(path, headers={"Accept": accept}))
    assert f"transfer-syntax={EXPLICIT_LE}" in headers["Content-Type"].replace('"', "")
    decoded = pydicom.dcmread(io.BytesIO(body))
    assert decoded.file_meta.TransferSyntaxUID == EXPLICIT_LE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(decoded.pixel_array, source.pixel_array)
    # Metadata, with Pixel Data as bulk data that can be fetched.
    (meta,) = client.get(f"{path}/metadata").json()
    assert meta["00080018"]["Value"] == [j2k.sop_instance_uid]
    bulk = client.get(meta["7FE00010"]["BulkDataURI"])
    assert bulk.status_code == 200
    assert parts(bulk)[0][1] == source.PixelData
    # Frames come uncompressed.
    ((_, frame),) = parts(client.get(f"{path}/frames/1"))
    assert frame == decoded.PixelData
    # Asking for what cannot be made, or what is not there.
    assert client.get(path, headers={"Accept": "application/zip"}).status_code == 406
    assert client.get(f"{path}/frames/9").status_code == 404
    assert client.get(f"{path}/frames/x").status_code == 400
    assert client.get(f"/studies/{ct_study}/series/1.2.3").status_code == 404
    assert audit(engine, "http_retrieve")[-1]["study_instance_uid"] == source.StudyInstanceUID


def test_rendered_thumbnail_and_wado_uri_pictures(
    web: tuple[EngineProcess, dict[str, Any]],
) -> None:
    engine, data = web
    client: httpx.Client = data["client"]
    ct: SourceFile = data["ct"][0]
    ds = pydicom.dcmread(ct.path)
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ct.sop_instance_uid}"
    )
    rendered = client.get(f"{path}/rendered", params={"window": "40,400"})
    assert rendered.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(rendered.content))
    assert picture.size == (ds.Columns, ds.Rows)
    assert picture.mode == "L"
    assert len(np.unique(np.asarray(picture))) > 16  # an image, not a flat field
    png = client.get(f"{path}/rendered", headers={"Accept": "image/png"})
    assert Image.open(io.BytesIO(png.content)).format == "PNG"
    thumb = Image.open(io.BytesIO(client.get(f"/studies/{ds.StudyInstanceUID}/thumbnail").content))
    assert max(thumb.size) <= 128
    assert client.get(f"{path}/rendered", params={"window": "wide"}).status_code == 400
    wado = f"http://127.0.0.1:{engine.http_port}/wado"
    uids = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ct.sop_instance_uid,
    }
    uri = httpx.get(wado, params={**uids, "contentType": "application/dicom"})
    record = engine.instance(ct.sop_instance_uid)
    assert record is not None
    assert uri.content == engine.object_path(record["hash"]).read_bytes()
    jpeg = httpx.get(wado, params=uids)  # image/jpeg: WADO-URI's default
    assert Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    missing = httpx.get(wado, params={"requestType": "WADO"})
    assert missing.status_code == 400
    assert "studyUID" in missing.json()["error"]


def test_a_client_that_stops_reading_blocks_nobody(
    web: tuple[EngineProcess, dict[str, Any]],
) -> None:
    engine, data = web
    big = make_large(engine.workdir / "big.dcm", 64)
    body, content_type = stow_body([big.path.read_bytes()])
    client: httpx.Client = data["client"]
    assert (
        client.post("/studies", content=body, headers={"Content-Type": content_type}).status_code
        == 200
    )
    study = pydicom.dcmread(big.path, stop_before_pixels=True).StudyInstanceUID
    stalled = socket.create_connection(("127.0.0.1", engine.http_port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(f"GET /dicom-web/studies/{study} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        assert stalled.recv(100).startswith(b"HTTP/1.1 200")  # and then reads no more
        started = time.monotonic()
        for _ in range(20):
            assert client.get("/studies", params={"PatientID": "P1"}).status_code == 200
        assert time.monotonic() - started < 30  # bounded: never waits on the stalled reader
    finally:
        stalled.close()
    assert engine.get("/readyz")[0] == 200


def test_tokens_and_roles_guard_dicomweb(tmp_path: Path) -> None:
    from policies.http_access import digest

    read, admin = "r-" + uuid.uuid4().hex, "a-" + uuid.uuid4().hex
    tokens = [
        {"name": "viewer", "sha256": digest(read), "role": "read"},
        {"name": "router", "sha256": digest(admin), "role": "admin"},
    ]
    engine = EngineProcess(tmp_path, {"http": {"token": tokens}}).start()
    try:
        base = f"http://127.0.0.1:{engine.http_port}/dicom-web"
        assert httpx.get(f"{base}/studies").status_code == 401
        assert (
            httpx.get(f"{base}/studies", headers={"Authorization": f"Bearer {read}"}).status_code
            == 200
        )
        body, content_type = stow_body([make_series(tmp_path / "s", 1)[0].path.read_bytes()])
        as_reader = {"Authorization": f"Bearer {read}", "Content-Type": content_type}
        assert httpx.post(f"{base}/studies", content=body, headers=as_reader).status_code == 403
        as_admin = {"Authorization": f"Bearer {admin}", "Content-Type": content_type}
        assert httpx.post(f"{base}/studies", content=body, headers=as_admin).status_code == 200
        refused = audit(engine, "http_refused")
        assert {e["path"] for e in refused} == {"/dicom-web/studies"}
        assert audit(engine, "instance_stored")[-1]["calling_ae"] == "STOW-RS"
    finally:
        engine.close()


def test_https_on_the_http_port(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls = {"enabled": True, "certificate": str(cert), "private_key": str(key)}
    engine = EngineProcess(tmp_path, {"http": {"tls": tls}})
    # EngineProcess.start waits on plain HTTP; this one answers HTTPS only.
    write_toml(engine.config_path, engine.settings)
    engine.proc = launch(
        [sys.executable, "-m", "engine.cli", "serve", "--config", str(engine.config_path)],
        engine.log_path,
        engine.workdir,
    )
    url = f"https://127.0.0.1:{engine.http_port}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{url}/readyz", verify=trust).status_code == 200
            except httpx.HTTPError:
                return False

        wait_up(engine.proc, up, 30, engine.log)
        assert httpx.get(f"{url}/dicom-web/studies", verify=trust).json() == []
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{engine.http_port}/readyz", timeout=5)
    finally:
        engine.close()


def test_orthanc_dicomweb_plugin_queries_and_retrieves_from_the_edge(
    web: tuple[EngineProcess, dict[str, Any]], tmp_path: Path
) -> None:
    engine, data = web
    orthanc = OrthancProcess(
        tmp_path / "orthanc",
        dicomweb_servers={"edge": f"http://127.0.0.1:{engine.http_port}/dicom-web/"},
    ).start()
    try:
        found = orthanc.post(
            "/dicom-web/servers/edge/qido", {"Uri": "/studies", "Arguments": {"PatientID": "P1"}}
        )
        (study,) = found
        uid = study["0020000D"]["Value"]  # Orthanc's own rendering of the answer: a string
        assert study["00080056"]["Value"] == "ONLINE"
        orthanc.post("/dicom-web/servers/edge/retrieve", {"Resources": [{"Study": uid}]})
        wait_until(lambda: orthanc.count() >= 3, 60, "Orthanc retrieved the study over WADO-RS")
        for source in data["ct"]:
            record = engine.instance(source.sop_instance_uid)
            assert record is not None
            # Orthanc keeps what it received: the edge's stored file, byte for byte.
            assert (
                orthanc.file(source.sop_instance_uid)
                == engine.object_path(record["hash"]).read_bytes()
            )
    finally:
        orthanc.stop()
