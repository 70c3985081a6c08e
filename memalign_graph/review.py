"""Expert review: which judgments to show an expert, what the expert may answer, and what it stores.

The review graph pauses at ``collect_feedback`` with ``interrupt()``; the
expert answers **accept**, **correct** (a value and/or feedback text) or
**skip**. The answer is validated by ``interrupt(..., response_schema=...)``
against a Pydantic model built for the judge (the value must be one of the
judge's values); a malformed answer raises ``pydantic.ValidationError`` to the
caller, nothing is saved, and the same interrupt stays open to be answered again.

A review never silently overwrites a record someone else aligned: it replaces an
existing record only when the same reviewer made it through a review, or when
the answer says ``replace: true`` (see :func:`review_record_id`). When
distillation holds principles for an expert (principles policy ``review``, see
:mod:`memalign_graph.governance`), the graph pauses once more at
``approve_principles``; that answer is validated by :func:`principles_answer_model`.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from memalign_graph.judge import Judgment
from memalign_graph.spec import MAX_FIELD_CHARS, JudgeSpec, case_hash, record_hash

MAX_REVIEWER_CHARS = 200
"""Most characters in a reviewer's name."""

ReviewPolicy = Literal["all", "none", "unsure", "sample"]


class _ReviewBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["accept", "correct", "skip"] = Field(description="accept the judgment, correct it, or skip")
    feedback: Optional[str] = Field(
        default=None,
        max_length=MAX_FIELD_CHARS,
        description=f"the expert's words: what is wrong, and the rule (at most {MAX_FIELD_CHARS} characters)",
    )
    reviewer: Optional[str] = Field(
        default=None,
        min_length=1,
        max_length=MAX_REVIEWER_CHARS,
        description=f"who answered (recorded as the version's author; at most {MAX_REVIEWER_CHARS} characters, "
        "no control characters)",
    )

    replace: Optional[bool] = Field(
        default=None,
        description="replace the stored record with the case's id even if another author aligned it",
    )

    @field_validator("reviewer")
    @classmethod
    def _printable(cls, name: Optional[str]) -> Optional[str]:
        """A reviewer's name is one printable line (it is recorded as a version's author)."""
        if name is not None and any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
            raise ValueError("must not contain control characters")
        return name

    @model_validator(mode="after")
    def _check(self) -> _ReviewBase:
        value = getattr(self, "value", None)
        text = (self.feedback or "").strip()
        if self.action == "correct" and value is None and not text:
            raise ValueError("a correction needs a 'value' and/or 'feedback' text")
        if self.action != "correct" and value is not None:
            raise ValueError(f"'value' is only for action 'correct', not {self.action!r}")
        return self


@functools.lru_cache(maxsize=64)
def _answer_model(values: tuple[Any, ...]) -> type[BaseModel]:
    value_type = Optional[Literal[values]]  # type: ignore[valid-type]
    return create_model(
        "ReviewAnswer",
        __base__=_ReviewBase,
        value=(value_type, Field(default=None, description=f"the correct value, one of {list(values)}")),
    )


def review_answer_model(spec: JudgeSpec) -> type[BaseModel]:
    """The Pydantic model of an expert's answer for ``spec``.

    Fields: ``action`` (``accept``/``correct``/``skip``), ``value`` (one of the
    judge's values; only with ``correct``), ``feedback`` (text, at most
    :data:`~memalign_graph.spec.MAX_FIELD_CHARS` characters, the limit of a
    record's fields), ``reviewer`` (at most :data:`MAX_REVIEWER_CHARS` characters,
    no control characters), ``replace`` (``true`` to overwrite a record with the
    case's id that another author aligned; default ``false``). A ``correct`` answer
    needs a value and/or feedback text.
    """
    return _answer_model(tuple(spec.values))


def margin(scores: dict[str, float] | None) -> float | None:
    """Gap between the two most probable values (0 = torn, 1 = certain); ``None`` without scores."""
    if not scores or len(scores) < 2:
        return None
    top = sorted(scores.values(), reverse=True)
    return top[0] - top[1]


def is_unsure(judgment: Judgment, spec: JudgeSpec, min_margin: float = 0.2) -> bool:
    """Whether the judge is unsure of ``judgment``.

    Unsure when the gap between its two most probable values is below
    ``min_margin``; for numeric judges also when the probability-weighted mean
    of the scale lies near a rounding boundary (within ``min_margin / 2`` of x.5).
    A judgment without scores counts as unsure (there is no evidence it is
    not); an expert-precedent judgment never does.
    """
    if judgment.get("precedent"):
        return False
    scores = judgment.get("scores")
    gap = margin(scores)
    if gap is None:
        return True
    if gap < min_margin:
        return True
    if spec.kind == "numeric" and scores:
        mean = sum(int(v) * p for v, p in scores.items())
        return abs((mean % 1) - 0.5) < min_margin / 2
    return False


def in_sample(case: dict[str, Any], rate: float, seed: int = 0) -> bool:
    """Deterministic random sample: the same case is always in or out (safe to re-run on resume)."""
    digest = hashlib.sha256(f"{seed}:{case_hash(case)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def needs_review(
    judgment: Judgment,
    spec: JudgeSpec,
    case: dict[str, Any],
    policy: str,
    *,
    min_margin: float = 0.2,
    sample_rate: float = 0.1,
    seed: int = 0,
) -> bool:
    """Whether the review policy sends this judgment to an expert.

    Args:
        judgment: the judge's judgment.
        spec: the judge.
        case: the judged case.
        policy: ``all``, ``none``, ``unsure`` (see :func:`is_unsure`) or ``sample``
            (a deterministic ``sample_rate`` share of cases, see :func:`in_sample`).
        min_margin: see :func:`is_unsure`.
        sample_rate: share of cases in [0, 1] reviewed under ``sample``.
        seed: sample seed.

    Raises:
        ValueError: for an unknown policy.
    """
    if policy == "all":
        return True
    if policy == "none":
        return False
    if policy == "unsure":
        return is_unsure(judgment, spec, min_margin)
    if policy == "sample":
        return in_sample(case, sample_rate, seed)
    raise ValueError(f"unknown review policy {policy!r}; use all, none, unsure or sample")


