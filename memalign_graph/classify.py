"""The LLM calls that classify distilled principles before they are governed.

- **Consolidation** (:func:`aclassify_pairs`): does a new principle say the same as its most
  similar principle, contradict it, or say something different?
- **The verdict-directive check** (:func:`aclassify_directives`): is a new principle a rule about
  the *case* (which content leads to which value) or an instruction about the *verdict* (what to
  answer whatever the case says)? The text gate of :func:`memalign_graph.governance.verdict_directive`
  reads words; this check reads meaning, so a paraphrase, a translation or a trivial condition
  the gate lets through can still be held (see :mod:`memalign_graph.governance`).

Both see only principle texts, JSON-encoded between marker lines (:func:`memalign_graph.distill.encode_data`),
never the feedback records that produced them: a principle's self-description written into the
same answer as the principle would be whatever the feedback's author wanted. Items go in calls of
bounded size, at most ``concurrency`` at once, each answer a grammar-constrained
``{"verdicts": [...]}`` numbering the items; transient errors and unreadable answers are retried
with backoff. Both fail safe: an item no answer classified is left out of the result (a pair
counts as ``different``; a principle as *unchecked*, and only the text gate applies to it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from memalign_graph import prompts
from memalign_graph.distill import UnparseableAnswer, encode_data, retrying
from memalign_graph.faults import CallCounter, describe_error
from memalign_graph.semantic import Relation
from memalign_graph.spec import JudgeSpec
from memalign_graph.structured import add_usage, bind_structured, extract_json

log = logging.getLogger(__name__)

DirectiveKind = Literal["case", "verdict"]
RELATIONS: tuple[str, ...] = ("same", "contradicts", "different")
DIRECTIVE_KINDS: tuple[str, ...] = ("case", "verdict")

PAIRS_PER_CALL = 40
"""Most principle pairs one consolidation call classifies."""
RULES_PER_CALL = 20
"""Most principles one verdict-directive check call classifies."""


def text_key(text: str) -> str:
    """The form under which principle texts count as one for the verdict-directive check (case and spacing folded)."""
    return " ".join(text.casefold().split())


def verdicts_schema(n: int, key: str, field: str, choices: Sequence[str]) -> dict[str, Any]:
    """JSON schema of ``{"verdicts": [{key: 1..n, field: one of choices}]}`` with exactly ``n`` items."""
    return {
        "type": "object",
        "properties": {
            "verdicts": {
                "type": "array",
                "minItems": n,
                "maxItems": n,
                "items": {
                    "type": "object",
                    "properties": {
                        key: {"type": "integer", "minimum": 1, "maximum": n},
                        field: {"enum": list(choices)},
                    },
                    "required": [key, field],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["verdicts"],
        "additionalProperties": False,
    }


def classify_schema(n: int) -> dict[str, Any]:
    """JSON schema of a consolidation answer for ``n`` pairs."""
    return verdicts_schema(n, "pair", "relation", RELATIONS)


def directive_schema(n: int) -> dict[str, Any]:
    """JSON schema of a verdict-directive check answer for ``n`` rules."""
    return verdicts_schema(n, "rule", "kind", DIRECTIVE_KINDS)


def build_classify_messages(pairs: list[tuple[str, str]]) -> list[BaseMessage]:
    """The consolidation prompt for ``[(old text, new text)]``: one JSON object per pair between marker lines."""
    lines = "\n".join(encode_data({"pair": n, "old": old, "new": new}) for n, (old, new) in enumerate(pairs, start=1))
    user = prompts.CONSOLIDATE_USER.format(begin=prompts.PAIRS_BEGIN, end=prompts.PAIRS_END, pairs=lines)
    return [SystemMessage(prompts.CONSOLIDATE_SYSTEM), HumanMessage(user)]


def build_directive_messages(spec: JudgeSpec, rules: list[str]) -> list[BaseMessage]:
    """The verdict-directive check prompt for principle texts ``rules``: one JSON object per rule between marker lines.

    The judge's criterion is JSON-encoded too, as in the distillation prompt.
    """
    system = prompts.DIRECTIVE_SYSTEM.format(criterion=encode_data(spec.criterion), values=spec.describe_values())
    lines = "\n".join(encode_data({"rule": n, "text": text}) for n, text in enumerate(rules, start=1))
    user = prompts.DIRECTIVE_USER.format(begin=prompts.RULES_BEGIN, end=prompts.RULES_END, rules=lines)
    return [SystemMessage(system), HumanMessage(user)]


async def _classify(
    model: BaseChatModel,
    items: list[Any],
    *,
    per_call: int,
    concurrency: int,
    schema: Callable[[int], dict[str, Any]],
    messages: Callable[[list[Any]], list[BaseMessage]],
    read: Callable[[list[Any], list[Any]], dict[str, Any]],
    label: str,
    gave_up: str,
    max_retries: int,
    backoff_s: float | None,
    usage: dict[str, int] | None,
    counter: CallCounter | None,
) -> dict[str, Any]:
    """``items`` classified in calls of ``per_call``; what each call's ``read(verdicts, chunk)`` found, merged.

    A call whose answer ``read`` cannot use (``ValueError``, ``KeyError``, ``TypeError``) is
    retried like a transient error; one that still fails leaves its items out (``gave_up`` is
    logged, formatted with their number and the error).
    """
    if not items:
        return {}
    counter = counter if counter is not None else CallCounter()
    semaphore = asyncio.Semaphore(max(1, concurrency))
    out: dict[str, Any] = {}

    async def classify(chunk: list[Any]) -> None:
        bound = bind_structured(model, schema(len(chunk)), "verdicts", logprobs=False, max_tokens=24 * len(chunk) + 32)

        async def ask(prompt: list[BaseMessage]) -> dict[str, Any]:
            answer = await bound.ainvoke(prompt)
            if usage is not None:
                add_usage(usage, answer)  # type: ignore[arg-type]
            try:
                return read(extract_json(answer.text)["verdicts"], chunk)
            except (ValueError, KeyError, TypeError) as exc:
                raise UnparseableAnswer(f"unreadable {label} answer ({describe_error(exc)})") from exc

        call = retrying(ask, counter, max_retries, backoff_s, label)
        async with semaphore:
            try:
                out.update(await call.ainvoke(messages(chunk)))
            except Exception as exc:  # noqa: BLE001 - fail safe: the chunk's items stay unclassified
                log.warning(gave_up, len(chunk), describe_error(exc))

    size = max(1, per_call)
    await asyncio.gather(*(classify(items[i : i + size]) for i in range(0, len(items), size)))
    return out


async def aclassify_pairs(
    model: BaseChatModel,
    pairs: list[tuple[str, str, str, str]],
    *,
    max_retries: int = 2,
    backoff_s: float | None = None,
    usage: dict[str, int] | None = None,
    counter: CallCounter | None = None,
    pairs_per_call: int = PAIRS_PER_CALL,
    concurrency: int = 8,
) -> dict[str, tuple[str, Relation]]:
    """Ask the LLM whether each new principle repeats, contradicts or differs from a similar one.

    Pairs go in calls of at most ``pairs_per_call``, at most ``concurrency`` at once.
    Fails safe: a call that still fails after its retries (or an error that is not
    retried) leaves its pairs unclassified, which is treated as ``different``: the
    candidates are added as new principles and nothing existing is merged or replaced.

    Args:
        model: any LangChain chat model.
        pairs: ``(candidate id, candidate text, existing id, existing text)``.
        max_retries: retries after a transient error or an unreadable answer.
        backoff_s: first retry delay in seconds, doubled each retry, plus jitter
            (``None``: ``memalign_graph.faults.RETRY_DEFAULTS["backoff_s"]``).
        usage: token counts are added here.
        counter: counts the calls made (retries included), if given.
        pairs_per_call: most pairs per call.
        concurrency: most calls in flight.

    Returns:
        candidate id -> (existing id, ``"same"``/``"contradicts"``/``"different"``);
        pairs the model did not classify validly are absent (treated as ``different``),
        and those of a call that never gave a usable answer too (a warning is logged).
    """

    def read(verdicts: list[Any], chunk: list[tuple[str, str, str, str]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for verdict in verdicts:
            n, relation = int(verdict["pair"]), verdict["relation"]
            if 1 <= n <= len(chunk) and relation in RELATIONS:
                cand_id, _, existing_id, _ = chunk[n - 1]
                found[cand_id] = (existing_id, relation)
        return found

    return await _classify(
        model,
        pairs,
        per_call=pairs_per_call,
        concurrency=concurrency,
        schema=classify_schema,
        messages=lambda chunk: build_classify_messages([(old, new) for _, new, _, old in chunk]),
        read=read,
        label="principle consolidation",
        gave_up="principle consolidation gave up, %d pair(s) kept as different principles: %s",
        max_retries=max_retries,
        backoff_s=backoff_s,
        usage=usage,
        counter=counter,
    )


async def aclassify_directives(
    model: BaseChatModel,
    spec: JudgeSpec,
    candidates: list[tuple[str, str]],
    *,
    max_retries: int = 2,
    backoff_s: float | None = None,
    usage: dict[str, int] | None = None,
    counter: CallCounter | None = None,
    rules_per_call: int = RULES_PER_CALL,
    concurrency: int = 8,
) -> dict[str, DirectiveKind]:
    """Ask the LLM whether each new principle is a rule about the case or an instruction about the verdict.

    Each text is asked about once (principles with the same :func:`text_key` share the answer),
    in calls of at most ``rules_per_call`` (the prompt holds the judge's criterion and values
    and the principle texts, nothing else), at most ``concurrency`` at once. Fails safe: a
    principle the answer leaves out or numbers twice, or whose call never gave a usable answer,
    is absent from the result (unchecked: the caller keeps the text gate alone for it and says so).

    Args:
        model: any LangChain chat model (the distilling model).
        spec: the judge (its criterion and values are in the prompt).
        candidates: ``(principle id, text)``.
        max_retries: retries after a transient error or an unreadable answer.
        backoff_s: first retry delay in seconds, doubled each retry, plus jitter.
        usage: token counts are added here.
        counter: counts the calls made (retries included), if given.
        rules_per_call: most principles per call.
        concurrency: most calls in flight.

    Returns:
        principle id -> ``"case"`` or ``"verdict"``, for the principles the model classified.
    """

    def read(verdicts: list[Any], chunk: list[tuple[str, str]]) -> dict[str, Any]:
        said: dict[int, list[str]] = {}
        for verdict in verdicts:
            n, kind = int(verdict["rule"]), verdict["kind"]
            if 1 <= n <= len(chunk) and kind in DIRECTIVE_KINDS:
                said.setdefault(n, []).append(kind)
        return {chunk[n - 1][0]: kinds[0] for n, kinds in said.items() if len(kinds) == 1}

    asked: dict[str, tuple[str, str]] = {}  # text key -> (the key, the first text with it)
    for _, text in candidates:
        asked.setdefault(text_key(text), (text_key(text), text))
    kinds = await _classify(
        model,
        list(asked.values()),
        per_call=rules_per_call,
        concurrency=concurrency,
        schema=directive_schema,
        messages=lambda chunk: build_directive_messages(spec, [text for _, text in chunk]),
        read=read,
        label="verdict-directive check",
        gave_up="verdict-directive check gave up, %d principle(s) left to the text gate alone: %s",
        max_retries=max_retries,
        backoff_s=backoff_s,
        usage=usage,
        counter=counter,
    )
    return {pid: kinds[text_key(text)] for pid, text in candidates if text_key(text) in kinds}


__all__ = [
    "DIRECTIVE_KINDS",
    "PAIRS_PER_CALL",
    "RELATIONS",
    "RULES_PER_CALL",
    "DirectiveKind",
    "aclassify_directives",
    "aclassify_pairs",
    "build_classify_messages",
    "build_directive_messages",
    "classify_schema",
    "directive_schema",
    "text_key",
]
