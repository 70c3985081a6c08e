"""A customer-support bot whose replies are scored 1-5 on tone by a MemAlign judge.

House rule: open with reassurance, close with an offer of further support. The
expert corrects the judge once through the review interrupt; the next similar
reply is judged with the new principle and episode in working memory.

Run offline on the embedded defaults: ``.venv/bin/python examples/support_bot.py``.
"""

from __future__ import annotations

from typing import Any, TypedDict

from _expert import run_example
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from memalign_graph import Context, JudgeSpec, evaluator_node

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
    run_example(
        __doc__,
        SPEC,
        build_bot(),
        first_input={"message": "My parcel has not arrived"},
        correction={
            "action": "correct",
            "value": 2,
            "feedback": "Open with reassurance (we are on it) and close by offering further support; "
            "a bare instruction is cold even when correct.",
            "reviewer": "support-lead",
        },
        next_case={"inputs": "Where is my refund?", "outputs": "Check the refunds page for 'Where is my refund?'."},
        expected=2,
        summarize=lambda out: f"tone {out['tone']['value']}; escalated: {out.get('escalated', False)}",
    )


if __name__ == "__main__":
    main()
