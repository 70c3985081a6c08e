"""File backend: a judge's memory in a local directory (the default).

Layout of ``DIR``::

    memalign.json            manifest: format, judge, embeddings, current version (the commit point)
    principles/v000003.json  one principles checkpoint per version (all versions kept), with the ledger
    episodes/e000003/        FAISS index (index.faiss) and episodes as JSON lines (episodes.jsonl); the current
                             snapshot and the one before it are kept
    episodes/log/v000003.jsonl  episodes added or replaced by version 3 (history, for rollback)
    principle_vectors.npz    unit vectors of the current principles by text digest (a cache: principles are not
                             embedded again by every process; rewritten after each commit)
    calibration.npz          the calibration head of the current version and its training sample's field vectors
                             (a cache: refitted when absent, unreadable or of another version; rewritten after
                             each commit; see memalign_graph.calibration)
    review-checkpoints.sqlite   LangGraph checkpoints of `memalign review` (a cache; purged on forget)
    .lock                    writer lock (fcntl)

Every file is written to a temporary name, flushed to disk and renamed; the
manifest is replaced last, so a crash at any point leaves the previous version
current; the next writer to take the lock deletes what the crashed commit left
(temp files, and the files of the version it did not commit). Loading never
unpickles: the FAISS index is read with ``faiss.read_index`` and the episodes
from JSON (LangChain's ``FAISS.load_local`` would unpickle the docstore, which
can execute code).

Confinement: nothing outside ``DIR`` is read, written or deleted. Every path is
checked component by component below ``DIR`` and a symbolic link anywhere
inside is refused (:class:`~memalign_graph.errors.MemoryFormatError` naming it);
files are opened with ``O_NOFOLLOW`` and without blocking, and anything but a regular
file (a FIFO, a socket, a device) is refused before it is read; the review database,
the one file written in place, must have no other hard link and is kept ``0600``
(:mod:`memalign_graph.backends.safe_files`); cleanup deletes only files and folders of
the names above (never through a link, never a folder with foreign files in it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from memalign_graph.backends.base import (
    FORMAT_VERSION,
    LoadedMemory,
    MemoryBackend,
    PrinciplesCheckpoint,
    initial_checkpoint,
    purge_versions,
    refuse_moved,
)
from memalign_graph.backends.faiss_episodes import FAISS, CompactDocstore, faiss_store, new_faiss
from memalign_graph.backends.safe_files import (
    atomic_file,
    check_regular,
    fsync_dir,
    open_binary,
    open_regular,
    private_file,
    read_text_nofollow,
    refuse_link,
    remove_file,
)
from memalign_graph.errors import MISSING_MEMORY_HINT, MemoryFormatError

MANIFEST = "memalign.json"
REVIEW_DB = "review-checkpoints.sqlite"
SNAPSHOT_FILES = ("index.faiss", "episodes.jsonl")
"""The files of one episode snapshot ``episodes/eNNNNNN/`` (the only files cleanup deletes there)."""


PRINCIPLE_VECTORS = "principle_vectors.npz"
CALIBRATION = "calibration.npz"
CALIBRATION_FORMAT = "memalign-calibration-cache"
CALIBRATION_MAX_BYTES = 512 * 1024 * 1024
"""Most bytes one array of ``calibration.npz`` may unpack to: a hostile file cannot exhaust memory
(2000 episodes x 3 embedded fields x 3072 dimensions of float32 are 74 MB)."""


def atomic_write_text(path: Path, text: str | Iterable[str]) -> None:
    """Write ``text`` (a string, or pieces written one after another) to ``path`` atomically (:func:`atomic_file`).

    Pieces are streamed, never joined in memory.
    """
    with atomic_file(path) as fh:
        if isinstance(text, str):
            fh.write(text)
        else:
            fh.writelines(text)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (see :func:`atomic_write_text`)."""
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1))


