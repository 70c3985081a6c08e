"""``memalign init`` (an empty judge) and ``memalign judge`` (judgments for a file of cases)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from memalign_graph.cli.output import (
    STORE_HELP,
    BaseUrlOpt,
    EmbOpt,
    ModelOpt,
    Report,
    StoreArg,
    cell,
    check_base_url,
    console,
    err,
    fail,
    info,
    is_terminal,
    progress,
)
from memalign_graph.errors import MemAlignError


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
        fail(ValueError("give exactly one of --labels, --scale, --pairwise"))
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
        fail(exc)
    info(f"created judge {spec.name!r} ({spec.kind}, {spec.describe_values()}) in {memory.backend.location}")


def judge(
    store: StoreArg,
    cases: Annotated[Path, typer.Argument(help="JSONL file of cases.")],
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", help="Write the judgments here as JSONL, one per line.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSONL (one judgment per line) even on a terminal.")
    ] = False,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    embeddings: EmbOpt = None,
    k: Annotated[int, typer.Option(help="Episodes retrieved per judgment.")] = 5,
    precedent: Annotated[str, typer.Option(help="Expert precedent: exact, similar or off.")] = "exact",
    concurrency: Annotated[int, typer.Option(help="Judgments in flight.")] = 2,
) -> None:
    """Judge every case in CASES (JSONL): a table on a terminal, one JSON judgment per line otherwise.

    JSONL goes to the file given with -o, or to stdout with --json or when stdout is a pipe or a
    file. A case that cannot be judged does not stop the others: every successful judgment is
    written, the failed case ids are listed, and the exit code is 1.
    """
    import os

    from memalign_graph.context import Context
    from memalign_graph.errors import JudgeBatchError
    from memalign_graph.judge_graph import build_judge_graph, judge_many
    from memalign_graph.memory import open_memory
    from memalign_graph.spec import read_jsonl

    check_base_url(model, base_url)
    failed: dict[str, str] = {}
    try:
        memory = open_memory(store, embeddings)
        records = read_jsonl(cases, memory.spec, allow_empty=False)
        context = Context(store=store, model=model, base_url=base_url, embeddings=embeddings, k=k, precedent=precedent)
        with progress(len(records), "judging", "case") as bar:
            try:
                judgments = judge_many(
                    build_judge_graph().compile(), records, context, concurrency, lambda: bar.update(1)
                )
            except JudgeBatchError as exc:
                judgments, failed = exc.judgments, exc.failed
    except (OSError, MemAlignError) as exc:
        fail(exc)
    done = [{"id": r["id"], **j} for r, j in zip(records, judgments) if j is not None]
    text = "".join(json.dumps(j, ensure_ascii=False) + "\n" for j in done)
    if output:
        tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        try:  # the whole new file or the old one: never half a file
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, output)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            fail(exc)
        info(f"wrote {len(done)} judgments to {output}", to=err)
    elif as_json or not is_terminal(sys.stdout):
        sys.stdout.write(text)
    else:
        console.print(_judgments_table(done))
    if failed:
        table = Report(f"{len(failed)} of {len(records)} case(s) could not be judged", "id", "error")
        for rid, message in failed.items():
            table.add_row(cell(rid), cell(message))
        err.print(table)
        raise typer.Exit(1)


def _judgments_table(judgments: list[dict[str, Any]]) -> Report:
    """Judgments as a person reads them: value, rationale, and who decided (the model or an expert's precedent)."""
    table = Report(f"{len(judgments)} judgment(s)", "id", "value", "rationale", "by")
    for j in judgments:
        by = f"precedent {j['precedent']}" if j.get("precedent") else j.get("model")
        table.add_row(cell(j["id"]), cell(j["value"]), cell(j.get("rationale")), cell(by))
    return table
