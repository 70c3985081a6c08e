"""Attacks on the served graphs through ``langgraph-sdk`` against ``langgraph dev`` (issue 11, part 1).

One server for the module, configured as a deployment would be: two judges in
files (``sql`` for alice, ``tone`` for bob), a judge in PostgreSQL whose URL holds
passwords (``pg``) and one whose database does not exist (``broken``), the stub
model, and a bearer-token file. A capture HTTP server on 127.0.0.1 records every
request it gets; a client that points the model at it must not reach it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from memalign_graph import JudgeSpec, Memory
from memalign_graph.testing import StubChatModel
from tests.conftest import fresh_database, tree_bytes
from tests.dev_server import dev_server, requires_dev_server

pytestmark = requires_dev_server

ALICE, BOB = "alice-token-7f3a", "bob-token-91c2"
PASSWORD, SSL_PASSWORD, API_KEY = "PW-s3cret-4411", "SSL-s3cret-8822", "sk-SERVER-s3cret-9933"
SECRETS = (PASSWORD, SSL_PASSWORD, API_KEY, ALICE, BOB)
SPEC = JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"])


class _Capture(http.server.BaseHTTPRequestHandler):
    received: list[str] = []

    def _record(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.received.append(f"{self.command} {self.path} {dict(self.headers)} {self.rfile.read(length)!r}")
        self.send_response(500)
        self.end_headers()

    do_GET = do_POST = do_PUT = _record

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Served:
    url: str
    capture_url: str
    received: list[str]
    judges: dict[str, str]
    tmp: Path
    stack: contextlib.ExitStack
    postgres: bool
    principles: dict[str, list[str]] = field(default_factory=dict)

    def client(self, token: str | None = ALICE, **headers: str) -> Any:
        from langgraph_sdk import get_client

        if token:
            headers["Authorization"] = f"Bearer {token}"
        return get_client(url=self.url, headers=headers)

    def stop(self) -> Path:
        """Stop the server; return the copy of what it wrote to disk."""
        self.stack.close()
        return self.tmp / "server-state"


def _align(location: str, rid: str, text: str) -> list[str]:
    memory = Memory.open(location)
    memory.align(
        [{"id": rid, "inputs": "q", "outputs": "SELECT 1", "value": "fail", "feedback": text}], model=StubChatModel()
    )
    return [p["id"] for p in Memory.open(location).principles]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("served")
    judges = {"sql": str(tmp / "sql"), "tone": str(tmp / "tone")}
    for name in judges:
        Memory.create(judges[name], SPEC)
    principles = {
        "sql": _align(judges["sql"], "sql-1", "Never use raw tables."),
        "tone": _align(judges["tone"], "tone-1", "Never shout at customers."),
    }
    postgres = True
    try:
        url, _ = request.getfixturevalue("postgres")
    except pytest.skip.Exception:
        postgres = False
    if postgres:
        database = fresh_database(url)
        judges["pg"] = f"{database}?password={PASSWORD}&sslpassword={SSL_PASSWORD}&judge=pg"
        judges["broken"] = f"{url.rsplit('/', 1)[0]}/no_such_database?password={PASSWORD}&judge=broken"
        Memory.create(judges["pg"], SPEC)
    tokens = {
        "sha256:" + hashlib.sha256(ALICE.encode()).hexdigest(): {"user": "alice", "judges": ["sql", "pg", "broken"]},
        BOB: {"user": "bob", "judges": ["tone"]},
    }
    (tmp / "tokens.json").write_text(json.dumps(tokens))
    _Capture.received = []
    capture = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=capture.serve_forever, daemon=True).start()
    env = {
        "MEMALIGN_JUDGES": json.dumps(judges),
        "MEMALIGN_MODEL": "stub",
        "MEMALIGN_AUTH_TOKENS": str(tmp / "tokens.json"),
        "OPENAI_API_KEY": API_KEY,
    }
    stack = contextlib.ExitStack()
    stack.callback(capture.shutdown)
    url = stack.enter_context(dev_server(env, tmp / "server.log", keep_state=tmp / "server-state"))
    with stack:
        yield Served(
            url,
            f"http://127.0.0.1:{capture.server_address[1]}/v1",
            _Capture.received,
            judges,
            tmp,
            stack,
            postgres,
            principles,
        )


CASE = {"id": "case-1", "inputs": "Weekly revenue", "outputs": "SELECT * FROM raw.payments"}


async def test_studio_forms_and_updates_through_the_sdk(served: Served) -> None:
    client = served.client()
    by_graph = {a["graph_id"]: a for a in await client.assistants.search()}
    for graph in ("judge", "review", "align"):
        schemas = await client.assistants.get_schemas(by_graph[graph]["assistant_id"])
        for kind in ("input_schema", "output_schema", "context_schema"):
            assert schemas[kind] and schemas[kind]["properties"], (graph, kind)
        context = schemas["context_schema"]["properties"]
        # Each form holds what applies to its graph: alignment takes a judge only, judging no review options.
        expected = {"align": {"judge"}, "judge": {"judge", "k", "precedent"}, "review": {"judge", "k", "review"}}
        assert set(context) >= expected[graph] and context["judge"]["description"]
        assert ("review" in context) is (graph == "review") and ("precedent" in context) is (graph != "align")
        assert not set(context) & {"model", "base_url", "embeddings", "memory_dir", "store", "author"}
    judge_input = (await client.assistants.get_schemas(by_graph["judge"]["assistant_id"]))["input_schema"]
    assert {"inputs", "outputs", "id"} <= set(judge_input["properties"])
    assert all(judge_input["properties"][k].get("description") for k in ("inputs", "outputs"))
    align_input = (await client.assistants.get_schemas(by_graph["align"]["assistant_id"]))["input_schema"]
    assert "author" not in align_input["properties"]

    updates = {}
    async for part in client.runs.stream(None, "judge", input=CASE, context={"judge": "sql"}, stream_mode="updates"):
        if part.event == "updates":
            updates.update(part.data)
    assert [p["id"] for p in updates["retrieve_principles"]["principles"]] == served.principles["sql"]
    assert [e["id"] for e in updates["retrieve_episodes"]["episodes"]] == ["sql-1"]
    assert updates["judge"]["judgment"]["value"] in ("pass", "fail")


async def test_client_cannot_choose_model_base_url_or_memory(served: Served) -> None:
    """The issue's attacks: a model at the attacker's URL, another judge's memory_dir/store."""
    client = served.client()
    tone_before = tree_bytes(Path(served.judges["tone"]))
    hostile = {
        "model": "x",
        "base_url": served.capture_url,
        "embeddings": "openai:text-embedding-3-small",
        "memory_dir": served.judges["tone"],
        "store": served.judges["tone"],
    }
    judged = await client.runs.wait(None, "judge", input=CASE, context={"judge": "sql", **hostile})
    assert judged["judgment"]["model"] == "stub"
    assert judged["judgment"]["principle_ids"] == served.principles["sql"]
    # The same through the legacy `configurable`, and on the review and align graphs.
    judged = await client.runs.wait(None, "judge", input=CASE, config={"configurable": {"judge": "sql", **hostile}})
    assert judged["judgment"]["principle_ids"] == served.principles["sql"]
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "review", input=CASE, context={"judge": "sql", **hostile})
    answer = {"action": "correct", "value": "fail", "feedback": "Use the certified view.", "reviewer": "mallory"}
    reviewed = await client.runs.wait(
        thread["thread_id"], "review", command={"resume": answer}, context={"judge": "sql", **hostile}
    )
    assert reviewed["review"]["reviewer"] == "alice" and reviewed["judgment"]["corrected_by"] == "alice"
    feedback = [{"id": "al-1", "inputs": "q", "outputs": "SELECT *", "value": "fail", "feedback": "No star selects."}]
    aligned = await client.runs.wait(
        None, "align", input={"feedback": feedback, "author": "mallory"}, context={"judge": "sql", **hostile}
    )
    assert aligned["report"]["added"] == ["al-1"]

    assert served.received == [], "the capture server was reached"
    assert tree_bytes(Path(served.judges["tone"])) == tone_before
    sql = Memory.open(served.judges["sql"])
    assert {"case-1", "al-1"} <= set(sql.records)
    assert [v["author"] for v in sql.backend.versions()[-2:]] == ["alice", "alice"]


