"""The site console in Debian's headless chromium (driven by Playwright, never a
downloaded browser): log in, find a study, open it, see where its copy is and what
each destination has, and recall it from a real Orthanc with one click. Screenshots
of the study list and of the study page go to the test output."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from policies.http_access import digest
from tests.engine.test_forward import dicom_destination
from tests.engine.test_lifecycle import orthanc_for, tiers
from tests.engine.test_recall import PURGE_WHEN_COMMITTED, reload_lifecycle
from tests.support.corpus import make_series
from tests.support.dcmtk import storescu
from tests.support.process import EngineProcess, wait_until

SCREENSHOTS = Path(os.environ.get("PACS_EDGE_TEST_OUTPUT", "test-output")) / "console"
STUDY = 6
# Once users exist, loopback is no credential: the test's own API calls carry a token.
TOKEN = "console-test-" + secrets.token_hex(16)


def make_user(name: str, role: str, password: str) -> dict[str, str]:
    """`pacs-edge user`, as an admin runs it: the [[http.user]] entry it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "user", name, "--role", role, "--password-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    entry = dict(re.findall(r'^(\w+) = "([^"]*)"$', done.stdout, re.MULTILINE))
    assert entry["argon2"].startswith("$argon2id$"), done.stdout
    assert password not in done.stdout
    return entry


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is installed by `make test` (system-deps)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def log_in(page: Page, base: str, name: str, password: str) -> None:
    page.goto(f"{base}/")
    assert "/login" in page.url  # users are configured: loopback alone is not enough
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path.resolve()}")


def test_find_a_study_see_where_it_is_and_recall_it(
    engine_factory: Callable[..., EngineProcess], browser: Browser, tmp_path: Path
) -> None:
    token = {"name": "test", "sha256": digest(TOKEN), "role": "admin"}
    users = [make_user("desk", "read", "desk-pass-1"), make_user("admin", "admin", "admin-pass-1")]
    engine = engine_factory(
        {"lifecycle": PURGE_WHEN_COMMITTED, "http": {"user": users, "token": [token]}},
        start=False,
    )
    engine.token = TOKEN
    central = orthanc_for(engine, tmp_path / "orthanc").start()
    try:
        engine.settings["destination"] = [
            dicom_destination(central, commitment=True, commitment_wait=0, recall=True)
        ]
        engine.start()
        base = f"http://127.0.0.1:{engine.http_port}"
        gone = make_series(
            tmp_path / "gone",
            STUDY,
            PatientID="C1",
            PatientName="Chen^Wei",
            StudyDate="20260110",
            AccessionNumber="A-GONE",
        )
        assert storescu(engine.port, [f.path for f in gone]).returncode == 0
        wait_until(lambda: tiers(engine)["central"] == STUDY, 120, "committed and purged")
        reload_lifecycle(engine, {"window": "", "interval": 1.0, "rule": []})  # keep what comes
        here = make_series(
            tmp_path / "here",
            2,
            PatientID="C1",
            PatientName="Chen^Wei",
            StudyDate="20261201",
            AccessionNumber="A-HERE",
        )
        assert storescu(engine.port, [f.path for f in here]).returncode == 0

        # Without a login: the console sends people to it; a wrong password is refused.
        assert httpx.get(f"{base}/", follow_redirects=False).status_code == 303
        page = browser.new_page()
        log_in(page, base, "desk", "wrong")
        assert "Wrong name or password" in page.content()

        # A read-only user finds the studies; the purged one says where it is.
        log_in(page, base, "desk", "desk-pass-1")
        page.fill("input[name=pid]", "C1")
        page.click("form.search button")
        rows = page.locator("#studies tbody tr")
        assert rows.count() == 2
        text = page.inner_text("#studies")
        assert "A-GONE" in text
        assert "A-HERE" in text
        assert "NEARLINE" in text
        assert "ONLINE" in text
        shot(page, "study-list")
        page.click("text=Chen^Wei >> nth=1")  # newest first: the second is the purged one
        assert "only at the center 6" in page.inner_text("#availability")
        assert page.locator("#recall").count() == 0  # a read user cannot recall
        dests = page.inner_text("#destinations")
        assert "central" in dests
        assert "6" in dests
        page.close()

        # An admin recalls it with one click; the page follows it until it is back.
        page = browser.new_page()
        log_in(page, base, "admin", "admin-pass-1")
        page.goto(f"{base}/?accession=A-GONE")
        page.click("#studies a")
        page.click("#recall")
        wait_until(lambda: tiers(engine)["central"] == 0, 120, "the study recalled")
        page.reload()
        assert "hot (on this server's disk) 6" in page.inner_text("#availability")
        assert "done" in page.inner_text("#recall-state")
        images = page.locator(".series img")
        assert images.count() == 1
        page.wait_for_function("document.querySelector('.series img').naturalWidth > 0")
        shot(page, "study-page")
        assert engine.audit("recall_started")[-1]["by"] == "admin"
        assert engine.audit("console_login_failed")[0]["name"] == "desk"
        page.close()
    finally:
        central.stop()


def test_read_only_views_work_without_javascript(
    engine_factory: Callable[..., EngineProcess], browser: Browser, tmp_path: Path
) -> None:
    engine = engine_factory()
    files = make_series(tmp_path / "s", 2, PatientID="NOJS", AccessionNumber="NJ1")
    assert storescu(engine.port, [f.path for f in files]).returncode == 0
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{engine.http_port}/?pid=NOJS")  # loopback, no users: admin
    page.click("#studies a")
    assert "hot (on this server's disk) 2" in page.inner_text("#availability")
    assert page.locator(".series figure").count() == 1
    context.close()
