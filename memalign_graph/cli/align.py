"""``memalign align``: expert feedback from a JSONL file, MLflow traces or LangSmith runs into memory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from memalign_graph.cli.output import (
    AuthorOpt,
    BaseUrlOpt,
    EmbOpt,
    JsonOpt,
    ModelOpt,
    ReasonOpt,
    Report,
    StoreArg,
    cell,
    check_base_url,
    console,
    err,
    fail,
    info,
    print_json,
    progress,
    say,
)
from memalign_graph.errors import MemAlignError


def align(
    store: StoreArg,
    feedback: Annotated[
        Optional[Path],
        typer.Argument(
            help="JSONL file of feedback records (or use --from-mlflow / --from-langsmith).", show_default=False
        ),
    ] = None,
    from_mlflow: Annotated[
        Optional[str],
        typer.Option(
            "--from-mlflow",
            metavar="TRACKING_URI",
            help="Read human assessments on traces from this MLflow tracking store, e.g. sqlite:///mlflow.db "
            "(needs the mlflow extra).",
        ),
    ] = None,
    experiment: Annotated[
        Optional[list[str]],
        typer.Option("--experiment", help="MLflow experiment name or id (repeat for several; default: all)."),
    ] = None,
    from_langsmith: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--from-langsmith",
            metavar="FILE",
            help="LangSmith runs and feedback as the SDK serialises them, JSON or JSONL (repeat for several files).",
        ),
    ] = None,
    from_langsmith_project: Annotated[
        Optional[list[str]],
        typer.Option(
            "--from-langsmith-project",
            metavar="PROJECT",
            help="Read root runs and their feedback from this LangSmith project through the langsmith client "
            "(LANGSMITH_API_KEY; LANGSMITH_ENDPOINT for a self-hosted server; repeat for several projects).",
        ),
    ] = None,
    feedback_name: Annotated[
        Optional[str],
        typer.Option(
            "--feedback-name",
            help="MLflow assessment name (feedback or expectation) / LangSmith feedback key to import "
            "(default: the judge's name, or the only one).",
        ),
    ] = None,
    resolve: Annotated[
        str,
        typer.Option(help="Several human verdicts on one trace or run: newest (last one wins) or majority."),
    ] = "newest",
    value_map: Annotated[
        Optional[list[str]],
        typer.Option("--value-map", help="Imported value -> judge value, FROM=TO, e.g. true=pass (repeat)."),
    ] = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    embeddings: EmbOpt = None,
    batch_size: Annotated[int, typer.Option(help="Most records per distillation call.")] = 50,
    token_budget: Annotated[
        Optional[int],
        typer.Option(help="Most estimated prompt tokens of records per call (default: what the model's window holds)."),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Distillation calls in flight.")] = 8,
    author: AuthorOpt = "expert",
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Align the judge to expert feedback: a JSONL file, MLflow traces or LangSmith runs; new episodes and principles.

    Every record is read and checked before anything is written: one bad record and
    memory stays as it was. Re-importing the same traces or runs is a no-op.
    """
    from memalign_graph.memory import Memory
    from memalign_graph.models import resolve_chat_model
    from memalign_graph.spec import read_jsonl

    sources = [
        name
        for name, given in (
            ("FEEDBACK", feedback),
            ("--from-mlflow", from_mlflow),
            ("--from-langsmith", from_langsmith),
            ("--from-langsmith-project", from_langsmith_project),
        )
        if given
    ]
    if len(sources) != 1:
        fail(
            ValueError(
                "give one source of feedback: FEEDBACK, --from-mlflow, --from-langsmith or --from-langsmith-project "
                f"(got {' and '.join(sources) or 'none'})"
            )
        )
    if experiment and not from_mlflow:
        fail(ValueError("--experiment goes with --from-mlflow"))
    if feedback is not None and (feedback_name or value_map):
        fail(ValueError("--feedback-name and --value-map go with an import (--from-…), not a JSONL file"))
    check_base_url(model, base_url)
    imported = None
    try:
        memory = Memory.open(store, embeddings=embeddings)
        if feedback is not None:
            records = read_jsonl(feedback, memory.spec, feedback=True, allow_empty=False)
        else:
            import memalign_graph.importers as importers

            options = {
                "feedback_name": feedback_name,
                "resolve": resolve,
                "value_map": importers.parse_value_map(value_map or []),
                "ledger": memory.records,  # records an earlier import keyed by the bare trace id keep that id
            }
            if from_mlflow:
                imported = importers.from_mlflow(from_mlflow, memory.spec, experiments=experiment or [], **options)
                where = from_mlflow
            elif from_langsmith_project:
                imported = importers.from_langsmith_project(from_langsmith_project, memory.spec, **options)
                where = f"LangSmith project {', '.join(map(repr, from_langsmith_project))}"
            else:
                imported = importers.from_langsmith(from_langsmith or [], memory.spec, **options)
                where = ", ".join(map(str, from_langsmith or []))
            records = imported.records
            if not records:
                raise ValueError(imported.why_empty(where))
            _print_import(imported)
        chat = resolve_chat_model(model, base_url=base_url)
        bars: dict[str, Any] = {}

        def show(phase: str, done: int, total: int) -> None:  # one bar per phase of the alignment
            if phase not in bars:
                bars[phase] = progress(total, phase, "item", position=len(bars))
            bars[phase].total = total
            bars[phase].update(done - bars[phase].n)

        try:
            report = memory.align(
                records,
                model=chat,
                batch_size=batch_size,
                token_budget=token_budget,
                concurrency=concurrency,
                author=author,
                reason=reason,
                progress=show,
            )
        finally:
            for bar in bars.values():
                bar.close()
    except (OSError, ValueError, ImportError, MemAlignError) as exc:
        fail(exc)
    data = report.to_dict()
    if as_json:
        if imported is not None:
            data["import"] = {
                "source": imported.source,
                "feedback_name": imported.feedback_name,
                "records": len(imported.records),
                "skipped": imported.skipped,
                "disagreements": imported.disagreements,
                "legacy_ids": imported.legacy_ids,
            }
        print_json(data)
    else:
        _print_alignment(data, memory)
    if report.failed:
        err.print(f"{len(report.failed)} records failed distillation; run align again to retry them", style="red")
        raise typer.Exit(1)


