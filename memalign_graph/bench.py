"""Performance figures, measured on this machine with the offline embedder and a stub chat model.

Every figure is a median over repeated runs (``statistics.median``) and is
named with its unit and size, e.g. ``align_wall_s_1000``. The stub chat model
(:class:`memalign_graph.testing.StubChatModel`) sleeps a fixed latency per
call, so LLM time is known and the rest is this library's own cost.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memalign_graph.spec import JudgeSpec
from memalign_graph.testing import StubChatModel

SPEC = JudgeSpec.categorical("bench", "Does the SQL follow the house rules?", ["pass", "fail"])
_TABLES = ["orders", "payments", "customers", "refunds", "sessions", "invoices", "shipments", "tickets"]
_RULES = [
    "Use the certified view, never raw tables.",
    "Filter out cancelled orders.",
    "Convert amounts to EUR before summing.",
    "Name every column; never SELECT star.",
    "Open with reassurance and close with an offer of support.",
]


def synthetic_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` feedback records shaped like real ones (a request, a query, a verdict, a sentence of feedback)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        table = rng.choice(_TABLES)
        metric = rng.choice(["count", "sum of amount", "average amount", "distinct customers"])
        period = rng.choice(["day", "week", "month", "quarter"])
        records.append(
            {
                "id": f"bench-{i}",
                "inputs": f"Report the {metric} of {table} per {period} for region {rng.randint(1, 40)}.",
                "outputs": f"SELECT {period}, {metric.split()[0]}(*) FROM raw.{table} "
                f"WHERE region = {rng.randint(1, 40)} GROUP BY {period}",
                "value": rng.choice(["pass", "fail"]),
                "feedback": f"{rng.choice(_RULES)} Case {i}: the query reads raw.{table}.",
            }
        )
    return records


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
        ``align_wall_s_N`` (wall time), ``align_llm_calls_N``, ``align_tokens_sent_N``
        (prompt tokens), ``align_non_llm_s_N`` (embedding, indexing, merging and
        persistence: every phase but the LLM's), and each phase as
        ``align_<phase>_N``; medians over ``runs``.
    """
    from memalign_graph.memory import Memory

    data = records or synthetic_records(n)
    results: list[dict[str, float]] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            memory = Memory.create(Path(tmp) / "mem", SPEC, embeddings=embeddings)
            model = StubChatModel(latency_s=latency_s)
            started = time.perf_counter()
            report = memory.align(data[:n], model=model, batch_size=batch_size, concurrency=concurrency)
            wall = time.perf_counter() - started
            phases = {k: v for k, v in report.timings.items() if k != "distill_s"}
            results.append(
                {
                    f"align_wall_s_{n}": wall,
                    f"align_llm_calls_{n}": report.llm_calls,
                    f"align_tokens_sent_{n}": report.usage.get("input_tokens", 0),
                    f"align_non_llm_s_{n}": sum(phases.values()),
                    **{f"align_{k}_{n}": v for k, v in report.timings.items()},
                }
            )
    return {key: round(statistics.median(r[key] for r in results), 3) for key in results[0]}


