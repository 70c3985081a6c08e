"""LLM faults: timeouts, rate limits, unparseable answers and non-retryable errors, in judging and alignment.

Transient errors are retried with exponential backoff a bounded number of times
(``Context.max_retries`` / ``JudgeSettings``), then surface as errors naming the
record id and the model; non-transient errors are not retried; a judgment is never
invented. The stub model raises real ``openai`` exception types where a provider would.
"""

from __future__ import annotations

import asyncio
import json
import pickle
from pathlib import Path

import httpx
import openai
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from memalign_graph import Context, JudgmentParseError, Memory, build_align_graph, build_judge_graph
from memalign_graph.classify import aclassify_pairs
from memalign_graph.distill import adistill
from memalign_graph.errors import JudgeBatchError, JudgeError, MemAlignError
from memalign_graph.faults import RETRY_DEFAULTS, is_transient
from memalign_graph.judge import arun_judge, run_judge
from memalign_graph.judge_graph import judge_many
from memalign_graph.testing import StubChatModel, StubTimeout, consolidation_pairs, default_responder
from tests.conftest import CATEGORICAL, KeywordEmbeddings, feedback, location_of

BACKOFF_S = 0.02  # the first wait in these tests; later waits double (plus jitter)
REQUEST = httpx.Request("POST", "https://api.example.test/v1/chat/completions")
CASE = {"id": "case-7", "inputs": "Weekly revenue", "outputs": "SELECT * FROM raw.payments"}


def rate_limited(*_: object) -> openai.RateLimitError:
    return openai.RateLimitError(
        "Rate limit reached for requests", response=httpx.Response(429, request=REQUEST), body=None
    )


def unauthorised(*_: object) -> openai.AuthenticationError:
    return openai.AuthenticationError(
        "Incorrect API key provided", response=httpx.Response(401, request=REQUEST), body=None
    )


def bad_request(*_: object) -> openai.BadRequestError:
    return openai.BadRequestError("Invalid 'messages'", response=httpx.Response(400, request=REQUEST), body=None)


def api_timeout(*_: object) -> openai.APITimeoutError:
    return openai.APITimeoutError(request=REQUEST)


def always(make):
    return lambda number, messages: make()


def first(n, make):
    return lambda number, messages: make() if number <= n else None


