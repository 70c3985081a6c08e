"""The review graph (judge → expert review via interrupt → distill), compiled for LangGraph Server."""

from memalign_graph import build_review_graph

graph = build_review_graph().compile(name="memalign-review")
