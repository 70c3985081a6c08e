"""``memalign demo`` (a learning curve offline), ``memalign eval`` (the method's experiment), ``memalign bench``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from memalign_graph.cli.output import (
    BaseUrlOpt,
    EmbOpt,
    ModelOpt,
    console,
    err,
    fail,
    info,
    say,
    show_progress,
    use_base_url,
)
from memalign_graph.errors import MemAlignError


def _pm(stat: dict[str, Any]) -> str:
    """``0.83 ± 0.05`` (mean ± sample sd over runs), ``0.83`` for one run, ``-`` when not measured."""
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.2f}" + (f" ± {stat['sd']:.2f}" if stat["sd"] is not None else "")


def demo_table(result: dict[str, Any]) -> Table:
    """The demo's learning curve as a rich table (one row per feedback count)."""
    cfg = result["config"]
    runs = len(cfg["seeds"])
    table = Table(
        title=f"MemAlign learning curve: {cfg['dataset']} - model {cfg['model']}, k={cfg['k']}, "
        f"{runs} run{'s' if runs > 1 else ''} (seeds {', '.join(map(str, cfg['seeds']))})",
        box=box.SIMPLE_HEAD,
    )
    for header in (
        "feedback",
        f"unseen (n={cfg['test']}): no memory",
        "memory, model only" + ("*" if cfg["model_runs"] < runs else ""),
        "memory + calibration",
        "gate open",
        "seen, no precedent",
        "principles",
        "episodes",
        "s/judgment",
        "align s",
    ):
        table.add_column(header, justify="right", no_wrap=True)
    for row in result["steps"]:
        seen = _pm(row["seen"]) + (f" (n={row['seen_n']})" if row["seen_n"] else "")
        table.add_row(
            str(row["step"]),
            _pm(row["no_memory"]),
            _pm(row["model_memory"]),
            _pm(row["calibrated"]),
            f"{row['gate_open']}/{row['runs']}" if row["step"] else "-",
            seen,
            f"{row['principles']:g}",
            f"{row['episodes']:g}",
            "-" if row["judge_s_p50"] is None else f"{row['judge_s_p50']:.1f}",
            f"{row['align_s']:.1f}",
        )
    return table


def demo_notes(result: dict[str, Any]) -> list[str]:
    """What the demo prints under its table: how to read it, the targets, the precedent rule, what memory holds."""
    cfg = result["config"]
    runs = len(cfg["seeds"])
    lines = [
        "Agreement = exact match with the expert, mean ± sd over the runs; every figure has the expert-precedent "
        "rule off. 'no memory' = the same model on the same unseen cases with an empty memory. 'memory, model "
        "only' = the model's own value with MemAlign's memory (principles + episodes) in its prompt; 'memory + "
        "calibration' = the final value: the calibration head's where its gate is open, else the model's (the "
        "judge as users get it). 'seen' = a sample of the feedback aligned so far, final values. 's/judgment' = "
        f"median seconds of a judgment that called the model (k={cfg['k']} episodes, all principles).",
    ]
    if cfg["model_runs"] < runs:
        lines.append(
            f"* measured on {cfg['model_runs']} of the {runs} runs (seeds "
            f"{', '.join(map(str, cfg['seeds'][: cfg['model_runs']]))}): on the others a judgment whose head "
            "decides skips the model call, which keeps the demo within its time budget; no memory, memory + "
            "calibration and seen are measured on every run."
        )
    lines.append(
        "feedback scored before alignment: the gate compares the head with the model's recorded agreement"
        if cfg["score_feedback"]
        else "feedback not scored before alignment (--score-feedback to score it, one model call per record): "
        "with the embedded model the gate compares the head with the majority rate"
    )
    for target in result["targets"]:
        verdict = "not measured" if target["ok"] is None else ("met" if target["ok"] else "NOT met")
        value = "-" if target["value"] is None else f"{target['value']:.2f}"
        lines.append(f"target: {target['name']}: {value} (target {target['target']:.2f}): {verdict}")
    head = result.get("head") or {}
    if head.get("head"):
        h = head["head"]
        lines.append(
            f"calibration head (last run): fields {', '.join(h['fields'])}; {h['episodes']} episodes; {h['reason']}"
        )
    for seed, figures in result["precedent"].items():
        lines.append(
            f"precedent rule on (seed {seed}): seen agreement {figures['seen']:.2f} on {figures['n']} cases, "
            f"{figures['answered_by_precedent']} answered from the expert's stored verdict without the model"
        )
    lines.append("principles distilled (last run), as stored:")
    lines.extend(f"  - {p['text']}" for p in result["principles"])
    if not result["principles"]:
        lines.append("  (none stored: the model distilled none that passed vetting)")
    return lines


