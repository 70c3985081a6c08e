"""The judge: working memory in, judgment (value + rationale) out.

Working memory is the criterion, every principle (semantic memory), the ``k``
retrieved episodes (episodic memory) and the case at hand (MemAlign,
Databricks 2025). Getting a valid value out of any model, small ones included:

1. **Constrained decoding** where the model supports an OpenAI-style
   ``response_format`` JSON schema (the embedded llama.cpp model, OpenAI and
   compatible servers): the schema enumerates the allowed values, so a
   grammar-constrained model can only answer with one of them.
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

Where the model returns log-probabilities (the embedded model), the judgment
also carries ``scores``: the probability of each allowed value at the position
where the value was decoded, renormalised over the allowed values.

**Expert precedent** (optional, on by default): if a retrieved episode is the
same case (same normalised case hash; or, in ``"similar"`` mode, cosine
similarity at or above a threshold) and carries an expert value, that value is
returned without calling the model, and ``precedent`` names the episode.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, Literal, NotRequired, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable

from memalign_graph import prompts
from memalign_graph.episodic import Episode
from memalign_graph.errors import JudgeError, JudgmentParseError, RecordError
from memalign_graph.faults import CallCounter, describe_error, is_transient, retrying_call
from memalign_graph.models import model_name
from memalign_graph.semantic import Principle
from memalign_graph.spec import JudgeSpec, Value, case_hash, render

PrecedentMode = Literal["exact", "similar", "off"]


class Usage(TypedDict):
    """Tokens counted by the model provider (LangChain ``usage_metadata``)."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


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


def empty_usage() -> Usage:
    """Zero token counts."""
    return Usage(input_tokens=0, output_tokens=0, total_tokens=0)


