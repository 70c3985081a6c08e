"""The ``memalign`` command line: init, judge, align, review, principles, forget, demo."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memalign_graph.errors import MemAlignError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="MemAlign: align an LLM judge to experts through memory."
)
console = Console()
err = Console(stderr=True)

ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        help="Chat model: 'embedded' (default), 'provider:model', 'llamacpp:/path.gguf', or a name with --base-url.",
    ),
]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible server URL.")]
STORE_HELP = (
    "Where the judge's memory lives: a directory (file backend), or a PostgreSQL connection string "
    "'postgresql://user:password@host:port/db?judge=NAME' (PostgreSQL + pgvector backend)."
)
StoreArg = Annotated[str, typer.Argument(metavar="STORE", help=STORE_HELP, show_default=False)]
EmbOpt = Annotated[
    Optional[str], typer.Option("--embeddings", help="Embeddings: 'embedded' (default) or 'provider:model'.")
]


def _fail(exc: BaseException) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def init(
    store: Annotated[
        str, typer.Argument(metavar="STORE", help="Where to create the memory. " + STORE_HELP, show_default=False)
    ],
    name: Annotated[str, typer.Option(help="Judge name.")],
    criterion: Annotated[str, typer.Option(help="What the judge judges, in words.")],
    labels: Annotated[Optional[str], typer.Option(help="Categorical: comma-separated labels, e.g. pass,fail.")] = None,
    scale: Annotated[Optional[str], typer.Option(help="Numeric: LO-HI, e.g. 1-5.")] = None,
    pairwise: Annotated[bool, typer.Option("--pairwise", help="Pairwise: A, B or tie.")] = False,
    embeddings: EmbOpt = None,
) -> None:
    """Create a judge's empty memory in STORE (a directory or a postgresql:// URL)."""
    from memalign_graph.memory import Memory
    from memalign_graph.spec import JudgeSpec

    chosen = [opt for opt, given in (("--labels", labels), ("--scale", scale), ("--pairwise", pairwise)) if given]
    if len(chosen) != 1:
        _fail(ValueError("give exactly one of --labels, --scale, --pairwise"))
    try:
        if labels:
            spec = JudgeSpec.categorical(name, criterion, [x.strip() for x in labels.split(",")])
        elif scale:
            low, _, high = scale.partition("-")
            if not (low.strip().isdigit() and high.strip().isdigit()):
                raise ValueError(f"--scale {scale!r}: use LO-HI with integers, e.g. 1-5")
            spec = JudgeSpec.numeric(name, criterion, int(low), int(high))
        else:
            spec = JudgeSpec.pairwise(name, criterion)
        memory = Memory.create(store, spec, embeddings=embeddings)
    except (ValueError, FileExistsError, MemAlignError) as exc:
        _fail(exc)
    console.print(f"created judge {spec.name!r} ({spec.kind}, {spec.describe_values()}) in {memory.backend.location}")


@app.command()
def judge(
    store: StoreArg,
    cases: Annotated[Path, typer.Argument(help="JSONL file of cases.")],
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", help="Write judgments here (default: stdout).")
    ] = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    embeddings: EmbOpt = None,
    k: Annotated[int, typer.Option(help="Episodes retrieved per judgment.")] = 5,
    precedent: Annotated[str, typer.Option(help="Expert precedent: exact, similar or off.")] = "exact",
    concurrency: Annotated[int, typer.Option(help="Judgments in flight.")] = 2,
) -> None:
    """Judge every case in CASES (JSONL); one JSON judgment per line."""
    from tqdm import tqdm

    from memalign_graph.context import Context
    from memalign_graph.graph import build_judge_graph, judge_many
    from memalign_graph.memory import open_memory
    from memalign_graph.spec import read_jsonl

    try:
        memory = open_memory(store, embeddings)
        records = read_jsonl(cases, memory.spec, allow_empty=False)
        context = Context(store=store, model=model, base_url=base_url, embeddings=embeddings, k=k, precedent=precedent)
        with tqdm(total=len(records), desc="judging", unit="case", file=sys.stderr) as bar:
            judgments = judge_many(build_judge_graph().compile(), records, context, concurrency, lambda: bar.update(1))
    except (OSError, MemAlignError) as exc:
        _fail(exc)
    lines = [json.dumps({"id": r["id"], **j}, ensure_ascii=False) for r, j in zip(records, judgments)]
    text = "\n".join(lines) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {len(lines)} judgments to {output}")
    else:
        sys.stdout.write(text)


