"""memalign-graph: MemAlign judge alignment (semantic + episodic memory) as LangGraph graphs.

Quick start::

    from memalign_graph import Context, JudgeSpec, Memory, build_judge_graph

    memory = Memory.create("my-judge", JudgeSpec.categorical("qa", "Is the answer correct?", ["pass", "fail"]))
    graph = build_judge_graph().compile()
    out = graph.invoke({"inputs": "2+2?", "outputs": "5"}, context=Context(store="my-judge"))
    memory.align([{"id": "fb-1", "inputs": "2+2?", "outputs": "5", "value": "fail", "feedback": "Wrong sum."}])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memalign_graph.alignment import AlignmentReport
    from memalign_graph.context import Context
    from memalign_graph.embeddings import resolve_embeddings
    from memalign_graph.episodic import Episode, EpisodicMemory
    from memalign_graph.errors import (
        DistillationError,
        JudgeBatchError,
        JudgeError,
        JudgmentParseError,
        MemAlignError,
        MemoryFormatError,
        RecordError,
    )
    from memalign_graph.evaluators import evaluator_node
    from memalign_graph.graph import (
        build_align_graph,
        build_batch_review_graph,
        build_judge_graph,
        build_principles_graph,
        build_review_graph,
    )
    from memalign_graph.judge import Judgment
    from memalign_graph.memory import Memory, open_memory
    from memalign_graph.models import resolve_chat_model
    from memalign_graph.semantic import Principle
    from memalign_graph.spec import JudgeSpec, read_jsonl

# Imported on first use, so `memalign --help` and `import memalign_graph.errors` stay fast
# (the graphs pull in LangGraph, LangChain and FAISS: about a second).
_LAZY = {
    "Context": "context",
    "DistillationError": "errors",
    "Episode": "episodic",
    "EpisodicMemory": "episodic",
    "JudgeSpec": "spec",
    "Judgment": "judge",
    "JudgeBatchError": "errors",
    "JudgeError": "errors",
    "JudgmentParseError": "errors",
    "MemAlignError": "errors",
    "Memory": "memory",
    "MemoryFormatError": "errors",
    "Principle": "semantic",
    "RecordError": "errors",
    "AlignmentReport": "alignment",
    "build_align_graph": "graph",
    "build_batch_review_graph": "graph",
    "build_judge_graph": "graph",
    "build_principles_graph": "graph",
    "build_review_graph": "graph",
    "evaluator_node": "evaluators",
    "open_memory": "memory",
    "read_jsonl": "spec",
    "resolve_chat_model": "models",
    "resolve_embeddings": "embeddings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memalign_graph' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"memalign_graph.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AlignmentReport",
    "Context",
    "DistillationError",
    "Episode",
    "EpisodicMemory",
    "JudgeSpec",
    "Judgment",
    "JudgeBatchError",
    "JudgeError",
    "JudgmentParseError",
    "MemAlignError",
    "Memory",
    "MemoryFormatError",
    "Principle",
    "RecordError",
    "build_align_graph",
    "build_batch_review_graph",
    "build_judge_graph",
    "build_principles_graph",
    "build_review_graph",
    "evaluator_node",
    "open_memory",
    "read_jsonl",
    "resolve_chat_model",
    "resolve_embeddings",
]
