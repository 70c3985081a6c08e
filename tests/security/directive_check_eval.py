"""How well a model's verdict-directive check agrees with the battery's labels (an eval, not a test).

The battery of ``tests/security/test_directive_disguise.py``: ``DISGUISED`` and
``BEYOND_THE_GATE`` are instructions about the verdict, ``HOUSE_RULES`` rules about the case.
Each run shuffles the battery (so calls hold other neighbours) and classifies it as alignment
does (:func:`memalign_graph.classify.aclassify_directives`, 20 rules per call). Printed per run
and as the median over runs: the share of each set the model calls ``verdict``, the share it
left unchecked, its agreement with the label (``verdict``, or ``case`` for house rules), and
what the text gate and the model hold together (the gate holds every
``DISGUISED`` item and no house rule; the model can only add holds).

Run from the repository root::

    .venv/bin/python -m tests.security.directive_check_eval [--runs 3] [--model embedded:qwen2.5-coder-0.5b]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from memalign_graph.classify import aclassify_directives
from memalign_graph.governance import verdict_directive
from memalign_graph.models import resolve_chat_model, run_sync
from memalign_graph.spec import JudgeSpec
from tests.security.test_directive_disguise import BEYOND_THE_GATE, DISGUISED, HOUSE_RULES

SETS = {"disguised": DISGUISED, "beyond the gate": BEYOND_THE_GATE, "house rules": HOUSE_RULES}
SPECS = {
    "pass/fail": JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"]),
    "1-5": JudgeSpec.numeric("tone", "How well does the reply follow our tone rules?", 1, 5),
    "A/B/tie": JudgeSpec.pairwise("helpfulness", "Which output answers the request better?"),
}


def _spec(values: list) -> JudgeSpec:
    return SPECS["1-5" if values == [1, 2, 3, 4, 5] else "A/B/tie" if values == ["A", "B", "tie"] else "pass/fail"]


def one_run(model: object, seed: int) -> dict[str, dict[str, float]]:
    """Classify the whole battery once, in a shuffled order; shares per set."""
    items = [(name, n, text, values) for name, rows in SETS.items() for n, (text, values) in enumerate(rows)]
    random.Random(seed).shuffle(items)
    kinds: dict[str, str] = {}
    for spec in SPECS.values():
        mine = [(f"{name}/{n}", text) for name, n, text, values in items if _spec(values) is spec]
        kinds.update(run_sync(aclassify_directives(model, spec, mine, backoff_s=0.5)))  # type: ignore[arg-type]
    out: dict[str, dict[str, float]] = {}
    for name, rows in SETS.items():
        said = [kinds.get(f"{name}/{n}") for n in range(len(rows))]
        gate = [verdict_directive(text, values) is not None for text, values in rows]
        label = "case" if name == "house rules" else "verdict"
        out[name] = {
            "agreement": sum(k == label for k in said) / len(rows),
            "model_verdict": sum(k == "verdict" for k in said) / len(rows),
            "unchecked": sum(k is None for k in said) / len(rows),
            "held_with_gate": sum(g or k == "verdict" for g, k in zip(gate, said)) / len(rows),
        }
    return out


def main() -> None:
    """Parse the arguments, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="embedded:qwen2.5-coder-0.5b")
    parser.add_argument("--base-url", default=None)
    args = parser.parse_args()
    model = resolve_chat_model(args.model, base_url=args.base_url)
    runs, seconds = [], []
    for seed in range(args.runs):
        started = time.perf_counter()
        runs.append(one_run(model, seed))
        seconds.append(time.perf_counter() - started)
        print(f"run {seed + 1}: {seconds[-1]:.0f} s")
        for name, shares in runs[-1].items():
            print("  " + f"{name:16s}" + "  ".join(f"{k} {v:.2f}" for k, v in shares.items()))
    sizes = {name: len(rows) for name, rows in SETS.items()}
    print(f"\n{args.model}, {args.runs} run(s), median (min-max); set sizes {sizes}")
    keys = ("agreement", "model_verdict", "unchecked", "held_with_gate")
    print(f"{'set':16s} " + " ".join(f"{k:>18s}" for k in keys))
    for name in SETS:
        cells = []
        for key in keys:
            values = [run[name][key] for run in runs]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"{name:16s} " + " ".join(f"{c:>18s}" for c in cells))
    print(f"seconds per run: median {statistics.median(seconds):.0f}")


if __name__ == "__main__":
    main()
