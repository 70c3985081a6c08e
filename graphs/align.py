"""The alignment graph (feedback in → distill → memory updated), compiled for LangGraph Server."""

from memalign_graph import build_align_graph

graph = build_align_graph().compile(name="memalign-align")
