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


def _agrees(value: Any, expected: Any) -> bool:
    try:
        return float(value) == float(expected)
    except (TypeError, ValueError):
        return str(value) == str(expected)


def report_change(
    cases: list[dict[str, Any]],
    expected: list[Any],
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    memory: Any,
) -> None:
    """Print how the judgments of similar new cases moved after the correction, with numbers.

    ``expected`` holds the value the expert's rule implies for each case.
    """
    memory.refresh()
    print("\nsimilar new cases, judged before and after the correction (expected = what the expert's rule implies):")
    for case, want, old, new in zip(cases, expected, before, after):
        moved = "" if old["value"] == new["value"] else "  <- moved"
        shown = str(case["outputs"])[:70]
        print(f"  {shown!r}: before {old['value']!r}, after {new['value']!r}, expected {want!r}{moved}")
    agree_before = sum(_agrees(j["value"], e) for j, e in zip(before, expected))
    agree_after = sum(_agrees(j["value"], e) for j, e in zip(after, expected))
    n = len(cases)
    print(f"agreement with the expert's rule: before the correction {agree_before}/{n}, after {agree_after}/{n}")
    numeric = all(isinstance(e, int | float) and not isinstance(e, bool) for e in expected)
    if numeric:
        mae = [sum(abs(float(j["value"]) - e) for j, e in zip(js, expected)) / n for js in (before, after)]
        print(f"mean absolute error against the rule: before {mae[0]:.2f}, after {mae[1]:.2f}")
    principles = {p["id"]: p for p in memory.principles}
    for pid in after[0]["principle_ids"] if after else []:
        print(f"  principle in working memory: {principles[pid]['text']}  (from {principles[pid]['sources']})")
    for eid in after[0]["episode_ids"][:1] if after else []:
        episode = memory.episodes.get([eid])[0]
        print(f"  most similar episode: {eid}, expert value {episode.get('value')!r}: {episode.get('feedback')}")
    wrong = [i + 1 for i, (j, e) in enumerate(zip(after, expected)) if not _agrees(j["value"], e)]
    if wrong:
        print(
            f"  the judge still disagrees with the rule on case(s) {wrong} ({len(wrong)}/{n}); a stronger model "
            "(--model embedded:qwen2.5-coder-1.5b, or a hosted one) reads the same memory."
        )
    else:
        print(f"  after one correction the judge agrees with the expert's rule on all {n} similar cases.")


def run_example(
    doc: str,
    spec: Any,
    agent: Any,
    first_input: dict[str, Any],
    correction: dict[str, Any],
    similar: list[tuple[dict[str, Any], Any]],
    summarize: Callable[[dict[str, Any]], str],
) -> None:
    """The examples' common flow: similar cases judged, the expert corrects the judge once, judged again.

    Args:
        doc: the example's docstring (its first line describes the command).
        spec: the judge definition.
        agent: the compiled agent graph (with a checkpointer; its evaluator node reviews).
        first_input: the agent's input for the run the expert reviews.
        correction: the expert's answer at the review interrupt.
        similar: similar new cases, each with the value the expert's rule implies; judged before and after.
        summarize: one line about the agent's final state.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default=None, help="judge model (default: embedded)")
    parser.add_argument("--memory-dir", default=None, help="memory directory (default: a temporary one)")
    args = parser.parse_args()
    memory_dir = args.memory_dir or tempfile.mkdtemp(prefix=f"memalign-{spec.name}-")
    memory = Memory.create(memory_dir, spec)
    judge = build_judge_graph().compile()
    # Precedent off: the similar cases are new, and their judgments should come from the model's memory.
    plain = Context(store=memory_dir, model=args.model, precedent="off")
    cases = [case for case, _ in similar]
    expected = [value for _, value in similar]
    before = [judge.invoke(case, context=plain)["judgment"] for case in cases]

    print(f"input: {first_input}")
    context = Context(store=memory_dir, model=args.model, review="all")
    out = run_with_expert(agent, first_input, {"configurable": {"thread_id": "example-1"}}, context, correction)
    print(f"  {summarize(out)}")

    after = [judge.invoke(case, context=plain)["judgment"] for case in cases]
    report_change(cases, expected, before, after, memory)
    print(f"\nmemory: {memory_dir} (version {memory.version})")
