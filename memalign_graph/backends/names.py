"""Location strings and judge names, for every backend and the graphs that resolve them.

PostgreSQL URLs (``postgresql://user:password@host/db?judge=NAME``): :func:`is_postgres_url`,
:func:`split_url`, :func:`redact`; LangGraph store locations (``langgraph[:NAME]``, and a URL with
``&store=langgraph`` for a judge in ``PostgresStore``): :func:`is_store_location`, :func:`store_judge`,
:func:`is_store_url`; a judge's namespace label in a store: :func:`store_label`, :func:`judge_from_label`.
No backend is imported here, so checking what a location names loads no database driver or store.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from memalign_graph.errors import MemoryFormatError

SCHEMES = ("postgresql://", "postgres://")
DEFAULT_JUDGE = "default"
"""The judge a location names when it names none (``?judge=``, ``langgraph:``)."""
STORE_LOCATION = "langgraph"
"""A memory location meaning the LangGraph store the graph runs with (``Context.store``)."""
MAX_JUDGE_CHARS = 200
"""Most characters in a judge name (``?judge=NAME``)."""

STORE_PARAM = "store"
"""The URL parameter that names LangGraph's ``PostgresStore``: ``&store=langgraph`` (:class:`PostgresStoreBackend`)."""


def is_postgres_url(location: object) -> bool:
    """Whether ``location`` is a PostgreSQL connection string (``postgresql://`` or ``postgres://``)."""
    return isinstance(location, str) and location.startswith(SCHEMES)


class JudgeNameError(MemoryFormatError, ValueError):
    """A PostgreSQL URL names no valid judge (``?judge=NAME``): empty, too long, or with control characters."""


def split_url(url: str) -> tuple[str, str]:
    """``(libpq connection string, judge name)`` from a memalign PostgreSQL URL.

    A judge name is 1 to :data:`MAX_JUDGE_CHARS` characters of percent-encoded
    UTF-8 without control or format characters (NUL, newline, bidi overrides...)
    and not only spaces.

    Raises:
        JudgeNameError: (a ``ValueError``) naming the redacted URL and what is wrong with the judge name.
    """
    parts = urlsplit(url)
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise JudgeNameError(
            f"{redact(url)}: the judge name (?judge=NAME) or another parameter is not percent-encoded UTF-8"
        ) from None
    judge = DEFAULT_JUDGE
    rest = []
    for key, value in query:
        if key == "judge":
            judge = value
        else:
            rest.append((key, value))
    check_judge_name(judge, url)
    return urlunsplit(parts._replace(query=urlencode(rest))), judge


_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def check_judge_name(judge: str, url: str) -> None:
    """Raise :class:`JudgeNameError` unless ``judge`` is a valid judge name (see :func:`split_url`)."""
    problem = None
    if not judge.strip():
        problem = "is empty"
    elif len(judge) > MAX_JUDGE_CHARS:
        problem = f"has {len(judge)} characters, more than {MAX_JUDGE_CHARS}"
    else:
        bad = next((c for c in judge if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
        if bad is not None:
            problem = f"contains the control character U+{ord(bad):04X} at position {judge.index(bad)}"
    if problem:
        shown = judge if len(judge) <= 40 else judge[:40] + "..."
        raise JudgeNameError(f"{redact(url)}: the judge name (?judge=NAME) {ascii(shown)} {problem}")


def redact(url: str) -> str:
    """``url`` with every password replaced by ``***`` (for messages, logs and run records).

    Covers the user part (``postgresql://user:PASSWORD@host``) and the libpq query
    parameters ``password`` and ``sslpassword`` (any case, percent-encoded names too).
    A string that does not parse as a URL is redacted by pattern instead.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        masked = re.sub(r"(?i)((?:ssl)?password=)[^&#\s]*", r"\1***", url)
        return re.sub(r"(://[^:/@\s]*):[^@/\s]*@", r"\1:***@", masked)
    netloc = parts.netloc if password is None else parts.netloc.replace(f":{password}@", ":***@", 1)
    query = "&".join(
        f"{item.partition('=')[0]}=***"
        if unquote_plus(item.partition("=")[0]).strip().lower() in _SECRET_PARAMS
        else item
        for item in parts.query.split("&")
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def is_store_location(location: object) -> bool:
    """Whether ``location`` is ``"langgraph"`` or ``"langgraph:NAME"`` (a judge in the graph's LangGraph store)."""
    return isinstance(location, str) and (location == STORE_LOCATION or location.startswith(STORE_LOCATION + ":"))


def store_judge(location: str, default: str = DEFAULT_JUDGE) -> str:
    """The judge name in a ``langgraph[:NAME]`` location: ``NAME``, or ``default`` when none is given."""
    name = location[len(STORE_LOCATION) + 1 :] if location.startswith(STORE_LOCATION + ":") else ""
    return name or default


def store_label(judge: str) -> str:
    """The namespace label of ``judge``: its name with ``%`` and ``.`` percent-encoded (``"v1.2"`` -> ``"v1%2E2"``).

    Raises:
        ValueError: for a name that is empty, only spaces, longer than :data:`MAX_JUDGE_CHARS`,
            or holds a control or format character (NUL, newline, bidi overrides...).
    """
    if not isinstance(judge, str) or not judge.strip():
        raise ValueError(f"LangGraph store: the judge name must be a non-empty string, got {judge!r}")
    if len(judge) > MAX_JUDGE_CHARS:
        raise ValueError(f"LangGraph store: the judge name has {len(judge)} characters, more than {MAX_JUDGE_CHARS}")
    bad = next((c for c in judge if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    if bad is not None:
        raise ValueError(
            f"LangGraph store: the judge name {ascii(judge)} contains the control character U+{ord(bad):04X}"
        )
    return judge.replace("%", "%25").replace(".", "%2E")


def judge_from_label(label: str) -> str:
    """The judge name a namespace label stands for (the inverse of :func:`store_label`)."""
    return label.replace("%2E", ".").replace("%25", "%")


def is_store_url(location: object) -> bool:
    """Whether ``location`` is a ``postgresql://`` URL with ``store=...`` (a judge in LangGraph's ``PostgresStore``)."""
    if not is_postgres_url(location):
        return False
    try:
        query = parse_qsl(urlsplit(str(location)).query, keep_blank_values=True)
    except ValueError:
        return False
    return any(key == STORE_PARAM for key, _ in query)
