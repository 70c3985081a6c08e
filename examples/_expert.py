"""Shared by the examples: play the expert at the judge's interrupt and report what memory changed."""

from __future__ import annotations

from typing import Any

from langgraph.types import Command


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
