"""`langgraph dev` serves the graphs offline; drive the review graph with the official SDK, as Studio does."""

import json

import pytest

from memalign_graph import JudgeSpec, Memory
from tests.dev_server import dev_server, requires_dev_server

pytestmark = requires_dev_server


@pytest.fixture
def server(tmp_path, new_location):
    # A directory outside the project tree (memory writes must not trigger a reload), or a judge in PostgreSQL.
    memory_dir = new_location("memory")
    Memory.create(memory_dir, JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"]))
    with dev_server({"MEMALIGN_STORE": memory_dir, "MEMALIGN_MODEL": "stub"}, tmp_path / "server.log") as url:
        yield url, memory_dir


@pytest.mark.location_string
async def test_review_graph_through_the_sdk(server):
    from langgraph_sdk import get_client

    url, memory_dir = server
    client = get_client(url=url)
    assistants = {a["graph_id"] for a in await client.assistants.search()}
    assert {"judge", "review", "align"} <= assistants

    thread = await client.threads.create()
    case = {"id": "q-1", "inputs": "Weekly revenue", "outputs": "SELECT * FROM raw.payments"}
    await client.runs.wait(thread["thread_id"], "review", input=case)
    state = await client.threads.get_state(thread["thread_id"])
    (pending,) = state["interrupts"]
    assert pending["value"]["judgment"]["value"] == "pass" and pending["value"]["case"]["id"] == "q-1"

    answer = {"action": "correct", "value": "fail", "feedback": "Never use raw tables; use the certified view."}
    result = await client.runs.wait(thread["thread_id"], "review", command={"resume": answer})
    assert result["report"]["added"] == ["q-1"] and result["review"]["action"] == "correct"

    memory = Memory.open(memory_dir)
    assert memory.version == 1 and memory.episodes.get(["q-1"])[0]["value"] == "fail"
    assert [p["text"] for p in memory.principles] == ["Never use raw tables; use the certified view."]

    judged = await client.runs.wait(None, "judge", input=case)
    assert judged["judgment"]["precedent"] == "q-1" and judged["judgment"]["value"] == "fail"


@pytest.fixture
def store_server(tmp_path):
    """``langgraph dev`` keeping the judge in its own store (``MEMALIGN_STORE=langgraph``), created on first use."""
    spec = JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"])
    env = {
        "MEMALIGN_STORE": "langgraph",
        "MEMALIGN_JUDGE_SPECS": json.dumps({"default": spec.to_dict()}),
        "MEMALIGN_MODEL": "stub",
    }
    with dev_server(env, tmp_path / "server.log") as url:
        yield url


async def test_memory_in_the_servers_store_is_what_studio_reads(store_server):
    from langgraph_sdk import get_client

    client = get_client(url=store_server)
    feedback = {
        "id": "q-1",
        "inputs": "Weekly revenue",
        "outputs": "SELECT * FROM raw.payments",
        "value": "fail",
        "feedback": "Never use raw tables; use the certified view.",
    }
    result = await client.runs.wait(None, "align", input={"feedback": [feedback]})
    assert result["report"]["version"] == 1 and result["report"]["added"] == ["q-1"]

    # What Studio's memory view reads: the store API, as the authorised (local) user.
    episodes = (await client.store.search_items(("memalign", "default", "episodes")))["items"]
    assert [e["value"]["id"] for e in episodes] == ["q-1"] and "raw.payments" in episodes[0]["value"]["text"]
    principles = (await client.store.search_items(("memalign", "default", "principles")))["items"]
    assert [p["value"]["text"] for p in principles] == ["Never use raw tables; use the certified view."]
    found = await client.store.search_items(("memalign", "default"), query="certified view instead of raw tables")
    assert any(item["value"].get("text") == principles[0]["value"]["text"] for item in found["items"])
    namespaces = await client.store.list_namespaces(prefix=["memalign", "default"], max_depth=3)
    assert ["memalign", "default", "versions"] in [list(n) for n in namespaces["namespaces"]]

    judged = await client.runs.wait(None, "judge", input={k: feedback[k] for k in ("id", "inputs", "outputs")})
    assert judged["judgment"]["precedent"] == "q-1" and judged["judgment"]["value"] == "fail"
