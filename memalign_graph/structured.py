"""Structured output across providers: one answer in a JSON schema from any LangChain chat model.

Used alike by the judge (:mod:`memalign_graph.judge`), distillation and consolidation
(:mod:`memalign_graph.distill`). :func:`bind_structured` asks through LangChain's standard
``with_structured_output(schema, method=..., include_raw=True)``, with the method each model
supports (:func:`structured_method`):

* a **JSON schema** (native structured output: OpenAI and compatible servers, Ollama, Anthropic
  and Google models whose profile says so); the in-process llama.cpp model decodes under a
  grammar compiled from the schema (``response_format``);
* **tool calling** (any model with ``bind_tools``): the tool call's arguments become the answer;
* **JSON mode**;
* **plain text**: a model with none of them is asked through the prompt alone.

Whatever the method, the answer is an ``AIMessage`` whose text is the JSON (:func:`extract_json`
reads it, code fences and prose around it ignored), so one parser and one repair loop, the
caller's, serve every provider. A request parameter a provider refuses with HTTP 400
(``logprobs``, ``temperature``, ``response_format`` or tools) is dropped and the call made again,
and the refusal is remembered for that model in this process. Token counts come back as
:class:`Usage` (:func:`add_usage`).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import sys
import threading
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from typing_extensions import TypedDict

from memalign_graph.models import model_name

log = logging.getLogger(__name__)


class Usage(TypedDict):
    """Tokens counted by the model provider (LangChain ``usage_metadata``)."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


def empty_usage() -> Usage:
    """Zero token counts."""
    return Usage(input_tokens=0, output_tokens=0, total_tokens=0)


