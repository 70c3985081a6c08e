"""What the importers share: a trace's or run's verdicts resolved into feedback records.

A source module (:mod:`~memalign_graph.importers.mlflow`, :mod:`~memalign_graph.importers.langsmith`)
reads its verdicts (``_Verdict``: one expert's or machine's assessment of one case) and hands them,
with the cases, to ``_records``, which picks the assessment name, maps values onto the judge's,
resolves several verdicts per case (``resolve``), keys each record (:func:`record_key`) and says
what it skipped and why (:class:`ImportResult`). The rules are in :mod:`memalign_graph.importers`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from memalign_graph.errors import RecordError
from memalign_graph.spec import ID_PATTERN, FeedbackRecord, JudgeSpec, Value, parse_record, record_hash

Resolve = Literal["newest", "majority"]
RESOLVE_CHOICES: tuple[str, ...] = ("newest", "majority")
MAX_READABLE_KEY = 200
"""Most characters of a readable record key (``TRACE#NAME``); a longer one is hashed (see :func:`record_key`)."""
HASHED = "sha256:"
"""How a hashed part of a record key begins; a readable assessment name never does."""

_SOURCE_ID = re.compile(r"[\w.:/@+=~-]+")  # ID_PATTERN without '#' and spaces


def record_key(source_id: str, name: str) -> str:
    """The record id of the verdicts named ``name`` on the trace or run ``source_id``.

    ``TRACE#NAME`` (``tr-7c03…#correct``) when the trace id is of the safe id characters
    without ``#`` and spaces, the name of the safe set (:data:`~memalign_graph.spec.ID_PATTERN`)
    and not beginning with :data:`HASHED`, and the whole at most :data:`MAX_READABLE_KEY`
    characters. Otherwise the part that does not qualify is replaced by a SHA-256 digest of
    both: ``TRACE#sha256:…`` (an unsafe or long name), or ``sha256:…`` (an unsafe trace id).

    Distinct ``(source_id, name)`` pairs give distinct keys: a readable key splits at its
    first ``#`` into exactly its pair, no readable name begins with ``sha256:``, and a key
    without ``#`` is always a digest. So no trace id or name, however crafted, can make one
    assessment's record replace another's episode.

    Args:
        source_id: the MLflow trace id or the LangSmith run id.
        name: the assessment name or feedback key.

    Returns:
        A record id that :func:`~memalign_graph.spec.parse_record` accepts.
    """
    readable = f"{source_id}#{name}"
    safe_source = _SOURCE_ID.fullmatch(source_id) is not None
    if safe_source and ID_PATTERN.fullmatch(name) and not name.startswith(HASHED) and len(readable) <= MAX_READABLE_KEY:
        return readable
    digest = hashlib.sha256(json.dumps([source_id, name]).encode("ascii")).hexdigest()[:32]
    if safe_source and len(source_id) + len(HASHED) + 33 <= MAX_READABLE_KEY:
        return f"{source_id}#{HASHED}{digest}"
    return HASHED + digest


@dataclass
class ImportResult:
    """What an import found.

    Attributes:
        records: feedback records, one per trace or run with a human verdict, in source order.
        feedback_name: the MLflow assessment name / LangSmith feedback key imported.
        skipped: source id -> why it gave no record (no request, ground truth outside the
            judge's values and no feedback, feedback on a run not in the export, …).
        disagreements: record id -> ``{value: count}`` where experts gave different values.
        source: ``"mlflow"`` or ``"langsmith"``.
        legacy_ids: ids of records that kept the bare trace or run id an earlier import gave
            them (see :mod:`memalign_graph.importers`).
    """

    records: list[FeedbackRecord]
    feedback_name: str
    skipped: dict[str, str] = field(default_factory=dict)
    disagreements: dict[str, dict[str, int]] = field(default_factory=dict)
    source: str = ""
    legacy_ids: list[str] = field(default_factory=list)

    def why_empty(self, where: str) -> str:
        """Why no record came from ``where`` (a store, project or files), in one sentence for an error message."""
        found = f"{where}: nothing to import under {_quoted(self.feedback_name)}"
        if not self.skipped:
            return f"{found}: no trace or run has a human verdict of that name"
        source_id, why = next(iter(self.skipped.items()))
        more = f" (and {len(self.skipped) - 1} more)" if len(self.skipped) > 1 else ""
        return f"{found}: {len(self.skipped)} skipped; {_shown(source_id)}: {why}{more}"


Kind = Literal["feedback", "expectation", "correction"]


@dataclass
class _Verdict:
    """One assessment, feedback item or correction, source-neutral.

    An expectation's value that is not one of the judge's values describes the case (it goes into
    ``expectations``) instead of being an error. ``output``: a corrected output that came with the
    verdict (a LangSmith correction), kept as expectations.
    """

    id: str
    target: str
    name: str
    value: Any
    rationale: str | None
    time: float
    human: bool
    expert: str | None
    order: int
    kind: Kind = "feedback"
    output: Any = None


@dataclass
class _Options:
    spec: JudgeSpec
    name: str | None
    resolve: Resolve
    value_map: dict[str, Any]
    ledger: Mapping[str, Mapping[str, Any]]


def _decode(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dict) and len(value) == 1:
        (inner,) = value.values()
        if isinstance(inner, (str, int, float)) and not isinstance(inner, bool):
            return inner
    return value


def case_field(value: Any) -> Any:
    """A trace's request/response or a run's inputs/outputs as a record field.

    JSON text is decoded; an object with one key whose value is a string or a number is
    replaced by that value. Anything else is returned as it is.
    """
    return _decode(value)


def _quoted(text: str, limit: int = 80) -> str:
    """A name from the source for a message: ``repr`` (control characters escaped), cut to ``limit``."""
    quoted = repr(text)
    return quoted if len(quoted) <= limit else f"{quoted[: limit - 16]}... ({len(text)} chars)"


def _shown(text: str, limit: int = 80) -> str:
    """An id from the source for a message: as it is if of the safe id characters and short, else :func:`_quoted`."""
    return text if len(text) <= limit and ID_PATTERN.fullmatch(text) else _quoted(text, limit)


def _map_key(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip().lower()


def parse_value_map(items: Iterable[str]) -> dict[str, str]:
    """``["true=pass", "false=fail"]`` (or ``"true=pass,false=fail"`` items) as a value map.

    Raises:
        ValueError: for an item without ``=`` or with an empty side.
    """
    out: dict[str, str] = {}
    for item in items:
        for pair in item.split(","):
            source, sep, target = pair.partition("=")
            if not sep or not source.strip() or not target.strip():
                raise ValueError(f"value map item {pair!r}: use FROM=TO, e.g. true=pass")
            out[source.strip().lower()] = target.strip()
    return out


def _map_hint(value: bool | int | float, spec: JudgeSpec) -> str:
    """``--value-map`` options that would map ``value`` (and its usual partner) onto the judge's values."""
    high, low = (spec.labels[0], spec.labels[-1]) if spec.kind != "numeric" else (spec.scale or (0, 0))[::-1]
    if isinstance(value, bool):
        pairs = [("true", high), ("false", low)]
    elif value in (0, 1):
        pairs = [("1", high), ("0", low)]
    else:
        pairs = [(_map_key(value), high)]
    options = " ".join(f"--value-map {a}={b}" for a, b in pairs)
    python = ", ".join(f"{a!r}: {b!r}" for a, b in pairs)
    return f"map it, e.g. {options} (value_map={{{python}}})"


def _coerce(value: Any, spec: JudgeSpec, value_map: Mapping[str, Any], where: str) -> Value:
    key = _map_key(value)
    if key in value_map:
        return spec.coerce_value(value_map[key], where)
    if isinstance(value, bool):
        raise RecordError(
            where,
            f"value {value} is a yes/no answer and the judge wants {spec.describe_values()}; {_map_hint(value, spec)}",
        )
    try:
        return spec.coerce_value(value, where)
    except RecordError as exc:
        if isinstance(value, (int, float)):
            raise RecordError(where, f"{exc.reason}; it is a score: {_map_hint(value, spec)}") from None
        raise


def _fits(value: Any, opts: _Options) -> bool:
    """Whether ``value`` is one of the judge's values (after the value map)."""
    try:
        _coerce(value, opts.spec, opts.value_map, "")
    except RecordError:
        return False
    return True


def _pick_name(verdicts: list[_Verdict], spec: JudgeSpec, name: str | None, source: str) -> str:
    if name is not None:
        return name
    said = Counter(v.name for v in verdicts if v.human and v.kind != "expectation")
    expected = Counter(v.name for v in verdicts if v.human and v.kind == "expectation")
    if spec.name in said or spec.name in expected:
        return spec.name
    found, what = (said, "feedback") if said else (expected, "expectations")
    if len(found) == 1:
        return next(iter(found))
    if not found:
        raise RecordError(source, "no human feedback or expectation found")
    listed = ", ".join(f"{_quoted(n)} ({c})" for n, c in sorted(found.items()))
    raise RecordError(source, f"human {what} under several names: {listed}; choose one with --feedback-name")


def _resolve(
    verdicts: list[tuple[_Verdict, Value | None]], how: Resolve
) -> tuple[_Verdict, Value | None, dict[str, int]]:
    """The winning verdict, its coerced value (``None`` if it has none) and the votes per value."""
    newest_first = sorted(verdicts, key=lambda item: (item[0].time, item[0].order), reverse=True)
    values = [(v, value) for v, value in newest_first if value is not None]
    votes = Counter(str(value) for _, value in values)
    if how == "newest" or not values:
        return newest_first[0][0], newest_first[0][1], dict(votes)
    top = max(votes.values())
    # ``values`` is newest first, so the first value with the top count has the newest latest vote.
    value = next(val for _, val in values if votes[str(val)] == top)
    agreeing = [v for v, val in values if val == value]
    winner = next((v for v in agreeing if v.rationale), agreeing[0])
    return winner, value, dict(votes)


def _check_resolve(resolve: str) -> Resolve:
    if resolve not in RESOLVE_CHOICES:
        raise ValueError(f"resolve={resolve!r}: use one of {', '.join(RESOLVE_CHOICES)}")
    return resolve  # type: ignore[return-value]


def _check_spec(spec: JudgeSpec, source: str) -> None:
    if spec.kind == "pairwise":
        raise ValueError(
            f"{source}: a trace or run has one output, and judge {spec.name!r} is pairwise (it needs two); "
            "import into a categorical or numeric judge"
        )


def _options(
    spec: JudgeSpec,
    source: str,
    name: str | None,
    resolve: str,
    value_map: Mapping[str, Any] | None,
    ledger: Mapping[str, Mapping[str, Any]] | None,
) -> _Options:
    how = _check_resolve(resolve)
    _check_spec(spec, source)
    return _Options(spec, name, how, dict(value_map or {}), ledger or {})


def _weigh(
    found: list[_Verdict], opts: _Options, where: str
) -> tuple[list[tuple[_Verdict, Value | None]], dict[str, Any], list[str]]:
    """The human verdicts with their coerced values, ground truth outside the judge's values, and why it is outside.

    Ground truth is keyed by the expectation's name, or ``"correction"`` for a corrected output.
    An expectation under the chosen name whose value is not a judge value is ground truth only.
    """
    weighed: list[tuple[_Verdict, Value | None]] = []
    outside: dict[str, Any] = {}
    why: list[str] = []
    for v in sorted(found, key=lambda v: (v.time, v.order)):
        if not v.human:
            continue
        if v.output is not None:
            outside["correction"] = v.output
        if v.value is None:
            weighed.append((v, None))
            continue
        try:
            weighed.append((v, _coerce(v.value, opts.spec, opts.value_map, f"{where} ({_shown(v.id)})")))
        except RecordError as exc:
            if v.kind != "expectation":
                raise
            outside[v.name] = v.value
            why.append(f"expectation {_quoted(v.name)}: {exc.reason}")
    return weighed, outside, why


def _legacy_id(record: FeedbackRecord, target: str, key: str, ledger: Mapping[str, Mapping[str, Any]]) -> str:
    """``target`` if the memory holds this very record under the bare trace or run id an earlier import gave it."""
    if key in ledger or target not in ledger:
        return key
    # As the earlier import wrote it (no expectations), or as re-importing it under that id since did.
    earlier = {k: v for k, v in record.items() if k != "expectations"}
    return target if ledger[target].get("hash") in (record_hash(earlier), record_hash(record)) else key


def _records(
    kind: str,
    source: str,
    verdicts: list[_Verdict],
    cases: Mapping[str, dict[str, Any]],
    opts: _Options,
) -> ImportResult:
    """The records of the human verdicts on ``cases`` from ``source`` (``kind``: ``"mlflow"`` or ``"langsmith"``)."""
    chosen = _pick_name(verdicts, opts.spec, opts.name, source)
    by_target: dict[str, list[_Verdict]] = {}
    for v in verdicts:
        by_target.setdefault(v.target, []).append(v)
    result = ImportResult(records=[], feedback_name=chosen, source=kind)
    for target, case in cases.items():
        on_case = by_target.get(target, [])
        found = [v for v in on_case if v.name == chosen]
        if not any(v.human for v in found):
            continue
        where = f"{kind} {'trace' if kind == 'mlflow' else 'run'} {_shown(target)}"
        if case.get("inputs") in (None, "") or case.get("outputs") in (None, ""):
            result.skipped[target] = "no inputs or no outputs recorded"
            continue
        weighed, outside, why = _weigh(found, opts, where)
        if not weighed:
            result.skipped[target] = (
                f"{'; '.join(why)}; and no human feedback named {chosen!r} on it (ground truth outside the judge's "
                "values goes into the expectations of the records of human feedback: import those with --feedback-name)"
            )
            continue
        winner, value, votes = _resolve(weighed, opts.resolve)
        expectations = {
            v.name: v.value
            for v in sorted(on_case, key=lambda v: (v.time, v.order))
            if v.kind == "expectation" and v.human and v.name != chosen
        } | outside
        key = record_key(target, chosen)
        obj: dict[str, Any] = {"id": key, "inputs": case["inputs"], "outputs": case["outputs"]}
        if expectations:
            obj["expectations"] = case_field(expectations)
        if value is not None:
            obj["value"] = value
        if winner.rationale and winner.rationale.strip():
            obj["feedback"] = winner.rationale
        machine = sorted((v for v in found if not v.human), key=lambda v: (v.time, v.order))
        if machine and machine[-1].value is not None:
            try:
                obj["judge_value"] = _coerce(machine[-1].value, opts.spec, opts.value_map, where)
            except RecordError:
                pass  # a machine verdict outside the judge's values is context, not expert data
        human = [v for v, _ in weighed]
        obj["metadata"] = {
            "source": kind,
            **case.get("metadata", {}),
            "feedback_name": chosen,
            "feedback_ids": [v.id for v in human],
            "assessment_types": sorted({v.kind for v in human}),
            "experts": sorted({v.expert for v in human if v.expert}),
            "resolved_by": opts.resolve if len(human) > 1 else "single",
        }
        if "value" not in obj and "feedback" not in obj:
            result.skipped[target] = "human verdict without a value or a rationale"
            continue
        record = parse_record(obj, opts.spec, where=where, feedback=True, require_id=True)
        record["id"] = _legacy_id(record, target, key, opts.ledger)
        if record["id"] != key:
            result.legacy_ids.append(record["id"])
        if len(votes) > 1:
            result.disagreements[record["id"]] = votes
        result.records.append(record)
    for target in by_target.keys() - cases.keys():
        if any(v.human and v.name == chosen for v in by_target[target]):
            result.skipped[target] = f"feedback on {_shown(target)}, which is not in the {kind} data read"
    return result
