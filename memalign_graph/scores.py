"""Probability of each allowed value, read from the log-probabilities of the tokens that spell it.

The judge asks OpenAI-compatible models (and the embedded llama.cpp model) for each generated
token's log-probability and its most likely alternatives (``top_logprobs``); :func:`value_scores`
reads, from the tokens that spell the answer's ``"value"``, how likely each allowed value was.
:func:`top_logprobs` is how many alternatives a judge asks for: enough for every allowed value
and a few other spellings, because each alternative costs the client time to read on every token.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from langchain_core.messages import BaseMessage

from memalign_graph.spec import JudgeSpec
from memalign_graph.structured import MAX_TOP_LOGPROBS

SPARE_ALTERNATIVES = 3
"""Alternatives asked for per token beyond the judge's allowed values: other spellings of a value
(``Pass``, `` pass``, a quote) take slots too, and a value missing from the alternatives scores 0."""


def top_logprobs(spec: JudgeSpec) -> int:
    """Alternatives per token to ask for: the allowed values plus :data:`SPARE_ALTERNATIVES`.

    At most :data:`~memalign_graph.structured.MAX_TOP_LOGPROBS` (OpenAI's limit). Every token of
    the answer carries that many alternatives, and the client reads them all: for an OpenAI-shaped
    answer of 58 tokens, reading 20 alternatives per token took about four times as long as 5.
    """
    return min(MAX_TOP_LOGPROBS, len(spec.values) + SPARE_ALTERNATIVES)


_TERMINATORS = frozenset('",}] \t\r\n')


def _value_span(text: str) -> tuple[int, int] | None:
    """Where the top-level ``"value"`` of the first JSON object in ``text`` is written: ``(start, end)``.

    The object is read key by key with the JSON scanner, so a ``"value":`` inside the rationale,
    code fences, prose around the object or odd whitespace cannot mislead it. A repeated key counts
    at its last occurrence, as :func:`json.loads` (and so :func:`parse_judgment`) reads it.
    """
    decoder = json.JSONDecoder()
    space = re.compile(r"\s*")
    for opening in re.finditer(r"\{", text):
        pos, found = opening.end(), None
        try:
            pos = space.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos] == "}":
                continue
            while True:
                if text[pos] != '"':
                    raise ValueError("key expected")
                key, pos = json.decoder.scanstring(text, pos + 1)
                pos = space.match(text, pos).end()  # type: ignore[union-attr]
                if text[pos] != ":":
                    raise ValueError("colon expected")
                start = space.match(text, pos + 1).end()  # type: ignore[union-attr]
                _, pos = decoder.raw_decode(text, start)
                if key == "value":
                    found = (start, pos)
                pos = space.match(text, pos).end()  # type: ignore[union-attr]
                if text[pos] == ",":
                    pos = space.match(text, pos + 1).end()  # type: ignore[union-attr]
                    continue
                if text[pos] == "}":
                    break
                raise ValueError("comma or brace expected")
        except (ValueError, IndexError):
            continue
        return found
    return None


def _owners(spelled: str, names: list[str]) -> list[str]:
    """The allowed values (lower-case ``names``) that the value text spelled so far can still become."""
    return [n for n in names if n.startswith(spelled) or (spelled.startswith(n) and spelled[len(n)] in _TERMINATORS)]


def _token_bytes(token: dict[str, Any]) -> bytes:
    raw = token.get("bytes")
    if isinstance(raw, list) and raw:
        try:
            return bytes(raw)
        except (TypeError, ValueError):
            pass
    return str(token.get("token", "")).encode("utf-8")


def value_scores(spec: JudgeSpec, message: BaseMessage) -> dict[str, float] | None:
    """Probability of each allowed value, read from the log-probabilities of the tokens that spell it.

    Works on the generated token stream itself (``response_metadata["logprobs"]["content"]``, the
    OpenAI format, which llama.cpp and OpenAI-compatible servers return), so code fences, prose or
    whitespace around the JSON cannot shift the reading:

    1. the stream's text is rebuilt from the tokens (their ``bytes`` where given, so multi-byte
       characters split across tokens keep offsets right), and the top-level ``"value"`` of the first
       JSON object in it is located (:func:`_value_span`);
    2. walking the tokens that spell the value (after its opening quote), each candidate in a
       position's ``top_logprobs`` is appended to the value text spelled so far; a candidate that
       leaves exactly one allowed value (case-insensitive prefix, or the whole value followed by a
       quote, comma, brace or space) adds ``P(path so far) * P(candidate)`` to that value;
    3. the walk stops at the first token after which a single value remains; where values share a
       prefix (``1`` and ``10``, ``pass`` and ``partial``) it continues into later tokens, so values
       spelled by several tokens are scored by the chain rule along the decoded path.

    The result is renormalised over the allowed values. Under greedy decoding of values that part at
    their first token (``pass``/``fail``, ``A``/``B``/``tie``, 1-9) its argmax is the decoded value.

    Args:
        spec: the judge (its allowed values).
        message: the model's answer, with log-probabilities in ``response_metadata``.

    Returns:
        ``{str(value): probability}`` summing to 1 (4 decimals), or ``None`` if the answer carries no
        log-probabilities, holds no JSON object with a ``"value"``, or no candidate named an allowed value.
    """
    logprobs = (getattr(message, "response_metadata", None) or {}).get("logprobs") or {}
    tokens = [t for t in (logprobs.get("content") or []) if isinstance(t, dict)]
    if not tokens:
        return None
    pieces = [_token_bytes(t) for t in tokens]
    stream = b"".join(pieces)
    text = stream.decode("utf-8", errors="replace")
    span = _value_span(text)
    if span is None:
        return None
    start, end = (len(text[: span[0]].encode("utf-8")), len(text[: span[1]].encode("utf-8")))
    if stream[start : start + 1] == b'"':
        start += 1
    names = [str(v) for v in spec.values]
    lower = [n.lower() for n in names]
    mass = dict.fromkeys(lower, 0.0)
    reach, offset = 1.0, 0
    for token, piece in zip(tokens, pieces):
        token_start, offset = offset, offset + len(piece)
        if offset <= start:
            continue
        if token_start > end:
            break
        spelled = stream[start:token_start].decode("utf-8", errors="ignore").lower() if token_start > start else ""
        lead = stream[token_start:start].decode("utf-8", errors="ignore") if token_start < start else ""
        candidates = {str(c.get("token", "")): c.get("logprob") for c in token.get("top_logprobs") or []}
        candidates.setdefault(str(token.get("token", "")), token.get("logprob"))
        for candidate, logprob in candidates.items():
            if not isinstance(logprob, (int, float)) or not candidate:
                continue
            if lead:
                if candidate.startswith(lead):
                    candidate = candidate[len(lead) :]
                else:
                    candidate = candidate.lstrip(' \t\r\n"')
            owners = _owners(spelled + candidate.lower(), lower) if candidate else []
            if len(owners) == 1:
                mass[owners[0]] += reach * math.exp(logprob)
        here = _owners(stream[start:offset].decode("utf-8", errors="ignore").lower(), lower)
        chosen = token.get("logprob")
        if len(here) <= 1 or not isinstance(chosen, (int, float)):
            break
        reach *= math.exp(chosen)
    total = sum(mass.values())
    if total <= 0:
        return None
    return {name: round(mass[low] / total, 4) for name, low in zip(names, lower)}


__all__ = ["SPARE_ALTERNATIVES", "top_logprobs", "value_scores"]
