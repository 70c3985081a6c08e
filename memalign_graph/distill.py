"""Distillation: expert feedback in, general principles out (semantic memory).

Records are packed into batches (at most ``batch_size`` records and at most
``token_budget`` estimated prompt tokens per LLM call; tokens are estimated as
characters / 4, the usual rule of thumb for English with BPE tokenisers) and
the batches run concurrently (at most ``concurrency`` calls at once). A batch
whose call hits a transient error (timeout, rate limit, connection or server
error, see :func:`memalign_graph.faults.is_transient`) or whose answer cannot be
read is retried with exponential backoff and jitter (``Runnable.with_retry``),
at most ``max_retries`` times; an error retrying cannot fix (authentication, bad
request) is not retried. A batch that still fails has its record ids reported
with the error, and the records stay undistilled for the next alignment.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda

from memalign_graph import prompts
from memalign_graph.faults import CallCounter, describe_error, is_transient, retrying_call
from memalign_graph.judge import (
    DEFAULT_SETTINGS,
    _clip,
    add_usage,
    bind_structured,
    empty_usage,
    extract_json,
    format_case,
)
from memalign_graph.models import model_name
from memalign_graph.semantic import Principle, new_principle
from memalign_graph.spec import FeedbackRecord, JudgeSpec

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
MAX_SOURCES = 8


def context_window(model: BaseChatModel) -> int | None:
    """Tokens one call to ``model`` may use (prompt + answer), where known.

    Known for the in-process llama.cpp model (its context divided among its
    slots); ``None`` for others, whose limits the caller's ``token_budget`` respects.
    """
    from memalign_graph.llamacpp import ChatLlamaCpp

    if isinstance(model, ChatLlamaCpp):
        return model.context_window
    return None


def is_salient(record: FeedbackRecord) -> bool:
    """Whether a record can teach a principle.

    Salient: it has feedback text, or the expert's value differs from the
    judge's (or the judge's is unknown). A bare agreement teaches nothing new;
    it is still stored as an episode.
    """
    if record.get("feedback"):
        return True
    if "value" not in record:
        return False
    return record.get("judge_value") != record["value"]


def format_record(record: FeedbackRecord, chars: int = 600) -> str:
    """One feedback record as it appears in the distillation prompt."""
    return prompts.DISTILL_RECORD.format(
        id=record["id"],
        case=format_case(record, chars),  # type: ignore[arg-type]
        judge_value=record.get("judge_value", "unknown"),
        value=record.get("value", "not given"),
        feedback=_clip(record.get("feedback", "none"), chars * 2),
    )


def estimate_tokens(text: str) -> int:
    """Rough token count: ``ceil(len(text) / 4)``."""
    return -(-len(text) // CHARS_PER_TOKEN)


def plan_batches(
    records: list[FeedbackRecord], batch_size: int = 50, token_budget: int = 6000
) -> list[list[FeedbackRecord]]:
    """Split records into batches of at most ``batch_size`` records and ``token_budget`` estimated tokens.

    A single record above the budget gets a batch of its own.

    Raises:
        ValueError: if ``batch_size`` or ``token_budget`` is not positive.
    """
    if batch_size < 1 or token_budget < 1:
        raise ValueError("batch_size and token_budget must be positive")
    batches: list[list[FeedbackRecord]] = []
    current: list[FeedbackRecord] = []
    used = 0
    for record in records:
        cost = estimate_tokens(format_record(record))
        if current and (len(current) >= batch_size or used + cost > token_budget):
            batches.append(current)
            current, used = [], 0
        current.append(record)
        used += cost
    if current:
        batches.append(current)
    return batches


def distill_schema(ids: list[str], max_principles: int = 3, max_chars: int = 200) -> dict[str, Any]:
    """JSON schema of a distillation answer; sources may only name ids of the batch."""
    return {
        "type": "object",
        "properties": {
            "principles": {
                "type": "array",
                "maxItems": max_principles,
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "minLength": 8, "maxLength": max_chars},
                        "sources": {"type": "array", "items": {"enum": ids}, "minItems": 1, "maxItems": MAX_SOURCES},
                    },
                    "required": ["text", "sources"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["principles"],
        "additionalProperties": False,
    }


def build_distill_messages(
    spec: JudgeSpec, batch: list[FeedbackRecord], known: list[Principle], max_principles: int = 3
) -> list[BaseMessage]:
    """The distillation prompt for one batch."""
    known_text = ""
    if known:
        known_text = prompts.DISTILL_KNOWN.format(principles="\n".join(f"- {p['text']}" for p in known))
    system = prompts.DISTILL_SYSTEM.format(
        criterion=spec.criterion, values=spec.describe_values(), max_principles=max_principles, known=known_text
    )
    user = prompts.DISTILL_USER.format(records="\n\n".join(format_record(r) for r in batch))
    return [SystemMessage(system), HumanMessage(user)]


def parse_principles(text: str, batch_ids: list[str]) -> list[tuple[str, list[str]]]:
    """``[(text, sources)]`` from a distillation answer.

    Sources outside the batch are dropped; a principle left with no source is
    attributed to the whole batch (it came from this batch's feedback).

    Raises:
        ValueError: if the answer has no ``principles`` list.
    """
    obj = extract_json(text)
    items = obj.get("principles")
    if not isinstance(items, list):
        raise ValueError("the answer has no 'principles' list")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            continue
        sources = [s for s in item.get("sources") or [] if s in batch_ids]
        out.append((item["text"].strip(), sorted(set(sources or batch_ids))))
    return out


class UnparseableAnswer(ValueError):
    """A model's answer could not be read (no JSON, wrong shape); retried like a transient error."""


def _retryable(exc: BaseException) -> bool:
    """Distillation and consolidation retry transient errors and unreadable answers."""
    return isinstance(exc, UnparseableAnswer) or is_transient(exc)


def _retrying(ask: Any, counter: CallCounter, max_retries: int, backoff_s: float | None, label: str) -> Any:
    """``ask`` retried on :func:`_retryable` errors with exponential backoff (first wait ``backoff_s``)."""
    first = DEFAULT_SETTINGS["backoff_s"] if backoff_s is None else backoff_s
    return retrying_call(
        RunnableLambda(ask),
        counter,
        retries=max_retries,
        backoff_s=first,
        backoff_max_s=max(first, DEFAULT_SETTINGS["backoff_max_s"]),
        retry_if=_retryable,
        label=label,
    )


@dataclass
class DistillResult:
    """What a distillation run produced.

    Attributes:
        principles: new candidate principles (before de-duplication).
        distilled: ids of records whose batch succeeded.
        failed: record id -> error message, for batches that failed after retries.
        calls: LLM calls made (retries included).
        usage: tokens spent.
    """

    principles: list[Principle] = field(default_factory=list)
    distilled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    usage: dict[str, int] = field(default_factory=lambda: dict(empty_usage()))


KNOWN_TOKEN_BUDGET = 2000
"""Most estimated tokens of known principles shown in a distillation prompt (a quarter of the
context window at most, where it is known)."""


def fit_known(known: list[Principle], token_budget: int) -> list[Principle]:
    """The newest known principles whose texts fit ``token_budget`` estimated tokens, in stored order.

    Known principles are shown so the LLM does not restate them; one it restates anyway
    is merged by consolidation (:func:`memalign_graph.semantic.merge_principles`), so
    leaving the oldest out when memory outgrows the prompt costs duplicates nothing.
    """
    kept: list[Principle] = []
    used = 0
    for principle in reversed(known):
        cost = estimate_tokens(principle["text"]) + 2
        if used + cost > token_budget:
            break
        kept.append(principle)
        used += cost
    return kept[::-1]


async def adistill(
    model: BaseChatModel,
    spec: JudgeSpec,
    records: list[FeedbackRecord],
    known: list[Principle],
    *,
    batch_size: int = 50,
    token_budget: int = 6000,
    concurrency: int = 8,
    max_retries: int = 2,
    backoff_s: float | None = None,
    max_principles: int = 3,
    principle_chars: int = 200,
    progress: Any = None,
) -> DistillResult:
    """Distill principles from ``records`` in concurrent batches.

    Args:
        model: any LangChain chat model.
        spec: the judge.
        records: salient feedback records (see :func:`is_salient`).
        known: principles already in memory, shown so they are not repeated (the newest that
            fit :data:`KNOWN_TOKEN_BUDGET`, see :func:`fit_known`).
        batch_size: most records per call.
        token_budget: most estimated prompt tokens of records per call; lowered
            to fit the model's context window where it is known (:func:`context_window`).
        concurrency: most calls in flight.
        max_retries: retries per batch after a transient error or an unreadable answer
            (``max_retries + 1`` calls at most); other errors are not retried.
        backoff_s: first retry delay in seconds, doubled each retry, plus up to as much
            random jitter (``None``: ``memalign_graph.judge.DEFAULT_SETTINGS["backoff_s"]``).
        max_principles: most principles one call may return.
        principle_chars: most characters per principle.
        progress: optional object with ``update(n)`` (e.g. a tqdm bar), advanced per record.

    Returns:
        A :class:`DistillResult`; failures are reported in it (record id ->
        ``"ErrorType: message (after N attempt(s))"``), not raised.

    Raises:
        ValueError: if the model's known context window leaves no room for records.
    """
    result = DistillResult()
    if not records:
        return result
    window = context_window(model)
    known = fit_known(known, min(KNOWN_TOKEN_BUDGET, window // 4) if window else KNOWN_TOKEN_BUDGET)
    semaphore = asyncio.Semaphore(max(1, concurrency))
    author = f"distill:{model_name(model)}"

    async def run(batch: list[FeedbackRecord]) -> None:
        ids = [r["id"] for r in batch]
        bound = bind_structured(
            model,
            distill_schema(ids, max_principles, principle_chars),
            "principles",
            logprobs=False,
            max_tokens=answer_tokens,
        )
        messages = build_distill_messages(spec, batch, known, max_principles)

        async def ask(prompt: list[BaseMessage]) -> list[tuple[str, list[str]]]:
            answer = await bound.ainvoke(prompt)
            add_usage(result.usage, answer)  # type: ignore[arg-type]
            try:
                return parse_principles(answer.text, ids)
            except ValueError as exc:
                raise UnparseableAnswer(str(exc)) from exc

        counter = CallCounter()
        label = f"distillation of {ids[:3]}{'...' if len(ids) > 3 else ''}"
        call = _retrying(ask, counter, max_retries, backoff_s, label)
        async with semaphore:
            try:
                found = await call.ainvoke(messages)
            except Exception as exc:  # noqa: BLE001 - any provider error is reported by record id, not raised
                result.failed.update(dict.fromkeys(ids, f"{describe_error(exc)} (after {counter.n} attempt(s))"))
            else:
                result.principles.extend(new_principle(text, sources, author) for text, sources in found)
                result.distilled.extend(ids)
            finally:
                result.calls += counter.n
        if progress is not None:
            progress.update(len(batch))

    # Longest answer the schema allows: principle text at one token per two characters (prose runs at
    # about four), ids at one per two, as many sources as a batch can cite.
    longest_id = max(len(r["id"]) for r in records)
    sources = min(MAX_SOURCES, batch_size, len(records))
    answer_tokens = max_principles * (principle_chars // 2 + sources * (longest_id // 2 + 4) + 24) + 32
    if window is not None:
        fixed = sum(estimate_tokens(m.text) for m in build_distill_messages(spec, [], known, max_principles))
        token_budget = min(token_budget, window - answer_tokens - fixed - 256)
        if token_budget < 256:
            raise ValueError(
                f"model {model_name(model)!r}: its {window}-token context leaves no room for feedback records "
                f"after {len(known)} known principles; use a model with a larger context"
            )
    await asyncio.gather(*(run(b) for b in plan_batches(records, batch_size, token_budget)))
    return result


def classify_schema(n: int) -> dict[str, Any]:
    """JSON schema of a consolidation answer for ``n`` pairs."""
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
                        "pair": {"type": "integer", "minimum": 1, "maximum": n},
                        "relation": {"enum": ["same", "contradicts", "different"]},
                    },
                    "required": ["pair", "relation"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["verdicts"],
        "additionalProperties": False,
    }


async def aclassify_pairs(
    model: BaseChatModel,
    pairs: list[tuple[str, str, str, str]],
    *,
    max_retries: int = 2,
    backoff_s: float | None = None,
    usage: dict[str, int] | None = None,
    counter: CallCounter | None = None,
) -> dict[str, tuple[str, str]]:
    """Ask the LLM whether each new principle repeats or contradicts a similar existing one.

    Fails safe: a call that still fails after its retries (or an error that is not
    retried) leaves every pair unclassified, which is treated as ``different``: the
    candidates are added as new principles and nothing existing is merged or replaced.

    Args:
        model: any LangChain chat model.
        pairs: ``(candidate id, candidate text, existing id, existing text)``.
        max_retries: retries after a transient error or an unreadable answer.
        backoff_s: first retry delay in seconds, doubled each retry, plus jitter
            (``None``: ``memalign_graph.judge.DEFAULT_SETTINGS["backoff_s"]``).
        usage: token counts are added here.
        counter: counts the calls made (retries included), if given.

    Returns:
        candidate id -> (existing id, ``"same"``/``"contradicts"``/``"different"``);
        pairs the model did not classify validly are absent (treated as ``different``),
        and it is empty if the model never gave a usable answer (a warning is logged).
    """
    if not pairs:
        return {}
    text = "\n".join(
        prompts.CONSOLIDATE_PAIR.format(n=n, old=old, new=new) for n, (_, new, _, old) in enumerate(pairs, start=1)
    )
    messages = [SystemMessage(prompts.CONSOLIDATE_SYSTEM), HumanMessage(prompts.CONSOLIDATE_USER.format(pairs=text))]
    bound = bind_structured(
        model, classify_schema(len(pairs)), "verdicts", logprobs=False, max_tokens=24 * len(pairs) + 32
    )

    async def ask(prompt: list[BaseMessage]) -> dict[str, tuple[str, str]]:
        answer = await bound.ainvoke(prompt)
        if usage is not None:
            add_usage(usage, answer)  # type: ignore[arg-type]
        try:
            verdicts = extract_json(answer.text)["verdicts"]
            out: dict[str, tuple[str, str]] = {}
            for verdict in verdicts:
                n, relation = int(verdict["pair"]), verdict["relation"]
                if 1 <= n <= len(pairs) and relation in ("same", "contradicts", "different"):
                    cand_id, _, existing_id, _ = pairs[n - 1]
                    out[cand_id] = (existing_id, relation)
        except (ValueError, KeyError, TypeError) as exc:
            raise UnparseableAnswer(f"unreadable consolidation answer ({describe_error(exc)})") from exc
        return out

    counter = counter if counter is not None else CallCounter()
    call = _retrying(ask, counter, max_retries, backoff_s, "principle consolidation")
    try:
        return await call.ainvoke(messages)
    except Exception as exc:  # noqa: BLE001 - fail safe: unclassified pairs are kept as different principles
        log.warning("principle consolidation gave up, pairs kept as different principles: %s", describe_error(exc))
        return {}
