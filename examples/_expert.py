"""Shared by the examples: their common flow, the expert at the judge's interrupt, and what memory changed."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from typing import Any

from langgraph.types import Command

from memalign_graph import Context, Memory, build_judge_graph

Rule = Callable[[str], Any]
"""The expert's house rule: the value a case's output deserves."""


def expert_answer(
    judgment: dict[str, Any], outputs: str, rule: Rule, feedback: Callable[[Any], str], reviewer: str
) -> dict[str, Any]:
    """The expert's answer at a review: accept when the judge applied the rule, else correct it, in words."""
    value = rule(outputs)
    if _agrees(judgment["value"], value):
        return {"action": "accept", "reviewer": reviewer}
    return {"action": "correct", "value": value, "feedback": feedback(value), "reviewer": reviewer}


def run_with_expert(
    app: Any,
    state: dict[str, Any],
    config: dict[str, Any],
    context: Any,
    answer: Callable[[dict[str, Any]], dict[str, Any]],
) -> tuple[dict, list[str]]:
    """Run the agent; at each review the expert sees the judgment and answers. The final state and the answers."""
    out = app.invoke(state, config, context=context)
    actions = []
    while "__interrupt__" in out:
        payload = out["__interrupt__"][0].value
        if payload.get("kind") == "principles":  # distilled principles the governance gate held for approval
            held = [p for p in payload["proposed"] if p.get("held")]
            decision = {
                "approve": [p["id"] for p in payload["proposed"] if not p.get("held")],
                "reject": [p["id"] for p in held],  # the expert rejects what the gate held (e.g. verdict directives)
            }
            for p in payload["proposed"]:
                print(f"  [principles] {'rejected' if p.get('held') else 'approved'}: {p['text']!r}")
            out = app.invoke(Command(resume=decision), config, context=context)
            continue
        judgment = payload["judgment"]
        reply = answer(payload)
        print(f"  [review] judge said {judgment['value']!r}: {judgment['rationale']}")
        print(f"  [review] expert answers: {reply}")
        actions.append(reply["action"])
        out = app.invoke(Command(resume=reply), config, context=context)
    return out, actions


def _agrees(value: Any, expected: Any) -> bool:
    try:
        return float(value) == float(expected)
    except (TypeError, ValueError):
        return str(value) == str(expected)


def _shown(judgment: dict[str, Any]) -> str:
    """A judgment's final value, with the model's own when the calibration head overrode it."""
    own = judgment.get("model_value")
    if own is not None and not _agrees(own, judgment["value"]):
        return f"{judgment['value']!r} (model {own!r})"
    return repr(judgment["value"])


def report_change(
    cases: list[dict[str, Any]],
    expected: list[Any],
    stages: list[tuple[str, list[dict[str, Any]]]],
    memory: Any,
) -> None:
    """Print how the judgments of similar new cases moved at each stage of the expert's reviews, with numbers.

    ``expected`` holds the value the expert's rule implies for each case; ``stages`` are
    ``(name, judgments)``, the first one before any review.
    """
    memory.refresh()
    n = len(cases)
    print(
        "\nsimilar new cases, judged before and after the expert's reviews (expected = what the expert's rule "
        "implies; the final value, and the model's own where the calibration head overrode it):"
    )
    for i, (case, want) in enumerate(zip(cases, expected)):
        values = [judgments[i] for _, judgments in stages]
        moved = "" if all(_agrees(v["value"], values[0]["value"]) for v in values) else "  <- moved"
        path = "; ".join(f"{name} {_shown(judgments[i])}" for name, judgments in stages)
        print(f"  {str(case['outputs'])[:70]!r}: expected {want!r}; {path}{moved}")
    parts = []
    for name, judgments in stages:
        final = sum(_agrees(j["value"], e) for j, e in zip(judgments, expected))
        own = sum(_agrees(j.get("model_value", j["value"]), e) for j, e in zip(judgments, expected))
        parts.append(f"{name} {final}/{n}" + (f" (model alone {own}/{n})" if own != final else ""))
    print(f"agreement with the expert's rule on {n} similar cases: {'; '.join(parts)}")
    if all(isinstance(e, int | float) and not isinstance(e, bool) for e in expected):
        errors = [sum(abs(float(j["value"]) - e) for j, e in zip(js, expected)) / n for _, js in stages]
        print("mean absolute error against the rule: " + "; ".join(f"{s[0]} {e:.2f}" for s, e in zip(stages, errors)))
    last = stages[-1][1]
    principles = {p["id"]: p for p in memory.principles}
    shown_ids = last[0]["principle_ids"] if last else []
    for pid in shown_ids:
        print(f"  principle in working memory: {principles[pid]['text']}  (from {principles[pid]['sources']})")
    if not shown_ids:  # the small embedded models often distil nothing the vetting keeps (printed above)
        print("  principle in working memory: none stored (distillation gave nothing that passed vetting)")
    for eid in last[0]["episode_ids"][:1] if last else []:
        episode = memory.episodes.get([eid])[0]
        print(f"  most similar episode: {eid}, expert value {episode.get('value')!r}: {episode.get('feedback')}")
    calibration = memory.calibration_report()
    head = calibration["head"]
    if head:
        print(
            f"  calibration head: {head['episodes']} episodes ({head['label_counts']}), features "
            f"{', '.join(head['fields'])}; {head['reason']}"
        )
    else:
        print(
            f"  calibration head: none fitted ({calibration['episodes_with_values']} episodes with an expert value, "
            f"{len(calibration['held_records'])} held by governance; a head needs two labels)"
        )
    wrong = [i + 1 for i, (j, e) in enumerate(zip(last, expected)) if not _agrees(j["value"], e)]
    if wrong:
        print(
            f"  the judge still disagrees with the rule on case(s) {wrong} ({len(wrong)}/{n}); a stronger model "
            "(--model embedded:qwen2.5-coder-1.5b, or a hosted one) reads the same memory."
        )
    else:
        print(f"  the judge now agrees with the expert's rule on all {n} similar cases.")


