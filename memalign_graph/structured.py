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
import weakref
from collections import OrderedDict
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, RunnableParallel, RunnableSequence
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


MAX_TOP_LOGPROBS = 20
"""The most alternatives per token OpenAI's API returns with log-probabilities (``top_logprobs``)."""

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


def _as_answer(raw: BaseMessage, name: str, parsed: Any = None) -> BaseMessage:
    """``raw`` with a tool call's arguments as its JSON text (for the repair loop); other answers unchanged.

    The arguments are ``parsed`` where the provider's parser gave a dict, else those of the call
    named ``name`` (the first call if none is).
    """
    calls = getattr(raw, "tool_calls", None) or []
    invalid = getattr(raw, "invalid_tool_calls", None) or []
    if not calls and not invalid:
        return raw
    if isinstance(parsed, dict):
        text = json.dumps(parsed, ensure_ascii=False)
    elif calls:
        call = next((c for c in calls if c.get("name") == name), calls[0])
        text = json.dumps(call.get("args", {}), ensure_ascii=False)
    else:
        text = str(invalid[0].get("args") or "")
    return AIMessage(
        content=text,
        id=raw.id,
        usage_metadata=getattr(raw, "usage_metadata", None),
        response_metadata=dict(raw.response_metadata),
    )


def _bound_arguments(structured: Runnable) -> dict[str, Any] | None:
    """The request arguments inside ``with_structured_output(..., include_raw=True)``, if it has LangChain's shape.

    LangChain's providers return ``RunnableMap(raw=model.bind(**arguments)) | parser``. Called
    through that map, every call starts two threads (one per ``RunnableParallel``) to parse a copy
    of the answer that is not used here: the raw message's text is the answer. ``None`` for any
    other shape.
    """
    if not isinstance(structured, RunnableSequence) or not isinstance(structured.first, RunnableParallel):
        return None
    steps = structured.first.steps__
    raw = steps.get("raw") if len(steps) == 1 else None
    if not isinstance(raw, RunnableBinding) or not isinstance(raw.bound, BaseChatModel):
        return None
    return dict(raw.kwargs)


