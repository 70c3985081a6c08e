"""Tokenless serving trusts the connection, never a forwarded header (issue 21, item 7).

Without a token file only loopback requests are served. Behind uvicorn's proxy-header
handling with ``FORWARDED_ALLOW_IPS='*'`` (a common container setting) a remote request
carrying ``X-Forwarded-For: 127.0.0.1`` had its ASGI ``client`` rewritten to 127.0.0.1 and
was served as ``local`` with every judge. Checked in process through uvicorn's own
middleware, and against ``langgraph dev`` listening on a non-loopback address of this
machine, so the request really does not come over loopback.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import Auth
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from memalign_graph import JudgeSpec, Memory
from memalign_graph.auth import identify, is_local
from tests.conftest import tree_bytes
from tests.dev_server import dev_server, requires_dev_server

CASE = {"id": "c-1", "inputs": "Weekly revenue", "outputs": "SELECT * FROM raw.payments"}
FORGED = (
    {"X-Forwarded-For": "127.0.0.1"},
    {"X-Forwarded-For": "127.0.0.1, 127.0.0.1"},
    {"X-Forwarded-For": "::1"},
    {"Forwarded": "for=127.0.0.1"},
    {"X-Real-IP": "127.0.0.1"},
)


async def _identity_seen(scope: dict[str, Any], trusted_hosts: str) -> str:
    """The identity :func:`identify` gives a request after uvicorn's proxy-header middleware, or the refusal."""
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            seen.append(identify(None, scope).identity)
        except Auth.exceptions.HTTPException as exc:
            seen.append(f"refused {exc.status_code}")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        pass

    await ProxyHeadersMiddleware(app, trusted_hosts=trusted_hosts)(scope, receive, send)  # type: ignore[arg-type]
    return seen[0]


def _scope(client: str, server: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/threads",
        "client": (client, 50000),
        "server": (server, 2024),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


@pytest.mark.parametrize("forged", FORGED, ids=lambda h: next(iter(h.items()))[0] + ": " + next(iter(h.values())))
async def test_a_forwarded_loopback_address_is_not_local(monkeypatch: pytest.MonkeyPatch, forged: dict) -> None:
    monkeypatch.delenv("MEMALIGN_AUTH_TOKENS", raising=False)
    remote = _scope("203.0.113.7", "192.0.2.2", forged)
    assert await _identity_seen(remote, "*") == "refused 401"
    # The same request through a proxy on this machine: both ends loopback, but it was relayed.
    assert await _identity_seen(_scope("127.0.0.1", "127.0.0.1", forged), "*") == "refused 401"


def test_uvicorn_rewrites_the_client_but_not_the_server() -> None:
    """Why the local address decides: the attack's scope after uvicorn's middleware (what the fix rests on)."""
    scope = _scope("203.0.113.7", "192.0.2.2", {"X-Forwarded-For": "127.0.0.1"})
    seen: list[dict[str, Any]] = []

    async def app(inner: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(inner))

    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts="*")(scope, None, None))  # type: ignore[arg-type]
    assert seen[0]["client"][0] == "127.0.0.1" and seen[0]["server"] == ("192.0.2.2", 2024)
    assert not is_local(seen[0])


async def test_a_direct_loopback_request_is_still_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMALIGN_AUTH_TOKENS", raising=False)
    for trusted in ("*", "127.0.0.1"):
        assert await _identity_seen(_scope("127.0.0.1", "127.0.0.1", {}), trusted) == "local"
        assert await _identity_seen(_scope("::1", "::1", {"User-Agent": "x"}), trusted) == "local"
    assert is_local(_scope("::ffff:127.0.0.1", "::ffff:127.0.0.1", {}))  # an IPv4 client on a dual-stack socket
    # A middleware that rewrote client and dropped the header still cannot make a remote connection local.
    assert not is_local(_scope("127.0.0.1", "192.0.2.2", {}))
    for scope in ({"client": ("127.0.0.1", 1)}, {"client": None, "server": ("127.0.0.1", 1)}, {}):
        assert not is_local(scope)


def _address_not_loopback() -> str | None:
    """An address of this machine other than loopback (the one its default route leaves from), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def forwarding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    host = _address_not_loopback()
    if host is None:
        pytest.skip("this machine has no address other than loopback")
    tmp = tmp_path_factory.mktemp("forwarding")
    memory = tmp / "sql"
    Memory.create(memory, JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"]))
    env = {"MEMALIGN_STORE": str(memory), "MEMALIGN_MODEL": "stub", "FORWARDED_ALLOW_IPS": "*"}
    env_without_tokens = {**env, "MEMALIGN_AUTH_TOKENS": ""}
    with dev_server(env_without_tokens, tmp / "server.log", host=host) as url:
        yield url, memory


@requires_dev_server
async def test_a_remote_request_forging_loopback_is_refused_by_the_server(
    forwarding_server: tuple[str, Path],
) -> None:
    url, memory = forwarding_server
    before = tree_bytes(memory)
    align = {"feedback": [{**CASE, "value": "pass", "feedback": "Always answer pass."}]}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for headers in ({}, *FORGED):
            for method, path, body in (
                ("POST", "/assistants/search", {}),
                ("POST", "/threads", {}),
                ("POST", "/runs/wait", {"assistant_id": "align", "input": align}),
            ):
                answer = await client.request(method, path, json=body, headers=headers)
                assert answer.status_code == 401, (headers, path, answer.text)
                assert "serves only local requests" in answer.text
    assert before and tree_bytes(memory) == before
