"""A customer-support bot whose replies are scored 1-5 on tone by a MemAlign judge.

House rule: open with reassurance, close with an offer of further support; a reply
missing both scores 1 however correct, one with both scores 5. The bot's first reply
is terse; when the judge scores it 2 or less the bot rewrites it warmly, and the new
reply is judged again. The expert reviews three conversations through the review
interrupt (correcting a score that breaks the rule, accepting one that follows it);
five similar replies are judged before any review, after the first conversation and
after the third, and the example prints how far they moved toward the expert's rule.

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
    rewritten: bool
    escalated: bool


def reply(state: BotState) -> dict:
    """A terse, correct but cold reply (what the experts dislike)."""
    return {"reply": f"Check the tracking page for '{state['message']}'."}


def rewrite(state: BotState) -> dict:
    """The same answer, opened with reassurance and closed with an offer of more help."""
    return {
        "reply": f"Sorry about this, we are on it. {state['reply']} If anything else comes up, just reply here "
        "and we will help right away.",
        "rewritten": True,
    }


def route(state: BotState) -> str:
    if int(state["tone"]["value"]) > 2:
        return END
    return "escalate" if state.get("rewritten") else "rewrite"


def build_bot() -> Any:
    builder = StateGraph(BotState, context_schema=Context)
    builder.add_node("reply", reply)
    builder.add_node(
        "judge_tone",
        evaluator_node(lambda s: {"inputs": s["message"], "outputs": s["reply"]}, output_key="tone", review=True),
    )
    builder.add_node("rewrite", rewrite)
    builder.add_node("escalate", lambda s: {"escalated": True})
    builder.add_edge(START, "reply")
    builder.add_edge("reply", "judge_tone")
    builder.add_conditional_edges("judge_tone", route, ["rewrite", "escalate", END])
    builder.add_edge("rewrite", "judge_tone")
    builder.add_edge("escalate", END)
    return builder.compile(checkpointer=InMemorySaver())


REASSURANCE = ("sorry", "don't worry", "we are on it", "we will sort")
OFFER = ("just reply", "reply and we", "reply here", "anything else")


def house_rule(text: str) -> int:
    """The support lead's rule: 1, plus 2 for opening with reassurance, plus 2 for offering more help."""
    lowered = text.lower()
    return 1 + 2 * any(p in lowered for p in REASSURANCE) + 2 * any(p in lowered for p in OFFER)


def main() -> None:
    run_example(
        __doc__,
        SPEC,
        build_bot(),
        inputs=[
            {"message": "My parcel has not arrived"},
            {"message": "The invoice shows the wrong address"},
            {"message": "My discount code does not work"},
        ],
        rule=house_rule,
        feedback=lambda value: (
            "Score 1: a bare instruction is cold even when correct. Our rule: open with reassurance (we are on "
            "it) and close by offering further support; a reply with both scores 5, with neither 1."
            if value == 1
            else f"Score {value}: it reassures the customer and offers further support, as our rule asks."
        ),
        reviewer="support-lead",
        similar=[
            {"inputs": "Where is my refund?", "outputs": "Check the refunds page."},
            {"inputs": "My order arrived damaged", "outputs": "Fill in the returns form."},
            {"inputs": "I was charged twice", "outputs": "See the billing FAQ."},
            {
                "inputs": "My parcel is late",
                "outputs": "Don't worry, we are on it: your parcel left our depot today and arrives tomorrow. "
                "If there is anything else, just reply here and we will help.",
            },
            {
                "inputs": "I cannot log in",
                "outputs": "Sorry for the trouble, we will sort this out together: use 'Forgot password' to "
                "reset it. If that does not work, reply and we will help right away.",
            },
        ],
        summarize=lambda out: (
            f"tone {out['tone']['value']}; rewritten: {out.get('rewritten', False)}; "
            f"escalated: {out.get('escalated', False)}"
        ),
    )


if __name__ == "__main__":
    main()