def _chat_completions_body(model: BaseChatModel, arguments: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat model's ``response_format`` moved into ``extra_body``: the same request, a lighter client path.

    With ``response_format`` among its arguments, langchain-openai calls the OpenAI SDK's
    ``chat.completions.parse``, which builds a typed copy of the answer that is not used here; in
    ``extra_body`` the same JSON goes out through ``create``. Other models' arguments, and a
    request LangChain would send to the Responses API (``text.format`` there), are returned as they are.
    """
    openai = sys.modules.get("langchain_openai.chat_models.base")
    if openai is None or not isinstance(model, openai.BaseChatOpenAI) or "response_format" not in arguments:
        return arguments
    if model._use_responses_api({**model._default_params, **arguments}):
        return arguments
    moved = dict(arguments)
    body = {**(model.extra_body or {}), **(moved.pop("extra_body", None) or {})}
    moved["extra_body"] = {**body, "response_format": moved.pop("response_format")}
    return moved


class _Plan:
    """How one model is asked for one schema: the method, and per set of accepted parameters the request arguments.

    Holds no reference to the model, so keeping plans (:func:`bind_structured`) keeps no model alive.
    """

    def __init__(self, model: BaseChatModel, method: str | None) -> None:
        self.model = weakref.ref(model)
        self.method = method
        self.arguments: dict[frozenset[str], dict[str, Any]] = {}


_PLANS_KEPT = 64
_plans: OrderedDict[tuple[Any, ...], _Plan] = OrderedDict()
_plans_lock = threading.Lock()


class StructuredCall(Runnable[Any, BaseMessage]):
    """One answer in a JSON schema from any chat model: ``invoke``/``ainvoke`` map messages to an ``AIMessage``.

    The answer's JSON is its ``text`` whatever the method (a tool call's arguments become the
    text), so one parser and one repair loop serve every provider. Built by :func:`bind_structured`.
    The model is called with the request arguments LangChain's ``with_structured_output`` binds,
    worked out once per model, schema and set of parameters the provider accepts.
    """

    def __init__(
        self,
        model: BaseChatModel,
        schema: dict[str, Any],
        name: str,
        plan: _Plan,
        logprobs: bool,
        max_tokens: int | None,
        top_logprobs: int,
    ) -> None:
        self.model, self.schema, self.answer_name, self.plan = model, schema, name, plan
        self.method = plan.method
        self.logprobs, self.max_tokens, self.top_logprobs = logprobs, max_tokens, top_logprobs
        self.name = f"{name}_call"
        self.key = _model_key(model)

    def _active(self) -> frozenset[str]:
        with _refused_lock:
            refused = set(_refused.get(self.key, ()))
        active = set()
        if self.method is not None:
            active.add("structured")
        if self.logprobs and (self.method == "response_format" or _returns_logprobs(self.model)):
            active.add("logprobs")
        if getattr(self.model, "temperature", None) is not None and "temperature" in type(self.model).model_fields:
            active.add("temperature")
        return frozenset(active - refused)

    def _target(self, active: frozenset[str]) -> tuple[Runnable, dict[str, Any] | None]:
        """What to call for ``active``: the model and its request arguments.

        Arguments ``None``: a runnable whose output is LangChain's ``{"raw", "parsed"}`` dict instead
        (a provider whose structured output has another shape).
        """
        model = self.model
        if "temperature" not in active and getattr(model, "temperature", None) is not None:
            model = model.model_copy(update={"temperature": None})
            return self._build(model, active)
        arguments = self.plan.arguments.get(active)
        if arguments is not None:
            return model, arguments
        target, arguments = self._build(model, active)
        if arguments is not None:
            self.plan.arguments[active] = arguments
        return target, arguments

    def _build(self, model: BaseChatModel, active: frozenset[str]) -> tuple[Runnable, dict[str, Any] | None]:
        extra: dict[str, Any] = {}
        if "logprobs" in active:
            extra.update(logprobs=True, top_logprobs=self.top_logprobs)
        if self.method == "response_format":
            from memalign_graph.llamacpp import ChatLlamaCpp

            if isinstance(model, ChatLlamaCpp) and self.max_tokens:
                extra["max_tokens"] = self.max_tokens
            if "structured" in active:
                extra["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": self.answer_name, "schema": self.schema, "strict": False},
                }
            return model, _chat_completions_body(model, extra)
        if self.method is None or "structured" not in active:
            return model, extra
        titled = {"title": self.answer_name, "description": f"The {self.answer_name}, as JSON.", **self.schema}
        # BaseChatOpenAI passes extra keyword arguments (logprobs) through to the request.
        structured = model.with_structured_output(titled, method=self.method, include_raw=True, **extra)
        arguments = _bound_arguments(structured)
        if arguments is None:
            return structured, None
        return model, _chat_completions_body(model, arguments)

    def _refused(self, exc: BaseException, active: frozenset[str]) -> bool:
        parameter = _refused_parameter(exc, set(active))
        if parameter is None:
            return False
        log.warning("model %r refused %s (HTTP 400); asking again without it", model_name(self.model), parameter)
        with _refused_lock:
            _refused.setdefault(self.key, set()).add(parameter)
        return True

    def _answer(self, out: Any, arguments: dict[str, Any] | None) -> BaseMessage:
        if arguments is None:
            return _as_answer(out["raw"], self.answer_name, out.get("parsed"))
        return _as_answer(out, self.answer_name)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        """Ask once (again without a parameter the provider refused with HTTP 400)."""
        while True:
            active = self._active()
            target, arguments = self._target(active)
            try:
                return self._answer(target.invoke(input, config, **(arguments or {}), **kwargs), arguments)
            except Exception as exc:
                if not self._refused(exc, active):
                    raise

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        """Async :meth:`invoke`."""
        while True:
            active = self._active()
            target, arguments = self._target(active)
            try:
                return self._answer(await target.ainvoke(input, config, **(arguments or {}), **kwargs), arguments)
            except Exception as exc:
                if not self._refused(exc, active):
                    raise


def _plan(model: BaseChatModel, schema: dict[str, Any], name: str, structured_output: str, *rest: Any) -> _Plan:
    key = (id(model), json.dumps(schema, sort_keys=True), name, structured_output, *rest)
    with _plans_lock:
        plan = _plans.get(key)
        if plan is not None and plan.model() is model:
            _plans.move_to_end(key)
            return plan
    plan = _Plan(model, structured_method(model, structured_output))
    with _plans_lock:
        _plans[key] = plan
        while len(_plans) > _PLANS_KEPT:
            _plans.popitem(last=False)
    return plan


def bind_structured(
    model: BaseChatModel,
    schema: dict[str, Any],
    name: str,
    structured_output: str = "auto",
    logprobs: bool = True,
    max_tokens: int | None = None,
    top_logprobs: int = MAX_TOP_LOGPROBS,
) -> Runnable:
    """``model`` asked to answer in ``schema`` through LangChain's standard structured output.

    Uses what ``model.with_structured_output(schema, method=..., include_raw=True)`` binds, with
    the method :func:`structured_method` picks (JSON schema, tool calling or JSON mode, by what the
    model supports); the in-process llama.cpp model keeps its grammar-constrained ``response_format``;
    a model with none of them is asked through the prompt alone. Whatever the method, the result
    is an ``AIMessage`` whose text is the JSON answer, so the caller's parser and repair loop
    (the fallback for every model) work unchanged. The model is called with the request arguments
    LangChain binds (the same request), not through the ``{"raw", "parsed"}`` map around them,
    which starts two threads per call for a parse that is not used; a provider whose structured
    output has another shape is called through it as it is. Log-probabilities are requested from
    OpenAI-compatible models (not reasoning models) and the llama.cpp model. If the provider
    refuses a parameter with HTTP 400 (``logprobs``, ``temperature``, ``response_format`` or tools),
    the call is made again without it (within the same attempt: a judgment's ``attempts`` does not
    count it) and the refusal is remembered for that model in this process.

    The method and the request arguments are worked out once per model, schema and settings in
    this process (the last :data:`_PLANS_KEPT` kept; no model is kept alive by them).

    Args:
        model: any LangChain chat model.
        schema: JSON schema of the answer (an object schema).
        name: the schema's name (OpenAI's ``json_schema.name``, the tool's name).
        structured_output: one of :data:`STRUCTURED_OUTPUT_MODES` (see :func:`structured_method`).
        logprobs: ask for log-probabilities where the model can give them.
        max_tokens: generation cap for the in-process llama.cpp model only, large enough for the
            longest answer the schema allows. Hosted models get no cap, so a reasoning model's
            thinking is never cut short.
        top_logprobs: alternatives asked for per token with the log-probabilities (OpenAI allows
            up to :data:`MAX_TOP_LOGPROBS`; each costs the client time to read, on every token).

    Returns:
        A runnable (``invoke``/``ainvoke``: messages in, ``AIMessage`` out).

    Raises:
        ValueError: for an unknown ``structured_output`` or a method the model does not offer.
    """
    plan = _plan(model, schema, name, structured_output, logprobs, max_tokens, top_logprobs)
    return StructuredCall(model, schema, name, plan, logprobs, max_tokens, top_logprobs)
