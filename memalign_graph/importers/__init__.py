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

from memalign_graph.importers.langsmith import from_langsmith, from_langsmith_project, langsmith_records
from memalign_graph.importers.mlflow import from_mlflow
from memalign_graph.importers.records import (
    RESOLVE_CHOICES,
    ImportResult,
    Resolve,
    case_field,
    parse_value_map,
    record_key,
)

__all__ = [
    "RESOLVE_CHOICES",
    "ImportResult",
    "Resolve",
    "case_field",
    "from_langsmith",
    "from_langsmith_project",
    "from_mlflow",
    "langsmith_records",
    "parse_value_map",
    "record_key",
]