async def refused(call: Any) -> tuple[int, str]:
    """The HTTP status and body of a refused SDK call (fails the test if it was not refused)."""
    with pytest.raises(httpx.HTTPStatusError) as raised:
        await call
    return raised.value.response.status_code, raised.value.response.text


async def test_authentication_and_authorisation(served: Served) -> None:
    # No token, an unknown token, and the Studio scheme header that `langgraph dev` would let through.
    for client in (
        served.client(None),
        served.client("wrong-token"),
        served.client(None, **{"x-auth-scheme": "langsmith"}),
    ):
        assert (await refused(client.threads.create()))[0] == 401
        assert (await refused(client.assistants.search()))[0] == 401
        assert (await refused(client.runs.wait(None, "judge", input=CASE, context={"judge": "sql"})))[0] == 401

    alice, bob = served.client(ALICE), served.client(BOB)
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    await alice.runs.wait(tid, "review", input=CASE, context={"judge": "sql"})
    sql_before = tree_bytes(Path(served.judges["sql"]))
    # Bob cannot see, list, resume or delete Alice's thread: to him it does not exist.
    assert (await refused(bob.threads.get(tid)))[0] == 404
    assert (await refused(bob.threads.get_state(tid)))[0] == 404
    assert (await refused(bob.runs.list(tid)))[0] == 404
    assert tid not in {t["thread_id"] for t in await bob.threads.search()}
    resume = {"resume": {"action": "correct", "value": "pass", "feedback": "Raw tables are fine."}}
    assert (await refused(bob.runs.wait(tid, "review", command=resume, context={"judge": "tone"})))[0] == 404
    assert (await refused(bob.threads.delete(tid)))[0] == 404
    assert (await alice.threads.get_state(tid))["interrupts"], "Alice's review is still pending"
    # Bob cannot use Alice's judge; nobody names a judge the server does not expose or creates an assistant.
    status, text = await refused(bob.runs.wait(None, "judge", input=CASE, context={"judge": "sql"}))
    assert status == 403 and "may not use judge 'sql'" in text
    status, text = await refused(alice.runs.wait(None, "judge", input=CASE, context={"judge": "../tone"}))
    assert status == 403 and "not served here" in text
    status, text = await refused(alice.runs.wait(None, "judge", input=CASE))
    assert status == 403 and "name one" in text
    assert (await refused(bob.assistants.create("judge", context={"judge": "sql"})))[0] == 403
    assert tree_bytes(Path(served.judges["sql"])) == sql_before
    judged = await bob.runs.wait(None, "judge", input=CASE, context={"judge": "tone"})
    assert judged["judgment"]["principle_ids"] == served.principles["tone"]


