"""A deterministic stand-in chat model for tests and benchmarks (no network, no weights).

``StubChatModel`` answers judge prompts with a valid judgment, distillation
prompts with one principle per feedback record (the first sentence of the
expert's words), consolidation and verdict-directive checks with fixed verdicts,
or with whatever a custom ``responder`` returns. It can sleep
a fixed latency per call (for throughput benchmarks), fail its first calls with
a timeout or raise chosen exceptions on chosen calls (for retry and fault
tests), records when each call started, and reports token usage like a real
provider.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Union

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from memalign_graph import prompts

Responder = Callable[[list[BaseMessage], dict[str, Any]], str]
Fault = Union[BaseException, type[BaseException], None]
Faults = Union[Sequence[Fault], Callable[[int, list[BaseMessage]], Fault]]


def prompt_block(messages: list[BaseMessage], begin: str, end: str) -> list[Any] | None:
    """The JSON values on the lines between the marker lines ``begin`` and ``end`` (``None``: no such block).

    This is how the prompt reads to a model that follows its structure: data inside a value can
    never add a line, so injected text stays inside the value it came in.
    """
    for message in messages:
        lines = message.text.split("\n")
        if begin in lines and end in lines[lines.index(begin) :]:
            first = lines.index(begin)
            last = lines.index(end, first)
            return [json.loads(line) for line in lines[first + 1 : last]]
    return None


def distill_records(messages: list[BaseMessage]) -> list[dict[str, Any]] | None:
    """The feedback records of a distillation prompt (``None`` if it is not one)."""
    return prompt_block(messages, prompts.RECORDS_BEGIN, prompts.RECORDS_END)


def consolidation_pairs(messages: list[BaseMessage]) -> list[dict[str, Any]] | None:
    """The ``{"pair", "old", "new"}`` objects of a consolidation prompt (``None`` if it is not one)."""
    return prompt_block(messages, prompts.PAIRS_BEGIN, prompts.PAIRS_END)


def directive_rules(messages: list[BaseMessage]) -> list[dict[str, Any]] | None:
    """The ``{"rule", "text"}`` objects of a verdict-directive check prompt (``None`` if it is not one)."""
    return prompt_block(messages, prompts.RULES_BEGIN, prompts.RULES_END)


def default_responder(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
    """Answer judge, distillation, consolidation and verdict-directive check prompts deterministically.

    Judges with the first allowed value; distills one principle per record (the
    first sentence of its feedback), as many as the prompt allows ("at most N
    principles"); calls every consolidation pair ``different`` and every rule a rule
    about the ``case`` (so only the text gate holds a directive).
    """
    pairs = consolidation_pairs(messages)
    if pairs is not None:
        return json.dumps({"verdicts": [{"pair": p["pair"], "relation": "different"} for p in pairs]})
    rules = directive_rules(messages)
    if rules is not None:
        return json.dumps({"verdicts": [{"rule": r["rule"], "kind": "case"} for r in rules]})
    records = distill_records(messages)
    if records is not None:
        principles = []
        for record in records:
            feedback = record["feedback"].strip()
            if feedback and feedback != "none":
                first = re.split(r"(?<=[.!?])\s", feedback)[0]
                principles.append({"text": first, "sources": [record["id"]]})
        allowed = re.search(r"at most (\d+) principles", "\n".join(m.text for m in messages))
        return json.dumps({"principles": principles[: int(allowed.group(1))] if allowed else principles})
    prompt = "\n".join(m.text for m in messages)
    schema = ((kwargs.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    values = schema.get("properties", {}).get("value", {}).get("enum")
    if not values:
        numeric = re.search(r"The value of a judgment is an integer from (-?\d+) to", prompt)
        labels = re.search(r"The value of a judgment is one of: ([^.\n]+)", prompt)
        if numeric:
            values = [int(numeric.group(1))]
        else:
            values = [v.strip() for v in labels.group(1).split(",")] if labels else ["pass"]
    return json.dumps({"rationale": "stub judgment", "value": values[0]})


class StubTimeout(TimeoutError):
    """The timeout :class:`StubChatModel` raises on its first ``fail_first`` calls."""


class StubChatModel(BaseChatModel):
    """Deterministic chat model.

    Args:
        responder: ``(messages, call_kwargs) -> answer text``; default :func:`default_responder`.
        latency_s: seconds slept per call (``asyncio.sleep`` under ``ainvoke``).
        fail_first: number of first calls that raise :class:`StubTimeout` (a ``TimeoutError``:
            transient, so retried; retry tests).
        faults: exceptions to raise instead of answering: a sequence whose N-th item is raised
            on call N (``None``: answer; calls past its end answer), or a function
            ``(call number, messages) -> exception or None``. An exception class is instantiated
            with a message naming the call.

    Attributes:
        calls: number of calls made so far.
        max_in_flight: most calls running at once (to check bounded concurrency).
        prompts: the messages of every call, in order.
        call_times: ``time.monotonic()`` at the start of every call, in order.
        raised: the exception raised by every call, ``None`` where it answered, in order.
    """

    responder: Responder | None = None
    latency_s: float = 0.0
    fail_first: int = 0
    faults: Faults | None = None
    model_name: str = "stub"
    _calls: int = PrivateAttr(default=0)
    _prompts: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _call_times: list[float] = PrivateAttr(default_factory=list)
    _raised: list[BaseException | None] = PrivateAttr(default_factory=list)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _in_flight: int = PrivateAttr(default=0)
    _max_in_flight: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "stub"

    @property
    def calls(self) -> int:  # noqa: D102
        return self._calls

    @property
    def max_in_flight(self) -> int:
        """Most calls that were running at the same time."""
        return self._max_in_flight

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    @property
    def prompts(self) -> list[list[BaseMessage]]:  # noqa: D102
        return self._prompts

    @property
    def call_times(self) -> list[float]:  # noqa: D102
        return self._call_times

    @property
    def raised(self) -> list[BaseException | None]:  # noqa: D102
        return self._raised

    def _fault(self, number: int, messages: list[BaseMessage]) -> BaseException | None:
        if number <= self.fail_first:
            return StubTimeout(f"stub timeout on call {number}")
        if self.faults is None:
            return None
        if callable(self.faults):
            fault = self.faults(number, messages)
        else:
            fault = self.faults[number - 1] if number <= len(self.faults) else None
        if isinstance(fault, type):
            fault = fault(f"stub fault on call {number}")
        return fault

    def _answer(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatResult:
        with self._lock:
            self._calls += 1
            number = self._calls
            self._prompts.append(list(messages))
            self._call_times.append(time.monotonic())
            self._raised.append(None)
        fault = self._fault(number, messages)
        if fault is not None:
            self._raised[number - 1] = fault
            raise fault
        text = (self.responder or default_responder)(messages, kwargs)
        prompt_chars = sum(len(m.text) for m in messages)
        usage = UsageMetadata(
            input_tokens=prompt_chars // 4,
            output_tokens=len(text) // 4,
            total_tokens=prompt_chars // 4 + len(text) // 4,
        )
        message = AIMessage(content=text, usage_metadata=usage, response_metadata={"model_name": self.model_name})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._enter()
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
            return self._answer(messages, kwargs)
        finally:
            self._leave()

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._enter()
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            return self._answer(messages, kwargs)
        finally:
            self._leave()
