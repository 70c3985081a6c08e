"""The review page on every memory backend: queue a case from Python, correct it through ``/review``, read the memory.

No browser here (``tests/browser`` drives one against the file backend): the page's forms are
posted as a browser posts them, on a server without a token file (loopback requests only).
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from memalign_graph import JudgeSpec, Memory
from memalign_graph.webreview import queue_cases
from tests.dev_server import dev_server, requires_dev_server

pytestmark = requires_dev_server

SPEC = JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"])
WORDS = "Never read raw tables; use the certified mart views."


def field(page: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', page).group(1)


CASE = {"id": "q-1", "inputs": "Active customers", "outputs": "SELECT * FROM raw.customers"}


def queue_from_the_command_line(url: str, tmp_path) -> dict:
    """``memalign queue CASES --url URL``, twice: the second run queues nothing again."""
    from langgraph_sdk import get_sync_client
    from typer.testing import CliRunner

    from memalign_graph.cli import app

    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps(CASE) + "\n\n")
    first = CliRunner().invoke(app, ["queue", str(cases), "--url", url])
    assert first.exit_code == 0 and "1 queued; review at" in first.output, first.output
    again = CliRunner().invoke(app, ["queue", str(cases), "--url", url])
    assert again.exit_code == 0 and "1 queued before" in again.output, again.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(CASE) + "\n[1, 2]\n")
    refused = CliRunner().invoke(app, ["queue", str(bad), "--url", url])
    assert refused.exit_code == 2 and "line 2: expected a JSON object" in refused.output
    (thread,) = get_sync_client(url=url).threads.search(metadata={"graph_id": "review"}, status="interrupted")
    return {"thread_id": thread["thread_id"]}


def correct_through_the_page(url: str, row: dict | None = None) -> str:
    """Queue one case (unless ``row`` names its thread), correct it on the page; return the page of what changed."""
    if row is None:
        (row,) = queue_cases([CASE], url=url)
        assert row["status"] == "queued"
    with httpx.Client(base_url=url) as browser:
        queue = browser.get("/review/")
        assert queue.status_code == 200 and "q-1" in queue.text  # loopback: signed in as local, no token
        case_url = f"/review/case/{row['thread_id']}"
        case = browser.get(case_url)
        assert "SELECT * FROM raw.customers" in case.text
        answer = {
            "csrf_token": field(case.text, "csrf_token"),
            "interrupt_id": field(case.text, "interrupt_id"),
            "action": "correct",
            "value": "fail",
            "feedback": WORDS,
        }
        assert browser.post(case_url, data=answer).status_code == 303
        done = browser.get(case_url)
        assert done.status_code == 200 and "Corrected to <strong" in done.text
        # A DNS-rebound name is not a loopback host: without credentials nothing is served to it.
        rebound = browser.get("/review/", headers={"host": "attacker.example"})
        assert rebound.status_code == 401 and "q-1" not in rebound.text
        return done.text


@pytest.mark.location_string
def test_review_page_writes_to_file_and_postgres_memories(tmp_path, new_location):
    location = new_location("memory")
    Memory.create(location, SPEC)
    with dev_server({"MEMALIGN_STORE": location, "MEMALIGN_MODEL": "stub"}, tmp_path / "server.log") as url:
        done = correct_through_the_page(url)
    memory = Memory.open(location)
    assert re.search(r'class="version">1<', done) and memory.version == 1
    assert memory.episodes.get(["q-1"])[0]["feedback"] == WORDS
    assert [p["text"] for p in memory.principles] == [WORDS] and memory.principles[0]["id"] in done


async def test_review_page_writes_to_the_servers_store(tmp_path):
    from langgraph_sdk import get_client

    env = {
        "MEMALIGN_STORE": "langgraph",
        "MEMALIGN_JUDGE_SPECS": json.dumps({"default": SPEC.to_dict()}),
        "MEMALIGN_MODEL": "stub",
    }
    with dev_server(env, tmp_path / "server.log") as url:
        row = await asyncio.to_thread(queue_from_the_command_line, url, tmp_path)
        done = await asyncio.to_thread(correct_through_the_page, url, row)
        client = get_client(url=url)
        episodes = (await client.store.search_items(("memalign", "default", "episodes")))["items"]
        principles = (await client.store.search_items(("memalign", "default", "principles")))["items"]
    assert [e["value"]["id"] for e in episodes] == ["q-1"]
    assert [p["value"]["text"] for p in principles] == [WORDS]
    assert re.search(r'class="version">1<', done)
