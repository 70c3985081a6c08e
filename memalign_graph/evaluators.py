"""The aligned judge where other code evaluates: an evaluator function, a node for any graph, batches.

- :func:`as_evaluator` / :func:`as_async_evaluator`: the judge as a LangSmith / openevals evaluator
  (``{"key", "score", "value", "comment", "metadata"}``), the counterpart of the importers in
  :mod:`memalign_graph.importers`;
- :func:`evaluator_node`: a node that judges part of an agent graph's state;
- :func:`judge_many` (from :mod:`memalign_graph.judge_graph`): many cases through a compiled judge
  graph, failures gathered.

All run the judge graph (:mod:`memalign_graph.judge_graph`), so a judgment made here is the one the
graph makes: same working memory, same configuration (:class:`~memalign_graph.context.Context`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from memalign_graph.context import Context
from memalign_graph.importers import case_field
from memalign_graph.judge import Judgment
from memalign_graph.judge_graph import build_judge_graph, judge_many
from memalign_graph.review_graph import build_review_graph
from memalign_graph.spec import JudgeSpec
from memalign_graph.versions import shared_memory

BOOLEAN_LABELS: tuple[tuple[str, str], ...] = (
    ("pass", "fail"),
    ("yes", "no"),
    ("true", "false"),
    ("correct", "incorrect"),
    ("right", "wrong"),
    ("good", "bad"),
    ("valid", "invalid"),
    ("accept", "reject"),
    ("acceptable", "unacceptable"),
    ("safe", "unsafe"),
    ("supported", "unsupported"),
    ("faithful", "unfaithful"),
    ("compliant", "noncompliant"),
)
"""Label pairs ``(positive, negative)`` whose order is obvious: a judge with exactly these two labels (any case)
gets a boolean ``score``, ``True`` for the first, as openevals' ``create_llm_as_judge`` returns for a yes/no judge."""


def boolean_scores(spec: JudgeSpec) -> dict[str, bool] | None:
    """``{label (lower case): score}`` for a categorical judge whose two labels are one of :data:`BOOLEAN_LABELS`.

    Returns:
        ``None`` for any other judge (numeric, pairwise, more labels, or labels without an obvious order).
    """
    if spec.kind != "categorical" or len(spec.labels) != 2:
        return None
    lowered = {label.lower() for label in spec.labels}
    for positive, negative in BOOLEAN_LABELS:
        if lowered == {positive, negative}:
            return {positive: True, negative: False}
    return None


