"""The judge graph as LangGraph Server serves it (``langgraph.json``): no checkpointer or store of its own.

A client's run context is a :class:`~memalign_graph.context.ServedJudgeContext` (a judge name
and judging options); the model, base URL, embeddings and memory location come from the
server's environment (``MEMALIGN_JUDGES`` or ``MEMALIGN_STORE``/``MEMALIGN_MEMORY_DIR``,
``MEMALIGN_MODEL``, ``MEMALIGN_BASE_URL``, ``MEMALIGN_EMBEDDINGS``). Keep memory directories
outside the project tree so that memory writes do not trigger ``langgraph dev``'s hot reload.
"""

from memalign_graph import build_judge_graph

graph = build_judge_graph(served=True).compile(name="memalign-judge")
