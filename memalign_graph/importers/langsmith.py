"""Expert feedback from LangSmith: a project through the ``langsmith`` client, or its SDK's export files.

See :mod:`memalign_graph.importers` for how a run and its feedback become records.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from memalign_graph.errors import RecordError
from memalign_graph.importers.records import (
    ImportResult,
    Resolve,
    _fits,
    _Options,
    _options,
    _records,
    _Verdict,
    case_field,
)
from memalign_graph.spec import JudgeSpec

LANGSMITH_RUNS_PER_FEEDBACK_QUERY = 100
"""Run ids per ``list_feedback`` call: they travel in the query string, which servers cap at a few KB."""


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
        feedback_name: the feedback ``key`` to import (default: as in :func:`~memalign_graph.importers.from_mlflow`).
        resolve: ``"newest"`` or ``"majority"`` (see :mod:`memalign_graph.importers`).
        value_map: feedback value or score -> judge value (see :func:`~memalign_graph.importers.from_mlflow`).
        source: named in error messages.
        ledger: the memory's ledger, to recognise records keyed by the bare run id (see
            :func:`~memalign_graph.importers.from_mlflow`).

    Returns:
        An :class:`~memalign_graph.importers.ImportResult`, records in the order of ``runs``, ids from
        :func:`~memalign_graph.importers.record_key`; feedback on a run that is not among ``runs`` is listed
        in ``skipped``.

    Raises:
        ValueError: for a pairwise judge or an unknown ``resolve``.
        RecordError: as :func:`~memalign_graph.importers.from_mlflow`, naming the run and the feedback id (a numeric
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
        feedback_name: the feedback ``key`` to import (default: as in :func:`~memalign_graph.importers.from_mlflow`).
        resolve: ``"newest"`` or ``"majority"`` (see :mod:`memalign_graph.importers`).
        value_map: feedback value or score -> judge value (see :func:`~memalign_graph.importers.from_mlflow`).
        ledger: the memory's ledger (see :func:`~memalign_graph.importers.from_mlflow`).

    Returns:
        An :class:`~memalign_graph.importers.ImportResult` (see :func:`langsmith_records`).

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
        feedback_name: the feedback ``key`` to import (default: as in
            :func:`~memalign_graph.importers.from_mlflow`); given, only feedback with that key is fetched.
        resolve: ``"newest"`` or ``"majority"`` (see :mod:`memalign_graph.importers`).
        value_map: feedback value or score -> judge value (see :func:`~memalign_graph.importers.from_mlflow`).
        max_runs: read at most this many root runs per project (newest first); ``None``: all.
        ledger: the memory's ledger (see :func:`~memalign_graph.importers.from_mlflow`).

    Returns:
        An :class:`~memalign_graph.importers.ImportResult` (see :func:`langsmith_records`).

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