class FileBackend(MemoryBackend):
    """Memory in a local directory (see the module docstring for the layout and confinement).

    Args:
        path: the memory directory; created by :meth:`create`. The path itself may be
            a symbolic link (it is resolved once, here); nothing inside it may be.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.location = str(self.path)
        self._version_seen: tuple[tuple[int, int, int], int] | None = None

    def _inside(self, rel: str) -> Path:
        """``DIR/rel``, after checking that no existing component of ``rel`` is a symbolic link.

        Raises:
            MemoryFormatError: naming the first component that is a symbolic link.
        """
        path = self.path
        for part in Path(rel).parts:
            path = path / part
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                break
            if stat.S_ISLNK(mode):
                refuse_link(path, self.path)
        return self.path / rel

    def _check_layout(self) -> None:
        """Refuse a symbolic link at any fixed place of the layout before a write starts.

        Checked once per writer lock, so a change is refused before anything is written
        (not half-way, after its commit, when it reaches the review threads).

        Raises:
            MemoryFormatError: naming the link.
        """
        for rel in (MANIFEST, "principles", "episodes/log", ".lock"):
            self._inside(rel)
        self._review_db()

    def exists(self) -> bool:  # noqa: D102
        return os.path.lexists(self.path / MANIFEST)

    def _manifest(self) -> dict[str, Any]:
        """The manifest, checked: a memalign-graph manifest of a format this version reads, fields well-formed.

        Raises:
            MemoryFormatError: naming the directory or the manifest file and what is wrong
                (a symbolic link included).
        """
        file = self.path / MANIFEST
        try:
            if not self.path.is_dir():
                raise MemoryFormatError(f"{self.path}: no such memory directory ({MISSING_MEMORY_HINT})")
            try:
                manifest = json.loads(read_text_nofollow(file, self.path))
            except FileNotFoundError:
                raise MemoryFormatError(
                    f"{self.path}: not a memalign memory directory ({MANIFEST} is missing)"
                ) from None
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
        atomic_write_json(self._inside("principles/v000000.json"), initial_checkpoint())
        self._write_episodes(new_faiss(embeddings, int(embeddings_info["dim"])), 0)
        atomic_write_json(
            self._inside(MANIFEST),
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

    def embeddings_info(self) -> dict[str, Any]:  # noqa: D102
        return dict(self._manifest()["embeddings"])

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

        manifest = self._manifest()
        principles_file = self._inside(manifest["principles"])
        episodes_dir = self._inside(manifest["episodes"])
        for name in SNAPSHOT_FILES:
            self._inside(f"{manifest['episodes']}/{name}")
        checkpoint = _read_checkpoint(principles_file, manifest["version"], self.path)
        try:
            with os.fdopen(open_regular(episodes_dir / "episodes.jsonl", self.path), encoding="utf-8") as fh:
                store = CompactDocstore.read(fh, str(episodes_dir / "episodes.jsonl"))
            with open_binary(episodes_dir / "index.faiss", self.path) as fh:  # faiss would open a FIFO and wait
                index = faiss.read_index(faiss.PyCallbackIOReader(fh.read))
        except (OSError, RuntimeError, UnicodeDecodeError, ValueError) as exc:
            raise MemoryFormatError(f"{self.path}: version {manifest['version']} is unreadable ({exc})") from None
        ids = store.order
        if index.ntotal != len(ids):
            raise MemoryFormatError(f"{episodes_dir}: index holds {index.ntotal} vectors but {len(ids)} episodes")
        dim = manifest["embeddings"].get("dim")
        if isinstance(dim, int) and index.d != dim:
            raise MemoryFormatError(f"{episodes_dir}: index vectors have {index.d} dimensions, the manifest says {dim}")
        vectorstore = faiss_store(embeddings, index, store)
        return LoadedMemory(
            spec=manifest["judge"],
            checkpoint=checkpoint,
            vectorstore=vectorstore,
            embeddings_info=manifest["embeddings"],
        )

    def _write_episodes(self, vectorstore: VectorStore, version: int) -> str:
        import faiss

        assert isinstance(vectorstore, FAISS), "the file backend stores episodes in FAISS"
        root = self._inside("episodes")
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
        target = self._inside(f"episodes/{name}")
        if os.path.lexists(target):  # left by a crash after this step but before the manifest
            _remove_snapshot(target)
        os.rename(tmp, target)
        fsync_dir(root)
        return f"episodes/{name}"

    write_errors = (OSError,)

    def write_version(  # noqa: D102
        self,
        checkpoint: PrinciplesCheckpoint,
        vectorstore: VectorStore | None,
        embeddings_changed: bool,
        new_episodes: list[dict[str, Any]],
    ) -> None:
        manifest = self._manifest()
        version = int(checkpoint["version"])
        refuse_moved(f"{self.path}: memory", manifest["version"], version)
        principles_rel = f"principles/v{version:06d}.json"
        episodes_rel = manifest["episodes"]
        if new_episodes:
            atomic_write_text(
                self._inside(f"episodes/log/v{version:06d}.jsonl"),
                (json.dumps(e, ensure_ascii=False) + "\n" for e in new_episodes),
            )
        if embeddings_changed:
            assert vectorstore is not None
            episodes_rel = self._write_episodes(vectorstore, version)
        atomic_write_json(self._inside(principles_rel), {**checkpoint, "episodes": episodes_rel})
        atomic_write_json(
            self._inside(MANIFEST),
            {**manifest, "version": version, "principles": principles_rel, "episodes": episodes_rel},
        )
        self._collect_garbage(keep={episodes_rel, manifest["episodes"]})

    def write_failed(self, exc: Exception, before: int, version: int) -> NoReturn:
        """:meth:`MemoryBackend.write_failed`, after removing what the failed commit left (see :meth:`_recover`).

        Raises:
            MemoryWriteError: always.
        """
        with contextlib.suppress(OSError, MemoryFormatError):
            self._recover()
        super().write_failed(exc, before, version)

    def load_principle_vectors(self) -> dict[str, Any]:  # noqa: D102
        import numpy as np

        try:
            with open_binary(self.path / PRINCIPLE_VECTORS, self.path) as fh, np.load(fh, allow_pickle=False) as data:
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
        with atomic_file(file, "wb") as fh:
            np.savez(
                fh,
                digests=np.asarray(list(vectors), dtype="U64"),
                vectors=np.stack([np.asarray(v, dtype=np.float32) for v in vectors.values()]),
            )

    def _read_calibration(self, members: tuple[str, ...]) -> dict[str, Any] | None:
        """These arrays of ``calibration.npz``; ``None`` if it is absent, a link, unreadable, or one is too large.

        Read with ``allow_pickle=False`` (an object array is refused, never unpickled), through a
        descriptor opened without following a link or waiting on a FIFO (:func:`open_regular`), each
        array's unpacked size checked before it is read.
        """
        import zipfile

        import numpy as np

        try:
            fd = open_regular(self._inside(CALIBRATION), self.path)
        except (OSError, MemoryFormatError):  # absent, a link, a FIFO or another non-regular file: a cache, refit
            return None
        with os.fdopen(fd, "rb") as fh:
            try:
                with np.load(fh, allow_pickle=False) as data:
                    if any(data.zip.getinfo(f"{m}.npy").file_size > CALIBRATION_MAX_BYTES for m in members):
                        return None
                    return {m: data[m] for m in members}
            except (OSError, KeyError, ValueError, EOFError, AttributeError, zipfile.BadZipFile):
                return None

    def load_calibration(self) -> dict[str, Any] | None:  # noqa: D102
        found = self._read_calibration(("format", "version", "head"))
        if found is None:
            return None
        fmt, version, head = found["format"], found["version"], found["head"]
        if fmt.shape != () or str(fmt) != CALIBRATION_FORMAT or version.shape != () or version.dtype.kind not in "iu":
            return None
        if head.shape != () or head.dtype.kind != "U":
            return None
        try:
            data = json.loads(str(head)) if str(head) else None
        except ValueError:
            return None
        return {"version": int(version), "head": data}

    def load_calibration_vectors(self) -> dict[tuple[str, str], tuple[str, Any]]:  # noqa: D102
        import numpy as np

        found = self._read_calibration(("fields", "ids", "digests", "vectors"))
        if found is None:
            return {}
        fields, ids, digests, vectors = (found[k] for k in ("fields", "ids", "digests", "vectors"))
        n = len(ids) if ids.ndim == 1 else -1
        if not all(a.ndim == 1 and a.dtype.kind == "U" and len(a) == n for a in (fields, ids, digests)):
            return {}
        if vectors.dtype != np.float32 or vectors.ndim != 2 or len(vectors) != n:
            return {}
        return {(str(f), str(i)): (str(d), v) for f, i, d, v in zip(fields, ids, digests, vectors)}

    def save_calibration(  # noqa: D102
        self, version: int, head: dict[str, Any] | None, vectors: dict[tuple[str, str], tuple[str, Any]] | None
    ) -> None:
        import numpy as np

        if vectors is None:
            vectors = self.load_calibration_vectors()
        keys = sorted(vectors)
        rows = [np.asarray(vectors[k][1], dtype=np.float32) for k in keys]
        with atomic_file(self._inside(CALIBRATION), "wb") as fh:
            np.savez(
                fh,
                format=np.asarray(CALIBRATION_FORMAT),
                version=np.asarray(version, dtype=np.int64),
                head=np.asarray(json.dumps(head, ensure_ascii=False) if head is not None else ""),
                fields=np.asarray([k[0] for k in keys], dtype=str),
                ids=np.asarray([k[1] for k in keys], dtype=str),
                digests=np.asarray([vectors[k][0] for k in keys], dtype=str),
                vectors=np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32),
            )

    def _purge_calibration(self, record_ids: set[str]) -> None:
        """Rewrite ``calibration.npz`` without these records' field vectors, if it holds any."""
        vectors = self.load_calibration_vectors()
        if any(episode_id in record_ids for _, episode_id in vectors):
            stored = self.load_calibration() or {"version": -1, "head": None}
            kept = {k: v for k, v in vectors.items() if k[1] not in record_ids}
            self.save_calibration(stored["version"], stored["head"], kept)

    def _collect_garbage(self, keep: set[str]) -> None:
        """Delete episode snapshots other than ``keep`` and stale temp files; never raises.

        Only snapshot folders (``eNNNNNN``, ``.tmp-*``) and their own files go; links are
        left alone (never followed), and so is a folder holding files of other names.
        """
        with contextlib.suppress(OSError, MemoryFormatError):
            root = self._inside("episodes")
            for child in root.iterdir() if root.is_dir() else ():
                if f"episodes/{child.name}" in keep:
                    continue
                if child.name.startswith(".tmp-") or re.fullmatch(r"e\d{6,}", child.name):
                    _remove_snapshot(child)
            folder = self._inside("principles")
            for child in folder.glob(".*.tmp") if folder.is_dir() else ():
                remove_file(child)

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

        Raises:
            MemoryFormatError: if ``principles/``, ``episodes/`` or ``episodes/log/`` is a symbolic link.
        """
        try:
            manifest = self._manifest()
        except MemoryFormatError:
            return
        current = manifest["version"]
        temps = (MANIFEST, PRINCIPLE_VECTORS, CALIBRATION)
        for tmp in [t for name in temps for t in self.path.glob(f".{name}.*.tmp")]:
            remove_file(tmp)
        for rel, pattern in (("principles", r"v(\d+)\.json"), ("episodes/log", r"v(\d+)\.jsonl")):
            folder = self._inside(rel)
            for child in folder.iterdir() if folder.is_dir() else ():
                temp = child.name.startswith(".") and child.name.endswith(".tmp")
                if temp or _number(child.name, pattern, default=-1) > current:
                    remove_file(child)
        root = self._inside("episodes")
        for child in root.iterdir() if root.is_dir() else ():
            if f"episodes/{child.name}" == manifest["episodes"]:
                continue
            if child.name.startswith(".tmp-") or _number(child.name, r"e(\d+)", default=-1) > current:
                _remove_snapshot(child)

    def checkpoint(self, version: int) -> PrinciplesCheckpoint:  # noqa: D102
        if version > self.current_version():
            raise KeyError(f"{self.path}: no version {version} (current is {self.current_version()})")
        file = self._inside(f"principles/v{version:06d}.json")
        if not os.path.lexists(file):
            raise KeyError(f"{self.path}: no version {version}")
        return _read_checkpoint(file, version, self.path)

    def _logs(self) -> list[Path]:
        """The episode history files ``episodes/log/vNNNNNN.jsonl``, oldest first."""
        folder = self._inside("episodes/log")
        return sorted(folder.glob("v*.jsonl")) if folder.is_dir() else []

    def episode_history(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:  # noqa: D102
        found: dict[tuple[str, str], dict[str, Any]] = {}
        current = self.current_version()
        for file in reversed(self._logs()):
            if _number(file.name, r"v(\d+)\.jsonl", default=0) > current:
                continue  # written by a commit that never reached the manifest
            for line in read_text_nofollow(file, self.path).splitlines():
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
        for file in self._logs():
            lines = read_text_nofollow(file, self.path).splitlines()
            kept = [line for line in lines if json.loads(line)["id"] not in record_ids]
            if len(kept) != len(lines):
                if kept:
                    atomic_write_text(file, "".join(line + "\n" for line in kept))
                else:
                    file.unlink()
        self._collect_garbage(keep={self._manifest()["episodes"]})
        self._purge_calibration(record_ids)
        self._purge_review_threads(record_ids)
        files = self._checkpoint_files()
        stored = (json.loads(read_text_nofollow(file, self.path)) for file in files)
        for file, cleaned in zip(files, purge_versions(stored, record_ids)):
            if cleaned is not None:
                atomic_write_json(file, cleaned)

    def _checkpoint_files(self) -> list[Path]:
        """The principles checkpoints ``principles/vNNNNNN.json``, oldest first."""
        folder = self._inside("principles")
        return sorted(folder.glob("v*.json")) if folder.is_dir() else []

    def _review_db(self, *, create: bool = False) -> Path:
        """``DIR/review-checkpoints.sqlite``, after checking it and SQLite's side files.

        SQLite writes them in place, so none may be a link (symbolic or hard: another name for the
        file may be outside ``DIR``) or other than a regular file; with ``create`` the database is
        made ``0600`` if absent (it holds case and feedback text) and a looser mode is tightened.

        Raises:
            MemoryFormatError: naming the file and what is wrong with it.
        """
        sides = [self._inside(REVIEW_DB + suffix) for suffix in ("-wal", "-shm", "-journal")]
        db = self._inside(REVIEW_DB)
        if create:
            return private_file(db, self.path, sides)
        for file in (db, *sides):
            check_regular(file, self.path, single_link=True)
        return db

    def _purge_review_threads(self, record_ids: set[str]) -> None:
        """Delete `memalign review` threads of these records and VACUUM so their bytes are gone."""
        import sqlite3

        db = self._review_db()
        if not os.path.lexists(db):
            return
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(db)
        try:
            saver = SqliteSaver(conn)
            for rid in record_ids:
                saver.delete_thread(self.review_thread_id(rid))
            conn.commit()
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def versions(self) -> list[dict[str, Any]]:  # noqa: D102
        current = self.current_version()
        out = []
        for file in self._checkpoint_files():
            version = _number(file.name, r"v(\d+)\.json", default=-1)
            if 0 <= version <= current:
                out.append(_read_checkpoint(file, version, self.path))
        return out

    @contextlib.contextmanager
    def review_checkpointer(self) -> Iterator[Any]:
        """LangGraph's ``SqliteSaver`` on ``DIR/review-checkpoints.sqlite`` (closed on exit).

        Raises:
            MemoryFormatError: if that file or one of SQLite's side files is a link (symbolic or hard)
                or not a regular file, or a folder of the memory is a symbolic link.
        """
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver

        self._check_layout()
        conn = sqlite3.connect(self._review_db(create=True), check_same_thread=False)
        try:
            yield SqliteSaver(conn)
        finally:
            conn.close()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock (``fcntl.flock`` on ``DIR/.lock``), held for a whole read-modify-commit.

        The kernel releases it when its holder dies, even by SIGKILL. Whoever takes it
        first removes what a dead writer left behind (see :meth:`_recover`).

        Raises:
            MemoryFormatError: if ``.lock`` is a symbolic link or not a regular file, or a folder
                :meth:`_recover` cleans is a symbolic link.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        self._check_layout()
        fd = open_regular(self._inside(".lock"), self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._recover()
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _remove_snapshot(folder: Path) -> None:
    """Delete an episode snapshot folder: its own files (:data:`SNAPSHOT_FILES`), then the folder if empty.

    A symbolic link is never followed (a link named like a snapshot is left alone), and a
    folder holding files of other names is kept, so cleanup deletes nothing it did not write.
    """
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return
    except FileNotFoundError:
        return
    for name in SNAPSHOT_FILES:
        remove_file(folder / name)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _read_checkpoint(file: Path, version: int, root: Path) -> PrinciplesCheckpoint:
    """The principles checkpoint of ``version`` stored in ``file`` (inside the memory directory ``root``), checked.

    Raises:
        MemoryFormatError: naming the file, if it is unreadable, a symbolic link, or not that version's checkpoint.
    """
    try:
        data = json.loads(read_text_nofollow(file, root))
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
