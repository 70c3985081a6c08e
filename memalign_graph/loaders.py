"""Loaders for judge data: the project's JSONL, LLMBar (pairwise) and Prometheus (1-5 rubric scores).

Each returns feedback records (see :mod:`memalign_graph.spec`) plus the judge
definition the data implies. The data itself is read where it lies; nothing is copied.

* LLMBar (Zeng et al., 2024, *Evaluating Large Language Models at Evaluating
  Instruction Following*; MIT): a JSON list of ``{"input", "output_1",
  "output_2", "label"}`` with ``label`` 1 or 2 (the better output).
* Prometheus (Kim et al., 2024, *Prometheus: Inducing Fine-grained Evaluation
  Capability in Language Models*; Apache-2.0) evaluation sets: a JSON list of
  ``{"idx", "instruction", "gpt4_score", "gpt4_feedback", ...}`` where the
  instruction holds the task, the response, a reference answer and a score
  rubric in ``###`` sections, with three GPT-4 scores (1-5) and feedbacks.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from memalign_graph.errors import RecordError
from memalign_graph.spec import FeedbackRecord, JudgeSpec, parse_record, read_jsonl

LLMBAR_CRITERION = (
    "Which output follows the instruction better? Judge instruction following first (does it do exactly what "
    "was asked), then helpfulness, accuracy and harmlessness; ignore length and style."
)
PROMETHEUS_CRITERION = (
    "Score the response from 1 to 5 by the score rubric given with the case (in its expectations), "
    "comparing it with the reference answer, which deserves a 5."
)

_SECTION = re.compile(r"^###(.+?):\s*$", re.M)


def _sections(text: str) -> dict[str, str]:
    """``###Title:`` sections of a Prometheus instruction, by lower-cased title."""
    marks = list(_SECTION.finditer(text))
    out = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[mark.group(1).strip().lower()] = text[mark.end() : end].strip()
    return out


def load_llmbar(path: str | Path) -> tuple[list[FeedbackRecord], JudgeSpec]:
    """LLMBar pairwise data: ``outputs = [output_1, output_2]``, ``value`` ``A`` (label 1) or ``B`` (label 2).

    Raises:
        RecordError: ``"FILE item N"`` for an item without the fields or with another label.
    """
    path = Path(path)
    spec = JudgeSpec.pairwise("llmbar", LLMBAR_CRITERION)
    records = []
    for n, item in enumerate(json.loads(path.read_text(encoding="utf-8"))):
        where = f"{path} item {n}"
        if not isinstance(item, dict) or not {"input", "output_1", "output_2", "label"} <= set(item):
            raise RecordError(where, "an LLMBar item needs input, output_1, output_2 and label")
        if str(item["label"]) not in ("1", "2"):
            raise RecordError(where, f"label {item['label']!r} is not 1 or 2")
        raw = {
            "id": f"{path.stem}-{n}",
            "inputs": item["input"],
            "outputs": [item["output_1"], item["output_2"]],
            "value": "A" if str(item["label"]) == "1" else "B",
        }
        records.append(parse_record(raw, spec, where=where, feedback=True))
    return records, spec


def load_prometheus(path: str | Path) -> tuple[list[FeedbackRecord], JudgeSpec]:
    """Prometheus rubric data: numeric 1-5 judge; value = median GPT-4 score, feedback = its first feedback.

    ``inputs`` is the instruction to evaluate, ``outputs`` the response, and
    ``expectations`` ``{"reference_answer", "rubric"}``.

    Raises:
        RecordError: ``"FILE item N"`` for an item whose sections or scores cannot be read.
    """
    path = Path(path)
    spec = JudgeSpec.numeric("prometheus", PROMETHEUS_CRITERION, 1, 5)
    records = []
    for n, item in enumerate(json.loads(path.read_text(encoding="utf-8"))):
        where = f"{path} item {n}"
        try:
            sections = _sections(item["instruction"])
            scores = item["gpt4_score"]
            scores = json.loads(scores) if isinstance(scores, str) else scores
            feedbacks = item.get("gpt4_feedback") or []
            feedbacks = json.loads(feedbacks) if isinstance(feedbacks, str) else feedbacks
            raw = {
                "id": f"{path.stem}-{item.get('idx', n)}-{item.get('response_source', n)}",
                "inputs": sections["the instruction to evaluate"],
                "outputs": sections["response to evaluate"],
                "expectations": {
                    "reference_answer": next(v for k, v in sections.items() if k.startswith("reference answer")),
                    "rubric": sections["score rubrics"],
                },
                "value": int(statistics.median_low(int(s) for s in scores)),
                "feedback": feedbacks[0] if feedbacks else None,
            }
        except (KeyError, StopIteration, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise RecordError(where, f"not a Prometheus item ({type(exc).__name__}: {exc})") from None
        records.append(parse_record(raw, spec, where=where, feedback=True))
    return records, spec


def load_dataset(path: str | Path, spec: JudgeSpec | None = None) -> tuple[list[FeedbackRecord], JudgeSpec]:
    """Records from ``path`` in whichever format it is in.

    ``.jsonl``: the project's format, validated against ``spec`` (required).
    ``.json``: LLMBar or Prometheus, recognised by their fields; ``spec``, if
    given, replaces the implied judge (same kind required).

    Raises:
        RecordError: for malformed data (names file and line or item).
        ValueError: if the format is unknown or ``spec`` is missing for JSONL.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        if spec is None:
            raise ValueError(f"{path}: give the judge kind (--labels, --scale or --pairwise) for a JSONL file")
        return read_jsonl(path, spec, feedback=True), spec
    data = json.loads(path.read_text(encoding="utf-8"))
    first = data[0] if isinstance(data, list) and data else {}
    if isinstance(first, dict) and "output_1" in first:
        records, implied = load_llmbar(path)
    elif isinstance(first, dict) and "gpt4_score" in first:
        records, implied = load_prometheus(path)
    else:
        raise ValueError(f"{path}: neither the project's JSONL, LLMBar nor Prometheus data")
    if spec is not None:
        if spec.kind != implied.kind:
            raise ValueError(f"{path}: the data is {implied.kind}, but a {spec.kind} judge was given")
        records = [parse_record(r, spec, where=f"{path} {r['id']}", feedback=True) for r in records]
        return records, spec
    return records, implied


__all__ = ["load_dataset", "load_llmbar", "load_prometheus"]