def _print_import(imported: Any) -> None:
    info(
        f"imported {len(imported.records)} records from {imported.source} "
        f"(feedback {imported.feedback_name!r}); {len(imported.skipped)} skipped, "
        f"{len(imported.disagreements)} with experts disagreeing"
        + (
            f"; {len(imported.legacy_ids)} kept the trace or run id an earlier import gave them"
            if imported.legacy_ids
            else ""
        ),
        to=err,
    )
    if imported.skipped:
        table = Report("skipped", "trace / run", "why")
        for source_id, why in imported.skipped.items():
            table.add_row(cell(source_id), cell(why))
        err.print(table)


def _print_alignment(report: dict[str, Any], memory: Any) -> None:
    """An alignment report as a person reads it: counts, then the principles it added."""
    table = Report(f"aligned: memory version {report['version']} ({report['seconds']:.1f} s)", "", "records", "ids")
    table.columns[1].justify = "right"
    rows = [
        ("new", report["added"]),
        ("replaced", report["replaced"]),
        ("unchanged", report["unchanged"]),
        ("distilled", report["distilled"]),
        ("failed", list(report["failed"])),
    ]
    for name, ids in rows:
        shown = ", ".join(ids[:5]) + (f", … ({len(ids) - 5} more)" if len(ids) > 5 else "")
        table.add_row(name, str(len(ids)), cell(shown))
    console.print(table)
    texts = {p["id"]: p for p in memory.principles}
    if report["new_principles"]:
        table = Report("new principles", "id", "principle", "sources")
        for pid in report["new_principles"]:
            p = texts.get(pid)
            table.add_row(cell(pid), cell(p and p["text"]), cell(p and ", ".join(p["sources"])))
        console.print(table)
    extra = []
    if report["merged_principles"]:
        extra.append(f"{len(report['merged_principles'])} merged into existing principles")
    if report["removed_principles"]:
        extra.append(f"{len(report['removed_principles'])} removed (their records were replaced)")
    tokens = report["usage"].get("total_tokens")
    extra.append(f"{report['llm_calls']} LLM calls" + (f", {tokens} tokens" if tokens else ""))
    say("; ".join(extra))
    if report["failed"]:
        table = Report("distillation failed", "id", "error")
        for rid, message in report["failed"].items():
            table.add_row(cell(rid), cell(message))
        err.print(table)