@app.command()
def align(
    store: StoreArg,
    feedback: Annotated[Path, typer.Argument(help="JSONL file of feedback records.")],
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    embeddings: EmbOpt = None,
    batch_size: Annotated[int, typer.Option(help="Most records per distillation call.")] = 50,
    token_budget: Annotated[
        Optional[int],
        typer.Option(help="Most estimated prompt tokens of records per call (default: what the model's window holds)."),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Distillation calls in flight.")] = 8,
    author: Annotated[str, typer.Option(help="Recorded with the new version.")] = "expert",
    reason: Annotated[Optional[str], typer.Option(help="One line recorded with the new version.")] = None,
) -> None:
    """Align the judge to expert feedback (FEEDBACK, JSONL): new episodes and principles."""
    from tqdm import tqdm

    from memalign_graph.memory import Memory
    from memalign_graph.models import resolve_chat_model
    from memalign_graph.spec import read_jsonl

    try:
        memory = Memory.open(store, embeddings=embeddings)
        records = read_jsonl(feedback, memory.spec, feedback=True, allow_empty=False)
        chat = resolve_chat_model(model, base_url=base_url)
        with tqdm(total=len(records), desc="distilling", unit="record", file=sys.stderr) as bar:
            report = memory.align(
                records,
                model=chat,
                batch_size=batch_size,
                token_budget=token_budget,
                concurrency=concurrency,
                author=author,
                reason=reason,
                progress=bar,
            )
    except (OSError, ValueError, MemAlignError) as exc:
        _fail(exc)
    console.print_json(json.dumps(report.to_dict()))
    if report.failed:
        err.print(f"[red]{len(report.failed)} records failed distillation; run align again to retry them[/]")
        raise typer.Exit(1)


@app.command()
def principles(
    store: StoreArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    add: Annotated[Optional[str], typer.Option("--add", help="Add a hand-written principle.")] = None,
    edit: Annotated[
        Optional[tuple[str, str]], typer.Option("--edit", help="Replace principle ID's text: --edit ID TEXT.")
    ] = None,
    delete: Annotated[Optional[str], typer.Option("--delete", help="Delete principle ID.")] = None,
    versions: Annotated[bool, typer.Option("--versions", help="List every version of memory.")] = False,
    diff: Annotated[Optional[tuple[int, int]], typer.Option("--diff", help="What changed: --diff V1 V2.")] = None,
    rollback: Annotated[Optional[int], typer.Option("--rollback", help="Restore memory as it was at V.")] = None,
    author: Annotated[str, typer.Option(help="Recorded with a change.")] = "expert",
    reason: Annotated[Optional[str], typer.Option(help="One line recorded with a change.")] = None,
    embeddings: EmbOpt = None,
) -> None:
    """List the current principles (with sources and version), or change them, or inspect and roll back versions."""
    from memalign_graph.memory import Memory, backend_for, diff_versions

    changes = any(x is not None for x in (add, edit, delete, rollback))
    try:
        backend = backend_for(store)
        if not changes:
            checkpoint = backend.checkpoint(backend.current_version())
            if diff:
                console.print_json(json.dumps(diff_versions(backend, *diff)))
                return
            if versions:
                table = Table(title=f"versions of {backend.location}", box=box.SIMPLE_HEAD)
                for column in ("version", "created", "author", "reason", "principles", "episodes"):
                    table.add_column(column)
                for v in backend.versions():
                    table.add_row(
                        str(v["version"]),
                        v["created_at"],
                        v["author"],
                        v["reason"],
                        str(len(v["principles"])),
                        str(len(v["records"])),
                    )
                console.print(table)
                return
        else:
            memory = Memory.open(store, embeddings=embeddings)
        if add is not None:
            principle = memory.add_principle(add, author=author, reason=reason)
            console.print(f"added {principle['id']} (version {memory.version})")
            return
        if edit is not None:
            memory.edit_principle(edit[0], edit[1], author=author, reason=reason)
            console.print(f"edited {edit[0]} (version {memory.version})")
            return
        if delete is not None:
            memory.delete_principle(delete, author=author, reason=reason)
            console.print(f"deleted {delete} (version {memory.version})")
            return
        if rollback is not None:
            report = memory.rollback(rollback, author=author, reason=reason)
            console.print_json(json.dumps(report.to_dict()))
            return
    except (OSError, KeyError, ValueError, MemAlignError) as exc:
        _fail(exc)
    if as_json:
        console.print_json(json.dumps(checkpoint))
        return
    title = f"principles, version {checkpoint['version']} ({checkpoint['created_at']}, {checkpoint['reason']})"
    table = Table(title=title)
    for column in ("id", "principle", "sources", "author"):
        table.add_column(column, overflow="fold")
    for p in checkpoint["principles"]:
        table.add_row(p["id"], p["text"], ", ".join(p["sources"]) or "(hand-written)", p["author"])
    console.print(table)


@app.command()
def forget(
    store: StoreArg,
    record: Annotated[list[str], typer.Option("--record", help="Record id to forget (repeat for several).")],
    author: Annotated[str, typer.Option(help="Recorded with the new version.")] = "expert",
    reason: Annotated[Optional[str], typer.Option(help="One line recorded with the new version.")] = None,
    embeddings: EmbOpt = None,
) -> None:
    """Delete records for good (privacy): episodes, what was derived from them alone, and every trace in DIRECTORY."""
    from memalign_graph.memory import Memory

    try:
        report = Memory.open(store, embeddings=embeddings).forget(record, author=author, reason=reason)
    except (OSError, KeyError, MemAlignError) as exc:
        _fail(exc)
    console.print_json(json.dumps(report.to_dict()))


def _show_review(payload: dict[str, Any]) -> None:
    judgment = payload["judgment"]
    case = payload["case"]
    console.rule(f"case {case.get('id', '')}")
    console.print(f"[bold]input[/]: {case['inputs']}", highlight=False)
    console.print(f"[bold]output[/]: {case['outputs']}", highlight=False)
    if case.get("expectations") is not None:
        console.print(f"[bold]expected[/]: {case['expectations']}", highlight=False)
    how = f"expert precedent {judgment['precedent']}" if judgment.get("precedent") else judgment["model"]
    console.print(f"[bold]judgment[/]: [cyan]{judgment['value']}[/] ({how}) - {judgment['rationale']}", highlight=False)
    if judgment.get("scores"):
        console.print(f"  scores: {judgment['scores']}", highlight=False)
    for p in payload["principles"]:
        console.print(f"  principle {p['id']}: {p['text']}", highlight=False)
    for e in payload["episodes"]:
        console.print(
            f"  episode {e['id']} (similarity {e['score']}): expert value {e.get('value')}; {e.get('feedback') or ''}",
            highlight=False,
        )


def _ask_review(values: list[Any]) -> dict[str, Any]:
    choice = typer.prompt("[a]ccept, [c]orrect, [s]kip, [q]uit", default="a").strip().lower()[:1]
    if choice == "q":
        raise KeyboardInterrupt
    if choice == "s":
        return {"action": "skip"}
    if choice != "c":
        return {"action": "accept"}
    answer: dict[str, Any] = {"action": "correct"}
    value = typer.prompt(f"correct value {values} (empty: none)", default="", show_default=False).strip()
    if value:
        answer["value"] = (
            int(value) if value.lstrip("-").isdigit() and all(isinstance(v, int) for v in values) else value
        )
    feedback = typer.prompt("feedback (empty: none)", default="", show_default=False).strip()
    if feedback:
        answer["feedback"] = feedback
    return answer


@app.command()
def review(
    store: StoreArg,
    cases: Annotated[Path, typer.Argument(help="JSONL file of cases (each with an id, or line ids are used).")],
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    embeddings: EmbOpt = None,
    policy: Annotated[str, typer.Option(help="Which judgments to review: all, none, unsure, sample.")] = "all",
    store_accepted: Annotated[bool, typer.Option(help="Store accepted judgments as episodes.")] = False,
    reviewer: Annotated[Optional[str], typer.Option(help="Your name, recorded with each correction.")] = None,
) -> None:
    """Judge each case and ask the expert to accept, correct or skip it; corrections align the judge at once.

    Progress is checkpointed with the memory (one LangGraph thread per case id): in
    STORE/review-checkpoints.sqlite for a directory, in LangGraph's PostgresSaver tables for
    PostgreSQL. So Ctrl-C is safe and a later run continues where this one stopped.
    """
    from langgraph.types import Command
    from pydantic import ValidationError

    from memalign_graph.context import Context
    from memalign_graph.graph import build_review_graph
    from memalign_graph.memory import open_memory
    from memalign_graph.spec import read_jsonl

    try:
        memory = open_memory(store, embeddings)
        records = read_jsonl(cases, memory.spec, allow_empty=False)
    except (OSError, MemAlignError) as exc:
        _fail(exc)
    context = Context(
        store=store,
        model=model,
        base_url=base_url,
        embeddings=embeddings,
        review=policy,
        store_accepted=store_accepted,
    )
    stack = contextlib.ExitStack()
    try:
        saver = stack.enter_context(memory.backend.review_checkpointer())
    except (OSError, MemAlignError) as exc:
        _fail(exc)
    graph = build_review_graph().compile(checkpointer=saver)
    counts = {"reviewed": 0, "done before": 0, "not selected": 0}
    try:
        for record in records:
            config = {"configurable": {"thread_id": memory.backend.review_thread_id(record["id"])}}
            state = graph.get_state(config)
            if state.values.get("judgment") and not state.next:
                counts["done before"] += 1
                continue
            if not state.next:
                case = {k: record[k] for k in ("id", "inputs", "outputs", "expectations") if k in record}
                out = graph.invoke(case, config, context=context)
                if "__interrupt__" not in out:
                    counts["not selected"] += 1
                    continue
                state = graph.get_state(config)
            payload = state.interrupts[0].value
            _show_review(payload)
            while True:
                answer = _ask_review(payload["judge"]["values"])
                if reviewer and answer["action"] == "correct":
                    answer["reviewer"] = reviewer
                try:
                    out = graph.invoke(Command(resume=answer), config, context=context)
                    break
                except ValidationError as exc:
                    err.print(f"[red]answer rejected:[/] {exc.errors()[0]['msg']}; try again")
            counts["reviewed"] += 1
            if out.get("report"):
                rep = out["report"]
                console.print(
                    f"memory version {rep['version']}: {len(rep['new_principles'])} new principle(s), "
                    f"episode {', '.join(rep['added'] + rep['replaced']) or 'unchanged'}"
                )
    except (KeyboardInterrupt, typer.Abort, EOFError):
        err.print("\nstopped; memory is consistent. Run the same command again to continue.")
        raise typer.Exit(130) from None
    except MemAlignError as exc:
        _fail(exc)
    finally:
        stack.close()
    console.print(", ".join(f"{n} {k}" for k, n in counts.items()))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def curve_table(rows: list[dict[str, Any]], title: str) -> Table:
    """The learning-curve table as the demo prints it (all figures are also in curve.json)."""
    table = Table(
        title=title,
        caption="seen n = feedback count (step 0: the whole train shard); unseen n = test shard",
        box=box.SIMPLE_HEAD,
    )
    columns = [
        ("feedback", "step"),
        ("seen EM", "seen_em"),
        ("unseen EM", "unseen_em"),
        ("principles", "principles"),
        ("episodes", "episodes"),
        ("precedent", "precedent_used"),
        ("align s", "align_s"),
        ("failed", "align_failed"),
    ]
    for header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*(_fmt(row.get(key)) for _, key in columns))
    return table


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("demo-output"),
    limit: Annotated[int, typer.Option(help="HaluEval QA items in all (train + test).")] = 80,
    train_size: Annotated[int, typer.Option(help="Items in the train shard.")] = 50,
    steps: Annotated[str, typer.Option(help="Feedback counts to measure after, comma-separated.")] = "0,2,5,10,20,50",
    model: ModelOpt = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    concurrency: Annotated[int, typer.Option(help="Judgments in flight.")] = 2,
    precedent: Annotated[str, typer.Option(help="Expert precedent: exact, similar or off.")] = "exact",
) -> None:
    """Watch a judge learn from expert feedback on HaluEval QA, offline; prints the learning curve."""
    from memalign_graph.demo import run_demo

    started = time.perf_counter()
    try:
        step_list = [int(s) for s in steps.split(",") if s.strip()]
        result = run_demo(
            out,
            limit=limit,
            train_size=train_size,
            steps=step_list,
            model=model,
            seed=seed,
            concurrency=concurrency,
            precedent=precedent,
        )
    except (ValueError, OSError, MemAlignError) as exc:
        _fail(exc)
    cfg = result["config"]
    title = f"MemAlign on {cfg['dataset']}: train {cfg['train']}, test {cfg['test']}, model {cfg['model']}"
    Console(width=max(console.width, 100)).print(curve_table(result["steps"], title))
    console.print(
        "EM = exact match with the expert. 'seen' = train cases aligned so far (step 0: the whole train shard before "
        f"alignment); 'precedent' = judgments answered by the expert-precedent rule ({precedent}), not the model; "
        "'failed' = records whose distillation failed (retried by the next alignment)."
    )
    console.print(
        f"wrote {out / 'curve.json'}, {out / 'judgments.jsonl'}; memory in {out / 'memory'}; "
        f"{time.perf_counter() - started:.0f} s"
    )


