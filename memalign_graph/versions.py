"""A judge's memory at its latest committed version, and how a new version is committed.

:class:`VersionedMemory` holds what one version of a judge's memory is: the judge's
definition, its semantic memory (:class:`~memalign_graph.semantic.SemanticMemory`), its
episodic memory (:class:`~memalign_graph.episodic.EpisodicMemory`) and the ledger of aligned
records, loaded from a backend. Every change (an alignment, a forget, a rollback, a principle
edit, a policy, an expert's decision) becomes a version the same way:

1. :meth:`~VersionedMemory.writing` takes this process's writer lock, then the backend's
   (across processes), and loads the latest committed version;
2. the change is prepared aside: a draft of the episodic memory
   (:meth:`~memalign_graph.episodic.EpisodicMemory.draft`), new lists of principles and ledger
   entries, while readers keep using the committed version;
3. :meth:`~VersionedMemory.commit` writes it as version N + 1 in one backend commit (which
   refuses it if another writer committed N + 1 first), publishes it to readers, and stores the
   principles' vectors with it. On a failed commit the memory reloads what is committed.

The calibration head (:mod:`memalign_graph.calibration`) is derived data of each version, refitted
here, where every change converges: when the training episodes change (an alignment, an overwrite,
a forget, a rollback, an expert's decision releasing or holding records), the head is fitted on the
draft before the commit; when they do not (principle edits, a policy), the head carries over. It is
stored after the commit as a cache of that version only (:meth:`MemoryBackend.save_calibration`), so
no older version's head, trained on a record forgotten since, stays behind. A process reads it on
the first judgment that needs it (:meth:`VersionedMemory.calibration_head`), and refits if it is
absent, unreadable, invalid or of another version (a crash between a commit and its cache write).

:func:`shared_memory` gives every caller in a process (the graph nodes above all) one shared
instance per location, refreshed when another writer committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from memalign_graph.backends.base import LedgerEntry, MemoryBackend, PrinciplesCheckpoint, principle_digest
from memalign_graph.backends.location import backend_for, location_key
from memalign_graph.calibration import CalibrationHead
from memalign_graph.distill import estimate_tokens
from memalign_graph.embeddings import embeddings_name, embeddings_named, offline_embeddings_spec, resolve_embeddings
from memalign_graph.episodic import Episode, EpisodicMemory
from memalign_graph.errors import CalibrationHeadError, MemoryFormatError
from memalign_graph.governance import pending
from memalign_graph.memory_head import StoredVectors, Verdict, check_head, fit_memory_head, held_records
from memalign_graph.semantic import Principle, PrincipleVectors, SemanticMemory, now_iso
from memalign_graph.spec import CalibrationMode, JudgeSpec, check_mode, embedding_text


def embeddings_for(backend: MemoryBackend, embeddings: str | Embeddings | None) -> Embeddings:
    """The embeddings to open the memory in ``backend`` with.

    Those named (``embeddings``, else ``MEMALIGN_EMBEDDINGS``) if any: the memory refuses
    them if it was embedded with others. With none named, those the memory was created
    with, rebuilt from the name it stores (:func:`memalign_graph.embeddings.offline_embeddings_spec`):
    a memory created with e5 before MiniLM int8 became the default keeps opening with e5. Hosted
    or custom embeddings cannot be rebuilt from a name: for them the default is returned, which
    the memory refuses unless the names match.

    Raises:
        MemoryFormatError: if nothing (valid) is stored there.
        MissingDependencyError: (an ``ImportError``) naming the extra to install, if the
            embeddings need one that is missing.
    """
    if embeddings_named(embeddings):
        return resolve_embeddings(embeddings)
    return resolve_embeddings(offline_embeddings_spec(backend.embeddings_info().get("name")))


class VersionedMemory:
    """One judge's definition, principles and episodes at the latest committed version of a backend.

    What judging (:mod:`memalign_graph.working_memory`), alignment (:mod:`memalign_graph.alignment`),
    the lifecycle (:mod:`memalign_graph.lifecycle`) and the graph nodes work on; users hold it
    through :class:`~memalign_graph.memory.Memory`. Create with :meth:`create` or :meth:`open`.

    Attributes:
        spec: the judge definition.
        backend: where memory is persisted.
        embeddings: the embeddings of episodes and principles.
        semantic: the principles of the loaded version (:class:`SemanticMemory`).
        episodes: the episodes of the loaded version (:class:`EpisodicMemory`).
        checkpoint: the loaded version's record (principles, ledger, proposals, policy, author, reason).
    """

    def __init__(self, backend: MemoryBackend, embeddings: Embeddings) -> None:
        self.backend = backend
        self.embeddings = embeddings
        self.principle_vectors = PrincipleVectors(embeddings)
        self._stored_vectors: set[str] = set()  # digests of the principle vectors the backend holds
        self._write_lock = threading.Lock()
        self._calibration_lock = threading.Lock()
        self._calibration: tuple[int, CalibrationHead | None] | None = None  # (version, head) once read or fitted
        self._load()

    @classmethod
    def create(
        cls, location: str | Path | MemoryBackend, spec: JudgeSpec, *, embeddings: str | Embeddings | None = None
    ) -> VersionedMemory:
        """Create an empty memory for ``spec`` and open it (see :meth:`memalign_graph.memory.Memory.create`).

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
    def open(
        cls, location: str | Path | MemoryBackend, *, embeddings: str | Embeddings | None = None
    ) -> VersionedMemory:
        """Open an existing memory (see :meth:`memalign_graph.memory.Memory.open`).

        Raises:
            MemoryFormatError: if there is no valid memory there, or it was embedded
                with other embeddings than those named, or with embeddings that must be named.
            MissingDependencyError: (an ``ImportError``) naming the extra to install, if the
                embeddings or the backend need one that is missing.
        """
        backend = backend_for(location)
        return cls(backend, embeddings_for(backend, embeddings))

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
        self.spec = spec
        self._dim = loaded.embeddings_info.get("dim")
        self._publish(loaded.checkpoint, EpisodicMemory(loaded.vectorstore, self.embeddings))
        self._seed_principle_vectors(self._dim)

    def _publish(
        self,
        checkpoint: PrinciplesCheckpoint,
        episodes: EpisodicMemory,
        calibration: tuple[int, CalibrationHead | None] | None = None,
    ) -> None:
        """Make a committed (or freshly loaded) version the one readers see.

        Readers in other threads hold no lock: they take ``episodes``, ``semantic`` and
        ``checkpoint`` as they find them. Each is replaced whole, never changed in place (writers
        change a draft, see :meth:`EpisodicMemory.draft`), so a reader sees a complete, committed store.
        ``calibration``: the version's ``(version, head)`` when the writer fitted it (else read lazily).
        """
        self.semantic = SemanticMemory(checkpoint["principles"], self.principle_vectors, estimate_tokens)
        self.episodes = episodes
        self.checkpoint: PrinciplesCheckpoint = checkpoint
        self._calibration = calibration

    def _seed_principle_vectors(self, dim: Any) -> None:
        """Take the principle vectors stored with the memory, so this process does not embed them again."""
        texts = [p["text"] for p in self.checkpoint["principles"] if p["text"] not in self.principle_vectors]
        if not texts:
            return
        stored = self.backend.load_principle_vectors()
        self._stored_vectors = set(stored)
        found = [(t, stored[principle_digest(t)]) for t in texts if principle_digest(t) in stored]
        found = [(t, v) for t, v in found if v.shape == (dim,)] if isinstance(dim, int) else found
        if found:
            self.principle_vectors.seed([t for t, _ in found], np.stack([v for _, v in found]))

    @property
    def version(self) -> int:
        """The loaded version number."""
        return int(self.checkpoint["version"])

    @property
    def principles(self) -> list[Principle]:
        """All principles at the loaded version (a new list)."""
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
        """The ledger: aligned record id -> ``{"hash", "distilled", …}`` (a new dict)."""
        return dict(self.checkpoint["records"])

    def calibration_head(self) -> CalibrationHead | None:
        """The calibration head of the loaded version, or ``None`` (a pairwise judge, no expert values).

        Read from the backend on first use (the head's data, a few KB: the training sample's field
        vectors are read only to refit) and kept for the version. A stored head that is absent,
        unreadable, fails validation, does not fit this judge, or belongs to another version is
        refitted and, if this process holds no writer lock, stored for the version (under the
        writer locks, and only if the version is still current). From a stored head nothing is
        trusted as it is: its gate is recomputed from its evidence.

        Raises:
            CalibrationHeadError: if a refit is needed and a sampled episode cannot be featurised
                (e.g. the embeddings failed).
        """
        checkpoint, episodes = self.checkpoint, self.episodes  # one version, whatever a writer publishes meanwhile
        version = int(checkpoint["version"])
        state = self._calibration
        if state is not None and state[0] == version:
            return state[1]
        with self._calibration_lock:
            state = self._calibration
            if state is not None and state[0] == version:
                return state[1]
            found, head = self._stored_head(version)
            if not found:
                verdicts = self._verdicts(checkpoint, episodes)
                head, vectors = self._fit_head(verdicts, episodes)
                if verdicts:
                    self._store_fitted(version, head, vectors)
            if self.checkpoint is checkpoint:
                self._calibration = (version, head)
            return head

    def calibration_loaded(self) -> bool:
        """Whether :meth:`calibration_head` answers from this process's memory (no backend read, no fit)."""
        state = self._calibration
        return state is not None and state[0] == self.version

    def calibration_report(self) -> dict[str, Any]:
        """What the calibration head of the loaded version is, and why it decides or not (JSON-like).

        Returns:
            ``{"version", "mode", "groups", "head": memory_head.report(head) or None, "episodes_with_values",
            "held_records", "model_judgments"}``: the judge's stored mode and feature groups; the
            episodes with an expert value, the ones governance holds out of training, and how many
            carry the model's own recorded judgment (the gate's evidence about the model).

        Raises:
            CalibrationHeadError: as :meth:`calibration_head`.
        """
        from memalign_graph.memory_head import report

        checkpoint, episodes = self.checkpoint, self.episodes
        held = held_records(checkpoint.get("proposed") or [])
        everyone = episodes.verdicts()
        return {
            "version": int(checkpoint["version"]),
            "mode": self.spec.calibration,
            "groups": list(self.spec.calibration_groups),
            "head": report(self.calibration_head()),
            "episodes_with_values": len(everyone),
            "held_records": sorted(i for i, _, _ in everyone if i in held),
            "model_judgments": sum(m is not None for _, _, m in everyone),
        }

    def _verdicts(self, checkpoint: PrinciplesCheckpoint, episodes: EpisodicMemory) -> list[Verdict]:
        """What a head of this version trains on: episodes with an expert value, less those governance holds."""
        if self.spec.kind == "pairwise":
            return []
        held = held_records(checkpoint.get("proposed") or [])
        return [Verdict(*row) for row in episodes.verdicts(held)]

    def _fit_head(
        self, verdicts: list[Verdict], episodes: EpisodicMemory
    ) -> tuple[CalibrationHead | None, StoredVectors]:
        return fit_memory_head(
            self.spec,
            verdicts,
            episodes.get,
            self.embeddings,
            groups=self.spec.calibration_groups,
            stored=self.backend.load_calibration_vectors() if verdicts else None,
        )

    def _stored_head(self, version: int) -> tuple[bool, CalibrationHead | None]:
        """``(found, head)``: the stored head if it is the one of ``version`` and valid for this judge."""
        stored = self.backend.load_calibration()
        if not isinstance(stored, dict) or stored.get("version") != version:
            return False, None
        if stored.get("head") is None:
            return True, None
        try:
            head = CalibrationHead.from_dict(stored["head"], self.spec.values)
            check_head(head, self.spec, self.spec.calibration_groups, self._dim)
        except CalibrationHeadError as exc:
            said = f"{self.backend.location}: stored calibration head refused ({exc}); refitting"
            warnings.warn(said, RuntimeWarning, stacklevel=3)
            return False, None
        return True, head

    def _store_fitted(self, version: int, head: CalibrationHead | None, vectors: StoredVectors) -> None:
        """Store a head fitted outside a commit, under the writer locks, if ``version`` is still current.

        Skipped while a writer of this process holds its lock (it stores its own version's head).
        A cache: a failure is a warning.
        """
        if self._write_lock.locked():
            return
        try:
            with self._write_lock, self.backend.lock():
                if self.backend.current_version() == version:
                    self.backend.save_calibration(version, None if head is None else head.to_dict(), vectors)
        except Exception as exc:  # noqa: BLE001 - a cache: judging goes on with the head in this process
            warnings.warn(f"{self.backend.location}: calibration head not stored ({exc})", RuntimeWarning, stacklevel=3)

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
        """The principles for working memory within ``token_budget`` (see :meth:`SemanticMemory.select`).

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
        episodes = self.episodes
        return self.semantic.select(
            token_budget,
            lambda: episodes.query(embedding_text(case), handoff=handoff, hold=True),  # held only with a handoff
            support_weight=support_weight,
        )

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

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold this process's and the backend's writer locks, at the latest committed version, for a change."""
        with self._write_lock, self.backend.lock():
            self.refresh()
            yield

    @contextlib.asynccontextmanager
    async def awriting(self) -> AsyncIterator[None]:
        """Async :meth:`writing`: the locks are waited for in worker threads, never on the event loop."""
        lock = self.backend.lock()
        await asyncio.to_thread(self._write_lock.acquire)
        try:
            await asyncio.to_thread(lock.__enter__)
            try:
                await asyncio.to_thread(self.refresh)
                yield
            finally:
                await asyncio.to_thread(lock.__exit__, None, None, None)
        finally:
            self._write_lock.release()

    def commit(
        self,
        principles: list[Principle],
        records: dict[str, LedgerEntry],
        *,
        author: str,
        reason: str,
        episodes_changed: bool,
        episodes: EpisodicMemory | None = None,
        new_episodes: list[Episode] | None = None,
        proposed: list[Principle] | None = None,
        policy: str | None = None,
        details: dict[str, Any] | None = None,
        embed_all: bool = False,
    ) -> int:
        """Commit the next version, publish it to readers and store its principles' vectors; call under :meth:`writing`.

        Args:
            principles: the new version's principles in working memory.
            records: its ledger.
            author: who made the change.
            reason: one line on why.
            episodes_changed: whether ``episodes`` differs from the committed episodic memory.
            episodes: the changed draft of the episodic memory (:meth:`EpisodicMemory.draft`);
                ``None`` when episodes did not change.
            new_episodes: episodes added or replaced in the draft (a backend may write only these).
            proposed: pending and rejected proposals (``None``: the current ones).
            policy: the principles policy (``None``: the current one).
            details: more fields for the version's record (an alignment's ``usage`` and ``prompt_version``).
            embed_all: embed every principle not embedded yet before storing the vectors (else at
                most one batch of them; the rest are embedded when a judgment needs them).

        Returns:
            The new version number.

        Raises:
            RuntimeError: if another writer committed since this version was loaded (nothing is written).
            MemoryWriteError: if the backend could not write; the memory then reloads what is committed.
        """
        episodes = self.episodes if episodes is None else episodes  # an empty draft is falsy (len 0)
        checkpoint = PrinciplesCheckpoint(
            version=self.version + 1,
            created_at=now_iso(),
            author=author,
            reason=reason,
            principles=principles,
            records=records,
            **(details or {}),  # type: ignore[typeddict-item]
            **self._governance(proposed, policy),  # type: ignore[typeddict-item]
        )
        calibration = self._calibrate(checkpoint, episodes, episodes_changed)
        try:
            version = self.backend.commit(
                checkpoint,
                episodes.vectorstore,
                embeddings_changed=episodes_changed,
                new_episodes=list(new_episodes or []),  # type: ignore[arg-type]
            )
        except BaseException:
            self._load()  # the backend may have committed before failing: read what is current
            raise
        self._publish(checkpoint, episodes, None if calibration is None else (version, calibration[0]))
        self._persist_principle_vectors(None if embed_all else self.principle_vectors.batch_size)
        self._persist_calibration(version, calibration)
        return version

    def _calibrate(
        self, checkpoint: PrinciplesCheckpoint, episodes: EpisodicMemory, episodes_changed: bool
    ) -> tuple[CalibrationHead | None, StoredVectors | None] | None:
        """The head of the version about to be committed, and its sample's vectors (``None``: unchanged).

        Refitted on the draft when the training episodes change: episodes changed, or governance
        holds other records (a decision approved or rejected a proposal, a forget dropped a source).
        Otherwise the current head carries over. ``None`` if fitting failed (warned; the cache is
        then cleared after the commit, and the head is refitted on first use), and for a judge whose
        own setting is ``calibration="off"``: its commits fit nothing (a judgment that asks for the
        head with ``calibration="on"`` fits it then).
        """
        if self.spec.calibration == "off":
            return None
        same_holds = held_records(checkpoint.get("proposed") or []) == held_records(self.proposed_principles)
        try:
            if not episodes_changed and same_holds:
                state = self._calibration
                if state is not None and state[0] == self.version:
                    return state[1], None
                found, head = self._stored_head(self.version)
                if found:
                    return head, None
            return self._fit_head(self._verdicts(checkpoint, episodes), episodes)
        except Exception as exc:  # noqa: BLE001 - derived data: the commit goes on, the head is refitted on use
            warnings.warn(
                f"{self.backend.location}: calibration head not fitted ({exc}); it is refitted on first use",
                RuntimeWarning,
                stacklevel=4,
            )
            return None

    def _persist_calibration(
        self, version: int, calibration: tuple[CalibrationHead | None, StoredVectors | None] | None
    ) -> None:
        """Store the committed version's head as the only one kept (a failed fit clears it); a failure is a warning."""
        try:
            if calibration is None:
                self.backend.save_calibration(-1, None, {})  # no head trained on what this version dropped
            else:
                head, vectors = calibration
                self.backend.save_calibration(version, None if head is None else head.to_dict(), vectors)
        except Exception as exc:  # noqa: BLE001 - a cache; the commit is done
            warnings.warn(
                f"{self.backend.location}: calibration head not stored ({exc}); it is refitted on first use",
                RuntimeWarning,
                stacklevel=3,
            )

    def _governance(self, proposed: list[Principle] | None, policy: str | None) -> dict[str, Any]:
        """The governance fields a new checkpoint carries: the policy, and the proposals (current ones by default)."""
        out: dict[str, Any] = {}
        policy = policy or self.checkpoint.get("principles_policy")
        if policy:
            out["principles_policy"] = policy
        proposed = self.proposed_principles if proposed is None else proposed
        if proposed or "proposed" in self.checkpoint:
            out["proposed"] = proposed
        return out

    def _persist_principle_vectors(self, embed_missing: int | None) -> None:
        """Store the current principles' vectors with the memory (and only theirs), after a commit.

        Args:
            embed_missing: embed up to this many principles not embedded yet first (``None``: all).

        A cache: a failure is reported as a warning, never raised (the commit stands).
        """
        texts = list(dict.fromkeys(p["text"] for p in self.checkpoint["principles"]))
        try:
            missing = [t for t in texts if t not in self.principle_vectors]
            if missing and (embed_missing is None or len(missing) <= embed_missing):
                self.principle_vectors(missing)
            kept, matrix = self.principle_vectors.known(texts)
            vectors = {principle_digest(t): matrix[i] for i, t in enumerate(kept)}
            if set(vectors) != self._stored_vectors:
                self.backend.save_principle_vectors(vectors)
                self._stored_vectors = set(vectors)
        except Exception as exc:  # noqa: BLE001 - a cache; the commit is done
            warnings.warn(
                f"{self.backend.location}: principle vectors not stored ({exc}); they will be embedded again",
                RuntimeWarning,
                stacklevel=3,
            )


