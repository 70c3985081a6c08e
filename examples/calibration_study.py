"""Measurements that decide the calibration head's design (:mod:`memalign_graph.calibration`).

The head is a classifier fitted on the expert's episodes (after LLM-Rubric, Hashemi et al., ACL 2024,
arXiv 2501.00274): over the embedding of the part of the case the rule looks at and the judge model's
own label probabilities. This study measures, on real data, what those features are worth, how the
head learns with the number of feedback records, how often its evidence gate decides wrongly, and
what it costs:

``features``  unseen agreement by feature set (embedding of ``outputs``, of ``inputs``, of both as
              separate vectors, each with and without the model's label probabilities; the
              probabilities alone; the model alone; the training majority; and the answer's length
              alone, to show how much of what the head learns is surface form) at 5/10/20/50 records;
``drift``     the model's label probabilities under the no-memory prompt against a k=5 memory
              prompt, and what feeding the drifted ones to a head fitted on no-memory ones does;
``rubric``    LLM-Rubric's own feature: the model's yes/no probability that the case follows the
              task's rule (AUC against the expert's labels);
``gate``      the cross-validated gate: how often it opens when the head is worse on unseen cases
              than the model and stays shut when the head is better, by margin and minimum per label,
              plus the hostile 90 %-one-label file;
``controls``  the citation task with pass and fail answers of similar length (an outside source named
              beside the quote; a quote from another item's knowledge): does the head learn the rule?
``numeric``   Prometheus MT-Bench 1-5 scores: ordinal (cumulative logit) against multinomial heads;
``costs``     fit, cross-validation and predict time against the number of episodes (random
              384-dimensional vectors), and the size of the serialised head.

Tasks: the house rule (:func:`memalign_graph.datasets.load_citation_policy`) and HaluEval QA
(:func:`memalign_graph.datasets.load_halueval_qa`). Embeddings: all-MiniLM-L6-v2 int8 (the offline
default). The model's probabilities come from the embedded judge model (Qwen2.5-Coder-0.5B by
default) through the project's own loader with one thread, judged once per case with the judge's
no-memory prompt and cached on disk (``--cache``), so a rerun costs no model call. Every figure is
printed as mean ± sd over seeded random splits.

Run: ``.venv/bin/python examples/calibration_study.py [--cache DIR] [--pool 100] [--seeds 10]
[--parts features,drift,rubric,gate,numeric,costs]``; ``--score-only`` fills the cache and stops.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memalign_graph import calibration, prompts
from memalign_graph.calibration import (
    DEFAULT_GROUPS,
    DEFAULT_MARGIN,
    DEFAULT_MIN_PER_LABEL,
    MAX_TRAINING_EPISODES,
    build_features,
    fit_head,
    select_head,
    text_statistics,
)
from memalign_graph.datasets import CITATION_SPEC, HALUEVAL_SPEC, load_citation_policy, load_halueval_qa
from memalign_graph.spec import JudgeSpec, case_text

TASKS: dict[str, tuple[JudgeSpec, Callable[..., list[dict[str, Any]]]]] = {
    "citation": (CITATION_SPEC, load_citation_policy),
    "halueval": (HALUEVAL_SPEC, load_halueval_qa),
}
RULES = {
    "citation": (
        "The Source line must quote, word for word, a sentence of the knowledge given; an answer whose Source "
        "line names Wikipedia, general knowledge, a Google search or any other outside source fails."
    ),
    "halueval": "The answer must be correct and supported by the knowledge given.",
}
"""The one rule asked as a yes/no question per task (LLM-Rubric's per-question feature)."""
SIZES = (5, 10, 20, 50)
TEST_CASES = 50
DRIFT_K = 5
DRIFT_TRAIN = 20
DRIFT_CASES = 24


def mean_sd(values: Iterable[float]) -> str:
    """``"0.83 ± 0.09"`` over the given values (sd 0 for one value)."""
    values = list(values)
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {sd:.2f}"


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:24]


class Cache:
    """Answers of the model, one JSON object per line, keyed by what was asked (resumable, append-only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[row["key"]] = row

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def put(self, key: str, row: dict[str, Any]) -> dict[str, Any]:
        row = {"key": key, **row}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.rows[key] = row
        return row


def load_model(name: str) -> Any:
    """The embedded judge model through the project's loader, one thread, one slot (the machine is shared)."""
    from memalign_graph.llamacpp import ChatLlamaCpp

    return ChatLlamaCpp(embedded=name, n_threads=1, n_parallel=1)


