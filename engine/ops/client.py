"""A client of a running engine's ops HTTP API: the CLI's, the tests' and the bench's.

One httpx client with the token, if any, in every request. `call` returns the status
and the JSON answer whatever the status; `json` raises `ApiError` with a sentence for
the admin on anything but 2xx.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

TOKEN_VARIABLE = "PACS_EDGE_TOKEN"


class ApiError(Exception):
    """The engine could not be asked, or said no; the message is for the admin."""


class Unreachable(ApiError, ConnectionError):
    """Nothing answered at the URL (not started yet, or not running)."""


def token_from(token_file: Path | None) -> str | None:
    """The token in `token_file`, else in $PACS_EDGE_TOKEN, else none."""
    if token_file is not None:
        try:
            return token_file.read_text().strip() or None
        except OSError as exc:
            raise ApiError(f"cannot read --token-file {token_file}: {exc}") from exc
    return os.environ.get(TOKEN_VARIABLE) or None


class OpsClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self._token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _request(self, path: str, method: str = "GET") -> httpx.Response:
        try:
            return self._http.request(method, path)
        except httpx.HTTPError as exc:
            raise Unreachable(
                f"cannot reach {self.url}{path}: {exc}; is `pacs-edge serve` running?"
            ) from exc

    def call(self, path: str, method: str = "GET") -> tuple[int, Any]:
        """Status and JSON body (the error document too); text when it is not JSON."""
        response = self._request(path, method)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    def json(self, path: str, method: str = "GET") -> Any:
        code, body = self.call(path, method)
        if 200 <= code < 300:
            return body
        reason = body.get("error", body) if isinstance(body, dict) else body
        hint = ""
        if code in (401, 403) and self._token is None:
            hint = f" (no token sent: set {TOKEN_VARIABLE} or --token-file)"
        raise ApiError(f"{method} {self.url}{path}: {code}: {reason}{hint}")

    def text(self, path: str) -> str:
        return self._request(path).text

    def close(self) -> None:
        self._http.close()
