"""The ``memalign`` command line: init, judge, align, review, principles, forget, demo."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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
    Optional[str],
    typer.Option(
        "--embeddings",
        help="Embeddings: 'embedded' (default: MiniLM int8), 'e5' (multilingual), 'minilm' or 'provider:model'. "
        "Unset: MEMALIGN_EMBEDDINGS, else those an existing memory was made with.",
    ),
]


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for machines) instead of tables.")]


def _fail(exc: BaseException) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(2)


def _print_json(data: Any) -> None:
    """JSON for machines: plain text on stdout, never wrapped or styled by rich."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _cell(value: Any) -> Text:
    """A table cell shown as it is: text from experts, models or files is never read as rich markup."""
    return Text("-") if value is None or value == "" else _plain(str(value))


def _check_base_url(model: str | None, base_url: str | None) -> None:
    if base_url and not model:
        _fail(ValueError("--base-url needs --model: the model name the server at that URL serves"))


def _use_base_url(model: str | None, base_url: str | None) -> None:
    """For commands whose model is resolved deep inside (demo, eval): the same as setting MEMALIGN_BASE_URL."""
    import os

    _check_base_url(model, base_url)
    if base_url:
        os.environ["MEMALIGN_BASE_URL"] = base_url


class _Report(Table):
    """A table under a one-line heading (shown as it is, never squeezed to the table's width)."""

    def __init__(self, heading: str, *columns: str, **kwargs: Any) -> None:
        super().__init__(box=box.SIMPLE_HEAD, **kwargs)
        self.heading = Text(heading, style="bold")
        for column in columns:
            self.add_column(column, overflow="fold")

    def __rich_console__(self, console: Console, options: Any) -> Any:
        yield self.heading
        yield from super().__rich_console__(console, options)


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
    console.print(
        f"created judge {spec.name!r} ({spec.kind}, {spec.describe_values()}) in {memory.backend.location}",
        markup=False,
        highlight=False,
    )


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
    """Judge every case in CASES (JSONL); one JSON judgment per line.

    A case that cannot be judged does not stop the others: every successful judgment is
    written, the failed case ids are listed, and the exit code is 1.
    """
    import os

    from tqdm import tqdm

    from memalign_graph.context import Context
    from memalign_graph.errors import JudgeBatchError
    from memalign_graph.graph import build_judge_graph, judge_many
    from memalign_graph.memory import open_memory
    from memalign_graph.spec import read_jsonl

    _check_base_url(model, base_url)
    failed: dict[str, str] = {}
    try:
        memory = open_memory(store, embeddings)
        records = read_jsonl(cases, memory.spec, allow_empty=False)
        context = Context(store=store, model=model, base_url=base_url, embeddings=embeddings, k=k, precedent=precedent)
        with tqdm(total=len(records), desc="judging", unit="case", file=sys.stderr) as bar:
            try:
                judgments = judge_many(
                    build_judge_graph().compile(), records, context, concurrency, lambda: bar.update(1)
                )
            except JudgeBatchError as exc:
                judgments, failed = exc.judgments, exc.failed
    except (OSError, MemAlignError) as exc:
        _fail(exc)
    lines = [json.dumps({"id": r["id"], **j}, ensure_ascii=False) for r, j in zip(records, judgments) if j is not None]
    text = "".join(line + "\n" for line in lines)
    if output:
        tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        try:  # the whole new file or the old one: never half a file
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, output)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            _fail(exc)
        err.print(f"wrote {len(lines)} judgments to {output}", markup=False, highlight=False)
    else:
        sys.stdout.write(text)
    if failed:
        table = _Report(f"{len(failed)} of {len(records)} case(s) could not be judged", "id", "error")
        for rid, message in failed.items():
            table.add_row(_cell(rid), _cell(message))
        err.print(table)
        raise typer.Exit(1)


