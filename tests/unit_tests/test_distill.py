import json
import math

import pytest

from memalign_graph.distill import adistill, estimate_tokens, format_record, is_salient, parse_principles, plan_batches
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, feedback


def records(n, text="Use the certified view."):
    return [feedback(f"r{i}", f"SELECT {i}", text=text) for i in range(n)]


def test_plan_batches_respects_size_and_budget():
    batches = plan_batches(records(120), batch_size=50, token_budget=10**6)
    assert [len(b) for b in batches] == [50, 50, 20]
    cost = estimate_tokens(format_record(records(1)[0])) + 1  # a record and its line break
    batches = plan_batches(records(10), batch_size=50, token_budget=cost * 3)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    huge = [feedback("big", "x" * 10_000, text="long")]
    assert [len(b) for b in plan_batches(huge + records(2), batch_size=50, token_budget=100)] == [1, 2]
    with pytest.raises(ValueError):
        plan_batches(records(1), batch_size=0)


def test_salience():
    assert is_salient(feedback("a", "x", value="pass", text="Good, but cite the view."))
    assert is_salient(feedback("a", "x", value="fail", judge_value="pass"))
    assert is_salient(feedback("a", "x", value="fail"))
    assert not is_salient(feedback("a", "x", value="pass", judge_value="pass"))


def test_parse_principles_keeps_only_batch_sources():
    text = json.dumps(
        {
            "principles": [
                {"text": "Prefer certified views.", "sources": ["r1", "zz"]},
                {"text": "Filter cancelled orders.", "sources": ["nope"]},
                {"text": "  ", "sources": ["r1"]},
            ]
        }
    )
    assert parse_principles(text, ["r1", "r2"]) == [
        ("Prefer certified views.", ["r1"]),
        ("Filter cancelled orders.", ["r1", "r2"]),
    ]
    with pytest.raises(ValueError):
        parse_principles('{"rules": []}', ["r1"])


async def test_adistill_batches_concurrently_and_counts_calls():
    model = StubChatModel(latency_s=0.05)
    result = await adistill(model, CATEGORICAL, records(100), [], batch_size=10, token_budget=10**6, concurrency=4)
    assert result.calls == math.ceil(100 / 10) == model.calls
    assert sorted(result.distilled) == sorted(f"r{i}" for i in range(100)) and not result.failed
    # The stub gives one principle per record, as many as the prompt allows: 3 per batch of 10.
    assert len(result.principles) == 30 and result.principles[0]["sources"] == ["r0"]
    assert result.usage["total_tokens"] > 0
    assert model.max_in_flight == 4  # batches overlap, bounded by the concurrency


async def test_adistill_retries_then_reports_failed_ids():
    flaky = StubChatModel(fail_first=1)
    result = await adistill(flaky, CATEGORICAL, records(3), [], max_retries=1, backoff_s=0)
    assert result.calls == 2 and not result.failed and len(result.distilled) == 3
    broken = StubChatModel(responder=lambda m, k: "not json")
    result = await adistill(broken, CATEGORICAL, records(3), [], max_retries=2, backoff_s=0)
    assert result.calls == 3 and result.distilled == []
    assert sorted(result.failed) == ["r0", "r1", "r2"] and "no JSON object" in result.failed["r0"]


async def test_known_principles_are_shown_to_the_distiller():
    model = StubChatModel()
    known = [{"id": "p-1", "text": "Prefer certified views.", "sources": [], "created_at": "", "author": "x"}]
    await adistill(model, CATEGORICAL, records(1), known)
    assert '\n"Prefer certified views."\n' in model.prompts[0][0].text


async def test_batches_fit_the_models_context_window():
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    from memalign_graph.distill import context_window
    from memalign_graph.llamacpp import ChatLlamaCpp

    class Recorder(ChatLlamaCpp):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            sizes.append((sum(estimate_tokens(m.text) for m in messages), kwargs["max_tokens"]))
            return ChatResult(generations=[ChatGeneration(message=AIMessage('{"principles": []}'))])

    sizes = []
    model = Recorder(n_ctx=8192, n_parallel=2)
    assert context_window(model) == 4096 and context_window(StubChatModel()) is None
    long = [feedback(f"r{i}", "SELECT " + "x, " * 300, text="Use the certified view. " * 20) for i in range(40)]
    result = await adistill(model, CATEGORICAL, long, [], batch_size=50, token_budget=100_000)
    assert len(sizes) > 1 and sorted(result.distilled) == sorted(r["id"] for r in long)
    assert all(prompt + answer <= 4096 for prompt, answer in sizes), sizes


def test_known_principles_are_budgeted_and_long_ids_fit_a_small_context(monkeypatch):
    import asyncio

    from memalign_graph import distill
    from memalign_graph.semantic import new_principle
    from memalign_graph.testing import StubChatModel
    from tests.conftest import CATEGORICAL, feedback

    text = "Rule number {} says something about tables and views."
    known = [new_principle(text.format(i), [f"k{i}"], "t") for i in range(300)]
    kept = distill.fit_known(known, 200)
    assert kept and kept == known[-len(kept) :] and len(kept) < 30

    monkeypatch.setattr(distill, "context_window", lambda model: 4096)  # the embedded model's slot
    model = StubChatModel()
    records = [feedback("x" * 200, "SELECT 1", text="Name every column.")]
    result = asyncio.run(distill.adistill(model, CATEGORICAL, records, known))
    assert result.distilled == ["x" * 200] and not result.failed
    prompt_tokens = sum(distill.estimate_tokens(m.text) for m in model.prompts[0])
    assert prompt_tokens < 4096 // 4 + 1000 and text.format(299) in model.prompts[0][0].text
