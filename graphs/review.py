"""The review graph (judge → expert review via interrupt → distill) as LangGraph Server serves it.

Context as in :mod:`graphs.judge`; the reviewer recorded is the authenticated user.
"""

from memalign_graph import build_review_graph

graph = build_review_graph(served=True).compile(name="memalign-review")
