"""``memalign queue``: queue a JSONL file of cases for expert review on a LangGraph Server (reviewed at ``/review``).

Registered in the ``memalign`` app (:mod:`memalign_graph.cli`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from memalign_graph.spec import MAX_LINE_BYTES

TOKEN_ENV = "MEMALIGN_TOKEN"
"""Environment variable holding the bearer token (a token on the command line would show in ``ps``)."""

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def _safe(text: Any) -> Text:
    r"""``text`` for a terminal: control, bidi and zero-width characters shown as escapes (``\u202e``), no markup."""
    return Text(_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text)))


def read_cases(path: Path) -> list[dict[str, Any]]:
    """The cases in the JSONL file at ``path``, one JSON object per line (blank lines skipped).

    Raises:
        ValueError: naming the file and line for a line that is not a JSON object, is longer
            than :data:`~memalign_graph.spec.MAX_LINE_BYTES`, or is not UTF-8; or for a file without cases.
        OSError: if the file cannot be read.
    """
    cases = []
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, 1):
            where = f"{path}, line {number}"
            if len(raw) > MAX_LINE_BYTES:
                raise ValueError(f"{where}: longer than {MAX_LINE_BYTES} bytes")
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise ValueError(f"{where}: not UTF-8") from None
            if not text:
                continue
            try:
                case = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(case, dict):
                raise ValueError(f"{where}: expected a JSON object with 'inputs' and 'outputs'")
            cases.append(case)
    if not cases:
        raise ValueError(f"{path}: no cases")
    return cases


def queue(
    cases: Annotated[Path, typer.Argument(help="JSONL file of cases ({'id'?, 'inputs', 'outputs', 'expectations'?}).")],
    url: Annotated[
        str, typer.Option("--url", help="The LangGraph Server serving the judges.")
    ] = "http://127.0.0.1:2024",
    judge: Annotated[
        Optional[str], typer.Option(help="The served judge (MEMALIGN_JUDGES); may be left out when it serves one.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Cases judged at once.")] = 4,
) -> None:
    """Queue cases for expert review on a LangGraph Server; experts answer them in the browser at URL/review/.

    Each case is judged at once by the served review graph and waits at its review question.
    Queueing the same file again skips the cases already queued. The bearer token, if the
    server has a token file, is read from MEMALIGN_TOKEN. Exits with status 1 when a case
    could not be queued (the server's reason is printed).
    """
    from memalign_graph.webreview.queue import queue_cases

    out, err = Console(), Console(stderr=True)
    try:
        rows = queue_cases(
            read_cases(cases), url=url, judge=judge, token=os.environ.get(TOKEN_ENV) or None, concurrency=concurrency
        )
    except (OSError, ValueError) as exc:
        err.print(Text.assemble(("error: ", "red"), _safe(exc)))
        raise typer.Exit(2) from None
    table = Table("case", "status", "detail")
    for row in rows:
        table.add_row(_safe(row["id"]), row["status"], _safe(row.get("error", "")))
    out.print(table)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    out.print(", ".join(f"{n} {status}" for status, n in counts.items()) + f"; review at {url.rstrip('/')}/review/")
    if counts.get("failed"):
        raise typer.Exit(1)
