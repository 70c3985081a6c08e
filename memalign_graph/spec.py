"""The judge definition and the records it reads: cases and feedback.

A *judge* has a name, a criterion (natural-language instructions) and a
judgment kind:

* ``categorical``: the value is one label of a fixed set (e.g. ``pass``/``fail``);
* ``numeric``: the value is an integer on a closed scale (e.g. 1-5);
* ``pairwise``: the value says which of two outputs is better: ``A``, ``B`` or ``tie``.

Records are JSON objects (one per line in JSONL files)::

    {"id", "inputs", "outputs", "expectations"?, "value"?, "feedback"?, "judge_value"?}

``inputs`` and ``outputs`` are a string or a JSON object; for pairwise judges
``outputs`` is a list of exactly two candidates (A first). A *feedback* record
carries the expert's ``value`` and/or natural-language ``feedback`` (at least one).
``judge_value`` (optional) is what the judge said before the expert's verdict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, Union

from memalign_graph.errors import RecordError

JudgmentKind = Literal["categorical", "numeric", "pairwise"]
Value = Union[str, int]
PAIRWISE_LABELS: tuple[str, str, str] = ("A", "B", "tie")
MAX_FIELD_CHARS = 200_000


class Case(TypedDict):
    """One thing to judge. ``outputs`` is a two-item list for pairwise judges."""

    id: NotRequired[str]
    inputs: Any
    outputs: Any
    expectations: NotRequired[Any]


class FeedbackRecord(Case):
    """A case with the expert's verdict: ``value`` and/or ``feedback`` (text)."""

    value: NotRequired[Value]
    feedback: NotRequired[str]
    judge_value: NotRequired[Value]


