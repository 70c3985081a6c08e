"""The MemAlign graphs: judging, alignment, and judging with expert review.

One room each (the LangGraph templates' way: one concern per module); this module gathers them:

- :mod:`memalign_graph.judge_graph`: ``retrieve_principles`` → ``retrieve_episodes`` → ``judge``;
- :mod:`memalign_graph.align_graph`: one node per step of :mod:`memalign_graph.alignment`,
  ``episodes`` → ``distill`` → ``consolidate`` → ``govern`` → ``commit``, so the state after each
  node shows what that step decided (a refused principle in ``distillation``, a merged or held one
  in ``governance``); the commit is still one write, and it starts again at ``episodes`` if
  another writer committed meanwhile;
- :mod:`memalign_graph.review_graph`: judging → ``collect_feedback`` (``interrupt``) → ``distill``
  → ``approve_principles`` (``interrupt``, only when distillation held principles for an expert;
  see :mod:`memalign_graph.governance`); the principles graph (an approver's decisions on held
  principles) and batch review;
- :mod:`memalign_graph.nodes`: how every node reaches the run's context, memory and model, and
  what a served graph changes.

All are plain ``StateGraph`` s with JSON-like state and a :class:`~memalign_graph.context.Context`
``context_schema``; compile them with any checkpointer, or use them as a node in a larger graph.
Built with ``served=True`` (the ``langgraph.json`` graphs) their context schema is a served one
instead (:class:`~memalign_graph.context.ServedJudgeContext`, :class:`~memalign_graph.context.ServedContext`
for review, :class:`~memalign_graph.context.ServedAlignContext` for alignment and principles): a
client names a judge and the options that apply to that graph, every node sees the server's
configuration for that judge (:func:`~memalign_graph.context.served_context`), the authenticated
user is the author of what the run stores, and a problem with the server's configuration of the
judge reaches the client as a ``ValueError`` with the message (:class:`ServedJudgeError`;
LangGraph Server shows clients the message of a ``ValueError`` only). A run without a context
reads options a caller put under ``config["configurable"]`` (deprecated; :func:`run_context`).
Nodes are thin: each reads state, calls one domain function and returns a partial update. Each
node has a sync and an async form (:func:`node`): under ``ainvoke`` the model call is awaited and
file or embedding work runs in a worker thread, so no blocking I/O reaches the event loop.
"""

from memalign_graph.align_graph import (
    MAX_ALIGN_PASSES,
    align_commit,
    align_consolidate,
    align_distill,
    align_episodes,
    align_govern,
    build_align_graph,
    route_commit,
    route_plan,
)
from memalign_graph.judge_graph import (
    ajudge,
    build_judge_graph,
    judge,
    judge_many,
    retrieve_episodes,
    retrieve_principles,
)
from memalign_graph.nodes import (
    STORAGE_TIMEOUT_S,
    ServedJudgeError,
    create_store_judge,
    memory_target,
    node,
    run_context,
    served_runtime,
)
from memalign_graph.review_graph import (
    approve_principles,
    build_batch_review_graph,
    build_principles_graph,
    build_review_graph,
    collect_feedback,
    decide_held,
    distill_review,
    fan_out,
    review_case,
    route_principles,
    route_review,
)

__all__ = [
    "MAX_ALIGN_PASSES",
    "STORAGE_TIMEOUT_S",
    "ServedJudgeError",
    "ajudge",
    "align_commit",
    "align_consolidate",
    "align_distill",
    "align_episodes",
    "align_govern",
    "approve_principles",
    "build_align_graph",
    "build_batch_review_graph",
    "build_judge_graph",
    "build_principles_graph",
    "build_review_graph",
    "collect_feedback",
    "create_store_judge",
    "decide_held",
    "distill_review",
    "fan_out",
    "judge",
    "judge_many",
    "memory_target",
    "node",
    "retrieve_episodes",
    "retrieve_principles",
    "review_case",
    "route_commit",
    "route_plan",
    "route_principles",
    "route_review",
    "run_context",
    "served_runtime",
]