_shared: dict[tuple[Any, int | None], VersionedMemory] = {}
_shared_lock = threading.Lock()


def shared_memory(
    location: str | Path | MemoryBackend, embeddings: str | Embeddings | None = None, *, refresh: bool = True
) -> VersionedMemory:
    """The process-wide shared memory for ``location``, refreshed if another writer committed.

    Graph nodes use it, so that judging does not reload memory on every call, yet sees
    every committed change.

    Args:
        location: see :func:`~memalign_graph.backends.location.backend_for`.
        embeddings: see :func:`memalign_graph.embeddings.resolve_embeddings`; ``None`` without
            ``MEMALIGN_EMBEDDINGS``: those the memory was created with (see :func:`embeddings_for`).
        refresh: check for a newer version (one small read; ``False`` for the later nodes of a
            judgment, which use the version its first node saw).

    Raises:
        MemoryFormatError: if there is no valid memory at ``location``, or it was embedded with
            other embeddings than those named.
    """
    emb = resolve_embeddings(embeddings) if embeddings_named(embeddings) else None
    key = (location_key(location), None if emb is None else id(emb))
    with _shared_lock:
        memory = _shared.get(key)
        if memory is None:
            backend = backend_for(location)
            memory = VersionedMemory(backend, emb if emb is not None else embeddings_for(backend, None))
            _shared[key] = memory
            return memory
    if refresh:
        with contextlib.suppress(MemoryFormatError):
            if not memory._write_lock.locked():
                memory.refresh()
    return memory


def calibration_mode(memory: VersionedMemory, mode: Any) -> CalibrationMode:
    """The calibration mode of a judgment: ``mode`` (a run's setting) if given, else the judge's own.

    Raises:
        ValueError: for a mode other than ``auto``/``off``/``on`` (from ``MEMALIGN_CALIBRATION`` too).
    """
    where = "calibration (Context.calibration, MEMALIGN_CALIBRATION)"
    return check_mode(memory.spec.calibration if mode is None else mode, where)


__all__ = ["VersionedMemory", "calibration_mode", "embeddings_for", "shared_memory"]
