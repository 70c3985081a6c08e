"""Roles in the token file, one identification for API and custom routes, thread ids a client may name (issue 21)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from langgraph_sdk import Auth

from memalign_graph import auth as auth_module
from memalign_graph.auth import (
    DEFAULT_ROLES,
    ROLES,
    ServedUser,
    authenticate,
    create_thread,
    has_role,
    identify,
    in_id_space,
    load_tokens,
    may_use,
    thread_id,
)

REMOTE = {"client": ("10.1.2.3", 5000), "server": ("10.1.2.1", 2024), "headers": []}
LOOPBACK = {"client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 2024), "headers": []}


@pytest.fixture
def tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "sha256:" + hashlib.sha256(b"tok-alice").hexdigest(): {
                    "user": "alice",
                    "judges": ["sql"],
                    "roles": ["reviewer", "approver", "admin"],
                },
                "tok-bob": {"user": "bob", "judges": ["tone"]},
                "tok-carol": {"user": "carol", "judges": ["*"], "roles": []},
            }
        )
    )
    monkeypatch.setenv("MEMALIGN_AUTH_TOKENS", str(path))
    return path


async def test_roles_reach_the_authenticated_user(tokens: Path) -> None:
    alice = await authenticate("Bearer tok-alice", REMOTE)
    assert alice["permissions"] == ["judge:sql", "role:reviewer", "role:approver", "role:admin"]
    assert (await authenticate("Bearer tok-bob", REMOTE))["permissions"] == ["judge:tone", "role:reviewer"]
    assert (await authenticate("Bearer tok-carol", REMOTE))["permissions"] == ["judge:*"]


def test_identify_gives_the_same_user_outside_a_handler(tokens: Path) -> None:
    assert identify("Bearer tok-alice", REMOTE) == ServedUser("alice", ("sql",), ("reviewer", "approver", "admin"))
    bob = identify("bearer tok-bob", REMOTE)
    assert bob == ServedUser("bob", ("tone",), DEFAULT_ROLES)
    assert may_use(bob, "tone") and not may_use(bob, "sql")
    assert has_role(bob, "reviewer") and not has_role(bob, "approver") and not has_role(bob, "admin")
    carol = identify("Bearer tok-carol", REMOTE)
    assert may_use(carol, "anything") and not any(has_role(carol, r) for r in ROLES)
    for header in (None, "", "Bearer tok-dave", "Basic tok-alice"):
        with pytest.raises(Auth.exceptions.HTTPException) as raised:
            identify(header, LOOPBACK)
        assert raised.value.status_code == 401


def test_the_helpers_read_an_auth_handlers_context_too(tokens: Path) -> None:
    user = identify("Bearer tok-alice", REMOTE)
    ctx = Auth.types.AuthContext(
        permissions=user.permissions,
        user=SimpleNamespace(identity=user.identity),  # type: ignore[arg-type]
        resource="threads",
        action="create_run",
    )
    assert may_use(ctx, "sql") and not may_use(ctx, "tone") and has_role(ctx, "approver")
    with pytest.raises(ValueError, match="'aprover' is not a role; roles are reviewer, approver, admin"):
        has_role(ctx, "aprover")


def test_without_a_token_file_the_local_user_has_every_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMALIGN_AUTH_TOKENS", raising=False)
    assert identify(None, LOOPBACK) == ServedUser("local", ("*",), ROLES)
    with pytest.raises(Auth.exceptions.HTTPException) as raised:
        identify(None, REMOTE)
    assert raised.value.status_code == 401


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ("approver", r"entry 2 \(user 'bob'\) needs 'roles', a list of reviewer, approver, admin"),
        (["reviewer", 3], r"entry 2 \(user 'bob'\) needs 'roles'"),
        (["reviewer", "aprover"], r"entry 2 \(user 'bob'\) has unknown role 'aprover'; roles are reviewer"),
        ([None], r"entry 2 \(user 'bob'\) needs 'roles'"),
    ],
)
def test_a_bad_roles_field_names_the_entry_never_the_token(tmp_path: Path, roles: object, message: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "tok-secret-a": {"user": "alice", "judges": ["sql"], "roles": ["admin"]},
                "tok-secret-b": {"user": "bob", "judges": ["sql"], "roles": roles},
            }
        )
    )
    with pytest.raises(ValueError, match=message) as raised:
        load_tokens(path)
    assert "tok-secret" not in str(raised.value) and str(path) in str(raised.value)


def test_a_repeated_role_is_kept_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"t": {"user": "a", "judges": [], "roles": ["approver", "approver"]}}))
    assert list(load_tokens(path).values()) == [{"user": "a", "judges": [], "roles": ["approver"]}]


def _ctx(identity: str, resource: str = "threads", action: str = "create") -> Auth.types.AuthContext:
    return Auth.types.AuthContext(
        permissions=["judge:*"],
        user=SimpleNamespace(identity=identity),  # type: ignore[arg-type]
        resource=resource,  # type: ignore[arg-type]
        action=action,  # type: ignore[arg-type]
    )


async def test_thread_ids_a_client_may_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, with the thread lookup replaced (tests/security/test_thread_isolation.py runs it on the server)."""
    owners = {"0195f1d2-0000-7000-8000-000000000001": "alice"}

    async def owner(tid: object) -> str | None:
        return owners.get(str(tid))

    monkeypatch.setattr(auth_module, "_thread_owner", owner)
    ids = {
        "hers by name": thread_id("alice", "case-1"),
        "hers at random": thread_id("alice"),
        "hers, made by the server long ago": "0195f1d2-0000-7000-8000-000000000001",
        "just made": str(uuid.UUID(int=(int(time.time() * 1000) << 80) | (7 << 76) | (2 << 62) | 12345)),
    }
    for tid in ids.values():
        value = {"thread_id": tid, "metadata": {"owner": "mallory"}, "if_exists": "do_nothing"}
        assert await create_thread(_ctx("alice"), value) == {"owner": "alice"}
        assert value["metadata"] == {"owner": "alice"}
    for tid in (thread_id("bob", "case-1"), str(uuid.uuid4()), "0195f1d2-0000-7000-8000-000000000001", "not-a-uuid"):
        with pytest.raises(Auth.exceptions.HTTPException, match="is not one you may create") as raised:
            await create_thread(_ctx("carol"), {"thread_id": tid, "metadata": {}, "if_exists": "raise"})
        assert raised.value.status_code == 403
    # A thread copy (no if_exists) gets an id the server made: only the read of its source is checked.
    assert await create_thread(_ctx("carol"), {"thread_id": uuid.uuid4()}) == {"owner": "carol"}
    assert thread_id("alice", "case-1") == thread_id("alice", "case-1") != thread_id("alice", "case-2")
    assert uuid.UUID(thread_id("alice")).version == 8 and not in_id_space("alice", ids["just made"])
