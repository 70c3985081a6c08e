"""What an alignment reports: the report of its steps, and the timing and progress of its phases.

:mod:`memalign_graph.alignment` runs the pipeline; this module holds what it hands back
(:class:`AlignmentReport`, built by :func:`alignment_report` from the steps run so far) and how it
reports progress while it runs (:class:`Phases`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from memalign_graph.state import AlignmentSteps


@dataclass
class AlignmentReport:
    """What one alignment did.

    Attributes:
        version: memory version after it (unchanged if it was a no-op).
        added: ids of new episodes.
        replaced: ids whose content changed (episode replaced, principles re-derived).
        unchanged: ids already aligned with the same content (no-op).
        distilled: ids whose feedback went through distillation successfully.
        failed: id -> error, for records whose distillation failed (retried next time).
        new_principles: ids of principles added.
        merged_principles: candidate id -> id of the existing principle it repeated.
        removed_principles: ids of principles whose only sources were replaced.
        proposed_principles: id -> why it was held: the pending proposals this alignment made or
            added sources to, outside working memory until an expert approves them (see
            :mod:`memalign_graph.governance`).
        refused_principles: principles distillation gave but refused (placeholders, prompt echoes,
            case copies, cut-short names): ``{"text", "sources", "reason"}``.
        scored: ids of records aligned with the judge model's own judgment of their case (their
            ``model_judgment``, the calibration gate's evidence): judged first (:func:`judge_new_records`),
            or judged before an expert's review.
        unchecked_principles: ids of new principles (added or held) the LLM's verdict-directive
            check could not classify (its call failed, or the answer left them out): only the
            text gate judged them (see :mod:`memalign_graph.governance`).
        llm_calls: LLM calls made (distillation, consolidation and the verdict-directive check,
            retries included).
        usage: tokens spent.
        consolidation: pairs of similar principles sent to the LLM and its verdicts.
        timings: seconds per phase: ``score_s`` (judging new records first, when asked), ``distill_s``
            (LLM, overlapped with ``embed_s`` in :func:`aalign`), ``embed_s``, ``consolidate_embed_s``,
            ``merge_s``, ``index_s``, ``persist_s``.
        seconds: wall time of the alignment (in the alignment graph: from its last ``episodes`` step).
    """

    version: int
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    distilled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    new_principles: list[str] = field(default_factory=list)
    merged_principles: dict[str, str] = field(default_factory=dict)
    removed_principles: list[str] = field(default_factory=list)
    proposed_principles: dict[str, str] = field(default_factory=dict)
    refused_principles: list[dict[str, Any]] = field(default_factory=list)
    scored: list[str] = field(default_factory=list)
    unchecked_principles: list[str] = field(default_factory=list)
    llm_calls: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    consolidation: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class Phases:
    """Alignment progress to a sink: ``sink(phase, done, total)``, or ``sink.update(n)`` for distillation only.

    Args:
        sink: a :data:`ProgressCallback`, an object with ``update(n)`` (e.g. a tqdm bar), or ``None``.
    """

    def __init__(self, sink: Any = None) -> None:
        self._sink = sink
        self._totals: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(self, phase: str, total: int) -> None:
        """Phase ``phase`` begins with ``total`` items to do."""
        with self._lock:
            self._totals[phase], self._done[phase] = total, 0
        if callable(self._sink):
            self._sink(phase, 0, total)

    def advance(self, phase: str, n: int) -> None:
        """``n`` more items of ``phase`` are done."""
        with self._lock:
            self._done[phase] = self._done.get(phase, 0) + n
            done, total = self._done[phase], self._totals.get(phase, 0)
        if callable(self._sink):
            self._sink(phase, done, total)
        elif phase == "distill" and self._sink is not None:
            self._sink.update(n)

    def sink(self, phase: str) -> Any:
        """An ``update(n)`` object that advances ``phase`` (``None`` without a sink)."""
        return _PhaseSink(self, phase) if self._sink is not None else None


@dataclass
class _PhaseSink:
    phases: Phases
    phase: str

    def update(self, n: int) -> None:
        self.phases.advance(self.phase, n)


def seconds_since(started: float) -> float:
    """Seconds since ``started`` (a ``time.perf_counter()`` reading), to the millisecond."""
    return round(time.perf_counter() - started, 3)


def alignment_report(steps: AlignmentSteps, *, version: int, timings: dict[str, float]) -> AlignmentReport:
    """The report of the steps run so far (only ``plan`` for a no-op)."""
    plan = steps["plan"]
    report = AlignmentReport(
        version=version,
        added=plan["added"],
        replaced=plan["replaced"],
        unchanged=plan["unchanged"],
        removed_principles=plan["removed_principles"],
    )
    distillation, consolidation, governance = (
        steps.get("distillation"),
        steps.get("consolidation"),
        steps.get("governance"),
    )
    if distillation is None or consolidation is None or governance is None:
        return report
    report.distilled, report.failed = distillation["distilled"], distillation["failed"]
    report.refused_principles = distillation["refused"]
    decided = set(governance["new_principles"]) | set(governance["proposed_principles"])
    report.unchecked_principles = [i for i in consolidation["unchecked"] if i in decided]
    report.llm_calls = distillation["llm_calls"] + consolidation["llm_calls"]
    spent = (distillation["usage"], consolidation["usage"])
    report.usage = {key: sum(u.get(key, 0) for u in spent) for key in dict.fromkeys([*spent[0], *spent[1]])}
    report.consolidation = consolidation["counts"]
    report.new_principles, report.merged_principles = governance["new_principles"], governance["merged_principles"]
    report.proposed_principles = governance["proposed_principles"]
    order = ("score_s", "embed_s", "distill_s", "consolidate_embed_s", "merge_s", "index_s", "persist_s")
    measured = {**timings, **distillation["timings"], **consolidation["timings"], **governance["timings"]}
    report.timings = {key: measured[key] for key in order if key in measured}
    return report


def default_reason(report: AlignmentReport) -> str:
    """The version history's reason for an alignment given none: what it added, replaced, distilled, failed."""
    parts = [f"aligned {len(report.added)} new"]
    if report.replaced:
        parts.append(f"{len(report.replaced)} replaced")
    parts.append(f"{len(report.distilled)} distilled")
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    return ", ".join(parts) + " feedback records"