def add_usage(total: Usage | dict[str, int], message: BaseMessage) -> None:
    """Add ``message.usage_metadata`` (if any) into ``total`` in place."""
    meta = getattr(message, "usage_metadata", None) or {}
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        total[key] = total.get(key, 0) + int(meta.get(key, 0) or 0)  # type: ignore[literal-required]


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def extract_json(text: str) -> Any:
    """The first JSON object in ``text`` (code fences and surrounding prose ignored).

    Raises:
        ValueError: if no JSON object can be decoded.
    """
    cleaned = _FENCE.sub("", text.strip())
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", cleaned):
        try:
            obj, _ = decoder.raw_decode(cleaned, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    raise ValueError("no JSON object found in the answer")


STRUCTURED_OUTPUT_MODES = ("auto", "json_schema", "function_calling", "json_mode", "prompt")
# Request parameters a provider may refuse with HTTP 400 for some models (e.g. OpenAI's reasoning models refuse
# ``logprobs`` and ``temperature``; some OpenAI-compatible servers refuse ``response_format`` or tools). The
# call is then repeated without it, and the refusal is remembered for that model.
_REFUSABLE = {
    "logprobs": ("logprobs",),
    "temperature": ("temperature",),
    "structured": ("response_format", "json_schema", "tool_choice", "tools"),
}
_refused: dict[tuple[str, str, str | None], set[str]] = {}
_refused_lock = threading.Lock()


def _declared_methods(model: BaseChatModel) -> tuple[tuple[str, ...], str | None]:
    """The ``method`` values a model's own ``with_structured_output`` declares, and its default.

    ``((), None)`` when the model keeps LangChain's base implementation (tool calling only).
    """
    if type(model).with_structured_output is BaseChatModel.with_structured_output:
        return (), None
    parameter = inspect.signature(model.with_structured_output).parameters.get("method")
    if parameter is None:
        return (), None
    declared = tuple(m for m in ("json_schema", "function_calling", "json_mode") if m in str(parameter.annotation))
    default = parameter.default if isinstance(parameter.default, str) else None
    return declared, default


def _has_tools(model: BaseChatModel) -> bool:
    return (
        type(model).bind_tools is not BaseChatModel.bind_tools
        and (model.profile or {}).get("tool_calling") is not False
    )


def structured_method(model: BaseChatModel, structured_output: str = "auto") -> str | None:
    """How ``model`` is asked for a JSON answer: a ``with_structured_output`` method, or ``None`` (prompt only).

    ``"auto"`` picks, by what the model supports (its ``with_structured_output`` signature and its
    LangChain model profile): ``"json_schema"`` (native structured output: the answer is the JSON
    text itself, constrained by the schema, and keeps its log-probabilities) where the profile says
    the model has it, or where the profile is silent and the provider's own default is
    ``json_schema`` (OpenAI and compatible servers, Ollama); else ``"function_calling"`` where the
    model can call tools (Anthropic's default, any model with ``bind_tools``); else
    ``"json_mode"``; else ``None``. The in-process llama.cpp model returns ``"response_format"``:
    its grammar-constrained decoding of the schema.

    Args:
        model: any LangChain chat model.
        structured_output: one of :data:`STRUCTURED_OUTPUT_MODES`; a named method is used as is
            (``"json_schema"`` on a model without ``with_structured_output`` of its own passes an
            OpenAI-style ``response_format``), ``"prompt"`` gives ``None``.

    Raises:
        ValueError: for an unknown mode, or a method the model does not offer.
    """
    from memalign_graph.llamacpp import ChatLlamaCpp

    if structured_output not in STRUCTURED_OUTPUT_MODES:
        raise ValueError(f"structured_output {structured_output!r}: use one of {', '.join(STRUCTURED_OUTPUT_MODES)}")
    if structured_output == "prompt":
        return None
    if isinstance(model, ChatLlamaCpp):
        if structured_output in ("auto", "json_schema"):
            return "response_format"
        raise ValueError(f"model {model_name(model)!r} (in-process llama.cpp) offers json_schema only")
    declared, default = _declared_methods(model)
    tools = _has_tools(model)
    if structured_output != "auto":
        if structured_output in declared or (not declared and structured_output == "function_calling" and tools):
            return structured_output
        if not declared and structured_output == "json_schema":
            return "response_format"
        offered = list(declared) or (["function_calling"] if tools else [])
        raise ValueError(
            f"model {model_name(model)!r} offers no {structured_output} structured output "
            f"(it offers: {', '.join(offered) or 'none'}); use structured_output='auto' or 'prompt'"
        )
    native = (model.profile or {}).get("structured_output")
    if "json_schema" in declared and (native is True or (native is None and default == "json_schema")):
        return "json_schema"
    if tools and (not declared or "function_calling" in declared):
        return "function_calling"
    if "json_mode" in declared:
        return "json_mode"
    return default if default in declared else None


def _returns_logprobs(model: BaseChatModel) -> bool:
    """Whether to ask ``model`` for log-probabilities: OpenAI-compatible chat models that are not reasoning models."""
    # An OpenAI model's class is imported already; importing langchain-openai here would cost the
    # first judgment of every process seconds for models that are not OpenAI's.
    openai = sys.modules.get("langchain_openai.chat_models.base")
    if openai is None:
        return False
    return isinstance(model, openai.BaseChatOpenAI) and (model.profile or {}).get("reasoning_output") is not True


def _model_key(model: BaseChatModel) -> tuple[str, str, str | None]:
    base_url = getattr(model, "openai_api_base", None) or getattr(model, "base_url", None)
    return type(model).__qualname__, model_name(model), str(base_url) if base_url else None


def _refused_parameter(exc: BaseException, active: set[str]) -> str | None:
    """Which active request parameter a provider's HTTP 400 names, if any."""
    from langchain_core.exceptions import ModelInvalidRequestError

    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    if status != 400 and not isinstance(exc, ModelInvalidRequestError):
        return None
    text = str(exc).lower()
    for name in ("logprobs", "temperature", "structured"):
        if name in active and any(word in text for word in _REFUSABLE[name]):
            return name
    return None


def _as_answer(out: dict[str, Any]) -> BaseMessage:
    """The structured call's raw message, with a tool call's arguments as its JSON text (for the repair loop)."""
    raw: BaseMessage = out["raw"]
    calls = getattr(raw, "tool_calls", None) or []
    invalid = getattr(raw, "invalid_tool_calls", None) or []
    if not calls and not invalid:
        return raw
    parsed = out.get("parsed")
    if isinstance(parsed, dict):
        text = json.dumps(parsed, ensure_ascii=False)
    elif calls:
        text = json.dumps(calls[0].get("args", {}), ensure_ascii=False)
    else:
        text = str(invalid[0].get("args") or "")
    return AIMessage(
        content=text,
        id=raw.id,
        usage_metadata=getattr(raw, "usage_metadata", None),
        response_metadata=dict(raw.response_metadata),
    )


class StructuredCall:
    """One answer in a JSON schema from any chat model: ``invoke``/``ainvoke`` map messages to an ``AIMessage``.

    The answer's JSON is its ``text`` whatever the method (a tool call's arguments become the
    text), so one parser and one repair loop serve every provider. Built by :func:`bind_structured`.
    """

    def __init__(
        self,
        model: BaseChatModel,
        schema: dict[str, Any],
        name: str,
        method: str | None,
        logprobs: bool,
        max_tokens: int | None,
    ) -> None:
        self.model, self.schema, self.name, self.method = model, schema, name, method
        self.logprobs, self.max_tokens = logprobs, max_tokens
        self.key = _model_key(model)

    def _active(self) -> set[str]:
        with _refused_lock:
            refused = set(_refused.get(self.key, ()))
        active = set()
        if self.method is not None:
            active.add("structured")
        if self.logprobs and (self.method == "response_format" or _returns_logprobs(self.model)):
            active.add("logprobs")
        if getattr(self.model, "temperature", None) is not None and "temperature" in type(self.model).model_fields:
            active.add("temperature")
        return active - refused

    def _runnable(self, active: set[str]) -> Runnable:
        model = self.model
        if "temperature" not in active and getattr(model, "temperature", None) is not None:
            model = model.model_copy(update={"temperature": None})
        extra: dict[str, Any] = {}
        if "logprobs" in active:
            extra.update(logprobs=True, top_logprobs=20)
        if self.method == "response_format":
            from memalign_graph.llamacpp import ChatLlamaCpp

            if isinstance(model, ChatLlamaCpp) and self.max_tokens:
                extra["max_tokens"] = self.max_tokens
            if "structured" in active:
                extra["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": self.name, "schema": self.schema, "strict": False},
                }
            return model.bind(**extra) if extra else model
        if self.method is None or "structured" not in active:
            return model.bind(**extra) if extra else model
        titled = {"title": self.name, "description": f"The {self.name}, as JSON.", **self.schema}
        # BaseChatOpenAI passes extra keyword arguments (logprobs) through to the request.
        structured = model.with_structured_output(titled, method=self.method, include_raw=True, **extra)
        return structured | RunnableLambda(_as_answer, name="structured_answer")

    def _refused(self, exc: BaseException, active: set[str]) -> bool:
        parameter = _refused_parameter(exc, active)
        if parameter is None:
            return False
        log.warning("model %r refused %s (HTTP 400); asking again without it", model_name(self.model), parameter)
        with _refused_lock:
            _refused.setdefault(self.key, set()).add(parameter)
        return True

    def invoke(self, messages: Any, config: RunnableConfig | None = None) -> BaseMessage:
        """Ask once (again without a parameter the provider refused with HTTP 400)."""
        while True:
            active = self._active()
            try:
                return self._runnable(active).invoke(messages, config)
            except Exception as exc:
                if not self._refused(exc, active):
                    raise

    async def ainvoke(self, messages: Any, config: RunnableConfig | None = None) -> BaseMessage:
        """Async :meth:`invoke`."""
        while True:
            active = self._active()
            try:
                return await self._runnable(active).ainvoke(messages, config)
            except Exception as exc:
                if not self._refused(exc, active):
                    raise


