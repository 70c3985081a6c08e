"""Another user's thread shows nothing, not even its existence; no client hands a thread over (issue 21, items 1, 6).

Against ``langgraph dev`` with two token holders: alice (judge ``sql``) and bob (judge ``tone``).
Before the fix Bob's ``POST /threads {"thread_id": <alice's>, "if_exists": "do_nothing"}``
answered 200 with Alice's case, principles, episodes and pending interrupt, ``"raise"`` said
409 (it exists), and Alice's ``PATCH /threads/{id} {"metadata": {"owner": "bob"}}`` gave
Bob her pending review.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from memalign_graph import JudgeSpec, Memory
from memalign_graph.auth import MINTED_WITHIN_S, in_id_space, thread_id
from memalign_graph.testing import StubChatModel
from tests.conftest import tree_bytes
from tests.dev_server import dev_server, requires_dev_server

ALICE, BOB = "alice-token-5e1d", "bob-token-0c77"
pytestmark = requires_dev_server

SPEC = JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"])
SECRET_CASE = {"id": "case-1", "inputs": "Quarterly payroll of ACME-4471", "outputs": "SELECT * FROM raw.salaries"}
SECRETS = ("ACME-4471", "raw.salaries", "Never use raw tables", "sql-1")


@dataclass
class Served:
    url: str
    judges: dict[str, str]
    started: float

    def http(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def client(self, token: str) -> Any:
        from langgraph_sdk import get_client

        return get_client(url=self.url, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("isolation")
    judges = {"sql": str(tmp / "sql"), "tone": str(tmp / "tone")}
    for name, rule in (("sql", "Never use raw tables."), ("tone", "Never shout.")):
        Memory.create(judges[name], SPEC)
        Memory.open(judges[name]).align(
            [{"id": f"{name}-1", "inputs": "q", "outputs": "SELECT 1", "value": "fail", "feedback": rule}],
            model=StubChatModel(),
        )
    tokens = {
        "sha256:" + hashlib.sha256(ALICE.encode()).hexdigest(): {"user": "alice", "judges": ["sql"]},
        BOB: {"user": "bob", "judges": ["tone"]},
    }
    (tmp / "tokens.json").write_text(json.dumps(tokens))
    env = {
        "MEMALIGN_JUDGES": json.dumps(judges),
        "MEMALIGN_MODEL": "stub",
        "MEMALIGN_AUTH_TOKENS": str(tmp / "tokens.json"),
    }
    with dev_server(env, tmp / "server.log") as url:
        yield Served(url, judges, time.monotonic())


def _old_uuid7(seconds_ago: float) -> str:
    """A UUIDv7 made ``seconds_ago`` (what an id the server made earlier looks like)."""
    raw = bytearray(int((time.time() - seconds_ago) * 1000).to_bytes(6, "big") + uuid.uuid4().bytes[6:])
    raw[6] = (raw[6] & 0x0F) | 0x70
    return str(uuid.UUID(bytes=bytes(raw)))


async def _until_older_than_the_window(tid: str) -> None:
    """Wait until the server-made id ``tid`` is older than MINTED_WITHIN_S."""
    age = time.time() - int.from_bytes(uuid.UUID(tid).bytes[:6], "big") / 1000
    await asyncio.sleep(max(0.0, MINTED_WITHIN_S + 1 - age))


def _masked(response: httpx.Response, tid: str) -> tuple[int, str]:
    return response.status_code, response.text.replace(tid, "<id>")


async def _probe(bob: httpx.AsyncClient, tid: str) -> list[tuple[int, str]]:
    """What Bob learns about ``tid`` from every call that may create a thread."""
    answers = []
    for if_exists in ("do_nothing", "raise"):
        answers.append(_masked(await bob.post("/threads", json={"thread_id": tid, "if_exists": if_exists}), tid))
    superstep = {"supersteps": [{"updates": [{"values": {"inputs": "x"}, "as_node": "__input__"}]}]}
    answers.append(
        _masked(await bob.post("/threads", json={"thread_id": tid, "if_exists": "do_nothing", **superstep}), tid)
    )
    run = {"assistant_id": "review", "input": SECRET_CASE, "context": {"judge": "tone"}, "if_not_exists": "create"}
    answers.append(_masked(await bob.post(f"/threads/{tid}/runs/wait", json=run), tid))
    for call in (bob.get(f"/threads/{tid}"), bob.get(f"/threads/{tid}/state"), bob.post(f"/threads/{tid}/copy")):
        answers.append(_masked(await call, tid))
    return answers


async def test_another_users_thread_shows_nothing_not_even_its_existence(served: Served) -> None:
    alice, bob = served.client(ALICE), served.http(BOB)
    minted = (await alice.threads.create())["thread_id"]
    named = thread_id("alice", "case-1")
    assert (await alice.threads.create(thread_id=named))["thread_id"] == named
    for tid in (minted, named):
        await alice.runs.wait(tid, "review", input=SECRET_CASE, context={"judge": "sql"})
    before = {tid: await alice.threads.get_state(tid) for tid in (minted, named)}
    assert all(state["interrupts"] for state in before.values()), "Alice's reviews are pending"
    memory_before = {name: tree_bytes(Path(location)) for name, location in served.judges.items()}
    # Ids the server made count as made for this request for a few seconds only; Alice's is older by now.
    await _until_older_than_the_window(minted)

    # Each of Alice's ids answers Bob exactly as an id of the same kind that no thread has.
    never = {minted: _old_uuid7(MINTED_WITHIN_S + 30), named: thread_id("alice", "case-never-made")}
    for tid, twin in never.items():
        seen, unseen = await _probe(bob, tid), await _probe(bob, twin)
        assert seen == unseen, (tid, seen, unseen)
        assert {status for status, _ in seen[:4]} == {403} and {status for status, _ in seen[4:6]} == {404}
        for _, text in seen:
            assert not any(secret in text for secret in SECRETS), text
    # Nor does a random id of any other kind, nor an id in Bob's space that Alice made under his name.
    for tid in (str(uuid.uuid4()), thread_id("carol", "case-1")):
        assert {status for status, _ in (await _probe(bob, tid))[:4]} == {403}

    after = {tid: await alice.threads.get_state(tid) for tid in (minted, named)}
    assert after == before
    assert {name: tree_bytes(Path(location)) for name, location in served.judges.items()} == memory_before
    assert [t["thread_id"] for t in await served.client(BOB).threads.search()] == []


async def test_a_new_server_made_id_shows_existence_only_within_the_window(served: Served) -> None:
    """The documented limit: within MINTED_WITHIN_S of its making, a presented id says 409, never the thread."""
    alice, bob = served.client(ALICE), served.http(BOB)
    tid = (await alice.threads.create())["thread_id"]
    await alice.runs.wait(tid, "review", input=SECRET_CASE, context={"judge": "sql"})
    answer = await bob.post("/threads", json={"thread_id": tid, "if_exists": "do_nothing"})
    assert answer.status_code == 409 and not any(secret in answer.text for secret in SECRETS)


async def test_clients_keep_naming_their_own_threads(served: Served) -> None:
    alice = served.client(ALICE)
    named = thread_id("alice", "case-7")
    assert named == thread_id("alice", "case-7") and in_id_space("alice", named)
    assert not in_id_space("bob", named) and not in_id_space("alice", thread_id("bob", "case-7"))
    created = await alice.threads.create(thread_id=named, if_exists="do_nothing")
    await alice.runs.wait(named, "review", input=SECRET_CASE, context={"judge": "sql"})
    again = await alice.threads.create(thread_id=named, if_exists="do_nothing")
    assert again["thread_id"] == created["thread_id"] == named and again["values"]["id"] == "case-1"
    with pytest.raises(httpx.HTTPStatusError) as raised:
        await alice.threads.create(thread_id=named, if_exists="raise")
    assert raised.value.response.status_code == 409  # her own thread: she knows it exists
    # A run may create its thread by a name in her space, as RemoteGraph does with if_not_exists="create".
    by_run = thread_id("alice", "case-8")
    await alice.runs.wait(by_run, "review", input=SECRET_CASE, context={"judge": "sql"}, if_not_exists="create")
    assert (await alice.threads.get(by_run))["metadata"]["owner"] == "alice"
    # An id the server made long ago is still hers to name, and a copy of her thread is hers.
    old = (await alice.threads.create())["thread_id"]
    await _until_older_than_the_window(old)
    assert (await alice.threads.create(thread_id=old, if_exists="do_nothing"))["thread_id"] == old
    await alice.runs.wait(old, "review", input=SECRET_CASE, context={"judge": "sql"}, if_not_exists="create")
    copy = await alice.threads.copy(named)
    assert copy["metadata"]["owner"] == "alice"
    assert (await alice.threads.get_state(copy["thread_id"]))["values"]["id"] == "case-1"
    with contextlib.suppress(httpx.HTTPStatusError):
        await served.client(BOB).threads.get(copy["thread_id"])
        pytest.fail("Bob read Alice's copy")


async def test_the_owner_is_immutable_to_clients(served: Served) -> None:
    alice, bob = served.client(ALICE), served.client(BOB)
    tid = (await alice.threads.create(metadata={"owner": "bob", "note": "mine"}))["thread_id"]
    assert (await alice.threads.get(tid))["metadata"]["owner"] == "alice"
    await alice.runs.wait(tid, "review", input=SECRET_CASE, context={"judge": "sql"})
    for metadata in ({"owner": "bob"}, {"owner": None}, {"owner": "bob", "note": "handed over"}):
        with pytest.raises(httpx.HTTPStatusError) as raised:
            await alice.threads.update(tid, metadata=metadata)
        assert raised.value.response.status_code == 403 and "owner is set by the server" in raised.value.response.text
    # Bob asking for it hears what he hears for an id no thread has.
    heard = []
    for target in (tid, str(uuid.uuid4())):
        answer = await served.http(BOB).patch(f"/threads/{target}", json={"metadata": {"owner": "bob"}})
        heard.append(_masked(answer, target))
    assert heard[0] == heard[1] and heard[0][0] == 404
    await alice.threads.update(tid, metadata={"note": "still mine", "owner": "alice"})
    # Run metadata never reaches the owner: on her thread, and on a thread a run creates.
    await alice.runs.wait(
        tid, "review", command={"resume": {"action": "accept"}}, context={"judge": "sql"}, metadata={"owner": "bob"}
    )
    fresh = thread_id("alice", "case-owner")
    await alice.runs.wait(
        fresh,
        "judge",
        input=SECRET_CASE,
        context={"judge": "sql"},
        metadata={"owner": "bob"},
        config={"metadata": {"owner": "bob"}},
        if_not_exists="create",
    )
    for t in (tid, fresh, (await alice.threads.copy(tid))["thread_id"]):
        assert (await alice.threads.get(t))["metadata"]["owner"] == "alice"
    assert [t["thread_id"] for t in await bob.threads.search()] == []
    assert (await alice.threads.get(tid))["metadata"]["note"] == "still mine"