@app.command()
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
    feedback_name: Annotated[
        Optional[str],
        typer.Option(
            "--feedback-name",
            help="MLflow assessment name / LangSmith feedback key to import "
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
    author: Annotated[str, typer.Option(help="Recorded with the new version.")] = "expert",
    reason: Annotated[Optional[str], typer.Option(help="One line recorded with the new version.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Align the judge to expert feedback: a JSONL file, MLflow traces or LangSmith runs; new episodes and principles.

    Every record is read and checked before anything is written: one bad record and
    memory stays as it was. Re-importing the same traces or runs is a no-op.
    """
    from tqdm import tqdm

    from memalign_graph.memory import Memory
    from memalign_graph.models import resolve_chat_model
    from memalign_graph.spec import read_jsonl

    sources = [
        name
        for name, given in (
            ("FEEDBACK", feedback),
            ("--from-mlflow", from_mlflow),
            ("--from-langsmith", from_langsmith),
        )
        if given
    ]
    if len(sources) != 1:
        _fail(
            ValueError(
                "give one source of feedback: FEEDBACK, --from-mlflow or --from-langsmith "
                f"(got {' and '.join(sources) or 'none'})"
            )
        )
    if experiment and not from_mlflow:
        _fail(ValueError("--experiment goes with --from-mlflow"))
    if feedback is not None and (feedback_name or value_map):
        _fail(ValueError("--feedback-name and --value-map go with --from-mlflow or --from-langsmith, not a JSONL file"))
    _check_base_url(model, base_url)
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
            }
            if from_mlflow:
                imported = importers.from_mlflow(from_mlflow, memory.spec, experiments=experiment or [], **options)
            else:
                imported = importers.from_langsmith(from_langsmith or [], memory.spec, **options)
            records = imported.records
            where = from_mlflow or ", ".join(map(str, from_langsmith or []))
            if not records:
                raise ValueError(f"{where}: no human feedback named {imported.feedback_name!r} on any trace or run")
            _print_import(imported)
        chat = resolve_chat_model(model, base_url=base_url)
        bars: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:  # one bar per phase of the alignment
            if phase not in bars:
                bars[phase] = tqdm(total=total, desc=phase, unit="item", file=sys.stderr, position=len(bars))
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
                progress=progress,
            )
        finally:
            for bar in bars.values():
                bar.close()
    except (OSError, ValueError, ImportError, MemAlignError) as exc:
        _fail(exc)
    data = report.to_dict()
    if as_json:
        if imported is not None:
            data["import"] = {
                "source": imported.source,
                "feedback_name": imported.feedback_name,
                "records": len(imported.records),
                "skipped": imported.skipped,
                "disagreements": imported.disagreements,
            }
        _print_json(data)
    else:
        _print_alignment(data, memory)
    if report.failed:
        err.print(f"{len(report.failed)} records failed distillation; run align again to retry them", style="red")
        raise typer.Exit(1)


def _print_import(imported: Any) -> None:
    err.print(
        f"imported {len(imported.records)} records from {imported.source} "
        f"(feedback {imported.feedback_name!r}); {len(imported.skipped)} skipped, "
        f"{len(imported.disagreements)} with experts disagreeing",
        markup=False,
        highlight=False,
    )
    if imported.skipped:
        table = _Report("skipped", "trace / run", "why")
        for source_id, why in imported.skipped.items():
            table.add_row(_cell(source_id), _cell(why))
        err.print(table)


def _print_alignment(report: dict[str, Any], memory: Any) -> None:
    """An alignment report as a person reads it: counts, then the principles it added."""
    table = _Report(f"aligned: memory version {report['version']} ({report['seconds']:.1f} s)", "", "records", "ids")
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
        table.add_row(name, str(len(ids)), _cell(shown))
    console.print(table)
    texts = {p["id"]: p for p in memory.principles}
    if report["new_principles"]:
        table = _Report("new principles", "id", "principle", "sources")
        for pid in report["new_principles"]:
            p = texts.get(pid)
            table.add_row(_cell(pid), _cell(p and p["text"]), _cell(p and ", ".join(p["sources"])))
        console.print(table)
    extra = []
    if report["merged_principles"]:
        extra.append(f"{len(report['merged_principles'])} merged into existing principles")
    if report["removed_principles"]:
        extra.append(f"{len(report['removed_principles'])} removed (their records were replaced)")
    tokens = report["usage"].get("total_tokens")
    extra.append(f"{report['llm_calls']} LLM calls" + (f", {tokens} tokens" if tokens else ""))
    console.print("; ".join(extra), markup=False, highlight=False)
    if report["failed"]:
        table = _Report("distillation failed", "id", "error")
        for rid, message in report["failed"].items():
            table.add_row(_cell(rid), _cell(message))
        err.print(table)


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
    policy: Annotated[
        Optional[str],
        typer.Option(
            "--policy",
            help="Set the judge's principles policy: auto (distilled principles enter working memory at once) "
            "or review (they wait for --approve).",
        ),
    ] = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="List proposed principles awaiting approval (and rejected ones).")
    ] = False,
    approve: Annotated[
        Optional[list[str]], typer.Option("--approve", help="Approve pending principle ID (repeat for several).")
    ] = None,
    reject: Annotated[
        Optional[list[str]], typer.Option("--reject", help="Reject pending principle ID (repeat for several).")
    ] = None,
    author: Annotated[str, typer.Option(help="Recorded with a change.")] = "expert",
    reason: Annotated[Optional[str], typer.Option(help="One line recorded with a change.")] = None,
    embeddings: EmbOpt = None,
) -> None:
    """List the current principles (with sources and version), or change them, or inspect and roll back versions.

    Under the principles policy 'review' distilled principles are proposed, not used: list them with
    --pending and decide with --approve ID / --reject ID (one version for all decisions).
    """
    from memalign_graph.memory import Memory, backend_for, diff_versions

    changes = any(x is not None for x in (add, edit, delete, rollback, policy, approve, reject))
    try:
        backend = backend_for(store)
        if not changes:
            checkpoint = backend.checkpoint(backend.current_version())
            if diff:
                _print_diff(diff_versions(backend, *diff), *diff, as_json=as_json)
                return
            if versions:
                _print_versions(backend.location, backend.versions(), as_json=as_json)
                return
            if pending:
                _print_proposals(checkpoint, as_json)
                return
        else:
            memory = Memory.open(store, embeddings=embeddings)
        if add is not None:
            principle = memory.add_principle(add, author=author, reason=reason)
            console.print(f"added {principle['id']} (version {memory.version})", markup=False, highlight=False)
            return
        if edit is not None:
            memory.edit_principle(edit[0], edit[1], author=author, reason=reason)
            console.print(f"edited {edit[0]} (version {memory.version})", markup=False, highlight=False)
            return
        if delete is not None:
            memory.delete_principle(delete, author=author, reason=reason)
            console.print(f"deleted {delete} (version {memory.version})", markup=False, highlight=False)
            return
        if rollback is not None:
            report = memory.rollback(rollback, author=author, reason=reason)
            _print_change(report.to_dict(), f"rolled back to version {rollback}", as_json=as_json)
            return
        if policy is not None:
            version = memory.set_principles_policy(policy, author=author, reason=reason)
            console.print(f"principles policy {escape(policy)} (version {version})", highlight=False)
            return
        if approve or reject:
            report = memory.decide_principles(approve or [], reject or [], author=author, reason=reason)
            console.print_json(json.dumps(report.to_dict()))
            return
    except (OSError, KeyError, ValueError, MemAlignError) as exc:
        _fail(exc)
    if as_json:
        _print_json(checkpoint)
        return
    title = Text.assemble(
        f"principles, version {checkpoint['version']} (",
        _plain(checkpoint["created_at"]),
        ", ",
        _plain(checkpoint["reason"]),
        ")",
    )
    table = Table(title=title)
    for column in ("id", "principle", "sources", "author"):
        table.add_column(column, overflow="fold")
    for p in checkpoint["principles"]:
        table.add_row(
            _cell(p["id"]), _cell(p["text"]), _cell(", ".join(p["sources"]) or "(hand-written)"), _cell(p["author"])
        )
    console.print(table)
    waiting = sum(p.get("status") == "pending" for p in checkpoint.get("proposed") or [])
    console.print(
        f"principles policy: {escape(str(checkpoint.get('principles_policy') or 'auto'))}"
        + (f"; {waiting} proposed principle(s) pending (--pending)" if waiting else ""),
        highlight=False,
    )


def _print_proposals(checkpoint: dict[str, Any], as_json: bool) -> None:
    proposed = checkpoint.get("proposed") or []
    if as_json:
        console.print_json(json.dumps(proposed))
        return
    table = Table(title=f"proposed principles, version {checkpoint['version']}")
    for column in ("id", "status", "principle", "sources", "why held"):
        table.add_column(column, overflow="fold")
    for p in proposed:
        table.add_row(
            *(_cell(x) for x in (p["id"], p.get("status", ""), p["text"], ", ".join(p["sources"]), p.get("held", "")))
        )
    console.print(table)


def _print_versions(location: str, versions: list[dict[str, Any]], *, as_json: bool) -> None:
    rows = [
        {
            "version": v["version"],
            "created_at": v["created_at"],
            "author": v["author"],
            "reason": v["reason"],
            "principles": len(v["principles"]),
            "episodes": len(v["records"]),
        }
        for v in versions
    ]
    if as_json:
        _print_json(rows)
        return
    table = _Report(f"versions of {location}", "version", "created / reason", "author", "principles", "episodes")
    table.columns[1].min_width = 25  # a full ISO timestamp (seconds, time zone) on one line; the reason folds below
    for column in (table.columns[0], table.columns[3], table.columns[4]):
        column.justify, column.no_wrap = "right", True
    for row in rows:
        when = Text(row["created_at"]) + Text("\n") + Text(row["reason"] or "-", style="dim")
        table.add_row(
            _cell(row["version"]), when, _cell(row["author"]), _cell(row["principles"]), _cell(row["episodes"])
        )
    console.print(table)


def _print_diff(diff: dict[str, Any], old: int, new: int, *, as_json: bool) -> None:
    """Only what really changed: principles added, removed, or whose text changed; episodes by id."""
    principles = diff["principles"]
    changed = [c for c in principles["changed"] if c["old"] != c["new"]]
    resourced = [c["id"] for c in principles["changed"] if c["old"] == c["new"]]
    shown = {
        "from": old,
        "to": new,
        "principles": {"added": principles["added"], "removed": principles["removed"], "changed": changed},
        "principles_sources_changed": resourced,
        "episodes": diff["episodes"],
    }
    if as_json:
        _print_json(shown)
        return
    table = _Report(f"memory version {old} -> {new}", "", "id", "principle")
    for p in principles["added"]:
        table.add_row(Text("+ added", style="green"), _cell(p["id"]), _cell(p["text"]))
    for p in principles["removed"]:
        table.add_row(Text("- removed", style="red"), _cell(p["id"]), _cell(p["text"]))
    for c in changed:
        text = Text(c["old"], style="red strike") + Text(" -> ") + Text(c["new"], style="green")
        table.add_row(Text("~ changed", style="yellow"), _cell(c["id"]), text)
    if table.rows:
        console.print(table)
    else:
        console.print(f"no principle added, removed or reworded between versions {old} and {new}")
    if resourced:
        console.print(f"{len(resourced)} principle(s) kept their text and gained or lost sources", highlight=False)
    episodes = diff["episodes"]
    parts = [f"{len(episodes[k])} {k}" for k in ("added", "removed", "changed")]
    console.print("episodes: " + ", ".join(parts), highlight=False)
    for kind in ("added", "removed", "changed"):
        if episodes[kind]:
            console.print(f"  {kind}: " + ", ".join(episodes[kind]), markup=False, highlight=False)


def _print_change(report: dict[str, Any], what: str, *, as_json: bool) -> None:
    """A forget or rollback report."""
    if as_json:
        _print_json(report)
        return
    table = _Report(f"{what}: memory version {report['version']}", "", "count", "ids")
    table.columns[1].justify = "right"
    for key in ("episodes_removed", "episodes_restored", "principles_removed", "principles_added"):
        if report.get(key):
            table.add_row(key.replace("_", " "), str(len(report[key])), _cell(", ".join(report[key])))
    if not table.rows:
        table.add_row("nothing else changed", "0", _cell(None))
    console.print(table)


@app.command()
def forget(
    store: StoreArg,
    record: Annotated[list[str], typer.Option("--record", help="Record id to forget (repeat for several).")],
    author: Annotated[str, typer.Option(help="Recorded with the new version.")] = "expert",
    reason: Annotated[Optional[str], typer.Option(help="One line recorded with the new version.")] = None,
    embeddings: EmbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete records for good (privacy): episodes, what was derived from them alone, and every trace in STORE."""
    from memalign_graph.memory import Memory

    try:
        report = Memory.open(store, embeddings=embeddings).forget(record, author=author, reason=reason)
    except (OSError, KeyError, MemAlignError) as exc:
        _fail(exc)
    _print_change(report.to_dict(), f"forgot {len(set(record))} record(s)", as_json=as_json)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def _plain(value: Any, style: str = "") -> Text:
    r"""Text from outside (cases, principles, ids, names, model output) for the terminal, inert.

    Never parsed as Rich markup; control and bidi characters (terminal escape sequences,
    carriage returns) shown as ``\xNN``/``\uNNNN`` escapes; non-strings as JSON.
    """
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return Text(_CONTROL.sub(lambda m: ascii(m.group())[1:-1], text), style=style)


def _show_review(payload: dict[str, Any]) -> None:
    """Print one case for review: fixed labels on the left, everything from outside in the right column.

    User text can hold markup or line breaks, but it never reaches the label column, so it
    cannot draw a line that passes for the judgment or a label.
    """
    judgment = payload["judgment"]
    case = payload["case"]
    console.rule(Text.assemble("case ", _plain(case.get("id", ""))))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("input", _plain(case["inputs"]))
    grid.add_row("output", _plain(case["outputs"]))
    if case.get("expectations") is not None:
        grid.add_row("expected", _plain(case["expectations"]))
    how = Text.assemble("expert precedent ", _plain(judgment["precedent"])) if judgment.get("precedent") else None
    grid.add_row(
        "judgment",
        Text.assemble(_plain(judgment["value"], "cyan"), " (", how or _plain(judgment.get("model", "")), ")"),
    )
    grid.add_row("rationale", _plain(judgment.get("rationale", "")))
    if judgment.get("scores"):
        grid.add_row("scores", _plain(judgment["scores"]))
    for p in payload["principles"]:
        grid.add_row("principle", Text.assemble(_plain(p["id"], "dim"), " ", _plain(p["text"])))
    for e in payload["episodes"]:
        grid.add_row(
            "episode",
            Text.assemble(
                _plain(e["id"], "dim"),
                f" (similarity {e['score']}): expert value ",
                _plain(e.get("value")),
                "; " if e.get("feedback") else "",
                _plain(e.get("feedback") or ""),
            ),
        )
    console.print(grid)


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


def _ask_principles(proposed: list[dict[str, Any]], reviewer: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"approve": [], "reject": []}
    if reviewer:
        answer["reviewer"] = reviewer
    for p in proposed:
        console.print(
            Text.assemble(
                "proposed principle ",
                _plain(p["id"]),
                ": ",
                _plain(p["text"]),
                " (from ",
                _plain(", ".join(p["sources"])),
                "; held: ",
                _plain(p.get("held", "")),
                ")",
            )
        )
        choice = typer.prompt("[a]pprove, [r]eject, [l]eave pending", default="l").strip().lower()[:1]
        if choice == "a":
            answer["approve"].append(p["id"])
        elif choice == "r":
            answer["reject"].append(p["id"])
    return answer


def _rejected(exc: Any) -> Text:
    """The first problem of a refused review answer, as ``field: message`` (pydantic ``ValidationError``)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "answer"
    return Text.assemble(("answer rejected: ", "red"), _plain(f"{where}: {first['msg']}"), "; try again")


def _ask_again(graph: Any, config: dict[str, Any], context: Any) -> Any:
    """Put a review thread back at its question (LangGraph time travel) after a stored answer proved unusable.

    Forks the thread from its last checkpoint before ``collect_feedback`` and runs it to the
    interrupt again; returns the new state (with the interrupt), or ``None`` if there is none.
    """
    for snapshot in graph.get_state_history(config):
        if snapshot.next == ("collect_feedback",):
            graph.invoke(None, snapshot.config, context=context)
            return graph.get_state(config)
    return None


@app.command()
def review(
    store: StoreArg,
    cases: Annotated[
        Path, typer.Argument(help="JSONL file of cases (a case without an id is known by its content's hash).")
    ],
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
    PostgreSQL. So Ctrl-C is safe and a later run continues where this one stopped. A case
    whose answer could not be saved (e.g. the disk was full) is saved by the next run; the
    command then exits with status 1.
    """
    from langgraph.types import Command
    from pydantic import ValidationError

    from memalign_graph.context import Context
    from memalign_graph.errors import RecordError
    from memalign_graph.graph import build_review_graph
    from memalign_graph.memory import open_memory
    from memalign_graph.review import review_answer_model
    from memalign_graph.spec import read_jsonl

    _check_base_url(model, base_url)
    try:
        memory = open_memory(store, embeddings)
        records = read_jsonl(cases, memory.spec, allow_empty=False, content_ids=True)
        if reviewer is not None:
            review_answer_model(memory.spec)(action="accept", reviewer=reviewer)
    except (OSError, MemAlignError) as exc:
        _fail(exc)
    except ValidationError as exc:
        _fail(ValueError(f"--reviewer: {exc.errors()[0]['msg']}"))
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
    counts = {"reviewed": 0, "done before": 0, "not selected": 0, "failed": 0}

    def saved(out: dict[str, Any]) -> None:
        counts["reviewed"] += 1
        if out.get("report"):
            rep = out["report"]
            console.print(
                Text.assemble(
                    f"memory version {rep['version']}: {len(rep['new_principles'])} new principle(s), "
                    f"{len(rep.get('proposed_principles') or {})} proposed, episode ",
                    _plain(", ".join(rep["added"] + rep["replaced"]) or "unchanged"),
                )
            )

    def failed(case_id: str, exc: BaseException) -> None:
        counts["failed"] += 1
        err.print(
            Text.assemble(("case ", "red"), _plain(case_id), ": not saved (", _plain(str(exc)), "); run again to retry")
        )

    try:
        for record in records:
            config = {"configurable": {"thread_id": memory.backend.review_thread_id(record["id"])}}
            state = graph.get_state(config)
            if state.values.get("judgment") and not state.next:
                counts["done before"] += 1
                continue
            if state.next and not state.interrupts:  # answered, but saving it failed last time: save it now
                try:
                    saved(graph.invoke(None, config, context=context))
                    continue
                except RecordError as exc:  # the stored answer can never be saved: ask the expert again
                    err.print(Text.assemble("earlier answer not usable (", _plain(str(exc)), "); asked again"))
                    state = _ask_again(graph, config, context)
                except MemAlignError as exc:
                    failed(record["id"], exc)
                    continue
                if state is None or not state.interrupts:
                    failed(record["id"], RuntimeError("the review thread has no question to ask again"))
                    continue
            if not state.next:
                case = {k: record[k] for k in ("id", "inputs", "outputs", "expectations") if k in record}
                out = graph.invoke(case, config, context=context)
                if "__interrupt__" not in out:
                    counts["not selected"] += 1
                    continue
                state = graph.get_state(config)
            payload = state.interrupts[0].value
            while payload is not None:
                principles_asked = payload.get("kind") == "principles"
                if not principles_asked:
                    _show_review(payload)
                out = None
                while True:
                    if principles_asked:
                        answer = _ask_principles(payload["proposed"], reviewer)
                    else:
                        answer = _ask_review(payload["judge"]["values"])
                        if reviewer and answer["action"] == "correct":
                            answer["reviewer"] = reviewer
                    try:
                        out = graph.invoke(Command(resume=answer), config, context=context)
                        break
                    except ValidationError as exc:
                        err.print(_rejected(exc))
                    except RecordError as exc:
                        err.print(Text.assemble(("answer not usable: ", "red"), _plain(str(exc)), "; try again"))
                        if _ask_again(graph, config, context) is None:
                            failed(record["id"], exc)
                            break
                    except MemAlignError as exc:
                        failed(record["id"], exc)
                        break
                if out is None:
                    break
                if not principles_asked:
                    saved(out)
                payload = out["__interrupt__"][0].value if out.get("__interrupt__") else None
    except (KeyboardInterrupt, typer.Abort, EOFError):
        err.print("\nstopped; memory is consistent. Run the same command again to continue.")
        raise typer.Exit(130) from None
    except MemAlignError as exc:
        _fail(exc)
    finally:
        stack.close()
    console.print(", ".join(f"{n} {k}" for k, n in counts.items() if n or k != "failed"))
    if counts["failed"]:
        raise typer.Exit(1)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


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
        title=f"MemAlign learning curve: {cfg['dataset']} - model {cfg['model']}, "
        f"{runs} run{'s' if runs > 1 else ''} (seeds {', '.join(map(str, cfg['seeds']))})",
        box=box.SIMPLE_HEAD,
    )
    for header in (
        "feedback",
        f"unseen, memory (n={cfg['test']})",
        "unseen, no memory",
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
            _pm(row["unseen_with"]),
            _pm(row["unseen_without"]),
            seen,
            f"{row['principles']:g}",
            f"{row['episodes']:g}",
            f"{row['judge_s_p50']:.1f}",
            f"{row['align_s']:.1f}",
        )
    return table


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("demo-output"),
    task: Annotated[str, typer.Option(help="citation (a house rule, default) or halueval.")] = "citation",
    test_size: Annotated[int, typer.Option(help="Held-out test cases per run.")] = 10,
    steps: Annotated[str, typer.Option(help="Feedback counts to measure after, comma-separated.")] = "0,2,5,10,20",
    seen_sample: Annotated[int, typer.Option(help="Seen cases re-judged per step at most.")] = 5,
    runs: Annotated[int, typer.Option(help="Seeded runs (seeds 0..runs-1); figures are mean ± sd.")] = 1,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
) -> None:
    """Watch a judge learn a house rule from expert feedback, offline; prints the learning curve."""
    from memalign_graph.demo import run_demo

    _use_base_url(model, base_url)
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
            model=model,
            base_url=base_url,
        )
    except (ValueError, OSError, MemAlignError) as exc:
        _fail(exc)
    Console(width=max(console.width, 132)).print(demo_table(result))
    console.print(
        "Agreement = exact match with the expert. Every model figure has the expert-precedent rule off. 'without "
        "memory' = the same model on the same unseen cases with an empty memory (measured once per run, at 0). "
        "'seen' = a sample of the feedback cases aligned so far, judged by the model from its memory. "
        "'s/judgment' = median seconds per judgment at that step (k=5 episodes, all principles).",
        highlight=False,
    )
    for seed, figures in result["precedent"].items():
        console.print(
            f"precedent rule on (seed {seed}): seen agreement {figures['seen']:.2f} on {figures['n']} cases, "
            f"{figures['answered_by_precedent']} answered from the expert's stored verdict without the model",
            highlight=False,
        )
    console.print("principles distilled (last run), as stored:", highlight=False)
    for principle in result["principles"]:
        console.print(f"  - {principle['text']}", highlight=False, markup=False)
    if not result["principles"]:
        console.print("  (none stored: the model distilled none that passed vetting)", highlight=False)
    console.print(
        f"wrote {out / 'curve.json'}, {out / 'judgments.jsonl'}; memories in {out}/memory-seed*; "
        f"{time.perf_counter() - started:.0f} s",
        highlight=False,
        markup=False,
    )


@app.command("eval")
def evaluate(
    data: Annotated[Path, typer.Argument(help="JSONL (project format), LLMBar JSON or Prometheus JSON.")],
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

    _use_base_url(model, base_url)
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
        if injection:
            flips = injection_flip_rates(records, spec, model, limit=limit or 10, concurrency=concurrency)
            out.mkdir(parents=True, exist_ok=True)
            (out / "injection.json").write_text(json.dumps(flips, indent=1, ensure_ascii=False), encoding="utf-8")
            print(injection_table(flips))
            console.print(f"wrote {out / 'injection.json'}")
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
        result = run_eval(records, spec, config, out)
    except (ValueError, OSError, MemAlignError) as exc:
        _fail(exc)
    print(markdown_table(result["rows"], result["metric"]))
    console.print(
        f"wrote {out / 'summary.csv'}, {out / 'summary.json'}, {out / 'predictions.jsonl'}, {out / 'curves.png'}",
        markup=False,
        highlight=False,
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
    """Performance figures on this machine (offline embedder, stub LLM of fixed latency); medians over runs.

    Each figure with a target (issue 13) is printed with it and passes or fails; --out writes the
    figures, the checks and the conditions (runs, CPUs, load average) as JSON.
    """
    from memalign_graph.bench import report, run_all

    figures = run_all(quick=quick, store=store, progress=lambda name: err.print(f"[dim]measuring {name}…[/]"))
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
        console.print(f"wrote {out}", markup=False, highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