def as_evaluator(
    store: str | Path | Any,
    *,
    model: Any = None,
    base_url: str | None = None,
    embeddings: Any = None,
    key: str | None = None,
    score_map: Mapping[str, float] | None = None,
    **context: Any,
) -> Callable[..., dict[str, Any]]:
    """The aligned judge at ``store`` as an evaluator for LangSmith or openevals-style loops.

    The evaluator accepts what LangSmith passes (``run`` / ``example`` objects, or
    ``inputs`` / ``outputs`` / ``reference_outputs`` keyword arguments, as
    ``langsmith.evaluate`` and openevals call evaluators) and judges the case through the
    judge graph with the memory's principles and episodes. ``inputs`` come from the run
    (else the example), ``outputs`` from the run, ``reference_outputs`` (the example's
    outputs) become ``expectations``; each goes through :func:`case_field`. Under
    ``langsmith.aevaluate`` it runs in a worker thread; :func:`as_async_evaluator` is the
    same evaluator as a coroutine function.

    Args:
        store: the memory, as :class:`~memalign_graph.context.Context`'s ``store`` names it: a
            directory, a ``postgresql://…?judge=NAME`` URL (``&store=langgraph`` for a judge in
            LangGraph's ``PostgresStore``), a LangGraph ``BaseStore`` (judge ``default``) or a
            ``MemoryBackend`` such as ``StoreBackend(store, NAME)``.
        model: judge chat model (see :func:`memalign_graph.models.resolve_chat_model`).
        base_url: OpenAI-compatible server URL (``model`` is then its model name).
        embeddings: the memory's embeddings (see :func:`memalign_graph.embeddings.resolve_embeddings`).
        key: the result's ``key`` (default: the judge's name).
        score_map: judge value -> numeric score, e.g. ``{"pass": 1, "fail": 0}``. Without it a
            numeric judge's score is its value, a judge whose two labels have an obvious order
            (:data:`BOOLEAN_LABELS`: ``pass``/``fail``, ``yes``/``no``, ...) scores ``True`` or
            ``False`` as openevals does, and other judges' score is ``None`` (the label is in
            ``value``, LangSmith's field for categorical feedback).
        **context: other :class:`~memalign_graph.context.Context` fields (``k``, ``precedent``, …).

    Returns:
        ``evaluator(inputs=None, outputs=None, reference_outputs=None, *, run=None, example=None)``
        returning ``{"key", "score", "value", "comment", "metadata"}``: ``comment`` is the
        rationale, followed by what the calibration head did when it overrode the model (see
        :func:`calibration_comment`); ``metadata`` the model, precedent, principle and episode ids,
        scores, the model's own value and the calibration.

    Raises:
        MemoryFormatError: (from the evaluator, at first use) if there is no memory at ``store``.
        ValueError: (from the evaluator) if no outputs were given.
        JudgeError, JudgmentParseError: (from the evaluator) if the case could not be judged.
    """
    judging = _Judging(store, model, base_url, embeddings, key, score_map, context)

    def evaluator(
        inputs: Any = None,
        outputs: Any = None,
        reference_outputs: Any = None,
        *,
        run: Any = None,
        example: Any = None,
        **_: Any,
    ) -> dict[str, Any]:
        spec = judging.spec()
        case = judging.case(spec, inputs, outputs, reference_outputs, run, example)
        return judging.result(spec, judging.graph.invoke(case, context=judging.context)["judgment"])

    return evaluator


