"""The judge: working memory in, judgment (value + rationale) out.

Working memory is the criterion, every principle (semantic memory), the ``k``
retrieved episodes (episodic memory) and the case at hand (MemAlign,
Databricks 2025). It is sized to the model's context window (:func:`working_memory`):
whole when it fits, long fields clipped by a common cap when not (the judgment then
says ``clipped``). Text written by others enters it JSON-encoded inside fixed tags
(:func:`escape_json`), so no field can forge the prompt's structure.

Getting a valid value out of any model, small ones included:

1. **Structured output** (:mod:`memalign_graph.structured`): the model is asked in the judgment's
   JSON schema (:func:`judgment_schema`) by the method it supports (native JSON schema, tool
   calling, JSON mode, or the prompt alone). The schema enumerates the allowed values, so a
   constrained model can only answer with one of them.
2. **Repair and retry** for every model: an answer that is not a JSON object
   with an allowed value is sent back with the reason, up to ``max_retries`` times.
3. Still unusable: :class:`~memalign_graph.errors.JudgmentParseError` naming the
   case, the model and the raw text. A value is never invented.

Transport faults are retried separately, per model call, with exponential
backoff and jitter (LangChain's ``Runnable.with_retry``): timeouts, rate limits
(HTTP 429), connection errors and server errors (5xx), as recognised by
:func:`memalign_graph.faults.is_transient`, up to ``transient_retries`` times (default ``max_retries``).
Other errors (authentication, bad request) are not retried. Either way a failed
call ends in :class:`~memalign_graph.errors.JudgeError` naming the case id, the
model and the number of attempts.

Where the model returns log-probabilities (the embedded model; OpenAI and
OpenAI-compatible models, which are asked for them unless they refuse), the judgment
also carries ``scores``: the probability of each allowed value, read from the tokens
that spell the value (:func:`memalign_graph.scores.value_scores`), renormalised over the allowed values.

**Pairwise** judges judge both orders by default (outputs as given and swapped;
:mod:`memalign_graph.pairwise`); an order-inconsistent pair is a ``tie``, both answers kept in ``orders``.

**Expert precedent** (optional, on by default): if a retrieved episode is the
same case (same normalised case hash; or, in ``"similar"`` mode, cosine
similarity at or above a threshold) and carries an expert value, that value is
returned without calling the model, and ``precedent`` names the episode.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, NamedTuple, NotRequired, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable
from typing_extensions import TypedDict

from memalign_graph import prompts
from memalign_graph.episodic import Episode
from memalign_graph.errors import JudgeError, JudgmentParseError, RecordError
from memalign_graph.faults import RETRY_DEFAULTS, CallCounter, describe_error, is_transient, retrying_call
from memalign_graph.models import model_name
from memalign_graph.pairwise import OrderJudgment, both_orders, swap_outputs
from memalign_graph.scores import top_logprobs, value_scores
from memalign_graph.semantic import Principle
from memalign_graph.spec import JudgeSpec, Value, case_hash, clip, render
from memalign_graph.structured import Usage, add_usage, bind_structured, empty_usage, extract_json

PrecedentMode = Literal["exact", "similar", "off"]


class Judgment(TypedDict):
    """A judgment, JSON-like so it can live in graph state and checkpoints.

    Attributes:
        value: the allowed value chosen (label, integer, or ``A``/``B``/``tie``).
        rationale: why, in the judge's words.
        principle_ids: principles in working memory.
        principles_omitted: principles left out because all did not fit the token budget.
        episode_ids: episodes in working memory, most similar first.
        precedent: id of the episode whose expert value was returned, or ``None``.
        scores: probability per allowed value (``str(value)`` keys), when the model gave log-probabilities.
        model: the model's name (``"expert-precedent"`` when no model was called).
        usage: tokens spent on this judgment.
        attempts: model calls made (1 + repairs + retries after transient errors).
        clipped: a field of the case at hand was clipped to fit the model's context window.
        orders: pairwise judgments in both orders: the answer in each order (see
            :class:`~memalign_graph.pairwise.OrderJudgment`); when they disagree, ``value`` is ``tie``.
        model_value: the judge model's own value (``None`` when no model was called: an expert
            precedent); ``value`` differs from it only when the calibration head decided.
        calibration: what the calibration head said (see :func:`memalign_graph.memory_head.calibrate`):
            ``{"used", "probabilities", "cv_agreement", "model_agreement", "majority_agreement",
            "episodes", "fields", "open", "reason"}``; ``None`` for an expert precedent, a pairwise
            judge, calibration ``"off"``, or a memory without a head.
    """

    value: Value
    rationale: str
    principle_ids: list[str]
    episode_ids: list[str]
    precedent: str | None
    scores: dict[str, float] | None
    model: str
    usage: Usage
    attempts: int
    principles_omitted: NotRequired[list[str]]
    id: NotRequired[str]
    clipped: NotRequired[bool]
    orders: NotRequired[list[OrderJudgment]]
    model_value: NotRequired[Value | None]
    calibration: NotRequired[dict[str, Any] | None]


# --- working memory: budgets from the model's context window, untrusted text JSON-escaped ------------------------

HOSTED_CONTEXT_TOKENS = 128_000
"""Context window assumed for a model that does not state one (hosted models: GPT-4.1 and its peers
take 128k tokens or more). Override with ``Context.context_window`` / ``JudgeSettings["context_window"]``."""

PROMPT_CHARS_PER_TOKEN = 3
"""Characters per token when sizing working memory. English prose runs about 4 with BPE tokenisers;
JSON-escaped text, code, numbers and other languages run fewer, and an overflowing prompt is an error,
so the estimate errs short."""

CASE_WEIGHT = 4
"""When working memory must be clipped, a field of the case at hand keeps up to this many times as
many characters as a field of a retrieved episode (the case is what is judged)."""

MIN_FIELD_CHARS = 64
"""No clipped field is cut below this many characters, however small the budget."""

_EPISODE_TEXT_FIELDS = ("inputs", "outputs", "output_a", "output_b", "expectations", "expert_feedback")


def escape_json(value: Any) -> str:
    r"""``value`` as JSON that cannot forge a prompt's structure: ``<`` is written ``\u003c``.

    Every string is quoted and escaped by ``json.dumps`` (quotes, newlines, control characters), and
    no ``<`` survives, so a field can neither leave its JSON string nor open or close a tag. The line
    and paragraph separators U+2028/U+2029 are escaped too (some readers break lines at them).
    """
    text = json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def context_window_of(model: Any, override: int | None = None) -> int:
    """Tokens one judge request may use (prompt + answer).

    ``override`` if given; else the model's own ``context_window`` attribute (the embedded model:
    its llama.cpp context divided among its slots); else :data:`HOSTED_CONTEXT_TOKENS`.

    Raises:
        ValueError: if ``override`` is given and is not a positive integer.
    """
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override < 1:
            raise ValueError(f"context_window must be a positive number of tokens, got {override!r}")
        return override
    window = getattr(model, "context_window", None)
    if isinstance(window, int) and not isinstance(window, bool) and window > 0:
        return window
    return HOSTED_CONTEXT_TOKENS


def _case_data(case: dict[str, Any]) -> dict[str, Any]:
    outputs = case["outputs"]
    data: dict[str, Any] = {"inputs": case["inputs"]}
    if isinstance(outputs, list) and len(outputs) == 2:
        data.update(output_a=outputs[0], output_b=outputs[1])
    else:
        data["outputs"] = outputs
    if case.get("expectations") is not None:
        data["expectations"] = case["expectations"]
    return data


def _episode_data(episode: Episode | dict[str, Any]) -> dict[str, Any]:
    return {
        "id": episode.get("id"),
        **_case_data(episode),  # type: ignore[arg-type]
        "judge_value": episode.get("judge_value"),
        "expert_value": episode.get("value"),
        "expert_feedback": episode.get("feedback"),
    }


def _clippable(data: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if k in data and data[k] is not None]


def _fit(items: list[tuple[dict[str, Any], list[str], int]], available: int) -> list[bool]:
    """Clip the clippable fields of ``items`` in place so their escaped text fits ``available`` characters.

    ``items`` are ``(data, clippable keys, weight)``. Nothing is clipped when everything fits. Otherwise
    a common cap ``c`` is found (water-filling): a field of weight ``w`` keeps ``min(its length, w * c)``
    characters, the largest ``c`` whose total fits; short fields stay whole. Returns, per item, whether
    any of its fields was clipped.
    """
    costs = [[len(escape_json(data[k])) - 2 for k in keys] for data, keys, _ in items]
    if sum(map(sum, costs)) <= available:
        return [False] * len(items)

    def used(cap: float) -> float:
        return sum(min(cost, w * cap) for (_, _, w), row in zip(items, costs) for cost in row)

    low, high = 0.0, float(max((c for row in costs for c in row), default=0))
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if used(mid) <= available else (low, mid)
    clipped = []
    for (data, keys, weight), row in zip(items, costs):
        any_clipped = False
        for key, cost in zip(keys, row):
            limit = max(MIN_FIELD_CHARS, int(weight * low))
            if cost <= limit:
                continue
            text = render(data[key])
            data[key] = clip(text, max(1, len(text) * limit // cost))
            any_clipped = True
        clipped.append(any_clipped)
    return clipped


class WorkingMemory(NamedTuple):
    """The judge prompt and what had to be clipped to fit it.

    Attributes:
        messages: ``[SystemMessage, HumanMessage]``.
        case_clipped: a field of the case at hand was clipped.
        episodes_clipped: ids of the episodes with a clipped field.
    """

    messages: list[BaseMessage]
    case_clipped: bool
    episodes_clipped: list[str]


def _render_messages(
    spec: JudgeSpec, case: dict[str, Any], principles: list[Principle], episodes: list[dict[str, Any]]
) -> list[BaseMessage]:
    principles_text = ""
    if principles:
        listed = ",\n".join(escape_json(p["text"]) for p in principles)
        principles_text = prompts.PRINCIPLES_SECTION.format(principles=f"[\n{listed}\n]")
    system = prompts.JUDGE_SYSTEM.format(
        name=spec.name,
        criterion=spec.criterion,
        values=spec.describe_values(),
        kind_note=prompts.KIND_NOTES[spec.kind],
        principles=principles_text,
    )
    episodes_text = ""
    if episodes:
        episodes_text = prompts.EPISODES_SECTION.format(
            episodes="\n".join(prompts.EPISODE.format(episode=escape_json(e)) for e in episodes)
        )
    user = prompts.JUDGE_USER.format(episodes=episodes_text, case=escape_json(case), values=spec.describe_values())
    return [SystemMessage(system), HumanMessage(user)]


def working_memory(
    spec: JudgeSpec,
    case: dict[str, Any],
    principles: list[Principle],
    episodes: list[Episode],
    *,
    context_tokens: int = HOSTED_CONTEXT_TOKENS,
    answer_tokens: int = 0,
) -> WorkingMemory:
    """Assemble working memory as chat messages, sized to the model's context window.

    Untrusted text (each principle, each episode's id, case, values and feedback, the case at hand)
    enters JSON-encoded by :func:`escape_json` inside the fixed tags of
    :data:`memalign_graph.prompts.JUDGE_TAGS`, so no field can forge the prompt's structure.

    Everything is shown whole when the prompt fits ``(context_tokens - answer_tokens) *``
    :data:`PROMPT_CHARS_PER_TOKEN` characters. Otherwise the long fields of the case and the episodes
    are clipped (start and end kept, "…" between) by a common cap, a case field keeping up to
    :data:`CASE_WEIGHT` times an episode field's share; principles and ids are never clipped
    (principles are bounded upstream by ``principles_token_budget``).

    Args:
        spec: the judge.
        case: ``{"inputs", "outputs", "expectations"?}``.
        principles: all principles to include, in order.
        episodes: retrieved episodes, most similar first.
        context_tokens: tokens one request may use (see :func:`context_window_of`).
        answer_tokens: tokens kept free for the answer (and repair rounds).

    Returns:
        A :class:`WorkingMemory`.
    """
    case_data = _case_data(case)
    episode_data = [_episode_data(e) for e in episodes]
    budget = (context_tokens - answer_tokens) * PROMPT_CHARS_PER_TOKEN
    messages = _render_messages(spec, case_data, principles, episode_data)
    if sum(len(m.text) for m in messages) <= budget:  # the usual case: everything fits, nothing to size
        return WorkingMemory(messages, False, [])
    items = [(case_data, _clippable(case_data, _EPISODE_TEXT_FIELDS), CASE_WEIGHT)]
    items += [(data, _clippable(data, _EPISODE_TEXT_FIELDS), 1) for data in episode_data]
    empty = [({**data, **dict.fromkeys(keys, "")}) for data, keys, _ in items]
    fixed = sum(len(m.text) for m in _render_messages(spec, empty[0], principles, empty[1:]))
    available = budget - fixed
    clipped = _fit(items, max(0, available))
    messages = _render_messages(spec, case_data, principles, episode_data)
    return WorkingMemory(messages, clipped[0], [str(e["id"]) for e, c in zip(episodes, clipped[1:]) if c])


def build_messages(
    spec: JudgeSpec,
    case: dict[str, Any],
    principles: list[Principle],
    episodes: list[Episode],
    *,
    context_tokens: int = HOSTED_CONTEXT_TOKENS,
    answer_tokens: int = 0,
) -> list[BaseMessage]:
    """The messages of :func:`working_memory` (same arguments): ``[SystemMessage, HumanMessage]``."""
    return working_memory(
        spec, case, principles, episodes, context_tokens=context_tokens, answer_tokens=answer_tokens
    ).messages


def judgment_schema(spec: JudgeSpec, rationale_max_chars: int | None = 300) -> dict[str, Any]:
    """JSON schema of the judge's answer: ``{"rationale": str, "value": <allowed value>}``.

    ``maxLength`` on the rationale bounds generation for grammar-constrained models.
    """
    rationale: dict[str, Any] = {"type": "string"}
    if rationale_max_chars:
        rationale["maxLength"] = rationale_max_chars
    return {
        "type": "object",
        "properties": {"rationale": rationale, "value": {"enum": spec.values}},
        "required": ["rationale", "value"],
        "additionalProperties": False,
    }


def parse_judgment(spec: JudgeSpec, text: str) -> tuple[Value, str]:
    """Read ``(value, rationale)`` from a model's answer.

    Raises:
        ValueError: with the reason, if there is no JSON object, no ``value``,
            or the value is not allowed for ``spec``.
    """
    obj = extract_json(text)
    if "value" not in obj:
        raise ValueError("the JSON object has no 'value'")
    try:
        value = spec.coerce_value(obj["value"])
    except RecordError as exc:
        raise ValueError(exc.reason) from None
    rationale = obj.get("rationale")
    return value, rationale.strip() if isinstance(rationale, str) else ""


def find_precedent(
    case: dict[str, Any], episodes: list[Episode], mode: PrecedentMode, threshold: float = 0.98
) -> Episode | None:
    """The retrieved episode that is this same case and has an expert value, if any.

    Args:
        case: the case at hand.
        episodes: retrieved episodes with ``score`` (cosine similarity).
        mode: ``"exact"`` (same normalised case hash), ``"similar"`` (hash or
            score >= ``threshold``), or ``"off"``.
        threshold: cosine similarity for ``"similar"`` mode.
    """
    if mode == "off" or not any("value" in episode for episode in episodes):
        return None
    wanted = case_hash(case)
    for episode in episodes:
        if "value" not in episode:
            continue
        if episode.get("case_hash") == wanted:
            return episode
        if mode == "similar" and float(episode.get("score", 0.0)) >= threshold:
            return episode
    return None


def precedent_judgment(episode: Episode, principles: list[Principle], episodes: list[Episode]) -> Judgment:
    """The judgment returned under the expert-precedent rule (no model call)."""
    said = f" The expert said: {episode['feedback']}" if episode.get("feedback") else ""
    return Judgment(
        value=episode["value"],  # type: ignore[typeddict-item]
        rationale=f"Expert precedent: an expert already judged this case (episode {episode['id']}).{said}",
        principle_ids=[p["id"] for p in principles],
        episode_ids=[e["id"] for e in episodes],
        precedent=episode["id"],
        scores=None,
        model="expert-precedent",
        usage=empty_usage(),
        attempts=0,
        clipped=False,
        model_value=None,
        calibration=None,
    )


class JudgeSettings(TypedDict, total=False):
    """Knobs for one judgment (all optional; defaults in :data:`DEFAULT_SETTINGS`).

    The backoff's defaults are :data:`memalign_graph.faults.RETRY_DEFAULTS`, shared with distillation.

    Attributes:
        max_retries: repair rounds for an unusable answer.
        transient_retries: retries of one model call after a transient error (``None``: ``max_retries``).
        backoff_s: first wait before such a retry, in seconds (doubles each time, plus jitter).
        backoff_max_s: longest single wait, in seconds.
        structured_output: one of :data:`memalign_graph.structured.STRUCTURED_OUTPUT_MODES`
            (see :func:`memalign_graph.structured.structured_method`).
        rationale_max_chars: cap on the rationale's length.
        context_window: tokens one request may use, prompt and answer (``None``: the model's own
            ``context_window``, else :data:`HOSTED_CONTEXT_TOKENS`); working memory is sized to it.
        pairwise_orders: pairwise judges only: ``"both"`` (judge with the outputs as given and swapped;
            an order-inconsistent pair is a ``tie``) or ``"one"`` (as given only).
    """

    max_retries: int
    transient_retries: int | None
    backoff_s: float
    backoff_max_s: float
    structured_output: str
    rationale_max_chars: int
    context_window: int | None
    pairwise_orders: str


DEFAULT_SETTINGS: JudgeSettings = JudgeSettings(
    max_retries=2,
    transient_retries=None,
    structured_output="auto",
    rationale_max_chars=300,
    context_window=None,
    pairwise_orders="both",
)

REPAIR_TOKENS = 64
"""Tokens kept free per repair round for the repair message (its answer is counted separately)."""


def _settings(settings: JudgeSettings | None) -> dict[str, Any]:
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    cfg: dict[str, Any] = {**RETRY_DEFAULTS, **DEFAULT_SETTINGS, **given}
    if cfg.get("transient_retries") is None:
        cfg["transient_retries"] = cfg["max_retries"]
    if cfg["pairwise_orders"] not in ("both", "one"):
        raise ValueError(f"pairwise_orders must be 'both' or 'one', got {cfg['pairwise_orders']!r}")
    return cfg


def _prepare(model, spec, case, principles, episodes, cfg) -> WorkingMemory:  # type: ignore[no-untyped-def]
    """Working memory sized to the model: the answer and every repair round are kept room for."""
    answer = cfg["rationale_max_chars"] + 48
    rounds = cfg["max_retries"] + 1
    return working_memory(
        spec,
        case,
        principles,
        episodes,
        context_tokens=context_window_of(model, cfg["context_window"]),
        answer_tokens=rounds * answer + (rounds - 1) * REPAIR_TOKENS,
    )


def _model_call(model: BaseChatModel, spec: JudgeSpec, cfg: dict[str, Any], counter: CallCounter) -> Runnable:
    bound = bind_structured(
        model,
        judgment_schema(spec, cfg["rationale_max_chars"]),
        "judgment",
        cfg["structured_output"],
        max_tokens=cfg["rationale_max_chars"] + 48,
        top_logprobs=top_logprobs(spec),
    )
    return retrying_call(
        bound,
        counter,
        retries=cfg["transient_retries"],
        backoff_s=cfg["backoff_s"],
        backoff_max_s=cfg["backoff_max_s"],
        label=f"judge model {model_name(model)!r}",
    )


def _call_failed(model: BaseChatModel, case: dict[str, Any], counter: CallCounter, exc: Exception) -> JudgeError:
    return JudgeError(
        model_name(model),
        describe_error(exc),
        record_id=case.get("id"),
        attempts=counter.n,
        transient=is_transient(exc),
    )


def _unusable(
    model: BaseChatModel, case: dict[str, Any], counter: CallCounter, raw: str, error: str
) -> JudgmentParseError:
    return JudgmentParseError(model_name(model), raw, error, record_id=case.get("id"), attempts=counter.n)


def _finish(spec, message, value, rationale, principles, episodes, model, usage, attempts, clipped) -> Judgment:  # type: ignore[no-untyped-def]
    return Judgment(
        value=value,
        rationale=rationale,
        principle_ids=[p["id"] for p in principles],
        episode_ids=[e["id"] for e in episodes],
        precedent=None,
        scores=value_scores(spec, message),
        model=model_name(model),
        usage=usage,
        attempts=attempts,
        clipped=clipped,
        model_value=value,
        calibration=None,
    )


def _repair(spec: JudgeSpec, messages: list[BaseMessage], answer: BaseMessage, error: str) -> list[BaseMessage]:
    return [
        *messages,
        AIMessage(answer.text),
        HumanMessage(prompts.JUDGE_REPAIR.format(error=error, values=spec.describe_values())),
    ]


T = TypeVar("T")
Ask = Callable[[Runnable, list[BaseMessage]], Awaitable[BaseMessage]]
"""How one round's call is made: ``runnable.invoke`` (synchronous judging) or ``runnable.ainvoke``."""


async def _invoke(call: Runnable, messages: list[BaseMessage]) -> BaseMessage:
    return call.invoke(messages)


async def _ainvoke(call: Runnable, messages: list[BaseMessage]) -> BaseMessage:
    return await call.ainvoke(messages)


def _run_now(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (its awaits are :func:`_invoke`), on this thread, no event loop.

    One repair loop serves :func:`run_judge` and :func:`arun_judge`: written once as a coroutine,
    driven here for synchronous callers, whose chat model is then called with ``invoke`` in their
    own thread as before.

    Raises:
        RuntimeError: if the coroutine suspended (it awaited a real asynchronous call).
        Exception: whatever the coroutine raises.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a synchronous judgment awaited an asynchronous call")


async def _judge_once(model, spec, case, principles, episodes, cfg, ask: Ask) -> Judgment:  # type: ignore[no-untyped-def]
    memory = _prepare(model, spec, case, principles, episodes, cfg)
    messages = memory.messages
    counter = CallCounter()
    call = _model_call(model, spec, cfg, counter)
    usage = empty_usage()
    answer: BaseMessage = AIMessage("")
    error = ""
    for _ in range(cfg["max_retries"] + 1):
        try:
            answer = await ask(call, messages)
        except Exception as exc:
            raise _call_failed(model, case, counter, exc) from exc
        add_usage(usage, answer)
        try:
            value, rationale = parse_judgment(spec, answer.text)
        except ValueError as exc:
            error = str(exc)
            messages = _repair(spec, messages, answer, error)
            continue
        return _finish(
            spec, answer, value, rationale, principles, episodes, model, usage, counter.n, memory.case_clipped
        )
    raise _unusable(model, case, counter, answer.text, error)


def run_judge(
    model: BaseChatModel,
    spec: JudgeSpec,
    case: dict[str, Any],
    principles: list[Principle],
    episodes: list[Episode],
    settings: JudgeSettings | None = None,
) -> Judgment:
    """Judge one case with the given working memory (no precedent rule here).

    Working memory is sized to the model's context window (:func:`working_memory`); a judgment
    whose case had to be clipped says ``clipped: True``. A pairwise judge with
    ``pairwise_orders="both"`` (the default) judges the case twice, outputs as given and swapped,
    to cancel position bias; see :func:`memalign_graph.pairwise.both_orders` for how the two answers combine.

    Args:
        model: any LangChain chat model.
        spec: the judge.
        case: ``{"inputs", "outputs", "expectations"?}``.
        principles: semantic memory to include.
        episodes: retrieved episodes to include.
        settings: see :class:`JudgeSettings`.

    Returns:
        A :class:`Judgment`.

    Raises:
        JudgmentParseError: if no usable answer came after ``1 + max_retries`` answers; names the
            case id (``case["id"]``), the model and the attempts.
        JudgeError: if a model call failed: a transient error (timeout, rate limit, connection,
            5xx) still failing after ``transient_retries`` retries with backoff, or any other error
            (authentication, bad request), which is not retried. Names the case id, the model and
            the attempts; the provider's error is its ``__cause__``.
        ValueError: for a bad setting (``context_window``, ``pairwise_orders``).
    """
    cfg = _settings(settings)
    judgment = _run_now(_judge_once(model, spec, case, principles, episodes, cfg, _invoke))
    if spec.kind != "pairwise" or cfg["pairwise_orders"] != "both":
        return judgment
    swapped = _run_now(_judge_once(model, spec, swap_outputs(case), principles, episodes, cfg, _invoke))
    return both_orders(spec, judgment, swapped)


async def arun_judge(
    model: BaseChatModel,
    spec: JudgeSpec,
    case: dict[str, Any],
    principles: list[Principle],
    episodes: list[Episode],
    settings: JudgeSettings | None = None,
) -> Judgment:
    """Async :func:`run_judge` (same arguments and result); a pairwise case's two orders run concurrently.

    Raises:
        JudgmentParseError: as :func:`run_judge`.
        JudgeError: as :func:`run_judge`.
        ValueError: as :func:`run_judge`.
    """
    cfg = _settings(settings)
    if spec.kind != "pairwise" or cfg["pairwise_orders"] != "both":
        return await _judge_once(model, spec, case, principles, episodes, cfg, _ainvoke)
    judgment, swapped = await asyncio.gather(
        _judge_once(model, spec, case, principles, episodes, cfg, _ainvoke),
        _judge_once(model, spec, swap_outputs(case), principles, episodes, cfg, _ainvoke),
    )
    return both_orders(spec, judgment, swapped)
