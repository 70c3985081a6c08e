"""What every command prints through: consoles, tables, JSON, errors, terminal-safe text, shared options."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from typing import IO, Annotated, Any, NoReturn, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

console = Console()
err = Console(stderr=True)
_quiet = False

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
    "'postgresql://user:password@host:port/db?judge=NAME' (PostgreSQL + pgvector backend; add "
    "'&store=langgraph' for a judge in LangGraph's PostgresStore)."
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


def say(text: str | Text, *, to: Console = console) -> None:
    """One line of the program's own words, printed as written: no markup, no highlighting."""
    to.print(text, markup=False, highlight=False)


def set_quiet(quiet: bool) -> None:
    """``--quiet``: from now on :func:`info` prints nothing and :func:`progress` shows nothing."""
    global _quiet
    _quiet = quiet


def info(text: str | Text, *, to: Console = console) -> None:
    """A message about what was done (written, created, imported, measured): :func:`say`, unless ``--quiet``."""
    if not _quiet:
        say(text, to=to)


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal (a person watching), not a pipe or a file (a program or a log).

    Decided by the stream itself, never by ``FORCE_COLOR`` and the like: whether stdout carries
    JSONL or a table, and whether stderr gets cursor movements, must not change with colour settings.
    """
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress(total: int, desc: str, unit: str, *, position: int = 0) -> Any:
    """Progress on stderr, as the reader can take it: a tqdm bar on a terminal, plain lines in a log.

    Args:
        total: items to do.
        desc: what is being done (``judging``, ``distill``), the bar's label.
        unit: what one item is (``case``).
        position: line of the bar on a terminal, for several bars at once.

    Returns:
        An object with ``update(n)``, ``close()``, ``n`` and a settable ``total``, usable as a
        context manager: a tqdm bar when stderr is a terminal; when it is not (a pipe, a file, CI),
        :class:`LogProgress`, which never moves the cursor; nothing shown under ``--quiet``.
    """
    from tqdm import tqdm

    if _quiet:
        return tqdm(total=total, disable=True)
    if is_terminal(sys.stderr):
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, position=position)
    return LogProgress(total, desc, unit)


def show_progress() -> bool:
    """Whether code that draws its own tqdm bar (demo, eval) should: on a terminal and not ``--quiet``."""
    return not _quiet and is_terminal(sys.stderr)


class LogProgress:
    """Progress for a log: ``desc: n/total unit (s)`` lines on stderr, one per :attr:`interval` at most, and at close.

    tqdm redraws its bar with carriage returns and cursor movements; in a file or a CI log every
    redraw stays, so a log of a long run is mostly escape codes. These lines read as they are.
    """

    interval = 30.0  # seconds between lines: a 20-minute judge run logs about 40 lines

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self._started = self._shown = time.monotonic()
        self._lock = threading.Lock()
        self._closed = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done; print a line if the last one is :attr:`interval` seconds old."""
        with self._lock:
            self.n += n
            now = time.monotonic()
            if now - self._shown >= self.interval:
                self._shown = now
                self._line(now)

    def close(self) -> None:
        """Print the final count (once)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._line(time.monotonic())

    def _line(self, now: float) -> None:
        say(f"{self.desc}: {self.n}/{self.total} {self.unit} ({now - self._started:.0f} s)", to=err)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
