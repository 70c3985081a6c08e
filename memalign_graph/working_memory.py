"""Working memory for one judgment, and judging a case with it in one call.

Working memory is what the judge sees: the criterion, the principles (all of them, or the
most relevant within a token budget), the ``k`` most similar episodes, and the case
(MemAlign, Databricks 2025). When a retrieved episode is this same case with an expert's
value, that value is the judgment (the expert-precedent rule) and no model is called.
Otherwise the model judges, and then the memory's calibration head may decide the final value
(:func:`calibrate_judgment`, see :mod:`memalign_graph.calibration`): precedent first (it is the
expert's own value), then the model, then the head.
The judge graph builds working memory node by node; :func:`judge` and :func:`ajudge`
(``Memory.judge`` / ``Memory.ajudge``) do the same in one call, and share with the graph
how the judge's settings are made and how a judgment is finished.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel

from memalign_graph.calibration import CalibrationMode, check_mode
from memalign_graph.episodic import Episode
from memalign_graph.judge import (
    JudgeSettings,
    Judgment,
    PrecedentMode,
    arun_judge,
    find_precedent,
    precedent_judgment,
    run_judge,
)
from memalign_graph.memory_head import calibrate, needs_embedding
from memalign_graph.models import resolve_chat_model
from memalign_graph.semantic import Principle
from memalign_graph.spec import CASE_KEYS, parse_record
from memalign_graph.versions import VersionedMemory, calibration_mode

PRECEDENT_MODES = ("exact", "similar", "off")


@dataclass(frozen=True, kw_only=True)
class JudgeOptions:
    """How :func:`judge` makes one judgment (its keyword arguments; see there).

    Raises:
        ValueError: for an unknown ``precedent`` or a ``k`` that is not a non-negative integer.
    """

    model: str | BaseChatModel | None = None
    base_url: str | None = None
    k: int = 5
    precedent: PrecedentMode = "exact"
    precedent_threshold: float = 0.98
    use_principles: bool = True
    principles_token_budget: int | None = 2000
    use_episodes: bool = True
    max_retries: int = 2
    backoff_s: float | None = None
    backoff_max_s: float | None = None
    structured_output: str = "auto"
    rationale_max_chars: int = 300
    calibration: CalibrationMode | None = None

    def __post_init__(self) -> None:
        if self.calibration is not None:
            check_mode(self.calibration, "calibration")
        if self.precedent not in PRECEDENT_MODES:
            raise ValueError(f"precedent {self.precedent!r}: use one of {', '.join(PRECEDENT_MODES)}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise ValueError(f"k must be a non-negative integer, got {self.k!r}")


F = TypeVar("F", bound=Callable[..., Any])


def _takes_judge_options(func: F) -> F:
    """``func(memory, case, **options)``, shown with the fields of :class:`JudgeOptions` as keyword-only arguments."""
    signature = inspect.signature(func)
    head = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    options = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
        for f in fields(JudgeOptions)
    ]
    func.__signature__ = signature.replace(parameters=[*head, *options])  # type: ignore[attr-defined]
    return func


def judge_settings(
    max_retries: int,
    structured_output: str,
    rationale_max_chars: int,
    backoff_s: float | None = None,
    backoff_max_s: float | None = None,
    context_window: int | None = None,
) -> JudgeSettings:
    """The judge's settings (see :class:`~memalign_graph.judge.JudgeSettings`); ``None`` leaves a default."""
    settings = JudgeSettings(
        max_retries=max_retries,
        structured_output=structured_output,
        rationale_max_chars=rationale_max_chars,
        context_window=context_window,
    )
    if backoff_s is not None:
        settings["backoff_s"] = float(backoff_s)
    if backoff_max_s is not None:
        settings["backoff_max_s"] = float(backoff_max_s)
    return settings


