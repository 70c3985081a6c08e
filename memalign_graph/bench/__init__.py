"""Performance figures, measured on this machine with the offline embedder and a stub chat model.

Every figure is a median over repeated runs (``statistics.median``) and is
named with its unit and size, e.g. ``align_wall_s_1000``. The stub chat model
(:class:`memalign_graph.testing.StubChatModel`) sleeps a fixed latency per
call, so LLM time is known and the rest is this library's own cost. Where the
embedder's own speed is not the point, :class:`HashEmbeddings` (hashed words,
optionally sleeping per call like a remote embeddings API) stands in for it.

:data:`TARGETS` holds the figure each key must stay within (issue 13);
:func:`checks` compares figures with them and :func:`run_all` measures them all.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memalign_graph.bench.calibration import bench_calibrated_judgment, bench_calibration_head, bench_open_calibrated
from memalign_graph.bench.synthetic import (
    SPEC,
    HashEmbeddings,
    principle_texts,
    synthetic_cases,
    synthetic_memory,
    synthetic_records,
)
from memalign_graph.testing import StubChatModel

TARGETS: dict[str, float] = {
    "judge_overhead_ms_p50_0": 5,
    "judge_overhead_ms_p50_1000": 15,
    "align_llm_calls_1000": 21,  # 20 distillation calls (50 records each), 1 verdict-directive check
    "align_wall_s_1000_embed100ms": 3.5,
    "merge_s_4000": 2,
    "first_judgment_s_20000_principles": 5,
    "align_wall_s_100000": 900,
    "align_peak_rss_mib_100000": 2048,
    "retrieval_p50_ms_10000": 25,
    "judge_batch_s_100": 3,
    "calibration_head_ms_p50_outputs": 5,
}
"""Upper bounds (inclusive) of the figures ``memalign bench`` checks, with their sizes (2 cores, stub model)."""


def checks(figures: dict[str, float]) -> list[dict[str, Any]]:
    """Each figure with its target: ``[{"key", "value", "target", "ok"}]``; ``target``, ``ok``: ``None`` without one."""
    rows = []
    for key, value in figures.items():
        target = TARGETS.get(key)
        rows.append({"key": key, "value": value, "target": target, "ok": None if target is None else value <= target})
    return rows


def bench_align(
    n: int = 1000,
    *,
    latency_s: float = 1.0,
    batch_size: int = 50,
    concurrency: int = 8,
    runs: int = 1,
    records: list[dict[str, Any]] | None = None,
    embeddings: str | None = None,
) -> dict[str, float]:
    """Align ``n`` records into a fresh memory with a stub LLM of fixed latency.

    Returns:
        ``align_wall_s_N`` (wall time), ``align_cpu_s_N`` (this process's CPU time meanwhile, all
        threads: with wall, how busy the machine was), ``align_llm_calls_N`` (distillation,
        consolidation and the verdict-directive check), ``align_consolidation_pairs_N`` (pairs of
        similar principles sent to the LLM, at most 40 per call), ``align_tokens_sent_N`` (prompt tokens),
        ``align_non_llm_s_N``
        (embedding, indexing, merging and persistence: every phase but the LLM's), each phase as
        ``align_<phase>_N``, and ``align_embed_texts_per_s_N`` (distinct episode texts embedded per
        second of the embedding phase; 0 when that phase took under the timings' 1 ms resolution);
        medians over ``runs``.
    """
    from memalign_graph.episodic import episode_from_record
    from memalign_graph.memory import Memory
    from memalign_graph.spec import embedding_text

    data = records or synthetic_records(n)
    distinct = len({embedding_text(episode_from_record(r)) for r in data[:n]})
    results: list[dict[str, float]] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            memory = Memory.create(Path(tmp) / "mem", SPEC, embeddings=embeddings)
            model = StubChatModel(latency_s=latency_s)
            cpu, started = time.process_time(), time.perf_counter()
            report = memory.align(data[:n], model=model, batch_size=batch_size, concurrency=concurrency)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            phases = {k: v for k, v in report.timings.items() if k != "distill_s"}
            embed_s = report.timings.get("embed_s", 0.0)
            results.append(
                {
                    f"align_wall_s_{n}": wall,
                    f"align_cpu_s_{n}": cpu,
                    f"align_embed_texts_per_s_{n}": distinct / embed_s if embed_s else 0.0,
                    f"align_llm_calls_{n}": report.llm_calls,
                    f"align_consolidation_pairs_{n}": report.consolidation.get("pairs", 0),
                    f"align_tokens_sent_{n}": report.usage.get("input_tokens", 0),
                    f"align_non_llm_s_{n}": sum(phases.values()),
                    **{f"align_{k}_{n}": v for k, v in report.timings.items()},
                }
            )
    return {key: round(statistics.median(r[key] for r in results), 3) for key in results[0]}


def bench_retrieval(sizes: Sequence[int] = (100, 10_000, 100_000), *, queries: int = 50) -> dict[str, float]:
    """Working-memory assembly per judgment: embed the case (for real), vector search (k=5), load principles.

    Also the load time of a memory from disk (median of 3) and the resident memory of a
    fresh process that loads it, at the largest size.

    Returns:
        ``retrieval_p50_ms_N``, ``retrieval_p95_ms_N`` per size; ``load_s_N``, ``rss_mib_N`` at the largest.
    """
    from memalign_graph.memory import Memory

    figures: dict[str, float] = {}
    cases = synthetic_cases(queries)
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            synthetic_memory(Path(tmp) / "mem", size)
            memory = Memory.open(Path(tmp) / "mem")
            memory.retrieve_episodes(cases[0], 5)  # warm the embedder
            times = []
            for case in cases:
                started = time.perf_counter()
                handoff = memory.episodes.new_handoff()  # as in a judgment: the case is embedded once
                memory.select_principles(case, 2000, handoff=handoff)
                memory.retrieve_episodes(case, 5, handoff=handoff)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            figures[f"retrieval_p50_ms_{size}"] = round(statistics.median(times), 2)
            figures[f"retrieval_p95_ms_{size}"] = round(times[int(0.95 * (len(times) - 1))], 2)
            if size == max(sizes):
                loads = []
                for _ in range(3):
                    started = time.perf_counter()
                    Memory.open(Path(tmp) / "mem")
                    loads.append(time.perf_counter() - started)
                figures[f"load_s_{size}"] = round(statistics.median(loads), 3)
                code = (
                    "import resource, sys; from memalign_graph.memory import Memory; "
                    "m = Memory.open(sys.argv[1]); m.retrieve_episodes({'inputs': 'q', 'outputs': 'a'}, 5); "
                    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
                )
                out = subprocess.run(
                    [sys.executable, "-c", code, str(Path(tmp) / "mem")], capture_output=True, text=True, check=True
                )
                figures[f"rss_mib_{size}"] = round(int(out.stdout.strip().splitlines()[-1]) / 1024, 1)
    return figures


def bench_judge_batch(
    n: int = 100, *, latency_s: float = 0.2, concurrency: int = 10, runs: int = 3
) -> dict[str, float]:
    """``n`` judgments through the judge graph (``abatch``, ``max_concurrency``) with a stub of fixed latency.

    Returns:
        ``judge_batch_s_N`` (median wall seconds), ``judge_batch_cpu_s_N`` (median CPU seconds of this
        process per batch, all threads: with wall, how busy the machine was) and
        ``judge_batch_ideal_s_N`` (``ceil(n / concurrency) * latency``, the floor set by the model alone).
    """
    import asyncio
    import math

    from memalign_graph.context import Context
    from memalign_graph.judge_graph import build_judge_graph

    graph = build_judge_graph().compile()
    cases = synthetic_cases(n, seed=7)
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_memory(Path(tmp) / "mem", 1000)
        context = Context(store=str(Path(tmp) / "mem"), model=StubChatModel(latency_s=latency_s), precedent="off")
        graph.invoke(cases[0], context=context)  # warm up: memory load, embedder
        for _ in range(runs):
            cpu, started = time.process_time(), time.perf_counter()
            asyncio.run(graph.abatch(cases, {"max_concurrency": concurrency}, context=context))
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
    return {
        f"judge_batch_s_{n}": round(statistics.median(walls), 3),
        f"judge_batch_cpu_s_{n}": round(statistics.median(cpus), 3),
        f"judge_batch_ideal_s_{n}": round(math.ceil(n / concurrency) * latency_s, 3),
    }


def bench_judge_overhead(
    sizes: Sequence[int] = (0, 1000), *, principles: int = 50, judgments: int = 50, runs: int = 3
) -> dict[str, float]:
    """Time the judge graph adds to the model's: ``graph.invoke`` with a stub model that answers at once.

    Size 0 is an empty memory; other sizes hold that many episodes and ``principles``
    principles. The case is embedded with :class:`HashEmbeddings`, so the figure is this
    library's work (validation, retrieval, prompt, parsing, LangGraph), not the embedder's.

    Returns:
        ``judge_overhead_ms_p50_N`` per size: the median over ``runs`` of each run's median
        over ``judgments`` (after one warm-up judgment).
    """
    from memalign_graph.context import Context
    from memalign_graph.judge_graph import build_judge_graph
    from memalign_graph.memory import Memory

    graph = build_judge_graph().compile()
    cases = synthetic_cases(judgments, seed=3)
    figures: dict[str, float] = {}
    for size in sizes:
        embeddings = HashEmbeddings()
        with tempfile.TemporaryDirectory() as tmp:
            location = Path(tmp) / "mem"
            if size:
                synthetic_memory(location, size, principles=principles, embeddings=embeddings)
            else:
                Memory.create(location, SPEC, embeddings=embeddings)
            context = Context(store=str(location), model=StubChatModel(), embeddings=embeddings)
            graph.invoke(cases[0], context=context)
            medians = []
            for _ in range(runs):
                times = []
                for case in cases:
                    started = time.perf_counter()
                    graph.invoke(case, context=context)
                    times.append((time.perf_counter() - started) * 1000)
                medians.append(statistics.median(times))
        figures[f"judge_overhead_ms_p50_{size}"] = round(statistics.median(medians), 2)
    return figures


def bench_merge(n: int = 4000, *, runs: int = 3) -> dict[str, float]:
    """Consolidation and merge of ``n`` new principles into ``n`` existing ones (the writer-lock part of alignment).

    One new principle in ten repeats an existing one word for word. Vectors come from
    :class:`HashEmbeddings` and are cached before the clock starts: the figure is the
    search for similar pairs (:func:`~memalign_graph.semantic.related_pairs`) plus the merge
    (:func:`~memalign_graph.semantic.merge_principles`), not embedding.

    Returns:
        ``merge_s_N`` (median seconds over ``runs``).
    """
    from memalign_graph.semantic import PrincipleVectors, merge_principles, new_principle, related_pairs

    existing = [new_principle(t, [f"old-{i}"], "bench") for i, t in enumerate(principle_texts(n, 1))]
    texts = principle_texts(n, 2)
    for i in range(0, n, 10):
        texts[i] = existing[i]["text"]
    candidates = [new_principle(t, [f"new-{i}"], "bench") for i, t in enumerate(texts)]
    vectors = PrincipleVectors(HashEmbeddings())
    vectors([p["text"] for p in existing + candidates])
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        related_pairs(existing, candidates, vectors, threshold=0.85)
        merge_principles(existing, candidates)
        walls.append(time.perf_counter() - started)
    return {f"merge_s_{n}": round(statistics.median(walls), 3)}


_FIRST_JUDGMENT = """
import json, resource, sys, time
started = time.perf_counter()
from memalign_graph.context import Context
from memalign_graph.judge_graph import build_judge_graph
from memalign_graph.testing import StubChatModel
imported = time.perf_counter()
graph = build_judge_graph().compile()
case = {"inputs": "Report the sum of amount of orders per week.", "outputs": "SELECT week, sum(*) FROM raw.orders"}
budget = json.loads(sys.argv[2])
context = Context(store=sys.argv[1], model=StubChatModel(), precedent="off")
if budget is not None:
    context.principles_token_budget = budget
out = graph.invoke(case, context=context)
done = time.perf_counter()
print(json.dumps({"import_s": imported - started, "judge_s": done - imported, "total_s": done - started,
                  "omitted": len(out["judgment"]["principles_omitted"]),
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_first_judgment(
    n: int = 20_000, *, episodes: int = 1000, runs: int = 3, token_budget: int | None = None
) -> dict[str, float]:
    """The first judgment of a new process on a memory of ``n`` principles (default embedder, stub model).

    ``n`` principles do not fit the default principle budget, so the judgment ranks them by
    similarity to the case: with their vectors stored with the memory nothing but the case
    is embedded. Each run is a fresh ``python`` process. ``token_budget``: the principle budget
    (``None``: :class:`~memalign_graph.context.Context`'s default).

    Raises:
        RuntimeError: if every principle fit the budget (nothing was ranked, so nothing was measured).

    Returns:
        ``first_judgment_s_N_principles`` (seconds from process start, imports included, to the
        judgment; median over ``runs``) and ``first_judgment_import_s_N_principles`` (the imports' part).
    """
    walls, imports = [], []
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_memory(Path(tmp) / "mem", episodes, principles=n)
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, "-c", _FIRST_JUDGMENT, str(Path(tmp) / "mem"), json.dumps(token_budget)],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if not result["omitted"]:
                raise RuntimeError(f"bench_first_judgment: all {n} principles fit the budget; nothing was ranked")
            walls.append(result["total_s"])
            imports.append(result["import_s"])
    return {
        f"first_judgment_s_{n}_principles": round(statistics.median(walls), 3),
        f"first_judgment_import_s_{n}_principles": round(statistics.median(imports), 3),
    }


def bulk_embeddings() -> str:
    """The embeddings ``align_wall_s_100000`` uses: the offline default's spec string (``"minilm-int8"``)."""
    from memalign_graph.embeddings import DEFAULT_EMBEDDINGS

    return DEFAULT_EMBEDDINGS


_ALIGN_AT_SCALE = """
import json, resource, sys
from memalign_graph.bench import bench_align
figures = bench_align(int(sys.argv[1]), latency_s=0.0, concurrency=8, embeddings=sys.argv[2])
figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(figures))
"""


def bench_align_at_scale(n: int = 100_000, *, embeddings: str | None = None) -> dict[str, float]:
    """Alignment of ``n`` records in a fresh process (stub model without latency), once.

    ``embeddings``: a name for :func:`~memalign_graph.embeddings.resolve_embeddings` (``None``:
    :func:`bulk_embeddings`).

    Returns:
        ``align_wall_s_N`` and ``align_peak_rss_mib_N`` (the process's peak resident memory),
        plus that run's phases (``align_<phase>_N``).
    """
    out = subprocess.run(
        [sys.executable, "-c", _ALIGN_AT_SCALE, str(n), embeddings or bulk_embeddings()],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    peak = round(figures.pop("peak_rss_mib"), 1)
    kept = ("align_wall_s_", "align_cpu_s_", "align_embed_s_", "align_embed_texts_per_s_", "align_distill_s_")
    keep = {k: v for k, v in figures.items() if k.startswith(kept)}
    return {**keep, f"align_peak_rss_mib_{n}": peak}


def bench_postgres(url: str, sizes: Sequence[int] = (10_000, 100_000), *, align_n: int = 100) -> dict[str, float]:
    """The PostgreSQL backend's costs, on the server at ``url`` (a fresh judge per size, dropped after).

    Returns:
        ``pg_write_s_N`` (one commit of ``N`` episodes with vectors), ``pg_load_s_N`` (load
        version, checkpoint, episodes and vectors into the in-process index; median of 3),
        ``pg_align_persist_s_N`` (the commit of an alignment of ``align_n`` records into that
        memory, stub LLM without latency), ``pg_version_check_ms`` (the round trip each judgment
        pays to notice a new version; median of 200).
    """
    import uuid

    from memalign_graph.backends.names import split_url
    from memalign_graph.memory import Memory

    base, _ = split_url(url)
    sep = "&" if "?" in base else "?"
    figures: dict[str, float] = {}
    for size in sizes:
        location = f"{base}{sep}judge=bench-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        memory = synthetic_memory(location, size)
        figures[f"pg_write_s_{size}"] = round(time.perf_counter() - started, 3)
        try:
            loads = []
            for _ in range(3):
                started = time.perf_counter()
                Memory.open(location)
                loads.append(time.perf_counter() - started)
            figures[f"pg_load_s_{size}"] = round(statistics.median(loads), 3)
            memory.refresh()
            extra = synthetic_records(size + align_n)[size:]
            report = memory.align(extra, model=StubChatModel())
            figures[f"pg_align_persist_s_{size}"] = report.timings.get("persist_s", 0.0)
            if size == max(sizes):
                checks = []
                for _ in range(200):
                    started = time.perf_counter()
                    memory.backend.current_version()
                    checks.append((time.perf_counter() - started) * 1000)
                figures["pg_version_check_ms"] = round(statistics.median(checks), 3)
        finally:
            memory.backend.drop()  # type: ignore[attr-defined]
            memory.backend.close()  # type: ignore[attr-defined]
    return figures


def run_all(
    quick: bool = False, store: str | None = None, *, progress: Callable[[str], None] | None = None
) -> dict[str, float]:
    """Every figure of ``memalign bench``.

    Args:
        quick: smaller sizes and one run each (a minute or two; the keys then name the smaller
            sizes, which have no target).
        store: also measure PostgreSQL on this server (``postgresql://…``).
        progress: called with the name of each benchmark as it starts.
    """
    say = progress or (lambda name: None)
    runs = 1 if quick else 3
    figures: dict[str, float] = {}
    if store:
        say("postgres")
        figures.update(bench_postgres(store, (1000,) if quick else (10_000, 100_000)))
    say("judge overhead")
    figures.update(bench_judge_overhead((0, 200 if quick else 1000), judgments=10 if quick else 50, runs=runs))
    say("align with 100 ms per embeddings call")
    n = 200 if quick else 1000
    aligned = bench_align(n, latency_s=0.3, runs=runs, embeddings=HashEmbeddings(latency_s=0.1))
    figures[f"align_wall_s_{n}_embed100ms"] = aligned[f"align_wall_s_{n}"]
    say("merge")
    figures.update(bench_merge(400 if quick else 4000, runs=runs))
    say("first judgment of a new process")
    figures.update(bench_first_judgment(2000 if quick else 20_000, episodes=100 if quick else 1000, runs=runs))
    say("retrieval")
    figures.update(bench_retrieval((100, 1000) if quick else (100, 10_000, 100_000), queries=20 if quick else 50))
    say("judge batch")
    figures.update(bench_judge_batch(100, runs=runs))
    say("align (default embedder)")
    # align_llm_calls_N comes from here: with real embeddings, consolidation calls count too.
    figures.update(bench_align(200 if quick else 1000, latency_s=1.0))
    say("align at scale")
    figures.update(bench_align_at_scale(500 if quick else 100_000))
    say("calibration head")
    figures.update(bench_calibration_head(40 if quick else 100, judgments=20 if quick else 50, runs=runs))
    say("open with a calibration head")
    figures.update(bench_open_calibrated(1000 if quick else 100_000, runs=runs))
    return figures


def report(figures: dict[str, float], *, quick: bool, runs: int) -> dict[str, Any]:
    """What ``memalign bench --out`` writes: the figures, each checked against its target, and the conditions.

    Returns:
        ``{"figures": {key: value}, "checks": [see checks()], "passed": bool | None (``None`` when no
        figure has a target), "quick", "runs" (runs per median), "cpus", "load_average" (1, 5, 15 min at
        the end: how busy the machine was), "bulk_embeddings" (see :func:`bulk_embeddings`), "python"}``.
    """
    import os
    import platform

    rows = checks(figures)
    judged = [r["ok"] for r in rows if r["ok"] is not None]
    return {
        "figures": figures,
        "checks": rows,
        "passed": all(judged) if judged else None,
        "quick": quick,
        "runs": runs,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "bulk_embeddings": bulk_embeddings(),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m memalign_graph.bench``: the alignment-at-scale figures (see ``memalign bench``)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m memalign_graph.bench", description="Alignment at scale with a sleeping stub LLM"
    )
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=1.0, help="stub LLM seconds per call")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--embeddings", default=None, help="'embedded' (default: 'minilm-int8'), 'e5', 'minilm', or provider:model"
    )
    args = parser.parse_args(argv)
    figures = bench_align(args.records, latency_s=args.latency, runs=args.runs, embeddings=args.embeddings)
    print(json.dumps(figures, indent=1))


__all__ = [
    "TARGETS",
    "HashEmbeddings",
    "bench_align",
    "bench_align_at_scale",
    "bench_calibrated_judgment",
    "bench_calibration_head",
    "bench_open_calibrated",
    "bulk_embeddings",
    "bench_first_judgment",
    "bench_judge_batch",
    "bench_judge_overhead",
    "bench_merge",
    "bench_postgres",
    "bench_retrieval",
    "checks",
    "report",
    "run_all",
    "synthetic_records",
]
