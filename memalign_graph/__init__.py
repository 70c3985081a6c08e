"""memalign-graph: MemAlign judge alignment (semantic + episodic memory) as LangGraph graphs.

Quick start::

    from memalign_graph import Context, JudgeSpec, Memory, build_judge_graph

    memory = Memory.create("my-judge", JudgeSpec.categorical("qa", "Is the answer correct?", ["pass", "fail"]))
    graph = build_judge_graph().compile()
    out = graph.invoke({"inputs": "2+2?", "outputs": "5"}, context=Context(memory_dir="my-judge"))
    memory.align([{"id": "fb-1", "inputs": "2+2?", "outputs": "5", "value": "fail", "feedback": "Wrong sum."}])
"""

from memalign_graph.context import Context
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
from memalign_graph.graph import (
    build_align_graph,
    build_batch_review_graph,
    build_judge_graph,
    build_review_graph,
    evaluator_node,
)
from memalign_graph.judge import Judgment
from memalign_graph.memory import AlignmentReport, Memory, open_memory
from memalign_graph.models import resolve_chat_model, resolve_embeddings
from memalign_graph.semantic import Principle
from memalign_graph.spec import JudgeSpec, read_jsonl

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
    "build_review_graph",
    "evaluator_node",
    "open_memory",
    "read_jsonl",
    "resolve_chat_model",
    "resolve_embeddings",
]