def add_usage(total: Usage | dict[str, int], message: BaseMessage) -> None:
    """Add ``message.usage_metadata`` (if any) into ``total`` in place."""
    meta = getattr(message, "usage_metadata", None) or {}
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        total[key] = total.get(key, 0) + int(meta.get(key, 0) or 0)  # type: ignore[literal-required]


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, keeping its start and its end (a question often comes last)."""
    if len(text) <= limit:
        return text
    head = (limit - 1) * 3 // 5
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


def format_case(case: dict[str, Any], limit: int) -> str:
    """The case as prompt text, each field clipped to ``limit`` characters."""
    outputs = case["outputs"]
    lines = [f"Input: {_clip(render(case['inputs']), limit)}"]
    if isinstance(outputs, list) and len(outputs) == 2:
        lines += [f"Output A: {_clip(render(outputs[0]), limit)}", f"Output B: {_clip(render(outputs[1]), limit)}"]
    else:
        lines.append(f"Output: {_clip(render(outputs), limit)}")
    if case.get("expectations") is not None:
        lines.append(f"Expected: {_clip(render(case['expectations']), limit)}")
    return "\n".join(lines)


def build_messages(
    spec: JudgeSpec,
    case: dict[str, Any],
    principles: list[Principle],
    episodes: list[Episode],
    *,
    case_chars: int = 2000,
    episode_chars: int = 200,
) -> list[BaseMessage]:
    """Assemble working memory as chat messages.

    Args:
        spec: the judge.
        case: ``{"inputs", "outputs", "expectations"?}``.
        principles: all principles to include, in order.
        episodes: retrieved episodes, most similar first.
        case_chars: per-field character cap for the case at hand.
        episode_chars: per-field character cap inside each episode.

    Returns:
        ``[SystemMessage, HumanMessage]``.
    """
    principles_text = ""
    if principles:
        principles_text = prompts.PRINCIPLES_SECTION.format(principles="\n".join(f"- {p['text']}" for p in principles))
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
            episodes="\n\n".join(
                prompts.EPISODE.format(
                    n=n,
                    case=format_case(e, episode_chars),
                    judge_value=e.get("judge_value", "unknown"),
                    value=e.get("value", "not given"),
                    feedback=_clip(e.get("feedback", "none"), episode_chars),
                )
                for n, e in enumerate(episodes, start=1)
            )
        )
    user = prompts.JUDGE_USER.format(
        episodes=episodes_text, case=format_case(case, case_chars), values=spec.describe_values()
    )
    return [SystemMessage(system), HumanMessage(user)]


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


def value_scores(spec: JudgeSpec, message: BaseMessage, value: Value) -> dict[str, float] | None:
    """Probability of each allowed value where the value was decoded, from log-probabilities.

    Finds the token at which the chosen value starts in the answer, reads that
    position's ``top_logprobs``, maps each candidate token to the allowed value
    it begins (case-insensitive prefix), and renormalises over allowed values.

    Returns:
        ``{str(value): probability}`` summing to 1, or ``None`` if the model gave
        no log-probabilities or the position could not be located.
    """
    logprobs = (getattr(message, "response_metadata", None) or {}).get("logprobs") or {}
    tokens = logprobs.get("content") or []
    text = message.text if isinstance(message, AIMessage) else str(message.content)
    match = re.search(r'"value"\s*:\s*"?', text)
    if not tokens or match is None:
        return None
    target = match.end()
    offset = 0
    position = None
    for tok in tokens:
        piece = tok.get("token", "")
        if offset <= target < offset + len(piece) or (offset >= target and piece.strip(' "')):
            position = tok
            break
        offset += len(piece)
    if position is None:
        return None
    names = [str(v) for v in spec.values]
    mass = dict.fromkeys(names, 0.0)
    candidates = position.get("top_logprobs") or [position]
    for cand in candidates:
        piece = cand.get("token", "").strip().strip('"').lower()
        if not piece:
            continue
        owners = [n for n in names if n.lower().startswith(piece)]
        if len(owners) == 1:
            mass[owners[0]] += math.exp(cand.get("logprob", -math.inf))
    total = sum(mass.values())
    if total <= 0:
        return None
    return {n: round(m / total, 4) for n, m in mass.items()}


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
    if mode == "off":
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
    )


def supports_response_format(model: BaseChatModel) -> bool:
    """Whether ``model`` accepts an OpenAI-style ``response_format`` JSON schema."""
    from memalign_graph.llamacpp import ChatLlamaCpp

    if isinstance(model, ChatLlamaCpp):
        return True
    # An OpenAI model's class is imported already; importing langchain-openai here would cost the
    # first judgment of every process seconds for models that are not OpenAI's.
    openai = sys.modules.get("langchain_openai.chat_models.base")
    return openai is not None and isinstance(model, openai.BaseChatOpenAI)


def bind_structured(
    model: BaseChatModel,
    schema: dict[str, Any],
    name: str,
    structured_output: str = "auto",
    logprobs: bool = True,
    max_tokens: int | None = None,
) -> Any:
    """``model`` bound to answer in ``schema`` where it can (see module docstring).

    Args:
        model: any LangChain chat model.
        schema: JSON schema of the answer.
        name: the schema's name (OpenAI's ``json_schema.name``).
        structured_output: ``"auto"`` (use ``response_format`` where supported),
            ``"json_schema"`` (always pass it), or ``"prompt"`` (never; rely on the prompt).
        logprobs: ask the embedded model for log-probabilities.
        max_tokens: generation cap for the embedded model, large enough for the
            longest answer the schema allows (a truncated answer is invalid JSON).
    """
    from memalign_graph.llamacpp import ChatLlamaCpp

    use = structured_output == "json_schema" or (structured_output == "auto" and supports_response_format(model))
    kwargs: dict[str, Any] = {}
    if use:
        kwargs["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": False},
        }
    if isinstance(model, ChatLlamaCpp):
        if logprobs:
            kwargs.update(logprobs=True, top_logprobs=20)
        if max_tokens:
            kwargs["max_tokens"] = max_tokens
    return model.bind(**kwargs) if kwargs else model


class JudgeSettings(TypedDict, total=False):
    """Knobs for one judgment (all optional; defaults in :data:`DEFAULT_SETTINGS`).

    Attributes:
        max_retries: repair rounds for an unusable answer.
        transient_retries: retries of one model call after a transient error (``None``: ``max_retries``).
        backoff_s: first wait before such a retry, in seconds (doubles each time, plus jitter).
        backoff_max_s: longest single wait, in seconds.
        structured_output: ``"auto"``, ``"json_schema"`` or ``"prompt"`` (see :func:`bind_structured`).
        rationale_max_chars: cap on the rationale's length.
        case_chars: per-field character cap for the case at hand.
        episode_chars: per-field character cap inside each episode.
    """

    max_retries: int
    transient_retries: int | None
    backoff_s: float
    backoff_max_s: float
    structured_output: str
    rationale_max_chars: int
    case_chars: int
    episode_chars: int


DEFAULT_SETTINGS: JudgeSettings = JudgeSettings(
    max_retries=2,
    transient_retries=None,
    backoff_s=0.5,
    backoff_max_s=20.0,
    structured_output="auto",
    rationale_max_chars=300,
    case_chars=2000,
    episode_chars=200,
)


def _prepare(spec, case, principles, episodes, settings):  # type: ignore[no-untyped-def]
    cfg = {**DEFAULT_SETTINGS, **{k: v for k, v in (settings or {}).items() if v is not None}}
    if cfg.get("transient_retries") is None:
        cfg["transient_retries"] = cfg["max_retries"]
    messages = build_messages(
        spec, case, principles, episodes, case_chars=cfg["case_chars"], episode_chars=cfg["episode_chars"]
    )
    return cfg, messages


def _model_call(model: BaseChatModel, spec: JudgeSpec, cfg: dict[str, Any], counter: CallCounter) -> Runnable:
    bound = bind_structured(
        model,
        judgment_schema(spec, cfg["rationale_max_chars"]),
        "judgment",
        cfg["structured_output"],
        max_tokens=cfg["rationale_max_chars"] + 48,
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


def _finish(spec, message, value, rationale, principles, episodes, model, usage, attempts) -> Judgment:  # type: ignore[no-untyped-def]
    return Judgment(
        value=value,
        rationale=rationale,
        principle_ids=[p["id"] for p in principles],
        episode_ids=[e["id"] for e in episodes],
        precedent=None,
        scores=value_scores(spec, message, value),
        model=model_name(model),
        usage=usage,
        attempts=attempts,
    )


def _repair(spec: JudgeSpec, messages: list[BaseMessage], answer: BaseMessage, error: str) -> list[BaseMessage]:
    return [
        *messages,
        AIMessage(answer.text),
        HumanMessage(prompts.JUDGE_REPAIR.format(error=error, values=spec.describe_values())),
    ]


def run_judge(
    model: BaseChatModel,
    spec: JudgeSpec,
    case: dict[str, Any],
    principles: list[Principle],
    episodes: list[Episode],
    settings: JudgeSettings | None = None,
) -> Judgment:
    """Judge one case with the given working memory (no precedent rule here).

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
    """
    cfg, messages = _prepare(spec, case, principles, episodes, settings)
    counter = CallCounter()
    call = _model_call(model, spec, cfg, counter)
    usage = empty_usage()
    answer: BaseMessage = AIMessage("")
    error = ""
    for _ in range(cfg["max_retries"] + 1):
        try:
            answer = call.invoke(messages)
        except Exception as exc:
            raise _call_failed(model, case, counter, exc) from exc
        add_usage(usage, answer)
        try:
            value, rationale = parse_judgment(spec, answer.text)
        except ValueError as exc:
            error = str(exc)
            messages = _repair(spec, messages, answer, error)
            continue
        return _finish(spec, answer, value, rationale, principles, episodes, model, usage, counter.n)
    raise _unusable(model, case, counter, answer.text, error)


async def arun_judge(
    model: BaseChatModel,
    spec: JudgeSpec,
    case: dict[str, Any],
    principles: list[Principle],
    episodes: list[Episode],
    settings: JudgeSettings | None = None,
) -> Judgment:
    """Async :func:`run_judge` (same arguments and result).

    Raises:
        JudgmentParseError: as :func:`run_judge`.
        JudgeError: as :func:`run_judge`.
    """
    cfg, messages = _prepare(spec, case, principles, episodes, settings)
    counter = CallCounter()
    call = _model_call(model, spec, cfg, counter)
    usage = empty_usage()
    answer: BaseMessage = AIMessage("")
    error = ""
    for _ in range(cfg["max_retries"] + 1):
        try:
            answer = await call.ainvoke(messages)
        except Exception as exc:
            raise _call_failed(model, case, counter, exc) from exc
        add_usage(usage, answer)
        try:
            value, rationale = parse_judgment(spec, answer.text)
        except ValueError as exc:
            error = str(exc)
            messages = _repair(spec, messages, answer, error)
            continue
        return _finish(spec, answer, value, rationale, principles, episodes, model, usage, counter.n)
    raise _unusable(model, case, counter, answer.text, error)
