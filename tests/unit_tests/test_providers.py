"""Any provider: structured judgments by what each chat model supports, configuration, the sync event loop.

The test chat models are shaped like providers: one that only calls tools (``bind_tools``,
LangChain's base ``with_structured_output``), one that only has JSON mode, one with native JSON
schema output and tool calling (whose model profile decides), and one with neither.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import threading
from dataclasses import MISSING, fields
from operator import itemgetter
from typing import Any, Literal

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.runnables import RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool

from memalign_graph import Context, Memory, models
from memalign_graph.classify import aclassify_pairs
from memalign_graph.distill import adistill
from memalign_graph.embeddings import resolve_embeddings
from memalign_graph.judge import arun_judge, run_judge
from memalign_graph.structured import bind_structured, structured_method
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, NUMERIC, feedback

CASE = {"id": "c1", "inputs": "List orders", "outputs": "SELECT * FROM raw.orders"}


def judgment(value: Any, rationale: str = "uses the raw table") -> dict[str, Any]:
    return {"rationale": rationale, "value": value}


class Recording(FakeMessagesListChatModel):
    """Cycles through ``responses`` and records the keyword arguments of every call."""

    seen: list[dict[str, Any]] = []

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append({"kwargs": kwargs, "messages": list(messages)})
        return super()._generate(messages, stop, run_manager, **kwargs)


class ToolsOnly(Recording):
    """A provider that offers tool calling only (LangChain's base ``with_structured_output`` uses it)."""

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], tool_choice=tool_choice, **kwargs)


class JsonModeOnly(Recording):
    """A provider that offers JSON mode only (no tools, no JSON schema)."""

    def with_structured_output(self, schema=None, *, method: Literal["json_mode"] = "json_mode", **kwargs):
        include_raw = kwargs.pop("include_raw", False)
        if method != "json_mode" or kwargs:
            raise ValueError(f"unsupported: {method}, {kwargs}")
        llm = self.bind(response_format={"type": "json_object"})
        if not include_raw:
            return llm | JsonOutputParser()
        assign = RunnablePassthrough.assign(parsed=itemgetter("raw") | JsonOutputParser(), parsing_error=lambda _: None)
        return RunnableMap(raw=llm) | assign.with_fallbacks(
            [RunnablePassthrough.assign(parsed=lambda _: None)], exception_key="parsing_error"
        )


class SchemaAndTools(ToolsOnly):
    """A provider with native JSON-schema output and tool calling, tool calling its default (Anthropic-shaped)."""

    def with_structured_output(
        self, schema=None, *, method: Literal["function_calling", "json_schema"] = "function_calling", **kwargs
    ):
        self.seen.append({"method": method})
        if method == "function_calling":
            return super().with_structured_output(schema, **kwargs)
        include_raw = kwargs.pop("include_raw", False)
        llm = self.bind(output_format={"type": "json_schema", "schema": schema})
        assign = RunnablePassthrough.assign(parsed=itemgetter("raw") | JsonOutputParser(), parsing_error=lambda _: None)
        return RunnableMap(raw=llm) | assign if include_raw else llm | JsonOutputParser()


def tool_call(args: dict[str, Any], name: str = "judgment") -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": "call-1", "type": "tool_call"}])


def test_tool_calling_only_model_judges_through_a_forced_tool_call():
    model = ToolsOnly(responses=[tool_call(judgment("fail"))], seen=[])
    assert structured_method(model) == "function_calling"
    result = run_judge(model, CATEGORICAL, CASE, [], [])
    assert result["value"] == "fail" and result["rationale"] == "uses the raw table" and result["attempts"] == 1
    kwargs = model.seen[0]["kwargs"]
    (tool,) = kwargs["tools"]
    assert tool["function"]["name"] == "judgment" and kwargs["tool_choice"] == "any"
    assert tool["function"]["parameters"]["properties"]["value"]["enum"] == ["pass", "fail"]


