"""The alignment-at-scale benchmark reports what it claims (its timings are figures, not assertions)."""

import importlib.util
import json
import math

import pytest

from memalign_graph.bench import bench_align, synthetic_records

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None, reason="embedded embedder not installed"
)


def test_bench_align_counts_calls_and_phases():
    figures = bench_align(60, latency_s=0.0, batch_size=25)
    # One distillation call per batch, one verdict-directive check (20 new principles per call; a batch of 25
    # gives 5 at most), and at most one consolidation call: every similar pair goes to the LLM.
    assert math.ceil(60 / 25) + 1 <= figures["align_llm_calls_60"] <= math.ceil(60 / 25) + 2
    assert figures["align_tokens_sent_60"] > 0
    assert figures["align_non_llm_s_60"] >= figures["align_embed_s_60"] > 0
    assert len({r["id"] for r in synthetic_records(60)}) == 60


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None, reason="make minilm not run")
def test_bench_align_with_minilm():
    figures = bench_align(30, latency_s=0.0, embeddings="minilm")
    assert figures["align_llm_calls_30"] == 2 and figures["align_embed_s_30"] > 0  # distillation, directive check


def test_bench_retrieval_and_batch_report_named_figures():
    from memalign_graph.bench import bench_judge_batch, bench_retrieval

    figures = bench_retrieval((50,), queries=3)
    assert set(figures) == {"retrieval_p50_ms_50", "retrieval_p95_ms_50", "load_s_50", "rss_mib_50"}
    assert figures["retrieval_p50_ms_50"] > 0 and figures["rss_mib_50"] > 50
    batch = bench_judge_batch(10, latency_s=0.01, concurrency=5, runs=1)
    assert batch["judge_batch_ideal_s_10"] == 0.02 and batch["judge_batch_s_10"] >= 0.02


def test_new_rows_are_named_by_size_and_checked_against_targets():
    from memalign_graph.bench import (
        TARGETS,
        bench_align_at_scale,
        bench_first_judgment,
        bench_judge_overhead,
        bench_merge,
        checks,
        report,
    )

    figures = {}
    figures.update(bench_judge_overhead((0, 20), principles=3, judgments=2, runs=1))
    figures.update(bench_merge(50, runs=1))
    figures.update(bench_first_judgment(30, episodes=5, runs=1, token_budget=20))
    figures.update(bench_align_at_scale(12))
    assert set(figures) >= {
        "judge_overhead_ms_p50_0",
        "judge_overhead_ms_p50_20",
        "merge_s_50",
        "first_judgment_s_30_principles",
        "first_judgment_import_s_30_principles",
        "align_wall_s_12",
        "align_peak_rss_mib_12",
    }
    assert all(isinstance(v, float | int) and v > 0 for v in figures.values())
    assert figures["first_judgment_s_30_principles"] > figures["first_judgment_import_s_30_principles"]
    # Quick sizes have no target; full-size keys do, and are judged against them.
    rows = checks({**figures, "merge_s_4000": 1.5, "judge_batch_s_100": 4.0})
    by_key = {r["key"]: r for r in rows}
    assert by_key["merge_s_50"]["target"] is None and by_key["merge_s_50"]["ok"] is None
    assert by_key["merge_s_4000"] == {
        "key": "merge_s_4000",
        "value": 1.5,
        "target": TARGETS["merge_s_4000"],
        "ok": True,
    }
    assert by_key["judge_batch_s_100"]["ok"] is False
    out = report({"merge_s_50": figures["merge_s_50"], "merge_s_4000": 1.5}, quick=True, runs=1)
    assert out["passed"] is True and out["runs"] == 1 and len(out["load_average"]) == 3
    assert json.loads(json.dumps(out)) == out  # plain JSON


def test_first_judgment_refuses_a_budget_that_ranks_nothing():
    from memalign_graph.bench import bench_first_judgment

    with pytest.raises(RuntimeError, match="nothing was ranked"):
        bench_first_judgment(3, episodes=2, runs=1)


def test_cli_prints_targets_and_writes_the_report(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from memalign_graph import bench
    from memalign_graph.cli import app

    monkeypatch.setattr(
        bench, "run_all", lambda **kwargs: {"merge_s_4000": 2.5, "retrieval_p50_ms_10000": 20.0, "x": 1}
    )
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "≤ 2" in lines["merge_s_4000"] and "FAIL" in lines["merge_s_4000"]
    assert "≤ 25" in lines["retrieval_p50_ms_10000"] and "pass" in lines["retrieval_p50_ms_10000"]
    written = json.loads(out.read_text())
    assert written["passed"] is False and written["runs"] == 3
    assert [r["ok"] for r in written["checks"]] == [False, True, None]


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="[minilm-int8] extra not installed")
def test_minilm_int8_embeds_unit_vectors_that_rank_the_same_case_first():
    import numpy as np

    from memalign_graph.embeddings import resolve_embeddings
    from memalign_graph.spec import case_text

    embeddings = resolve_embeddings("minilm-int8")
    cases = [
        case_text({"inputs": "Which magazine started first?", "outputs": "Arthur's Magazine"}),
        case_text({"inputs": "Where is the Oberoi Group based?", "outputs": "Delhi"}),
        case_text({"inputs": "Convert the order total to EUR.", "outputs": "SELECT sum(amount) FROM raw.orders"}),
    ]
    docs = np.asarray(embeddings.embed_documents(cases))
    assert docs.shape == (3, 384) and np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-4)
    query = np.asarray(
        embeddings.embed_query(case_text({"inputs": "Which magazine was started first?", "outputs": "First for Women"}))
    )
    assert int(np.argmax(docs @ query)) == 0
    assert np.allclose(embeddings.embed_documents(cases[:1])[0], docs[0], atol=1e-4)  # batching changes nothing


def test_timed_rows_carry_the_process_cpu_beside_wall():
    """CPU time beside wall shows how busy the machine was; the embedding rate names what the embedder did."""
    from memalign_graph.bench import HashEmbeddings, bench_align, bench_judge_batch

    # 200 records: the embedding phase of 12 can take under the timings' 1 ms resolution (then the rate reads 0)
    aligned = bench_align(200, latency_s=0.0, embeddings=HashEmbeddings())
    assert 0 < aligned["align_cpu_s_200"] and aligned["align_embed_texts_per_s_200"] > 0
    batch = bench_judge_batch(10, latency_s=0.01, concurrency=5, runs=1)
    assert 0 < batch["judge_batch_cpu_s_10"]


def test_calibration_rows_report_named_figures():
    from memalign_graph.bench import TARGETS, bench_calibration_head, bench_open_calibrated

    head = bench_calibration_head(20, judgments=3, runs=1)
    rows = {"calibration_head_ms_p50_statistics", "calibration_head_ms_p50_outputs", "calibration_fit_s_20"}
    assert set(head) == rows
    assert 0 < head["calibration_head_ms_p50_statistics"] < head["calibration_head_ms_p50_outputs"]
    assert "calibration_head_ms_p50_outputs" in TARGETS
    opened = bench_open_calibrated(300, runs=1)  # raises if the reopened memory did not read the stored head
    assert set(opened) == {"open_s_300_calibrated", "calibration_read_ms_300", "calibration_fit_s_300"}
