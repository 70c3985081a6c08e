"""No other web site can use a tokenless server as ``local`` (web-needs item: CORS ``*`` in tokenless mode).

Without a token file the server serves loopback requests as user ``local`` with every judge and
role. LangGraph's default CORS answer, ``Access-Control-Allow-Origin: *``, let any page the
machine's browser opened read the API (a ``fetch`` from evil.example to
``http://127.0.0.1:2024/threads/search`` came back), and a simple cross-site POST ran without
reading. Now the CORS settings in ``langgraph.json`` name LangGraph Studio's origins only, and a
request another site's page sent (its ``Origin``, or ``Sec-Fetch-Site`` without one) or sent
under a non-loopback ``Host`` (DNS rebinding) is not local: 401.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import Auth

from memalign_graph import JudgeSpec, Memory
from memalign_graph.auth import identify
from tests.conftest import tree_bytes
from tests.dev_server import dev_server, requires_dev_server

STUDIO = "https://smith.langchain.com"
CROSS_SITE = (
    {"Origin": "https://evil.example"},
    {"Origin": "null"},  # a sandboxed frame or a file: page
    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},  # an <img> or <form> without Origin
    {"Host": "evil.example:2024"},  # DNS rebinding: evil.example resolves to 127.0.0.1
    {"Host": "evil.example:2024", "Origin": "http://evil.example:2024"},
)
SAME_MACHINE = ({}, {"Origin": STUDIO}, {"Origin": "http://localhost:3000"}, {"Sec-Fetch-Site": "same-origin"})


def _scope(headers: dict[str, str]) -> dict[str, Any]:
    headers = {"Host": "127.0.0.1:2024", **headers}
    return {
        "type": "http",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 2024),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


@pytest.mark.parametrize("headers", CROSS_SITE, ids=repr)
def test_a_request_from_another_sites_page_is_not_local(monkeypatch: pytest.MonkeyPatch, headers: dict) -> None:
    monkeypatch.delenv("MEMALIGN_AUTH_TOKENS", raising=False)
    with pytest.raises(Auth.exceptions.HTTPException) as refused:
        identify(None, _scope(headers))
    assert refused.value.status_code == 401


@pytest.mark.parametrize("headers", SAME_MACHINE, ids=repr)
def test_clients_on_this_machine_and_studio_are_still_local(monkeypatch: pytest.MonkeyPatch, headers: dict) -> None:
    monkeypatch.delenv("MEMALIGN_AUTH_TOKENS", raising=False)
    assert identify(None, _scope(headers)).identity == "local"


@pytest.fixture(scope="module")
def tokenless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("cross-site")
    memory = tmp / "sql"
    Memory.create(memory, JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"]))
    env = {"MEMALIGN_STORE": str(memory), "MEMALIGN_MODEL": "stub", "MEMALIGN_AUTH_TOKENS": ""}
    with dev_server(env, tmp / "server.log") as url:
        yield url, memory


@requires_dev_server
async def test_the_served_api_answers_no_other_site(tokenless: tuple[str, Path]) -> None:
    url, memory = tokenless
    before = tree_bytes(memory)
    align = {"feedback": [{"id": "x-1", "inputs": "q", "outputs": "SELECT 1", "value": "pass", "feedback": "Pass."}]}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        # The preflight a fetch() with a JSON body sends: no origin but Studio's is allowed.
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        evil = await client.options("/threads/search", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in evil.headers
        studio = await client.options("/threads/search", headers={"Origin": STUDIO, **preflight})
        assert studio.headers.get("access-control-allow-origin") == STUDIO
        for headers in CROSS_SITE:
            # A "simple" request (text/plain, no preflight), which a browser sends and would not let the page read.
            for path, body in (("/threads/search", {}), ("/runs/wait", {"assistant_id": "align", "input": align})):
                text = json.dumps(body)
                answer = await client.post(path, content=text, headers={"content-type": "text/plain", **headers})
                assert answer.status_code == 401 and "serves only local requests" in answer.text, (headers, path)
                assert answer.headers.get("access-control-allow-origin") in (None, STUDIO)
        searched = await client.post("/threads/search", json={}, headers={"Origin": STUDIO})
        assert searched.status_code == 200 and searched.headers["access-control-allow-origin"] == STUDIO
        assert (await client.post("/threads/search", json={})).status_code == 200  # the SDK, a script: no Origin
    assert tree_bytes(memory) == before
