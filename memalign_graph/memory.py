"""A judge's memory: semantic (principles) + episodic (episodes), and alignment.

:class:`Memory` is the one object that holds a judge's definition, its
principles and its episodes, loads them from a backend and commits changes
as new versions. :meth:`Memory.aalign` is MemAlign's alignment step: expert
feedback becomes episodes and, through distillation, principles.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

from memalign_graph.backends.base import LedgerEntry, MemoryBackend, PrinciplesCheckpoint
from memalign_graph.backends.file import FileBackend
from memalign_graph.backends.postgres import PostgresBackend, is_postgres_url
from memalign_graph.distill import CallCounter, aclassify_pairs, adistill, estimate_tokens, is_salient
from memalign_graph.episodic import Episode, EpisodicMemory, episode_from_record, unit
from memalign_graph.errors import MemoryFormatError, RecordError
from memalign_graph.models import embeddings_name, resolve_chat_model, resolve_embeddings
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
        location: a :class:`MemoryBackend`; a ``postgresql://…?judge=NAME`` connection string
            (:class:`~memalign_graph.backends.postgres.PostgresBackend`); or a directory
            (:class:`~memalign_graph.backends.file.FileBackend`, the default).
    """
    if isinstance(location, MemoryBackend):
        return location
    if is_postgres_url(location):
        return PostgresBackend(str(location))
    return FileBackend(location)