def garbage(messages, kwargs):
    return "I think it is probably fine, more or less."


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Tiny waits, so retry tests stay fast (graphs and alignment read the defaults)."""
    monkeypatch.setitem(RETRY_DEFAULTS, "backoff_s", BACKOFF_S)
    monkeypatch.setitem(RETRY_DEFAULTS, "backoff_max_s", 1.0)


@pytest.fixture
def emb():
    return DeterministicFakeEmbedding(size=32)


@pytest.fixture
def mem(tmp_path: Path, emb) -> Memory:
    return Memory.create(tmp_path / "mem", CATEGORICAL, embeddings=emb)


def ctx(mem: Memory, model, emb, **kw) -> Context:
    return Context(store=location_of(mem), model=model, embeddings=emb, **kw)


def gaps(model: StubChatModel) -> list[float]:
    times = model.call_times
    return [b - a for a, b in zip(times, times[1:])]


# --- what counts as transient ------------------------------------------------------------------------------------


class RateLimitError(Exception):
    """Named like anthropic's / mistral's: recognised by name, without importing the SDK."""


class OverloadedError(Exception):
    pass


class StatusError(Exception):
    def __init__(self, status_code):
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def _chained_timeout():
    try:
        raise TimeoutError("read timed out")
    except TimeoutError as exc:
        try:
            raise RuntimeError("provider call failed") from exc
        except RuntimeError as outer:
            return outer


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError("t"),
        StubTimeout("t"),
        ConnectionResetError("reset"),
        api_timeout(),
        openai.APIConnectionError(request=REQUEST),
        rate_limited(),
        openai.InternalServerError("boom", response=httpx.Response(500, request=REQUEST), body=None),
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        httpx.HTTPStatusError("busy", request=REQUEST, response=httpx.Response(503, request=REQUEST)),
        RateLimitError("name only"),
        OverloadedError("529"),
        StatusError(429),
        StatusError(502),
        _chained_timeout(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_errors_are_recognised(exc):
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        unauthorised(),
        bad_request(),
        openai.PermissionDeniedError("no", response=httpx.Response(403, request=REQUEST), body=None),
        openai.NotFoundError("no model", response=httpx.Response(404, request=REQUEST), body=None),
        httpx.HTTPStatusError("auth", request=REQUEST, response=httpx.Response(401, request=REQUEST)),
        StatusError(400),
        ValueError("bad"),
        RuntimeError("bug"),
        KeyError("x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_errors_are_not_transient(exc):
    assert not is_transient(exc)


# --- judging: run_judge / arun_judge -----------------------------------------------------------------------------


def test_judge_retries_timeouts_then_answers_with_attempts_counted():
    model = StubChatModel(faults=first(2, api_timeout))
    judgment = run_judge(model, CATEGORICAL, CASE, [], [], {"max_retries": 2, "backoff_s": BACKOFF_S})
    assert judgment["value"] == "pass" and judgment["attempts"] == 3 == model.calls
    assert [type(e).__name__ for e in model.raised] == ["APITimeoutError", "APITimeoutError", "NoneType"]


@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_judge_always_rate_limited_raises_with_record_id_after_exactly_n_attempts(retries):
    model = StubChatModel(faults=always(rate_limited), model_name="gpt-test")
    with pytest.raises(JudgeError) as info:
        await arun_judge(model, CATEGORICAL, CASE, [], [], {"max_retries": retries, "backoff_s": 0.001})
    err = info.value
    assert model.calls == retries + 1 == err.attempts
    assert err.record_id == "case-7" and err.model == "gpt-test" and err.transient
    assert "case-7" in str(err) and "gpt-test" in str(err) and "RateLimitError" in str(err)
    assert isinstance(err.__cause__, openai.RateLimitError)


def test_transient_retries_can_be_set_apart_from_repairs():
    model = StubChatModel(faults=always(rate_limited))
    with pytest.raises(JudgeError) as info:
        run_judge(model, CATEGORICAL, CASE, [], [], {"max_retries": 2, "transient_retries": 4, "backoff_s": 0.001})
    assert model.calls == 5 == info.value.attempts


@pytest.mark.parametrize("make", [unauthorised, bad_request, lambda: ValueError("prompt too long")])
def test_judge_does_not_retry_non_transient_errors(make):
    model = StubChatModel(faults=always(make))
    with pytest.raises(JudgeError) as info:
        run_judge(model, CATEGORICAL, CASE, [], [], {"max_retries": 3, "backoff_s": BACKOFF_S})
    assert model.calls == 1 == info.value.attempts and not info.value.transient
    assert info.value.record_id == "case-7" and "not retryable" in str(info.value)


async def test_judge_unparseable_every_time_raises_parse_error_with_id_and_invents_nothing():
    model = StubChatModel(responder=garbage, model_name="tiny")
    with pytest.raises(JudgmentParseError) as info:
        await arun_judge(model, CATEGORICAL, CASE, [], [], {"max_retries": 2})
    err = info.value
    assert model.calls == 3 == err.attempts and err.record_id == "case-7" and err.model == "tiny"
    assert err.raw == garbage(None, None) and "case-7" in str(err) and "no JSON object" in str(err)


def test_transient_errors_and_repairs_combine_and_are_all_counted():
    answers = iter(['{"value": "maybe"}', '{"rationale": "ok", "value": "fail"}'])
    model = StubChatModel(faults=[api_timeout(), None, rate_limited(), None], responder=lambda m, k: next(answers))
    judgment = run_judge(model, CATEGORICAL, CASE, [], [], {"max_retries": 1, "backoff_s": 0.001})
    assert judgment["value"] == "fail" and judgment["attempts"] == 4 == model.calls


def test_judge_backoff_waits_and_grows_between_attempts():
    model = StubChatModel(faults=always(rate_limited))
    with pytest.raises(JudgeError):
        run_judge(model, CATEGORICAL, CASE, [], [], {"max_retries": 3, "backoff_s": BACKOFF_S})
    waits = gaps(model)
    assert len(waits) == 3
    # wait k >= BACKOFF_S * 2**k (jitter only adds): exponential backoff, never a busy retry.
    assert all(w >= BACKOFF_S * 2**k * 0.95 for k, w in enumerate(waits)), waits


async def test_judge_backoff_uses_the_event_loop_not_a_blocking_sleep():
    model = StubChatModel(faults=first(2, rate_limited))
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        judgment = await arun_judge(model, CATEGORICAL, CASE, [], [], {"max_retries": 2, "backoff_s": BACKOFF_S})
    finally:
        task.cancel()
    assert judgment["attempts"] == 3 and sum(gaps(model)) >= BACKOFF_S * 3 * 0.95
    assert ticks >= 3  # the loop kept running while the judge waited


def test_judge_errors_survive_pickling():
    err = JudgeError("m", "RateLimitError: slow down", record_id="c1", attempts=3, transient=True)
    again = pickle.loads(pickle.dumps(err))
    assert (again.record_id, again.attempts, again.transient, str(again)) == ("c1", 3, True, str(err))
    parse = pickle.loads(pickle.dumps(JudgmentParseError("m", "raw", "no JSON", record_id="c2", attempts=2)))
    assert parse.record_id == "c2" and parse.attempts == 2 and "c2" in str(parse)


# --- judging through the graph (sync and async) ------------------------------------------------------------------


def test_judge_graph_sync_retries_timeouts_then_answers(mem, emb):
    model = StubChatModel(faults=first(2, api_timeout))
    out = build_judge_graph().compile().invoke(CASE, context=ctx(mem, model, emb, max_retries=2))
    assert out["judgment"]["value"] == "pass" and out["judgment"]["attempts"] == 3 == model.calls
    assert out["judgment"]["id"] == "case-7"


async def test_judge_graph_async_retries_timeouts_then_answers(mem, emb):
    model = StubChatModel(faults=first(2, StubTimeout))
    out = await build_judge_graph().compile().ainvoke(CASE, context=ctx(mem, model, emb, max_retries=2))
    assert out["judgment"]["attempts"] == 3 == model.calls


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_judge_graph_always_rate_limited_names_the_case(mem, emb, mode):
    model = StubChatModel(faults=always(rate_limited), model_name="gpt-test")
    graph = build_judge_graph().compile()
    context = ctx(mem, model, emb, max_retries=3)
    with pytest.raises(JudgeError) as info:
        if mode == "sync":
            graph.invoke(CASE, context=context)
        else:
            await graph.ainvoke(CASE, context=context)
    assert info.value.record_id == "case-7" and info.value.attempts == 4 == model.calls
    assert "gpt-test" in str(info.value)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_judge_graph_unparseable_raises_with_id(mem, emb, mode):
    model = StubChatModel(responder=garbage)
    graph = build_judge_graph().compile()
    context = ctx(mem, model, emb, max_retries=1)
    with pytest.raises(JudgmentParseError) as info:
        if mode == "sync":
            graph.invoke(CASE, context=context)
        else:
            await graph.ainvoke(CASE, context=context)
    assert info.value.record_id == "case-7" and model.calls == 2 == info.value.attempts


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_judge_graph_auth_error_is_not_retried(mem, emb, mode):
    model = StubChatModel(faults=always(unauthorised))
    graph = build_judge_graph().compile()
    context = ctx(mem, model, emb, max_retries=3)
    with pytest.raises(JudgeError) as info:
        if mode == "sync":
            graph.invoke(CASE, context=context)
        else:
            await graph.ainvoke(CASE, context=context)
    assert model.calls == 1 and info.value.record_id == "case-7"
    assert isinstance(info.value.__cause__, openai.AuthenticationError)


def test_judge_many_names_the_failed_cases_and_keeps_the_others(mem, emb):
    def faults(number, messages):
        return rate_limited() if "poison" in messages[-1].text else None

    model = StubChatModel(faults=faults)
    cases = [
        {"id": "ok-1", "inputs": "a", "outputs": "SELECT 1"},
        {"id": "bad-2", "inputs": "b", "outputs": "SELECT poison"},
        {"id": "ok-3", "inputs": "c", "outputs": "SELECT 3"},
        {"inputs": "d", "outputs": "SELECT poison again"},
    ]
    with pytest.raises(JudgeBatchError) as info:
        judge_many(build_judge_graph().compile(), cases, ctx(mem, model, emb, max_retries=1), concurrency=2)
    err = info.value
    assert list(err.failed) == ["bad-2", "#3"] and "bad-2" in str(err) and "#3" in str(err)
    assert all(isinstance(e, JudgeError) and e.attempts == 2 for e in err.errors.values())
    assert err.errors["bad-2"].record_id == "bad-2" and err.errors["#3"].record_id is None
    assert [j and j["id"] for j in err.judgments] == ["ok-1", None, "ok-3", None]
    assert model.calls == 2 + 2 + 1 + 1 and isinstance(err, MemAlignError)


# --- alignment: distillation -------------------------------------------------------------------------------------


def records(n=3):
    return [feedback(f"r{i}", f"SELECT {i}", text=f"Rule number {i} applies. Details.") for i in range(n)]


async def test_adistill_retries_timeouts_with_backoff_then_succeeds():
    model = StubChatModel(faults=first(2, api_timeout))
    result = await adistill(model, CATEGORICAL, records(), [], max_retries=2, backoff_s=BACKOFF_S)
    assert result.calls == 3 == model.calls and not result.failed and sorted(result.distilled) == ["r0", "r1", "r2"]
    assert all(w >= BACKOFF_S * 2**k * 0.95 for k, w in enumerate(gaps(model))), gaps(model)


@pytest.mark.parametrize(
    ("faults", "responder", "calls", "error"),
    [
        (always(rate_limited), None, 3, "RateLimitError: Rate limit reached"),
        (None, garbage, 3, "UnparseableAnswer: no JSON object"),
        (always(unauthorised), None, 1, "AuthenticationError: Incorrect API key"),
        (always(bad_request), None, 1, "BadRequestError"),
    ],
    ids=["rate-limited", "unparseable", "auth", "bad-request"],
)
async def test_adistill_reports_failed_ids_with_the_error_after_bounded_attempts(faults, responder, calls, error):
    model = StubChatModel(faults=faults, responder=responder)
    result = await adistill(model, CATEGORICAL, records(), [], max_retries=2, backoff_s=0.001)
    assert model.calls == calls == result.calls and result.distilled == [] and result.principles == []
    assert sorted(result.failed) == ["r0", "r1", "r2"]
    assert error in result.failed["r0"] and f"after {calls} attempt(s)" in result.failed["r0"]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_align_graph_retries_timeouts_then_distills(mem, emb, mode):
    model = StubChatModel(faults=first(2, StubTimeout))
    graph = build_align_graph().compile()
    payload = {"feedback": records(2)}
    context = ctx(mem, model, emb)
    out = graph.invoke(payload, context=context) if mode == "sync" else await graph.ainvoke(payload, context=context)
    report = out["report"]
    # three distillation attempts (two timed out), then one verdict-directive check of both principles
    assert report["failed"] == {} and sorted(report["distilled"]) == ["r0", "r1"] and report["llm_calls"] == 4
    mem.refresh()
    assert sorted(p["text"] for p in mem.principles) == ["Rule number 0 applies.", "Rule number 1 applies."]


@pytest.mark.parametrize(("mode", "retries"), [("sync", 2), ("async", 2), ("sync", 0), ("async", 3)])
async def test_align_graph_always_rate_limited_stores_no_principle_and_names_the_ids(mem, emb, mode, retries):
    model = StubChatModel(faults=always(rate_limited))
    graph = build_align_graph().compile()
    payload = {"feedback": records(2)}
    context = ctx(mem, model, emb, max_retries=retries)
    out = graph.invoke(payload, context=context) if mode == "sync" else await graph.ainvoke(payload, context=context)
    report = out["report"]
    assert model.calls == retries + 1 == report["llm_calls"]  # one batch: N + 1 attempts, then given up
    assert f"after {retries + 1} attempt(s)" in report["failed"]["r1"]
    assert sorted(report["failed"]) == ["r0", "r1"] and "RateLimitError" in report["failed"]["r0"]
    assert report["distilled"] == [] and report["new_principles"] == []
    mem.refresh()
    assert mem.principles == []  # nothing invented
    assert {rid: e["distilled"] for rid, e in mem.records.items()} == {"r0": False, "r1": False}
    # The records stay undistilled; the next alignment with a working model picks them up.
    again = mem.align(records(2), model=StubChatModel())
    assert sorted(again.distilled) == ["r0", "r1"] and len(mem.principles) == 2


def test_align_auth_error_is_not_retried(mem):
    model = StubChatModel(faults=always(unauthorised))
    report = mem.align(records(2), model=model)
    assert model.calls == 1 == report.llm_calls and "AuthenticationError" in report.failed["r1"]
    assert "after 1 attempt(s)" in report.failed["r1"] and mem.principles == []


def test_align_unparseable_distillation_is_retried_then_reported(mem):
    model = StubChatModel(responder=garbage)
    report = mem.align(records(1), model=model, max_retries=1)
    assert model.calls == 2 and report.failed == {
        "r0": "UnparseableAnswer: no JSON object found in the answer (after 2 attempt(s))"
    }
    assert mem.principles == []


# --- alignment: consolidation fails safe -------------------------------------------------------------------------


@pytest.fixture
def kw_memory(tmp_path):
    memory = Memory.create(tmp_path / "kw", CATEGORICAL, embeddings=KeywordEmbeddings(size=256))
    memory.align([feedback("r1", "SELECT * FROM raw.orders", text="Never use raw tables.")], model=StubChatModel())
    return memory


def consolidation(faults=None, relation="same"):
    """Distillation and the verdict-directive check answer normally; consolidation calls get ``faults``."""

    def responder(messages, kwargs):
        if consolidation_pairs(messages) is not None:
            return json.dumps({"verdicts": [{"pair": 1, "relation": relation}]})
        return default_responder(messages, kwargs)

    def fault(number, messages):
        if faults is not None and consolidation_pairs(messages) is not None:
            return faults(number)
        return None

    return StubChatModel(responder=responder, faults=fault)


def verdict_calls(model):
    return sum(consolidation_pairs(prompt) is not None for prompt in model.prompts)


@pytest.mark.parametrize(
    ("faults", "calls"),
    [(rate_limited, 3), (unauthorised, 1), (lambda n: ValueError("unreadable"), 1)],
    ids=["rate-limited", "auth", "other"],
)
def test_consolidation_that_keeps_failing_keeps_both_principles(kw_memory, faults, calls):
    model = consolidation(faults)
    report = kw_memory.align(
        [feedback("r2", "SELECT * FROM raw.pay", text="Do not use the raw tables.")],
        model=model,
        consolidate_threshold=0.5,
    )
    assert verdict_calls(model) == calls
    assert report.consolidation == {"pairs": 1, "same": 0, "contradicts": 0, "different": 0}
    assert sorted((p["text"], p["sources"]) for p in kw_memory.principles) == [
        ("Do not use the raw tables.", ["r2"]),
        ("Never use raw tables.", ["r1"]),
    ]  # unclassified is treated as "different": nothing merged or replaced


def test_consolidation_retries_unreadable_and_transient_answers(kw_memory):
    answers = iter(["not json", '{"verdicts": [{"pair": 1, "relation": "same"}]}'])

    def responder(messages, kwargs):
        if '"verdicts"' in "\n".join(m.text for m in messages):
            return next(answers)
        return default_responder(messages, kwargs)

    timeouts = iter([True, False, False])

    def fault(number, messages):
        if '"verdicts"' in "\n".join(m.text for m in messages) and next(timeouts):
            return api_timeout()
        return None

    model = StubChatModel(responder=responder, faults=fault)
    report = kw_memory.align(
        [feedback("r2", "SELECT * FROM raw.pay", text="Do not use the raw tables.")],
        model=model,
        consolidate_threshold=0.5,
    )
    assert verdict_calls(model) == 3  # timeout, unreadable answer, then "same"
    assert report.consolidation["same"] == 1
    assert [(p["text"], p["sources"]) for p in kw_memory.principles] == [("Never use raw tables.", ["r1", "r2"])]


async def test_aclassify_pairs_gives_up_after_bounded_attempts_and_counts_them():
    from memalign_graph.faults import CallCounter

    counter = CallCounter()
    model = StubChatModel(faults=always(rate_limited))
    pairs = [("c1", "Do not use raw tables.", "p1", "Never use raw tables.")]
    assert await aclassify_pairs(model, pairs, max_retries=3, backoff_s=0.001, counter=counter) == {}
    assert counter.n == 4 == model.calls