def test_tool_call_with_a_disallowed_value_goes_through_the_repair_loop():
    model = ToolsOnly(responses=[tool_call(judgment("maybe")), tool_call(judgment("pass", "fine"))], seen=[])
    result = run_judge(model, CATEGORICAL, CASE, [], [], {"max_retries": 1})
    assert result["value"] == "pass" and result["attempts"] == 2
    repair = model.seen[1]["messages"]
    assert json.loads(repair[-2].text) == judgment("maybe") and "maybe" in repair[-1].text


def test_json_mode_only_model_judges_in_json_mode():
    model = JsonModeOnly(responses=[AIMessage(json.dumps(judgment(4, "warm tone")))], seen=[])
    assert structured_method(model) == "json_mode"
    result = run_judge(model, NUMERIC, CASE, [], [])
    assert result["value"] == 4 and result["rationale"] == "warm tone"
    assert model.seen[0]["kwargs"]["response_format"] == {"type": "json_object"}


async def test_model_with_neither_is_asked_through_the_prompt_and_repaired():
    model = Recording(responses=[AIMessage("I think it fails."), AIMessage(json.dumps(judgment("fail")))], seen=[])
    assert structured_method(model) is None
    result = await arun_judge(model, CATEGORICAL, CASE, [], [], {"max_retries": 1})
    assert result["value"] == "fail" and result["attempts"] == 2
    assert all(not call["kwargs"] for call in model.seen)  # no tools, no response_format, no cap


@pytest.mark.parametrize(
    "native, expected", [(True, "json_schema"), (False, "function_calling"), (None, "function_calling")]
)
def test_profile_decides_between_native_json_schema_and_tool_calling(native, expected):
    profile = {} if native is None else {"structured_output": native}
    model = SchemaAndTools(responses=[tool_call(judgment("pass"))], seen=[], profile=profile)
    assert structured_method(model) == expected


def test_native_json_schema_output_is_used_where_the_profile_says_so():
    answer = AIMessage(json.dumps(judgment("fail")))
    model = SchemaAndTools(responses=[answer], seen=[], profile={"structured_output": True, "tool_calling": True})
    result = run_judge(model, CATEGORICAL, CASE, [], [])
    assert result["value"] == "fail" and model.seen[0] == {"method": "json_schema"}
    assert model.seen[1]["kwargs"]["output_format"]["schema"]["properties"]["value"]["enum"] == ["pass", "fail"]


def test_profile_without_tool_calling_falls_back_to_the_prompt():
    model = ToolsOnly(responses=[AIMessage(json.dumps(judgment("fail")))], seen=[], profile={"tool_calling": False})
    assert structured_method(model) is None
    assert run_judge(model, CATEGORICAL, CASE, [], [])["value"] == "fail"


async def test_distillation_and_consolidation_through_tool_calls():
    records = [feedback("r1", "SELECT * FROM raw.orders", text="Use the certified view.")]
    principles = {"principles": [{"text": "Prefer certified views over raw tables.", "sources": ["r1"]}]}
    model = ToolsOnly(responses=[tool_call(principles, "principles")], seen=[])
    result = await adistill(model, CATEGORICAL, records, [])
    assert result.distilled == ["r1"] and [p["text"] for p in result.principles] == [
        principles["principles"][0]["text"]
    ]
    assert model.seen[0]["kwargs"]["tools"][0]["function"]["name"] == "principles"
    verdicts = ToolsOnly(responses=[tool_call({"verdicts": [{"pair": 1, "relation": "same"}]}, "verdicts")], seen=[])
    assert await aclassify_pairs(verdicts, [("new", "Use views.", "old", "Prefer views.")]) == {"new": ("old", "same")}


def test_hosted_models_get_no_output_cap():
    model = ToolsOnly(responses=[tool_call(judgment("pass"))], seen=[])
    bind_structured(model, {"type": "object"}, "judgment", max_tokens=40).invoke("judge")
    plain = Recording(responses=[AIMessage("{}")], seen=[])
    bind_structured(plain, {"type": "object"}, "judgment", max_tokens=40).invoke("judge")
    for call in model.seen + plain.seen:
        assert not {"max_tokens", "max_completion_tokens"} & set(call["kwargs"])


