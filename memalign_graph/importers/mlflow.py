"""Expert feedback from MLflow traces: human assessments and expectations (see :mod:`memalign_graph.importers`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from memalign_graph.importers.records import (
    ImportResult,
    Resolve,
    _options,
    _records,
    _Verdict,
    case_field,
)
from memalign_graph.spec import JudgeSpec

MLFLOW_OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}
"""Environment MLflow needs to start without reaching the network (set only where unset)."""


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
            expectation name (several: :class:`~memalign_graph.errors.RecordError` listing them).
        resolve: ``"newest"`` or ``"majority"`` for several human verdicts on one trace
            (see :mod:`memalign_graph.importers`).
        value_map: assessment value -> judge value, keys lower-case text (``{"true": "pass"}``;
            ``True``, ``"True"`` and ``"true"`` all match ``"true"``); feedback values not in it
            must already be allowed values.
        max_traces: read at most this many traces (newest first); ``None``: all.
        ledger: the ledger of the memory the records go to (``Memory.records``), to recognise
            records an earlier import keyed by the bare trace id (see :mod:`memalign_graph.importers`).

    Returns:
        An :class:`~memalign_graph.importers.ImportResult`; records in the order MLflow lists the traces (newest first),
        ids from :func:`~memalign_graph.importers.record_key`.

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
