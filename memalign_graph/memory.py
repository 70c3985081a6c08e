"""A judge's memory: semantic (principles) + episodic (episodes), and alignment.

:class:`Memory` is the one object that holds a judge's definition, its
principles and its episodes, loads them from a backend and commits changes
as new versions. :meth:`Memory.aalign` is MemAlign's alignment step: expert
feedback becomes episodes and, through distillation, principles.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

from memalign_graph.backends.base import LedgerEntry, MemoryBackend, PrinciplesCheckpoint, principle_digest
from memalign_graph.backends.file import FileBackend
from memalign_graph.backends.postgres import PostgresBackend, is_postgres_url
from memalign_graph.backends.store import is_store_location
from memalign_graph.distill import CallCounter, aclassify_pairs, adistill, estimate_tokens, is_salient
from memalign_graph.embeddings import embeddings_name, embeddings_named, offline_embeddings_spec, resolve_embeddings
from memalign_graph.episodic import Episode, EpisodicMemory, episode_from_record
from memalign_graph.errors import MemoryFormatError, RecordError
from memalign_graph.governance import check_policy, decide, effective_policy, govern_candidates, pending, propose
from memalign_graph.judge import (
    JudgeSettings,
    Judgment,
    PrecedentMode,
    arun_judge,
    find_precedent,
    precedent_judgment,
    run_judge,
)
from memalign_graph.models import resolve_chat_model, run_sync
from memalign_graph.prompts import PROMPT_VERSION
from memalign_graph.semantic import (
    Principle,
    PrincipleVectors,
    drop_sources,
    merge_principles,
    new_principle,
    now_iso,
    related_pairs,
)
from memalign_graph.spec import FeedbackRecord, JudgeSpec, embedding_text, parse_record, record_hash


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
        llm_calls: LLM calls made (distillation and consolidation, retries included).
        usage: tokens spent.
        consolidation: pairs of similar principles sent to the LLM and its verdicts.
        timings: seconds per phase: ``distill_s`` (LLM, overlapped with ``embed_s``),
            ``embed_s``, ``consolidate_embed_s``, ``merge_s``, ``index_s``, ``persist_s``.
        seconds: wall time of the alignment.
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
    llm_calls: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    consolidation: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def backend_for(location: str | Path | MemoryBackend) -> MemoryBackend:
    """The backend a memory location names.

    Args:
        location: a :class:`MemoryBackend` (such as
            :class:`~memalign_graph.backends.store.StoreBackend` ``(store, judge)``, a judge in a
            LangGraph store); a ``postgresql://…?judge=NAME`` connection string
            (:class:`~memalign_graph.backends.postgres.PostgresBackend`); or a directory
            (:class:`~memalign_graph.backends.file.FileBackend`, the default).

    Raises:
        ValueError: for ``"langgraph"`` or ``"langgraph:NAME"``, which name a judge in the LangGraph
            store a graph runs with: only a graph can resolve them (outside one, pass
            ``StoreBackend(store, NAME)``).
    """
    if isinstance(location, MemoryBackend):
        return location
    if is_store_location(location):
        raise ValueError(
            f"{location!r} names a judge in the LangGraph store of a running graph (runtime.store); outside a "
            "graph pass StoreBackend(store, judge) from memalign_graph.backends.store instead"
        )
    if is_postgres_url(location):
        return PostgresBackend(str(location))
    return FileBackend(location)


def _location_key(location: str | Path | MemoryBackend) -> Any:
    if isinstance(location, MemoryBackend):
        return getattr(location, "cache_key", ("backend", id(location)))
    if is_postgres_url(location):
        return str(location)
    text = str(location)
    # An absolute path needs no working directory (asking for it is a blocking call to an event loop).
    return _resolved(text, "" if os.path.isabs(text) else os.getcwd())


@functools.lru_cache(maxsize=256)
def _resolved(location: str, cwd: str) -> str:
    return str((Path(cwd) / Path(location).expanduser()).resolve())


def embeddings_for(backend: MemoryBackend, embeddings: str | Embeddings | None) -> Embeddings:
    """The embeddings to open the memory in ``backend`` with.

    Those named (``embeddings``, else ``MEMALIGN_EMBEDDINGS``) if any: :class:`Memory` refuses
    them if the memory was embedded with others. With none named, those the memory was created
    with, rebuilt from the name it stores (:func:`memalign_graph.models.offline_embeddings_spec`):
    a memory created with e5 before MiniLM int8 became the default keeps opening with e5. Hosted
    or custom embeddings cannot be rebuilt from a name: for them the default is returned, which
    :class:`Memory` refuses unless the names match.

    Raises:
        MemoryFormatError: if nothing (valid) is stored there.
        MissingDependencyError: (an ``ImportError``) naming the extra to install, if the
            embeddings need one that is missing.
    """
    if embeddings_named(embeddings):
        return resolve_embeddings(embeddings)
    return resolve_embeddings(offline_embeddings_spec(backend.embeddings_info().get("name")))


class Memory:
    """One judge's definition, principles and episodes, loaded from a backend.

    Create with :meth:`create` or :meth:`open`, not the constructor.

    Attributes:
        spec: the judge definition.
        backend: where memory is persisted.
        embeddings: the embeddings used for episodes and principle de-duplication.
        episodes: the :class:`EpisodicMemory`.
    """

    def __init__(self, backend: MemoryBackend, embeddings: Embeddings) -> None:
        self.backend = backend
        self.embeddings = embeddings
        self._vectors = PrincipleVectors(embeddings)
        self._stored_vectors: set[str] = set()  # digests of the principle vectors the backend holds
        self._principles_cache: tuple[Any, list[Principle], np.ndarray, np.ndarray, dict[str, Any]] | None = None
        self._write_lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        loaded = self.backend.load(self.embeddings)
        name = embeddings_name(self.embeddings)
        if loaded.embeddings_info.get("name") != name:
            raise MemoryFormatError(
                f"{self.backend.location}: episodes were embedded with {loaded.embeddings_info.get('name')!r}, "
                f"but {name!r} was given; use the same embeddings (embeddings=..., --embeddings or "
                "MEMALIGN_EMBEDDINGS)"
            )
        try:
            spec = JudgeSpec.from_dict(loaded.spec)
        except ValueError as exc:
            raise MemoryFormatError(f"{self.backend.location}: invalid judge definition ({exc})") from None
        episodes = EpisodicMemory(loaded.vectorstore, self.embeddings)
        self.spec = spec
        self._publish(loaded.checkpoint, episodes)
        self._seed_principle_vectors(loaded.embeddings_info.get("dim"))

    def _seed_principle_vectors(self, dim: Any) -> None:
        """Take the principle vectors stored with the memory, so this process does not embed them again."""
        texts = [p["text"] for p in self.checkpoint["principles"] if p["text"] not in self._vectors]
        if not texts:
            return
        stored = self.backend.load_principle_vectors()
        self._stored_vectors = set(stored)
        found = [(t, stored[principle_digest(t)]) for t in texts if principle_digest(t) in stored]
        found = [(t, v) for t, v in found if v.shape == (dim,)] if isinstance(dim, int) else found
        if found:
            self._vectors.seed([t for t, _ in found], np.stack([v for _, v in found]))

    def _persist_principle_vectors(self, embed_missing: int | None = None) -> None:
        """Store the current principles' vectors with the memory (and only theirs); call after a commit.

        Args:
            embed_missing: embed up to this many principles not embedded yet first (``None``: all).

        A cache: a failure is reported as a warning, never raised (the commit stands).
        """
        texts = list(dict.fromkeys(p["text"] for p in self.checkpoint["principles"]))
        try:
            missing = [t for t in texts if t not in self._vectors]
            if missing and (embed_missing is None or len(missing) <= embed_missing):
                self._vectors(missing)
            kept, matrix = self._vectors.known(texts)
            vectors = {principle_digest(t): matrix[i] for i, t in enumerate(kept)}
            if set(vectors) != self._stored_vectors:
                self.backend.save_principle_vectors(vectors)
                self._stored_vectors = set(vectors)
        except Exception as exc:  # noqa: BLE001 - a cache; the commit is done
            warnings.warn(
                f"{self.backend.location}: principle vectors not stored ({exc}); they will be embedded again",
                RuntimeWarning,
                stacklevel=2,
            )

    def _publish(self, checkpoint: PrinciplesCheckpoint, episodes: EpisodicMemory) -> None:
        """Make a committed (or freshly loaded) version the one readers see.

        Readers in other threads hold no lock: they take ``self.episodes`` and
        ``self.checkpoint`` as they find them. Both are replaced whole, never
        changed in place (writers change a draft, see :meth:`EpisodicMemory.draft`),
        so a reader sees a complete, committed vector store.
        """
        self.episodes = episodes
        self.checkpoint: PrinciplesCheckpoint = checkpoint

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
                :func:`memalign_graph.models.resolve_embeddings`); ``None`` for ``MEMALIGN_EMBEDDINGS``,
                else the offline default (all-MiniLM-L6-v2 int8). The memory keeps their name and
                refuses others later.

        Raises:
            FileExistsError: if a memory already exists there.
            MissingDependencyError: (an ``ImportError``) naming the extra to install, if the
                embeddings or the backend need one that is missing; nothing is created.
        """
        backend = backend_for(location)
        emb = resolve_embeddings(embeddings)
        dim = len(emb.embed_query("dimension probe"))
        backend.create(spec.to_dict(), emb, {"name": embeddings_name(emb), "dim": dim})
        return cls(backend, emb)

    @classmethod
    def open(cls, location: str | Path | MemoryBackend, *, embeddings: str | Embeddings | None = None) -> Memory:
        """Open an existing memory.

        Args:
            location: a directory, a ``postgresql://…?judge=NAME`` connection string, or a
                :class:`MemoryBackend` (see :func:`backend_for`).
            embeddings: the embeddings the memory was created with: an instance or a spec string
                (see :func:`memalign_graph.models.resolve_embeddings`); ``None`` for ``MEMALIGN_EMBEDDINGS``,
                else those the memory names, when they are an offline embedder (a memory created
                with ``"e5"`` opens with e5, see :func:`embeddings_for`).

        Raises:
            MemoryFormatError: if there is no valid memory there, or it was embedded
                with other embeddings than those named, or with embeddings that must be named.
            MissingDependencyError: (an ``ImportError``) naming the extra to install, if the
                embeddings or the backend need one that is missing.
        """
        backend = backend_for(location)
        return cls(backend, embeddings_for(backend, embeddings))

    @property
    def version(self) -> int:
        """The loaded version number."""
        return int(self.checkpoint["version"])

    @property
    def principles(self) -> list[Principle]:
        """All principles at the loaded version."""
        return list(self.checkpoint["principles"])

    @property
    def principles_policy(self) -> str:
        """The judge's stored principles policy: ``"auto"`` or ``"review"`` (see :mod:`memalign_graph.governance`)."""
        return str(self.checkpoint.get("principles_policy") or "auto")

    @property
    def proposed_principles(self) -> list[Principle]:
        """Distilled principles held for an expert: pending and rejected proposals (never in working memory)."""
        return list(self.checkpoint.get("proposed") or [])

    @property
    def pending_principles(self) -> list[Principle]:
        """Proposals awaiting an expert's decision (status ``pending``)."""
        return pending(self.proposed_principles)

    @property
    def records(self) -> dict[str, LedgerEntry]:
        """The ledger: aligned record id -> ``{"hash", "distilled"}``."""
        return dict(self.checkpoint["records"])

    def refresh(self) -> bool:
        """Reload if another writer committed a newer version; returns whether it reloaded."""
        if self.backend.current_version() != self.version:
            self._load()
            return True
        return False

    def select_principles(
        self,
        case: dict[str, Any],
        token_budget: int | None = None,
        *,
        support_weight: float = 0.25,
        handoff: str | None = None,
    ) -> tuple[list[Principle], list[str]]:
        """The principles for working memory, within ``token_budget`` estimated tokens.

        All principles when they fit (MemAlign's default: all of them in every
        judgment). Otherwise the most useful ones that fit: ranked by cosine
        similarity to the case plus ``support_weight`` times their support
        (``log(1 + sources)`` relative to the best-supported principle; hand-written
        principles count as the best supported), kept in their stored order.

        Args:
            case: the case at hand.
            token_budget: estimated tokens (characters / 4) for principle texts; ``None``: no limit.
            support_weight: weight of support against similarity, in [0, 1].
            handoff: this judgment's token (``EpisodicMemory.new_handoff()``): when principles are
                ranked, the case's query vector is held for :meth:`retrieve_episodes` with the same
                token, so the case is embedded once per judgment.

        Returns:
            ``(selected principles, ids of principles left out)``.
        """
        principles, costs, supports = self._principle_table()
        if token_budget is None or int(costs.sum()) <= token_budget:
            return list(principles), []
        matrix = self._principle_matrix(principles)
        query = self.episodes.query(embedding_text(case), handoff=handoff, hold=True)  # held only with a handoff
        known = supports[~np.isnan(supports)]
        best = float(known.max()) if known.size and known.max() > 0 else 1.0
        scores = matrix @ query + support_weight * np.where(np.isnan(supports), best, supports) / best
        chosen = np.zeros(len(principles), dtype=bool)
        used, cheapest = 0, int(costs.min())
        for i in np.argsort(-scores, kind="stable"):
            if used + costs[i] <= token_budget:
                chosen[i] = True
                used += int(costs[i])
                if token_budget - used < cheapest:
                    break
        return [p for i, p in enumerate(principles) if chosen[i]], [
            p["id"] for i, p in enumerate(principles) if not chosen[i]
        ]

    def _principle_table(self) -> tuple[list[Principle], np.ndarray, np.ndarray]:
        """The loaded principles, their token costs and supports (``log(1 + sources)``, NaN: hand-written).

        Computed once per loaded version, not per judgment.
        """
        cached = self._principles_cache
        if cached is None or cached[0] is not self.checkpoint:
            principles = list(self.checkpoint["principles"])
            costs = np.array([estimate_tokens(p["text"]) + 2 for p in principles], dtype=np.int64)
            supports = np.array(
                [math.log1p(len(p["sources"])) if p["sources"] else np.nan for p in principles], dtype=np.float64
            )
            cached = (self.checkpoint, principles, costs, supports, {})
            self._principles_cache = cached
        return cached[1], cached[2], cached[3]

    def _principle_matrix(self, principles: list[Principle]) -> np.ndarray:
        """Unit vectors of the loaded principles, shape ``(len(principles), dim)``, once per loaded version."""
        cached = self._principles_cache
        assert cached is not None
        if "matrix" not in cached[4]:
            cached[4]["matrix"] = self._vectors([p["text"] for p in principles])
        return cached[4]["matrix"]

    def retrieve_episodes(self, case: dict[str, Any], k: int = 5, *, handoff: str | None = None) -> list[Episode]:
        """The ``k`` most similar episodes to ``case`` (with ``score``).

        ``handoff``: the token given to :meth:`select_principles` in the same judgment, if any.
        """
        return self.episodes.search(case, k, handoff=handoff)

    async def aretrieve_episodes(
        self, case: dict[str, Any], k: int = 5, *, handoff: str | None = None
    ) -> list[Episode]:
        """Async :meth:`retrieve_episodes`."""
        return await self.episodes.asearch(case, k, handoff=handoff)

    def judge(
        self,
        case: dict[str, Any],
        *,
        model: str | BaseChatModel | None = None,
        base_url: str | None = None,
        k: int = 5,
        precedent: PrecedentMode = "exact",
        precedent_threshold: float = 0.98,
        use_principles: bool = True,
        principles_token_budget: int | None = 2000,
        use_episodes: bool = True,
        max_retries: int = 2,
        backoff_s: float | None = None,
        backoff_max_s: float | None = None,
        structured_output: str = "auto",
        rationale_max_chars: int = 300,
    ) -> Judgment:
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
            case: ``{"inputs", "outputs", "expectations"?, "id"?}``; pairwise judges take ``outputs`` as
                a list of two.
            model: chat model instance or spec string (see :func:`resolve_chat_model`).
            base_url: base URL of an OpenAI-compatible server; ``model`` is then its model name.
            k: episodes retrieved into working memory (MemAlign uses 5).
            precedent: ``"exact"`` (same normalised case), ``"similar"`` (also cosine similarity
                >= ``precedent_threshold``) or ``"off"``.
            precedent_threshold: cosine similarity, in [-1, 1], for ``precedent="similar"``.
            use_principles: include semantic memory.
            principles_token_budget: estimated tokens (characters / 4) of principles; ``None``: all.
            use_episodes: include episodic memory.
            max_retries: repair rounds for an unusable answer, and retries of a call after a
                transient error (timeout, rate limit, connection, 5xx).
            backoff_s: first wait before such a retry, in seconds (``None``: 0.5), doubled each retry.
            backoff_max_s: longest single wait, in seconds (``None``: 20).
            structured_output: ``"auto"``, ``"json_schema"``, ``"function_calling"``, ``"json_mode"`` or
                ``"prompt"`` (see :func:`memalign_graph.judge.bind_structured`).
            rationale_max_chars: cap on the rationale's length, in characters.

        Returns:
            A :class:`~memalign_graph.judge.Judgment` (``value``, ``rationale``, ``scores`` where the
            model gave log-probabilities, the principle and episode ids used, ``usage``, ``attempts``);
            ``id`` when the case had one.

        Raises:
            RecordError: if the case is malformed (names the field).
            ValueError: for an unknown ``precedent`` or ``structured_output``, a model string that
                names no known form, or ``base_url`` with a model instance.
            JudgeError: if the model call failed (after its retries, for transient errors).
            JudgmentParseError: if no usable answer came after ``max_retries`` repairs.
        """
        parsed, principles, omitted, episodes, found = self._working_memory(
            case, k, precedent, precedent_threshold, use_principles, principles_token_budget, use_episodes
        )
        if found is not None:
            judgment = precedent_judgment(found, principles, episodes)
        else:
            settings = _judge_settings(max_retries, backoff_s, backoff_max_s, structured_output, rationale_max_chars)
            chat = resolve_chat_model(model, base_url=base_url)
            judgment = run_judge(chat, self.spec, parsed, principles, episodes, settings)
        return _with_case(judgment, parsed, omitted)

    async def ajudge(
        self,
        case: dict[str, Any],
        *,
        model: str | BaseChatModel | None = None,
        base_url: str | None = None,
        k: int = 5,
        precedent: PrecedentMode = "exact",
        precedent_threshold: float = 0.98,
        use_principles: bool = True,
        principles_token_budget: int | None = 2000,
        use_episodes: bool = True,
        max_retries: int = 2,
        backoff_s: float | None = None,
        backoff_max_s: float | None = None,
        structured_output: str = "auto",
        rationale_max_chars: int = 300,
    ) -> Judgment:
        """Async :meth:`judge` (same arguments, result and errors); the model call is awaited.

        Raises:
            RecordError: as :meth:`judge`.
            ValueError: as :meth:`judge`.
            JudgeError: as :meth:`judge`.
            JudgmentParseError: as :meth:`judge`.
        """
        parsed, principles, omitted, episodes, found = await asyncio.to_thread(
            self._working_memory,
            case,
            k,
            precedent,
            precedent_threshold,
            use_principles,
            principles_token_budget,
            use_episodes,
        )
        if found is not None:
            judgment = precedent_judgment(found, principles, episodes)
        else:
            settings = _judge_settings(max_retries, backoff_s, backoff_max_s, structured_output, rationale_max_chars)
            chat = await asyncio.to_thread(resolve_chat_model, model, base_url=base_url)
            judgment = await arun_judge(chat, self.spec, parsed, principles, episodes, settings)
        return _with_case(judgment, parsed, omitted)

    def _working_memory(
        self,
        case: dict[str, Any],
        k: int,
        precedent: str,
        precedent_threshold: float,
        use_principles: bool,
        principles_token_budget: int | None,
        use_episodes: bool,
    ) -> tuple[dict[str, Any], list[Principle], list[str], list[Episode], Episode | None]:
        if precedent not in PRECEDENT_MODES:
            raise ValueError(f"precedent {precedent!r}: use one of {', '.join(PRECEDENT_MODES)}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        raw = {key: case[key] for key in ("id", "inputs", "outputs", "expectations") if key in case}
        parsed = dict(parse_record(raw, self.spec, where="case"))
        handoff = self.episodes.new_handoff() if use_episodes and k else None
        principles, omitted = (
            self.select_principles(parsed, principles_token_budget, handoff=handoff) if use_principles else ([], [])
        )
        episodes = self.retrieve_episodes(parsed, k, handoff=handoff) if use_episodes and k else []
        found = find_precedent(parsed, episodes, precedent, precedent_threshold)  # type: ignore[arg-type]
        return parsed, principles, omitted, episodes, found

    def validate_feedback(self, records: list[dict[str, Any]]) -> list[FeedbackRecord]:
        """Validate a batch of feedback records against this judge (all before any write).

        Raises:
            RecordError: naming the record (``"record N"`` or its id) and the problem,
                including duplicate ids within the batch.
        """
        out: list[FeedbackRecord] = []
        seen: set[str] = set()
        for n, raw in enumerate(records):
            record = parse_record(raw, self.spec, where=f"record {n}", feedback=True, require_id=True)
            if record["id"] in seen:
                raise RecordError(f"record {n}", f"duplicate id {record['id']!r} in this batch")
            seen.add(record["id"])
            out.append(record)
        return out

    def align(
        self,
        records: list[dict[str, Any]],
        *,
        model: str | BaseChatModel | None = None,
        base_url: str | None = None,
        batch_size: int = 50,
        token_budget: int | None = None,
        concurrency: int = 8,
        max_retries: int = 2,
        backoff_s: float | None = None,
        consolidate_threshold: float = 0.85,
        author: str = "expert",
        reason: str | None = None,
        progress: Any = None,
        principles_policy: str | None = None,
        via: str = "align",
    ) -> AlignmentReport:
        """Align the judge to a batch of expert feedback; synchronous :meth:`aalign` (same arguments and errors).

        Safe to call any number of times in one process, with any model, from any thread (also
        one whose event loop is running): the work runs on one persistent background event loop
        (:func:`memalign_graph.models.run_sync`), so async clients a model cached in one call are
        still usable in the next.

        Example::

            report = memory.align(records, model="qwen2.5-7b-instruct", base_url="http://127.0.0.1:8000/v1")
            report.distilled, report.failed, report.version

        Returns:
            An :class:`AlignmentReport`.

        Raises:
            RecordError: for an invalid record; nothing is written.
            ValueError: for a model string that names no known form, or ``base_url`` with a model instance.
            ImportError: naming the extra to install, if the embedded model's runtime is missing.
            RuntimeError: if another process committed during this alignment, or if called from a
                coroutine on the background loop itself (await :meth:`aalign` there).
        """
        return run_sync(
            self.aalign(
                records,
                model=model,
                base_url=base_url,
                batch_size=batch_size,
                token_budget=token_budget,
                concurrency=concurrency,
                max_retries=max_retries,
                backoff_s=backoff_s,
                consolidate_threshold=consolidate_threshold,
                author=author,
                reason=reason,
                progress=progress,
                principles_policy=principles_policy,
                via=via,
            )
        )

    async def aalign(
        self,
        records: list[dict[str, Any]],
        *,
        model: str | BaseChatModel | None = None,
        base_url: str | None = None,
        batch_size: int = 50,
        token_budget: int | None = None,
        concurrency: int = 8,
        max_retries: int = 2,
        backoff_s: float | None = None,
        consolidate_threshold: float = 0.85,
        author: str = "expert",
        reason: str | None = None,
        progress: Any = None,
        principles_policy: str | None = None,
        via: str = "align",
    ) -> AlignmentReport:
        """Align the judge to a batch of expert feedback (MemAlign's alignment step).

        Every record becomes an episode (replacing any episode with its id);
        salient records (see :func:`memalign_graph.distill.is_salient`) are
        distilled into principles, de-duplicated against existing ones; one new
        version is committed. A record already aligned with identical content
        is a no-op; one aligned with different content replaces the old
        episode, and principles that came from it alone are removed and
        re-derived from the new content. Records whose distillation failed
        stay marked undistilled and are retried by the next call.

        Configuration resolves as in the graphs (:class:`~memalign_graph.context.Context`): a
        ``model`` or ``base_url`` left ``None`` is read from ``MEMALIGN_MODEL`` / ``MEMALIGN_BASE_URL``,
        and without either the embedded offline model distils.

        Args:
            records: feedback records (see :mod:`memalign_graph.spec`), each with an ``id``.
            model: chat model for distillation: an instance, or a spec string such as
                ``"openai:gpt-4.1-mini"``, ``"embedded"``, or a model name served at ``base_url``
                (see :func:`resolve_chat_model`).
            base_url: base URL of an OpenAI-compatible server (vLLM, llama.cpp server, Ollama,
                LM Studio), e.g. ``"http://127.0.0.1:8000/v1"``; ``model`` is then its model name.
            batch_size: most records per distillation call.
            token_budget: most estimated prompt tokens of records per call (``None``: what the
                model's context window holds, see :func:`memalign_graph.distill.adistill`).
            concurrency: most distillation calls in flight.
            max_retries: retries of a distillation batch (and of the consolidation call) after a
                transient error (timeout, rate limit, connection, 5xx) or an unreadable answer;
                other errors (authentication, bad request) fail the batch at once.
            backoff_s: first wait before a retry, in seconds, doubled each retry, plus jitter
                (``None``: 0.5 s).
            consolidate_threshold: cosine similarity from which a new principle and
                its most similar principle (existing, or new before it) go to the LLM, however
                similar they are (embeddings alone never merge), which says whether they
                are the same (merged: union of sources), contradict (the newer
                replaces the older, which is kept in its ``history``) or differ.
            author: recorded with the new version.
            reason: one line recorded with the new version.
            progress: optional progress sink. A callable ``progress(phase, done, total)`` hears every
                phase (``"embed"``: episodes embedded, ``"distill"``: records distilled,
                ``"consolidate"``: principles compared, ``"merge"``, ``"index"``, ``"persist"``; the
                first two run at the same time); an object with only ``update(n)`` (e.g. a tqdm bar)
                is advanced per distilled record.
            principles_policy: ``"review"`` holds every new distilled principle for an expert
                for this alignment; ``"auto"`` or ``None`` apply the judge's stored policy
                (a run can tighten it, never relax it; see :mod:`memalign_graph.governance`).
            via: ``"align"`` or ``"review"``, kept with each record in the ledger (who owns it).

        Returns:
            An :class:`AlignmentReport`; held principles are in ``proposed_principles``.

        Raises:
            ValueError: for a ``principles_policy`` other than ``auto``/``review``; nothing is written.
            RecordError: for an invalid record; nothing is written.
            ValueError: for a model string that names no known form, or ``base_url`` with a model instance.
            ImportError: naming the extra to install, if the embedded model's runtime is missing.
            RuntimeError: if another process committed during this alignment.
        """
        started = time.perf_counter()
        if principles_policy is not None:
            check_policy(principles_policy, "align")
        valid = self.validate_feedback(records)
        chat = resolve_chat_model(model, base_url=base_url)
        lock = self.backend.lock()
        await asyncio.to_thread(self._write_lock.acquire)
        try:
            await asyncio.to_thread(lock.__enter__)
            try:
                await asyncio.to_thread(self.refresh)
                report = await self._aalign_locked(
                    valid,
                    chat,
                    batch_size,
                    token_budget,
                    concurrency,
                    max_retries,
                    backoff_s,
                    consolidate_threshold,
                    author,
                    reason,
                    progress,
                    principles_policy=principles_policy,
                    via=via,
                )
            finally:
                await asyncio.to_thread(lock.__exit__, None, None, None)
        finally:
            self._write_lock.release()
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    async def _aalign_locked(  # noqa: PLR0913
        self,
        records: list[FeedbackRecord],
        chat: BaseChatModel,
        batch_size: int,
        token_budget: int | None,
        concurrency: int,
        max_retries: int,
        backoff_s: float | None,
        consolidate_threshold: float,
        author: str,
        reason: str | None,
        progress: Any,
        *,
        principles_policy: str | None = None,
        via: str = "align",
    ) -> AlignmentReport:
        ledger = self.records
        report = AlignmentReport(version=self.version)
        fresh: list[FeedbackRecord] = []
        retry: list[FeedbackRecord] = []
        for record in records:
            digest = record_hash(record)
            entry = ledger.get(record["id"])
            if entry is None:
                report.added.append(record["id"])
                fresh.append(record)
            elif entry["hash"] != digest:
                report.replaced.append(record["id"])
                fresh.append(record)
            elif not entry["distilled"]:
                retry.append(record)
            else:
                report.unchanged.append(record["id"])
        if not fresh and not retry:
            return report

        principles = self.principles
        if report.replaced:
            principles, report.removed_principles = drop_sources(principles, set(report.replaced))
        new_episodes = [episode_from_record(r) for r in fresh]
        to_distill = [r for r in fresh + retry if is_salient(r)]

        phases = _Phases(progress)

        def embed() -> np.ndarray:
            started = time.perf_counter()
            vectors = self._embed_episodes(new_episodes, phases)
            report.timings["embed_s"] = round(time.perf_counter() - started, 3)
            return vectors

        # Episodes are embedded in a worker thread while the LLM distills: the two overlap.
        started = time.perf_counter()
        embedding = asyncio.create_task(asyncio.to_thread(embed))
        phases.start("distill", len(to_distill))
        result = await adistill(
            chat,
            self.spec,
            to_distill,
            principles,
            batch_size=batch_size,
            token_budget=token_budget,
            concurrency=concurrency,
            max_retries=max_retries,
            backoff_s=backoff_s,
            progress=phases.sink("distill"),
        )
        report.timings["distill_s"] = round(time.perf_counter() - started, 3)
        report.distilled, report.failed = result.distilled, result.failed
        report.refused_principles = result.refused
        report.llm_calls, report.usage = result.calls, result.usage

        started = time.perf_counter()
        phases.start("consolidate", len(result.principles))
        pairs = await asyncio.to_thread(
            related_pairs, principles, result.principles, self._vectors, threshold=consolidate_threshold
        )
        report.timings["consolidate_embed_s"] = round(time.perf_counter() - started, 3)
        phases.advance("consolidate", len(result.principles))
        texts = {p["id"]: p["text"] for p in principles + result.principles}
        consolidation_calls = CallCounter()
        relations = await aclassify_pairs(
            chat,
            [(c, texts[c], e, texts[e]) for c, e, _ in pairs],
            max_retries=max_retries,
            usage=report.usage,
            backoff_s=backoff_s,
            counter=consolidation_calls,
            concurrency=concurrency,
        )
        report.llm_calls += consolidation_calls.n
        report.consolidation = {
            "pairs": len(pairs),
            **{kind: sum(r == kind for _, r in relations.values()) for kind in ("same", "contradicts", "different")},
        }
        vectors = await embedding

        policy = effective_policy(self.checkpoint.get("principles_policy"), principles_policy)

        def commit() -> int:
            started = time.perf_counter()
            phases.start("merge", len(result.principles))
            admitted, held, admitted_relations = govern_candidates(
                principles,
                result.principles,
                relations,
                policy=policy,
                values=list(self.spec.values),
            )
            merged, added, absorbed = merge_principles(principles, admitted, relations=admitted_relations)
            proposed, report_held = propose(
                self.proposed_principles, [c for c in result.principles if c["id"] in held], held, relations
            )
            report.new_principles, report.merged_principles = added, absorbed
            reasons = {p["id"]: p.get("held", "") for p in proposed}
            report.proposed_principles = {i: held.get(i) or reasons[i] for i in report_held}
            report.timings["merge_s"] = round(time.perf_counter() - started, 3)
            phases.advance("merge", len(result.principles))
            try:
                started = time.perf_counter()
                phases.start("index", len(new_episodes))
                draft = self.episodes.draft()  # readers keep searching the committed store meanwhile
                draft.upsert_with_vectors(new_episodes, vectors)
                for record in fresh + retry:
                    salient = is_salient(record)
                    ledger[record["id"]] = LedgerEntry(
                        hash=record_hash(record),
                        distilled=(not salient) or record["id"] not in result.failed,
                        salient=salient,
                        author=author,
                        via=via,
                    )
                report.timings["index_s"] = round(time.perf_counter() - started, 3)
                phases.advance("index", len(new_episodes))
                started = time.perf_counter()
                phases.start("persist", 1)
                checkpoint = PrinciplesCheckpoint(
                    version=self.version + 1,
                    created_at=now_iso(),
                    author=author,
                    reason=reason or _default_reason(report),
                    principles=merged,
                    records=ledger,
                    usage=dict(report.usage),
                    prompt_version=PROMPT_VERSION,  # type: ignore[typeddict-unknown-key]
                    **self._governance(proposed),  # type: ignore[typeddict-item]
                )
                version = self.backend.commit(
                    checkpoint, draft.vectorstore, embeddings_changed=bool(fresh), new_episodes=new_episodes
                )
            except BaseException:
                self._load()  # the backend may have committed before failing: read what is current
                raise
            self._publish(checkpoint, draft)
            self._persist_principle_vectors()
            report.timings["persist_s"] = round(time.perf_counter() - started, 3)
            phases.advance("persist", 1)
            return version

        report.version = await asyncio.to_thread(commit)
        return report

    def _embed_episodes(self, episodes: list[Episode], phases: _Phases, chunk: int = 256) -> np.ndarray:
        """Unit vectors of ``episodes`` (shape ``(n, dim)``, float32), embedded ``chunk`` texts per call.

        Filled into one preallocated array, so 100 000 episodes cost 150 MB of vectors, not lists of floats.
        """
        phases.start("embed", len(episodes))
        if not episodes:
            return np.zeros((0, 0), dtype=np.float32)
        out: np.ndarray | None = None
        embed = getattr(self.embeddings, "embed_documents_array", None) or self.embeddings.embed_documents
        for start in range(0, len(episodes), chunk):
            part = episodes[start : start + chunk]
            block = np.asarray(embed([embedding_text(e) for e in part]), dtype=np.float32)
            if block.ndim != 2 or len(block) != len(part):
                raise ValueError(f"embeddings returned {block.shape} for {len(part)} texts")
            if out is None:
                out = np.empty((len(episodes), block.shape[1]), dtype=np.float32)
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            out[start : start + len(part)] = block / np.where(norms == 0, 1.0, norms)
            phases.advance("embed", len(part))
        assert out is not None
        return out

    @contextlib.contextmanager
    def _writing(self) -> Any:
        """Hold the process and backend writer locks and work on the latest committed version."""
        with self._write_lock, self.backend.lock():
            self.refresh()
            try:
                yield
            except BaseException:
                self._load()
                raise

    def _commit(
        self,
        principles: list[Principle],
        records: dict[str, LedgerEntry],
        *,
        author: str,
        reason: str,
        episodes_changed: bool,
        new_episodes: list[Episode] | None = None,
        proposed: list[Principle] | None = None,
        policy: str | None = None,
        episodes: EpisodicMemory | None = None,
    ) -> int:
        """Commit a new version and publish it to readers (see :meth:`_publish`).

        ``episodes`` is the changed draft of the episodic memory (see
        :meth:`EpisodicMemory.draft`), or ``None`` when episodes did not change.
        """
        episodes = self.episodes if episodes is None else episodes  # an empty draft is falsy (len 0)
        checkpoint = PrinciplesCheckpoint(
            version=self.version + 1,
            created_at=now_iso(),
            author=author,
            reason=reason,
            principles=principles,
            records=records,
            **self._governance(proposed, policy),  # type: ignore[typeddict-item]
        )
        version = self.backend.commit(
            checkpoint,
            episodes.vectorstore,
            embeddings_changed=episodes_changed,
            new_episodes=list(new_episodes or []),  # type: ignore[arg-type]
        )
        self._publish(checkpoint, episodes)
        self._persist_principle_vectors(embed_missing=self._vectors.batch_size)
        return version

    def _governance(self, proposed: list[Principle] | None = None, policy: str | None = None) -> dict[str, Any]:
        """The governance fields a new checkpoint carries: the policy, and the proposals (current ones by default)."""
        out: dict[str, Any] = {}
        policy = policy or self.checkpoint.get("principles_policy")
        if policy:
            out["principles_policy"] = policy
        proposed = self.proposed_principles if proposed is None else proposed
        if proposed or "proposed" in self.checkpoint:
            out["proposed"] = proposed
        return out

    def forget(self, record_ids: list[str], *, author: str = "expert", reason: str | None = None) -> ChangeReport:
        """Delete records for good: their episodes, their ledger entries, and what was derived from them alone.

        Principles whose every source is forgotten are removed; principles with
        remaining sources lose the forgotten ids; hand-written principles (no
        sources) stay; a principle superseded by a forgotten record's rule comes
        back (listed in ``principles_added``); proposals lose the ids too. This is
        a privacy deletion: after the new version is committed, the records are
        also erased from every older version, the episode history, older index snapshots and cached review threads, so a
        rollback cannot bring them back.

        Raises:
            KeyError: naming the ids that are in no version of this memory; nothing is changed.
        """
        wanted = set(record_ids)
        with self._writing():
            known = set(self.records)
            for entry in self.backend.versions():
                known.update(entry["records"])
            unknown = sorted(wanted - known)
            if unknown:
                raise KeyError(f"{self.backend.location}: no record with id {', '.join(unknown)} in any version")
            before = {p["id"] for p in self.principles}
            principles, removed = drop_sources(self.principles, wanted)
            proposed, _ = drop_sources(self.proposed_principles, wanted)
            records = {k: v for k, v in self.records.items() if k not in wanted}
            draft = self.episodes.draft()
            gone = draft.delete(sorted(wanted))
            version = self._commit(
                principles,
                records,
                author=author,
                reason=reason or f"forgot {len(wanted)} record(s)",
                episodes_changed=bool(gone),
                proposed=proposed,
                episodes=draft,
            )
            self.backend.purge(wanted)
        restored = [p["id"] for p in principles if p["id"] not in before]
        return ChangeReport(
            version=version, episodes_removed=gone, principles_removed=removed, principles_added=restored
        )

    def rollback(self, version: int, *, author: str = "expert", reason: str | None = None) -> ChangeReport:
        """Restore principles and episodes as they were at ``version``, as a new version.

        Records forgotten since stay forgotten (they were erased from history).
        Proposals (pending and rejected) are restored as at ``version`` too; the
        principles policy is not rolled back (a rollback never relaxes ``review``).

        Raises:
            KeyError: if ``version`` does not exist.
            MemoryFormatError: if an episode of that version is missing from the history.
        """
        with self._writing():
            target = self.backend.checkpoint(version)
            current = self.records
            want = {rid: entry["hash"] for rid, entry in target["records"].items()}
            remove = [rid for rid in current if want.get(rid) != current[rid]["hash"]]
            restore = [rid for rid, digest in want.items() if current.get(rid, {}).get("hash") != digest]
            history = self.backend.episode_history({(rid, want[rid]) for rid in restore})
            missing = [rid for rid in restore if (rid, want[rid]) not in history]
            if missing:
                raise MemoryFormatError(f"{self.backend.location}: episodes {missing} of version {version} are lost")
            draft = self.episodes.draft()
            draft.delete(remove)
            draft.upsert([history[(rid, want[rid])] for rid in restore])  # type: ignore[misc]
            before = {p["id"] for p in self.principles}
            after = {p["id"] for p in target["principles"]}
            new_version = self._commit(
                list(target["principles"]),
                dict(target["records"]),
                author=author,
                reason=reason or f"rollback to version {version}",
                episodes_changed=bool(remove or restore),
                proposed=list(target.get("proposed") or []),
                episodes=draft,
            )
        return ChangeReport(
            version=new_version,
            episodes_removed=sorted(set(remove) - set(restore)),
            episodes_restored=sorted(restore),
            principles_removed=sorted(before - after),
            principles_added=sorted(after - before),
        )

    def add_principle(self, text: str, *, author: str = "expert", reason: str | None = None) -> Principle:
        """Add a hand-written principle (no sources: never removed implicitly).

        Raises:
            ValueError: if ``text`` is blank or repeats an existing principle.
        """
        with self._writing():
            principle = new_principle(text, [], author)
            merged, added, _ = merge_principles(self.principles, [principle])
            if not added:
                raise ValueError(f"principle {text!r} repeats an existing one")
            self._commit(
                merged, self.records, author=author, reason=reason or "added a principle", episodes_changed=False
            )
        return principle

    def edit_principle(
        self, principle_id: str, text: str, *, author: str = "expert", reason: str | None = None
    ) -> None:
        """Replace a principle's text (keeps its id and sources; the old text stays in its history).

        Raises:
            KeyError: if there is no principle ``principle_id``.
            ValueError: if ``text`` is blank.
        """
        text = " ".join(text.split())
        if not text:
            raise ValueError("a principle's text must not be empty")
        with self._writing():
            principles = self.principles
            for i, p in enumerate(principles):
                if p["id"] == principle_id:
                    old = {
                        "id": p["id"],
                        "text": p["text"],
                        "sources": list(p["sources"]),
                        "created_at": p["created_at"],
                        "author": p["author"],
                    }
                    principles[i] = Principle(
                        **{
                            **p,
                            "text": text,
                            "updated_at": now_iso(),  # type: ignore[typeddict-item]
                            "history": [*p.get("history", []), old],
                        }
                    )
                    break
            else:
                raise KeyError(f"no principle {principle_id!r}")
            self._commit(
                principles,
                self.records,
                author=author,
                reason=reason or f"edited {principle_id}",
                episodes_changed=False,
            )

    def delete_principle(self, principle_id: str, *, author: str = "expert", reason: str | None = None) -> None:
        """Delete a principle (its sources' episodes stay).

        Raises:
            KeyError: if there is no principle ``principle_id``.
        """
        with self._writing():
            principles = [p for p in self.principles if p["id"] != principle_id]
            if len(principles) == len(self.checkpoint["principles"]):
                raise KeyError(f"no principle {principle_id!r}")
            self._commit(
                principles,
                self.records,
                author=author,
                reason=reason or f"deleted {principle_id}",
                episodes_changed=False,
            )

    def as_evaluator(self, **kwargs: Any) -> Any:
        """This judge as a LangSmith / openevals evaluator (see :func:`memalign_graph.importers.as_evaluator`).

        Args:
            **kwargs: ``model``, ``base_url``, ``key``, ``score_map`` and other context fields.

        Returns:
            ``evaluator(inputs=None, outputs=None, reference_outputs=None, *, run=None, example=None)``
            returning ``{"key", "score", "value", "comment", "metadata"}``.
        """
        from memalign_graph.importers import as_evaluator

        location = (
            getattr(self.backend, "url", None) or self.backend.location
        )  # PostgreSQL: location hides the password
        return as_evaluator(location, embeddings=self.embeddings, **kwargs)

    def set_principles_policy(self, policy: str, *, author: str = "expert", reason: str | None = None) -> int:
        """Store the judge's principles policy (``auto`` or ``review``) as a new version.

        Returns:
            The version after it (unchanged if the policy already was ``policy``).

        Raises:
            ValueError: for a policy other than ``auto``/``review``; nothing is written.
        """
        check_policy(policy)
        with self._writing():
            if self.principles_policy == policy:
                return self.version
            return self._commit(
                self.principles,
                self.records,
                author=author,
                reason=reason or f"principles policy set to {policy}",
                episodes_changed=False,
                policy=policy,
            )

    def decide_principles(
        self,
        approve: list[str] | tuple[str, ...] = (),
        reject: list[str] | tuple[str, ...] = (),
        *,
        author: str = "expert",
        reason: str | None = None,
    ) -> ChangeReport:
        """Approve or reject pending proposals, as one new version (see :func:`memalign_graph.governance.decide`).

        Approved proposals enter working memory (merged into an active principle that says
        the same; replacing the one they contradict unless it is hand-written); rejected ones
        stay in :attr:`proposed_principles` with status ``rejected``, so the same rule
        distilled again is not proposed again.

        Returns:
            A :class:`ChangeReport`: ``principles_added`` (approved and new in working memory),
            ``principles_removed`` (superseded by an approved one).

        Raises:
            KeyError: naming ids that are not pending proposals; nothing is written.
            ValueError: if no id is given or one is both approved and rejected; nothing is written.
        """
        with self._writing():
            before = {p["id"] for p in self.principles}
            active, proposed, _ = decide(
                self.principles,
                self.proposed_principles,
                list(approve),
                list(reject),
                author=author,
            )
            parts = [
                f"approved {', '.join(approve)}" if approve else "",
                f"rejected {', '.join(reject)}" if reject else "",
            ]
            version = self._commit(
                active,
                self.records,
                author=author,
                reason=reason or "; ".join(p for p in parts if p),
                episodes_changed=False,
                proposed=proposed,
            )
        after = {p["id"] for p in active}
        return ChangeReport(
            version=version, principles_added=sorted(after - before), principles_removed=sorted(before - after)
        )

    def diff(self, old: int, new: int) -> dict[str, Any]:
        """What changed between two versions (see :func:`diff_versions`)."""
        return diff_versions(self.backend, old, new)


@dataclass
class ChangeReport:
    """What a forget, rollback or principle edit did.

    Attributes:
        version: memory version after it.
        episodes_removed: ids of episodes deleted.
        episodes_restored: ids of episodes put back (rollback).
        principles_removed: ids of principles deleted.
        principles_added: ids of principles added.
    """

    version: int
    episodes_removed: list[str] = field(default_factory=list)
    episodes_restored: list[str] = field(default_factory=list)
    principles_removed: list[str] = field(default_factory=list)
    principles_added: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def diff_versions(backend: MemoryBackend, old: int, new: int) -> dict[str, Any]:
    """What changed between two versions.

    Returns:
        ``{"principles": {"added", "removed", "changed"}, "episodes": {"added", "removed", "changed"}}``;
        principles as ``{"id", "text"}`` (``changed``: ``{"id", "old", "new"}``), episodes as ids.

    Raises:
        KeyError: if a version does not exist.
    """
    a, b = backend.checkpoint(old), backend.checkpoint(new)
    pa = {p["id"]: p for p in a["principles"]}
    pb = {p["id"]: p for p in b["principles"]}
    ra, rb = a["records"], b["records"]
    return {
        "principles": {
            "added": [{"id": i, "text": pb[i]["text"]} for i in pb if i not in pa],
            "removed": [{"id": i, "text": pa[i]["text"]} for i in pa if i not in pb],
            "changed": [
                {"id": i, "old": pa[i]["text"], "new": pb[i]["text"]}
                for i in pb
                if i in pa and (pa[i]["text"], pa[i]["sources"]) != (pb[i]["text"], pb[i]["sources"])
            ],
        },
        "episodes": {
            "added": sorted(set(rb) - set(ra)),
            "removed": sorted(set(ra) - set(rb)),
            "changed": sorted(i for i in set(ra) & set(rb) if ra[i]["hash"] != rb[i]["hash"]),
        },
    }


PRECEDENT_MODES = ("exact", "similar", "off")


def _judge_settings(
    max_retries: int,
    backoff_s: float | None,
    backoff_max_s: float | None,
    structured_output: str,
    rationale_max_chars: int,
) -> JudgeSettings:
    settings = JudgeSettings(
        max_retries=max_retries, structured_output=structured_output, rationale_max_chars=rationale_max_chars
    )
    if backoff_s is not None:
        settings["backoff_s"] = float(backoff_s)
    if backoff_max_s is not None:
        settings["backoff_max_s"] = float(backoff_max_s)
    return settings


def _with_case(judgment: Judgment, case: dict[str, Any], omitted: list[str]) -> Judgment:
    judgment["principles_omitted"] = omitted
    if "id" in case:
        judgment["id"] = case["id"]
    return judgment


def _default_reason(report: AlignmentReport) -> str:
    parts = [f"aligned {len(report.added)} new"]
    if report.replaced:
        parts.append(f"{len(report.replaced)} replaced")
    parts.append(f"{len(report.distilled)} distilled")
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    return ", ".join(parts) + " feedback records"


class _Phases:
    """Alignment progress to a sink: ``sink(phase, done, total)``, or ``sink.update(n)`` for distillation only."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self._totals: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(self, phase: str, total: int) -> None:
        with self._lock:
            self._totals[phase], self._done[phase] = total, 0
        if callable(self._sink):
            self._sink(phase, 0, total)

    def advance(self, phase: str, n: int) -> None:
        with self._lock:
            self._done[phase] = self._done.get(phase, 0) + n
            done, total = self._done[phase], self._totals.get(phase, 0)
        if callable(self._sink):
            self._sink(phase, done, total)
        elif phase == "distill" and self._sink is not None:
            self._sink.update(n)

    def sink(self, phase: str) -> Any:
        """An ``update(n)`` object that advances ``phase``."""
        return _PhaseSink(self, phase) if self._sink is not None else None


@dataclass
class _PhaseSink:
    phases: _Phases
    phase: str

    def update(self, n: int) -> None:
        self.phases.advance(self.phase, n)


ProgressCallback = Callable[[str, int, int], None]
"""``progress(phase, done, total)``, see :meth:`Memory.aalign`."""


_registry: dict[tuple[Any, int], Memory] = {}
_registry_lock = threading.Lock()


def open_memory(
    location: str | Path | MemoryBackend, embeddings: str | Embeddings | None = None, *, refresh: bool = True
) -> Memory:
    """A process-wide shared :class:`Memory` for ``location``, refreshed if another writer committed.

    Graph nodes use this so that judging does not reload memory from disk on
    every call, yet sees every committed alignment.

    Args:
        location: see :func:`backend_for`.
        embeddings: see :func:`memalign_graph.models.resolve_embeddings`; ``None`` without
            ``MEMALIGN_EMBEDDINGS``: those the memory was created with (see :func:`embeddings_for`).
        refresh: check for a newer version (one small read; ``False`` for the later nodes of a
            judgment, which use the version its first node saw).

    Raises:
        MemoryFormatError: if there is no valid memory at ``location``, or it was embedded with
            other embeddings than those named.
    """
    emb = resolve_embeddings(embeddings) if embeddings_named(embeddings) else None
    key = (_location_key(location), None if emb is None else id(emb))
    with _registry_lock:
        memory = _registry.get(key)
        if memory is None:
            backend = backend_for(location)
            memory = Memory(backend, emb if emb is not None else embeddings_for(backend, None))
            _registry[key] = memory
            return memory
    if refresh:
        with contextlib.suppress(MemoryFormatError):
            if not memory._write_lock.locked():
                memory.refresh()
    return memory


__all__ = ["AlignmentReport", "Memory", "backend_for", "embeddings_for", "open_memory"]