def test_forced_modes_are_checked_against_what_the_model_offers():
    with pytest.raises(ValueError, match="structured_output 'grammar'.*auto, json_schema"):
        structured_method(StubChatModel(), "grammar")
    with pytest.raises(ValueError, match="offers no json_mode.*it offers: function_calling"):
        structured_method(ToolsOnly(responses=[AIMessage("")]), "json_mode")
    assert structured_method(JsonModeOnly(responses=[AIMessage("")]), "prompt") is None
    # A model without structured output of its own gets an OpenAI-style response_format when forced.
    seen: list[dict[str, Any]] = []
    stub = StubChatModel(responder=lambda m, kwargs: seen.append(kwargs) or json.dumps(judgment("fail")))
    assert run_judge(stub, CATEGORICAL, CASE, [], [], {"structured_output": "json_schema"})["value"] == "fail"
    assert seen[0]["response_format"]["json_schema"]["schema"]["properties"]["value"]["enum"] == ["pass", "fail"]


def test_reasoning_models_get_no_temperature_and_others_get_zero(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    url = "http://127.0.0.1:9/v1"
    assert models.resolve_chat_model("o3-mini", base_url=url).temperature is None
    assert models.resolve_chat_model("gpt-4.1-mini", base_url=url).temperature == 0
    assert models.resolve_chat_model("my-local-model", base_url=url).temperature == 0
    assert models.resolve_chat_model("openai:o1").temperature in (None, 1)  # o1 takes only its default
    assert models.resolve_chat_model("openai:gpt-4o").temperature == 0


def test_base_url_with_a_model_instance_is_refused():
    with pytest.raises(ValueError, match="base_url 'http://x/v1' was given with a StubChatModel instance"):
        models.resolve_chat_model(StubChatModel(), base_url="http://x/v1")


def test_a_missing_offline_runtime_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'memalign-graph\[offline\]'"):
        models.resolve_chat_model("llamacpp:/models/judge.gguf")


def test_openai_embeddings_never_download_a_tokenizer(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    embeddings = resolve_embeddings("openai:text-embedding-3-small")
    assert embeddings.check_embedding_ctx_length is False


def test_run_sync_uses_one_loop_keeps_context_and_works_inside_a_running_loop():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def where() -> tuple[int, str, str]:
        return id(asyncio.get_running_loop()), threading.current_thread().name, var.get()

    var.set("caller")
    first, second = models.run_sync(where()), models.run_sync(where())
    assert first == second and first[1] == "memalign-sync-loop" and first[2] == "caller"

    async def inside() -> tuple[int, str, str]:
        return models.run_sync(where())  # a sync API called from code that runs in another loop

    assert asyncio.run(inside()) == first

    async def on_its_own_loop() -> None:
        models.run_sync(where())

    with pytest.raises(RuntimeError, match="await the async form"):
        models.run_sync(on_its_own_loop())


def test_run_sync_propagates_errors():
    async def boom() -> None:
        raise KeyError("gone")

    with pytest.raises(KeyError, match="gone"):
        models.run_sync(boom())


def test_python_api_defaults_are_the_graph_context_defaults():
    context = {f.name: f.default for f in fields(Context) if f.default is not MISSING}  # not the env-read ones
    renamed = {"backoff_s": "retry_backoff_s", "backoff_max_s": "retry_backoff_max_s"}
    for method in (Memory.judge, Memory.ajudge, Memory.align, Memory.aalign):
        parameters = inspect.signature(method).parameters
        assert "base_url" in parameters and parameters["model"].kind is inspect.Parameter.KEYWORD_ONLY
        # Context.author is None when unset: the graphs then record the signed-in user, else "expert",
        # which is Memory.align's default.
        shared = {
            name: p.default for name, p in parameters.items() if renamed.get(name, name) in context and name != "author"
        }
        assert shared and all(default == context[renamed.get(n, n)] for n, default in shared.items()), method
        assert method.__doc__ and "Raises:" in method.__doc__


def test_memory_judge_validates_its_arguments(tmp_path, embeddings):
    memory = Memory.create(tmp_path / "m", CATEGORICAL, embeddings=embeddings)
    with pytest.raises(ValueError, match="precedent 'always'"):
        memory.judge(CASE, model=StubChatModel(), precedent="always")
    with pytest.raises(ValueError, match="structured_output 'xml'"):
        memory.judge(CASE, model=StubChatModel(), structured_output="xml")
    with pytest.raises(ValueError, match="k must be a non-negative integer"):
        memory.judge(CASE, model=StubChatModel(), k=-1)
    from memalign_graph import RecordError

    with pytest.raises(RecordError, match="case"):
        memory.judge({"inputs": "no outputs"}, model=StubChatModel())


def test_memory_judge_applies_the_expert_precedent_and_uses_memory(tmp_path, embeddings):
    memory = Memory.create(tmp_path / "m", CATEGORICAL, embeddings=embeddings)
    record = feedback("r1", CASE["outputs"], value="fail", text="Use the certified view.", inputs=CASE["inputs"])
    memory.align([record], model=StubChatModel())
    stub = StubChatModel()
    same = memory.judge({"inputs": CASE["inputs"], "outputs": CASE["outputs"]}, model=stub)
    assert same["precedent"] == "r1" and same["value"] == "fail" and stub.calls == 0
    other = memory.judge({"id": "c2", "inputs": "Count users", "outputs": "SELECT 1"}, model=stub, precedent="off")
    assert other["id"] == "c2" and other["episode_ids"] == ["r1"] and stub.calls == 1
    assert other["principle_ids"] == [p["id"] for p in memory.principles]
    assert "Use the certified view." in stub.prompts[0][0].text


class OwnShape(Recording):
    """A provider whose structured output is not LangChain's ``RunnableMap(raw=...) | parser``."""

    def with_structured_output(self, schema=None, *, method: Literal["json_mode"] = "json_mode", **kwargs):
        from langchain_core.runnables import RunnableLambda

        llm = self.bind(response_format={"type": "json_object"})
        return RunnableLambda(lambda messages: {"raw": llm.invoke(messages), "parsed": None}, name="own_shape")


def test_a_provider_with_its_own_structured_output_shape_is_called_through_it():
    model = OwnShape(responses=[AIMessage(json.dumps(judgment("fail")))], seen=[])
    result = run_judge(model, CATEGORICAL, CASE, [], [])
    assert result["value"] == "fail" and model.seen[0]["kwargs"]["response_format"] == {"type": "json_object"}


def test_the_tool_call_named_for_the_schema_is_the_answer():
    other = {"name": "lookup", "args": {"table": "orders"}, "id": "call-0", "type": "tool_call"}
    answer = AIMessage(content="", tool_calls=[other, tool_call(judgment("fail")).tool_calls[0]])
    result = run_judge(ToolsOnly(responses=[answer], seen=[]), CATEGORICAL, CASE, [], [])
    assert result["value"] == "fail" and result["attempts"] == 1


def test_structured_plans_keep_no_model_alive():
    import gc
    import weakref

    model = ToolsOnly(responses=[tool_call(judgment("pass"))], seen=[])
    bind_structured(model, {"type": "object"}, "judgment").invoke("judge")
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


def test_a_model_is_planned_once_per_schema_and_again_for_another():
    answers = [AIMessage(json.dumps(judgment("fail")))] * 3 + [AIMessage(json.dumps(judgment(4)))]
    model = SchemaAndTools(responses=answers, seen=[], profile={"structured_output": True})
    values = [run_judge(model, CATEGORICAL, CASE, [], [])["value"] for _ in range(3)]
    values.append(run_judge(model, NUMERIC, CASE, [], [])["value"])
    assert values == ["fail", "fail", "fail", 4]
    assert [call for call in model.seen if "method" in call] == [{"method": "json_schema"}] * 2
    sent = [c["kwargs"]["output_format"]["schema"]["properties"]["value"]["enum"] for c in model.seen if "kwargs" in c]
    assert sent == [["pass", "fail"]] * 3 + [NUMERIC.values]