@app.command("eval")
def evaluate(
    data: Annotated[Path, typer.Argument(help="JSONL (project format), LLMBar JSON or Prometheus JSON.")],
    labels: Annotated[Optional[str], typer.Option(help="Categorical judge: comma-separated labels.")] = None,
    scale: Annotated[Optional[str], typer.Option(help="Numeric judge: LO-HI.")] = None,
    pairwise: Annotated[bool, typer.Option("--pairwise", help="Pairwise judge.")] = False,
    criterion: Annotated[Optional[str], typer.Option(help="The judge's criterion (default: the data's).")] = None,
    model: ModelOpt = None,
    embeddings: EmbOpt = None,
    train_size: Annotated[int, typer.Option(help="Train cases (feedback); the rest is the test set.")] = 50,
    steps: Annotated[str, typer.Option(help="Feedback counts to measure after.")] = "0,2,5,10,20,50",
    runs: Annotated[int, typer.Option(help="Seeded runs (different splits).")] = 3,
    ablation: Annotated[
        str, typer.Option(help="Memory ablations: both,semantic,episodic,none.")
    ] = "both,semantic,episodic,none",
    signal: Annotated[str, typer.Option(help="Learning signals: both,value,feedback.")] = "both",
    limit: Annotated[Optional[int], typer.Option(help="Use N cases in all (seeded sample).")] = None,
    k: Annotated[int, typer.Option(help="Episodes per judgment.")] = 5,
    precedent: Annotated[
        str, typer.Option(help="Expert precedent: off (default: measure the model), exact, similar.")
    ] = "off",
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
    concurrency: Annotated[int, typer.Option(help="Judgments in flight.")] = 2,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("eval-output"),
) -> None:
    """Reproduce the method's experiment on DATA: progressive alignment, agreement on seen and unseen cases."""
    import random

    from memalign_graph.evaluation import EvalConfig, markdown_table, run_eval
    from memalign_graph.loaders import load_dataset
    from memalign_graph.spec import JudgeSpec

    try:
        chosen = [given for given in (labels, scale, pairwise) if given]
        if len(chosen) > 1:
            raise ValueError("give at most one of --labels, --scale, --pairwise")
        name = data.stem
        spec = None
        if labels:
            spec = JudgeSpec.categorical(name, criterion or "Judge the output.", [x.strip() for x in labels.split(",")])
        elif scale:
            low, _, high = scale.partition("-")
            spec = JudgeSpec.numeric(name, criterion or "Score the output.", int(low), int(high))
        elif pairwise:
            spec = JudgeSpec.pairwise(name, criterion or "Which output is better?")
        records, spec = load_dataset(data, spec)
        if criterion and spec.criterion != criterion:
            spec = JudgeSpec.from_dict({**spec.to_dict(), "criterion": criterion})
        if limit is not None:
            if limit < 2:
                raise ValueError("--limit must be at least 2")
            records = random.Random(seed).sample(records, min(limit, len(records)))
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
        result = run_eval(records, spec, config, out)
    except (ValueError, OSError, MemAlignError) as exc:
        _fail(exc)
    print(markdown_table(result["rows"], result["metric"]))
    console.print(
        f"wrote {out / 'summary.csv'}, {out / 'summary.json'}, {out / 'predictions.jsonl'}, {out / 'curves.png'}"
    )


@app.command()
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
    """Performance figures on this machine (offline embedder, stub LLM of fixed latency); medians over runs."""
    from memalign_graph.bench import run_all

    figures = run_all(quick=quick, store=store)
    table = Table(title="memalign bench", box=box.SIMPLE_HEAD)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, f"{value:g}")
    console.print(table)
    if out:
        out.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        console.print(f"wrote {out}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
