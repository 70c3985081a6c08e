"""File backend: a judge's memory in a local directory (the default).

Layout of ``DIR``::

    memalign.json            manifest: format, judge, embeddings, current version (the commit point)
    principles/v000003.json  one principles checkpoint per version (all versions kept), with the ledger
    episodes/e000003/        FAISS index (index.faiss) and episodes as JSON lines (episodes.jsonl); the current
                             snapshot and the one before it are kept
    episodes/log/v000003.jsonl  episodes added or replaced by version 3 (history, for rollback)
    principle_vectors.npz    unit vectors of the current principles by text digest (a cache: principles are not
                             embedded again by every process; rewritten after each commit)
    review-checkpoints.sqlite   LangGraph checkpoints of `memalign review` (a cache; purged on forget)
    .lock                    writer lock (fcntl)

Every file is written to a temporary name, flushed to disk and renamed; the
manifest is replaced last, so a crash at any point leaves the previous version
current; the next writer to take the lock deletes what the crashed commit left
(temp files, and the files of the version it did not commit). Loading never
unpickles: the FAISS index is read with ``faiss.read_index`` and the episodes
from JSON (LangChain's ``FAISS.load_local`` would unpickle the docstore, which
can execute code).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from memalign_graph.backends.base import (
    FORMAT_VERSION,
    LoadedMemory,
    MemoryBackend,
    PrinciplesCheckpoint,
    purge_checkpoint,
)
from memalign_graph.errors import MemoryFormatError
from memalign_graph.spec import case_text

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.docstore.in_memory import InMemoryDocstore
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy

MANIFEST = "memalign.json"
PRINCIPLE_VECTORS = "principle_vectors.npz"


def _single_threaded_search() -> None:
    """One judgment searches one vector: OpenMP threads only add start-up and contend with the embedder.

    Measured here: k=5 over 100 000 vectors, 14 ms with 2 threads, 6 ms with 1.
    """
    import faiss

    faiss.omp_set_num_threads(1)


def new_faiss(embeddings: Embeddings, dim: int) -> FAISS:
    """An empty FAISS store scored by inner product (cosine: :class:`EpisodicMemory` stores unit vectors)."""
    import faiss

    _single_threaded_search()
    return FAISS(
        embedding_function=embeddings,
        index=faiss.IndexFlatIP(dim),
        docstore=CompactDocstore(),
        index_to_docstore_id={},
        normalize_L2=False,
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
    )


class CompactDocstore(InMemoryDocstore):
    """Episodes kept as their JSON text, decoded only when retrieved.

    A docstore for LangChain's ``FAISS`` that holds one string per episode
    instead of a ``Document`` with nested dicts: about a fifth of the memory at
    100 000 episodes, and loading needs no JSON decoding of every episode. The
    document text (the case) is rebuilt from the episode on retrieval.

    File form (``episodes.jsonl``): one line per episode in index order,
    ``JSON(id) TAB JSON(episode)``.
    """

    def __init__(self, raw: dict[str, str] | None = None, order: list[str] | None = None) -> None:
        super().__init__({})
        self.raw: dict[str, str] = raw or {}
        self.order: list[str] = order or list(self.raw)

    @classmethod
    def read(cls, path: Path) -> CompactDocstore:
        """Load ``episodes.jsonl``.

        Raises:
            ValueError: for a line that is not ``JSON(id) TAB JSON``.
        """
        raw: dict[str, str] = {}
        order: list[str] = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                key, sep, episode = line.rstrip("\n").partition("\t")
                if not sep:
                    raise ValueError(f"{path}:{lineno}: not an episode line")
                episode_id = json.loads(key)
                raw[episode_id] = episode
                order.append(episode_id)
        return cls(raw, order)

    def add(self, texts: dict[str, Document]) -> None:  # noqa: D102
        overlapping = set(texts) & set(self.raw)
        if overlapping:
            raise ValueError(f"Tried to add ids that already exist: {overlapping}")
        for episode_id, doc in texts.items():
            self.raw[episode_id] = json.dumps(doc.metadata["episode"], ensure_ascii=False)

    def delete(self, ids: list) -> None:  # noqa: D102
        if not set(ids) & set(self.raw):
            raise ValueError(f"Tried to delete ids that do not exist: {ids}")
        for episode_id in ids:
            self.raw.pop(episode_id, None)

    def search(self, search: str) -> Document | str:  # noqa: D102
        text = self.raw.get(search)
        if text is None:
            return f"ID {search} not found."
        episode = json.loads(text)
        return Document(id=search, page_content=case_text(episode), metadata={"episode": episode})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (see :func:`atomic_write_text`)."""
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1))


