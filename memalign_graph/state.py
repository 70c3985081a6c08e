"""What flows through the graphs: plain JSON-like TypedDicts (safe in any checkpointer)."""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired, TypedDict

from memalign_graph.episodic import Episode
from memalign_graph.judge import Judgment
from memalign_graph.semantic import Principle


class JudgeInput(TypedDict):
    """A case: ``outputs`` is a two-item list ``[A, B]`` for pairwise judges."""

    inputs: Any
    outputs: Any
    expectations: NotRequired[Any]
    id: NotRequired[str]


class JudgeOutput(TypedDict):
    """The judge graph's output: the judgment."""

    judgment: Judgment


class JudgeState(JudgeInput, total=False):
    """Working memory as it is assembled node by node."""

    principles: list[Principle]
    principles_omitted: list[str]
    episodes: list[Episode]
    judgment: Judgment


class ReviewOutput(TypedDict, total=False):
    """The review graph's output: judgment, expert's answer, alignment report, decision on proposed principles."""

    judgment: Judgment
    review: dict[str, Any] | None
    report: dict[str, Any] | None
    principles_review: dict[str, Any] | None


class ReviewState(JudgeState, total=False):
    """Judge state plus the expert's answer, what alignment did with it, and the decision on proposed principles."""

    review: dict[str, Any] | None
    report: dict[str, Any] | None
    principles_review: dict[str, Any] | None


class BatchReviewInput(TypedDict):
    """Several cases to judge and review in one run (one review branch each)."""

    cases: list[dict[str, Any]]


class BatchReviewState(BatchReviewInput, total=False):
    """Per-case results, gathered from the parallel branches."""

    results: Annotated[list[dict[str, Any]], operator.add]


class AlignInput(TypedDict):
    """Feedback records to align the judge to (see :mod:`memalign_graph.spec`)."""

    feedback: list[dict[str, Any]]
    author: NotRequired[str]
    reason: NotRequired[str]


class AlignOutput(TypedDict):
    """What alignment did (``AlignmentReport.to_dict()``)."""

    report: dict[str, Any]


class AlignState(AlignInput, total=False):
    """Alignment state."""

    report: dict[str, Any]