async def test_store_passwords_never_reach_run_records_or_disk(served: Served) -> None:
    if not served.postgres:
        pytest.skip("PostgreSQL not available")
    client = served.client()
    ok = await client.threads.create()
    judged = await client.runs.wait(
        ok["thread_id"], "judge", input={**CASE, "id": "pg-case-7"}, context={"judge": "pg"}
    )
    assert judged["judgment"]["id"] == "pg-case-7"
    broken = await client.threads.create()
    failed = await client.runs.wait(
        broken["thread_id"], "judge", input=CASE, context={"judge": "broken"}, raise_error=False
    )
    seen = [json.dumps(judged), json.dumps(failed)]
    # The client reads why (the server's configuration of that judge), without the judge's location.
    assert failed["__error__"]["error"] == "ServedJudgeError"
    assert "cannot connect to PostgreSQL" in failed["__error__"]["message"]
    assert "no_such_database?" not in failed["__error__"]["message"]
    for thread in (ok, broken):
        runs = await client.runs.list(thread["thread_id"])
        seen += [json.dumps(runs), json.dumps(await client.threads.get_state(thread["thread_id"]))]
        seen += [json.dumps(await client.runs.get(thread["thread_id"], run["run_id"])) for run in runs]
    state_dir = served.stop()
    on_disk = b"".join(p.read_bytes() for p in state_dir.rglob("*") if p.is_file())
    log = (served.tmp / "server.log").read_text()
    assert b"pg-case-7" in on_disk, "the server's state on disk holds the run (else this check proves nothing)"
    # The server logged the error with the location, redacted.
    assert "no_such_database?password=***" in log
    for secret in SECRETS:
        assert not any(secret in text for text in seen), secret
        assert secret.encode() not in on_disk, secret
        assert secret not in log, secret
