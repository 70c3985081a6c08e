"""Distillation: expert feedback in, general principles out (semantic memory).

Records are packed into batches of at most ``batch_size`` records (50, the
batch size of MemAlign's distillation) that fit the model's context window
(tokens are estimated as characters / 4, the usual rule of thumb for English
with BPE tokenisers), and the batches run concurrently (at most
``concurrency`` calls at once). A batch whose call hits a transient error
(timeout, rate limit, connection or server error, see
:func:`memalign_graph.faults.is_transient`) or whose answer cannot be read is
retried with exponential backoff and jitter (``Runnable.with_retry``), at most
``max_retries`` times; an error retrying cannot fix (authentication, bad
request) is not retried. A batch that still fails has its record ids reported
with the error, and the records stay undistilled for the next alignment.

Untrusted text is data. Every record enters the prompt as one JSON object on one
line between fixed marker lines (:data:`memalign_graph.prompts.RECORDS_BEGIN` /
``RECORDS_END``), JSON-escaped with ``<``, ``>``, ``&`` and Unicode line
separators escaped too (:func:`encode_data`), so no field (case, feedback,
record id) can end a record, open another or forge the prompt's instructions.
An answer is cut to the principles the call allowed; a principle may cite only
records of its own batch, by their real ids (other sources are dropped); and
every principle is vetted (:func:`vet_principle`): placeholders, echoes of the
prompt, copies of a case's text and truncated identifiers are refused or
repaired, never stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda

from memalign_graph import prompts
from memalign_graph.faults import RETRY_DEFAULTS, CallCounter, describe_error, is_transient, retrying_call
from memalign_graph.models import model_name
from memalign_graph.semantic import Principle, new_principle
from memalign_graph.spec import FeedbackRecord, JudgeSpec, clip, render
from memalign_graph.structured import add_usage, bind_structured, empty_usage, extract_json

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
MAX_SOURCES = 8
DEFAULT_TOKEN_BUDGET = 24_000
"""Estimated prompt tokens of records per call for a model whose context window is unknown (a
hosted model: most serve 32 000 tokens or more), enough for 50 records of usual size."""
RECORD_CHARS = 600
"""Characters kept of each case field in a distillation prompt (feedback: twice as many)."""

_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in "<>&\x85\u2028\u2029"}


def encode_data(value: Any) -> str:
    r"""``value`` as JSON on one line, safe to place between a prompt's marker lines.

    JSON escapes quotes, backslashes and control characters; ``<``, ``>``, ``&``
    and the Unicode line breaks U+0085, U+2028 and U+2029 are escaped as well
    (``\u003c`` ...), so the text can neither close a tag, open a marker line
    (markers start ``<<<`` or end ``>>>``) nor start a new line. ``json.loads``
    gives ``value`` back unchanged.

    Raises:
        TypeError: if ``value`` is not JSON-serialisable.
    """
    return json.dumps(value, ensure_ascii=False).translate(_ESCAPES)


def context_window(model: BaseChatModel) -> int | None:
    """Tokens one call to ``model`` may use (prompt + answer), where known.

    Known for the in-process llama.cpp model (its context divided among its
    slots); ``None`` for others, for which :data:`DEFAULT_TOKEN_BUDGET` applies
    unless the caller gives ``token_budget``.
    """
    from memalign_graph.llamacpp import ChatLlamaCpp

    if isinstance(model, ChatLlamaCpp):
        return model.context_window
    return None


def is_salient(record: FeedbackRecord) -> bool:
    """Whether a record can teach a principle.

    Salient: it has feedback text, or the expert's value differs from the
    judge's (or the judge's is unknown). A bare agreement teaches nothing new;
    it is still stored as an episode.
    """
    if record.get("feedback"):
        return True
    if "value" not in record:
        return False
    return record.get("judge_value") != record["value"]


def record_data(record: FeedbackRecord, chars: int = RECORD_CHARS) -> dict[str, Any]:
    """The fields of a record a distiller sees, case fields clipped to ``chars`` characters.

    Returns:
        ``{"id", "inputs", "outputs" | "output_a"/"output_b", "expectations"?, "judge_value",
        "expert_value", "feedback"}``; feedback clipped to ``2 * chars`` (start and end kept).
    """
    data: dict[str, Any] = {"id": record["id"], "inputs": clip(render(record["inputs"]), chars)}
    outputs = record["outputs"]
    if isinstance(outputs, list) and len(outputs) == 2:
        data["output_a"] = clip(render(outputs[0]), chars)
        data["output_b"] = clip(render(outputs[1]), chars)
    else:
        data["outputs"] = clip(render(outputs), chars)
    if record.get("expectations") is not None:
        data["expectations"] = clip(render(record["expectations"]), chars)
    data["judge_value"] = record.get("judge_value", "unknown")
    data["expert_value"] = record.get("value", "not given")
    data["feedback"] = clip(record.get("feedback") or "none", chars * 2)
    return data


def format_record(record: FeedbackRecord, chars: int = RECORD_CHARS) -> str:
    """One feedback record as it appears in the distillation prompt: one line of JSON (:func:`encode_data`)."""
    return encode_data(record_data(record, chars))


def estimate_tokens(text: str) -> int:
    """Rough token count: ``ceil(len(text) / 4)``."""
    return -(-len(text) // CHARS_PER_TOKEN)


def plan_batches(
    records: list[FeedbackRecord], batch_size: int = 50, token_budget: int = DEFAULT_TOKEN_BUDGET
) -> list[list[FeedbackRecord]]:
    """Split records, in order, into batches of at most ``batch_size`` records and ``token_budget`` estimated tokens.

    A single record above the budget gets a batch of its own.

    Raises:
        ValueError: if ``batch_size`` or ``token_budget`` is not positive.
    """
    if batch_size < 1 or token_budget < 1:
        raise ValueError("batch_size and token_budget must be positive")
    batches: list[list[FeedbackRecord]] = []
    current: list[FeedbackRecord] = []
    used = 0
    for record in records:
        cost = estimate_tokens(format_record(record)) + 1  # the line break
        if current and (len(current) >= batch_size or used + cost > token_budget):
            batches.append(current)
            current, used = [], 0
        current.append(record)
        used += cost
    if current:
        batches.append(current)
    return batches


def allowed_principles(n_records: int) -> int:
    """Most principles one distillation call may return for a batch of ``n_records`` records.

    One per five records, at least 3 and at most 10: a batch of 50 records may teach
    several rules, but a principle per record would be case text, not a rule.
    """
    return min(10, max(3, math.ceil(n_records / 5)))


def distill_schema(ids: list[str], max_principles: int = 3, max_chars: int = 200) -> dict[str, Any]:
    """JSON schema of a distillation answer; sources may only name ids of the batch.

    A principle's text may run to ``2 * max_chars`` characters in the answer, so that
    grammar-constrained decoding never stops a rule mid-word; :func:`clip_principle`
    then clips it to ``max_chars`` at a sentence or word boundary.
    """
    return {
        "type": "object",
        "properties": {
            "principles": {
                "type": "array",
                "maxItems": max_principles,
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "minLength": 8, "maxLength": 2 * max_chars},
                        "sources": {"type": "array", "items": {"enum": ids}, "minItems": 1, "maxItems": MAX_SOURCES},
                    },
                    "required": ["text", "sources"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["principles"],
        "additionalProperties": False,
    }


def build_distill_messages(
    spec: JudgeSpec, batch: list[FeedbackRecord], known: list[Principle], max_principles: int = 3
) -> list[BaseMessage]:
    """The distillation prompt for one batch: instructions, then the records between marker lines.

    The criterion and the known principles are JSON-encoded too (:func:`encode_data`):
    a judge's criterion or a stored principle cannot forge the prompt's structure either.
    """
    known_text = ""
    if known:
        known_text = prompts.DISTILL_KNOWN.format(
            begin=prompts.KNOWN_BEGIN,
            end=prompts.KNOWN_END,
            principles="\n".join(encode_data(p["text"]) for p in known),
        )
    system = prompts.DISTILL_SYSTEM.format(
        criterion=encode_data(spec.criterion),
        values=spec.describe_values(),
        max_principles=max_principles,
        known=known_text,
    )
    user = prompts.DISTILL_USER.format(
        begin=prompts.RECORDS_BEGIN,
        end=prompts.RECORDS_END,
        records="\n".join(format_record(r) for r in batch),
    )
    return [SystemMessage(system), HumanMessage(user)]


def parse_principles(text: str, batch_ids: list[str], max_principles: int | None = None) -> list[tuple[str, list[str]]]:
    """``[(text, sources)]`` from a distillation answer, at most ``max_principles`` of them.

    Sources outside the batch are dropped; a principle left with no source is
    attributed to the whole batch (it came from this batch's feedback, and
    forgetting any record of the batch removes it). Principles beyond
    ``max_principles`` (``None``: no limit) are cut, with a warning: a model that
    ignores the limit does not get to flood memory.

    Raises:
        ValueError: if the answer has no ``principles`` list.
    """
    obj = extract_json(text)
    items = obj.get("principles")
    if not isinstance(items, list):
        raise ValueError("the answer has no 'principles' list")
    known = set(batch_ids)
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            continue
        cited = item.get("sources")
        cited = cited if isinstance(cited, list) else []
        sources = [s for s in cited if isinstance(s, str) and s in known]
        out.append((item["text"].strip(), sorted(set(sources or batch_ids))))
    if max_principles is not None and len(out) > max_principles:
        log.warning("a distillation answer gave %d principles where %d were allowed; cut", len(out), max_principles)
        out = out[:max_principles]
    return out


# --- vetting principles ---------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(
    r"<\s*/?\s*(?:rule|principle|guideline|text|feedback|source|id|number|value|criterion|placeholder|insert"
    r"|your|one|general|answer|record)\b[^<>]{0,60}>"
    r"|<\w*_\d+>|\{\w+\}|\[(?:rule|principle|guideline|insert|placeholder)\b[^\]]{0,60}\]",
    re.I,
)
_WORD = re.compile(r"\w+")
_IDENT = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:\.\w+)*")
_SOURCE_IDENT = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|(?<![\w.])[A-Za-z]\w*_\w+")
_QUOTED = re.compile(r'"([^"\n]{2,120})"|`([^`\n]{2,120})`|“([^”\n]{2,120})”|(?<!\w)\'([^\'\n]{2,120})\'(?!\w)')
_OPENERS = {'"': '"', "`": "`", "“": "”"}
_COPY_RUN = 4
_COPY_SHARE = 0.6


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _copied_share(words: list[str], source_grams: set[tuple[str, ...]], source_text: str) -> float:
    """Share of the words with a letter in ``words`` inside runs of at least four consecutive words of the source.

    Numbers do not count (a rule may quote an order number or a card number from the case
    it came from). For fewer than four words: 1.0 if they are the whole source, else 0.0.
    """
    if not words:
        return 0.0
    if len(words) < _COPY_RUN:
        return 1.0 if " ".join(words) == source_text else 0.0
    covered = [False] * len(words)
    for i in range(len(words) - _COPY_RUN + 1):
        if tuple(words[i : i + _COPY_RUN]) in source_grams:
            covered[i : i + _COPY_RUN] = [True] * _COPY_RUN
    lettered = [c for w, c in zip(words, covered) if not w.isdigit()]
    return sum(lettered) / len(lettered) if lettered else 0.0


@dataclass
class BatchText:
    """What a batch's principles are checked against (built once per batch by :meth:`of`).

    Attributes:
        cases: ``(record id, normalised case text, its 4-word runs)`` per case field (inputs, outputs).
        identifiers: dotted and snake_case names in the batch's cases and feedback
            (``analytics.revenue_certified``).
        quoted: names quoted in the batch's cases and feedback.
        tokens: every identifier-like token of the batch, whole (a token found here is not truncated).
        scaffold: the normalised text of the prompt's own instructions (echoes of it are refused).
        scaffold_grams: its 4-word runs (a near echo such as "The answer must name the policy it
            relies on." for the prompt's example "A reply must name the policy it relies on." is refused).
    """

    cases: list[tuple[str, str, set[tuple[str, ...]]]]
    identifiers: set[str]
    quoted: set[str]
    tokens: set[str]
    scaffold: str
    scaffold_grams: set[tuple[str, ...]] = field(default_factory=set)

    @classmethod
    def of(cls, spec: JudgeSpec, batch: list[FeedbackRecord], max_principles: int = 3) -> BatchText:
        """Index ``batch`` (its full texts, not the clipped prompt form) and the prompt's instructions."""
        cases = []
        texts = []
        for record in batch:
            outputs = record["outputs"]
            fields = [record["inputs"], *(outputs if isinstance(outputs, list) else [outputs])]
            for value in fields:
                text = render(value)
                texts.append(text)
                words = _normalise(text).split()
                grams = {tuple(words[i : i + _COPY_RUN]) for i in range(len(words) - _COPY_RUN + 1)}
                cases.append((record["id"], " ".join(words), grams))
            if record.get("expectations") is not None:
                texts.append(render(record["expectations"]))
            texts.append(record.get("feedback") or "")
        joined = "\n".join(texts)
        quoted = {next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(joined)}
        scaffold = _normalise(" ".join(m.text for m in build_distill_messages(spec, [], [], max_principles)))
        scaffold_words = scaffold.split()
        return cls(
            cases=cases,
            identifiers=set(_SOURCE_IDENT.findall(joined)),
            quoted=quoted,
            tokens=set(_IDENT.findall(joined)),
            scaffold=scaffold,
            scaffold_grams={
                tuple(scaffold_words[i : i + _COPY_RUN]) for i in range(len(scaffold_words) - _COPY_RUN + 1)
            },
        )


def _repair_identifiers(text: str, batch: BatchText) -> tuple[str | None, str]:
    """``text`` with identifiers cut short completed, or ``(None, reason)`` where that is ambiguous."""
    for match in reversed(list(_IDENT.finditer(text))):
        token = match.group()
        if token in batch.tokens:
            continue
        after = text[match.end() : match.end() + 1]
        separated = "." in token or "_" in token
        longer = sorted(
            x
            for x in batch.identifiers
            if len(x) > len(token)
            and x.startswith(token)
            and (separated or (x[len(token)] in "._" and after in ("_", ".")))
        )
        if not longer:
            continue
        at_end = not text[match.end() :].strip(" .")
        if len(longer) == 1 and at_end:
            text = text[: match.start()] + longer[0] + "."
            continue
        return None, f"names {token!r}, a cut-short form of {', '.join(repr(x) for x in longer[:3])}"
    return text, ""


def _repair_quotes(text: str, batch: BatchText) -> tuple[str | None, str]:
    """``text`` with a quoted name cut short completed, or ``(None, reason)``."""
    for opener, closer in _OPENERS.items():
        start = text.rfind(opener)
        balanced = text.count(opener) % 2 == 0 if opener == closer else text.count(opener) == text.count(closer)
        if start < 0 or balanced:
            continue
        tail = text[start + 1 :].rstrip(" .…")
        names = sorted(q for q in batch.quoted if tail and q.startswith(tail))
        if len(names) == 1:
            return text[: start + 1] + names[0] + closer + ".", ""
        return None, f"has an unclosed quote ({opener}{tail[:40]})"
    for match in _QUOTED.finditer(text):
        name = next(g for g in match.groups() if g is not None)
        if name in batch.quoted:
            continue
        longer = sorted(q for q in batch.quoted if len(q) > len(name) and q.startswith(name))
        if len(longer) == 1:
            text = text.replace(match.group(), match.group()[0] + longer[0] + match.group()[-1], 1)
        elif longer:
            return None, f"quotes {name!r}, a cut-short form of a quoted name"
    return text, ""


def clip_principle(text: str, limit: int) -> str | None:
    """``text`` clipped to at most ``limit`` characters without cutting a word, identifier or quoted name.

    Cut at the last sentence end that fits, else at the last space outside quotes
    (with ``…`` appended); ``None`` if neither exists.
    """
    if len(text) <= limit:
        return text
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", text) if m.end() <= limit]
    if ends:
        return text[: ends[-1]]
    quote_open = False
    cut = -1
    for i, char in enumerate(text[:limit]):
        if char in '"`“”':
            quote_open = not quote_open if char in '"`' else char == "“"
        elif char == " " and not quote_open:
            cut = i
    if cut <= 0:
        return None
    return text[:cut].rstrip(" ,;:") + "…"


def vet_principle(text: str, batch: BatchText, limit: int = 200) -> tuple[str | None, str]:
    """Check that ``text`` is a general rule in plain words; repair what can be repaired.

    Refused (``(None, reason)``): a placeholder (``<rule_1>``, ``<rule> ...``,
    ``{criterion}``); an echo of the prompt's own instructions or example (the same share of
    words in runs of four or more, as for a copy of a case); a copy
    of one case's input or output (at least 60 % of its words, numbers aside, in runs
    of four or more words copied from one case field, or all of them for shorter texts); an
    identifier or quoted name cut short that cannot be completed unambiguously;
    a text with no letters. Repaired: an identifier cut short at the end of the
    text (``"Use the certified view analytics."`` from feedback naming
    ``analytics.revenue_certified`` becomes ``"... analytics.revenue_certified."``)
    and a quoted name cut short, when exactly one name of the batch completes it;
    a text longer than ``limit`` characters, clipped by :func:`clip_principle`.

    Returns:
        ``(text, "")`` with the (possibly repaired) text, or ``(None, reason)``.
    """
    text = " ".join(text.split())
    if not any(c.isalpha() for c in text):
        return None, "has no words"
    if _PLACEHOLDER.search(text):
        return None, f"is a placeholder ({_PLACEHOLDER.search(text).group()})"  # type: ignore[union-attr]
    words = _normalise(text).split()
    if f" {' '.join(words)} " in f" {batch.scaffold} " or (
        len(words) >= _COPY_RUN and _copied_share(words, batch.scaffold_grams, batch.scaffold) >= _COPY_SHARE
    ):
        return None, "echoes the distillation prompt"
    for rid, case_text, grams in batch.cases:
        if _copied_share(words, grams, case_text) >= _COPY_SHARE:
            return None, f"copies the text of case {rid!r}"
    repaired, reason = _repair_identifiers(text, batch)
    if repaired is None:
        return None, reason
    repaired, reason = _repair_quotes(repaired, batch)
    if repaired is None:
        return None, reason
    clipped = clip_principle(repaired, limit)
    if clipped is None:
        return None, f"is longer than {limit} characters with no word boundary to clip at"
    return clipped, ""


class UnparseableAnswer(ValueError):
    """A model's answer could not be read (no JSON, wrong shape); retried like a transient error."""


def _retryable(exc: BaseException) -> bool:
    """Distillation and the classification calls retry transient errors and unreadable answers."""
    return isinstance(exc, UnparseableAnswer) or is_transient(exc)


def retrying(ask: Any, counter: CallCounter, max_retries: int, backoff_s: float | None, label: str) -> Any:
    """``ask`` (an async function of the prompt) as a runnable that retries transient errors and unreadable answers.

    At most ``max_retries`` retries, with exponential backoff from ``backoff_s`` plus jitter;
    each call counts in ``counter``. Other errors (authentication, bad request) are raised at once.
    """
    first = RETRY_DEFAULTS["backoff_s"] if backoff_s is None else backoff_s
    return retrying_call(
        RunnableLambda(ask),
        counter,
        retries=max_retries,
        backoff_s=first,
        backoff_max_s=max(first, RETRY_DEFAULTS["backoff_max_s"]),
        retry_if=_retryable,
        label=label,
    )


@dataclass
class DistillResult:
    """What a distillation run produced.

    Attributes:
        principles: new candidate principles (before de-duplication), in the order of
            their batches (records given later come later: newer feedback).
        distilled: ids of records whose batch succeeded.
        failed: record id -> error message, for batches that failed after retries.
        refused: principles the model gave that :func:`vet_principle` refused:
            ``{"text", "sources", "reason"}``.
        calls: LLM calls made (retries included).
        usage: tokens spent.
    """

    principles: list[Principle] = field(default_factory=list)
    distilled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    refused: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    usage: dict[str, int] = field(default_factory=lambda: dict(empty_usage()))


KNOWN_TOKEN_BUDGET = 2000
"""Most estimated tokens of known principles shown in a distillation prompt (a quarter of the
context window at most, where it is known)."""


def fit_known(known: list[Principle], token_budget: int) -> list[Principle]:
    """The newest known principles whose texts fit ``token_budget`` estimated tokens, in stored order.

    Known principles are shown so the LLM does not restate them; one it restates anyway
    is merged by consolidation (:func:`memalign_graph.semantic.merge_principles`), so
    leaving the oldest out when memory outgrows the prompt costs duplicates nothing.
    """
    kept: list[Principle] = []
    used = 0
    for principle in reversed(known):
        cost = estimate_tokens(encode_data(principle["text"])) + 1
        if used + cost > token_budget:
            break
        kept.append(principle)
        used += cost
    return kept[::-1]


def _answer_tokens(max_principles: int, principle_chars: int, sources: int, longest_id: int) -> int:
    """Tokens of the longest answer the schema allows.

    Principle text (up to ``2 * principle_chars`` characters) at one token per two characters
    (prose runs at about four), ids at one per two, as many sources as a batch can cite.
    """
    return max_principles * (principle_chars + sources * (longest_id // 2 + 4) + 24) + 32


async def adistill(
    model: BaseChatModel,
    spec: JudgeSpec,
    records: list[FeedbackRecord],
    known: list[Principle],
    *,
    batch_size: int = 50,
    token_budget: int | None = None,
    concurrency: int = 8,
    max_retries: int = 2,
    backoff_s: float | None = None,
    max_principles: int | None = None,
    principle_chars: int = 200,
    progress: Any = None,
) -> DistillResult:
    """Distill principles from ``records`` in concurrent batches.

    Args:
        model: any LangChain chat model.
        spec: the judge.
        records: salient feedback records (see :func:`is_salient`), oldest first.
        known: principles already in memory, shown so they are not repeated (the newest that
            fit :data:`KNOWN_TOKEN_BUDGET`, see :func:`fit_known`).
        batch_size: most records per call (50: MemAlign's batch size).
        token_budget: most estimated prompt tokens of records per call; ``None``: as many
            as the model's context window holds after the instructions, the known principles
            and the longest answer, where the window is known (:func:`context_window`), else
            :data:`DEFAULT_TOKEN_BUDGET`. A given budget is still lowered to fit a known window.
        concurrency: most calls in flight.
        max_retries: retries per batch after a transient error or an unreadable answer
            (``max_retries + 1`` calls at most); other errors are not retried.
        backoff_s: first retry delay in seconds, doubled each retry, plus up to as much
            random jitter (``None``: ``memalign_graph.faults.RETRY_DEFAULTS["backoff_s"]``).
        max_principles: most principles one call may return (``None``: :func:`allowed_principles`
            of the batch's size); an answer with more is cut.
        principle_chars: most characters per principle (longer ones are clipped at a
            sentence or word boundary, see :func:`clip_principle`).
        progress: optional object with ``update(n)`` (e.g. a tqdm bar), advanced per record.

    Returns:
        A :class:`DistillResult`; failures are reported in it (record id ->
        ``"ErrorType: message (after N attempt(s))"``), not raised.

    Raises:
        ValueError: if the model's known context window leaves no room for records.
    """
    result = DistillResult()
    if not records:
        return result
    window = context_window(model)
    known = fit_known(known, min(KNOWN_TOKEN_BUDGET, window // 4) if window else KNOWN_TOKEN_BUDGET)
    semaphore = asyncio.Semaphore(max(1, concurrency))
    author = f"distill:{model_name(model)}"
    most = max_principles or allowed_principles(min(batch_size, len(records)))
    longest_id = max(len(r["id"]) for r in records)
    answer_tokens = _answer_tokens(most, principle_chars, min(MAX_SOURCES, batch_size, len(records)), longest_id)
    budget = DEFAULT_TOKEN_BUDGET if token_budget is None else token_budget
    if window is not None:
        fixed = sum(estimate_tokens(m.text) for m in build_distill_messages(spec, [], known, most))
        room = window - answer_tokens - fixed - 256
        budget = room if token_budget is None else min(token_budget, room)
        if budget < 256:
            raise ValueError(
                f"model {model_name(model)!r}: its {window}-token context leaves no room for feedback records "
                f"after {len(known)} known principles; use a model with a larger context"
            )
    batches = plan_batches(records, batch_size, budget)
    found_per_batch: list[list[Principle]] = [[] for _ in batches]

    async def run(index: int, batch: list[FeedbackRecord]) -> None:
        ids = [r["id"] for r in batch]
        allowed = max_principles or allowed_principles(len(batch))
        bound = bind_structured(
            model,
            distill_schema(ids, allowed, principle_chars),
            "principles",
            logprobs=False,
            max_tokens=answer_tokens,
        )
        messages = build_distill_messages(spec, batch, known, allowed)

        async def ask(prompt: list[BaseMessage]) -> list[tuple[str, list[str]]]:
            answer = await bound.ainvoke(prompt)
            add_usage(result.usage, answer)  # type: ignore[arg-type]
            try:
                return parse_principles(answer.text, ids, allowed)
            except ValueError as exc:
                raise UnparseableAnswer(str(exc)) from exc

        counter = CallCounter()
        label = f"distillation of {ids[:3]}{'...' if len(ids) > 3 else ''}"
        call = retrying(ask, counter, max_retries, backoff_s, label)
        async with semaphore:
            try:
                found = await call.ainvoke(messages)
            except Exception as exc:  # noqa: BLE001 - any provider error is reported by record id, not raised
                result.failed.update(dict.fromkeys(ids, f"{describe_error(exc)} (after {counter.n} attempt(s))"))
            else:
                text_of = BatchText.of(spec, batch, allowed)
                for text, sources in found:
                    vetted, reason = vet_principle(text, text_of, principle_chars)
                    if vetted is None:
                        log.warning("distilled principle refused: %r %s (sources %s)", text[:200], reason, sources)
                        result.refused.append({"text": text, "sources": sources, "reason": reason})
                    else:
                        found_per_batch[index].append(new_principle(vetted, sources, author))
                result.distilled.extend(ids)
            finally:
                result.calls += counter.n
        if progress is not None:
            progress.update(len(batch))

    await asyncio.gather(*(run(i, b) for i, b in enumerate(batches)))
    result.principles = [p for found in found_per_batch for p in found]
    return result