def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("demo-output"),
    task: Annotated[
        str, typer.Option(help="house-rule (default), citation (its first version) or halueval.")
    ] = "house-rule",
    test_size: Annotated[int, typer.Option(help="Held-out test cases per run.")] = 8,
    steps: Annotated[str, typer.Option(help="Feedback counts to measure after, comma-separated.")] = "0,5,10,20",
    seen_sample: Annotated[int, typer.Option(help="Seen cases re-judged per step at most.")] = 4,
    runs: Annotated[int, typer.Option(help="Seeded runs (seeds 0..runs-1); figures are mean ± sd.")] = 3,
    model_runs: Annotated[
        int, typer.Option(help="Runs that call the model for every judgment ('memory, model only' column).")
    ] = 1,
    k: Annotated[int, typer.Option(help="Episodes in working memory per judgment.")] = 3,
    score_feedback: Annotated[
        bool, typer.Option(help="Judge each feedback record once before aligning it (the gate's evidence).")
    ] = False,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
) -> None:
    """Watch a judge learn a house rule from expert feedback, offline; prints the learning curve."""
    from memalign_graph.demo import run_demo

    use_base_url(model, base_url)
    started = time.perf_counter()
    try:
        step_list = [int(s) for s in steps.split(",") if s.strip()]
        result = run_demo(
            out,
            task=task,
            test_size=test_size,
            steps=step_list,
            seen_sample=seen_sample,
            seeds=list(range(runs)),
            model_runs=min(model_runs, runs),
            k=k,
            score_feedback=score_feedback,
            model=model,
            base_url=base_url,
            progress=show_progress(),
        )
    except (ValueError, OSError, MemAlignError) as exc:
        fail(exc)
    Console(width=max(console.width, 160)).print(demo_table(result))
    for line in demo_notes(result):
        say(line)
    info(
        f"wrote {out / 'summary.json'}, {out / 'curves.png'}, {out / 'judgments.jsonl'}; memories in "
        f"{out}/memory-seed*; {time.perf_counter() - started:.0f} s"
    )


