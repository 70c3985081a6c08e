"""What the caller configures for the judge and alignment graphs (LangGraph ``context_schema``).

Pass it as ``graph.invoke(input, context=Context(...))``. When the judge graph
runs as a subgraph it receives the *parent's* context (or none): fields it
does not find there fall back to the defaults below, which read environment
variables (``MEMALIGN_STORE``, ``MEMALIGN_MEMORY_DIR``, ``MEMALIGN_MODEL``, ``MEMALIGN_BASE_URL``,
``MEMALIGN_EMBEDDINGS``) so a deployment can configure them without code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any


def _env(name: str, default: str | None = None) -> Any:
    return lambda: os.environ.get(name, default)


@dataclass(kw_only=True)
class Context:
    """Configuration of the MemAlign graphs."""

    memory_dir: str = field(
        default_factory=_env("MEMALIGN_MEMORY_DIR", ".memalign"),
        metadata={"description": "Directory of the judge's memory (created with `memalign init`)."},
    )
    store: str | None = field(
        default_factory=_env("MEMALIGN_STORE"),
        metadata={
            "description": "Where the judge's memory lives, overriding memory_dir: a directory, or a PostgreSQL "
            "connection string 'postgresql://user:password@host:port/db?judge=NAME' (PostgreSQL + pgvector backend)."
        },
    )
    model: Any = field(
        default_factory=_env("MEMALIGN_MODEL"),
        metadata={
            "description": "Judge/distillation chat model: a LangChain chat model instance, 'embedded' (default, "
            "offline SmolLM2-135M), 'provider:model' such as 'openai:gpt-4.1-mini', or 'llamacpp:/path.gguf'."
        },
    )
    base_url: str | None = field(
        default_factory=_env("MEMALIGN_BASE_URL"),
        metadata={"description": "Base URL of an OpenAI-compatible server; `model` is then its model name."},
    )
    embeddings: Any = field(
        default_factory=_env("MEMALIGN_EMBEDDINGS"),
        metadata={
            "description": "Embeddings: an instance, 'embedded' (default, offline e5-small) or 'provider:model'."
        },
    )
    k: int = field(default=5, metadata={"description": "Episodes retrieved into working memory (MemAlign uses 5)."})
    precedent: str = field(
        default="exact",
        metadata={
            "description": "Expert-precedent rule: 'exact' (same case returns the expert's value), 'similar' "
            "(also cosine >= precedent_threshold), or 'off'."
        },
    )
    precedent_threshold: float = field(
        default=0.98, metadata={"description": "Cosine similarity for precedent='similar'."}
    )
    use_principles: bool = field(default=True, metadata={"description": "Include semantic memory (principles)."})
    principles_token_budget: int = field(
        default=2000,
        metadata={
            "description": "Estimated tokens of principles in working memory; past it, the most relevant and "
            "best-supported principles are kept and the judgment lists the ones left out."
        },
    )
    use_episodes: bool = field(default=True, metadata={"description": "Include episodic memory (episodes)."})
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
    structured_output: str = field(
        default="auto",
        metadata={"description": "'auto' (JSON-schema decoding where supported), 'json_schema', or 'prompt'."},
    )
    rationale_max_chars: int = field(default=300, metadata={"description": "Cap on the rationale's length."})
    batch_size: int = field(default=50, metadata={"description": "Most feedback records per distillation call."})
    token_budget: int | None = field(
        default=None,
        metadata={
            "description": "Most estimated prompt tokens of records per distillation call (None: what the "
            "model's context window holds)."
        },
    )
    concurrency: int = field(default=8, metadata={"description": "Most distillation calls in flight."})
    review: str = field(
        default="all",
        metadata={
            "description": "Review policy of the review graph: 'all', 'none', 'unsure' (low margin between value "
            "scores) or 'sample' (a deterministic random share of cases)."
        },
    )
    review_margin: float = field(
        default=0.2, metadata={"description": "'unsure' when the top two value probabilities differ by less."}
    )
    review_sample_rate: float = field(default=0.1, metadata={"description": "Share of cases reviewed under 'sample'."})
    store_accepted: bool = field(
        default=False, metadata={"description": "Store accepted judgments as confirming episodes."}
    )


CONTEXT_FIELDS = {f.name for f in fields(Context)}


def memory_location(ctx: Context) -> str:
    """Where ``ctx`` says memory lives: ``store`` if set, else ``memory_dir``."""
    return ctx.store or ctx.memory_dir


def resolve_context(value: Any) -> Context:
    """The :class:`Context` to use, whatever the graph was given.

    Accepts a :class:`Context`, ``None`` (all defaults), a mapping, or any object
    (e.g. a parent graph's context dataclass); fields it lacks take defaults,
    fields this graph does not know are ignored.
    """
    if isinstance(value, Context):
        return value
    if value is None:
        return Context()
    if isinstance(value, dict):
        found = {k: v for k, v in value.items() if k in CONTEXT_FIELDS}
    else:
        found = {k: getattr(value, k) for k in CONTEXT_FIELDS if hasattr(value, k)}
    return Context(**found)
