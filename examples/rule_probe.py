"""Can this judge model apply a house rule at all? Probe it, and the calibration head, before aligning it.

Memory in the prompt can only teach a judge a rule the model is able to follow. This probe judges
held-out cases of a house-rule task (:mod:`memalign_graph.datasets`; default ``house-rule``: an
answer's ``Source:`` line must quote, word for word, a sentence of the knowledge it was given; a
quote from anywhere else fails, and pass and fail answers are as long) under four working
memories, with the same model:

- ``criterion only``: nothing learned, the judge's plain criterion;
- ``rule as a principle``: the rule written by hand, as the best distillation could state it;
- ``principle + 5 episodes``: that principle and five past cases (three ``fail``, two ``pass``)
  with the expert's verdict and words;
- ``rule as the criterion``: the rule *is* the task, in the simplest words; the ceiling of any memory.

and, on a fifth row, the calibration head (:mod:`memalign_graph.calibration`) fitted on the same 20
training records, as a judge's memory would fit it: no model call, its own value for each case, and
whether its gate would let it decide (the baseline here is the majority rate: no recorded model
judgments).

It prints agreement with the expert's labels (exact match), the share judged ``pass``, and the
median seconds per judgment. A model near the share of ``pass`` labels on the fourth row cannot be
taught this rule by memory; use a more capable one (``--model``/``--base-url``). What the head
learns is a regularity of its features (how much of the answer is found in the inputs, its length,
its embedding), not the rule's words: see the calibration page of the documentation.

Run: ``.venv/bin/python examples/rule_probe.py [--cases 12] [--task citation] [--model embedded:qwen2.5-coder-1.5b]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from memalign_graph.calibration import DEFAULT_GROUPS
from memalign_graph.datasets import CITATION_SPEC, QUOTE_SPEC, load_citation_policy, load_quote_policy
from memalign_graph.embeddings import resolve_embeddings
from memalign_graph.judge import run_judge
from memalign_graph.memory_head import Verdict, case_row, fit_memory_head
from memalign_graph.models import resolve_chat_model
from memalign_graph.spec import JudgeSpec

TASKS: dict[str, dict[str, Any]] = {
    "house-rule": {
        "spec": QUOTE_SPEC,
        "load": load_quote_policy,
        "rule": "The Source line must quote, word for word, a sentence of the knowledge given; an answer whose "
        "Source line quotes a sentence that is not in the knowledge fails, however correct.",
        "criterion": "Look only at the Source line of the answer and at the Knowledge. pass = the sentence in "
        "double quotes appears word for word in the Knowledge. fail = it does not appear in the Knowledge.",
    },
    "citation": {
        "spec": CITATION_SPEC,
        "load": load_citation_policy,
        "rule": "The Source line must quote, word for word, a sentence of the knowledge given; an answer whose "
        "Source line names Wikipedia, general knowledge, a Google search or any other outside source fails, "
        "however correct.",
        "criterion": "Look only at the Source line of the answer. pass = the Source line quotes a sentence in "
        "double quotes. fail = the Source line names Wikipedia, general knowledge or a Google search.",
    },
}


def _row(condition: str, values: list[Any], test: list[dict[str, Any]], seconds: list[float]) -> dict[str, Any]:
    return {
        "condition": condition,
        "agreement": sum(v == c["value"] for v, c in zip(values, test)) / len(test),
        "judged_pass": values.count("pass") / len(test),
        "labelled_pass": sum(c["value"] == "pass" for c in test) / len(test),
        "s_p50": statistics.median(seconds),
    }


def head_row(spec: JudgeSpec, train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, Any]:
    """The calibration head fitted on ``train`` as a memory fits it, judging ``test`` without the model.

    Returns:
        A row like :func:`probe`'s, plus ``"gate"``: the head's gate verdict in words.
    """
    embeddings = resolve_embeddings(None)
    by_id = {r["id"]: r for r in train}
    head, _ = fit_memory_head(
        spec,
        [Verdict(r["id"], r["value"], None) for r in train],
        lambda ids: [by_id[i] for i in ids if i in by_id],
        embeddings,
        groups=DEFAULT_GROUPS,
    )
    if head is None:
        raise ValueError("no calibration head: the training records hold no expert value")
    values, seconds = [], []
    for case in test:
        started = time.perf_counter()
        row = case_row(head, {"inputs": case["inputs"], "outputs": case["outputs"]}, embeddings)
        values.append(head.decide(row, None, "on")["value"])
        seconds.append(time.perf_counter() - started)
    fields = "+".join(head.fields)
    out = _row(f"calibration head ({len(train)} records; {fields})", values, test, seconds)
    cv = "-" if head.cv_agreement is None else f"{head.cv_agreement:.2f}"
    out["gate"] = (
        f"{'open' if head.open else 'shut'}: cross-validated {cv} against baseline "
        f"{head.baseline_agreement:.2f} + {head.margin:.2f}"
    )
    return out


def probe(model: Any, cases: int = 12, seed: int = 0, task: str = "house-rule") -> list[dict[str, Any]]:
    """Judge ``cases`` held-out cases of ``task`` under each working memory of the module docstring, then the head.

    Args:
        model: a LangChain chat model.
        cases: held-out cases to judge per condition (after 20 training records).
        seed: seed of the task's shuffle.
        task: ``"house-rule"`` or ``"citation"`` (see :data:`TASKS`).

    Returns:
        One row per condition: ``{"condition", "agreement", "judged_pass", "labelled_pass", "s_p50"}``
        (agreement and shares in 0..1, seconds per judgment); the head's row also has ``"gate"``.

    Raises:
        ValueError: for an unknown task.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    setting = TASKS[task]
    spec: JudgeSpec = setting["spec"]
    records = setting["load"](20 + cases, seed=seed)
    train, test = records[:20], records[20:]
    fails = [r for r in train if r["value"] == "fail"][:3]
    passes = [r for r in train if r["value"] == "pass"][:2]
    episodes = [{**r, "judge_value": "pass"} for r in fails + passes]
    principle = [{"id": "rule", "text": setting["rule"], "sources": []}]
    as_criterion = JudgeSpec.categorical(name=spec.name, criterion=setting["criterion"], labels=["pass", "fail"])
    conditions = [
        ("criterion only", spec, [], []),
        ("rule as a principle", spec, principle, []),
        ("principle + 5 episodes", spec, principle, episodes),
        ("rule as the criterion", as_criterion, [], []),
    ]
    rows = []
    for name, judge_spec, principles, shown in conditions:
        values, seconds = [], []
        for case in test:
            started = time.perf_counter()
            judgment = run_judge(
                model, judge_spec, {"inputs": case["inputs"], "outputs": case["outputs"]}, principles, shown
            )
            seconds.append(time.perf_counter() - started)
            values.append(judgment["value"])
        rows.append(_row(name, values, test, seconds))
    rows.append(head_row(spec, train, test))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12, help="held-out cases per condition (default 12)")
    parser.add_argument("--task", default="house-rule", choices=list(TASKS), help="task (default house-rule)")
    parser.add_argument("--model", default=None, help="chat model (default: the embedded one)")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible server URL")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    model = resolve_chat_model(args.model, base_url=args.base_url)
    rows = probe(model, args.cases, args.seed, args.task)
    table = Table(title=f"Can {getattr(model, 'model_name', None) or args.model} apply the {args.task} rule?")
    for column in ("working memory", "agreement", "judged pass", "labelled pass", "s/judgment"):
        table.add_column(column, justify="left" if column == "working memory" else "right")
    for row in rows:
        table.add_row(
            row["condition"],
            f"{row['agreement']:.2f}",
            f"{row['judged_pass']:.2f}",
            f"{row['labelled_pass']:.2f}",
            f"{row['s_p50']:.4f}" if "gate" in row else f"{row['s_p50']:.1f}",
        )
    Console(width=120).print(table)
    print(f"calibration head's gate: {rows[-1]['gate']}")


if __name__ == "__main__":
    main()