def calibrate_judgment(
    memory: VersionedMemory, case: dict[str, Any], judgment: Judgment, mode: CalibrationMode, model: Any
) -> Judgment:
    """``judgment`` (the model's) with its final value: the memory's calibration head's where it decides.

    ``model_value`` keeps the model's value; ``calibration`` says what the head said and why (see
    :func:`memalign_graph.memory_head.calibrate`), or is ``None`` (mode ``off``, a pairwise judge, no
    head). Under ``auto`` a hosted model with no recorded judgments on the episodes keeps its value:
    a model that follows instructions may beat the head, and nothing measured says otherwise.

    Raises:
        Exception: under ``"on"`` only, whatever fitting the head or featurising the case raised (the
            embeddings failed, say); under ``"auto"`` that is a ``RuntimeWarning`` and the model's value stands.
    """
    judgment["model_value"] = judgment["value"]
    judgment["calibration"] = None
    if mode == "off" or memory.spec.kind == "pairwise":
        return judgment
    from memalign_graph.llamacpp import ChatLlamaCpp

    try:
        head = memory.calibration_head()
        if head is None:
            return judgment
        out = calibrate(
            head, case, judgment["value"], mode, memory.embeddings, model_evidence=not isinstance(model, ChatLlamaCpp)
        )
    except Exception as exc:
        if mode == "on":
            raise
        # Under "auto" the head is an addition the caller did not ask for by name: the model's judgment stands.
        warnings.warn(f"calibration head unavailable ({exc}); the model's value stands", RuntimeWarning, stacklevel=2)
        return judgment
    judgment["value"], judgment["calibration"] = out["value"], out["calibration"]
    return judgment


async def acalibrate_judgment(
    memory: VersionedMemory, case: dict[str, Any], judgment: Judgment, mode: CalibrationMode, model: Any
) -> Judgment:
    """Async :func:`calibrate_judgment`: in a worker thread when it reads a stored head or embeds the case.

    Raises:
        CalibrationHeadError: as :func:`calibrate_judgment`.
    """
    if mode == "off" or memory.spec.kind == "pairwise":
        return calibrate_judgment(memory, case, judgment, mode, model)
    if memory.calibration_loaded():
        head = memory.calibration_head()
        if head is None or not (needs_embedding(head) and head.uses(mode)):
            return calibrate_judgment(memory, case, judgment, mode, model)
    return await asyncio.to_thread(calibrate_judgment, memory, case, judgment, mode, model)


def finish_judgment(judgment: Judgment, case: dict[str, Any], omitted: list[str]) -> Judgment:
    """``judgment`` with the ids of the principles left out of working memory, and the case's id if it has one."""
    judgment["principles_omitted"] = omitted
    if "id" in case:
        judgment["id"] = case["id"]
    return judgment


def assemble(
    memory: VersionedMemory, case: dict[str, Any], options: JudgeOptions
) -> tuple[dict[str, Any], list[Principle], list[str], list[Episode], Episode | None]:
    """Working memory for ``case``: ``(case validated, principles, ids left out, episodes, expert precedent or None)``.

    The case is embedded once (principle ranking hands its vector to the episode search).

    Raises:
        RecordError: if the case is malformed (names the field).
    """
    raw = {key: case[key] for key in CASE_KEYS if key in case}
    parsed = dict(parse_record(raw, memory.spec, where="case"))
    handoff = memory.episodes.new_handoff() if options.use_episodes and options.k else None
    principles, omitted = (
        memory.select_principles(parsed, options.principles_token_budget, handoff=handoff)
        if options.use_principles
        else ([], [])
    )
    episodes = (
        memory.retrieve_episodes(parsed, options.k, handoff=handoff) if options.use_episodes and options.k else []
    )
    found = find_precedent(parsed, episodes, options.precedent, options.precedent_threshold)
    return parsed, principles, omitted, episodes, found


def _settings(options: JudgeOptions) -> JudgeSettings:
    return judge_settings(
        options.max_retries,
        options.structured_output,
        options.rationale_max_chars,
        options.backoff_s,
        options.backoff_max_s,
    )


