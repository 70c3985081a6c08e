"""The judge graph, compiled without a checkpointer or store (the server supplies them).

Configure the memory directory with the ``memory_dir`` context field or
``MEMALIGN_MEMORY_DIR``; keep it outside the project tree so that memory
writes do not trigger ``langgraph dev``'s hot reload.
"""

from memalign_graph import build_judge_graph

graph = build_judge_graph().compile(name="memalign-judge")
