"""Opening the files of a memory directory so that no file placed there can redirect, block or leak.

The file backend (:mod:`memalign_graph.backends.file`) reads and writes only through these:

- a **symbolic link** is never followed (``O_NOFOLLOW``; a link anywhere inside the memory
  directory is refused by the backend's path checks too);
- a file that is **not a regular file** (a FIFO, a socket, a device, a folder) is refused before
  anything is read: it is opened with ``O_NONBLOCK``, so ``open()`` of a FIFO with no writer
  returns at once instead of waiting forever, then checked with ``fstat`` on the opened
  descriptor (no window between the check and the read);
- a file written **in place** (the review checkpoint database, which SQLite updates where it
  lies) must have no other hard link, since a second name for it may be outside the
  directory, and is created readable by its owner only (``0600``: it holds case and
  feedback text), whatever the umask.

Every refusal is a :class:`~memalign_graph.errors.MemoryFormatError` naming the file and what
to do. Writes of whole files go to a temp file that is renamed over the target
(:func:`atomic_file`), which replaces a link, a FIFO or a hard-linked name rather than
writing through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

from memalign_graph.errors import MemoryFormatError

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def refuse_link(path: Path, root: Path) -> NoReturn:
    """Refuse ``path``, a symbolic link inside the memory directory ``root``.

    Raises:
        MemoryFormatError: always, naming the link.
    """
    raise MemoryFormatError(
        f"{path}: is a symbolic link inside the memory directory {root}; refused "
        "(memalign reads, writes and deletes only inside its directory; replace the link by the real file or folder)"
    )


def refuse_irregular(path: Path, root: Path, mode: int) -> NoReturn:
    """Refuse ``path`` (of ``st_mode`` ``mode``), which is not a regular file.

    Raises:
        MemoryFormatError: always, naming the file and what it is.
    """
    kind = next((said for test, said in _KINDS if test(mode)), "not a file")
    raise MemoryFormatError(
        f"{path}: is not a regular file ({kind}) inside the memory directory {root}; refused "
        "(memalign reads only regular files, so nothing placed there can make it wait or read elsewhere; "
        "replace it by the real file)"
    )


def check_regular(path: Path, root: Path, *, single_link: bool = False) -> os.stat_result | None:
    """``lstat`` of ``path`` if it is a regular file; ``None`` if there is nothing at ``path``.

    Args:
        path: a file inside the memory directory ``root``.
        root: the memory directory (named in the message).
        single_link: also refuse a file with other hard links (one written in place).

    Raises:
        MemoryFormatError: if ``path`` is a symbolic link, not a regular file, or (``single_link``)
            has other hard links.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        refuse_link(path, root)
    if not stat.S_ISREG(st.st_mode):
        refuse_irregular(path, root, st.st_mode)
    if single_link and st.st_nlink > 1:
        _refuse_hard_link(path, root, st.st_nlink)
    return st


def _refuse_hard_link(path: Path, root: Path, links: int) -> NoReturn:
    raise MemoryFormatError(
        f"{path}: has {links - 1} other hard link(s); refusing to write through it (another name for the same "
        f"file may lie outside the memory directory {root}; remove this file and run again)"
    )


def open_regular(path: Path, root: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A descriptor of ``path``, opened without following a link or waiting, and only if it is a regular file.

    Opened with ``O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`` added to ``flags``; ``O_NONBLOCK`` is
    cleared again once ``fstat`` of the descriptor shows a regular file.

    Args:
        path: a file inside the memory directory ``root``.
        root: the memory directory (named in messages).
        flags: ``os.open`` flags (``O_RDONLY``, or ``O_RDWR | O_CREAT`` ...).
        mode: permission bits of a file ``O_CREAT`` makes.

    Raises:
        MemoryFormatError: if ``path`` is a symbolic link or not a regular file (naming it).
        OSError: if it cannot be opened (e.g. ``FileNotFoundError``).
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path, root)
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP, errno.ENODEV):  # a socket, or a device without a driver
            with contextlib.suppress(OSError):
                refuse_irregular(path, root, os.lstat(path).st_mode)
        raise
    try:
        mode_now = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode_now):
            refuse_irregular(path, root, mode_now)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_text_nofollow(path: Path, root: Path) -> str:
    """The UTF-8 text of the regular file ``path`` (see :func:`open_regular`).

    Raises:
        MemoryFormatError: if ``path`` is a symbolic link or not a regular file (naming it).
        OSError: if it cannot be read (e.g. ``FileNotFoundError``).
    """
    with os.fdopen(open_regular(path, root), "r", encoding="utf-8") as fh:
        return fh.read()


@contextlib.contextmanager
def open_binary(path: Path, root: Path) -> Iterator[IO[bytes]]:
    """The regular file ``path`` open for reading bytes (see :func:`open_regular`); closed on exit.

    Raises:
        MemoryFormatError: if ``path`` is a symbolic link or not a regular file (naming it).
        OSError: if it cannot be opened.
    """
    with os.fdopen(open_regular(path, root), "rb") as fh:
        yield fh


def private_file(path: Path, root: Path, side_files: Iterable[Path] = ()) -> Path:
    """``path``, a file written in place, made safe to write: one link only, readable by its owner only.

    Created empty with mode ``0600`` if absent (whatever the umask; SQLite gives its journal
    and WAL files the database's mode); a looser mode on an existing file is tightened to
    ``0600``. ``side_files`` (e.g. SQLite's ``-wal``, ``-shm``, ``-journal``) are checked and
    tightened the same way where they exist.

    Raises:
        MemoryFormatError: if ``path`` or a side file is a symbolic link, not a regular file, or
            has other hard links (naming it).
        OSError: if it cannot be created or changed.
    """
    if check_regular(path, root, single_link=True) is None:
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process: checked below
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    for file in (path, *side_files):
        if check_regular(file, root, single_link=True) is None:
            continue
        fd = open_regular(file, root)
        try:
            st = os.fstat(fd)  # the opened file itself: a name swapped since the check is seen here
            if st.st_nlink > 1:
                _refuse_hard_link(file, root, st.st_nlink)
            if st.st_mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    return path


def fsync_dir(path: Path) -> None:
    """Flush the folder ``path`` (a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A new file to write ``path``'s content into (``mode`` ``"w"``: UTF-8 text, ``"wb"``: bytes).

    A temp file beside ``path``; when the block ends without error it is flushed to disk and
    renamed over ``path``, and the directory is flushed too. On any error the temp file is
    removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def remove_file(path: Path) -> None:
    """Delete ``path`` if it is a file or a symbolic link (the link itself, never its target)."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            path.unlink()


__all__ = [
    "atomic_file",
    "check_regular",
    "fsync_dir",
    "open_binary",
    "open_regular",
    "private_file",
    "read_text_nofollow",
    "refuse_irregular",
    "refuse_link",
    "remove_file",
]
