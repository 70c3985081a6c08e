"""Pairwise judges in both orders: the outputs judged as given and swapped, one judgment from the two answers.

A judge comparing two outputs may prefer whichever it is shown first (position bias). By
default (``pairwise_orders="both"``) a pairwise case is judged twice, outputs as given and
swapped; :func:`both_orders` combines the two answers, and an order-inconsistent pair is a ``tie``
with both answers kept in ``orders``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from typing_extensions import TypedDict

from memalign_graph.spec import JudgeSpec, Value
from memalign_graph.structured import empty_usage

if TYPE_CHECKING:
    from memalign_graph.judge import Judgment


class OrderJudgment(TypedDict):
    """A pairwise judge's answer with the outputs in one order.

    Attributes:
        shown: ``"AB"`` (output A shown first, as given) or ``"BA"`` (swapped).
        answer: the value as the model answered, in the labels of the order shown.
        value: that answer in the case's own labels (``A`` is the first output given).
        rationale: the model's rationale for this order.
        scores: probabilities in the case's own labels, or ``None``.
    """

    shown: str
    answer: Value
    value: Value
    rationale: str
    scores: dict[str, float] | None


_SWAP = {"A": "B", "B": "A", "tie": "tie"}


def swap_outputs(case: dict[str, Any]) -> dict[str, Any]:
    """``case`` with its two outputs in the other order."""
    first, second = case["outputs"]
    return {**case, "outputs": [second, first]}


def both_orders(spec: JudgeSpec, as_given: Judgment, swapped: Judgment) -> Judgment:
    """One pairwise judgment from the answers with the outputs as given and swapped.

    Agreeing answers (after mapping the swapped labels back) give that value; disagreeing answers
    give ``tie`` (the preference followed the position, not the outputs). Scores are the mean of
    both orders' scores in the case's own labels; usage and attempts are summed.
    """
    back = {str(k): v for k, v in _SWAP.items()}
    swapped_scores = None
    if swapped["scores"] is not None:
        swapped_scores = {back[k]: p for k, p in swapped["scores"].items()}
    orders = [
        OrderJudgment(
            shown="AB",
            answer=as_given["value"],
            value=as_given["value"],
            rationale=as_given["rationale"],
            scores=as_given["scores"],
        ),
        OrderJudgment(
            shown="BA",
            answer=swapped["value"],
            value=_SWAP[str(swapped["value"])],
            rationale=swapped["rationale"],
            scores=swapped_scores,
        ),
    ]
    consistent = orders[0]["value"] == orders[1]["value"]
    value = orders[0]["value"] if consistent else "tie"
    if consistent:
        rationale = as_given["rationale"]
    else:
        rationale = (
            f"Order-inconsistent, so tie: with A shown first the judge said {orders[0]['value']} "
            f"({as_given['rationale']}); with B shown first it said {orders[1]['value']} ({swapped['rationale']})."
        )
    scores = None
    if as_given["scores"] is not None and swapped_scores is not None:
        scores = {str(v): round((as_given["scores"][str(v)] + swapped_scores[str(v)]) / 2, 4) for v in spec.values}
    usage = empty_usage()
    for part in (as_given, swapped):
        for key in usage:
            usage[key] += part["usage"][key]  # type: ignore[literal-required]
    return {  # type: ignore[return-value]
        **as_given,
        "value": value,
        "model_value": value,
        "rationale": rationale,
        "scores": scores,
        "usage": usage,
        "attempts": as_given["attempts"] + swapped["attempts"],
        "clipped": bool(as_given.get("clipped") or swapped.get("clipped")),
        "orders": orders,
    }


__all__ = ["OrderJudgment", "both_orders", "swap_outputs"]
