"""``memalign principles`` (list, edit, govern, versions, diff, rollback) and ``memalign forget``."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from memalign_graph.cli.output import (
    AuthorOpt,
    EmbOpt,
    JsonOpt,
    ReasonOpt,
    Report,
    StoreArg,
    cell,
    console,
    fail,
    plain,
    print_json,
    say,
)
from memalign_graph.errors import MemAlignError


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
            say(f"added {principle['id']} (version {memory.version})")
            return
        if edit is not None:
            memory.edit_principle(edit[0], edit[1], author=author, reason=reason)
            say(f"edited {edit[0]} (version {memory.version})")
            return
        if delete is not None:
            memory.delete_principle(delete, author=author, reason=reason)
            say(f"deleted {delete} (version {memory.version})")
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
        fail(exc)
    if as_json:
        print_json(checkpoint)
        return
    title = Text.assemble(
        f"principles, version {checkpoint['version']} (",
        plain(checkpoint["created_at"]),
        ", ",
        plain(checkpoint["reason"]),
        ")",
    )
    table = Table(title=title)
    for column in ("id", "principle", "sources", "author"):
        table.add_column(column, overflow="fold")
    for p in checkpoint["principles"]:
        table.add_row(
            cell(p["id"]), cell(p["text"]), cell(", ".join(p["sources"]) or "(hand-written)"), cell(p["author"])
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
            *(cell(x) for x in (p["id"], p.get("status", ""), p["text"], ", ".join(p["sources"]), p.get("held", "")))
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
        print_json(rows)
        return
    table = Report(f"versions of {location}", "version", "created / reason", "author", "principles", "episodes")
    table.columns[1].min_width = 25  # a full ISO timestamp (seconds, time zone) on one line; the reason folds below
    for column in (table.columns[0], table.columns[3], table.columns[4]):
        column.justify, column.no_wrap = "right", True
    for row in rows:
        when = Text(row["created_at"]) + Text("\n") + Text(row["reason"] or "-", style="dim")
        table.add_row(cell(row["version"]), when, cell(row["author"]), cell(row["principles"]), cell(row["episodes"]))
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
        print_json(shown)
        return
    table = Report(f"memory version {old} -> {new}", "", "id", "principle")
    for p in principles["added"]:
        table.add_row(Text("+ added", style="green"), cell(p["id"]), cell(p["text"]))
    for p in principles["removed"]:
        table.add_row(Text("- removed", style="red"), cell(p["id"]), cell(p["text"]))
    for c in changed:
        text = Text(c["old"], style="red strike") + Text(" -> ") + Text(c["new"], style="green")
        table.add_row(Text("~ changed", style="yellow"), cell(c["id"]), text)
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
            say(f"  {kind}: " + ", ".join(episodes[kind]))


def _print_change(report: dict[str, Any], what: str, *, as_json: bool) -> None:
    """A forget or rollback report."""
    if as_json:
        print_json(report)
        return
    table = Report(f"{what}: memory version {report['version']}", "", "count", "ids")
    table.columns[1].justify = "right"
    for key in ("episodes_removed", "episodes_restored", "principles_removed", "principles_added"):
        if report.get(key):
            table.add_row(key.replace("_", " "), str(len(report[key])), cell(", ".join(report[key])))
    if not table.rows:
        table.add_row("nothing else changed", "0", cell(None))
    console.print(table)


def forget(
    store: StoreArg,
    record: Annotated[list[str], typer.Option("--record", help="Record id to forget (repeat for several).")],
    author: AuthorOpt = "expert",
    reason: ReasonOpt = None,
    embeddings: EmbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete records for good (privacy): episodes, what was derived from them alone, and every trace in STORE."""
    from memalign_graph.memory import Memory

    try:
        report = Memory.open(store, embeddings=embeddings).forget(record, author=author, reason=reason)
    except (OSError, KeyError, MemAlignError) as exc:
        fail(exc)
    _print_change(report.to_dict(), f"forgot {len(set(record))} record(s)", as_json=as_json)
