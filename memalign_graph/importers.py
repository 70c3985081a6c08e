"""Expert feedback in from where it already lives: MLflow traces and LangSmith runs.

:func:`from_mlflow` reads traces with human assessments from an MLflow tracking
store (where MLflow's own MemAlign optimizer reads them); :func:`from_langsmith` reads
runs and their feedback as the LangSmith SDK exports them (``Run`` / ``Feedback``
objects serialised as JSON or JSONL; :func:`langsmith_records` takes the objects
themselves). Both return feedback records (see :mod:`memalign_graph.spec`) ready for
:meth:`memalign_graph.memory.Memory.align`. The way back out, the aligned judge as an
evaluator, is :func:`memalign_graph.evaluators.as_evaluator`.

How a trace or run becomes a record:

* ``id``: the MLflow trace id (``tr-…``) or the LangSmith run id, so ``memalign forget``
  can name it; re-importing the same trace replaces its episode only if its content changed.
* ``inputs`` / ``outputs``: the trace's request / response (the run's inputs / outputs).
  JSON text is decoded; an object with a single key is replaced by its value
  (``{"question": "2+2?"}`` becomes ``"2+2?"``), as :func:`~memalign_graph.evaluators.as_evaluator` does with the
  cases it judges, so an imported episode and a later case of the same content match.
* ``value`` / ``feedback``: the expert's value and rationale (MLflow) or value-or-score and
  comment (LangSmith). Human feedback only: MLflow assessments whose source type is
  ``HUMAN``; LangSmith feedback whose source type is not ``model``. The newest
  machine verdict on the same feedback name becomes ``judge_value`` when it is an allowed value.
* ``metadata``: where it came from (trace or run id, assessment ids, experts, how it was resolved).

Several human assessments on one trace (one feedback name) are resolved by ``resolve``:

* ``"newest"`` (default): the assessment updated last wins, value and rationale together;
  an expert who changes their mind or corrects a colleague is followed.
* ``"majority"``: the value most experts gave wins; a tie goes to the value whose latest
  assessment is newest; the rationale is that of the newest assessment with the winning value.

MLflow assessments that were overridden (``valid`` false) or carry an error instead of a
value are ignored.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from memalign_graph.errors import RecordError
from memalign_graph.spec import FeedbackRecord, JudgeSpec, Value, parse_record

Resolve = Literal["newest", "majority"]
RESOLVE_CHOICES: tuple[str, ...] = ("newest", "majority")
MLFLOW_OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}
"""Environment MLflow needs to start without reaching the network (set only where unset)."""


@dataclass
class ImportResult:
    """What an import found.

    Attributes:
        records: feedback records, one per trace or run with human feedback, in source order.
        feedback_name: the MLflow assessment name / LangSmith feedback key imported.
        skipped: source id -> why it gave no record (no request, feedback on a run not in the export, …).
        disagreements: record id -> ``{value: count}`` where experts gave different values.
        source: ``"mlflow"`` or ``"langsmith"``.
    """

    records: list[FeedbackRecord]
    feedback_name: str
    skipped: dict[str, str] = field(default_factory=dict)
    disagreements: dict[str, dict[str, int]] = field(default_factory=dict)
    source: str = ""


@dataclass
class _Verdict:
    """One assessment or feedback item, source-neutral."""

    id: str
    target: str
    name: str
    value: Any
    rationale: str | None
    time: float
    human: bool
    expert: str | None
    order: int


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


def _coerce(value: Any, spec: JudgeSpec, value_map: Mapping[str, Any], where: str) -> Value:
    key = _map_key(value)
    if key in value_map:
        return spec.coerce_value(value_map[key], where)
    if isinstance(value, bool) and spec.kind != "numeric":
        raise RecordError(
            where,
            f"value {value} is a yes/no answer and the judge wants {spec.describe_values()}; "
            "map it, e.g. --value-map true=LABEL --value-map false=LABEL (value_map={'true': ..., 'false': ...})",
        )
    return spec.coerce_value(value, where)


def _pick_name(verdicts: list[_Verdict], spec: JudgeSpec, name: str | None, source: str) -> str:
    found = Counter(v.name for v in verdicts if v.human)
    if name is not None:
        return name
    if spec.name in found:
        return spec.name
    if len(found) == 1:
        return next(iter(found))
    if not found:
        raise RecordError(source, "no human feedback found")
    listed = ", ".join(f"{n!r} ({c})" for n, c in sorted(found.items()))
    raise RecordError(source, f"human feedback under several names: {listed}; choose one with --feedback-name")


def _resolve(
    verdicts: list[_Verdict], spec: JudgeSpec, value_map: Mapping[str, Any], how: Resolve, where: str
) -> tuple[_Verdict, Value | None, dict[str, int]]:
    """The winning verdict, its coerced value (``None`` if it has none) and the votes per value."""
    newest_first = sorted(verdicts, key=lambda v: (v.time, v.order), reverse=True)
    values: list[tuple[_Verdict, Value]] = [
        (v, _coerce(v.value, spec, value_map, f"{where} ({v.id})")) for v in newest_first if v.value is not None
    ]
    votes = Counter(str(value) for _, value in values)
    if how == "newest" or not values:
        winner = newest_first[0]
        value = next((val for v, val in values if v is winner), None)
        return winner, value, dict(votes)
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


def _records(
    kind: str,
    source: str,
    verdicts: list[_Verdict],
    cases: Mapping[str, dict[str, Any]],
    spec: JudgeSpec,
    name: str | None,
    resolve: Resolve,
    value_map: Mapping[str, Any] | None,
) -> ImportResult:
    """The records of the human verdicts on ``cases`` from ``source`` (``kind``: ``"mlflow"`` or ``"langsmith"``)."""
    value_map = dict(value_map or {})
    chosen = _pick_name(verdicts, spec, name, source)
    by_target: dict[str, list[_Verdict]] = {}
    for v in verdicts:
        if v.name == chosen:
            by_target.setdefault(v.target, []).append(v)
    result = ImportResult(records=[], feedback_name=chosen, source=kind)
    for target, case in cases.items():
        found = by_target.get(target, [])
        human = [v for v in found if v.human]
        if not human:
            continue
        where = f"{kind} {'trace' if kind == 'mlflow' else 'run'} {target}"
        if case.get("inputs") in (None, "") or case.get("outputs") in (None, ""):
            result.skipped[target] = "no inputs or no outputs recorded"
            continue
        winner, value, votes = _resolve(human, spec, value_map, resolve, where)
        obj: dict[str, Any] = {"id": target, "inputs": case["inputs"], "outputs": case["outputs"]}
        if value is not None:
            obj["value"] = value
        if winner.rationale and winner.rationale.strip():
            obj["feedback"] = winner.rationale
        machine = sorted((v for v in found if not v.human), key=lambda v: (v.time, v.order))
        if machine and machine[-1].value is not None:
            try:
                obj["judge_value"] = _coerce(machine[-1].value, spec, value_map, where)
            except RecordError:
                pass  # a machine verdict outside the judge's values is context, not expert data
        obj["metadata"] = {
            "source": kind,
            **case.get("metadata", {}),
            "feedback_name": chosen,
            "feedback_ids": [v.id for v in human],
            "experts": sorted({v.expert for v in human if v.expert}),
            "resolved_by": resolve if len(human) > 1 else "single",
        }
        if len(votes) > 1:
            result.disagreements[target] = votes
        if "value" not in obj and "feedback" not in obj:
            result.skipped[target] = "human feedback without a value or a rationale"
            continue
        result.records.append(parse_record(obj, spec, where=where, feedback=True, require_id=True))
    for target in by_target.keys() - cases.keys():
        if any(v.human for v in by_target[target]):
            result.skipped[target] = f"feedback on {target}, which is not in the {kind} data read"
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


def from_mlflow(
    tracking_uri: str,
    spec: JudgeSpec,
    *,
    experiments: Sequence[str] = (),
    feedback_name: str | None = None,
    resolve: Resolve = "newest",
    value_map: Mapping[str, Any] | None = None,
    max_traces: int | None = None,
) -> ImportResult:
    """Feedback records from the traces of an MLflow tracking store that carry human assessments.

    Needs ``mlflow`` (``pip install 'memalign-graph[mlflow]'``), imported only here.

    Args:
        tracking_uri: the tracking store, e.g. ``sqlite:///mlflow.db``, ``http://host:5000``,
            ``databricks``, or a ``file:`` / path store.
        spec: the judge the records are for (decides which values are allowed).
        experiments: experiment names or ids to read; empty: every experiment in the store.
        feedback_name: the assessment name to import; ``None``: the judge's name if present,
            else the only human feedback name found (several: :class:`RecordError` listing them).
        resolve: ``"newest"`` or ``"majority"`` for several human assessments on one trace
            (see the module docstring).
        value_map: assessment value -> judge value, keys lower-case text (``{"true": "pass"}``;
            ``True``, ``"True"`` and ``"true"`` all match ``"true"``); values not in it must
            already be allowed values.
        max_traces: read at most this many traces (newest first); ``None``: all.

    Returns:
        An :class:`ImportResult`; records in the order MLflow lists the traces (newest first).

    Raises:
        ImportError: if mlflow is not installed (names the extra).
        ValueError: for an unknown experiment, a store MLflow cannot read, a pairwise judge, or an
            unknown ``resolve``.
        RecordError: naming the trace and the assessment, for a value the judge does not allow;
            or naming the store if no human feedback was found or its name is ambiguous.
    """
    how = _check_resolve(resolve)
    _check_spec(spec, tracking_uri)
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
            if type(a).__name__ != "Feedback" or a.valid is False or getattr(a, "error", None) is not None:
                continue
            source_type = str(getattr(a.source, "source_type", "")).upper()
            verdicts.append(
                _Verdict(
                    id=a.assessment_id,
                    target=tid,
                    name=a.name,
                    value=a.value,
                    rationale=a.rationale,
                    time=_ms(a.last_update_time_ms or a.create_time_ms),
                    human=source_type.endswith("HUMAN"),
                    expert=getattr(a.source, "source_id", None),
                    order=len(verdicts),
                )
            )
    return _records("mlflow", tracking_uri, verdicts, cases, spec, feedback_name, how, value_map)


def _timestamp(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


def langsmith_records(
    runs: Iterable[Any],
    feedback: Iterable[Any],
    spec: JudgeSpec,
    *,
    feedback_name: str | None = None,
    resolve: Resolve = "newest",
    value_map: Mapping[str, Any] | None = None,
    source: str = "langsmith",
) -> ImportResult:
    """Feedback records from LangSmith SDK objects (``langsmith.schemas.Run`` and ``Feedback``).

    A run's ``inputs`` / ``outputs`` are the case; a feedback item's ``value`` (or its
    ``score`` when it has no value) is the expert's value, its ``comment`` the rationale.
    Feedback whose ``feedback_source.type`` is ``"model"`` is the machine's verdict
    (``judge_value``); every other source (``api``, ``app``, annotation queues, none) is human.

    Args:
        runs: ``Run`` objects (e.g. from ``Client.list_runs``).
        feedback: ``Feedback`` objects (e.g. from ``Client.list_feedback``).
        spec: the judge the records are for.
        feedback_name: the feedback ``key`` to import (default: as in :func:`from_mlflow`).
        resolve: ``"newest"`` or ``"majority"`` (see the module docstring).
        value_map: feedback value or score -> judge value (see :func:`from_mlflow`).
        source: named in error messages.

    Returns:
        An :class:`ImportResult`, records in the order of ``runs``; feedback on a run that is
        not among ``runs`` is listed in ``skipped``.

    Raises:
        ValueError: for a pairwise judge or an unknown ``resolve``.
        RecordError: as :func:`from_mlflow`, naming the run and the feedback id.
    """
    how = _check_resolve(resolve)
    _check_spec(spec, source)
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
        target = item.run_id or item.trace_id
        if target is None:
            continue
        kind = getattr(item.feedback_source, "type", None) if item.feedback_source else None
        verdicts.append(
            _Verdict(
                id=str(item.id),
                target=str(target),
                name=item.key,
                value=item.value if item.value is not None else item.score,
                rationale=item.comment,
                time=_timestamp(item.modified_at or item.created_at),
                human=kind != "model",
                expert=_langsmith_expert(item.feedback_source),
                order=len(verdicts),
            )
        )
    return _records("langsmith", source, verdicts, cases, spec, feedback_name, how, value_map)


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
        runs, feedback, spec, feedback_name=feedback_name, resolve=resolve, value_map=value_map, source=source
    )


__all__ = [
    "ImportResult",
    "case_field",
    "from_langsmith",
    "from_mlflow",
    "langsmith_records",
    "parse_value_map",
]