def _synthetic_memory(path: str | Path, n: int, seed: int = 0) -> Any:
    """A memory of ``n`` episodes with random unit vectors (so 100 000 take seconds, not an hour of embedding)."""
    import numpy as np

    from memalign_graph.backends.base import PrinciplesCheckpoint
    from memalign_graph.episodic import episode_from_record
    from memalign_graph.memory import Memory
    from memalign_graph.semantic import new_principle, now_iso

    memory = Memory.create(path, SPEC)
    dim = memory.backend.load(memory.embeddings).embeddings_info["dim"]
    rng = np.random.default_rng(seed)
    records = synthetic_records(n, seed)
    for start in range(0, n, 20_000):
        chunk = records[start : start + 20_000]
        vectors = rng.standard_normal((len(chunk), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        memory.episodes.upsert_with_vectors([episode_from_record(r) for r in chunk], vectors.tolist())
    principles = [new_principle(rule, [f"bench-{i}"], "bench") for i, rule in enumerate(_RULES)]
    ledger = {r["id"]: {"hash": episode_from_record(r)["record_hash"], "distilled": True} for r in records}
    checkpoint = PrinciplesCheckpoint(
        version=1,
        created_at=now_iso(),
        author="bench",
        reason=f"{n} synthetic episodes",
        principles=principles,
        records=ledger,  # type: ignore[typeddict-item]
    )
    memory.backend.commit(checkpoint, memory.episodes.vectorstore, embeddings_changed=True)
    return memory


def _cases(count: int, seed: int = 1) -> list[dict[str, Any]]:
    return [{"inputs": r["inputs"], "outputs": r["outputs"]} for r in synthetic_records(count, seed)]


def bench_retrieval(sizes: Sequence[int] = (100, 10_000, 100_000), *, queries: int = 50) -> dict[str, float]:
    """Working-memory assembly per judgment: embed the case (for real), vector search (k=5), load principles.

    Also the load time of a memory from disk (median of 3) and the resident memory of a
    fresh process that loads it, at the largest size.

    Returns:
        ``retrieval_p50_ms_N``, ``retrieval_p95_ms_N`` per size; ``load_s_N``, ``rss_mib_N`` at the largest.
    """
    import subprocess
    import sys

    from memalign_graph.memory import Memory

    figures: dict[str, float] = {}
    cases = _cases(queries)
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            _synthetic_memory(Path(tmp) / "mem", size)
            memory = Memory.open(Path(tmp) / "mem")
            memory.retrieve_episodes(cases[0], 5)  # warm the embedder
            times = []
            for case in cases:
                started = time.perf_counter()
                memory.select_principles(case, 2000)
                memory.retrieve_episodes(case, 5)
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
        ``judge_batch_s_N`` (median wall seconds) and ``judge_batch_ideal_s_N``
        (``ceil(n / concurrency) * latency``, the floor set by the model alone).
    """
    import asyncio
    import math

    from memalign_graph.context import Context
    from memalign_graph.graph import build_judge_graph

    graph = build_judge_graph().compile()
    cases = _cases(n, seed=7)
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        _synthetic_memory(Path(tmp) / "mem", 1000)
        context = Context(memory_dir=str(Path(tmp) / "mem"), model=StubChatModel(latency_s=latency_s), precedent="off")
        graph.invoke(cases[0], context=context)  # warm up: memory load, embedder
        for _ in range(runs):
            started = time.perf_counter()
            asyncio.run(graph.abatch(cases, {"max_concurrency": concurrency}, context=context))
            walls.append(time.perf_counter() - started)
    return {
        f"judge_batch_s_{n}": round(statistics.median(walls), 3),
        f"judge_batch_ideal_s_{n}": round(math.ceil(n / concurrency) * latency_s, 3),
    }


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

    from memalign_graph.backends.postgres import split_url
    from memalign_graph.memory import Memory

    base, _ = split_url(url)
    sep = "&" if "?" in base else "?"
    figures: dict[str, float] = {}
    for size in sizes:
        location = f"{base}{sep}judge=bench-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        memory = _synthetic_memory(location, size)
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


def run_all(quick: bool = False, store: str | None = None) -> dict[str, float]:
    """Every figure of ``memalign bench`` (``quick``: smaller sizes, one run; ``store``: also PostgreSQL's)."""
    figures: dict[str, float] = {}
    if store:
        figures.update(bench_postgres(store, (1000,) if quick else (10_000, 100_000)))
    figures.update(bench_retrieval((100, 1000) if quick else (100, 10_000, 100_000), queries=20 if quick else 50))
    figures.update(bench_judge_batch(100, runs=1 if quick else 3))
    figures.update(bench_align(200 if quick else 1000, latency_s=1.0))
    return figures


def main(argv: list[str] | None = None) -> None:
    """``python -m memalign_graph.bench``: the alignment-at-scale figures (see ``memalign bench``)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Alignment at scale with a sleeping stub LLM")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=1.0, help="stub LLM seconds per call")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--embeddings", default=None, help="'embedded' (default), 'minilm', or provider:model")
    args = parser.parse_args(argv)
    figures = bench_align(args.records, latency_s=args.latency, runs=args.runs, embeddings=args.embeddings)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

__all__ = ["bench_align", "bench_postgres", "synthetic_records"]