@_takes_judge_options
def judge(memory: VersionedMemory, case: dict[str, Any], **options: Any) -> Judgment:
    """Judge one case with this memory: what the judge graph does, as one call.

    Working memory is the criterion, the principles (all, or the most relevant within
    ``principles_token_budget``), the ``k`` most similar episodes and the case; if a retrieved
    episode is this same case with an expert value, that value is returned without a model call
    (the expert-precedent rule). Defaults and configuration resolution are those of
    :class:`~memalign_graph.context.Context`: ``model``/``base_url`` left ``None`` are read from
    ``MEMALIGN_MODEL``/``MEMALIGN_BASE_URL``. The model is called synchronously, so repeated
    calls in one process work with every model.

    Example::

        judgment = memory.judge({"inputs": "2+2?", "outputs": "5"}, model="openai:gpt-4.1-mini")
        judgment["value"], judgment["rationale"], judgment["scores"]

    Args:
        memory: the judge's memory.
        case: ``{"inputs", "outputs", "expectations"?, "id"?}``; pairwise judges take ``outputs`` as
            a list of two.
        **options: the fields of :class:`JudgeOptions`:

            - ``model``: chat model instance or spec string (see :func:`resolve_chat_model`).
            - ``base_url``: base URL of an OpenAI-compatible server; ``model`` is then its model name.
            - ``k``: episodes retrieved into working memory (5, as MemAlign).
            - ``precedent``: ``"exact"`` (same normalised case), ``"similar"`` (also cosine similarity
              >= ``precedent_threshold``) or ``"off"``.
            - ``precedent_threshold``: cosine similarity, in [-1, 1], for ``precedent="similar"`` (0.98).
            - ``use_principles``: include semantic memory (``True``).
            - ``principles_token_budget``: estimated tokens (characters / 4) of principles (2000);
              ``None``: all.
            - ``use_episodes``: include episodic memory (``True``).
            - ``max_retries``: repair rounds for an unusable answer, and retries of a call after a
              transient error (timeout, rate limit, connection, 5xx) (2).
            - ``backoff_s``: first wait before such a retry, in seconds (``None``: 0.5), doubled each retry.
            - ``backoff_max_s``: longest single wait, in seconds (``None``: 20).
            - ``structured_output``: ``"auto"``, ``"json_schema"``, ``"function_calling"``, ``"json_mode"`` or
              ``"prompt"`` (see :func:`memalign_graph.structured.bind_structured`).
            - ``rationale_max_chars``: cap on the rationale's length, in characters (300).
            - ``calibration``: ``"auto"``, ``"on"`` or ``"off"``: when the memory's calibration head
              decides the value after the model judged (see :func:`calibrate_judgment`); ``None``: the
              judge's own setting (``JudgeSpec.calibration``, ``"auto"`` by default).

    Returns:
        A :class:`~memalign_graph.judge.Judgment` (``value``, ``model_value``, ``calibration``,
        ``rationale``, ``scores`` where the model gave log-probabilities, the principle and episode
        ids used, ``usage``, ``attempts``); ``id`` when the case had one.

    Raises:
        TypeError: for an option that is not a field of :class:`JudgeOptions`.
        RecordError: if the case is malformed (names the field).
        ValueError: for an unknown ``precedent`` or ``structured_output``, a model string that
            names no known form, or ``base_url`` with a model instance.
        JudgeError: if the model call failed (after its retries, for transient errors).
        JudgmentParseError: if no usable answer came after ``max_retries`` repairs.
        Exception: with ``calibration="on"``, what fitting the calibration head or featurising the case raised
            (under ``"auto"`` a warning, and the model's value stands).
    """
    opts = JudgeOptions(**options)
    mode = calibration_mode(memory, opts.calibration)
    parsed, principles, omitted, episodes, found = assemble(memory, case, opts)
    if found is not None:
        return finish_judgment(precedent_judgment(found, principles, episodes), parsed, omitted)
    chat = resolve_chat_model(opts.model, base_url=opts.base_url)
    judgment = run_judge(chat, memory.spec, parsed, principles, episodes, _settings(opts))
    judgment = calibrate_judgment(memory, parsed, judgment, mode, chat)
    return finish_judgment(judgment, parsed, omitted)


@_takes_judge_options
async def ajudge(memory: VersionedMemory, case: dict[str, Any], **options: Any) -> Judgment:
    """Async :func:`judge` (same arguments, result and errors): the model call is awaited.

    Working memory is assembled and the model resolved in worker threads (they may embed or
    load a model), so nothing blocks the event loop.

    Raises:
        TypeError: as :func:`judge`.
        RecordError: as :func:`judge`.
        ValueError: as :func:`judge`.
        JudgeError: as :func:`judge`.
        JudgmentParseError: as :func:`judge`.
    """
    opts = JudgeOptions(**options)
    mode = calibration_mode(memory, opts.calibration)
    parsed, principles, omitted, episodes, found = await asyncio.to_thread(assemble, memory, case, opts)
    if found is not None:
        return finish_judgment(precedent_judgment(found, principles, episodes), parsed, omitted)
    chat = await asyncio.to_thread(resolve_chat_model, opts.model, base_url=opts.base_url)
    judgment = await arun_judge(chat, memory.spec, parsed, principles, episodes, _settings(opts))
    judgment = await acalibrate_judgment(memory, parsed, judgment, mode, chat)
    return finish_judgment(judgment, parsed, omitted)


__all__ = [
    "CASE_KEYS",
    "PRECEDENT_MODES",
    "JudgeOptions",
    "acalibrate_judgment",
    "ajudge",
    "assemble",
    "calibrate_judgment",
    "calibration_mode",
    "finish_judgment",
    "judge",
    "judge_settings",
]
