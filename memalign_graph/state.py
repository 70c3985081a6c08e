"""What flows through the graphs: plain JSON-like TypedDicts (safe in any checkpointer).

The alignment graph's state holds the result of each step of :mod:`memalign_graph.alignment`
(:class:`EpisodePlan`, :class:`Distillation`, :class:`Consolidation`, :class:`Governance`),
which the steps return as they are.

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


# The alignment steps' results (see memalign_graph.alignment), each what its node adds to the state.


@with_config(_DESCRIBED)
class EpisodePlan(TypedDict):
    """The episodes step: what the records are to the ledger, and the principles distillation builds on."""

    version: int
    """The memory version the plan was made from."""
    started_at: float
    """When the plan was made (seconds since the epoch)."""
    added: list[str]
    """Ids of records not aligned before: new episodes."""
    replaced: list[str]
    """Ids of records aligned before with other content: their episodes are replaced."""
    unchanged: list[str]
    """Ids of records aligned before with the same content (no-op)."""
    fresh: list[dict[str, Any]]
    """The added and replaced records (validated feedback records), whose episodes are written."""
    retry: list[dict[str, Any]]
    """Unchanged records (validated) whose distillation failed before: distilled again."""
    principles: list[Principle]
    """The principles in memory, less those whose only sources were replaced."""
    removed_principles: list[str]
    """Ids of the principles whose only sources were replaced."""


@with_config(_DESCRIBED)
class Distillation(TypedDict):
    """The distill step: candidate principles from the salient records."""

    candidates: list[Principle]
    """New principles, before consolidation and governance, oldest feedback first."""
    distilled: list[str]
    """Ids of records distilled."""
    failed: dict[str, str]
    """Record id -> error, for records whose distillation failed (retried by the next alignment)."""
    refused: list[dict[str, Any]]
    """Principles the LLM gave that were refused: text, sources, reason."""
    llm_calls: int
    """Calls made, retries included."""
    usage: dict[str, int]
    """Tokens spent."""
    timings: dict[str, float]
    """Seconds: distill_s."""


@with_config(_DESCRIBED)
class Consolidation(TypedDict):
    """The consolidate step: each candidate against its most similar principle, as the LLM judged them."""

    pairs: list[list[Any]]
    """[candidate id, other principle id, cosine similarity] of the pairs sent to the LLM."""
    relations: dict[str, list[str]]
    """Candidate id -> [other principle id, 'same' | 'contradicts' | 'different'] (unclassified: absent)."""
    counts: dict[str, int]
    """Pairs sent, and how many were judged the same, contradicting or different."""
    llm_calls: int
    """Calls made, retries included."""
    usage: dict[str, int]
    """Tokens spent."""
    timings: dict[str, float]
    """Seconds: consolidate_embed_s (finding the pairs)."""


@with_config(_DESCRIBED)
class Governance(TypedDict):
    """The govern step: which candidates enter working memory, merged, and which are held for an expert."""

    policy: str
    """The principles policy applied: 'auto' or 'review'."""
    principles: list[Principle]
    """Working memory after the merge: what the new version holds."""
    new_principles: list[str]
    """Ids of candidates added to working memory."""
    merged_principles: dict[str, str]
    """Candidate id -> id of the principle it repeated (merged into it) or superseded."""
    proposed: list[Principle]
    """Every proposal (pending and rejected) after filing the held candidates."""
    proposed_principles: dict[str, str]
    """Held candidate (or the pending proposal it joined) id -> why it was held."""
    timings: dict[str, float]
    """Seconds: merge_s."""


@with_config(_DESCRIBED)
class AlignmentSteps(TypedDict, total=False):
    """Each alignment step's result as its node adds it to the state, and the report.

    What a served alignment graph outputs: LangGraph Server streams a node's update only for
    keys of the output schema, so Studio then shows what each step decided (a principle
    refused in ``distillation``, merged or held in ``governance``).
    """

    plan: EpisodePlan
    """The episodes step: records added, replaced, unchanged or retried, and the principles distillation builds on."""
    distillation: Distillation
    """The distill step: candidate principles, records distilled or failed, principles refused."""
    consolidation: Consolidation
    """The consolidate step: each candidate against its most similar principle, as the LLM judged the pair."""
    governance: Governance
    """The govern step: candidates added, merged into a principle, or held for an expert (and why)."""
    moved: dict[str, int] | None
    """Set by the commit step when the memory moved since the plan (from, to, passes): the run plans again."""
    report: dict[str, Any]
    """What alignment did."""


ServedAlignOutput = AlignmentSteps
"""A served alignment graph's output: each step's result, and the report (see :class:`AlignmentSteps`)."""


@with_config(_DESCRIBED)
class AlignState(AlignInput, AlignmentSteps, total=False):
    """Alignment state: the feedback, each step's result as the node that ran it left it, and the report."""

    passes: int
    """Pass through the steps: 1, or more when another writer committed before this run's commit."""
