"""What flows through the graphs: plain JSON-like TypedDicts (safe in any checkpointer).

They are ``typing_extensions.TypedDict`` s (Pydantic refuses ``typing.TypedDict`` on
Python < 3.12), and each field's docstring becomes its description in the graphs'
JSON schemas, so Studio and ``client.assistants.get_schemas`` show typed, described forms.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict

from memalign_graph.episodic import Episode
from memalign_graph.judge import Judgment
from memalign_graph.semantic import Principle

_DESCRIBED = ConfigDict(use_attribute_docstrings=True)


@with_config(_DESCRIBED)
class JudgeInput(TypedDict):
    """A case: ``outputs`` is a two-item list ``[A, B]`` for pairwise judges."""

    inputs: Any
    """What the judged system was given (text or JSON)."""
    outputs: Any
    """What it answered (text or JSON); a two-item list [A, B] for a pairwise judge."""
    expectations: NotRequired[Any]
    """Reference material the judge may use, such as an expected answer."""
    id: NotRequired[str]
    """The case's id, carried into the judgment and into any feedback it becomes."""


@with_config(_DESCRIBED)
class JudgeOutput(TypedDict):
    """The judge graph's output: the judgment."""

    judgment: Judgment
    """The value chosen, the rationale, and what working memory held."""


@with_config(_DESCRIBED)
class JudgeState(JudgeInput, total=False):
    """Working memory as it is assembled node by node."""

    principles: list[Principle]
    """Semantic memory selected for this case."""
    principles_omitted: list[str]
    """Ids of principles left out to fit the token budget."""
    episodes: list[Episode]
    """Episodic memory: the most similar past feedback, most similar first."""
    judgment: Judgment
    """The judgment."""
    query_handoff: str | None
    """Internal: this judgment's random token under which principle ranking held the case's query vector
    for the episode search (null unless principles were ranked; never in the output)."""


@with_config(_DESCRIBED)
class ReviewOutput(TypedDict, total=False):
    """The review graph's output: judgment, expert's answer, alignment report, decision on proposed principles."""

    judgment: Judgment
    """The judgment; after a correction, it carries the expert's value."""
    review: dict[str, Any] | None
    """The expert's answer (action, value, feedback, reviewer), or null if not reviewed."""
    report: dict[str, Any] | None
    """What alignment did with the answer, or null if nothing was stored."""
    principles_review: dict[str, Any] | None
    """The expert's decision on principles distillation held for approval (approve/reject ids), or null."""


@with_config(_DESCRIBED)
class ServedJudgeOutput(TypedDict, total=False):
    """A served judge graph's output: the judgment and the working memory it was made from.

    LangGraph Server streams a node's update only for keys of the output schema, so the
    working memory is part of it: Studio then shows what each node retrieved.
    """

    principles: list[Principle]
    """Semantic memory selected for this case."""
    principles_omitted: list[str]
    """Ids of principles left out to fit the token budget."""
    episodes: list[Episode]
    """Episodic memory: the most similar past feedback, most similar first."""
    judgment: Judgment
    """The value chosen, the rationale, and what working memory held."""


@with_config(_DESCRIBED)
class ServedReviewOutput(TypedDict, total=False):
    """A served review graph's output: :class:`ReviewOutput` plus the working memory (:class:`ServedJudgeOutput`)."""

    principles: list[Principle]
    """Semantic memory selected for this case."""
    principles_omitted: list[str]
    """Ids of principles left out to fit the token budget."""
    episodes: list[Episode]
    """Episodic memory: the most similar past feedback, most similar first."""
    judgment: Judgment
    """The judgment; after a correction, it carries the expert's value."""
    review: dict[str, Any] | None
    """The expert's answer (action, value, feedback, reviewer), or null if not reviewed."""
    report: dict[str, Any] | None
    """What alignment did with the answer, or null if nothing was stored."""


@with_config(_DESCRIBED)
class ReviewState(JudgeState, total=False):
    """Judge state plus the expert's answer, what alignment did with it, and the decision on proposed principles."""

    review: dict[str, Any] | None
    """The expert's answer (action, value, feedback, reviewer), or null if not reviewed."""
    report: dict[str, Any] | None
    """What alignment did with the answer, or null if nothing was stored."""
    principles_review: dict[str, Any] | None
    """The expert's decision on principles distillation held for approval (approve/reject ids), or null."""


@with_config(_DESCRIBED)
class BatchReviewInput(TypedDict):
    """Several cases to judge and review in one run (one review branch each)."""

    cases: list[dict[str, Any]]
    """The cases, each as the judge graph's input."""


@with_config(_DESCRIBED)
class BatchReviewState(BatchReviewInput, total=False):
    """Per-case results, gathered from the parallel branches."""

    results: Annotated[list[dict[str, Any]], operator.add]
    """One result per case: id, judgment, review, report."""


@with_config(_DESCRIBED)
class ServedAlignInput(TypedDict):
    """Feedback records to align a served judge to; the author is the authenticated user."""

    feedback: list[dict[str, Any]]
    """Feedback records: id, inputs, outputs, the expert's value and/or feedback text."""
    reason: NotRequired[str]
    """Why this alignment, recorded with the new version."""


@with_config(_DESCRIBED)
class AlignInput(TypedDict):
    """Feedback records to align the judge to (see :mod:`memalign_graph.spec`)."""

    feedback: list[dict[str, Any]]
    """Feedback records: id, inputs, outputs, the expert's value and/or feedback text."""
    reason: NotRequired[str]
    """Why this alignment, recorded with the new version."""
    author: NotRequired[str]
    """Who is recorded as the new version's author (default 'expert')."""


@with_config(_DESCRIBED)
class AlignOutput(TypedDict):
    """What alignment did (``AlignmentReport.to_dict()``)."""

    report: dict[str, Any]
    """Records added and replaced, principles added, the new version, tokens and seconds spent."""


@with_config(_DESCRIBED)
class AlignState(AlignInput, total=False):
    """Alignment state."""

    report: dict[str, Any]
    """What alignment did."""
