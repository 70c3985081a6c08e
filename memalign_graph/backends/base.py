"""The storage interface every memory backend implements.

A backend persists three things for one judge: its definition, the principles
checkpoint (semantic memory plus the ledger of aligned records), and the
episodes' vector store. One call to :meth:`MemoryBackend.commit` makes a new
version visible atomically: readers see the old version or the new one, never
a mix. The file backend is the default; a server backend (PostgreSQL) plugs in
behind the same interface without touching the graph.

The commit's bookkeeping is said here once for every backend: a change prepared
from an older version is refused (:func:`refuse_moved`, :class:`LostUpdateError`),
and a write that fails becomes a :class:`~memalign_graph.errors.MemoryWriteError`
naming the version that is current (:meth:`MemoryBackend.commit`); a backend
writes the version itself (:meth:`MemoryBackend.write_version`).
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NoReturn, NotRequired, TypedDict

from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from memalign_graph.errors import MemoryFormatError, MemoryWriteError
from memalign_graph.semantic import Principle, drop_sources, now_iso

FORMAT_VERSION = 1


def principle_digest(text: str) -> str:
    """The key a principle's stored vector is found by: SHA-256 of its text, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LedgerEntry(TypedDict):
    """What memory knows of one aligned feedback record.

    Attributes:
        hash: :func:`memalign_graph.spec.record_hash` of the record when aligned.
        distilled: whether its distillation succeeded (``False``: retried by the next alignment).
        salient: whether it was sent to distillation at all.
        author: who aligned it (the version's author); absent in memories older than this field.
        via: ``"align"`` (feedback aligned directly) or ``"review"`` (an expert's answer in
            the review graph). A review replaces only a record that the same reviewer made
            through a review (see :func:`memalign_graph.review.review_record_id`).
    """

    hash: str
    distilled: bool
    salient: NotRequired[bool]
    author: NotRequired[str]
    via: NotRequired[str]


class PrinciplesCheckpoint(TypedDict):
    """One version of semantic memory, with the ledger of aligned records.

    Attributes:
        version: 1, 2, ...; each commit adds one.
        created_at: ISO-8601 UTC.
        author: who made the change.
        reason: one line on why.
        principles: the principles at this version.
        records: record id -> ledger entry.
        usage: tokens spent by the alignment that made this version.
        principles_policy: ``"auto"`` (absent: the default) or ``"review"``; see
            :mod:`memalign_graph.governance`.
        proposed: distilled principles held for an expert, with ``status`` ``"pending"`` or
            ``"rejected"``; never in working memory.
    """

    version: int
    created_at: str
    author: str
    reason: str
    principles: list[Principle]
    records: dict[str, LedgerEntry]
    usage: NotRequired[dict[str, int]]
    principles_policy: NotRequired[str]
    proposed: NotRequired[list[Principle]]


def initial_checkpoint() -> PrinciplesCheckpoint:
    """The principles checkpoint of a new, empty memory: version 0, by ``memalign init``."""
    return PrinciplesCheckpoint(
        version=0, created_at=now_iso(), author="memalign init", reason="created", principles=[], records={}
    )


@dataclass
class LoadedMemory:
    """What :meth:`MemoryBackend.load` returns."""

    spec: dict[str, Any]
    checkpoint: PrinciplesCheckpoint
    vectorstore: VectorStore
    embeddings_info: dict[str, Any]