def _location_key(location: str | Path) -> str:
    return str(location) if is_postgres_url(location) else str(Path(location).expanduser().resolve())


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
        self._write_lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        loaded = self.backend.load(self.embeddings)
        name = embeddings_name(self.embeddings)
        if loaded.embeddings_info.get("name") != name:
            raise MemoryFormatError(
                f"{self.backend.location}: episodes were embedded with {loaded.embeddings_info.get('name')!r}, "
                f"but {name!r} was given; use the same embeddings"
            )
        try:
            self.spec = JudgeSpec.from_dict(loaded.spec)
        except ValueError as exc:
            raise MemoryFormatError(f"{self.backend.location}: invalid judge definition ({exc})") from None
        self.checkpoint: PrinciplesCheckpoint = loaded.checkpoint
        self.episodes = EpisodicMemory(loaded.vectorstore, self.embeddings)

    @classmethod
    def create(
        cls, location: str | Path | MemoryBackend, spec: JudgeSpec, *, embeddings: str | Embeddings | None = None
    ) -> Memory:
        """Create an empty memory for ``spec`` and open it.

        Args:
            location: a directory (file backend), a ``postgresql://…?judge=NAME`` connection
                string (PostgreSQL backend), or a :class:`MemoryBackend` (see :func:`backend_for`).
            spec: the judge definition.
            embeddings: see :func:`memalign_graph.models.resolve_embeddings`.

        Raises:
            FileExistsError: if a memory already exists there.
        """
        backend = backend_for(location)
        emb = resolve_embeddings(embeddings)
        dim = len(emb.embed_query("dimension probe"))
        backend.create(spec.to_dict(), emb, {"name": embeddings_name(emb), "dim": dim})
        return cls(backend, emb)

    @classmethod
    def open(cls, location: str | Path | MemoryBackend, *, embeddings: str | Embeddings | None = None) -> Memory:
        """Open an existing memory.

        Raises:
            MemoryFormatError: if there is no valid memory there, or it was embedded
                with other embeddings.
        """
        return cls(backend_for(location), resolve_embeddings(embeddings))

    @property
    def version(self) -> int:
        """The loaded version number."""
        return int(self.checkpoint["version"])

    @property
    def principles(self) -> list[Principle]:
        """All principles at the loaded version."""
        return list(self.checkpoint["principles"])

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
        self, case: dict[str, Any], token_budget: int | None = None, *, support_weight: float = 0.25
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

        Returns:
            ``(selected principles, ids of principles left out)``.
        """
        principles = self.principles
        costs = [estimate_tokens(p["text"]) + 2 for p in principles]
        if token_budget is None or sum(costs) <= token_budget:
            return principles, []
        similarity = self._vectors([p["text"] for p in principles]) @ np.asarray(
            unit([self.embeddings.embed_query(embedding_text(case))])[0], dtype=np.float32
        )
        supports = [math.log1p(len(p["sources"])) if p["sources"] else None for p in principles]
        best = max([s for s in supports if s is not None], default=1.0) or 1.0
        scores = [
            float(sim) + support_weight * ((s if s is not None else best) / best)
            for sim, s in zip(similarity, supports)
        ]
        chosen: set[int] = set()
        used = 0
        for i in sorted(range(len(principles)), key=lambda i: -scores[i]):
            if used + costs[i] <= token_budget:
                chosen.add(i)
                used += costs[i]
        return [p for i, p in enumerate(principles) if i in chosen], [
            p["id"] for i, p in enumerate(principles) if i not in chosen
        ]

    def retrieve_episodes(self, case: dict[str, Any], k: int = 5) -> list[Episode]:
        """The ``k`` most similar episodes to ``case`` (with ``score``)."""
        return self.episodes.search(case, k)

    async def aretrieve_episodes(self, case: dict[str, Any], k: int = 5) -> list[Episode]:
        """Async :meth:`retrieve_episodes`."""
        return await self.episodes.asearch(case, k)

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

    def align(self, records: list[dict[str, Any]], **kwargs: Any) -> AlignmentReport:
        """Synchronous :meth:`aalign` (same arguments, result and errors).

        Runs the coroutine in a fresh event loop (in a worker thread when called
        from inside a running loop).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.aalign(records, **kwargs))
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.aalign(records, **kwargs)).result()

    async def aalign(
        self,
        records: list[dict[str, Any]],
        *,
        model: str | BaseChatModel | None = None,
        batch_size: int = 50,
        token_budget: int | None = None,
        concurrency: int = 8,
        max_retries: int = 2,
        backoff_s: float | None = None,
        consolidate_threshold: float = 0.85,
        author: str = "expert",
        reason: str | None = None,
        progress: Any = None,
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

        Args:
            records: feedback records (see :mod:`memalign_graph.spec`), each with an ``id``.
            model: chat model for distillation (see :func:`resolve_chat_model`).
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
            progress: optional ``update(n)`` sink advanced per distilled record.

        Returns:
            An :class:`AlignmentReport`.

        Raises:
            RecordError: for an invalid record; nothing is written.
            RuntimeError: if another process committed during this alignment.
        """
        started = time.perf_counter()
        valid = self.validate_feedback(records)
        chat = resolve_chat_model(model)
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

        def embed() -> list[list[float]]:
            started = time.perf_counter()
            vectors = (
                unit(self.embeddings.embed_documents([embedding_text(e) for e in new_episodes])) if new_episodes else []
            )
            report.timings["embed_s"] = round(time.perf_counter() - started, 3)
            return vectors

        # Episodes are embedded in a worker thread while the LLM distills: the two overlap.
        started = time.perf_counter()
        embedding = asyncio.create_task(asyncio.to_thread(embed))
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
            progress=progress,
        )
        report.timings["distill_s"] = round(time.perf_counter() - started, 3)
        report.distilled, report.failed = result.distilled, result.failed
        report.refused_principles = result.refused
        report.llm_calls, report.usage = result.calls, result.usage

        started = time.perf_counter()
        pairs = await asyncio.to_thread(
            related_pairs, principles, result.principles, self._vectors, threshold=consolidate_threshold
        )
        report.timings["consolidate_embed_s"] = round(time.perf_counter() - started, 3)
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

        def commit() -> int:
            started = time.perf_counter()
            merged, added, absorbed = merge_principles(principles, result.principles, relations=relations)
            report.new_principles, report.merged_principles = added, absorbed
            report.timings["merge_s"] = round(time.perf_counter() - started, 3)
            vectorstore = self.episodes.vectorstore
            try:
                started = time.perf_counter()
                self.episodes.upsert_with_vectors(new_episodes, vectors)
                for record in fresh + retry:
                    salient = is_salient(record)
                    ledger[record["id"]] = LedgerEntry(
                        hash=record_hash(record),
                        distilled=(not salient) or record["id"] not in result.failed,
                        salient=salient,
                    )
                report.timings["index_s"] = round(time.perf_counter() - started, 3)
                started = time.perf_counter()
                checkpoint = PrinciplesCheckpoint(
                    version=self.version + 1,
                    created_at=now_iso(),
                    author=author,
                    reason=reason or _default_reason(report),
                    principles=merged,
                    records=ledger,
                    usage=dict(report.usage),
                    prompt_version=PROMPT_VERSION,  # type: ignore[typeddict-unknown-key]
                )
                version = self.backend.commit(
                    checkpoint, vectorstore, embeddings_changed=bool(fresh), new_episodes=new_episodes
                )
                report.timings["persist_s"] = round(time.perf_counter() - started, 3)
            except BaseException:
                self._load()  # in-memory episodes were touched: go back to what is committed
                raise
            self.checkpoint = checkpoint
            return version

        report.version = await asyncio.to_thread(commit)
        return report

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
    ) -> int:
        checkpoint = PrinciplesCheckpoint(
            version=self.version + 1,
            created_at=now_iso(),
            author=author,
            reason=reason,
            principles=principles,
            records=records,
        )
        version = self.backend.commit(
            checkpoint,
            self.episodes.vectorstore,
            embeddings_changed=episodes_changed,
            new_episodes=list(new_episodes or []),  # type: ignore[arg-type]
        )
        self.checkpoint = checkpoint
        return version

    def forget(self, record_ids: list[str], *, author: str = "expert", reason: str | None = None) -> ChangeReport:
        """Delete records for good: their episodes, their ledger entries, and what was derived from them alone.

        Principles whose every source is forgotten are removed; principles with
        remaining sources lose the forgotten ids; hand-written principles (no
        sources) stay. This is a privacy deletion: after the new version is
        committed, the records are also erased from every older version, the
        episode history, older index snapshots and cached review threads, so a
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
            principles, removed = drop_sources(self.principles, wanted)
            records = {k: v for k, v in self.records.items() if k not in wanted}
            gone = self.episodes.delete(sorted(wanted))
            version = self._commit(
                principles,
                records,
                author=author,
                reason=reason or f"forgot {len(wanted)} record(s)",
                episodes_changed=bool(gone),
            )
            self.backend.purge(wanted)
        return ChangeReport(version=version, episodes_removed=gone, principles_removed=removed)

    def rollback(self, version: int, *, author: str = "expert", reason: str | None = None) -> ChangeReport:
        """Restore principles and episodes as they were at ``version``, as a new version.

        Records forgotten since stay forgotten (they were erased from history).

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
            self.episodes.delete(remove)
            episodes = [history[(rid, want[rid])] for rid in restore]
            self.episodes.upsert(episodes)  # type: ignore[arg-type]
            before = {p["id"] for p in self.principles}
            after = {p["id"] for p in target["principles"]}
            new_version = self._commit(
                list(target["principles"]),
                dict(target["records"]),
                author=author,
                reason=reason or f"rollback to version {version}",
                episodes_changed=bool(remove or restore),
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


def _default_reason(report: AlignmentReport) -> str:
    parts = [f"aligned {len(report.added)} new"]
    if report.replaced:
        parts.append(f"{len(report.replaced)} replaced")
    parts.append(f"{len(report.distilled)} distilled")
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    return ", ".join(parts) + " feedback records"


_registry: dict[tuple[str, int], Memory] = {}
_registry_lock = threading.Lock()


def open_memory(location: str | Path, embeddings: str | Embeddings | None = None) -> Memory:
    """A process-wide shared :class:`Memory` for ``location``, refreshed if another writer committed.

    Graph nodes use this so that judging does not reload memory from disk on
    every call, yet sees every committed alignment.

    Raises:
        MemoryFormatError: if there is no valid memory at ``location``.
    """
    emb = resolve_embeddings(embeddings)
    key = (_location_key(location), id(emb))
    with _registry_lock:
        memory = _registry.get(key)
        if memory is None:
            memory = Memory.open(location, embeddings=emb)
            _registry[key] = memory
            return memory
    with contextlib.suppress(MemoryFormatError):
        if not memory._write_lock.locked():
            memory.refresh()
    return memory


__all__ = ["AlignmentReport", "Memory", "backend_for", "open_memory"]
