"""The calibration head's benchmarks: its cost per judgment, opening a calibrated memory, judgment latency.

See :mod:`memalign_graph.memory_head`; ``memalign bench`` runs the first two (:func:`memalign_graph.bench.run_all`).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from memalign_graph.bench.synthetic import synthetic_memory
from memalign_graph.spec import JudgeSpec
from memalign_graph.testing import StubChatModel


def _calibration_spec(groups: tuple[str, ...]) -> JudgeSpec:
    from memalign_graph.datasets import CITATION_SPEC

    return JudgeSpec.from_dict({**CITATION_SPEC.to_dict(), "calibration_groups": list(groups)})


def bench_calibration_head(
    episodes: int = 100, *, judgments: int = 50, runs: int = 3, embeddings: str | Embeddings | None = None
) -> dict[str, float]:
    """The calibration head's own cost per judgment, on the house-rule task (``load_citation_policy``).

    A head is fitted on ``episodes`` records, once with only the ``statistics`` group and once with
    only ``outputs`` (the output embedded with ``embeddings``, default the offline embedder); then
    :func:`memalign_graph.memory_head.calibrate` runs in mode ``"on"`` on ``judgments`` unseen cases:
    the case's features (statistics, or one embedding of its output) and the head's decision.

    Returns:
        ``calibration_head_ms_p50_statistics`` and ``calibration_head_ms_p50_outputs`` (median over
        ``runs`` of each run's median), and ``calibration_fit_s_N`` (fitting both heads' candidates,
        embedding included).
    """
    from memalign_graph.datasets import load_citation_policy
    from memalign_graph.embeddings import resolve_embeddings
    from memalign_graph.memory_head import Verdict, calibrate, fit_memory_head

    emb = resolve_embeddings(embeddings)
    pool = load_citation_policy(episodes + judgments, seed=0)
    train, cases = pool[:episodes], pool[episodes:]
    by_id = {r["id"]: r for r in train}
    verdicts = [Verdict(r["id"], r["value"], None) for r in train]
    figures: dict[str, float] = {}
    fit_s = 0.0
    for group in ("statistics", "outputs"):
        spec = _calibration_spec((group,))
        started = time.perf_counter()
        head, _ = fit_memory_head(spec, verdicts, lambda ids: [by_id[i] for i in ids], emb, groups=(group,))
        fit_s += time.perf_counter() - started
        assert head is not None
        calibrate(head, cases[0], "pass", "on", emb)  # warm up the embedder
        medians = []
        for _ in range(runs):
            times = []
            for case in cases:
                started = time.perf_counter()
                calibrate(head, case, "pass", "on", emb)
                times.append((time.perf_counter() - started) * 1000)
            medians.append(statistics.median(times))
        figures[f"calibration_head_ms_p50_{group}"] = round(statistics.median(medians), 3)
    figures[f"calibration_fit_s_{episodes}"] = round(fit_s, 3)
    return figures


def bench_open_calibrated(n: int = 100_000, *, runs: int = 3) -> dict[str, float]:
    """``Memory.open`` of ``n`` episodes whose calibration head is stored, and the head's first read.

    The memory is :func:`synthetic_memory`'s (default embedder); its head is fitted once on its
    stratified sample (at most 2000 episodes: their outputs embedded, their statistics computed) and
    stored, as a commit leaves it.

    Returns:
        ``open_s_N_calibrated`` (``Memory.open``, median of ``runs``; compare ``load_s_N``),
        ``calibration_read_ms_N`` (the first :meth:`~memalign_graph.memory.Memory.calibration_head` after
        it: the stored head read and validated, median) and ``calibration_fit_s_N`` (the one fit).
    """
    from memalign_graph.memory import Memory

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        memory = synthetic_memory(Path(tmp) / "mem", n)
        started = time.perf_counter()
        fitted = memory.calibration_head()
        figures[f"calibration_fit_s_{n}"] = round(time.perf_counter() - started, 3)
        opens, reads = [], []
        for _ in range(runs):
            started = time.perf_counter()
            reopened = Memory.open(Path(tmp) / "mem")
            opened = time.perf_counter()
            head = reopened.calibration_head()
            reads.append((time.perf_counter() - opened) * 1000)
            opens.append(opened - started)
            if (head is None) != (fitted is None) or (head is not None and head.to_dict() != fitted.to_dict()):
                raise RuntimeError("bench_open_calibrated: the reopened memory did not read the stored head")
        figures[f"open_s_{n}_calibrated"] = round(statistics.median(opens), 3)
        figures[f"calibration_read_ms_{n}"] = round(statistics.median(reads), 2)
    return figures


def bench_calibrated_judgment(
    model: str = "embedded", *, episodes: int = 40, judgments: int = 10, k: int = 5
) -> dict[str, float]:
    """Judgment latency with and without the calibration head, on the citation task, with a real model.

    Not part of :func:`run_all` (it needs the model and takes minutes). A memory of ``episodes``
    records (aligned with the stub: no principles, so the figure is the judgment's), default embedder;
    the ``judgments`` unseen cases are judged once each, alternately with ``calibration="off"`` and ``"on"``
    (``k`` episodes in working memory, precedent off). The head's own part is timed inside the judgment
    (:func:`~memalign_graph.working_memory.calibrate_judgment`).

    Returns:
        ``judgment_p50_s_calibration_off``, ``judgment_p50_s_calibration_on``, ``calibration_in_judgment_ms_p50``,
        ``calibration_head_fields_outputs`` (1 when the chosen head embeds the output, 0 for statistics only).
    """
    from memalign_graph import working_memory
    from memalign_graph.datasets import CITATION_SPEC, load_citation_policy
    from memalign_graph.memory import Memory
    from memalign_graph.models import resolve_chat_model

    chat = resolve_chat_model(model)
    pool = load_citation_policy(episodes + judgments, seed=0)
    head_ms: list[float] = []
    calibrate = working_memory.calibrate_judgment

    def timed(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return calibrate(*args)
        finally:
            if args[3] == "on":
                head_ms.append((time.perf_counter() - started) * 1000)

    walls: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        memory = Memory.create(Path(tmp) / "mem", CITATION_SPEC)
        memory.align(pool[:episodes], model=StubChatModel(), score_feedback=False)
        head = memory.calibration_head()
        working_memory.calibrate_judgment = timed  # type: ignore[assignment]
        try:
            memory.judge(pool[0], model=chat, k=k, precedent="off", calibration="off")  # warm up, on a case not timed
            # each case judged once, the modes alternating: a case judged again, even a pass later, lets the
            # embedded server reuse its cached prompt (measured: 8.4 s off, then 2.5 s on for the same case)
            for index, case in enumerate(pool[episodes:]):
                mode = ("off", "on")[index % 2]
                started = time.perf_counter()
                memory.judge(case, model=chat, k=k, precedent="off", calibration=mode)
                walls[mode].append(time.perf_counter() - started)
        finally:
            working_memory.calibrate_judgment = calibrate  # type: ignore[assignment]
    return {
        "judgment_p50_s_calibration_off": round(statistics.median(walls["off"]), 3),
        "judgment_p50_s_calibration_on": round(statistics.median(walls["on"]), 3),
        "calibration_in_judgment_ms_p50": round(statistics.median(head_ms), 3),
        "calibration_head_fields_outputs": float(head is not None and "outputs" in head.fields),
    }
