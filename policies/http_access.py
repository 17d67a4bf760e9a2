"""Who may call the HTTP port (ops API, DICOMweb, console): bearer tokens or console
users with a role, or loopback alone.

Each endpoint needs one of three roles: "open" (health and metrics: load balancers
and Prometheus call them without credentials), "read" (status, queues, instance
records with patient data) or "admin" (everything that changes state). Tokens are
configured as the SHA-256 of the secret (`[[http.token]]`), so the config file
never holds one that works. Console users (`[[http.user]]`) log in with a password
kept as its argon2 hash, and carry a session cookie afterwards (engine.web.sessions).
Without any token or user configured only loopback clients are answered, as admin: a
fresh install is usable on the box and closed to the network.

The decision is a `Caller` (audited by name with its address) or a `Refusal` with
the HTTP status and a reason that says what to do, never a bare bool.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["open", "read", "admin"]
_RANK = {"open": 0, "read": 1, "admin": 2}
_SHA256_HEX = r"^[0-9a-f]{64}$"


class TokenConfig(BaseModel):
    """One `[[http.token]]`: `sha256` is the hex digest of the secret the client sends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")
    sha256: str = Field(pattern=_SHA256_HEX)
    role: Literal["admin", "read"]


class UserConfig(BaseModel):
    """One `[[http.user]]`: a person who logs in to the console."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")
    argon2: str = Field(pattern=r"^\$argon2(id|i|d)\$")
    role: Literal["admin", "read"]


def hash_password(password: str) -> str:
    """The `argon2` value of a `[[http.user]]` (argon2id, the library's defaults)."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def check_password(users: Sequence[UserConfig], name: str, password: str) -> UserConfig | None:
    """The user whose name and password these are. An unknown name costs a hash too,
    so the answer's timing does not tell which names exist."""
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = PasswordHasher()
    user = next((u for u in users if u.name == name), None)
    try:
        hasher.verify(user.argon2 if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


# argon2id of a random password nobody knows: what an unknown name is checked against.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$XaKODuiUqChyoLOKa8RWMw$"
    "nX1et1XRUsD9o9OBHM12+gLNuYCLF/rVfz7E2FkuXak"
)


def outranks(role: Role, needed: Role) -> bool:
    return _RANK[role] >= _RANK[needed]


@dataclass(frozen=True)
class Caller:
    name: str  # the token's name, "loopback", or "anonymous" on open endpoints
    role: Role
    address: str  # the client's IP address

    def audit_fields(self) -> dict[str, str]:
        """What every audited state change records of who asked."""
        return {"by": self.name, "client": self.address}


@dataclass(frozen=True)
class Refusal:
    status: Literal[401, 403]
    reason: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh secret: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def authorize(
    needed: Role,
    authorization: str | None,
    address: str,
    tokens: Sequence[TokenConfig],
    users: bool = False,
) -> Caller | Refusal:
    """`authorization`: the request's Authorization header, if any; `users`: whether
    console users are configured (then loopback is no longer trusted on its own)."""
    if needed == "open":
        return Caller("anonymous", "open", address)
    if not tokens and not users:
        if is_loopback(address):
            return Caller("loopback", "admin", address)
        return Refusal(
            403,
            "no [[http.token]] or [[http.user]] is configured, so this port answers only "
            "loopback clients; add a token (`pacs-edge token NAME --role read|admin`) or a "
            "user (`pacs-edge user NAME --role read|admin`) to call it from elsewhere",
        )
    scheme, _, secret = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return Refusal(401, "this endpoint needs a token: send 'Authorization: Bearer <token>'")
    presented = digest(secret.strip())
    # Every configured hash is compared, in constant time each, whatever matches.
    matched = [t for t in tokens if hmac.compare_digest(presented, t.sha256)]
    if not matched:
        return Refusal(401, "unknown token")
    token = matched[0]
    if not outranks(token.role, needed):
        return Refusal(
            403, f"token {token.name!r} has role {token.role!r}; this endpoint needs {needed!r}"
        )
    return Caller(token.name, token.role, address)