@dataclass(frozen=True)
class JudgeSpec:
    """What a judge judges and what values it may return.

    Args:
        name: short identifier, e.g. ``"sql-house-rules"``.
        criterion: natural-language instructions the judge follows.
        kind: ``"categorical"``, ``"numeric"`` or ``"pairwise"``.
        labels: the label set for categorical judges (at least two, distinct).
        scale: ``(low, high)`` inclusive integer bounds for numeric judges.

    Raises:
        ValueError: if the fields do not fit the kind.
    """

    name: str
    criterion: str
    kind: JudgmentKind
    labels: tuple[str, ...] = ()
    scale: tuple[int, int] | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("judge name must not be empty")
        if not self.criterion.strip():
            raise ValueError("judge criterion must not be empty")
        if self.kind == "categorical":
            labels = tuple(str(label).strip() for label in self.labels)
            if len(labels) < 2 or len(set(labels)) != len(labels) or not all(labels):
                raise ValueError(f"a categorical judge needs two or more distinct labels, got {list(self.labels)}")
            object.__setattr__(self, "labels", labels)
            if self.scale is not None:
                raise ValueError("a categorical judge takes labels, not a scale")
        elif self.kind == "numeric":
            if self.scale is None or len(self.scale) != 2:
                raise ValueError("a numeric judge needs scale=(low, high)")
            low, high = (int(v) for v in self.scale)
            if low >= high:
                raise ValueError(f"numeric scale must have low < high, got {low}-{high}")
            if high - low > 100:
                raise ValueError(f"numeric scale {low}-{high} has more than 101 points")
            object.__setattr__(self, "scale", (low, high))
            if self.labels:
                raise ValueError("a numeric judge takes a scale, not labels")
        elif self.kind == "pairwise":
            object.__setattr__(self, "labels", PAIRWISE_LABELS)
        else:
            raise ValueError(f"unknown judgment kind {self.kind!r}; use categorical, numeric or pairwise")

    @classmethod
    def categorical(cls, name: str, criterion: str, labels: list[str] | tuple[str, ...]) -> JudgeSpec:
        """A judge that returns one of ``labels``."""
        return cls(name=name, criterion=criterion, kind="categorical", labels=tuple(labels))

    @classmethod
    def numeric(cls, name: str, criterion: str, low: int = 1, high: int = 5) -> JudgeSpec:
        """A judge that returns an integer in ``[low, high]``."""
        return cls(name=name, criterion=criterion, kind="numeric", scale=(low, high))

    @classmethod
    def pairwise(cls, name: str, criterion: str) -> JudgeSpec:
        """A judge that says which of two outputs is better: ``A``, ``B`` or ``tie``."""
        return cls(name=name, criterion=criterion, kind="pairwise")

    @property
    def values(self) -> list[Value]:
        """Every value the judge may return, in order."""
        if self.kind == "numeric":
            assert self.scale is not None
            return list(range(self.scale[0], self.scale[1] + 1))
        return list(self.labels)

    def describe_values(self) -> str:
        """The allowed values as prompt text, e.g. ``"one of: pass, fail"``."""
        if self.kind == "numeric":
            assert self.scale is not None
            return f"an integer from {self.scale[0]} to {self.scale[1]}"
        return "one of: " + ", ".join(self.labels)

    def coerce_value(self, value: Any, where: str = "value") -> Value:
        """Return ``value`` as the judge's canonical value.

        Labels match case-insensitively; numeric values accept ints, integral
        floats and digit strings.

        Raises:
            RecordError: if the value is not allowed for this judge (names ``where``).
        """
        if self.kind == "numeric":
            assert self.scale is not None
            number: int | None = None
            if isinstance(value, bool):
                number = None
            elif isinstance(value, int):
                number = value
            elif isinstance(value, float) and value.is_integer():
                number = int(value)
            elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
                number = int(value.strip())
            if number is None or not self.scale[0] <= number <= self.scale[1]:
                raise RecordError(where, f"value {value!r} is not {self.describe_values()}")
            return number
        if isinstance(value, str):
            for label in self.labels:
                if value.strip().lower() == label.lower():
                    return label
        raise RecordError(where, f"value {value!r} is not {self.describe_values()}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, read back by :meth:`from_dict`."""
        data: dict[str, Any] = {"name": self.name, "criterion": self.criterion, "kind": self.kind}
        if self.kind == "categorical":
            data["labels"] = list(self.labels)
        if self.kind == "numeric":
            data["scale"] = list(self.scale or ())
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JudgeSpec:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: if a field is missing or does not fit the kind.
        """
        try:
            kind = data["kind"]
            return cls(
                name=data["name"],
                criterion=data["criterion"],
                kind=kind,
                labels=tuple(data.get("labels", ())) if kind == "categorical" else (),
                scale=tuple(data["scale"]) if kind == "numeric" else None,  # type: ignore[arg-type]
            )
        except KeyError as exc:
            raise ValueError(f"judge definition lacks field {exc.args[0]!r}") from None


def _check_field(value: Any, name: str, where: str) -> Any:
    if value is None:
        raise RecordError(where, f"field {name!r} is missing")
    if isinstance(value, str):
        if not value.strip():
            raise RecordError(where, f"field {name!r} is empty")
        if len(value) > MAX_FIELD_CHARS:
            raise RecordError(where, f"field {name!r} has {len(value)} characters, more than {MAX_FIELD_CHARS}")
        return value
    if isinstance(value, (dict, list)):
        if len(json.dumps(value, ensure_ascii=False)) > MAX_FIELD_CHARS:
            raise RecordError(where, f"field {name!r} is larger than {MAX_FIELD_CHARS} characters")
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise RecordError(where, f"field {name!r} must be a string or a JSON object, got {type(value).__name__}")


def parse_record(
    obj: Any, spec: JudgeSpec, *, where: str, feedback: bool = False, require_id: bool = False
) -> FeedbackRecord:
    """Validate one record and return it in canonical form.

    Args:
        obj: the decoded JSON object.
        spec: the judge the record is for (decides what ``outputs`` and ``value`` may be).
        where: location used in error messages, e.g. ``"cases.jsonl:3"``.
        feedback: require an expert ``value`` and/or ``feedback`` text.
        require_id: require a non-empty string ``id``.

    Returns:
        A new dict with only the known fields; ``value`` and ``judge_value`` coerced.

    Raises:
        RecordError: naming ``where`` and the reason, for any malformed field.
    """
    if not isinstance(obj, dict):
        raise RecordError(where, f"a record must be a JSON object, got {type(obj).__name__}")
    known = {"id", "inputs", "outputs", "expectations", "value", "feedback", "judge_value", "metadata"}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise RecordError(where, f"unknown field(s) {unknown}; allowed: {sorted(known)}")
    record: dict[str, Any] = {}
    if "id" in obj or require_id:
        rid = obj.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            rid = str(rid)
        if not isinstance(rid, str) or not rid.strip():
            raise RecordError(where, "field 'id' must be a non-empty string")
        record["id"] = rid
        where = f"{where} (id {rid})" if not where.endswith(f"id {rid}") else where
    record["inputs"] = _check_field(obj.get("inputs"), "inputs", where)
    outputs = obj.get("outputs")
    if spec.kind == "pairwise":
        if not isinstance(outputs, list) or len(outputs) != 2:
            raise RecordError(where, "a pairwise record needs 'outputs' as a list of exactly two candidates [A, B]")
        record["outputs"] = [_check_field(o, f"outputs[{i}]", where) for i, o in enumerate(outputs)]
    else:
        record["outputs"] = _check_field(outputs, "outputs", where)
    if obj.get("expectations") is not None:
        record["expectations"] = _check_field(obj["expectations"], "expectations", where)
    if obj.get("value") is not None:
        record["value"] = spec.coerce_value(obj["value"], where)
    if obj.get("feedback") is not None:
        text = obj["feedback"]
        if not isinstance(text, str):
            raise RecordError(where, "field 'feedback' must be a string")
        if text.strip():
            record["feedback"] = _check_field(text, "feedback", where)
    if obj.get("judge_value") is not None:
        record["judge_value"] = spec.coerce_value(obj["judge_value"], f"{where} judge_value")
    if obj.get("metadata") is not None:
        if not isinstance(obj["metadata"], dict):
            raise RecordError(where, "field 'metadata' must be a JSON object")
        record["metadata"] = obj["metadata"]
    if feedback and "value" not in record and "feedback" not in record:
        raise RecordError(where, "a feedback record needs the expert's 'value' and/or 'feedback' text")
    return record  # type: ignore[return-value]


def read_jsonl(path: str | Path, spec: JudgeSpec, *, feedback: bool = False) -> list[FeedbackRecord]:
    """Read and validate a whole JSONL file before anything is done with it.

    Blank lines are skipped. Ids are required for feedback and must be unique
    within the file; cases without an id get ``"line-N"``.

    Raises:
        RecordError: ``"FILE:LINE: reason"`` for the first bad line (bad JSON,
            non-UTF-8 bytes, wrong fields or values, duplicate id).
        FileNotFoundError: if the file does not exist.
    """
    path = Path(path)
    raw = path.read_bytes()
    records: list[FeedbackRecord] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(where, f"not valid UTF-8 (byte {exc.start})") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(where, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        record = parse_record(obj, spec, where=where, feedback=feedback, require_id=feedback)
        rid = record.setdefault("id", f"line-{lineno}")
        if rid in seen:
            raise RecordError(where, f"duplicate id {rid!r} (first on line {seen[rid]})")
        seen[rid] = lineno
        records.append(record)
    return records


def render(value: Any) -> str:
    """Text form of an ``inputs``/``outputs`` field for prompts and embeddings."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def case_text(case: Case | dict[str, Any]) -> str:
    """The text that identifies a case: what gets embedded for episodic retrieval."""
    outputs = case["outputs"]
    if isinstance(outputs, list) and len(outputs) == 2:
        out = f"Output A: {render(outputs[0])}\nOutput B: {render(outputs[1])}"
    else:
        out = f"Output: {render(outputs)}"
    text = f"Input: {render(case['inputs'])}\n{out}"
    if case.get("expectations") is not None:
        text += f"\nExpected: {render(case['expectations'])}"
    return text


def case_hash(case: Case | dict[str, Any]) -> str:
    """SHA-256 of the case's whitespace- and case-normalised text (hex, 16 chars).

    Two cases with the same hash are the same case for the expert-precedent rule.
    """
    normalised = " ".join(case_text(case).lower().split())
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()[:16]


def record_hash(record: FeedbackRecord | dict[str, Any]) -> str:
    """SHA-256 over the case and the expert's verdict: re-aligning an identical record is a no-op."""
    payload = {k: record.get(k) for k in ("inputs", "outputs", "expectations", "value", "feedback")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
