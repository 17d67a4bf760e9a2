"""The ops API's access decision, case by case (the engine tests try it over HTTP)."""

from __future__ import annotations

import pytest

from policies.http_access import Caller, Refusal, TokenConfig, authorize, digest

READ = TokenConfig(name="dash", sha256=digest("r-secret"), role="read")
ADMIN = TokenConfig(name="ops", sha256=digest("a-secret"), role="admin")


@pytest.mark.parametrize(
    ("needed", "header", "address", "tokens", "expected"),
    [
        ("open", None, "203.0.113.9", [READ], Caller("anonymous", "open", "203.0.113.9")),
        ("admin", None, "127.0.0.1", [], Caller("loopback", "admin", "127.0.0.1")),
        ("admin", None, "::1", [], Caller("loopback", "admin", "::1")),
        ("read", None, "10.1.2.3", [], 403),  # no tokens: the network is refused
        ("read", "Bearer r-secret", "10.1.2.3", [], 403),  # ...whatever it sends
        ("read", None, "127.0.0.1", [READ], 401),  # tokens: loopback needs one too
        ("read", "Basic cjpy", "10.1.2.3", [READ], 401),
        ("read", "Bearer wrong", "10.1.2.3", [READ, ADMIN], 401),
        ("read", "Bearer r-secret", "10.1.2.3", [READ, ADMIN], Caller("dash", "read", "10.1.2.3")),
        ("admin", "Bearer r-secret", "10.1.2.3", [READ, ADMIN], 403),
        (
            "admin",
            "bearer  a-secret ",
            "10.1.2.3",
            [READ, ADMIN],
            Caller("ops", "admin", "10.1.2.3"),
        ),
    ],
)
def test_authorize(
    needed: str, header: str | None, address: str, tokens: list[TokenConfig], expected: object
) -> None:
    decision = authorize(needed, header, address, tokens)  # type: ignore[arg-type]
    if isinstance(expected, int):
        assert isinstance(decision, Refusal)
        assert decision.status == expected
        assert decision.reason
    else:
        assert decision == expected


def test_token_entries_are_validated() -> None:
    from policies.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"http.token.0.sha256"):
        load_config(overrides={"http": {"token": [{"name": "a", "sha256": "x", "role": "read"}]}})
    twice = [{"name": "a", "sha256": digest("s"), "role": "read"}] * 2
    with pytest.raises(ConfigError, match="listed twice"):
        load_config(overrides={"http": {"token": twice}})


def test_console_users_passwords_and_loopback() -> None:
    from policies.config import ConfigError, load_config
    from policies.http_access import UserConfig, check_password, hash_password

    user = UserConfig(name="desk", argon2=hash_password("s3cret"), role="read")
    assert check_password([user], "desk", "s3cret") == user
    assert check_password([user], "desk", "wrong") is None
    assert check_password([user], "nobody", "s3cret") is None
    # Users are credentials too: loopback alone is no longer admitted.
    assert isinstance(authorize("read", None, "127.0.0.1", [], users=True), Refusal)
    assert authorize("read", None, "127.0.0.1", []) == Caller("loopback", "admin", "127.0.0.1")
    with pytest.raises(ConfigError, match=r"http.user.0.argon2"):
        load_config(overrides={"http": {"user": [{"name": "a", "argon2": "x", "role": "read"}]}})
    with pytest.raises(ConfigError, match="HTTPS is enabled but certificate"):
        load_config(overrides={"http": {"tls": {"enabled": True}}})


def test_sessions_expire_and_close() -> None:
    from engine.web.sessions import Sessions

    sessions = Sessions()
    one = sessions.open("desk", hours=1)
    gone = sessions.open("night", hours=1e-9)
    assert sessions.user(one) == "desk"
    assert sessions.user(gone) is None
    sessions.close(one)
    assert sessions.user(one) is None
    assert sessions.user("forged") is None
