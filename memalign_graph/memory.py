"""A judge's memory, as its users hold it: :class:`Memory`, a thin facade over the modules that do the work.

Where each thing lives:

- what is loaded and how a version is committed: :mod:`memalign_graph.versions`
  (:class:`~memalign_graph.versions.VersionedMemory`, which :class:`Memory` fronts);
- principles and episodes: :mod:`memalign_graph.semantic`, :mod:`memalign_graph.episodic`;
- judging with working memory: :mod:`memalign_graph.working_memory`;
- alignment (validate → episodes → distill → consolidate → govern → commit): :mod:`memalign_graph.alignment`;
- forget, rollback, principle edits, governance decisions, diffs: :mod:`memalign_graph.lifecycle`;
- the judge as a LangSmith / openevals evaluator: :mod:`memalign_graph.evaluators`;
- where a location's memory is kept: :mod:`memalign_graph.backends`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from memalign_graph import alignment, lifecycle, working_memory
from memalign_graph.alignment import AlignmentReport
from memalign_graph.backends.base import MemoryBackend
from memalign_graph.backends.location import backend_for
from memalign_graph.episodic import Episode
from memalign_graph.judge import Judgment
from memalign_graph.lifecycle import ChangeReport, diff_versions
from memalign_graph.semantic import Principle
from memalign_graph.spec import FeedbackRecord, JudgeSpec
from memalign_graph.versions import VersionedMemory, embeddings_for, shared_memory


def _read(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.versioned, name), doc=doc)


class Memory:
    """One judge's definition, principles and episodes, loaded from a backend.

    Create with :meth:`create` or :meth:`open` (or share one per location with :func:`open_memory`),
    not the constructor. Reading it never waits for a writer; every change is a new version.

    Attributes:
        versioned: the :class:`~memalign_graph.versions.VersionedMemory` this facade fronts (what
            the graph nodes and the pipeline modules work on).
    """

    def __init__(self, versioned: VersionedMemory) -> None:
        self.versioned = versioned

    @classmethod
    def create(
        cls, location: str | Path | MemoryBackend, spec: JudgeSpec, *, embeddings: str | Embeddings | None = None
    ) -> Memory:
        """Create an empty memory for ``spec`` and open it.

        Args:
            location: a directory (file backend), a ``postgresql://…?judge=NAME`` connection
                string (PostgreSQL backend), or a :class:`MemoryBackend` (see :func:`backend_for`).
            spec: the judge definition.
            embeddings: an ``Embeddings`` instance or a spec string (see
                :func:`memalign_graph.embeddings.resolve_embeddings`); ``None`` for ``MEMALIGN_EMBEDDINGS``,
                else the offline default (all-MiniLM-L6-v2 int8). The memory keeps their name and
                refuses others later.

        Raises:
            FileExistsError: if a memory already exists there.
            MissingDependencyError: (an ``ImportError``) naming the extra to install, if the
                embeddings or the backend need one that is missing; nothing is created.
        """
        return cls(VersionedMemory.create(location, spec, embeddings=embeddings))

    @classmethod
    def open(cls, location: str | Path | MemoryBackend, *, embeddings: str | Embeddings | None = None) -> Memory:
        """Open an existing memory.

        Args:
            location: a directory, a ``postgresql://…?judge=NAME`` connection string, or a
                :class:`MemoryBackend` (see :func:`backend_for`).
            embeddings: the embeddings the memory was created with: an instance or a spec string
                (see :func:`memalign_graph.embeddings.resolve_embeddings`); ``None`` for ``MEMALIGN_EMBEDDINGS``,
                else those the memory names, when they are an offline embedder (a memory created
                with ``"e5"`` opens with e5, see :func:`embeddings_for`).

        Raises:
            MemoryFormatError: if there is no valid memory there, or it was embedded
                with other embeddings than those named, or with embeddings that must be named.
            MissingDependencyError: (an ``ImportError``) naming the extra to install, if the
                embeddings or the backend need one that is missing.
        """
        return cls(VersionedMemory.open(location, embeddings=embeddings))

    spec = _read("spec", "The judge definition (:class:`JudgeSpec`).")
    backend = _read("backend", "Where memory is persisted (:class:`MemoryBackend`).")
    embeddings = _read("embeddings", "The embeddings of episodes and principles.")
    semantic = _read("semantic", "The principles and their ranking (:class:`SemanticMemory`).")
    episodes = _read("episodes", "The episodes (:class:`EpisodicMemory`).")
    checkpoint = _read("checkpoint", "The loaded version's record (:class:`PrinciplesCheckpoint`).")
    version = _read("version", "The loaded version number.")
    principles = _read("principles", "All principles at the loaded version (a new list).")
    principles_policy = _read("principles_policy", "The stored principles policy: ``auto`` or ``review``.")
    proposed_principles = _read("proposed_principles", "Principles held for an expert: pending and rejected.")
    pending_principles = _read("pending_principles", "Proposals awaiting an expert's decision.")
    records = _read("records", "The ledger: aligned record id -> ``LedgerEntry`` (a new dict).")

    def refresh(self) -> bool:
        """Reload if another writer committed a newer version; returns whether it reloaded."""
        return self.versioned.refresh()

    def select_principles(
        self, case: dict[str, Any], token_budget: int | None = None, **options: Any
    ) -> tuple[list[Principle], list[str]]:
        """The principles for working memory (see :meth:`VersionedMemory.select_principles`)."""
        return self.versioned.select_principles(case, token_budget, **options)

    def retrieve_episodes(self, case: dict[str, Any], k: int = 5, **options: Any) -> list[Episode]:
        """The ``k`` episodes most similar to ``case`` (see :meth:`VersionedMemory.retrieve_episodes`)."""
        return self.versioned.retrieve_episodes(case, k, **options)

    async def aretrieve_episodes(self, case: dict[str, Any], k: int = 5, **options: Any) -> list[Episode]:
        """Async :meth:`retrieve_episodes`."""
        return await self.versioned.aretrieve_episodes(case, k, **options)

    def judge(self, case: dict[str, Any], **options: Any) -> Judgment:
        """Judge one case with this memory (see :func:`memalign_graph.working_memory.judge`)."""
        return working_memory.judge(self.versioned, case, **options)

    async def ajudge(self, case: dict[str, Any], **options: Any) -> Judgment:
        """Async :meth:`judge` (see :func:`memalign_graph.working_memory.ajudge`)."""
        return await working_memory.ajudge(self.versioned, case, **options)

    def as_evaluator(self, **options: Any) -> Any:
        """This judge as a LangSmith / openevals evaluator (see :func:`memalign_graph.evaluators.as_evaluator`)."""
        from memalign_graph import evaluators  # the judge graph and LangGraph load on first use, not with Memory

        location = (
            getattr(self.backend, "url", None) or self.backend.location
        )  # PostgreSQL: location hides the password
        return evaluators.as_evaluator(location, embeddings=self.embeddings, **options)

    def validate_feedback(self, records: list[dict[str, Any]]) -> list[FeedbackRecord]:
        """Validate feedback records against this judge (see :func:`memalign_graph.alignment.validate_feedback`)."""
        return alignment.validate_feedback(self.spec, records)

    def align(self, records: list[dict[str, Any]], **options: Any) -> AlignmentReport:
        """Align the judge to expert feedback (see :func:`memalign_graph.alignment.align`)."""
        return alignment.align(self.versioned, records, **options)

    async def aalign(self, records: list[dict[str, Any]], **options: Any) -> AlignmentReport:
        """Align the judge to expert feedback (see :func:`memalign_graph.alignment.aalign`)."""
        return await alignment.aalign(self.versioned, records, **options)

    def forget(self, record_ids: list[str], **options: Any) -> ChangeReport:
        """Delete records for good (see :func:`memalign_graph.lifecycle.forget`)."""
        return lifecycle.forget(self.versioned, record_ids, **options)

    def rollback(self, version: int, **options: Any) -> ChangeReport:
        """Restore a version as a new version (see :func:`memalign_graph.lifecycle.rollback`)."""
        return lifecycle.rollback(self.versioned, version, **options)

    def add_principle(self, text: str, **options: Any) -> Principle:
        """Add a hand-written principle (see :func:`memalign_graph.lifecycle.add_principle`)."""
        return lifecycle.add_principle(self.versioned, text, **options)

    def edit_principle(self, principle_id: str, text: str, **options: Any) -> None:
        """Replace a principle's text (see :func:`memalign_graph.lifecycle.edit_principle`)."""
        lifecycle.edit_principle(self.versioned, principle_id, text, **options)

    def delete_principle(self, principle_id: str, **options: Any) -> None:
        """Delete a principle (see :func:`memalign_graph.lifecycle.delete_principle`)."""
        lifecycle.delete_principle(self.versioned, principle_id, **options)

    def set_principles_policy(self, policy: str, **options: Any) -> int:
        """Store the principles policy (see :func:`memalign_graph.lifecycle.set_principles_policy`)."""
        return lifecycle.set_principles_policy(self.versioned, policy, **options)

    def decide_principles(
        self, approve: list[str] | tuple[str, ...] = (), reject: list[str] | tuple[str, ...] = (), **options: Any
    ) -> ChangeReport:
        """Approve or reject pending proposals (see :func:`memalign_graph.lifecycle.decide_principles`)."""
        return lifecycle.decide_principles(self.versioned, approve, reject, **options)

    def diff(self, old: int, new: int) -> dict[str, Any]:
        """What changed between two versions (see :func:`memalign_graph.lifecycle.diff_versions`)."""
        return diff_versions(self.backend, old, new)


def open_memory(
    location: str | Path | MemoryBackend, embeddings: str | Embeddings | None = None, *, refresh: bool = True
) -> Memory:
    """A :class:`Memory` over the process-wide shared memory for ``location`` (see :func:`shared_memory`).

    Judging threads and graph nodes share that one memory, so judging does not reload it on
    every call, yet sees every committed change.

    Raises:
        MemoryFormatError: if there is no valid memory at ``location``, or it was embedded with
            other embeddings than those named.
    """
    return Memory(shared_memory(location, embeddings, refresh=refresh))


__all__ = ["AlignmentReport", "ChangeReport", "Memory", "backend_for", "diff_versions", "embeddings_for", "open_memory"]
