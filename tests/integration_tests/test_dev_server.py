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


SQL = JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"])


@pytest.fixture
def store_server(tmp_path):
    """``langgraph dev`` keeping one judge in its own store, as the docs say: its definition names it ``sql``."""
    env = {
        "MEMALIGN_STORE": "langgraph",
        "MEMALIGN_JUDGE_SPECS": json.dumps({"sql": SQL.to_dict()}),
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
    # The one judge the server serves is the one its definition names; a client need not name it.
    result = await client.runs.wait(None, "align", input={"feedback": [feedback]})
    assert result["report"]["version"] == 1 and result["report"]["added"] == ["q-1"]

    # What Studio's memory view reads: the store API, as the authorised (local) user.
    episodes = (await client.store.search_items(("memalign", "sql", "episodes")))["items"]
    assert [e["value"]["id"] for e in episodes] == ["q-1"] and "raw.payments" in episodes[0]["value"]["text"]
    assert "vector" not in episodes[0]["value"]  # vectors live in ("memalign", "sql", "episode_vectors")
    principles = (await client.store.search_items(("memalign", "sql", "principles")))["items"]
    assert [p["value"]["text"] for p in principles] == ["Never use raw tables; use the certified view."]
    found = await client.store.search_items(("memalign", "sql"), query="certified view instead of raw tables")
    assert any(item["value"].get("text") == principles[0]["value"]["text"] for item in found["items"])
    for prefix in (["memalign", "sql"], ["memalign"], None):  # Studio lists from the top
        namespaces = await client.store.list_namespaces(prefix=prefix, max_depth=3)
        assert ["memalign", "sql", "versions"] in [list(n) for n in namespaces["namespaces"]], prefix

    judged = await client.runs.wait(
        None, "judge", input={k: feedback[k] for k in ("id", "inputs", "outputs")}, context={"judge": "sql"}
    )
    assert judged["judgment"]["precedent"] == "q-1" and judged["judgment"]["value"] == "fail"
    with pytest.raises(Exception, match=r"judge 'default' is not served here.*MEMALIGN_JUDGE_SPECS"):
        await client.runs.wait(None, "judge", input=feedback, context={"judge": "default"})


@pytest.fixture
def judges_server(tmp_path):
    """Several judges in the server's store, as the docs say, with a token file: one judge's definition is missing."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps({"ana-token": {"user": "ana", "judges": ["sql"]}, "ops-token": {"user": "ops", "judges": ["*"]}})
    )
    env = {
        "MEMALIGN_JUDGES": json.dumps({"sql": "langgraph", "billing": "langgraph", "tone": "langgraph"}),
        "MEMALIGN_JUDGE_SPECS": json.dumps({"sql": SQL.to_dict(), "billing": {**SQL.to_dict(), "name": "billing"}}),
        "MEMALIGN_AUTH_TOKENS": str(tokens),
        "MEMALIGN_MODEL": "stub",
    }
    with dev_server(env, tmp_path / "server.log") as url:
        yield url, tmp_path / "server.log"


async def test_a_missing_definition_reaches_the_client_and_listing_shows_own_judges(judges_server):
    from langgraph_sdk import get_client

    url, log = judges_server
    ana = get_client(url=url, headers={"Authorization": "Bearer ana-token"})
    ops = get_client(url=url, headers={"Authorization": "Bearer ops-token"})
    thread = await ops.threads.create()
    failed = await ops.runs.wait(
        thread["thread_id"],
        "judge",
        input={"inputs": "q", "outputs": "a"},
        context={"judge": "tone"},
        raise_error=False,
    )
    error = failed["__error__"]
    assert error["error"] == "ServedJudgeError", error
    assert "no judge 'tone'" in error["message"] and 'add {"tone": {"name"' in error["message"]
    assert "no judge 'tone'" in log.read_text()  # the operator's log says it too

    case = {"id": "q-1", "inputs": "Weekly revenue", "outputs": "SELECT * FROM raw.payments"}
    thread = await ana.threads.create()
    await ana.runs.wait(thread["thread_id"], "review", input=case, context={"judge": "sql"})
    (pending,) = (await ana.threads.get_state(thread["thread_id"]))["interrupts"]
    assert pending["value"]["kind"] == "review"

    # Studio's memory view lists from the top: each user sees their own judges' namespaces, never another's.
    for judge in ("sql", "billing"):
        aligned = await ops.runs.wait(
            None, "align", input={"feedback": [{**case, "value": "fail"}]}, context={"judge": judge}
        )
        assert aligned["report"]["version"] == 1
    listed = (await ana.store.list_namespaces(prefix=["memalign"], max_depth=2))["namespaces"]
    assert [list(n) for n in listed] == [["memalign", "sql"]]  # billing is in the store, and not ana's
    everything = [list(n) for n in (await ops.store.list_namespaces(max_depth=2))["namespaces"]]
    # ops may use every judge: all of them (an empty "tone" namespace is the in-memory store's, left by the read)
    assert [["memalign", "billing"], ["memalign", "sql"]] == [n for n in sorted(everything) if n[1] != "tone"]
