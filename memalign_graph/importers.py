"""Expert feedback in from where it already lives: MLflow traces and LangSmith runs.

:func:`from_mlflow` reads traces with human assessments from an MLflow tracking store
(where MLflow's own MemAlign optimizer reads them); :func:`from_langsmith_project` reads
runs and their feedback from a LangSmith project through the ``langsmith`` client;
:func:`from_langsmith` reads them as the LangSmith SDK exports them (``Run`` / ``Feedback``
objects serialised as JSON or JSONL; :func:`langsmith_records` takes the objects
themselves). All return feedback records (see :mod:`memalign_graph.spec`) ready for
:meth:`memalign_graph.memory.Memory.align`. The way back out, the aligned judge as an
evaluator, is :func:`memalign_graph.evaluators.as_evaluator`.

How a trace or run becomes a record:

* ``id``: :func:`record_key` of the trace or run id and the assessment name imported
  (``tr-…#correct``), so importing a second name (``helpful``) adds records beside the first
  name's instead of replacing them, and ``memalign forget`` can name each one. Re-importing
  the same assessments is a no-op (no new memory version); an assessment whose content
  changed replaces its own episode only.
* ``inputs`` / ``outputs``: the trace's request / response (the run's inputs / outputs).
  JSON text is decoded; an object with a single key is replaced by its value
  (``{"question": "2+2?"}`` becomes ``"2+2?"``), as :func:`~memalign_graph.evaluators.as_evaluator` does with the
  cases it judges, so an imported episode and a later case of the same content match.
* ``value`` / ``feedback``: the expert's value and rationale. MLflow: human feedback
  (assessments of source type ``HUMAN``) and expectations (``mlflow.log_expectation``, ground
  truth, from any source but an LLM judge) whose value is one of the judge's values (after
  ``value_map``). LangSmith: feedback whose source type is not ``model`` (value, else score;
  comment) and the ``correction`` of any feedback, an evaluator's included (see
  :func:`langsmith_records`). The newest machine verdict on the same name becomes
  ``judge_value`` when it is an allowed value.
* ``expectations``: ground truth that is not one of the judge's values: the trace's
  expectations (``{"expected_answer": "4"}``; a single one by its value, as above), or a
  LangSmith correction that is a corrected output rather than a verdict.
* ``metadata``: where it came from (trace or run id, assessment ids and kinds, experts, how
  it was resolved).

Several human verdicts on one trace (one name) are resolved by ``resolve``:

* ``"newest"`` (default): the verdict updated last wins, value and rationale together;
  an expert who changes their mind or corrects a colleague is followed.
* ``"majority"``: the value most experts gave wins; a tie goes to the value whose latest
  verdict is newest; the rationale is that of the newest verdict with the winning value.

MLflow assessments that were overridden (``valid`` false) or carry an error instead of a
value are ignored.

Records imported before records were keyed by assessment (their id is the bare trace or
run id) are recognised when ``ledger`` is given (the CLI passes the memory's): a record
whose content equals the one stored under its bare trace id keeps that id, so re-importing
into such a memory neither duplicates nor replaces its episodes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from memalign_graph.errors import RecordError
from memalign_graph.spec import ID_PATTERN, FeedbackRecord, JudgeSpec, Value, parse_record, record_hash

Resolve = Literal["newest", "majority"]
RESOLVE_CHOICES: tuple[str, ...] = ("newest", "majority")
MLFLOW_OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}
"""Environment MLflow needs to start without reaching the network (set only where unset)."""
MAX_READABLE_KEY = 200
"""Most characters of a readable record key (``TRACE#NAME``); a longer one is hashed (see :func:`record_key`)."""
HASHED = "sha256:"
"""How a hashed part of a record key begins; a readable assessment name never does."""
LANGSMITH_RUNS_PER_FEEDBACK_QUERY = 100
"""Run ids per ``list_feedback`` call: they travel in the query string, which servers cap at a few KB."""

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
            them (see the module docstring).
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


def _ms(value: Any) -> float:
    return float(value) / 1000 if value is not None else 0.0


def _mlflow_traces(client: Any, tracking_uri: str, experiments: Sequence[str], max_traces: int | None) -> list[Any]:
    ids: list[str] = []
    for wanted in experiments:
        found = client.get_experiment_by_name(wanted)
        if found is None and wanted.isdigit():
            try:
                found = client.get_experiment(wanted)
            except Exception:  # MlflowException: no such id; reported below by name
                found = None
        if found is None:
            raise ValueError(f"{tracking_uri}: no experiment named {wanted!r}")
        ids.append(found.experiment_id)
    if not experiments:
        ids = [e.experiment_id for e in client.search_experiments()]
    traces: list[Any] = []
    for experiment_id in ids:
        token = None
        while max_traces is None or len(traces) < max_traces:
            page = client.search_traces(locations=[experiment_id], max_results=100, page_token=token)
            traces.extend(page)
            token = page.token
            if not token:
                break
    return traces if max_traces is None else traces[:max_traces]


def _mlflow_verdict(a: Any, tid: str, order: int) -> _Verdict | None:
    """An MLflow assessment as a verdict; ``None`` for one overridden, failed, or of another type."""
    kind = type(a).__name__
    if kind not in ("Feedback", "Expectation") or a.valid is False or getattr(a, "error", None) is not None:
        return None
    source_type = str(getattr(a.source, "source_type", "")).upper()
    expectation = kind == "Expectation"
    return _Verdict(
        id=a.assessment_id,
        target=tid,
        name=a.name,
        value=a.value,
        rationale=getattr(a, "rationale", None),
        time=_ms(a.last_update_time_ms or a.create_time_ms),
        # Expectations are ground truth whoever logged them (a person, or code from labelled data), unless a model.
        human=not source_type.endswith("LLM_JUDGE") if expectation else source_type.endswith("HUMAN"),
        expert=getattr(a.source, "source_id", None),
        order=order,
        kind="expectation" if expectation else "feedback",
    )


def from_mlflow(
    tracking_uri: str,
    spec: JudgeSpec,
    *,
    experiments: Sequence[str] = (),
    feedback_name: str | None = None,
    resolve: Resolve = "newest",
    value_map: Mapping[str, Any] | None = None,
    max_traces: int | None = None,
    ledger: Mapping[str, Mapping[str, Any]] | None = None,
) -> ImportResult:
    """Feedback records from the traces of an MLflow tracking store that carry human assessments.

    Human feedback (``mlflow.log_feedback`` with a ``HUMAN`` source) under the chosen name
    gives the expert's value and rationale; an expectation (``mlflow.log_expectation``) under
    that name gives the expert's value when it is one of the judge's values, so a trace with
    ground truth and no feedback is imported. Every other expectation on a trace (and one
    under the chosen name that is not a judge value) becomes the record's ``expectations``.

    Needs ``mlflow`` (``pip install 'memalign-graph[mlflow]'``), imported only here.

    Args:
        tracking_uri: the tracking store, e.g. ``sqlite:///mlflow.db``, ``http://host:5000``,
            ``databricks``, or a ``file:`` / path store.
        spec: the judge the records are for (decides which values are allowed).
        experiments: experiment names or ids to read; empty: every experiment in the store.
        feedback_name: the assessment name to import; ``None``: the judge's name if present
            (feedback or expectation), else the only human feedback name found, else the only
            expectation name (several: :class:`RecordError` listing them).
        resolve: ``"newest"`` or ``"majority"`` for several human verdicts on one trace
            (see the module docstring).
        value_map: assessment value -> judge value, keys lower-case text (``{"true": "pass"}``;
            ``True``, ``"True"`` and ``"true"`` all match ``"true"``); feedback values not in it
            must already be allowed values.
        max_traces: read at most this many traces (newest first); ``None``: all.
        ledger: the ledger of the memory the records go to (``Memory.records``), to recognise
            records an earlier import keyed by the bare trace id (see the module docstring).

    Returns:
        An :class:`ImportResult`; records in the order MLflow lists the traces (newest first),
        ids from :func:`record_key`.

    Raises:
        ImportError: if mlflow is not installed (names the extra).
        ValueError: for an unknown experiment, a store MLflow cannot read, a pairwise judge, or an
            unknown ``resolve``.
        RecordError: naming the trace and the assessment, for a feedback value the judge does not
            allow (with the ``--value-map`` that would map a yes/no or a score); or naming the
            store if no human verdict was found or its name is ambiguous.
    """
    opts = _options(spec, tracking_uri, feedback_name, resolve, value_map, ledger)
    for key, val in MLFLOW_OFFLINE_ENV.items():
        os.environ.setdefault(key, val)
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError as exc:
        raise ImportError("reading feedback from MLflow needs mlflow: pip install 'memalign-graph[mlflow]'") from exc

    try:
        traces = _mlflow_traces(MlflowClient(tracking_uri=tracking_uri), tracking_uri, experiments, max_traces)
    except ValueError:
        raise
    except Exception as exc:  # the store's own failures: MlflowException, SQLAlchemy or HTTP errors
        reason = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise ValueError(
            f"{tracking_uri}: cannot read traces from MLflow ({type(exc).__name__}: {reason.splitlines()[0]})"
        ) from exc

    verdicts: list[_Verdict] = []
    cases: dict[str, dict[str, Any]] = {}
    for trace in traces:
        info = trace.info
        tid = info.trace_id
        cases[tid] = {
            "inputs": case_field(trace.data.request),
            "outputs": case_field(trace.data.response),
            "metadata": {"trace_id": tid, "experiment_id": getattr(info, "experiment_id", None)},
        }
        for a in info.assessments or []:
            verdict = _mlflow_verdict(a, tid, len(verdicts))
            if verdict is not None:
                verdicts.append(verdict)
    return _records("mlflow", tracking_uri, verdicts, cases, opts)


def _timestamp(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


CORRECTION_TEXT_KEYS = ("explanation", "comment", "rationale")
"""Keys of a LangSmith ``correction`` object read as the expert's words (the UI's "explanation" first)."""


def _langsmith_verdicts(item: Any, order: int, opts: _Options) -> list[_Verdict]:
    """A LangSmith feedback item as verdicts: the item itself, or the correction made to it, or both (see below)."""
    target = item.run_id or item.trace_id
    if target is None:
        return []
    source = item.feedback_source
    machine = (getattr(source, "type", None) if source else None) == "model"
    base = _Verdict(
        id=str(item.id),
        target=str(target),
        name=item.key,
        value=item.value if item.value is not None else item.score,
        rationale=item.comment,
        time=_timestamp(item.modified_at or item.created_at),
        human=not machine,
        expert=_langsmith_expert(source),
        order=order,
    )
    if item.correction in (None, {}, ""):
        return [base]
    value, words, output = _correction(item.correction)
    if not isinstance(item.correction, dict) and not _fits(value, opts):
        value, output = None, case_field(item.correction)  # a corrected output, not a verdict
    if not machine:  # a person correcting their own feedback keeps what they did not correct
        value = base.value if value is None else value
        words = words or base.rationale
    corrected = _Verdict(
        id=f"{item.id}/correction",
        target=base.target,
        name=item.key,
        value=value,
        rationale=words,  # never a model's comment: it explains the verdict that was corrected
        time=base.time,
        human=True,
        expert=None if machine else base.expert,
        order=order + 1,
        kind="correction",
        output=output,
    )
    # The evaluator's verdict stays as what the judge said; a person's own feedback is superseded.
    return [base, corrected] if machine else [corrected]


def _correction(raw: Any) -> tuple[Any, str | None, Any]:
    """A LangSmith ``correction`` as ``(value, words, rest)``.

    An object: its ``value`` (else ``score``) is the corrected verdict, its ``explanation`` (or
    ``comment``, ``rationale``) the expert's words, and any other keys a corrected output
    (``rest``, kept as expectations). Anything else is the corrected verdict itself.
    """
    if not isinstance(raw, dict):
        return raw, None, None
    value = raw.get("value") if raw.get("value") is not None else raw.get("score")
    words = next((raw[k] for k in CORRECTION_TEXT_KEYS if isinstance(raw.get(k), str) and raw[k].strip()), None)
    rest = {k: v for k, v in raw.items() if k not in ("value", "score", *CORRECTION_TEXT_KEYS)}
    return value, words, (case_field(rest) if rest else None)


def langsmith_records(
    runs: Iterable[Any],
    feedback: Iterable[Any],
    spec: JudgeSpec,
    *,
    feedback_name: str | None = None,
    resolve: Resolve = "newest",
    value_map: Mapping[str, Any] | None = None,
    source: str = "langsmith",
    ledger: Mapping[str, Mapping[str, Any]] | None = None,
) -> ImportResult:
    """Feedback records from LangSmith SDK objects (``langsmith.schemas.Run`` and ``Feedback``).

    A run's ``inputs`` / ``outputs`` are the case; a feedback item's ``value`` (or its
    ``score`` when it has no value) is the expert's value, its ``comment`` the rationale.
    Feedback whose ``feedback_source.type`` is ``"model"`` is the machine's verdict
    (``judge_value``); every other source (``api``, ``app``, annotation queues, none) is human.

    A feedback item's ``correction`` (what a person sets with "Make correction" in the UI or
    ``Client.update_feedback(id, correction=...)``) is a human verdict that takes the item's
    place: ``{"score": 1}`` or ``{"value": "fail"}`` is the value, ``"explanation"`` (or
    ``"comment"``) the rationale, other keys a corrected output (kept as ``expectations``);
    a plain string is the value when it is one of the judge's values, else a corrected output.
    On an evaluator's feedback the evaluator's own value stays as ``judge_value``.

    Args:
        runs: ``Run`` objects (e.g. from ``Client.list_runs``).
        feedback: ``Feedback`` objects (e.g. from ``Client.list_feedback``).
        spec: the judge the records are for.
        feedback_name: the feedback ``key`` to import (default: as in :func:`from_mlflow`).
        resolve: ``"newest"`` or ``"majority"`` (see the module docstring).
        value_map: feedback value or score -> judge value (see :func:`from_mlflow`).
        source: named in error messages.
        ledger: the memory's ledger, to recognise records keyed by the bare run id (see :func:`from_mlflow`).

    Returns:
        An :class:`ImportResult`, records in the order of ``runs``, ids from :func:`record_key`;
        feedback on a run that is not among ``runs`` is listed in ``skipped``.

    Raises:
        ValueError: for a pairwise judge or an unknown ``resolve``.
        RecordError: as :func:`from_mlflow`, naming the run and the feedback id (a numeric
            score on a categorical judge: with the ``--value-map`` that would map it).
    """
    opts = _options(spec, source, feedback_name, resolve, value_map, ledger)
    cases: dict[str, dict[str, Any]] = {}
    for run in runs:
        rid = str(run.id)
        cases[rid] = {
            "inputs": case_field(run.inputs),
            "outputs": case_field(run.outputs),
            "metadata": {"run_id": rid, "run_name": run.name},
        }
    verdicts: list[_Verdict] = []
    for item in feedback:
        verdicts.extend(_langsmith_verdicts(item, len(verdicts), opts))
    return _records("langsmith", source, verdicts, cases, opts)


def _langsmith_expert(source: Any) -> str | None:
    if source is None:
        return None
    for attr in ("user_name", "user_id"):
        value = getattr(source, attr, None)
        if value:
            return str(value)
    return None


def _read_json_items(path: Path) -> Iterable[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, list):
        yield from ((f"{path}[{i}]", item) for i, item in enumerate(whole))
        return
    if isinstance(whole, dict):
        if "runs" in whole or "feedback" in whole:
            for group in ("runs", "feedback"):
                items = whole.get(group, [])
                if not isinstance(items, list):
                    raise RecordError(str(path), f"{group!r} must be a list of objects")
                yield from ((f"{path}: {group}[{i}]", item) for i, item in enumerate(items))
        else:
            yield str(path), whole
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except ValueError as exc:
            raise RecordError(f"{path}:{lineno}", f"not valid JSON ({exc})") from None


def from_langsmith(
    paths: str | Path | Sequence[str | Path],
    spec: JudgeSpec,
    *,
    feedback_name: str | None = None,
    resolve: Resolve = "newest",
    value_map: Mapping[str, Any] | None = None,
    ledger: Mapping[str, Mapping[str, Any]] | None = None,
) -> ImportResult:
    """Feedback records from LangSmith runs and feedback exported to files.

    Each file is JSONL (one object per line) or JSON (a list of objects, or
    ``{"runs": [...], "feedback": [...]}``); objects are ``Run`` and ``Feedback`` as the
    SDK serialises them (``run.model_dump(mode="json")``, ``run.json()``), told apart by
    their fields (feedback has ``key`` and ``run_id``) and validated with the SDK's own
    ``langsmith.schemas`` models. Runs and feedback may be in one file or several.

    Args:
        paths: one file or several.
        spec: the judge the records are for.
        feedback_name: the feedback ``key`` to import (default: as in :func:`from_mlflow`).
        resolve: ``"newest"`` or ``"majority"`` (see the module docstring).
        value_map: feedback value or score -> judge value (see :func:`from_mlflow`).
        ledger: the memory's ledger (see :func:`from_mlflow`).

    Returns:
        An :class:`ImportResult` (see :func:`langsmith_records`).

    Raises:
        FileNotFoundError: for a missing file.
        RecordError: ``"FILE:LINE: reason"`` for a line that is not JSON or not a run or feedback
            object; otherwise as :func:`langsmith_records`.
    """
    from langsmith.schemas import Feedback, Run
    from pydantic import ValidationError

    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    runs: list[Any] = []
    feedback: list[Any] = []
    for path in files:
        for where, obj in _read_json_items(path):
            if not isinstance(obj, dict):
                raise RecordError(where, "expected a LangSmith run or feedback object")
            is_feedback = "key" in obj and ("run_id" in obj or "trace_id" in obj)
            model = Feedback if is_feedback else Run
            if not is_feedback and "inputs" not in obj:
                raise RecordError(where, "neither a LangSmith run (no 'inputs') nor feedback (no 'key' and 'run_id')")
            try:
                (feedback if is_feedback else runs).append(model.model_validate(obj))
            except ValidationError as exc:
                first = exc.errors()[0]
                place = ".".join(str(p) for p in first["loc"])
                raise RecordError(where, f"not a valid LangSmith {model.__name__}: {place}: {first['msg']}") from None
    source = ", ".join(str(p) for p in files)
    return langsmith_records(
        runs,
        feedback,
        spec,
        feedback_name=feedback_name,
        resolve=resolve,
        value_map=value_map,
        source=source,
        ledger=ledger,
    )


def from_langsmith_project(
    projects: str | Sequence[str],
    spec: JudgeSpec,
    *,
    client: Any = None,
    feedback_name: str | None = None,
    resolve: Resolve = "newest",
    value_map: Mapping[str, Any] | None = None,
    max_runs: int | None = None,
    ledger: Mapping[str, Mapping[str, Any]] | None = None,
) -> ImportResult:
    """Feedback records from the root runs of LangSmith projects and their feedback, read through the client.

    Runs come from ``Client.list_runs(project_name=…, is_root=True)`` (a trace's case is its
    root run), feedback from ``Client.list_feedback(run_ids=…)``, :data:`LANGSMITH_RUNS_PER_FEEDBACK_QUERY`
    run ids a call; then as :func:`langsmith_records`. Feedback on child runs is not read.
    ``list_runs`` is the call every LangSmith server answers (its successor ``runs.query_v2``
    needs a self-hosted server 0.16 or later); the SDK's warning that it is deprecated is
    silenced here, where the caller did not call it.

    Args:
        projects: one project (tracing project or experiment) name, or several.
        spec: the judge the records are for.
        client: a ``langsmith.Client``; ``None``: a new one, which reads ``LANGSMITH_API_KEY``
            and ``LANGSMITH_ENDPOINT`` (a self-hosted server) from the environment.
        feedback_name: the feedback ``key`` to import (default: as in :func:`from_mlflow`); given,
            only feedback with that key is fetched.
        resolve: ``"newest"`` or ``"majority"`` (see the module docstring).
        value_map: feedback value or score -> judge value (see :func:`from_mlflow`).
        max_runs: read at most this many root runs per project (newest first); ``None``: all.
        ledger: the memory's ledger (see :func:`from_mlflow`).

    Returns:
        An :class:`ImportResult` (see :func:`langsmith_records`).

    Raises:
        ValueError: naming the server and the project, for a project that does not exist, a
            refused API key, or a server that cannot be reached or answers with an error.
        RecordError: as :func:`langsmith_records`.
    """
    from langsmith import Client
    from langsmith._internal._beta_decorator import LangSmithDeprecationWarning
    from langsmith.utils import LangSmithAuthError, LangSmithError, LangSmithNotFoundError

    names = [projects] if isinstance(projects, str) else list(projects)
    if not names:
        raise ValueError("name a LangSmith project to read runs from")
    client = client if client is not None else Client(auto_batch_tracing=False)  # reads only: no tracing thread
    server = f"LangSmith at {client.api_url}"
    source = f"{server}, project {', '.join(map(repr, names))}"
    _options(spec, source, feedback_name, resolve, value_map, ledger)  # refuse bad options before the first request
    runs: list[Any] = []
    feedback: list[Any] = []
    name = names[0]
    try:
        for name in names:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LangSmithDeprecationWarning)
                found = client.list_runs(project_name=name, is_root=True, limit=max_runs)
            runs.extend(found)
        keys = [feedback_name] if feedback_name is not None else None
        step = LANGSMITH_RUNS_PER_FEEDBACK_QUERY
        for start in range(0, len(runs), step):
            feedback.extend(client.list_feedback(run_ids=[r.id for r in runs[start : start + step]], feedback_key=keys))
    except LangSmithNotFoundError as exc:
        raise ValueError(f"{server}: no project named {name!r}") from exc
    except LangSmithAuthError as exc:
        raise ValueError(
            f"{server} refused the API key: set LANGSMITH_API_KEY to a key of the workspace that holds {name!r}"
        ) from exc
    except LangSmithError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"{server}: cannot read project {name!r} ({type(exc).__name__}: {first})") from exc
    return langsmith_records(
        runs,
        feedback,
        spec,
        feedback_name=feedback_name,
        resolve=resolve,
        value_map=value_map,
        source=source,
        ledger=ledger,
    )


__all__ = [
    "ImportResult",
    "case_field",
    "from_langsmith",
    "from_langsmith_project",
    "from_mlflow",
    "langsmith_records",
    "parse_value_map",
    "record_key",
]
