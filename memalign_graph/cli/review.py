"""``memalign review``: the expert accepts, corrects or skips each judgment in the terminal; resumable."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from memalign_graph.cli.output import (
    BaseUrlOpt,
    EmbOpt,
    ModelOpt,
    StoreArg,
    check_base_url,
    console,
    err,
    fail,
    info,
    plain,
)
from memalign_graph.errors import MemAlignError


def _show_review(payload: dict[str, Any]) -> None:
    """Print one case for review: fixed labels on the left, everything from outside in the right column.

    User text can hold markup or line breaks, but it never reaches the label column, so it
    cannot draw a line that passes for the judgment or a label.
    """
    judgment = payload["judgment"]
    case = payload["case"]
    console.rule(Text.assemble("case ", plain(case.get("id", ""))))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("input", plain(case["inputs"]))
    grid.add_row("output", plain(case["outputs"]))
    if case.get("expectations") is not None:
        grid.add_row("expected", plain(case["expectations"]))
    how = Text.assemble("expert precedent ", plain(judgment["precedent"])) if judgment.get("precedent") else None
    grid.add_row(
        "judgment",
        Text.assemble(plain(judgment["value"], "cyan"), " (", how or plain(judgment.get("model", "")), ")"),
    )
    grid.add_row("rationale", plain(judgment.get("rationale", "")))
    if judgment.get("scores"):
        grid.add_row("scores", plain(judgment["scores"]))
    for p in payload["principles"]:
        grid.add_row("principle", Text.assemble(plain(p["id"], "dim"), " ", plain(p["text"])))
    for e in payload["episodes"]:
        grid.add_row(
            "episode",
            Text.assemble(
                plain(e["id"], "dim"),
                f" (similarity {e['score']}): expert value ",
                plain(e.get("value")),
                "; " if e.get("feedback") else "",
                plain(e.get("feedback") or ""),
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
                plain(p["id"]),
                ": ",
                plain(p["text"]),
                " (from ",
                plain(", ".join(p["sources"])),
                "; held: ",
                plain(p.get("held", "")),
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
    return Text.assemble(("answer rejected: ", "red"), plain(f"{where}: {first['msg']}"), "; try again")


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
    from memalign_graph.memory import open_memory
    from memalign_graph.review import review_answer_model
    from memalign_graph.review_graph import build_review_graph
    from memalign_graph.spec import read_jsonl

    check_base_url(model, base_url)
    try:
        memory = open_memory(store, embeddings)
        records = read_jsonl(cases, memory.spec, allow_empty=False, content_ids=True)
        if reviewer is not None:
            review_answer_model(memory.spec)(action="accept", reviewer=reviewer)
    except (OSError, MemAlignError) as exc:
        fail(exc)
    except ValidationError as exc:
        fail(ValueError(f"--reviewer: {exc.errors()[0]['msg']}"))
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
        fail(exc)
    graph = build_review_graph().compile(checkpointer=saver)
    counts = {"reviewed": 0, "done before": 0, "not selected": 0, "failed": 0}

    def saved(out: dict[str, Any]) -> None:
        counts["reviewed"] += 1
        if out.get("report"):
            rep = out["report"]
            info(
                Text.assemble(
                    f"memory version {rep['version']}: {len(rep['new_principles'])} new principle(s), "
                    f"{len(rep.get('proposed_principles') or {})} proposed, episode ",
                    plain(", ".join(rep["added"] + rep["replaced"]) or "unchanged"),
                )
            )

    def failed(case_id: str, exc: BaseException) -> None:
        counts["failed"] += 1
        err.print(
            Text.assemble(("case ", "red"), plain(case_id), ": not saved (", plain(str(exc)), "); run again to retry")
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
                    err.print(Text.assemble("earlier answer not usable (", plain(str(exc)), "); asked again"))
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
                        err.print(Text.assemble(("answer not usable: ", "red"), plain(str(exc)), "; try again"))
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
        fail(exc)
    finally:
        stack.close()
    console.print(", ".join(f"{n} {k}" for k, n in counts.items() if n or k != "failed"))
    if counts["failed"]:
        raise typer.Exit(1)
