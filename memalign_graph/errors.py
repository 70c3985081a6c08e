"""Errors raised by memalign-graph.

Every error names the problem and where it is (file and line, record id, model),
so a user can fix the input without reading a traceback.
"""

from __future__ import annotations

MISSING_MEMORY_HINT = (
    "create it with `memalign init`, or point at an existing memory: the STORE argument of the CLI, "
    "Context.store in a graph, or MEMALIGN_STORE"
)
"""Said wherever a memory is not found: where the location came from and how to make one."""


class MemAlignError(Exception):
    """Base class for every error this package raises on purpose."""


class MissingDependencyError(MemAlignError, ImportError):
    """An optional dependency is not installed; the message names the extra (or command) that installs it."""


def require(module: str, extra: str, what: str) -> None:
    """Check that an optional dependency is importable (without importing it).

    Raises:
        MissingDependencyError: (an ``ImportError``) naming ``what`` needs it and the extra that installs it.
    """
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"{what} needs the {module!r} package, which the base install does not include: "
            f"pip install 'memalign-graph[{extra}]'"
        )


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
        record_id: the id of the case being judged, or ``None`` if it had none (or was not given).
        attempts: model calls made for this case (``None`` if not given).
    """

    def __init__(
        self, model: str, raw: str, reason: str, *, record_id: str | None = None, attempts: int | None = None
    ) -> None:
        self.model = model
        self.raw = raw
        self.reason = reason
        self.record_id = record_id
        self.attempts = attempts
        case = f"case {record_id!r}: " if record_id is not None else ""
        tries = f" after {attempts} attempt(s)" if attempts is not None else ""
        super().__init__(f"{case}model {model!r} returned an unusable judgment{tries} ({reason}); raw text: {raw!r}")

    def __reduce__(self) -> tuple:
        return _rebuild, (
            type(self),
            (self.model, self.raw, self.reason),
            {"record_id": self.record_id, "attempts": self.attempts},
        )


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


class DutiesError(MemAlignError, PermissionError, ValueError):
    """A served user asked for what their roles do not allow (separation of duties); nothing was written.

    The message names the user, the record or proposal, and the role or rule that refuses it
    (:mod:`memalign_graph.duties`), never feedback text. A ``PermissionError``, and a
    ``ValueError`` too, because LangGraph Server shows a run's error message to the client only
    for a ``ValueError`` and a few other built-in types.
    """


class MemoryWriteError(MemAlignError, OSError):
    """A new version could not be written (disk full, read-only file system, lost connection).

    The message says which version is current ("memory unchanged at version N" when
    the failed commit left nothing behind, which is the usual case).

    Attributes:
        version: the version current after the failure, or ``None`` if it could not be read.
    """

    def __init__(self, message: str, *, version: int | None) -> None:
        self.version = version
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple:
        return _rebuild, (type(self), (self.args[0],), {"version": self.version})


class JudgeError(MemAlignError):
    """The judge model could not be called successfully for one case.

    Raised after transient errors (timeouts, rate limits, connection and server
    errors) were retried with backoff and still failed, or at once for an error
    retrying cannot fix (authentication, bad request). No value is invented; the
    provider's exception is chained as ``__cause__``.

    Attributes:
        model: the model's name as LangChain reports it.
        record_id: the id of the case being judged, or ``None`` if it had none.
        attempts: model calls made for this case.
        transient: whether the last error was a transient one (retries exhausted).
        reason: ``"ErrorType: message"`` of the last error.
    """

    def __init__(self, model: str, reason: str, *, record_id: str | None, attempts: int, transient: bool) -> None:
        self.model = model
        self.reason = reason
        self.record_id = record_id
        self.attempts = attempts
        self.transient = transient
        what = "still failing after" if transient else "not retryable; gave up after"
        case = f"case {record_id!r}" if record_id is not None else "a case without id"
        super().__init__(f"{case}: model {model!r} call failed ({what} {attempts} attempt(s)): {reason}")

    def __reduce__(self) -> tuple:
        return _rebuild, (
            type(self),
            (self.model, self.reason),
            {"record_id": self.record_id, "attempts": self.attempts, "transient": self.transient},
        )


class JudgeBatchError(MemAlignError):
    """Some cases of a batch could not be judged (see :func:`memalign_graph.judge_graph.judge_many`).

    The other cases were judged; their judgments are kept here.

    Attributes:
        failed: case id -> error message, for every case that failed.
        errors: case id -> the exception it raised.
        judgments: one entry per case, in order: the judgment, or ``None`` where it failed.
    """

    def __init__(self, failed: dict[str, str], errors: dict[str, BaseException], judgments: list) -> None:
        self.failed = failed
        self.errors = errors
        self.judgments = judgments
        first = next(iter(failed.values()), "")
        super().__init__(
            f"{len(failed)} of {len(judgments)} case(s) could not be judged: {list(failed)}; first error: {first}"
        )

    def __reduce__(self) -> tuple:
        return _rebuild, (type(self), (self.failed, self.errors, self.judgments), {})


def _rebuild(cls: type, args: tuple, kwargs: dict) -> BaseException:
    """Unpickle an error whose constructor takes more than its message."""
    return cls(*args, **kwargs)


class CalibrationHeadError(MemAlignError, ValueError):
    """Calibration data is malformed: features of the wrong shape, or a stored head that fails validation.

    The message names the field and what is wrong with it.
    """
