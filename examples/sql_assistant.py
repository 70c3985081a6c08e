"""A text-to-SQL assistant whose answers are judged by a MemAlign judge on house rules.

The assistant drafts SQL, an evaluator node judges it (with expert review through
an interrupt), and the graph routes on the judgment: finish on pass, revise on
fail. The expert reviews three runs: a draft that reads raw tables is corrected
to ``fail`` with the rule in words, a judgment that follows the rule is accepted.
Five similar requests are judged before any review, after the first run (one
correction: a principle and an episode in working memory) and after the third
(three episodes of each value: enough for the calibration head), and the
example prints how many agree with the expert's rule at each stage.

Run offline on the embedded defaults: ``.venv/bin/python examples/sql_assistant.py``
(``--model openai:gpt-4.1-mini`` for a hosted judge).
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from _expert import run_example
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from memalign_graph import Context, JudgeSpec, evaluator_node

SPEC = JudgeSpec.categorical(
    "sql-house-rules",
    "Judge whether the SQL correctly answers the analytics request.",
    ["pass", "fail"],
)


class AgentState(TypedDict, total=False):
    request: str
    sql: str
    attempts: Annotated[list[str], operator.add]
    verdict: dict[str, Any]


def write_sql(state: AgentState) -> dict:
    """A deliberately naive drafter: reads raw tables (what the house rules forbid)."""
    table = "orders" if "order" in state["request"].lower() else "payments"
    return {"sql": f"SELECT * FROM raw.{table}", "attempts": ["draft"]}


def revise(state: AgentState) -> dict:
    """Follow the house rules on the second try: certified view, no cancelled orders, EUR."""
    sql = (
        state["sql"]
        .replace("raw.orders", "analytics.orders_certified")
        .replace("raw.payments", "analytics.payments_certified")
    )
    return {
        "sql": sql.replace("SELECT *", "SELECT *, amount * fx_eur AS amount_eur") + " WHERE status <> 'cancelled'",
        "attempts": ["revision"],
    }


def route(state: AgentState) -> str:
    return "finish" if state["verdict"]["value"] == "pass" or len(state["attempts"]) >= 2 else "revise"


def build_agent() -> Any:
    builder = StateGraph(AgentState, context_schema=Context)
    builder.add_node("write_sql", write_sql)
    builder.add_node(
        "evaluate",
        evaluator_node(lambda s: {"inputs": s["request"], "outputs": s["sql"]}, output_key="verdict", review=True),
    )
    builder.add_node("revise", revise)
    builder.add_node("finish", lambda s: {})
    builder.add_edge(START, "write_sql")
    builder.add_edge("write_sql", "evaluate")
    builder.add_conditional_edges("evaluate", route, ["finish", "revise"])
    builder.add_edge("revise", "evaluate")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=InMemorySaver())


def house_rule(sql: str) -> str:
    """The data team's rule: never read raw tables."""
    return "fail" if "raw." in sql else "pass"


def main() -> None:
    run_example(
        __doc__,
        SPEC,
        build_agent(),
        inputs=[
            {"request": "Monthly revenue by order"},
            {"request": "Payments by country"},
            {"request": "Order count"},
        ],
        rule=house_rule,
        feedback=lambda value: (
            "Never query raw tables: use the certified view analytics.orders_certified, "
            "filter out cancelled orders and convert amounts to EUR."
            if value == "fail"
            else "Good: it reads the certified view, drops cancelled orders and converts to EUR."
        ),
        reviewer="data-team",
        similar=[
            {"inputs": "Weekly order count", "outputs": "SELECT week, count(*) FROM raw.orders GROUP BY 1"},
            {"inputs": "Revenue by country", "outputs": "SELECT country, sum(amount) FROM raw.payments GROUP BY 1"},
            {"inputs": "Average order value", "outputs": "SELECT avg(amount) FROM raw.orders"},
            {
                "inputs": "Orders per customer",
                "outputs": "SELECT customer_id, count(*) FROM analytics.orders_certified "
                "WHERE status <> 'cancelled' GROUP BY customer_id",
            },
            {
                "inputs": "Monthly revenue in EUR",
                "outputs": "SELECT month, sum(amount * fx_eur) FROM analytics.orders_certified "
                "WHERE status <> 'cancelled' GROUP BY month",
            },
        ],
        summarize=lambda out: f"final SQL after {len(out['attempts'])} attempt(s): {out['sql']}",
    )


if __name__ == "__main__":
    main()