class FileBackend(MemoryBackend):
    """Memory in a local directory (see the module docstring for the layout).

    Args:
        path: the memory directory; created by :meth:`create`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.location = str(self.path)
        self._version_seen: tuple[tuple[int, int, int], int] | None = None

    def exists(self) -> bool:  # noqa: D102
        return (self.path / MANIFEST).is_file()

    def _manifest(self) -> dict[str, Any]:
        """The manifest, checked: a memalign-graph manifest of a format this version reads, fields well-formed.

        Raises:
            MemoryFormatError: naming the directory or the manifest file and what is wrong.
        """
        file = self.path / MANIFEST
        try:
            if not self.path.is_dir():
                raise MemoryFormatError(f"{self.path}: no such memory directory (create it with `memalign init`)")
            if not file.is_file():
                raise MemoryFormatError(f"{self.path}: not a memalign memory directory ({MANIFEST} is missing)")
            manifest = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:  # e.g. a directory without read permission
            raise MemoryFormatError(f"{file}: cannot read the manifest ({exc.strerror or exc})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MemoryFormatError(f"{file}: unreadable manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != "memalign-graph":
            raise MemoryFormatError(f"{file}: not a memalign-graph manifest")
        version = manifest.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise MemoryFormatError(f"{file}: 'format_version' must be an integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise MemoryFormatError(
                f"{file}: written by a newer memalign-graph (format {version}, "
                f"this one reads {FORMAT_VERSION}); upgrade memalign-graph"
            )
        problems = [
            key
            for key, ok in (
                ("version", isinstance(manifest.get("version"), int) and manifest["version"] >= 0),
                ("judge", isinstance(manifest.get("judge"), dict)),
                ("embeddings", isinstance(manifest.get("embeddings"), dict)),
                ("principles", re.fullmatch(r"principles/v\d{6,}\.json", str(manifest.get("principles")))),
                ("episodes", re.fullmatch(r"episodes/e\d{6,}", str(manifest.get("episodes")))),
            )
            if not ok
        ]
        if problems:  # paths are checked too: a manifest must not point outside its directory
            raise MemoryFormatError(f"{file}: manifest field(s) {problems} missing or malformed")
        return manifest

    def create(self, spec: dict[str, Any], embeddings: Embeddings, embeddings_info: dict[str, Any]) -> None:  # noqa: D102
        if self.exists():
            raise FileExistsError(f"{self.path}: a memory already exists here")
        self.path.mkdir(parents=True, exist_ok=True)
        checkpoint = PrinciplesCheckpoint(
            version=0, created_at=_now(), author="memalign init", reason="created", principles=[], records={}
        )
        atomic_write_json(self.path / "principles" / "v000000.json", checkpoint)
        self._write_episodes(new_faiss(embeddings, int(embeddings_info["dim"])), 0)
        atomic_write_json(
            self.path / MANIFEST,
            {
                "format": "memalign-graph",
                "format_version": FORMAT_VERSION,
                "judge": spec,
                "embeddings": embeddings_info,
                "version": 0,
                "principles": "principles/v000000.json",
                "episodes": "episodes/e000000",
            },
        )

    def current_version(self) -> int:  # noqa: D102
        # Every judgment asks; the manifest is replaced by rename on each commit, so an unchanged
        # (inode, mtime, size) means an unchanged version and the file need not be read again.
        try:
            st = os.stat(self.path / MANIFEST)
        except OSError:
            return int(self._manifest()["version"])  # raises the precise error
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._version_seen is None or self._version_seen[0] != key:
            self._version_seen = (key, int(self._manifest()["version"]))
        return self._version_seen[1]

    def load(self, embeddings: Embeddings) -> LoadedMemory:  # noqa: D102
        import faiss

        _single_threaded_search()
        manifest = self._manifest()
        principles_file = self.path / manifest["principles"]
        episodes_dir = self.path / manifest["episodes"]
        checkpoint = _read_checkpoint(principles_file, manifest["version"])
        try:
            store = CompactDocstore.read(episodes_dir / "episodes.jsonl")
            index = faiss.read_index(str(episodes_dir / "index.faiss"))
        except (OSError, RuntimeError, UnicodeDecodeError, ValueError) as exc:
            raise MemoryFormatError(f"{self.path}: version {manifest['version']} is unreadable ({exc})") from None
        ids = store.order
        if index.ntotal != len(ids):
            raise MemoryFormatError(f"{episodes_dir}: index holds {index.ntotal} vectors but {len(ids)} episodes")
        dim = manifest["embeddings"].get("dim")
        if isinstance(dim, int) and index.d != dim:
            raise MemoryFormatError(f"{episodes_dir}: index vectors have {index.d} dimensions, the manifest says {dim}")
        vectorstore = FAISS(
            embedding_function=embeddings,
            index=index,
            docstore=store,
            index_to_docstore_id=dict(enumerate(ids)),
            normalize_L2=False,
            distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
        )
        return LoadedMemory(
            spec=manifest["judge"],
            checkpoint=checkpoint,
            vectorstore=vectorstore,
            embeddings_info=manifest["embeddings"],
        )

    def _write_episodes(self, vectorstore: VectorStore, version: int) -> str:
        import faiss

        assert isinstance(vectorstore, FAISS), "the file backend stores episodes in FAISS"
        root = self.path / "episodes"
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        mapping = vectorstore.index_to_docstore_id
        ids = [mapping[i] for i in range(len(mapping))]
        faiss.write_index(vectorstore.index, str(tmp / "index.faiss"))
        docstore = vectorstore.docstore
        assert isinstance(docstore, CompactDocstore), "the file backend keeps episodes in a CompactDocstore"
        with open(tmp / "episodes.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(f"{json.dumps(i, ensure_ascii=False)}\t{docstore.raw[i]}\n" for i in ids)
            fh.flush()
            os.fsync(fh.fileno())
        for name in ("index.faiss",):
            fd = os.open(tmp / name, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        name = f"e{version:06d}"
        target = root / name
        if target.exists():  # left by a crash after this step but before the manifest
            shutil.rmtree(target)
        os.rename(tmp, target)
        _fsync_dir(root)
        return f"episodes/{name}"

    def commit(  # noqa: D102
        self,
        checkpoint: PrinciplesCheckpoint,
        vectorstore: VectorStore | None,
        *,
        embeddings_changed: bool,
        new_episodes: list[dict[str, Any]] | None = None,
    ) -> int:
        manifest = self._manifest()
        version = int(checkpoint["version"])
        if version != manifest["version"] + 1:
            raise RuntimeError(
                f"{self.path}: memory moved to version {manifest['version']} while this change was prepared "
                f"from version {version - 1}; reload and retry"
            )
        principles_rel = f"principles/v{version:06d}.json"
        episodes_rel = manifest["episodes"]
        if new_episodes:
            atomic_write_text(
                self.path / "episodes" / "log" / f"v{version:06d}.jsonl",
                "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in new_episodes),
            )
        if embeddings_changed:
            assert vectorstore is not None
            episodes_rel = self._write_episodes(vectorstore, version)
        atomic_write_json(self.path / principles_rel, {**checkpoint, "episodes": episodes_rel})
        atomic_write_json(
            self.path / MANIFEST,
            {**manifest, "version": version, "principles": principles_rel, "episodes": episodes_rel},
        )
        self._collect_garbage(keep={episodes_rel, manifest["episodes"]})
        return version

    def load_principle_vectors(self) -> dict[str, Any]:  # noqa: D102
        import numpy as np

        file = self.path / PRINCIPLE_VECTORS
        try:
            with np.load(file, allow_pickle=False) as data:
                digests, vectors = data["digests"], data["vectors"]
        except (OSError, KeyError, ValueError, EOFError):  # absent or unreadable: a cache, embed again
            return {}
        if vectors.ndim != 2 or len(digests) != len(vectors) or vectors.dtype != np.float32:
            return {}
        return {str(d): v for d, v in zip(digests, vectors)}

    def save_principle_vectors(self, vectors: dict[str, Any]) -> None:  # noqa: D102
        import numpy as np

        file = self.path / PRINCIPLE_VECTORS
        if not vectors:
            file.unlink(missing_ok=True)
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    digests=np.asarray(list(vectors), dtype="U64"),
                    vectors=np.stack([np.asarray(v, dtype=np.float32) for v in vectors.values()]),
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, file)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path)

    def _collect_garbage(self, keep: set[str]) -> None:
        """Delete episode snapshots other than the current and the previous one, and stale temp dirs."""
        root = self.path / "episodes"
        for child in root.iterdir():
            rel = f"episodes/{child.name}"
            if rel in keep:
                continue
            if child.name.startswith(".tmp-") or re.fullmatch(r"e\d{6}", child.name):
                shutil.rmtree(child, ignore_errors=True)
        for child in self.path.glob("principles/.*.tmp"):
            child.unlink(missing_ok=True)

    def _recover(self) -> None:
        """Remove what a writer that died in the middle of a commit left behind; call with the writer lock held.

        A commit writes version N+1's episode log, index snapshot and principles
        checkpoint (each through a temp file or directory) before it replaces the
        manifest. A writer killed before that leaves files no version points to.
        They must go before the next writer commits its own version N+1: the dead
        writer's episode log would pass for that version's history (read by
        rollback), and the text of its uncommitted records would stay on disk where
        ``forget`` cannot reach it (they are in no version). Removed: every temp
        file and directory, and the log, snapshot and checkpoint of versions newer
        than the manifest's. A directory without a readable manifest is left alone.
        """
        try:
            manifest = self._manifest()
        except MemoryFormatError:
            return
        current = manifest["version"]
        for tmp in [*self.path.glob(f".{MANIFEST}.*.tmp"), *self.path.glob(f".{PRINCIPLE_VECTORS}.*.tmp")]:
            tmp.unlink(missing_ok=True)
        for folder, pattern in (
            (self.path / "principles", r"v(\d+)\.json"),
            (self.path / "episodes" / "log", r"v(\d+)\.jsonl"),
        ):
            for child in folder.glob("*") if folder.is_dir() else ():
                temp = child.name.startswith(".") and child.name.endswith(".tmp")
                if child.is_file() and (temp or _number(child.name, pattern, default=-1) > current):
                    child.unlink(missing_ok=True)
        root = self.path / "episodes"
        for child in root.iterdir() if root.is_dir() else ():
            if f"episodes/{child.name}" == manifest["episodes"] or not child.is_dir():
                continue
            if child.name.startswith(".tmp-") or _number(child.name, r"e(\d+)", default=-1) > current:
                shutil.rmtree(child, ignore_errors=True)

    def checkpoint(self, version: int) -> PrinciplesCheckpoint:  # noqa: D102
        if version > self.current_version():
            raise KeyError(f"{self.path}: no version {version} (current is {self.current_version()})")
        file = self.path / "principles" / f"v{version:06d}.json"
        if not file.is_file():
            raise KeyError(f"{self.path}: no version {version}")
        return _read_checkpoint(file, version)

    def episode_history(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:  # noqa: D102
        found: dict[tuple[str, str], dict[str, Any]] = {}
        current = self.current_version()
        for file in sorted((self.path / "episodes" / "log").glob("v*.jsonl"), reverse=True):
            if _number(file.name, r"v(\d+)\.jsonl", default=0) > current:
                continue  # written by a commit that never reached the manifest
            for line in file.read_text(encoding="utf-8").splitlines():
                episode = json.loads(line)
                key = (episode["id"], episode.get("record_hash", ""))
                if key in wanted and key not in found:
                    found[key] = episode
            if len(found) == len(wanted):
                break
        return found

    def purge(self, record_ids: set[str]) -> None:
        """Erase every trace of these records from history and caches (see :meth:`MemoryBackend.purge`).

        The principles checkpoints are cleaned last: their ledgers are what makes the ids
        known to ``Memory.forget``, so if the process dies half-way, forgetting the same
        ids again still finds them and finishes the job. Superseded principles kept in a
        principle's ``history`` lose the ids too (dropped when no source is left).
        """
        for file in sorted((self.path / "episodes" / "log").glob("v*.jsonl")):
            lines = file.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if json.loads(line)["id"] not in record_ids]
            if len(kept) != len(lines):
                if kept:
                    atomic_write_text(file, "".join(line + "\n" for line in kept))
                else:
                    file.unlink()
        self._collect_garbage(keep={self._manifest()["episodes"]})
        self._purge_review_threads(record_ids)
        for file in sorted((self.path / "principles").glob("v*.json")):
            cleaned = purge_checkpoint(json.loads(file.read_text(encoding="utf-8")), record_ids)
            if cleaned is not None:
                atomic_write_json(file, cleaned)

    def _purge_review_threads(self, record_ids: set[str]) -> None:
        """Delete `memalign review` threads of these records and VACUUM so their bytes are gone."""
        import sqlite3

        db = self.path / "review-checkpoints.sqlite"
        if not db.exists():
            return
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(db)
        try:
            saver = SqliteSaver(conn)
            for rid in record_ids:
                saver.delete_thread(f"review:{rid}")
            conn.commit()
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def versions(self) -> list[dict[str, Any]]:  # noqa: D102
        current = self.current_version()
        out = []
        for file in sorted((self.path / "principles").glob("v*.json")):
            version = _number(file.name, r"v(\d+)\.json", default=-1)
            if 0 <= version <= current:
                out.append(_read_checkpoint(file, version))
        return out

    @contextlib.contextmanager
    def review_checkpointer(self) -> Iterator[Any]:
        """LangGraph's ``SqliteSaver`` on ``DIR/review-checkpoints.sqlite`` (closed on exit)."""
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(self.path / "review-checkpoints.sqlite", check_same_thread=False)
        try:
            yield SqliteSaver(conn)
        finally:
            conn.close()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock (``fcntl.flock`` on ``DIR/.lock``), held for a whole read-modify-commit.

        The kernel releases it when its holder dies, even by SIGKILL. Whoever takes it
        first removes what a dead writer left behind (see :meth:`_recover`).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                self._recover()
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_checkpoint(file: Path, version: int) -> PrinciplesCheckpoint:
    """The principles checkpoint of ``version`` stored in ``file``, checked.

    Raises:
        MemoryFormatError: naming the file, if it is unreadable or not that version's checkpoint.
    """
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MemoryFormatError(f"{file}: unreadable principles checkpoint ({exc})") from None
    if not (
        isinstance(data, dict)
        and data.get("version") == version
        and isinstance(data.get("principles"), list)
        and isinstance(data.get("records"), dict)
    ):
        raise MemoryFormatError(f"{file}: not the principles checkpoint of version {version}")
    return data  # type: ignore[return-value]


def _number(name: str, pattern: str, *, default: int) -> int:
    """The version number in a file name matching ``pattern`` (one group of digits), else ``default``."""
    match = re.fullmatch(pattern, name)
    return int(match.group(1)) if match else default


def _now() -> str:
    from memalign_graph.semantic import now_iso

    return now_iso()
