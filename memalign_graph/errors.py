"""Errors raised by memalign-graph.

Every error names the problem and where it is (file and line, record id, model),
so a user can fix the input without reading a traceback.
"""

from __future__ import annotations


class MemAlignError(Exception):
    """Base class for every error this package raises on purpose."""


class RecordError(MemAlignError, ValueError):
    """A case or feedback record is malformed.

    Raised before anything is written, so memory is unchanged.

    Attributes:
        where: ``"FILE:LINE"`` or ``"record ID"``, the place of the problem.
        reason: what is wrong, in one sentence.
    """

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class JudgmentParseError(MemAlignError):
    """The judge model's answer could not be read as a valid judgment.

    Raised after the repair-and-retry loop gave up; no value is ever invented.

    Attributes:
        model: the model's name as LangChain reports it.
        raw: the last raw text the model returned.
        reason: why it was rejected.
    """

    def __init__(self, model: str, raw: str, reason: str) -> None:
        self.model = model
        self.raw = raw
        self.reason = reason
        super().__init__(f"model {model!r} returned an unusable judgment ({reason}); raw text: {raw!r}")


class DistillationError(MemAlignError):
    """One or more distillation batches failed after their retries.

    Attributes:
        record_ids: ids of the feedback records left undistilled; a later
            alignment picks them up again.
    """

    def __init__(self, record_ids: list[str], reason: str) -> None:
        self.record_ids = record_ids
        super().__init__(f"distillation failed for records {record_ids}: {reason}")


class MemoryFormatError(MemAlignError):
    """A memory directory is missing, unreadable, foreign, or from a newer format."""
