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

__all__ = ["bench_align", "synthetic_records"]