def evaluate(
    data: Annotated[
        Optional[Path], typer.Argument(help="JSONL (project format), LLMBar JSON or Prometheus JSON.")
    ] = None,
    task: Annotated[
        Optional[str],
        typer.Option(
            help="Instead of DATA: a built-in task (house-rule, citation, halueval) of --limit records (default 60)."
        ),
    ] = None,
    labels: Annotated[Optional[str], typer.Option(help="Categorical judge: comma-separated labels.")] = None,
    scale: Annotated[Optional[str], typer.Option(help="Numeric judge: LO-HI.")] = None,
    pairwise: Annotated[bool, typer.Option("--pairwise", help="Pairwise judge.")] = False,
    criterion: Annotated[Optional[str], typer.Option(help="The judge's criterion (default: the data's).")] = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    embeddings: EmbOpt = None,
    train_size: Annotated[int, typer.Option(help="Train cases (feedback); the rest is the test set.")] = 50,
    steps: Annotated[str, typer.Option(help="Feedback counts to measure after.")] = "0,2,5,10,20,50",
    runs: Annotated[int, typer.Option(help="Seeded runs (different splits).")] = 3,
    ablation: Annotated[
        str,
        typer.Option(
            help="Memory ablations: calibration (both + the calibration head, the default judge), both (prompt "
            "memory, the model's values), semantic, episodic, none. calibration and both share one run."
        ),
    ] = "calibration,both,semantic,episodic,none",
    signal: Annotated[str, typer.Option(help="Learning signals: both,value,feedback.")] = "both",
    limit: Annotated[Optional[int], typer.Option(help="Use N cases in all (seeded sample).")] = None,
    k: Annotated[int, typer.Option(help="Episodes per judgment.")] = 5,
    precedent: Annotated[
        str, typer.Option(help="Expert precedent: off (default: measure the model), exact, similar.")
    ] = "off",
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
    concurrency: Annotated[int, typer.Option(help="Judgments in flight.")] = 2,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("eval-output"),
    injection: Annotated[
        bool,
        typer.Option(
            "--injection",
            help="Instead: judge --limit cases (default 10) clean, with neutral added text and with injected "
            "instructions, fake answers, fake delimiters and fake episodes; report how often each flips the judge.",
        ),
    ] = False,
) -> None:
    """Reproduce the method's experiment on DATA: progressive alignment, agreement on seen and unseen cases."""
    import random

    from memalign_graph.evaluation import EvalConfig, injection_flip_rates, injection_table, markdown_table, run_eval
    from memalign_graph.loaders import load_dataset
    from memalign_graph.spec import JudgeSpec

    use_base_url(model, base_url)
    try:
        chosen = [given for given in (labels, scale, pairwise) if given]
        if len(chosen) > 1:
            raise ValueError("give at most one of --labels, --scale, --pairwise")
        if (data is None) == (task is None):
            raise ValueError("give either DATA or --task")
        name = data.stem if data is not None else str(task)
        spec = None
        if labels:
            spec = JudgeSpec.categorical(name, criterion or "Judge the output.", [x.strip() for x in labels.split(",")])
        elif scale:
            low, _, high = scale.partition("-")
            spec = JudgeSpec.numeric(name, criterion or "Score the output.", int(low), int(high))
        elif pairwise:
            spec = JudgeSpec.pairwise(name, criterion or "Which output is better?")
        if task is not None:
            from memalign_graph.demo import TASKS

            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
            if spec is not None:
                raise ValueError("--task sets its own judge: leave out --labels, --scale and --pairwise")
            spec, loader, _ = TASKS[task]
            records = loader(limit or 60, seed)
            limit = None
        else:
            assert data is not None
            records, spec = load_dataset(data, spec)
        if criterion and spec.criterion != criterion:
            spec = JudgeSpec.from_dict({**spec.to_dict(), "criterion": criterion})
        if limit is not None:
            if limit < 2:
                raise ValueError("--limit must be at least 2")
            records = random.Random(seed).sample(records, min(limit, len(records)))
        if injection:
            flips = injection_flip_rates(
                records, spec, model, limit=limit or 10, concurrency=concurrency, progress=show_progress()
            )
            out.mkdir(parents=True, exist_ok=True)
            (out / "injection.json").write_text(json.dumps(flips, indent=1, ensure_ascii=False), encoding="utf-8")
            print(injection_table(flips))
            info(f"wrote {out / 'injection.json'}")
            return
        config = EvalConfig(
            train_size=min(train_size, len(records) - 1),
            steps=[int(s) for s in steps.split(",") if s.strip()],
            runs=runs,
            ablations=[a.strip() for a in ablation.split(",") if a.strip()],
            signals=[s.strip() for s in signal.split(",") if s.strip()],
            model=model,
            embeddings=embeddings,
            k=k,
            precedent=precedent,
            seed=seed,
            concurrency=concurrency,
        )
        result = run_eval(records, spec, config, out, progress=show_progress())
    except (ValueError, OSError, MemAlignError) as exc:
        fail(exc)
    print(markdown_table(result["rows"], result["metric"]))
    info(f"wrote {out / 'summary.csv'}, {out / 'summary.json'}, {out / 'predictions.jsonl'}, {out / 'curves.png'}")


def bench(
    out: Annotated[Optional[Path], typer.Option(help="Write the figures here as JSON.")] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Smaller sizes and one run (a minute instead of several).")
    ] = False,
    store: Annotated[
        Optional[str],
        typer.Option("--store", help="Also measure the PostgreSQL backend on this server (postgresql://…)."),
    ] = None,
) -> None:
    """Performance figures on this machine (offline embedder, stub LLM of fixed latency); medians over runs.

    Each figure with a target (issue 13) is printed with it and passes or fails; --out writes the
    figures, the checks and the conditions (runs, CPUs, load average) as JSON.
    """
    from memalign_graph.bench import report, run_all

    figures = run_all(
        quick=quick, store=store, progress=lambda name: info(Text(f"measuring {name}…", style="dim"), to=err)
    )
    result = report(figures, quick=quick, runs=1 if quick else 3)
    table = Table(title="memalign bench", box=box.SIMPLE_HEAD)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    for row in result["checks"]:
        verdict = "" if row["ok"] is None else ("[green]pass[/]" if row["ok"] else "[red]FAIL[/]")
        target = "" if row["target"] is None else f"≤ {row['target']:g}"
        table.add_row(row["key"], f"{row['value']:g}", target, verdict)
    console.print(table)
    console.print(f"runs per median: {result['runs']}; load average at the end: {result['load_average']}")
    if out:
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        info(f"wrote {out}")
