"""A customer-support bot whose replies are scored 1-5 on tone by a MemAlign judge.

House rule: open with reassurance, close with an offer of further support. The
expert corrects the judge once through the review interrupt; the next similar
reply is judged with the new principle and episode in working memory.

Run offline on the embedded defaults: ``.venv/bin/python examples/support_bot.py``.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any, TypedDict

from _expert import report_change, run_with_expert
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from memalign_graph import Context, JudgeSpec, Memory, build_judge_graph, evaluator_node

SPEC = JudgeSpec.numeric("support-tone", "Score the support reply's tone (1 = poor, 5 = excellent).", 1, 5)


class BotState(TypedDict, total=False):
    message: str
    reply: str
    tone: dict[str, Any]
    escalated: bool


def reply(state: BotState) -> dict:
    """A terse, correct but cold reply (what the experts dislike)."""
    return {"reply": f"Check the tracking page for '{state['message']}'."}


def route(state: BotState) -> str:
    return "escalate" if int(state["tone"]["value"]) <= 2 else END


def build_bot() -> Any:
    builder = StateGraph(BotState, context_schema=Context)
    builder.add_node("reply", reply)
    builder.add_node(
        "judge_tone",
        evaluator_node(lambda s: {"inputs": s["message"], "outputs": s["reply"]}, output_key="tone", review=True),
    )
    builder.add_node("escalate", lambda s: {"escalated": True})
    builder.add_edge(START, "reply")
    builder.add_edge("reply", "judge_tone")
    builder.add_conditional_edges("judge_tone", route, ["escalate", END])
    builder.add_edge("escalate", END)
    return builder.compile(checkpointer=InMemorySaver())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="judge model (default: embedded)")
    parser.add_argument("--memory-dir", default=None, help="memory directory (default: a temporary one)")
    args = parser.parse_args()
    memory_dir = args.memory_dir or tempfile.mkdtemp(prefix="memalign-support-")
    memory = Memory.create(memory_dir, SPEC)
    context = Context(memory_dir=memory_dir, model=args.model, review="all")
    judge = build_judge_graph().compile()
    next_case = {"inputs": "Where is my refund?", "outputs": "Check the refunds page for 'Where is my refund?'."}
    before = judge.invoke(next_case, context=Context(memory_dir=memory_dir, model=args.model))["judgment"]

    bot = build_bot()
    print("message 1: My parcel has not arrived")
    correction = {
        "action": "correct",
        "value": 2,
        "feedback": "Open with reassurance (we are on it) and close by offering further support; "
        "a bare instruction is cold even when correct.",
        "reviewer": "support-lead",
    }
    out = run_with_expert(
        bot, {"message": "My parcel has not arrived"}, {"configurable": {"thread_id": "msg-1"}}, context, correction
    )
    print(f"  tone {out['tone']['value']}; escalated: {out.get('escalated', False)}")

    after = judge.invoke(next_case, context=Context(memory_dir=memory_dir, model=args.model))["judgment"]
    report_change(before, after, memory, expected=2)
    print(f"\nmemory: {memory_dir} (version {memory.version})")


if __name__ == "__main__":
    main()
