"""Shared by the examples: their common flow, the expert at the judge's interrupt, and what memory changed."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from typing import Any

from langgraph.types import Command

from memalign_graph import Context, Memory, build_judge_graph


def run_with_expert(
    app: Any, state: dict[str, Any], config: dict[str, Any], context: Any, answer: dict[str, Any]
) -> dict:
    """Run the agent; when the judge pauses for review, show it and answer as the expert."""
    out = app.invoke(state, config, context=context)
    while "__interrupt__" in out:
        payload = out["__interrupt__"][0].value
        judgment = payload["judgment"]
        print(f"  [review] judge said {judgment['value']!r}: {judgment['rationale']}")
        print(f"  [review] expert answers: {answer}")
        out = app.invoke(Command(resume=answer), config, context=context)
        answer = {"action": "accept"}  # later reviews in the same run: accept
    return out


def report_change(before: dict[str, Any], after: dict[str, Any], memory: Any, expected: Any) -> None:
    """Print how the judgment of the same new case changed, and the memory behind it.

    ``expected`` is the value the expert's rule implies for that case.
    """
    memory.refresh()
    print(f"\nnext similar case, judged before the correction: {before['value']!r} ({before['rationale']})")
    print(f"next similar case, judged after the correction:  {after['value']!r} ({after['rationale']})")
    principles = {p["id"]: p for p in memory.principles}
    for pid in after["principle_ids"]:
        print(f"  principle in working memory: {principles[pid]['text']}  (from {principles[pid]['sources']})")
    for eid in after["episode_ids"][:1]:
        episode = memory.episodes.get([eid])[0]
        print(f"  most similar episode: {eid}, expert value {episode.get('value')!r}: {episode.get('feedback')}")
    caveat = (
        "the embedded 135M model does not reliably follow retrieved memory; with a capable model "
        "(--model openai:gpt-4.1-mini) the principle and episode above are what it reads."
    )
    if after["value"] == expected and before["value"] != expected:
        print(f"  After one correction the judge agrees with the expert's rule ({expected!r}).")
    elif after["value"] == expected:
        print(f"  The judge said {expected!r} before and after; this case does not show the correction's effect.")
    elif after["value"] == before["value"]:
        print(f"  The judgment did not change (the rule implies {expected!r}): {caveat}")
    else:
        print(f"  The judgment changed, but not to {expected!r}, what the rule implies: {caveat}")


def run_example(
    doc: str,
    spec: Any,
    agent: Any,
    first_input: dict[str, Any],
    correction: dict[str, Any],
    next_case: dict[str, Any],
    expected: Any,
    summarize: Callable[[dict[str, Any]], str],
) -> None:
    """The examples' common flow: the judge sees the next case, the expert corrects it once, it sees it again.

    Args:
        doc: the example's docstring (its first line describes the command).
        spec: the judge definition.
        agent: the compiled agent graph (with a checkpointer; its evaluator node reviews).
        first_input: the agent's input for the run the expert reviews.
        correction: the expert's answer at the review interrupt.
        next_case: a similar case, judged before and after the correction.
        expected: the value the expert's rule implies for ``next_case``.
        summarize: one line about the agent's final state.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default=None, help="judge model (default: embedded)")
    parser.add_argument("--memory-dir", default=None, help="memory directory (default: a temporary one)")
    args = parser.parse_args()
    memory_dir = args.memory_dir or tempfile.mkdtemp(prefix=f"memalign-{spec.name}-")
    memory = Memory.create(memory_dir, spec)
    judge = build_judge_graph().compile()
    plain = Context(memory_dir=memory_dir, model=args.model)
    before = judge.invoke(next_case, context=plain)["judgment"]

    print(f"input: {first_input}")
    context = Context(memory_dir=memory_dir, model=args.model, review="all")
    out = run_with_expert(agent, first_input, {"configurable": {"thread_id": "example-1"}}, context, correction)
    print(f"  {summarize(out)}")

    after = judge.invoke(next_case, context=plain)["judgment"]
    report_change(before, after, memory, expected)
    print(f"\nmemory: {memory_dir} (version {memory.version})")
