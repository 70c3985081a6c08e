"""The alignment graph (episodes → distill → consolidate → govern → commit) as LangGraph Server serves it.

Context as in :mod:`graphs.judge`; the author of the new version is the authenticated user.
"""

from memalign_graph import build_align_graph

graph = build_align_graph(served=True).compile(name="memalign-align")