def as_async_evaluator(
    store: str | Path | Any,
    *,
    model: Any = None,
    base_url: str | None = None,
    embeddings: Any = None,
    key: str | None = None,
    score_map: Mapping[str, float] | None = None,
    **context: Any,
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """:func:`as_evaluator` as a coroutine function, for ``langsmith.aevaluate`` and async openevals loops.

    The judge graph runs with ``ainvoke``: the model call is awaited, memory reads run in
    worker threads, so the event loop is never blocked. Arguments, result and errors are
    :func:`as_evaluator`'s.
    """
    judging = _Judging(store, model, base_url, embeddings, key, score_map, context)

    async def evaluator(
        inputs: Any = None,
        outputs: Any = None,
        reference_outputs: Any = None,
        *,
        run: Any = None,
        example: Any = None,
        **_: Any,
    ) -> dict[str, Any]:
        spec = await asyncio.to_thread(judging.spec)
        case = judging.case(spec, inputs, outputs, reference_outputs, run, example)
        return judging.result(spec, (await judging.graph.ainvoke(case, context=judging.context))["judgment"])

    return evaluator


class _Judging:
    """What :func:`as_evaluator` and :func:`as_async_evaluator` share: the context, the graph, the case, the result."""

    def __init__(
        self,
        store: Any,
        model: Any,
        base_url: str | None,
        embeddings: Any,
        key: str | None,
        score_map: Mapping[str, float] | None,
        context: dict[str, Any],
    ) -> None:
        self.store = str(store) if isinstance(store, Path) else store
        self.embeddings = embeddings
        self.context = Context(store=self.store, model=model, base_url=base_url, embeddings=embeddings, **context)
        self.graph = build_judge_graph().compile()
        self.key = key
        self.scores = {str(k).lower(): v for k, v in (score_map or {}).items()}

    def spec(self) -> JudgeSpec:
        return shared_memory(self.store, self.embeddings).spec

    def case(
        self, spec: JudgeSpec, inputs: Any, outputs: Any, reference_outputs: Any, run: Any, example: Any
    ) -> dict[str, Any]:
        """The judge's input from what LangSmith or openevals passed.

        Raises:
            ValueError: if there are no outputs to judge.
        """
        if run is not None:
            inputs = run.inputs if run.inputs else inputs
            outputs = run.outputs if run.outputs else outputs
        if example is not None:
            inputs = inputs or example.inputs
            reference_outputs = reference_outputs or example.outputs
        if outputs in (None, {}, ""):
            raise ValueError(f"evaluator for judge {spec.name!r}: no outputs to judge")
        case: dict[str, Any] = {"inputs": case_field(inputs) or "(none)", "outputs": case_field(outputs)}
        if reference_outputs not in (None, {}, ""):
            case["expectations"] = case_field(reference_outputs)
        if run is not None:
            case["id"] = str(run.id)
        return case

    def result(self, spec: JudgeSpec, judgment: Judgment) -> dict[str, Any]:
        """The evaluator's result for ``judgment`` (see :func:`as_evaluator`)."""
        value = judgment["value"]
        if self.scores:
            score: Any = self.scores.get(str(value).lower())
        elif spec.kind == "numeric":
            score = value
        else:
            score = (boolean_scores(spec) or {}).get(str(value).lower())
        return {
            "key": self.key or spec.name,
            "score": score,
            "value": value,
            "comment": " ".join(filter(None, [judgment["rationale"], calibration_comment(judgment)])),
            "metadata": {
                "model": judgment["model"],
                "precedent": judgment["precedent"],
                "principle_ids": judgment["principle_ids"],
                "episode_ids": judgment["episode_ids"],
                "scores": judgment.get("scores"),
                "model_value": judgment.get("model_value"),
                "calibration": judgment.get("calibration"),
            },
        }


def calibration_comment(judgment: Judgment) -> str:
    """One sentence when the calibration head overrode the model's value, else ``""``.

    E.g. ``"(Calibration overrode the model: model pass; head fail, p=0.93; cross-validated 1.00 against
    baseline 0.60 on 20 episodes.)"``.
    """
    calibration = judgment.get("calibration") or {}
    if not calibration.get("used") or judgment.get("model_value") == judgment["value"]:
        return ""
    p = (calibration.get("probabilities") or {}).get(str(judgment["value"]))
    baseline = max(calibration.get("model_agreement") or 0.0, calibration.get("majority_agreement") or 0.0)
    cv = calibration.get("cv_agreement")
    evidence = (
        f"cross-validated {cv:.2f} against baseline {baseline:.2f} on {calibration.get('episodes')} episodes"
        if cv is not None
        else f"fitted on {calibration.get('episodes')} episodes"
    )
    said = f", p={p:.2f}" if p is not None else ""
    return (
        f"(Calibration overrode the model: model {judgment.get('model_value')}; head {judgment['value']}{said}; "
        f"{evidence}.)"
    )


def evaluator_node(
    to_input: Callable[[Any], dict[str, Any]], *, output_key: str = "judgment", review: bool = False
) -> Callable[..., dict[str, Any]]:
    """A node for any agent graph that judges part of its state.

    Args:
        to_input: maps the parent's state to the judge's input
            ``{"inputs", "outputs", "expectations"?, "id"?}``.
        output_key: parent state key that receives the judgment.
        review: run the review graph (may pause for an expert; the parent
            then needs a checkpointer) instead of the plain judge graph.

    Returns:
        A node function ``(state, runtime) -> {output_key: judgment}``. The judge's
        own state never reaches the parent, so no parent key is duplicated. It
        uses the parent's context (fields it lacks take defaults).
    """
    graph = build_review_graph().compile() if review else build_judge_graph().compile()

    def evaluate(state: Any, runtime: Runtime[Any]) -> dict[str, Any]:
        out = graph.invoke(to_input(state), context=runtime.context)
        return {output_key: out["judgment"]}

    return evaluate


__all__ = [
    "BOOLEAN_LABELS",
    "as_async_evaluator",
    "as_evaluator",
    "boolean_scores",
    "calibration_comment",
    "evaluator_node",
    "judge_many",
]
