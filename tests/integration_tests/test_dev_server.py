"""`langgraph dev` serves the graphs offline; drive the review graph with the official SDK, as Studio does."""

import pytest

from memalign_graph import JudgeSpec, Memory
from tests.dev_server import dev_server, requires_dev_server

pytestmark = [requires_dev_server, pytest.mark.location_string]


@pytest.fixture
def server(tmp_path, new_location):
    # A directory outside the project tree (memory writes must not trigger a reload), or a judge in PostgreSQL.
    memory_dir = new_location("memory")
    Memory.create(memory_dir, JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"]))
    with dev_server({"MEMALIGN_STORE": memory_dir, "MEMALIGN_MODEL": "stub"}, tmp_path / "server.log") as url:
        yield url, memory_dir


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
