"""Can this judge model apply a house rule at all? Probe it before aligning it.

Memory can only teach a judge a rule the model is able to follow. This probe judges held-out
cases of the demo's citation task (:func:`memalign_graph.datasets.load_citation_policy`: an
answer's ``Source:`` line must quote the knowledge it was given; naming Wikipedia, "general
knowledge" or "a Google search" fails) under four working memories, with the same model:

- ``criterion only``: nothing learned, the judge's plain criterion;
- ``rule as a principle``: the rule written by hand, as the best distillation could state it;
- ``principle + 5 episodes``: that principle and five past cases (three ``fail``, two ``pass``)
  with the expert's verdict and words;
- ``rule as the criterion``: the rule *is* the task, in the simplest words; the ceiling of any memory.

It prints agreement with the expert's labels (exact match), the share judged ``pass``, and the
median seconds per judgment. A model near the share of ``pass`` labels on the last row cannot be
taught this rule by memory; use a more capable one (``--model``/``--base-url``).

Run: ``.venv/bin/python examples/rule_probe.py [--cases 12] [--model embedded:qwen2.5-coder-1.5b]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from memalign_graph.datasets import CITATION_SPEC, load_citation_policy
from memalign_graph.judge import run_judge
from memalign_graph.models import resolve_chat_model
from memalign_graph.spec import JudgeSpec

RULE = (
    "The Source line must quote, word for word, a sentence of the knowledge given; an answer whose Source "
    "line names Wikipedia, general knowledge, a Google search or any other outside source fails, however correct."
)
RULE_AS_CRITERION = JudgeSpec.categorical(
    name="citation-policy",
    criterion=(
        "Look only at the Source line of the answer. pass = the Source line quotes a sentence in double quotes. "
        "fail = the Source line names Wikipedia, general knowledge or a Google search."
    ),
    labels=["pass", "fail"],
)


def probe(model: Any, cases: int = 12, seed: int = 0) -> list[dict[str, Any]]:
    """Judge ``cases`` held-out citation cases under each working memory of the module docstring.

    Args:
        model: a LangChain chat model.
        cases: held-out cases to judge per condition (after 20 training records).
        seed: seed of the task's shuffle.

    Returns:
        One row per condition: ``{"condition", "agreement", "judged_pass", "labelled_pass", "s_p50"}``
        (agreement and shares in 0..1, seconds per judgment).
    """
    records = load_citation_policy(20 + cases, seed=seed)
    train, test = records[:20], records[20:]
    fails = [r for r in train if r["value"] == "fail"][:3]
    passes = [r for r in train if r["value"] == "pass"][:2]
    episodes = [{**r, "judge_value": "pass"} for r in fails + passes]
    principle = [{"id": "rule", "text": RULE, "sources": []}]
    conditions = [
        ("criterion only", CITATION_SPEC, [], []),
        ("rule as a principle", CITATION_SPEC, principle, []),
        ("principle + 5 episodes", CITATION_SPEC, principle, episodes),
        ("rule as the criterion", RULE_AS_CRITERION, [], []),
    ]
    rows = []
    for name, spec, principles, shown in conditions:
        values, seconds = [], []
        for case in test:
            started = time.perf_counter()
            judgment = run_judge(model, spec, {"inputs": case["inputs"], "outputs": case["outputs"]}, principles, shown)
            seconds.append(time.perf_counter() - started)
            values.append(judgment["value"])
        rows.append(
            {
                "condition": name,
                "agreement": sum(v == c["value"] for v, c in zip(values, test)) / len(test),
                "judged_pass": values.count("pass") / len(test),
                "labelled_pass": sum(c["value"] == "pass" for c in test) / len(test),
                "s_p50": statistics.median(seconds),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12, help="held-out cases per condition (default 12)")
    parser.add_argument("--model", default=None, help="chat model (default: the embedded one)")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible server URL")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    model = resolve_chat_model(args.model, base_url=args.base_url)
    rows = probe(model, args.cases, args.seed)
    table = Table(title=f"Can {getattr(model, 'model_name', None) or args.model} apply the citation rule?")
    for column in ("working memory", "agreement", "judged pass", "labelled pass", "s/judgment"):
        table.add_column(column, justify="left" if column == "working memory" else "right")
    for row in rows:
        table.add_row(
            row["condition"],
            f"{row['agreement']:.2f}",
            f"{row['judged_pass']:.2f}",
            f"{row['labelled_pass']:.2f}",
            f"{row['s_p50']:.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
