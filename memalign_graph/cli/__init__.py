"""The ``memalign`` command line: init, judge, align, principles, forget, review, queue, demo, eval, bench, models.

One module per command group (:mod:`~memalign_graph.cli.judge`, :mod:`~memalign_graph.cli.align`,
:mod:`~memalign_graph.cli.principles`, :mod:`~memalign_graph.cli.review`, :mod:`~memalign_graph.cli.queue`,
:mod:`~memalign_graph.cli.evaluate`, :mod:`~memalign_graph.cli.models`), all printing through
:mod:`~memalign_graph.cli.output`.
Commands import LangGraph, LangChain and the models only when they run, so ``--help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from memalign_graph.cli import align, evaluate, judge, models, output, principles, queue, review

# Markdown: help paragraphs are rewrapped to the terminal's width, whatever the line breaks in the docstrings.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown")


@app.callback()
def memalign(
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress and no messages about what was done; results and errors still print."
        ),
    ] = False,
) -> None:
    """MemAlign: align an LLM judge to experts through memory."""
    output.set_quiet(quiet)


app.command()(judge.init)
app.command()(judge.judge)
app.command()(align.align)
app.command()(principles.principles)
app.command()(principles.forget)
app.command()(review.review)
app.command()(queue.queue)
app.command()(evaluate.demo)
app.command("eval")(evaluate.evaluate)
app.command()(evaluate.bench)
app.add_typer(models.app, name="models")


def main() -> None:
    """Console-script entry point."""
    app()
