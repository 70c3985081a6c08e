"""What every command prints through: consoles, tables, JSON, errors, terminal-safe text, shared options."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

console = Console()
err = Console(stderr=True)

ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        help="Chat model: 'embedded' (default), 'provider:model', 'llamacpp:/path.gguf', or a name with --base-url.",
    ),
]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible server URL.")]
STORE_HELP = (
    "Where the judge's memory lives: a directory (file backend), or a PostgreSQL connection string "
    "'postgresql://user:password@host:port/db?judge=NAME' (PostgreSQL + pgvector backend)."
)
StoreArg = Annotated[str, typer.Argument(metavar="STORE", help=STORE_HELP, show_default=False)]
EmbOpt = Annotated[
    Optional[str],
    typer.Option(
        "--embeddings",
        help="Embeddings: 'embedded' (default: MiniLM int8), 'e5' (multilingual), 'minilm' or 'provider:model'. "
        "Unset: MEMALIGN_EMBEDDINGS, else those an existing memory was made with.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for machines) instead of tables.")]
AuthorOpt = Annotated[str, typer.Option(help="Recorded with the new version.")]
ReasonOpt = Annotated[Optional[str], typer.Option(help="One line recorded with the new version.")]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def plain(value: Any, style: str = "") -> Text:
    r"""Text from outside (cases, principles, ids, names, model output) for the terminal, inert.

    Never parsed as Rich markup; control and bidi characters (terminal escape sequences,
    carriage returns) shown as ``\xNN``/``\uNNNN`` escapes; non-strings as JSON.
    """
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return Text(_CONTROL.sub(lambda m: ascii(m.group())[1:-1], text), style=style)


def cell(value: Any) -> Text:
    """A table cell shown as it is: text from experts, models or files is never read as rich markup."""
    return Text("-") if value is None or value == "" else plain(str(value))


def say(text: str, *, to: Console = console) -> None:
    """One line of the program's own words, printed as written: no markup, no highlighting."""
    to.print(text, markup=False, highlight=False)


def fail(exc: BaseException) -> NoReturn:
    """Print ``error: ...`` on stderr and exit with status 2 (bad input, missing memory, refused change)."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(2)


def print_json(data: Any) -> None:
    """JSON for machines: plain text on stdout, never wrapped or styled by rich."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def check_base_url(model: str | None, base_url: str | None) -> None:
    """Refuse ``--base-url`` without ``--model`` (the server's model name cannot be guessed)."""
    if base_url and not model:
        fail(ValueError("--base-url needs --model: the model name the server at that URL serves"))


def use_base_url(model: str | None, base_url: str | None) -> None:
    """For commands whose model is resolved deep inside (demo, eval): the same as setting MEMALIGN_BASE_URL."""
    check_base_url(model, base_url)
    if base_url:
        os.environ["MEMALIGN_BASE_URL"] = base_url


class Report(Table):
    """A table under a one-line heading (shown as it is, never squeezed to the table's width)."""

    def __init__(self, heading: str, *columns: str, **kwargs: Any) -> None:
        super().__init__(box=box.SIMPLE_HEAD, **kwargs)
        self.heading = Text(heading, style="bold")
        for column in columns:
            self.add_column(column, overflow="fold")

    def __rich_console__(self, console: Console, options: Any) -> Any:
        yield self.heading
        yield from super().__rich_console__(console, options)
