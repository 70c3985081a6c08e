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

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from memalign_graph import alignment, lifecycle, working_memory
from memalign_graph.alignment import AlignmentReport
from memalign_graph.backends.base import MemoryBackend
from memalign_graph.backends.location import backend_for
from memalign_graph.lifecycle import ChangeReport, diff_versions
from memalign_graph.spec import FeedbackRecord, JudgeSpec
from memalign_graph.versions import VersionedMemory, embeddings_for, shared_memory


def _read(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.versioned, name), doc=doc)


def _fronting(func: Callable[..., Any]) -> Any:
    """A :class:`Memory` method calling ``func`` on the memory it fronts, with its arguments and documentation."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def amethod(self: Memory, *args: Any, **kwargs: Any) -> Any:
            return await func(self.versioned, *args, **kwargs)

        return amethod

    @functools.wraps(func)
    def method(self: Memory, *args: Any, **kwargs: Any) -> Any:
        return func(self.versioned, *args, **kwargs)

    return method


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

    refresh = _fronting(VersionedMemory.refresh)
    calibration_head = _fronting(VersionedMemory.calibration_head)
    calibration_report = _fronting(VersionedMemory.calibration_report)
    select_principles = _fronting(VersionedMemory.select_principles)
    retrieve_episodes = _fronting(VersionedMemory.retrieve_episodes)
    aretrieve_episodes = _fronting(VersionedMemory.aretrieve_episodes)
    judge = _fronting(working_memory.judge)
    ajudge = _fronting(working_memory.ajudge)
    align = _fronting(alignment.align)
    aalign = _fronting(alignment.aalign)
    forget = _fronting(lifecycle.forget)
    rollback = _fronting(lifecycle.rollback)
    add_principle = _fronting(lifecycle.add_principle)
    edit_principle = _fronting(lifecycle.edit_principle)
    delete_principle = _fronting(lifecycle.delete_principle)
    set_principles_policy = _fronting(lifecycle.set_principles_policy)
    decide_principles = _fronting(lifecycle.decide_principles)

    def validate_feedback(self, records: list[dict[str, Any]]) -> list[FeedbackRecord]:
        """Validate feedback records against this judge (see :func:`memalign_graph.alignment.validate_feedback`)."""
        return alignment.validate_feedback(self.spec, records)

    def diff(self, old: int, new: int) -> dict[str, Any]:
        """What changed between two versions (see :func:`memalign_graph.lifecycle.diff_versions`)."""
        return diff_versions(self.backend, old, new)

    def as_evaluator(self, **options: Any) -> Any:
        """This judge as a LangSmith / openevals evaluator (see :func:`memalign_graph.evaluators.as_evaluator`).

        It judges with this memory's backend and embeddings, whatever the backend (a judge in a
        LangGraph store included).
        """
        from memalign_graph import evaluators  # the judge graph and LangGraph load on first use, not with Memory

        return evaluators.as_evaluator(self.backend, embeddings=self.embeddings, **options)

    def as_async_evaluator(self, **options: Any) -> Any:
        """:meth:`as_evaluator` as a coroutine function (see :func:`memalign_graph.evaluators.as_async_evaluator`)."""
        from memalign_graph import evaluators

        return evaluators.as_async_evaluator(self.backend, embeddings=self.embeddings, **options)


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