def purge_checkpoint(
    checkpoint: dict[str, Any], record_ids: set[str], previous: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """``checkpoint`` with these records erased from its ledger, principles and reason, or ``None`` if it has none.

    The reason loses the ids (see :func:`scrub_ids`). Principles and proposals (``proposed``)
    lose the ids from their sources and from their history (see
    :func:`memalign_graph.semantic.drop_sources`); those left with no source are dropped
    (hand-written ones have none to lose), and a principle a dropped one had superseded
    comes back. Given ``previous`` (the ledger of the version before), a version whose every
    added or changed record is forgotten (it aligned nothing else: one expert's review or
    batch) loses its author and reason too (:data:`FORGOTTEN_AUTHOR`,
    :data:`FORGOTTEN_REASON`): they would still say who gave the forgotten feedback, and when.
    The input is not modified.
    """
    ledger = {k: v for k, v in checkpoint["records"].items() if k not in record_ids}
    principles, _ = drop_sources(checkpoint["principles"], record_ids)
    proposed, _ = drop_sources(checkpoint.get("proposed") or [], record_ids)
    reason, author = checkpoint.get("reason"), checkpoint.get("author")
    if isinstance(reason, str):  # e.g. "review of ID: correct" (the review graph's reason)
        reason = scrub_ids(reason, record_ids)
    if previous is not None:
        gained = {
            rid
            for rid, entry in checkpoint["records"].items()
            if (previous.get(rid) or {}).get("hash") != entry["hash"]
        }
        if gained and gained <= record_ids:
            author, reason = FORGOTTEN_AUTHOR, FORGOTTEN_REASON
    if (
        ledger == checkpoint["records"]
        and principles == checkpoint["principles"]
        and proposed == (checkpoint.get("proposed") or [])
        and reason == checkpoint.get("reason")
        and author == checkpoint.get("author")
    ):
        return None
    out = {**checkpoint, "records": ledger, "principles": principles, "reason": reason}
    if "author" in checkpoint:
        out["author"] = author
    if "proposed" in checkpoint:
        out["proposed"] = proposed
    return out


def purge_versions(checkpoints: Iterable[dict[str, Any]], record_ids: set[str]) -> Iterator[dict[str, Any] | None]:
    """:func:`purge_checkpoint` of each of ``checkpoints`` (oldest first), each given the ledger of the one before."""
    previous: Mapping[str, Any] = {}
    for checkpoint in checkpoints:
        yield purge_checkpoint(checkpoint, record_ids, previous)
        previous = checkpoint["records"]


class LostUpdateError(RuntimeError):
    """A change was prepared from a version that is no longer the committed one; nothing was committed."""


def refuse_moved(subject: str, current: int, version: int) -> None:
    """Refuse to commit ``version`` unless it follows the committed version ``current`` (a lost update).

    Args:
        subject: what moved, as messages name it (e.g. ``"postgresql://…: judge 'sql'"``).
        current: the committed version, read under the writer lock or in the commit's transaction.
        version: the version about to be written.

    Raises:
        LostUpdateError: (a ``RuntimeError``) naming both versions, if ``version != current + 1``.
    """
    if version != current + 1:
        raise LostUpdateError(
            f"{subject} moved to version {current} while this change was prepared from version {version - 1}; "
            "reload and retry"
        )


FORGOTTEN = "[forgotten record]"
"""What a forgotten record's id becomes in a version's reason."""
FORGOTTEN_AUTHOR = "[forgotten]"
"""The author of a version that only aligned records since forgotten."""
FORGOTTEN_REASON = "aligned records since forgotten"
"""The reason of such a version."""


def scrub_ids(text: str, record_ids: set[str]) -> str:
    """``text`` with every whole occurrence of these record ids replaced by :data:`FORGOTTEN`.

    An occurrence is whole when no letter, digit, ``_``, ``-`` or ``.`` touches it on
    either side: ``"review of rv-secret: correct"`` loses ``rv-secret``, while a
    forgotten id ``a`` leaves ``"aligned 1 new"`` alone. Longer ids are replaced first.
    """
    for rid in sorted((i for i in record_ids if i and i in text), key=len, reverse=True):
        text = re.sub(rf"(?<![\w.-]){re.escape(rid)}(?![\w.-])", FORGOTTEN, text)
    return text


class _Unembedded(Embeddings):
    """Stands in for embeddings where a backend loads a memory only to read what it stores."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:  # noqa: D102
        raise RuntimeError("no embeddings: this memory was loaded only to read its embeddings info")

    def embed_query(self, text: str) -> list[float]:  # noqa: D102
        raise RuntimeError("no embeddings: this memory was loaded only to read its embeddings info")


class MemoryBackend(ABC):
    """Persistence for one judge's memory (see the module docstring).

    Implementations must make :meth:`commit` atomic and must not execute code
    found in stored data (no pickle).
    """

    location: str
    judge: str | None = None
    """The judge's name where one location (a database, a store) holds several; ``None`` for a directory."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether a judge's memory is stored here."""

    @abstractmethod
    def create(self, spec: dict[str, Any], embeddings: Embeddings, embeddings_info: dict[str, Any]) -> None:
        """Store a new, empty memory for the judge ``spec`` (version 0).

        Raises:
            FileExistsError: if a memory is already stored here.
        """

    @abstractmethod
    def load(self, embeddings: Embeddings) -> LoadedMemory:
        """Load the current version.

        Raises:
            MemoryFormatError: if nothing (valid) is stored here or it needs a newer format.
        """

    def embeddings_info(self) -> dict[str, Any]:
        """The stored ``{"name", "dim"}`` of the embeddings the memory was created with.

        Read before the memory is opened, to open it with those embeddings when none are named.
        This default loads the whole memory; backends override it with a small read.

        Raises:
            MemoryFormatError: if nothing (valid) is stored here or it needs a newer format.
        """
        return dict(self.load(_Unembedded()).embeddings_info)

    @abstractmethod
    def current_version(self) -> int:
        """The committed version number, read cheaply (used to refresh caches)."""

    write_errors: tuple[type[Exception], ...] = (Exception,)
    """What a failed write raises (a lost connection, a full disk...): turned into ``MemoryWriteError``."""

    @property
    def subject(self) -> str:
        """This memory as error messages name it: its location, and its judge where the location holds several."""
        return self.location if self.judge is None else f"{self.location}: judge {self.judge!r}"

    def commit(
        self,
        checkpoint: PrinciplesCheckpoint,
        vectorstore: VectorStore | None,
        *,
        embeddings_changed: bool,
        new_episodes: list[dict[str, Any]] | None = None,
    ) -> int:
        """Atomically make ``checkpoint`` (and ``vectorstore`` if episodes changed) the current version.

        Args:
            checkpoint: the new principles checkpoint; its ``version`` must be current + 1.
            vectorstore: the episodes' store, saved only when ``embeddings_changed``.
            embeddings_changed: whether episodes were added, replaced or deleted.
            new_episodes: episodes added or replaced by this version, kept in the
                episode history so a later rollback can restore them.

        Returns:
            The new version number.

        Raises:
            LostUpdateError: (a ``RuntimeError``) if another writer committed in the meantime (lost update refused).
            MemoryWriteError: if a write failed (:attr:`write_errors`); names the version now current.
            MemoryFormatError: if what is stored cannot be read.
        """
        version = int(checkpoint["version"])
        try:
            self.write_version(checkpoint, vectorstore, embeddings_changed, new_episodes or [])
        except (LostUpdateError, MemoryFormatError):
            raise
        except self.write_errors as exc:
            self.write_failed(exc, version - 1, version)
        return version

    @abstractmethod
    def write_version(
        self,
        checkpoint: PrinciplesCheckpoint,
        vectorstore: VectorStore | None,
        embeddings_changed: bool,
        new_episodes: list[dict[str, Any]],
    ) -> None:
        """Write version ``checkpoint["version"]`` so that it becomes current at once (see :meth:`commit`).

        Raises:
            LostUpdateError: through :func:`refuse_moved`, checked where no other writer can commit meanwhile.
        """

    def write_failed(self, exc: Exception, before: int, version: int) -> NoReturn:
        """Turn a failed write of ``version`` into an error that names the version current now.

        Args:
            exc: what the write raised.
            before: the version the commit started from.
            version: the version it tried to write.

        Raises:
            MemoryWriteError: always; its ``version`` is the current one (``None`` when it could not be read).
        """
        reason = getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__
        try:
            now: int | None = self.current_version()
        except Exception:  # noqa: BLE001 - the store may be gone: say so below
            now = None
        if now == before:
            raise MemoryWriteError(
                f"{self.subject}: could not write version {version} ({reason}); memory unchanged at version {before}",
                version=before,
            ) from exc
        raise MemoryWriteError(
            f"{self.subject}: writing version {version} failed ({reason}); "
            + (f"the current version is {now}" if now is not None else "the current version could not be read"),
            version=now,
        ) from exc

    @abstractmethod
    def versions(self) -> list[dict[str, Any]]:
        """Every stored principles checkpoint, oldest first.

        Each is ``{"version", "created_at", "author", "reason", "principles", "records"}``.
        """

    @abstractmethod
    def checkpoint(self, version: int) -> PrinciplesCheckpoint:
        """The principles checkpoint of one committed version.

        Raises:
            KeyError: if that version does not exist.
        """

    @abstractmethod
    def episode_history(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """Episodes from the history, by ``(record id, record hash)``; pairs not found are absent."""

    @abstractmethod
    def purge(self, record_ids: set[str]) -> None:
        """Erase every trace of these records from history and caches (privacy deletion).

        Called after a commit that removed them from the current version: removes
        them from every stored version's ledger and principles' sources (dropping
        principles left with no source), from the episode history, from older
        index snapshots, from cached review threads, and their field vectors from
        the calibration cache (the commit's refit already dropped them, unless it failed).
        """

    @abstractmethod
    def lock(self) -> AbstractContextManager[None]:
        """Exclusive writer lock across processes, held for a whole read-modify-commit."""

    def load_principle_vectors(self) -> dict[str, Any]:
        """Principle vectors stored with this memory: ``principle_digest(text)`` -> unit vector (float32 array).

        A cache: empty when none are stored or they cannot be read (principles are then embedded again).
        """
        return {}

    def save_principle_vectors(self, vectors: dict[str, Any]) -> None:
        """Replace the stored principle vectors with ``vectors`` (digest -> unit vector, all of one length).

        Call with the writer lock held, after a commit, with the vectors of the current principles
        only, so that nothing of a removed principle stays behind. Backends that keep no vectors
        ignore it.
        """
        return None

    def load_calibration(self) -> dict[str, Any] | None:
        """The stored calibration head: ``{"version": int, "head": dict | None}`` (one small read).

        A cache of the version it names (see :mod:`memalign_graph.calibration`): ``None`` when none is
        stored or it cannot be read, and the caller refits. ``head`` is
        :meth:`~memalign_graph.calibration.CalibrationHead.to_dict`'s data, unvalidated here.
        """
        return None

    def load_calibration_vectors(self) -> dict[tuple[str, str], tuple[str, Any]]:
        """The field vectors of the stored head's training sample: ``(group, episode id) -> (text digest, vector)``.

        A cache: empty when none are stored or they cannot be read (the fields are then embedded again).
        """
        return {}

    def save_calibration(
        self, version: int, head: dict[str, Any] | None, vectors: dict[tuple[str, str], tuple[str, Any]] | None
    ) -> None:
        """Replace the stored calibration head with the one of ``version`` (only the current one is ever kept).

        Call with the writer lock held, after the commit of ``version``, so nothing of an older
        version (a forgotten record's vector, a head fitted on it) stays behind.

        Args:
            version: the committed version the head belongs to.
            head: its data (``None``: the version has no head).
            vectors: its sample's field vectors, all of one length (``None``: keep the stored ones,
                for a version whose training episodes did not change).
        """
        return None

    def review_thread_id(self, record_id: str) -> str:
        """The LangGraph thread id under which ``memalign review`` keeps one case's review."""
        return f"review:{record_id}"

    def review_checkpointer(self) -> AbstractContextManager[Any]:
        """A LangGraph checkpointer for review threads, stored with this memory (a context manager).

        Raises:
            NotImplementedError: if this backend keeps no review threads.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no review threads")
