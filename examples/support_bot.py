"""A customer-support bot whose replies are scored 1-5 on tone by a MemAlign judge.

House rule: open with reassurance, close with an offer of further support; a reply
missing both scores 1 however correct, one with both scores 5. The expert corrects
the judge once through the review interrupt; five similar replies are judged before
and after, and the example prints how far they moved toward the expert's rule.

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
            "value": 1,
            "feedback": "Score 1: a bare instruction is cold even when correct. Our rule: open with reassurance "
            "(we are on it) and close by offering further support; a reply with both scores 5, with neither 1.",
            "reviewer": "support-lead",
        },
        similar=[
            ({"inputs": "Where is my refund?", "outputs": "Check the refunds page."}, 1),
            ({"inputs": "My order arrived damaged", "outputs": "Fill in the returns form."}, 1),
            ({"inputs": "I was charged twice", "outputs": "See the billing FAQ."}, 1),
            (
                {
                    "inputs": "My parcel is late",
                    "outputs": "Don't worry, we are on it: your parcel left our depot today and arrives tomorrow. "
                    "If there is anything else, just reply here and we will help.",
                },
                5,
            ),
            (
                {
                    "inputs": "I cannot log in",
                    "outputs": "Sorry for the trouble, we will sort this out together: use 'Forgot password' to "
                    "reset it. If that does not work, reply and we will help right away.",
                },
                5,
            ),
        ],
        summarize=lambda out: f"tone {out['tone']['value']}; escalated: {out.get('escalated', False)}",
    )


if __name__ == "__main__":
    main()
