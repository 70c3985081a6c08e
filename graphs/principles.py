"""The principles graph (decide on principles held for approval, list those pending) as LangGraph Server serves it.

Context as in :mod:`graphs.judge`; the decider is the authenticated user, whose roles must allow each
decision (the approver role, and never a principle from their own feedback).
"""

from memalign_graph import build_principles_graph

graph = build_principles_graph(served=True).compile(name="memalign-principles")