def bind_structured(
    model: BaseChatModel,
    schema: dict[str, Any],
    name: str,
    structured_output: str = "auto",
    logprobs: bool = True,
    max_tokens: int | None = None,
) -> Runnable:
    """``model`` asked to answer in ``schema`` through LangChain's standard structured output.

    Uses ``model.with_structured_output(schema, method=..., include_raw=True)`` with the method
    :func:`structured_method` picks (JSON schema, tool calling or JSON mode, by what the model
    supports); the in-process llama.cpp model keeps its grammar-constrained ``response_format``;
    a model with none of them is asked through the prompt alone. Whatever the method, the result
    is an ``AIMessage`` whose text is the JSON answer, so the caller's parser and repair loop
    (the fallback for every model) work unchanged. Log-probabilities are requested from
    OpenAI-compatible models (not reasoning models) and the llama.cpp model. If the provider
    refuses a parameter with HTTP 400 (``logprobs``, ``temperature``, ``response_format`` or tools),
    the call is made again without it (within the same attempt: a judgment's ``attempts`` does not
    count it) and the refusal is remembered for that model in this process.

    Args:
        model: any LangChain chat model.
        schema: JSON schema of the answer (an object schema).
        name: the schema's name (OpenAI's ``json_schema.name``, the tool's name).
        structured_output: one of :data:`STRUCTURED_OUTPUT_MODES` (see :func:`structured_method`).
        logprobs: ask for log-probabilities where the model can give them.
        max_tokens: generation cap for the in-process llama.cpp model only, large enough for the
            longest answer the schema allows. Hosted models get no cap, so a reasoning model's
            thinking is never cut short.

    Returns:
        A runnable (``invoke``/``ainvoke``: messages in, ``AIMessage`` out).

    Raises:
        ValueError: for an unknown ``structured_output`` or a method the model does not offer.
    """
    method = structured_method(model, structured_output)
    call = StructuredCall(model, schema, name, method, logprobs, max_tokens)
    return RunnableLambda(call.invoke, afunc=call.ainvoke, name=f"{name}_call")
