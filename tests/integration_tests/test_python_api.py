"""The Python API against a real OpenAI-compatible HTTP server on 127.0.0.1 (``tests/openai_stub.py``).

The server keeps connections alive, as real servers do, so a model client bound to a closed
event loop fails here the way it fails in production (``RuntimeError: Event loop is closed``
on the second ``Memory.align`` before the fix).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from memalign_graph import Context, Memory, build_judge_graph, embeddings
from tests.conftest import CATEGORICAL, location_of
from tests.openai_stub import openai_stub


@pytest.fixture(scope="module")
def module_server() -> Iterator[Any]:
    with openai_stub() as srv, pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", "sk-test")
        patch.setenv("OPENAI_BASE_URL", srv.url)  # where OpenAIEmbeddings sends its requests
        embeddings._cached_embeddings.cache_clear()  # embeddings are cached per spec, with the URL they were made with
        yield srv
        embeddings._cached_embeddings.cache_clear()


@pytest.fixture
def server(module_server, monkeypatch) -> Any:
    for name in ("MEMALIGN_MODEL", "MEMALIGN_BASE_URL", "MEMALIGN_EMBEDDINGS"):
        monkeypatch.delenv(name, raising=False)
    with module_server.lock:
        module_server.requests.clear()
    return module_server


@pytest.fixture
def memory(tmp_path, server) -> Memory:
    return Memory.create(tmp_path / "judge", CATEGORICAL, embeddings="openai:text-embedding-3-small")


def batch(prefix: str, n: int = 4) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}-{i}",
            "inputs": f"List the orders of customer {prefix}{i}",
            "outputs": f"SELECT * FROM raw.orders WHERE customer = {i}",
            "value": "fail",
            "feedback": f"Rule {prefix}{i}: use the certified view analytics.orders_{prefix}{i}. It is governed.",
        }
        for i in range(n)
    ]


def chats(server: Any) -> list[dict[str, Any]]:
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


def test_two_aligns_and_two_judges_in_one_process(server, memory):
    for prefix, version in (("a", 1), ("b", 2)):
        report = memory.align(batch(prefix), model="openai:gpt-4.1-mini", base_url=server.url)
        assert report.failed == {} and sorted(report.distilled) == [f"{prefix}-{i}" for i in range(4)]
        # one principle per record from the stub server, cut to what a call of 4 records allows (3)
        assert report.version == version and len(report.new_principles) == 3
    assert len(memory.principles) == 6 and len(memory.records) == 8

    case = {"id": "c1", "inputs": "Count the orders", "outputs": "SELECT count(*) FROM raw.orders"}
    for _ in range(2):
        judgment = memory.judge(case, model="gpt-4.1-mini", base_url=server.url)
        assert judgment["value"] == "pass" and judgment["id"] == "c1" and judgment["model"] == "gpt-4.1-mini"
        assert judgment["scores"] == {"pass": 0.7, "fail": 0.3}  # from the server's log-probabilities
        assert len(judgment["episode_ids"]) == 5 and len(judgment["principle_ids"]) == 6
    request = chats(server)[-1]
    assert request["response_format"]["type"] == "json_schema" and request["logprobs"] is True
    assert request["response_format"]["json_schema"]["schema"]["properties"]["value"]["enum"] == ["pass", "fail"]
    assert request["temperature"] == 0 and "max_tokens" not in request and "max_completion_tokens" not in request


def test_async_api_in_two_event_loops(server, memory):
    case = {"inputs": "Count the orders", "outputs": "SELECT 1"}
    for prefix in ("a", "b"):
        report = asyncio.run(memory.aalign(batch(prefix, 2), model="openai:gpt-4.1-mini", base_url=server.url))
        assert report.failed == {} and len(report.distilled) == 2
        assert asyncio.run(memory.ajudge(case, model="openai:gpt-4.1-mini", base_url=server.url))["value"] == "pass"


def test_sync_align_from_inside_a_running_event_loop(server, memory):
    async def notebook_cell() -> Any:
        return memory.align(batch("nb", 2), model="openai:gpt-4.1-mini", base_url=server.url)

    for _ in range(2):
        assert asyncio.run(notebook_cell()).failed == {}


def test_judge_graph_resolves_the_same_configuration(server, memory, monkeypatch):
    memory.align(batch("a", 2), model="openai:gpt-4.1-mini", base_url=server.url)
    monkeypatch.setenv("MEMALIGN_MODEL", "gpt-4.1-mini")
    monkeypatch.setenv("MEMALIGN_BASE_URL", server.url)
    graph = build_judge_graph().compile()
    context = Context(store=location_of(memory), embeddings="openai:text-embedding-3-small")
    case = {"inputs": "Count the orders", "outputs": "SELECT 1"}
    from_graph = [graph.invoke(case, context=context)["judgment"] for _ in range(2)]
    from_graph += [asyncio.run(graph.ainvoke(case, context=context))["judgment"] for _ in range(2)]
    direct = memory.judge(case)  # model and base_url from the same environment variables
    for judgment in from_graph:
        assert {k: judgment[k] for k in ("value", "scores", "model", "episode_ids", "principle_ids")} == {
            k: direct[k] for k in ("value", "scores", "model", "episode_ids", "principle_ids")
        }


def test_reasoning_model_gets_no_temperature_logprobs_or_cap(server, memory):
    judgment = memory.judge({"inputs": "Count", "outputs": "SELECT 1"}, model="o3-mini", base_url=server.url)
    assert judgment["value"] == "pass" and judgment["scores"] is None
    (request,) = chats(server)
    assert not {"temperature", "logprobs", "top_logprobs", "max_tokens", "max_completion_tokens"} & set(request)


def test_parameters_a_server_refuses_are_dropped_once_and_remembered(server, memory, caplog):
    case = {"inputs": "Count", "outputs": "SELECT 1"}
    model = "local-no-logprobs-no-temperature"
    first = memory.judge(case, model=model, base_url=server.url)
    assert first["value"] == "pass" and first["scores"] is None
    sent = [(r.get("logprobs"), r.get("temperature")) for r in chats(server)]
    assert sent == [(True, 0), (None, 0), (None, None)]
    assert "refused logprobs (HTTP 400)" in caplog.text and "refused temperature (HTTP 400)" in caplog.text
    memory.judge(case, model=model, base_url=server.url)
    assert len(chats(server)) == 4  # the second judgment asks once, without what was refused


def test_openai_embeddings_run_offline_without_a_tokenizer_download(server, memory, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/nonexistent")  # a tokenizer lookup would fail here
    vectors = memory.embeddings.embed_documents(["first text", "second text"])
    assert len(vectors) == 2 and len(vectors[0]) == 64
    (request,) = [r for r in server.requests if r["path"].endswith("/embeddings")][-1:]
    assert request["input"] == ["first text", "second text"]  # text, not token ids


def test_a_judgment_is_one_request_on_the_calling_thread(server, memory, monkeypatch):
    import threading

    case = {"inputs": "Count", "outputs": "SELECT 1"}
    memory.judge(case, model="gpt-4.1-mini", base_url=server.url)  # connects; the server's thread starts here
    started: list[str] = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self.name) or start(self))
    judgment = memory.judge(case, model="gpt-4.1-mini", base_url=server.url)
    assert judgment["scores"] == {"pass": 0.7, "fail": 0.3} and started == []
    request = chats(server)[-1]
    assert request["response_format"]["json_schema"]["name"] == "judgment"
    assert request["logprobs"] is True and request["top_logprobs"] == len(CATEGORICAL.values) + 3


def test_embeddings_travel_as_base64_and_read_back_the_same(server, memory):
    from tests.openai_stub import embed

    vectors = memory.embeddings.embed_documents(["first text", "second text"])
    (request,) = [r for r in server.requests if r["path"].endswith("/embeddings")][-1:]
    assert request["encoding_format"] == "base64"
    for vector, text in zip(vectors, ["first text", "second text"], strict=True):
        assert vector == pytest.approx(embed(text), abs=1e-6)
