"""What the caller configures for the judge and alignment graphs (LangGraph ``context_schema``).

Two schemas, for two kinds of caller:

- :class:`Context`, for code in the same process (``graph.invoke(input,
  context=Context(...))``, a node in your own graph): it chooses everything,
  the model, its base URL, the embeddings and where memory lives included
  (``store``: one field for every kind of location, see :func:`memory_location`).
  When the judge graph runs as a subgraph it receives the *parent's* context
  (or none): fields it does not find there fall back to the defaults below,
  which read environment variables (``MEMALIGN_STORE``, ``MEMALIGN_MODEL``,
  ``MEMALIGN_BASE_URL``, ``MEMALIGN_EMBEDDINGS``, ``MEMALIGN_PRINCIPLES_POLICY``,
  ``MEMALIGN_CALIBRATION``).
  A run without a context whose options are under ``config["configurable"]``
  (LangGraph before 0.6) is read from there, with a deprecation warning
  (:func:`context_from_configurable`).
- :class:`ServedContext` (and, for the graphs that need fewer options,
  :class:`ServedJudgeContext` and :class:`ServedAlignContext`), for API clients
  of the graphs served through ``langgraph.json`` (LangGraph Server,
  ``langgraph dev``, Studio): a client names at most a judge from those the
  server exposes (:func:`served_judges`) and chooses safe options that apply
  to that graph. The model, base URL, embeddings, memory location and calibration settings come from
  the server's environment only (:func:`served_context`), so no client can send
  the server's API key to a URL of its choosing or open another judge's memory.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import WithJsonSchema

from memalign_graph.backends.names import DEFAULT_JUDGE, STORE_LOCATION
from memalign_graph.duties import feedback_policy

Precedent = Literal["exact", "similar", "off"]
StructuredOutput = Literal["auto", "json_schema", "function_calling", "json_mode", "prompt"]
ReviewPolicy = Literal["all", "none", "unsure", "sample"]

DEFAULT_STORE = ".memalign"
"""Where memory lives when nothing says otherwise: a directory in the working directory."""


class MemAlignDeprecationWarning(DeprecationWarning):
    """A form memalign-graph still accepts but will stop accepting; the message says what to write instead.

    Shown once per place by default (Python hides plain ``DeprecationWarning`` s raised outside
    ``__main__``, and these are raised from inside graph runs).
    """


warnings.filterwarnings("default", category=MemAlignDeprecationWarning)


def _env(name: str, default: str | None = None) -> Any:
    return lambda: os.environ.get(name, default)


class _Option(NamedTuple):
    """A judging option that both :class:`Context` and :class:`ServedContext` offer, said once for both.

    Attributes:
        default: its default.
        description: what it does (the form's help text, without its final period).
        note: said after it in :class:`Context`'s description only.
        bounds: the range :class:`ServedContext` accepts (inclusive), said after its description there.
        choices: the ``Literal`` of the values :class:`ServedContext` accepts.
    """

    default: Any
    description: str
    note: str = ""
    bounds: tuple[float, float] | None = None
    choices: Any = None


_OPTIONS = {
    "k": _Option(5, "Episodes retrieved into working memory", note="MemAlign uses 5", bounds=(0, 50)),
    "precedent": _Option(
        "exact",
        "Expert-precedent rule: 'exact' (same case returns the expert's value), 'similar' "
        "(also cosine >= precedent_threshold), or 'off'",
        choices=Precedent,
    ),
    "precedent_threshold": _Option(0.98, "Cosine similarity for precedent='similar'", bounds=(0.0, 1.0)),
    "use_principles": _Option(True, "Include semantic memory (principles)"),
    "use_episodes": _Option(True, "Include episodic memory (episodes)"),
    "review": _Option(
        "all",
        "Review policy of the review graph: 'all', 'none', 'unsure' (low margin between value "
        "scores) or 'sample' (a deterministic random share of cases)",
        choices=ReviewPolicy,
    ),
    "review_margin": _Option(0.2, "'unsure' when the top two value probabilities differ by less", bounds=(0.0, 1.0)),
    "review_sample_rate": _Option(0.1, "Share of cases reviewed under 'sample'", bounds=(0.0, 1.0)),
    "store_accepted": _Option(False, "Store accepted judgments as confirming episodes"),
}
"""The judging options an API client may choose as well, in the order its form shows them."""


def _option(name: str, *, served: bool = False) -> Any:
    """The dataclass field of judging option ``name`` in :class:`ServedContext` (``served``) or :class:`Context`."""
    option = _OPTIONS[name]
    if served:
        extra = f"{option.bounds[0]:g}-{option.bounds[1]:g}" if option.bounds else ""
    else:
        extra = option.note
    description = f"{option.description} ({extra})." if extra else f"{option.description}."
    return field(default=option.default, metadata={"description": description})


@dataclass(kw_only=True)
class Context:
    """Configuration of the MemAlign graphs."""

    memory_dir: str | None = field(
        default=None,
        metadata={"description": "Deprecated: say where memory lives with store (a directory works there)."},
    )
    store: Annotated[Any, WithJsonSchema({"type": ["string", "null"]})] = field(
        default=None,
        metadata={
            "description": "Where the judge's memory lives: a directory (created with `memalign init`); a "
            "PostgreSQL connection string 'postgresql://user:password@host:port/db?judge=NAME' (PostgreSQL + "
            "pgvector backend), with '&store=langgraph' for judge NAME in LangGraph's PostgresStore; 'langgraph' or "
            "'langgraph:NAME' (judge NAME, default 'default', in the LangGraph store the graph runs with: compiled "
            "with store=..., or LangGraph Server's); a LangGraph store object (its judge 'default'); or a "
            "MemoryBackend such as StoreBackend(store, NAME). Unset: MEMALIGN_STORE, else '.memalign'."
        },
    )
    model: Annotated[Any, WithJsonSchema({"type": ["string", "null"]})] = field(
        default_factory=_env("MEMALIGN_MODEL"),
        metadata={
            "description": "Judge/distillation chat model: a LangChain chat model instance, 'embedded' (default, "
            "offline Qwen2.5-Coder-0.5B; 'embedded:NAME' for another), 'provider:model' such as "
            "'openai:gpt-4.1-mini', or 'llamacpp:/path.gguf'."
        },
    )
    base_url: str | None = field(
        default_factory=_env("MEMALIGN_BASE_URL"),
        metadata={"description": "Base URL of an OpenAI-compatible server; `model` is then its model name."},
    )
    embeddings: Annotated[Any, WithJsonSchema({"type": ["string", "null"]})] = field(
        default_factory=_env("MEMALIGN_EMBEDDINGS"),
        metadata={
            "description": "Embeddings: an instance, 'embedded' (default: offline all-MiniLM-L6-v2 int8, also "
            "'minilm-int8'), 'e5' (offline multilingual-e5-small, for data not in English), 'minilm' (torch) "
            "or 'provider:model'. None: MEMALIGN_EMBEDDINGS, else those an existing memory was created with."
        },
    )
    k: int = _option("k")
    precedent: Precedent = _option("precedent")
    precedent_threshold: float = _option("precedent_threshold")
    use_principles: bool = _option("use_principles")
    principles_token_budget: int = field(
        default=2000,
        metadata={
            "description": "Estimated tokens of principles in working memory; past it, the most relevant and "
            "best-supported principles are kept and the judgment lists the ones left out."
        },
    )
    use_episodes: bool = _option("use_episodes")
    max_retries: int = field(
        default=2,
        metadata={
            "description": "Retries of a model call after a timeout, rate limit, connection or 5xx error (with "
            "exponential backoff); repair rounds for an unusable judgment; retries of a distillation batch. "
            "Authentication and bad-request errors are not retried."
        },
    )
    retry_backoff_s: float | None = field(
        default=None,
        metadata={"description": "First wait before a retry, in seconds, doubled each retry, plus jitter (0.5)."},
    )
    retry_backoff_max_s: float | None = field(
        default=None, metadata={"description": "Longest wait between two retries of a judgment call (20)."}
    )
    structured_output: StructuredOutput = field(
        default="auto",
        metadata={"description": "'auto' (JSON-schema decoding where supported), 'json_schema', or 'prompt'."},
    )
    rationale_max_chars: int = field(default=300, metadata={"description": "Cap on the rationale's length."})
    context_window: int | None = field(
        default=None,
        metadata={
            "description": "Tokens one judge request may use (prompt + answer); working memory is sized to it "
            "(whole episodes when they fit, long fields clipped only when they do not). Default: the embedded "
            "model's window, 128000 for hosted models."
        },
    )
    batch_size: int = field(default=50, metadata={"description": "Most feedback records per distillation call."})
    token_budget: int | None = field(
        default=None,
        metadata={
            "description": "Most estimated prompt tokens of records per distillation call (None: what the "
            "model's context window holds)."
        },
    )
    concurrency: int = field(default=8, metadata={"description": "Most distillation calls in flight."})
    review: ReviewPolicy = _option("review")
    review_margin: float = _option("review_margin")
    review_sample_rate: float = _option("review_sample_rate")
    store_accepted: bool = _option("store_accepted")
    author: str | None = field(
        default=None,
        metadata={
            "description": "Who is recorded as the author of new versions and the reviewer of corrections, "
            "overriding the align input's `author` and the review answer's `reviewer` (served graphs set it to "
            "the authenticated user)."
        },
    )
    calibration: Literal["auto", "off", "on"] | None = field(
        default_factory=_env("MEMALIGN_CALIBRATION"),
        metadata={
            "description": "Whether the calibration head fitted on the expert's episodes decides judgments after the "
            "model: 'auto' (when its cross-validated agreement beats the model's by the margin), 'on' (always, once "
            "it has seen two labels), 'off'. Unset: the judge's own setting (JudgeSpec.calibration, 'auto')."
        },
    )
    score_feedback: bool | None = field(
        default=None,
        metadata={
            "description": "Judge each new feedback record with an expert value once, with the memory as it was, "
            "before aligning it, so the calibration gate can compare the head with the model (one model call per "
            "record that enters the head's training sample). Unset: on for the embedded models, off for others."
        },
    )
    roles: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "description": "What `author` may do on a served judge (reviewer, approver, admin; served graphs set "
            "them from the token file): feedback needs reviewer, and a non-approver's principles wait for an "
            "approver. None (library use): no separation of duties."
        },
    )
    principles_policy: Literal["auto", "review"] | None = field(
        default_factory=_env("MEMALIGN_PRINCIPLES_POLICY"),
        metadata={
            "description": "'review' holds every distilled principle for an expert's approval (the review graph "
            "asks at approve_principles); 'auto' or unset apply the judge's stored policy. A run can tighten the "
            "stored policy to review, never relax it."
        },
    )

    def __post_init__(self) -> None:
        if self.memory_dir is not None:
            warnings.warn(
                "Context(memory_dir=...) is deprecated: write Context(store=...), which takes a directory as well as "
                "a PostgreSQL URL or a LangGraph store",
                MemAlignDeprecationWarning,
                stacklevel=3,
            )


CONTEXT_FIELDS = {f.name for f in fields(Context)}


def memory_location(ctx: Context) -> Any:
    """Where ``ctx`` says memory lives.

    ``store`` if set; else the deprecated ``memory_dir``; else ``MEMALIGN_STORE``, the older
    ``MEMALIGN_MEMORY_DIR``, or :data:`DEFAULT_STORE`. A location string, a LangGraph store
    or a ``MemoryBackend`` (see :func:`~memalign_graph.backends.location.backend_for`).
    """
    for found in (ctx.store, ctx.memory_dir, os.environ.get("MEMALIGN_STORE"), os.environ.get("MEMALIGN_MEMORY_DIR")):
        if found is not None and not (isinstance(found, str) and not found.strip()):
            return found
    return DEFAULT_STORE


def context_from_configurable(configurable: Mapping[str, Any] | None) -> Context | None:
    """The :class:`Context` a run without a context gives under ``config["configurable"]`` (LangGraph < 0.6 style).

    LangGraph 0.6 moved run options from ``config["configurable"]`` to ``context=``; a run written
    the old way would otherwise be judged with every default (memory in ``./.memalign``). Its
    :class:`Context` fields are read, with a :class:`MemAlignDeprecationWarning` naming them;
    other keys (``thread_id``, a parent graph's own options) are left alone.

    Returns:
        ``None`` when ``configurable`` holds no :class:`Context` field.
    """
    found = {k: v for k, v in (configurable or {}).items() if k in CONTEXT_FIELDS}
    if not found:
        return None
    warnings.warn(
        f"config['configurable'] keys {', '.join(sorted(found))} are read as the run's Context; this is deprecated "
        "(LangGraph 0.6 moved run options to context=): pass graph.invoke(input, context=Context(...)) instead",
        MemAlignDeprecationWarning,
        stacklevel=2,
    )
    return Context(**found)


def resolve_context(value: Any) -> Context:
    """The :class:`Context` to use, whatever the graph was given.

    Accepts a :class:`Context`, ``None`` (all defaults), a mapping, or any object
    (e.g. a parent graph's context dataclass); fields it lacks take defaults,
    fields this graph does not know are ignored. A :class:`ServedContext` becomes
    the server's configuration for the judge it names (:func:`served_context`).
    """
    if isinstance(value, Context):
        return value
    if isinstance(value, ServedAlignContext):
        return served_context(value)
    if value is None:
        return Context()
    if isinstance(value, dict):
        found = {k: v for k, v in value.items() if k in CONTEXT_FIELDS}
    else:
        found = {k: getattr(value, k) for k in CONTEXT_FIELDS if hasattr(value, k)}
    return Context(**found)


def _check_choice(name: str, value: Any, choices: Any) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"context field {name!r}: {value!r} is not one of {', '.join(map(repr, allowed))}")


def _check_range(name: str, value: Any, low: float, high: float, kind: type = float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ValueError(f"context field {name!r}: expected {kind.__name__}, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"context field {name!r}: {value!r} is outside [{low}, {high}]")


@dataclass(kw_only=True)
class ServedAlignContext:
    """What an API client may choose when it runs the served alignment graph: the judge, nothing else.

    The served graphs' context schemas (the forms Studio shows) hold only what applies to
    the graph: the judge here; the judging options in :class:`ServedJudgeContext`; those and
    the review options in :class:`ServedContext`, each option said once in ``_OPTIONS``. The
    model, its base URL, the embeddings and the memory location come from the server's
    environment (see :func:`served_context`). Keys a client sends that are not fields of the
    graph's schema (e.g. ``model``, ``base_url``, ``store``) are dropped by LangGraph Server
    before the run starts and are never read by the graphs.

    Raises:
        ValueError: when a field has a value outside its choices or range, naming the field.
    """

    judge: str | None = field(
        default=None,
        metadata={
            "description": "Name of the judge to use, one of those this server exposes (MEMALIGN_JUDGES) and you "
            "are allowed; may be left out when the server exposes one judge."
        },
    )

    def __post_init__(self) -> None:
        if self.judge is not None and (not isinstance(self.judge, str) or not self.judge.strip()):
            raise ValueError(f"context field 'judge': expected a judge name, got {self.judge!r}")
        for name, option in _OPTIONS.items():
            if not hasattr(self, name):
                continue
            value = getattr(self, name)
            if option.bounds is not None:
                _check_range(name, value, *option.bounds, type(option.default))
            elif option.choices is not None:
                _check_choice(name, value, option.choices)
            elif isinstance(option.default, bool) and not isinstance(value, bool):
                raise ValueError(f"context field {name!r}: expected true or false, got {value!r}")


@dataclass(kw_only=True)
class ServedJudgeContext(ServedAlignContext):
    """What an API client may choose when it runs the served judge graph: the judge and the judging options."""

    k: int = _option("k", served=True)
    precedent: Precedent = _option("precedent", served=True)
    precedent_threshold: float = _option("precedent_threshold", served=True)
    use_principles: bool = _option("use_principles", served=True)
    use_episodes: bool = _option("use_episodes", served=True)


@dataclass(kw_only=True)
class ServedContext(ServedJudgeContext):
    """What an API client may choose when it runs the served review graph: the judge, judging and review options."""

    review: ReviewPolicy = _option("review", served=True)
    review_margin: float = _option("review_margin", served=True)
    review_sample_rate: float = _option("review_sample_rate", served=True)
    store_accepted: bool = _option("store_accepted", served=True)


SERVED_FIELDS = set(_OPTIONS)


def _json_setting(env: Mapping[str, str], name: str, openers: tuple[str, ...]) -> tuple[Any, str] | None:
    """The JSON value of environment variable ``name``, written inline or in the file it names; ``None`` if unset.

    Text starting with one of ``openers`` is the JSON itself; anything else is a file's path.

    Returns:
        ``(value, where)``, ``where`` naming the variable (and the file) for error messages.

    Raises:
        ValueError: if the file cannot be read or the text is not JSON; the message names where, never the text.
    """
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    where = name
    if not raw.startswith(openers):
        where = f"{name} file {raw}"
        try:
            raw = Path(raw).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{where}: cannot be read ({exc.strerror})") from None
    try:
        return json.loads(raw), where
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno})") from None


def served_judges(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The judges the server exposes: ``{name: memory location}``, from the server's environment.

    ``MEMALIGN_JUDGES`` is a JSON object ``{"name": "location", ...}`` (a location is a memory
    directory, a ``postgresql://…?judge=NAME`` URL, or ``langgraph``: the server's own store,
    under the judge's name), or the path of a file holding one.
    Without it: with ``MEMALIGN_STORE=langgraph``, the judges ``MEMALIGN_JUDGE_SPECS`` defines,
    each under its own name in the server's store (``default`` when it defines none); otherwise
    one judge, ``default``, at ``MEMALIGN_STORE`` or else ``MEMALIGN_MEMORY_DIR`` (``.memalign``).

    Raises:
        ValueError: if ``MEMALIGN_JUDGES`` is neither a JSON object of non-empty names and
            locations nor the path of a file holding one (the message never repeats the
            locations: they may hold passwords).
    """
    env = os.environ if environ is None else environ
    found = _json_setting(env, "MEMALIGN_JUDGES", ("{", "["))
    if found is None:
        location = env.get("MEMALIGN_STORE") or env.get("MEMALIGN_MEMORY_DIR") or DEFAULT_STORE
        defined = judge_specs(env) if location == STORE_LOCATION else {}
        return dict.fromkeys(defined, STORE_LOCATION) or {DEFAULT_JUDGE: location}
    judges, where = found
    if not isinstance(judges, dict) or not judges:
        raise ValueError(f'{where}: expected a JSON object {{"judge name": "memory location", ...}}')
    for name, location in judges.items():
        if not name.strip() or not isinstance(location, str) or not location.strip():
            raise ValueError(f"{where}: judge {name!r} needs a non-empty name and a memory location string")
    return judges


def served_judge_name(judge: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The name of the served judge a client asked for (``judge``), or the server's only judge.

    Raises:
        ValueError: if ``judge`` is not served here, or is ``None`` while the server exposes several.
    """
    judges = served_judges(environ)
    if judge is None:
        if len(judges) == 1:
            return next(iter(judges))
        raise ValueError('this server exposes several judges: name one in the run context, {"judge": NAME}')
    if judge not in judges:
        raise ValueError(
            f"judge {judge!r} is not served here (a server serves the judges of MEMALIGN_JUDGES, or with "
            "MEMALIGN_STORE=langgraph those MEMALIGN_JUDGE_SPECS defines, else one named 'default')"
        )
    return judge


def judge_specs(environ: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Definitions of judges to create in a LangGraph store on first use: ``{store judge name: judge definition}``.

    ``MEMALIGN_JUDGE_SPECS`` is a JSON object ``{"name": {"name", "criterion", "kind", "labels"|"scale"}}``
    (:meth:`~memalign_graph.spec.JudgeSpec.to_dict`'s form), or the path of a file holding one. A
    judge at location ``langgraph`` or ``langgraph:NAME`` that its store does not hold yet is created
    (empty, version 0) from the definition under its store name when a graph first needs it.

    Raises:
        ValueError: if ``MEMALIGN_JUDGE_SPECS`` is neither a JSON object of objects nor the path of a file holding one.
    """
    found = _json_setting(os.environ if environ is None else environ, "MEMALIGN_JUDGE_SPECS", ("{",))
    if found is None:
        return {}
    specs, where = found
    if not isinstance(specs, dict) or not all(isinstance(v, dict) for v in specs.values()):
        raise ValueError(f'{where}: expected a JSON object {{"judge name": {{judge definition}}, ...}}')
    return specs


def store_judge_names(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The served judges whose memory is in the server's own LangGraph store: ``{served name: name in the store}``.

    A served judge ``name`` at location ``langgraph`` lives under its own name; at
    ``langgraph:OTHER``, under ``OTHER``; judges kept elsewhere are left out.

    Raises:
        ValueError: as :func:`served_judges`.
    """
    out = {}
    for name, location in served_judges(environ).items():
        if location == STORE_LOCATION:
            out[name] = name
        elif location.startswith(STORE_LOCATION + ":"):
            out[name] = location[len(STORE_LOCATION) + 1 :] or DEFAULT_JUDGE
    return out


def env_flag(env: Mapping[str, str], name: str) -> bool | None:
    """Environment variable ``name`` as a yes/no setting (``1/true/yes/on``, ``0/false/no/off``); ``None`` if unset.

    Raises:
        ValueError: naming the variable, for any other word.
    """
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: {raw!r} is not one of 1/true/yes/on or 0/false/no/off")


def served_store_judges(store_judge: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The served judges whose memory is judge ``store_judge`` in the server's own LangGraph store.

    Used to authorise reads of the store's ``("memalign", judge, ...)`` namespaces (:mod:`memalign_graph.auth`).

    Raises:
        ValueError: as :func:`served_judges`.
    """
    return [name for name, stored in store_judge_names(environ).items() if stored == store_judge]


def served_context(
    value: ServedAlignContext | Mapping[str, Any] | None,
    *,
    author: str | None = None,
    roles: Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Context:
    """The full :class:`Context` of a served run: the client's choices plus the server's configuration.

    Args:
        value: what the client sent (a :class:`ServedContext` or one of its narrower forms, a mapping
            of its fields, or ``None``); only the judge name and the options are read from it (those
            its form lacks take their defaults).
        author: the authenticated user, recorded as author and reviewer (``"anonymous"`` if ``None``).
        roles: the authenticated user's roles (:data:`memalign_graph.duties.ROLES`), or ``None``
            when the run has no authenticated user (no separation of duties then).
        environ: the server's environment (default ``os.environ``).

    Returns:
        A :class:`Context` whose ``store`` is the named judge's location and whose model,
        base URL, embeddings and calibration settings are the server's (``MEMALIGN_MODEL``,
        ``MEMALIGN_BASE_URL``, ``MEMALIGN_EMBEDDINGS``, ``MEMALIGN_CALIBRATION``,
        ``MEMALIGN_SCORE_FEEDBACK``). With ``roles``, a user without the approver role gets
        principles policy ``review`` whatever the judge's stored policy (their feedback's
        principles wait for an approver; :func:`memalign_graph.duties.feedback_policy`).

    Raises:
        ValueError: for an unknown judge or an option out of range (see :class:`ServedContext`),
            or a ``MEMALIGN_SCORE_FEEDBACK`` that is not a yes/no word.
    """
    env = os.environ if environ is None else environ
    if value is None:
        served: ServedAlignContext = ServedContext()
    elif isinstance(value, ServedAlignContext):
        served = value
    else:
        served = ServedContext(**{k: v for k, v in value.items() if k in SERVED_FIELDS | {"judge"}})
    name = served_judge_name(served.judge, env)
    location = served_judges(env)[name]
    if location == STORE_LOCATION:  # the server's own store, under the served judge's name
        location = f"{STORE_LOCATION}:{name}"
    policy = env.get("MEMALIGN_PRINCIPLES_POLICY") or None
    if roles is not None:
        roles = tuple(roles)
        policy = feedback_policy(None, policy, roles)
    return Context(
        store=location,
        model=env.get("MEMALIGN_MODEL"),
        base_url=env.get("MEMALIGN_BASE_URL"),
        embeddings=env.get("MEMALIGN_EMBEDDINGS"),
        calibration=env.get("MEMALIGN_CALIBRATION") or None,  # type: ignore[arg-type]
        score_feedback=env_flag(env, "MEMALIGN_SCORE_FEEDBACK"),
        author=author or "anonymous",
        roles=roles,
        principles_policy=policy,  # type: ignore[arg-type]
        **{name: getattr(served, name, option.default) for name, option in _OPTIONS.items()},
    )
