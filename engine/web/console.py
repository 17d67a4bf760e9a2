"""The site console at /: find a study, see where its copy is and whether each
destination has it, recall it from the center, watch the queues and alerts.

Server-rendered (Jinja2, autoescaped) and usable with JavaScript off; the only
state change, a recall, is a plain form POST. People log in with a `[[http.user]]`
name and password and carry a session cookie (HttpOnly, SameSite=Strict, Secure on
HTTPS); a token or loopback (when nothing is configured) works as for the API.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from engine.forward.recall import Recaller
from engine.ops import status
from engine.web.gate import Gate
from engine.web.sessions import COOKIE
from policies.http_access import Caller, Role, check_password
from storage.query import Query, QueryError, availability, instances, search

_STUDY_KEYS = (
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
_SERIES_KEYS = ("SeriesNumber", "Modality", "SeriesDescription", "NumberOfSeriesRelatedInstances")
_LIST_LIMIT = 200
_STALE_QUEUE = 3600.0  # a destination whose oldest job waited this long is an alert
_STALE_WORKLIST = 600.0  # as the PacsEdgeWorklistStale alert


def _templates() -> Environment:
    folder = Path(str(resources.files("engine.web") / "templates"))
    return Environment(
        loader=FileSystemLoader(folder), autoescape=select_autoescape(), auto_reload=False
    )


class Console:
    def __init__(self, node: status.Node, gate: Gate, recaller: Recaller) -> None:
        self._node = node
        self._shared = node.shared
        self._gate = gate
        self._recaller = recaller
        self._env = _templates()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self._home, methods=["GET", "HEAD"]),
            Route("/console/studies/{study}", self._study, methods=["GET", "HEAD"]),
            Route("/console/studies/{study}/recall", self._recall, methods=["POST"]),
            Route("/login", self._login_page, methods=["GET", "HEAD"]),
            Route("/login", self._login, methods=["POST"]),
            Route("/logout", self._logout, methods=["POST"]),
        ]

    # ---- pages ----------------------------------------------------------------------

    def _page(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("site", self._shared.config.node.site)
        context.setdefault("ae_title", self._shared.config.node.ae_title)
        html = self._env.get_template(name).render(**context)
        return HTMLResponse(html, status_code)

    def _allowed(self, request: Request, needed: Role) -> Caller | Response:
        caller = self._gate.check(request, needed)
        if isinstance(caller, Caller):
            return caller
        if caller.status == 401 or (
            self._shared.config.http.user and COOKIE not in request.cookies
        ):
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else "")
            )
            return RedirectResponse(f"/login?next={target}", 303)
        return self._page("refused.html", caller.status, reason=caller.reason, caller=None)

    async def _home(self, request: Request) -> Response:
        caller = self._allowed(request, "read")
        if not isinstance(caller, Caller):
            return caller
        form = {
            k: request.query_params.get(k, "").strip()
            for k in ("pid", "name", "date", "modality", "accession")
        }
        studies: list[dict[str, Any]] = []
        error = ""
        if any(form.values()):
            try:
                studies = await asyncio.to_thread(self._studies, form)
            except QueryError as exc:
                error = str(exc)
            self._shared.audit.write(
                "console_query",
                by=caller.name,
                client=caller.address,
                matches=len(studies),
                **(
                    {"keys": {k: v for k, v in form.items() if v}}
                    if self._shared.config.audit.patient_identifiers
                    else {}
                ),
            )
        return self._page(
            "home.html",
            caller=caller,
            form=form,
            studies=studies,
            searched=any(form.values()),
            error=error,
            limit=_LIST_LIMIT,
            queues=self._node.forwarder.status(),
            alerts=self._alerts(),
        )

    def _studies(self, form: dict[str, str]) -> list[dict[str, Any]]:
        keys = dict.fromkeys(_STUDY_KEYS, "")
        if form["pid"]:
            keys["PatientID"] = form["pid"]
        if form["name"]:
            name = form["name"]
            keys["PatientName"] = name if "*" in name or "?" in name else f"{name}*"
        if form["date"]:
            keys["StudyDate"] = form["date"].replace("/", "").replace(" ", "")
        if form["modality"]:
            keys["ModalitiesInStudy"] = form["modality"].upper()
        if form["accession"]:
            keys["AccessionNumber"] = form["accession"]
        recallable = self._recaller.available
        found = []
        for answer in search(self._shared.index, Query("STUDY", keys)):
            tiers = answer.pop("_tiers", {})
            answer["tiers"] = tiers
            answer["availability"] = availability(tiers, recallable)
            found.append(answer)
            if len(found) >= _LIST_LIMIT:
                break
        found.sort(key=lambda a: (a["StudyDate"], a["StudyTime"]), reverse=True)
        return found

    async def _study(self, request: Request) -> Response:
        caller = self._allowed(request, "read")
        if not isinstance(caller, Caller):
            return caller
        uid = request.path_params["study"]
        found = await asyncio.to_thread(self._study_facts, uid)
        if found is None:
            return self._page(
                "refused.html", 404, reason=f"no study {uid} on this node", caller=caller
            )
        study, series, destinations = found
        self._shared.audit.write(
            "console_study",
            by=caller.name,
            client=caller.address,
            study_instance_uid=uid,
            **self._shared.audit.patient(
                study.get("patient_id", ""), study.get("patient_name", "")
            ),
        )
        recall = self._recaller.progress(uid)
        return self._page(
            "study.html",
            caller=caller,
            uid=uid,
            study=study,
            series=series,
            destinations=destinations,
            recall=recall,
            recall_running=recall is not None and recall.state == "running",
            can_recall=self._recaller.available and caller.role == "admin",
            availability=availability(study.get("tiers", {}), self._recaller.available),
        )

    def _study_facts(
        self, uid: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, dict[str, int]]] | None:
        index = self._shared.index
        study = index.study(uid)
        if study is None:
            return None
        keys = {"StudyInstanceUID": uid, "SeriesInstanceUID": "", **dict.fromkeys(_SERIES_KEYS, "")}
        series = []
        for answer in search(index, Query("SERIES", keys)):
            answer["tiers"] = answer.pop("_tiers", {})
            series.append(answer)
        series.sort(key=lambda s: int(s["SeriesNumber"]) if s["SeriesNumber"].isdigit() else 0)
        destinations: dict[str, dict[str, int]] = {}
        for record in instances(index, Query("STUDY", {"StudyInstanceUID": uid})):
            sop = record.sop_instance_uid
            for dest in record.destinations:
                counts = destinations.setdefault(dest, {"committed": 0, "sent": 0, "pending": 0})
                delivery = index.queues.delivery(dest, sop)
                state = delivery.get("state", "") if delivery else ""
                counts[state if state in ("committed", "sent") else "pending"] += 1
        return study, series, destinations

    async def _recall(self, request: Request) -> Response:
        caller = self._allowed(request, "admin")
        if not isinstance(caller, Caller):
            return caller
        uid = request.path_params["study"]
        if self._shared.index.study(uid) is None:
            return self._page(
                "refused.html", 404, reason=f"no study {uid} on this node", caller=caller
            )
        code, body = self._recaller.start(uid, caller)
        if code >= 400:
            return self._page("refused.html", code, reason=body.get("error", ""), caller=caller)
        return RedirectResponse(f"/console/studies/{quote(uid)}", 303)

    def _alerts(self) -> list[str]:
        alerts = []
        full = self._shared.layout.disk_full(self._shared.config.storage.disk_high_watermark)
        if full:
            alerts.append(f"Disk: {full}. New studies are refused.")
        for name, queue in self._node.forwarder.status().items():
            if queue["circuit"] != "closed":
                alerts.append(
                    f"{name} is not reachable ({queue['last_error'] or 'circuit open'}); "
                    f"{queue['depth']} objects wait and will go when it is back."
                )
            if queue["dead"]:
                alerts.append(
                    f"{name}: {queue['dead']} objects could not be delivered (dead letters)."
                )
            if queue["oldest_age_seconds"] > _STALE_QUEUE:
                alerts.append(
                    f"{name}: the oldest object has waited "
                    f"{queue['oldest_age_seconds'] / 3600:.1f} h."
                )
        if self._node.worklist is not None:
            for name, age in self._node.worklist.ages().items():
                error = self._shared.index.worklist.state(name).error
                if age is None or age > _STALE_WORKLIST or error:
                    when = "never" if age is None else f"{age / 60:.0f} min ago"
                    alerts.append(
                        f"Worklist {name}: the RIS cannot be asked ({error or 'no poll yet'}); "
                        f"modalities get the edge's copy from {when}, without newer exams."
                    )
        return alerts

    # ---- login ------------------------------------------------------------------------

    async def _login_page(self, request: Request) -> Response:
        return self._page(
            "login.html", next=request.query_params.get("next", "/"), error="", caller=None
        )

    async def _login(self, request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=4)
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        target = str(form.get("next", "/"))
        if not target.startswith("/") or target.startswith("//"):
            target = "/"  # never an open redirect
        address = request.client.host if request.client else ""
        http = self._shared.config.http
        user = await asyncio.to_thread(check_password, http.user, name, password)
        if user is None:
            self._shared.audit.write("console_login_failed", name=name[:64], client=address)
            return self._page(
                "login.html", 401, next=target, error="Wrong name or password.", caller=None
            )
        session_id = self._gate.sessions.open(user.name, http.session_hours)
        self._shared.audit.write("console_login", by=user.name, client=address)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=int(http.session_hours * 3600),
            httponly=True,
            samesite="strict",
            secure=http.tls.enabled,
        )
        return response

    async def _logout(self, request: Request) -> Response:
        session_id = request.cookies.get(COOKIE)
        if session_id:
            self._gate.sessions.close(session_id)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE)
        return response