def review_payload(
    spec: JudgeSpec, case: dict[str, Any], judgment: Judgment, principles: list[dict], episodes: list[dict]
) -> dict[str, Any]:
    """What the expert is shown at the ``collect_feedback`` interrupt (JSON-like; ``kind`` ``"review"``)."""
    return {
        "kind": "review",
        "question": "Review this judgment: accept, correct (value and/or feedback), or skip.",
        "judge": {"name": spec.name, "criterion": spec.criterion, "kind": spec.kind, "values": spec.values},
        "case": case,
        "judgment": judgment,
        "principles": [{"id": p["id"], "text": p["text"]} for p in principles],
        "episodes": [
            {k: e.get(k) for k in ("id", "score", "value", "feedback", "inputs", "outputs")} for e in episodes
        ],
    }


def record_from_review(
    case: dict[str, Any], judgment: Judgment, answer: dict[str, Any], *, store_accepted: bool
) -> dict[str, Any] | None:
    """The feedback record an expert's answer becomes, or ``None`` if nothing is to be stored.

    A correction stores the expert's value/feedback with the judge's value as
    ``judge_value``; an acceptance stores a confirming episode only when
    ``store_accepted``; a skip stores nothing. The record id is the case's
    ``id`` or ``"case-" + case hash`` (so reviewing the same case again
    overwrites, not duplicates).
    """
    action = answer["action"]
    if action == "skip" or (action == "accept" and not store_accepted):
        return None
    record: dict[str, Any] = {
        "id": case.get("id") or f"case-{case_hash(case)}",
        **{k: case[k] for k in ("inputs", "outputs", "expectations") if k in case},
        "judge_value": judgment["value"],
    }
    if action == "accept":
        record["value"] = judgment["value"]
    else:
        if answer.get("value") is not None:
            record["value"] = answer["value"]
        if (answer.get("feedback") or "").strip():
            record["feedback"] = answer["feedback"].strip()
    return record


def review_record_id(
    record: dict[str, Any], ledger: dict[str, Any], reviewer: str, *, replace: bool = False
) -> dict[str, Any]:
    """``record`` with the id it may be stored under, so a review never replaces another author's record by accident.

    The record keeps its id (the case's id, or ``case-<hash>``) when no record has
    that id yet, when the stored one was made through a review by the same
    ``reviewer`` (reviewing the same case again overwrites it), or when ``replace``
    is true (the expert said so explicitly). Otherwise it gets its own id,
    ``review-<16 hex>`` (:func:`~memalign_graph.spec.record_hash` of its content), and
    the stored record, its episode and its principles stay as they are.

    Args:
        record: the record :func:`record_from_review` made.
        ledger: the memory's ledger (record id -> entry with ``author`` and ``via``).
        reviewer: who answered.
        replace: the answer's ``replace`` flag.

    Returns:
        A new dict; ``record`` is not modified.
    """
    entry = ledger.get(record["id"])
    owned = entry is not None and entry.get("via") == "review" and entry.get("author") == reviewer
    if entry is None or owned or replace:
        return dict(record)
    return {**record, "id": f"review-{record_hash(record)}"}


def principles_payload(proposals: list[dict[str, Any]]) -> dict[str, Any]:
    """What the expert is shown at the ``approve_principles`` interrupt (JSON-like; ``kind`` ``"principles"``)."""
    return {
        "kind": "principles",
        "question": "Distillation proposed these principles. Approve the ones the judge should follow, reject the rest "
        "(unanswered ones stay pending).",
        "proposed": [{k: p[k] for k in ("id", "text", "sources", "held", "supersedes") if k in p} for p in proposals],
    }


class _DecisionBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviewer: Optional[str] = Field(default=None, description="who decided (recorded as the version's author)")

    @model_validator(mode="after")
    def _check(self) -> _DecisionBase:
        approve, reject = getattr(self, "approve", []), getattr(self, "reject", [])
        both = sorted(set(approve) & set(reject))
        if both:
            raise ValueError(f"proposal {', '.join(both)} cannot be both approved and rejected")
        return self


def principles_answer_model(ids: list[str]) -> type[BaseModel]:
    """The Pydantic model of an expert's decision on the proposals ``ids``.

    Fields: ``approve`` and ``reject`` (lists of those ids; other ids are refused),
    ``reviewer``. An id in both lists is refused; ids in neither stay pending.
    """
    id_type = Literal[tuple(ids)] if ids else str  # type: ignore[valid-type]
    return create_model(
        "PrinciplesAnswer",
        __base__=_DecisionBase,
        approve=(list[id_type], Field(default_factory=list, description="ids of proposals to approve")),
        reject=(list[id_type], Field(default_factory=list, description="ids of proposals to reject")),
    )


def corrected_judgment(judgment: Judgment, answer: dict[str, Any]) -> Judgment:
    """The judgment after an expert corrected its value: the expert's value is the final word.

    ``judge_value`` keeps what the judge said, ``corrected_by`` who corrected it.
    """
    said = (answer.get("feedback") or "").strip()
    return Judgment(  # type: ignore[typeddict-item]
        **{
            **judgment,
            "value": answer["value"],
            "rationale": f"Expert correction: {said}" if said else "Expert correction.",
            "judge_value": judgment["value"],
            "corrected_by": answer.get("reviewer") or "expert",
        }
    )