def judge_case(
    model: Any, spec: JudgeSpec, case: dict[str, Any], cache: Cache, episodes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The judge's value and label probabilities for a case, with no memory or with ``episodes`` (cached)."""
    from memalign_graph.judge import run_judge

    shown = episodes or []
    key = judge_key(model.model_name, spec, case, shown)
    row = cache.get(key)
    if row is None:
        started = time.perf_counter()
        judgment = run_judge(model, spec, {"inputs": case["inputs"], "outputs": case["outputs"]}, [], shown)
        row = cache.put(
            key,
            {
                "id": case["id"],
                "episodes": [e["id"] for e in shown],
                "value": judgment["value"],
                "scores": judgment["scores"],
                "seconds": round(time.perf_counter() - started, 3),
                "input_tokens": judgment["usage"]["input_tokens"],
            },
        )
    return row


def rubric_case(model: Any, task: str, case: dict[str, Any], cache: Cache) -> dict[str, Any]:
    """LLM-Rubric's feature: P(yes) that the case follows the task's rule, from the first token's logprobs."""
    rule = RULES[task]
    key = rubric_key(model.model_name, task, case)
    row = cache.get(key)
    if row is not None:
        return row
    from langchain_core.messages import HumanMessage, SystemMessage

    question = (
        f"Rule: {rule}\n\nCase (JSON):\n{json.dumps({'inputs': case['inputs'], 'outputs': case['outputs']})}\n\n"
        "Does the case's answer follow the rule? Answer yes or no."
    )
    started = time.perf_counter()
    message = model.invoke(
        [SystemMessage("Answer with one word: yes or no."), HumanMessage(question)],
        max_tokens=1,
        logprobs=True,
        top_logprobs=10,
    )
    content = (message.response_metadata.get("logprobs") or {}).get("content") or []
    yes = no = 0.0
    for candidate in content[0].get("top_logprobs", []) if content else []:
        word = str(candidate.get("token", "")).strip().lower()
        if word == "yes":
            yes += math.exp(candidate["logprob"])
        elif word == "no":
            no += math.exp(candidate["logprob"])
    p_yes = yes / (yes + no) if yes + no > 0 else None
    return cache.put(
        key,
        {"id": case["id"], "p_yes": p_yes, "mass": yes + no, "seconds": round(time.perf_counter() - started, 3)},
    )


def embed(texts: list[str]) -> np.ndarray:
    """Unit vectors of the offline default embedder (all-MiniLM-L6-v2 int8), shape ``(len(texts), 384)``."""
    from memalign_graph.embeddings import resolve_embeddings

    return np.asarray(resolve_embeddings("minilm-int8").embed_documents(texts), dtype=np.float64)


def task_data(task: str, pool: int, cache: Cache, model_name: str) -> dict[str, Any]:
    """The task's pool: records, label array, field vectors, and the model's cached no-memory answers (or None)."""
    spec, loader = TASKS[task]
    records = loader(pool, seed=0)
    started = time.perf_counter()
    outputs = embed([str(r["outputs"]) for r in records])
    inputs = embed([str(r["inputs"]) for r in records])
    embed_s = time.perf_counter() - started
    return {
        "spec": spec,
        "records": records,
        "labels": np.asarray([r["value"] for r in records]),
        "outputs": outputs,
        "inputs": inputs,
        "answers": [cache.get(judge_key(model_name, spec, record)) for record in records],
        "length": np.asarray([[math.log1p(len(str(r["outputs"]).split()))] for r in records]),
        "statistics": statistics_of(records),
        "rubric": np.asarray([_p_yes(cache.get(rubric_key(model_name, task, record))) for record in records]),
        "embed_s": embed_s,
    }


def _p_yes(row: dict[str, Any] | None) -> list[float]:
    if row is None:
        return [math.nan]
    return [0.5 if row["p_yes"] is None else row["p_yes"]]


def rubric_key(model_name: str, task: str, case: dict[str, Any]) -> str:
    """Cache key of a rubric question: model, the task's rule and the case."""
    return _key("rubric", model_name, RULES[task], case_text(case))


def judge_key(model_name: str, spec: JudgeSpec, case: dict[str, Any], episodes: Sequence[dict[str, Any]] = ()) -> str:
    """Cache key of a judgment: prompt version, model, judge, case and the episodes shown."""
    return _key(
        "judge", prompts.PROMPT_VERSION, model_name, spec.name, spec.criterion, case_text(case),
        [e["id"] for e in episodes],
    )  # fmt: skip


def model_display_name(name: str) -> str:
    """The embedded model's display name (what judgments and the cache keys carry)."""
    from memalign_graph.modelfiles import embedded_model

    return embedded_model(name).display_name


def scores_matrix(spec: JudgeSpec, answers: list[dict[str, Any] | None]) -> np.ndarray:
    """The model's label probabilities per case, shape ``(n, n_labels)`` (NaN rows where not scored)."""
    out = np.full((len(answers), len(spec.labels)), np.nan)
    for i, answer in enumerate(answers):
        if answer and answer.get("scores"):
            out[i] = [answer["scores"][label] for label in spec.labels]
    return out


def split(n_pool: int, seed: int, test: int = TEST_CASES) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle of the pool: (training order, test indices); training sets are its prefixes."""
    order = np.random.default_rng(seed).permutation(n_pool)
    return order[test:], order[:test]


FEATURE_SETS: dict[str, tuple[tuple[str, ...], bool | str]] = {
    "outputs": (("outputs",), False),
    "outputs + scores": (("outputs",), True),
    "inputs": (("inputs",), False),
    "inputs + outputs": (("inputs", "outputs"), False),
    "inputs + outputs + scores": (("inputs", "outputs"), True),
    "scores": ((), True),
    "outputs + rubric P(yes)": (("outputs",), "rubric"),
    "length of outputs alone (log words)": (("length",), False),
    "statistics": (("statistics",), False),
    "statistics + outputs": (("statistics", "outputs"), False),
}
SELECTED = "selected by CV among statistics, outputs, both (the default)"


def features_of(data: dict[str, Any], fields: tuple[str, ...], extra: bool | str, idx: np.ndarray) -> np.ndarray:
    """Feature rows of cases ``idx``: the fields' vectors, then the model's scores (``True``) or the rubric's P(yes)."""
    vectors = [data[f][idx] for f in fields]
    if extra == "rubric":
        return build_features(vectors, data["rubric"][idx])
    return build_features(vectors, scores_matrix(data["spec"], data["answers"])[idx] if extra else None)


def statistics_of(records: list[dict[str, Any]]) -> np.ndarray:
    """:func:`text_statistics` of each record, ``(n, 3)``."""
    return np.asarray([text_statistics(str(r["inputs"]), str(r["outputs"])) for r in records])


def unseen(
    data: dict[str, Any],
    fields: Sequence[str] | None,
    labels: np.ndarray,
    label_set: list[str],
    train: np.ndarray,
    test: np.ndarray,
    seed: int,
) -> float:
    """Unseen agreement of a head on ``fields`` fitted on ``train`` (``None``: :func:`select_head`'s choice)."""
    if fields is None:
        head = select_head({g: data[g][train] for g in DEFAULT_GROUPS}, labels[train], label_set, seed=seed)
        fields = head.fields
    else:
        head = fit_head(build_features([data[f][train] for f in fields]), labels[train], label_set, seed=seed)
    return float(np.mean(head.predict_values(build_features([data[f][test] for f in fields])) == labels[test]))


def citation_controls(pool: int) -> dict[str, list[dict[str, Any]]]:
    """Variants of the citation task whose ``pass`` and ``fail`` answers are about as long.

    ``named source``: a fail answer quotes the same supporting sentence but names an outside source too
    (``Source: Wikipedia, "..."``): the rule is visible in the answer alone. ``quote from elsewhere``: a fail
    answer quotes, word for word, a sentence of *another* item's knowledge: the rule needs the knowledge.
    Labels, items and the coin are those of :func:`load_citation_policy` (same seed).
    """
    from memalign_graph.datasets import OUTSIDE_SOURCES, _supporting_sentence

    records = load_citation_policy(pool, seed=0)
    sentences = []
    for record in records:
        knowledge = record["inputs"].split("\nQuestion: ")[0].removeprefix("Knowledge: ")
        answer = record["outputs"].split("\n")[0]
        sentences.append((answer, _supporting_sentence(knowledge, answer) or knowledge))
    variants: dict[str, list[dict[str, Any]]] = {"named source": [], "quote from elsewhere": []}
    for i, record in enumerate(records):
        answer, sentence = sentences[i]
        if record["value"] == "pass":
            named = elsewhere = record["outputs"]
        else:
            named = f'{answer}\nSource: {OUTSIDE_SOURCES[i % len(OUTSIDE_SOURCES)]}, "{sentence}"'
            elsewhere = f'{answer}\nSource: "{sentences[(i + 1) % len(records)][1]}"'
        variants["named source"].append({**record, "outputs": named})
        variants["quote from elsewhere"].append({**record, "outputs": elsewhere})
    return variants


def part_controls(pool: int, seeds: int) -> None:
    """Does the head learn the citation rule, or the answers' length? Heads on length-matched variants."""
    print(f"\n## controls: citation variants with pass and fail answers of similar length ({seeds} seeds)")
    print("| variant | features | mean words pass / fail | 10 records | 20 records | 50 records |")
    print("|---|---|---|---|---|---|")
    for variant, records in citation_controls(pool).items():
        labels = np.asarray([r["value"] for r in records])
        words = np.asarray([len(str(r["outputs"]).split()) for r in records])
        data = {
            "outputs": embed([str(r["outputs"]) for r in records]),
            "inputs": embed([str(r["inputs"]) for r in records]),
            "length": np.log1p(words)[:, None],
            "statistics": statistics_of(records),
        }
        for name, fields in (
            ("outputs", ("outputs",)),
            ("inputs + outputs", ("inputs", "outputs")),
            ("length", ("length",)),
            ("statistics", ("statistics",)),
            (SELECTED, None),
        ):
            by_n: dict[int, list[float]] = {}
            for seed in range(seeds):
                train_order, test = split(len(records), seed)
                for n in (10, 20, 50):
                    train = train_order[:n]
                    by_n.setdefault(n, []).append(unseen(data, fields, labels, ["pass", "fail"], train, test, seed))
            print(
                f"| {variant} | {name} | {words[labels == 'pass'].mean():.1f} / {words[labels == 'fail'].mean():.1f} | "
                + " | ".join(mean_sd(by_n[n]) for n in (10, 20, 50))
                + " |"
            )


def part_features(data: dict[str, dict[str, Any]], seeds: int) -> dict[str, Any]:
    """Unseen agreement per feature set and training size (mean ± sd over seeds), per task."""
    results: dict[str, Any] = {}
    for task, d in data.items():
        scored = scores_matrix(d["spec"], d["answers"])
        available = {False: True, True: bool(np.isfinite(scored).all()), "rubric": bool(np.isfinite(d["rubric"]).all())}
        has_scores = available[True]
        model_values = np.asarray([a["value"] if a else None for a in d["answers"]], dtype=object)
        rows: dict[str, dict[int, list[float]]] = {}
        for seed in range(seeds):
            train_order, test = split(len(d["records"]), seed)
            for n in SIZES:
                train = train_order[:n]
                labels = d["labels"][train]
                for name, (fields, use_scores) in FEATURE_SETS.items():
                    if not available[use_scores]:
                        continue
                    head = fit_head(
                        features_of(d, fields, use_scores, train), labels, list(d["spec"].labels), seed=seed
                    )
                    predicted = head.predict_values(features_of(d, fields, use_scores, test))
                    rows.setdefault(name, {}).setdefault(n, []).append(float(np.mean(predicted == d["labels"][test])))
                rows.setdefault(SELECTED, {}).setdefault(n, []).append(
                    unseen(d, None, d["labels"], list(d["spec"].labels), train, test, seed)
                )
                values, counts = np.unique(labels, return_counts=True)
                majority = values[np.argmax(counts)]
                rows.setdefault("training majority", {}).setdefault(n, []).append(
                    float(np.mean(d["labels"][test] == majority))
                )
                if has_scores:
                    rows.setdefault("model alone (no memory)", {}).setdefault(n, []).append(
                        float(np.mean(model_values[test] == d["labels"][test]))
                    )
        results[task] = rows
    return results


def print_table(title: str, rows: dict[str, dict[int, list[float]]], columns: Iterable[int]) -> None:
    columns = list(columns)
    print(f"\n{title}")
    print("| features | " + " | ".join(f"{c} records" for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, by_n in rows.items():
        print(f"| {name} | " + " | ".join(mean_sd(by_n.get(c, [])) for c in columns) + " |")


def auc(positive: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, scores))


def part_drift(data: dict[str, dict[str, Any]], model: Any, cache: Cache) -> None:
    """No-memory against k=5 memory-prompt label probabilities on the same cases, and what the drift does to a head."""
    from memalign_graph.episodic import episode_from_record

    print(f"\n## drift: no-memory prompt vs a k={DRIFT_K} episode prompt ({DRIFT_CASES} unseen cases, seed 0)")
    print("| task | mean abs Δ P(first label) | value flips | head on no-memory scores | head on memory scores |")
    print("|---|---|---|---|---|")
    for task, d in data.items():
        spec = d["spec"]
        train_order, test = split(len(d["records"]), 0)
        train, test = train_order[:DRIFT_TRAIN], test[:DRIFT_CASES]
        if any(d["answers"][i] is None for i in [*train, *test]):
            print(f"| {task} | (no-memory answers missing: run --score-only first) | | | |")
            continue
        episodes = []
        for i in train:
            episode = dict(episode_from_record(d["records"][i]))
            episode["judge_value"] = d["answers"][i]["value"]
            episodes.append(episode)
        case_vectors = embed([case_text(d["records"][i]) for i in test])
        train_vectors = embed([case_text(d["records"][i]) for i in train])
        memory_answers = []
        for row, i in enumerate(test):
            nearest = np.argsort(-(train_vectors @ case_vectors[row]))[:DRIFT_K]
            memory_answers.append(judge_case(model, spec, d["records"][i], cache, [episodes[j] for j in nearest]))
        plain = scores_matrix(spec, [d["answers"][i] for i in test])
        drifted = scores_matrix(spec, memory_answers)
        flips = np.mean([m["value"] != d["answers"][i]["value"] for m, i in zip(memory_answers, test)])
        head = fit_head(features_of(d, ("outputs",), True, train), d["labels"][train], list(spec.labels), seed=0)
        vectors = d["outputs"][test]
        on_plain = np.mean(head.predict_values(build_features([vectors], plain)) == d["labels"][test])
        on_drift = np.mean(head.predict_values(build_features([vectors], drifted)) == d["labels"][test])
        seconds = statistics.median(m["seconds"] for m in memory_answers)
        print(
            f"| {task} | {np.nanmean(np.abs(plain[:, 0] - drifted[:, 0])):.3f} | {flips:.2f} | {on_plain:.2f} | "
            f"{on_drift:.2f} |  (memory-prompt judgment p50 {seconds:.1f} s)"
        )
        model_plain = np.mean(np.asarray([d["answers"][i]["value"] for i in test]) == d["labels"][test])
        model_memory = np.mean(np.asarray([m["value"] for m in memory_answers]) == d["labels"][test])
        print(f"|   model alone | no memory {model_plain:.2f} | memory {model_memory:.2f} | | |")


def part_rubric(data: dict[str, dict[str, Any]], model: Any, cache: Cache, cases: int) -> None:
    """AUC of the model's P(yes, the case follows the rule) against the expert's pass labels."""
    print(f"\n## rubric: P(yes) to the task's rule as a question ({cases} cases per task)")
    print("| task | AUC P(yes) vs pass | share with yes+no mass > 0.5 | judged yes (P>0.5) | p50 s |")
    print("|---|---|---|---|---|")
    for task, d in data.items():
        rows = [rubric_case(model, task, d["records"][i], cache) for i in range(min(cases, len(d["records"])))]
        p_yes = np.asarray([r["p_yes"] if r["p_yes"] is not None else 0.5 for r in rows])
        positive = d["labels"][: len(rows)] == "pass"
        print(
            f"| {task} | {auc(positive, p_yes):.2f} | {np.mean([r['mass'] > 0.5 for r in rows]):.2f} | "
            f"{np.mean(p_yes > 0.5):.2f} | {statistics.median(r['seconds'] for r in rows):.1f} |"
        )


def _gate_runs(d: dict[str, Any], seeds: int, sizes: Iterable[int], skew: float | None = None) -> list[dict[str, Any]]:
    """Per (seed, size): CV agreement and model agreement on the episodes, unseen agreement of head and model."""
    runs = []
    spec = d["spec"]
    model_values = np.asarray([a["value"] for a in d["answers"]], dtype=object)
    for seed in range(seeds):
        train_order, test = split(len(d["records"]), seed)
        if skew is not None:
            train_order = _skewed(train_order, d["labels"], skew, seed)
        for n in sizes:
            train = train_order[:n]
            head = select_head(
                {g: d[g][train] for g in DEFAULT_GROUPS},
                d["labels"][train],
                list(spec.labels),
                seed=seed,
                model_values=model_values[train],
                margin=0.0,
                min_per_label=1,
            )
            rows = build_features([d[g][test] for g in head.fields])
            unseen_head = float(np.mean(head.predict_values(rows) == d["labels"][test]))
            unseen_model = float(np.mean(model_values[test] == d["labels"][test]))
            runs.append(
                {
                    "seed": seed,
                    "n": n,
                    "cv": head.cv_agreement,
                    "model": head.model_agreement,
                    "baseline": head.baseline_agreement,
                    "min_count": min(head.label_counts.values()),
                    "unseen_head": unseen_head,
                    "unseen_model": unseen_model,
                }
            )
    return runs


def _skewed(order: np.ndarray, labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A training order whose prefixes hold ``share`` of its most common label (the hostile one-label-heavy file)."""
    values, counts = np.unique(labels[order], return_counts=True)
    heavy = values[np.argmax(counts)]
    rng = np.random.default_rng(seed + 1000)
    major = [i for i in order if labels[i] == heavy]
    minor = [i for i in order if labels[i] != heavy]
    out: list[int] = []
    while major or minor:
        take_major = (rng.random() < share and major) or not minor
        out.append((major if take_major else minor).pop(0))
    return np.asarray(out)


def gate_decision(run: dict[str, Any], margin: float, min_per_label: int, baseline: str = "baseline") -> bool:
    """The gate on one run's evidence; ``baseline="model"`` compares with the model's agreement alone."""
    return run["min_count"] >= min_per_label and run["cv"] is not None and run["cv"] >= run[baseline] + margin


def part_gate(data: dict[str, dict[str, Any]], seeds: int) -> None:
    """Wrong opens/shuts of the gate by margin and minimum per label; the judged agreement users would see."""
    margins = (0.0, 0.05, 0.10, 0.15)
    minimums = (2, 3, 5, 8)
    for task, d in data.items():
        if any(a is None for a in d["answers"]):
            print(f"\n(gate: {task} skipped, model scores missing; run with the model)")
            continue
        for skew in (None, 0.9):
            sizes = (5, 10, 20, 30, 50) if skew is None else (10, 20, 30)
            runs = _gate_runs(d, seeds, sizes, skew)
            label = "" if skew is None else " — hostile file, 90 % one label"
            print(
                f"\n## gate, {task}{label}: head selected by CV among statistics, outputs, both "
                f"({len(runs)} runs: {seeds} seeds × sizes {list(sizes)})"
            )
            print(
                "| margin | min/label | opens | wrong opens (head worse unseen) | wrong shuts (head ≥ 0.05 better) | "
                "gated unseen agreement | model unseen |"
            )
            print("|---|---|---|---|---|---|---|")
            for margin in margins:
                for minimum in minimums:
                    opened = [gate_decision(r, margin, minimum) for r in runs]
                    wrong_open = sum(o and r["unseen_head"] < r["unseen_model"] for o, r in zip(opened, runs))
                    wrong_shut = sum(
                        (not o) and r["unseen_head"] >= r["unseen_model"] + 0.05 for o, r in zip(opened, runs)
                    )
                    gated = [r["unseen_head"] if o else r["unseen_model"] for o, r in zip(opened, runs)]
                    print(
                        f"| {margin:.2f} | {minimum} | {sum(opened)}/{len(runs)} | {wrong_open} | {wrong_shut} | "
                        f"{mean_sd(gated)} | {mean_sd(r['unseen_model'] for r in runs)} |"
                    )
            model_only = [gate_decision(r, DEFAULT_MARGIN, DEFAULT_MIN_PER_LABEL, "model") for r in runs]
            wrong = sum(o and r["unseen_head"] < r["unseen_model"] for o, r in zip(model_only, runs))
            print(
                f"\nbaseline = the model's agreement alone (no majority rate), margin {DEFAULT_MARGIN}, "
                f"min {DEFAULT_MIN_PER_LABEL}/label: opens {sum(model_only)}/{len(runs)}, wrong opens {wrong}"
            )
            for minimum in sorted({DEFAULT_MIN_PER_LABEL, 3}):
                _by_size(runs, sizes, DEFAULT_MARGIN, minimum)


def _by_size(runs: list[dict[str, Any]], sizes: Iterable[int], margin: float, minimum: int) -> None:
    chosen = [gate_decision(r, margin, minimum) for r in runs]
    print(f"\nby size (margin {margin}, min {minimum}/label):")
    print("| records | gate open | cv agreement | baseline on episodes | head unseen | model unseen | gated unseen |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        sel = [(o, r) for o, r in zip(chosen, runs) if r["n"] == n]
        print(
            f"| {n} | {sum(o for o, _ in sel)}/{len(sel)} | "
            f"{mean_sd(r['cv'] for _, r in sel if r['cv'] is not None)} | "
            f"{mean_sd(r['baseline'] for _, r in sel)} | {mean_sd(r['unseen_head'] for _, r in sel)} | "
            f"{mean_sd(r['unseen_model'] for _, r in sel)} | "
            f"{mean_sd(r['unseen_head'] if o else r['unseen_model'] for o, r in sel)} |"
        )


def part_numeric(seeds: int, path: Path) -> None:
    """Prometheus MT-Bench (1-5): ordinal (cumulative logit) against multinomial heads on the response embedding."""
    from memalign_graph.loaders import load_prometheus

    if not path.is_file():
        print(f"\n(numeric: {path} not found, skipped)")
        return
    records, _ = load_prometheus(path)
    vectors = embed([str(r["outputs"]) for r in records])
    statistics = statistics_of(records)
    scores = np.asarray([r["value"] for r in records])
    test_n = 80
    shares = ", ".join(f"{v}: {np.mean(scores == v):.2f}" for v in range(1, 6))
    print(f"\n## numeric: Prometheus MT-Bench, {len(records)} responses, median GPT-4 score ({shares})")
    print(f"{seeds} seeds, {test_n} unseen each; features: embedding of the response (`outputs`) unless named")
    print("| head | records | exact | within 1 | MAE | CCC |")
    print("|---|---|---|---|---|---|")
    for n in (20, 50, 100, 200):
        if n + test_n > len(records):
            continue
        by: dict[str, dict[str, list[float]]] = {}
        for seed in range(seeds):
            order = np.random.default_rng(seed).permutation(len(records))
            train, test = order[test_n : test_n + n], order[:test_n]
            for method in ("ordinal", "multinomial", "ordinal, selected by CV", "training median"):
                if method == "training median":
                    predicted = np.full(len(test), float(np.median(scores[train])))
                elif method == "ordinal, selected by CV":
                    groups = {"statistics": statistics, "outputs": vectors}
                    head = select_head(
                        {g: v[train] for g, v in groups.items()},
                        scores[train],
                        [1, 2, 3, 4, 5],
                        seed=seed,
                        kind="numeric",
                    )
                    predicted = head.predict_values(build_features([groups[g][test] for g in head.fields])).astype(
                        float
                    )
                else:
                    head = fit_head(
                        vectors[train],
                        scores[train],
                        [1, 2, 3, 4, 5],
                        seed=seed,
                        kind="numeric" if method == "ordinal" else "categorical",
                    )
                    predicted = head.predict_values(vectors[test]).astype(float)
                truth = scores[test].astype(float)
                stats = by.setdefault(method, {})
                stats.setdefault("exact", []).append(float(np.mean(predicted == truth)))
                stats.setdefault("within1", []).append(float(np.mean(np.abs(predicted - truth) <= 1)))
                stats.setdefault("mae", []).append(float(np.mean(np.abs(predicted - truth))))
                stats.setdefault("ccc", []).append(_ccc(predicted, truth))
        for method, stats in by.items():
            print(
                f"| {method} | {n} | {mean_sd(stats['exact'])} | {mean_sd(stats['within1'])} | "
                f"{mean_sd(stats['mae'])} | {mean_sd(stats['ccc'])} |"
            )


def _ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (0 when both are constant)."""
    mx, my = float(np.mean(x)), float(np.mean(y))
    denominator = float(np.var(x)) + float(np.var(y)) + (mx - my) ** 2
    return 2 * float(np.mean((x - mx) * (y - my))) / denominator if denominator > 0 else 0.0


def part_costs(data: dict[str, dict[str, Any]]) -> None:
    """Fit (with 5-fold CV) and predict time, and serialised size, against the number of episodes."""
    groups_of = {"statistics": 3, "outputs": 384}
    select_head({g: np.eye(4)[:, :1] + 0 for g in groups_of}, ["pass", "fail"] * 2, ["pass", "fail"])  # imports
    print(
        "\n## costs: random groups (statistics 3-d, outputs 384-d unit vectors), 2 labels; select_head fits "
        "3 candidates, each with 5-fold CV (wall s, 1 process)"
    )
    print(
        f"| episodes | select_head s, sample ≤ {MAX_TRAINING_EPISODES} | select_head s, all | "
        "decide p50 ms (1 case, features given) | head JSON bytes | load + validate ms |"
    )
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in (10, 100, 1_000, 10_000, 100_000):
        groups = {g: rng.normal(size=(n, d)) for g, d in groups_of.items()}
        groups["outputs"] /= np.linalg.norm(groups["outputs"], axis=1, keepdims=True)
        labels = np.where(groups["outputs"][:, 0] + 0.1 * rng.normal(size=n) > 0, "pass", "fail")
        ids = [f"episode-{i}" for i in range(n)]
        started = time.perf_counter()
        head = select_head(groups, labels, ["pass", "fail"], ids=ids, seed=0)
        fit_s = time.perf_counter() - started
        full_s = "-"
        if n <= 10_000:
            started = time.perf_counter()
            select_head(groups, labels, ["pass", "fail"], ids=ids, seed=0, limit=n)
            full_s = f"{time.perf_counter() - started:.2f}"
        one = build_features([groups[g][:1] for g in head.fields])
        times = []
        for _ in range(200):
            t = time.perf_counter()
            head.decide(one[0], "pass")
            times.append((time.perf_counter() - t) * 1000)
        stored = json.dumps(head.to_dict())
        t = time.perf_counter()
        calibration.CalibrationHead.from_dict(json.loads(stored), ["pass", "fail"])
        load_ms = (time.perf_counter() - t) * 1000
        print(
            f"| {n} | {fit_s:.2f} (on {head.episodes}, chose {'+'.join(head.fields)}) | {full_s} | "
            f"{statistics.median(times):.3f} | {len(stored)} | {load_ms:.1f} |"
        )
    for task, d in data.items():
        records = d["records"][:64]
        embed([str(records[0]["outputs"])])
        embed_ms, stats_ms = [], []
        for record in records:
            t = time.perf_counter()
            embed([str(record["outputs"])])
            embed_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            text_statistics(str(record["inputs"]), str(record["outputs"]))
            stats_ms.append((time.perf_counter() - t) * 1000)
        print(
            f"per case of {task}: embedding `outputs` (MiniLM int8) p50 {statistics.median(embed_ms):.1f} ms; "
            f"text_statistics p50 {statistics.median(stats_ms):.3f} ms"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "memalign-graph" / "calibration")
    parser.add_argument("--pool", type=int, default=100, help="cases per task judged by the model (default 100)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--parts", default="features,controls,drift,rubric,gate,numeric,costs")
    parser.add_argument("--tasks", default="citation,halueval")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="embedded judge model (default the 0.5B)")
    parser.add_argument("--no-model", action="store_true", help="use cached model answers only; never load the model")
    parser.add_argument("--score-only", action="store_true", help="fill the cache (no-memory judgments) and stop")
    parser.add_argument(
        "--regularisation", type=float, default=None, help="the head's inverse L2 strength C (default: the module's)"
    )
    parser.add_argument("--rubric-cases", type=int, default=None, help="cases per task asked (default: the pool)")
    parser.add_argument(
        "--prometheus",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared/data/prometheus/mt_bench_eval.json",
    )
    args = parser.parse_args(argv)
    if args.pool < max(SIZES) + TEST_CASES:
        parser.error(f"--pool must be at least {max(SIZES) + TEST_CASES}")
    if args.regularisation is not None:
        calibration.REGULARISATION_C = args.regularisation
    parts = set(args.parts.split(","))
    tasks = args.tasks.split(",")
    cache = Cache(args.cache / "answers.jsonl")
    model = None if args.no_model else load_model(args.model)
    name = model_display_name(args.model)
    if args.score_only:
        pools = {task: TASKS[task][1](args.pool, seed=0) for task in tasks}
        for i in range(args.pool):
            for task in tasks:
                row = judge_case(model, TASKS[task][0], pools[task][i], cache)
                print(task, i, row["value"], pools[task][i]["value"], row["seconds"], flush=True)
        return
    started = time.perf_counter()
    data = {task: task_data(task, args.pool, cache, name) for task in tasks}
    print(
        f"pool: {args.pool} cases per task; embedding both fields took {sum(d['embed_s'] for d in data.values()):.1f} s"
    )
    for task, d in data.items():
        seconds = [a["seconds"] for a in d["answers"] if a]
        print(
            f"{task}: {np.mean(d['labels'] == 'pass'):.2f} pass; model answers cached for {len(seconds)}, "
            f"no-memory judgment p50 {statistics.median(seconds) if seconds else float('nan'):.1f} s"
        )
    if "features" in parts:
        for task, rows in part_features(data, args.seeds).items():
            print_table(f"## features, {task}: unseen agreement ({TEST_CASES} cases), {args.seeds} seeds", rows, SIZES)
    if "drift" in parts and model is not None:
        part_drift(data, model, cache)
    if "rubric" in parts and model is not None:
        part_rubric(data, model, cache, args.rubric_cases or args.pool)
    if "gate" in parts:
        part_gate(data, args.seeds)
    if "controls" in parts:
        part_controls(args.pool, args.seeds)
    if "numeric" in parts:
        part_numeric(args.seeds, args.prometheus)
    if "costs" in parts:
        part_costs(data)
    print(f"\nstudy wall time {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