def run_example(
    doc: str,
    spec: Any,
    agent: Any,
    inputs: list[dict[str, Any]],
    rule: Rule,
    feedback: Callable[[Any], str],
    reviewer: str,
    similar: list[dict[str, Any]],
    summarize: Callable[[dict[str, Any]], str],
) -> None:
    """The examples' common flow: similar cases judged, the expert reviews the agent's runs, similar cases again.

    After the first reviewed run (its correction reaches the judge's prompt as a principle and an
    episode) and after the last, the similar cases are judged again. Once the expert's episodes hold
    three of each value, the calibration head fitted on them may decide (its gate: see
    :mod:`memalign_graph.calibration`).

    Args:
        doc: the example's docstring (its first line describes the command).
        spec: the judge definition.
        agent: the compiled agent graph (with a checkpointer; its evaluator node reviews).
        inputs: the agent's inputs, one reviewed run each.
        rule: the expert's house rule (the value an output deserves); the expert corrects a judgment
            that breaks it and accepts one that follows it.
        feedback: the expert's words for a correction to a value.
        reviewer: the expert's name.
        similar: similar new cases (``inputs``, ``outputs``), judged before and after.
        summarize: one line about the agent's final state.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default=None, help="judge model (default: embedded)")
    parser.add_argument("--memory-dir", default=None, help="memory directory (default: a temporary one)")
    args = parser.parse_args()
    memory_dir = args.memory_dir or tempfile.mkdtemp(prefix=f"memalign-{spec.name}-")
    memory = Memory.create(memory_dir, spec)
    judge = build_judge_graph().compile()
    # Precedent off: the similar cases are new, and their judgments should come from the judge's memory.
    plain = Context(store=memory_dir, model=args.model, precedent="off")
    expected = [rule(case["outputs"]) for case in similar]

    def judged() -> list[dict[str, Any]]:
        return [judge.invoke(case, context=plain)["judgment"] for case in similar]

    def answer(payload: dict[str, Any]) -> dict[str, Any]:
        return expert_answer(payload["judgment"], str(payload["case"]["outputs"]), rule, feedback, reviewer)

    stages = [("before", judged())]
    context = Context(store=memory_dir, model=args.model, review="all", store_accepted=True)
    counts = {"correct": 0, "accept": 0}
    for number, state in enumerate(inputs, 1):
        print(f"run {number}, input: {state}")
        out, actions = run_with_expert(agent, state, {"configurable": {"thread_id": f"run-{number}"}}, context, answer)
        for action in actions:
            counts[action] = counts.get(action, 0) + 1
        print(f"  {summarize(out)}")
        if number in (1, len(inputs)):
            stages.append(
                (f"after run {number} ({counts['correct']} corrected, {counts['accept']} accepted)", judged())
            )
    report_change(similar, expected, stages, memory)
    print(f"\nmemory: {memory_dir} (version {memory.version})")
