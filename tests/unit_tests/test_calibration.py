"""The calibration head: deterministic, forgets without trace, gated by evidence, and safe to load."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from memalign_graph.calibration import (
    CalibrationHead,
    CalibrationHeadError,
    build_features,
    fit_head,
    select_head,
    text_statistics,
    training_sample,
)

LABELS = ["pass", "fail"]


def episodes(n: int, *, signal: float = 3.0, share_pass: float = 0.5, seed: int = 0, dims: int = 16):
    """``n`` episodes: ids, features (first dimension carries the label with strength ``signal``), labels."""
    rng = np.random.default_rng(seed)
    labels = np.where(np.arange(n) < round(n * share_pass), "pass", "fail")
    rng.shuffle(labels)
    vectors = rng.normal(size=(n, dims))
    vectors[:, 0] += np.where(labels == "pass", signal, -signal)
    return [f"rec-{seed}-{i:04d}" for i in range(n)], vectors, labels


def as_json(head: CalibrationHead) -> str:
    return json.dumps(head.to_dict(), sort_keys=True)


def test_same_episodes_in_any_order_give_an_identical_head():
    ids, x, y = episodes(60)
    first = fit_head(x, y, LABELS, ids=ids, seed=3)
    order = np.random.default_rng(1).permutation(len(ids))
    second = fit_head(x[order], y[order], LABELS, ids=[ids[i] for i in order], seed=3)
    assert as_json(first) == as_json(second)
    assert first.cv_agreement is not None and first.cv_agreement > 0.9


@pytest.mark.parametrize("limit", [1000, 20])
def test_refit_after_forget_equals_a_head_never_given_the_record(limit):
    ids, x, y = episodes(60)
    before = fit_head(x, y, LABELS, ids=ids, limit=limit)
    sampled = training_sample(ids, list(y), limit)
    forgotten = sampled[len(sampled) // 2]  # a record the head was fitted on
    rest = [i for i in range(len(ids)) if i != forgotten]
    refit = fit_head(x[rest], y[rest], LABELS, ids=[ids[i] for i in rest], limit=limit)
    shuffled = list(reversed(rest))
    never = fit_head(x[shuffled], y[shuffled], LABELS, ids=[ids[i] for i in shuffled], limit=limit)
    assert as_json(refit) == as_json(never)
    assert as_json(refit) != as_json(before)
    assert refit.episodes == (before.episodes - 1 if limit >= len(ids) else before.episodes)


def test_forgetting_a_record_outside_the_bounded_sample_leaves_the_head_unchanged():
    ids, x, y = episodes(80)
    sampled = set(training_sample(ids, list(y), 20))
    outside = next(i for i in range(len(ids)) if i not in sampled)
    rest = [i for i in range(len(ids)) if i != outside]
    before = fit_head(x, y, LABELS, ids=ids, limit=20)
    after = fit_head(x[rest], y[rest], LABELS, ids=[ids[i] for i in rest], limit=20)
    assert before.episodes == 20
    assert as_json(before) == as_json(after)


def test_training_sample_is_stratified_bounded_and_order_free():
    ids, _, y = episodes(300, share_pass=0.9)
    chosen = training_sample(ids, list(y), 50, seed=7)
    assert len(chosen) == 50
    assert sum(y[i] == "pass" for i in chosen) == 45
    reordered = list(reversed(range(300)))
    again = training_sample([ids[i] for i in reordered], [y[i] for i in reordered], 50, seed=7)
    assert sorted(ids[reordered[i]] for i in again) == sorted(ids[i] for i in chosen)
    assert training_sample(ids, list(y), 50, seed=8) != chosen


def test_gate_stays_shut_for_a_file_that_is_90_percent_one_label():
    ids, x, y = episodes(100, signal=0.0, share_pass=0.9)
    model_values = ["fail"] * 100  # the model agrees on 10 %: beating it alone would open the gate
    head = fit_head(x, y, LABELS, ids=ids, model_values=model_values)
    assert head.majority_agreement == pytest.approx(0.9)
    assert head.model_agreement == pytest.approx(0.1)
    assert head.cv_agreement is not None and head.cv_agreement < 0.9 + head.margin
    assert not head.open
    decided = head.decide(x[0], "fail")
    assert decided["value"] == "fail" and decided["calibration"]["used"] is False
    assert head.decide(None, "fail")["calibration"]["probabilities"] is None  # a shut gate needs no embedding


@pytest.mark.parametrize(("n", "share_pass"), [(4, 0.5), (12, 1.0), (40, 0.95)])
def test_gate_stays_shut_with_too_few_episodes_per_label(n, share_pass):
    ids, x, y = episodes(n, signal=6.0, share_pass=share_pass)
    head = fit_head(x, y, LABELS, ids=ids, model_values=["pass"] * n)
    assert not head.open
    assert head.decide(x[0], "fail")["value"] == "fail"


def test_gate_opens_when_the_head_clearly_beats_the_model_and_says_so():
    ids, x, y = episodes(60, signal=4.0)
    model_values = list(np.where(np.arange(60) % 2 == 0, "pass", "fail"))
    head = fit_head(x, y, LABELS, ids=ids, model_values=model_values)
    assert head.open
    case = x[int(np.argmax(y == "fail"))]
    decided = head.decide(case, "pass")
    assert decided["value"] == "fail"
    assert decided["model_value"] == "pass"
    calibration = decided["calibration"]
    assert calibration["used"] is True
    assert calibration["probabilities"]["fail"] > 0.5
    assert math.isclose(sum(calibration["probabilities"].values()), 1.0, abs_tol=1e-3)
    assert calibration["episodes"] == 60 and calibration["cv_agreement"] > calibration["model_agreement"] + 0.05
    with pytest.raises(CalibrationHeadError, match="no features were given"):
        head.decide(None, "pass")


def test_mode_off_keeps_the_model_and_on_uses_a_shut_head():
    ids, x, y = episodes(4, signal=6.0)
    head = fit_head(x, y, LABELS, ids=ids)
    assert not head.open
    case = x[int(np.argmax(y == "pass"))]
    assert head.decide(case, "fail", mode="on")["value"] == "pass"
    assert head.decide(case, "fail", mode="off")["value"] == "fail"
    with pytest.raises(CalibrationHeadError, match="calibration mode 'always'"):
        head.decide(case, "fail", mode="always")  # type: ignore[arg-type]


def test_predictions_equal_scikit_learns_pipeline_and_survive_a_json_round_trip():
    from memalign_graph.calibration import _pipeline

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 12))
    for labels in (["a", "b"], ["a", "b", "c"]):
        y = np.asarray(labels, dtype=object)[np.argmax(x[:, : len(labels)], axis=1)]
        head = fit_head(x, y, labels)
        reference = _pipeline(0).fit(x, y).predict_proba(x)
        assert np.allclose(head.predict_proba(x), reference, atol=1e-9)
        loaded = CalibrationHead.from_dict(json.loads(json.dumps(head.to_dict())), labels)
        assert np.array_equal(loaded.predict_proba(x), head.predict_proba(x))
        assert loaded.open == head.open


def test_numeric_head_is_ordinal_over_the_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 8))
    y = np.clip(np.round(1.5 * x[:, 0] + 3), 1, 5).astype(int)
    head = fit_head(x, y, [1, 2, 3, 4, 5], kind="numeric")
    proba = head.predict_proba(x)
    assert np.allclose(proba.sum(axis=1), 1.0) and (proba >= 0).all()
    predicted = head.predict_values(x)
    assert set(predicted) <= {1, 2, 3, 4, 5} and isinstance(predicted[0], int)
    assert np.mean(np.abs(predicted.astype(int) - y) <= 1) > 0.9
    assert head.decide(x[0], 3)["value"] in {1, 2, 3, 4, 5}


def test_features_must_line_up_and_be_finite():
    vectors = np.ones((3, 4))
    assert build_features([vectors], np.full((3, 2), 0.5)).shape == (3, 6)
    with pytest.raises(CalibrationHeadError, match="part 1 has 2 rows"):
        build_features([vectors, np.ones((2, 4))])
    with pytest.raises(CalibrationHeadError, match="not finite"):
        build_features([vectors], np.full((3, 2), np.nan))
    with pytest.raises(CalibrationHeadError, match="not values of the judge"):
        fit_head(vectors, ["pass", "fail", "maybe"], LABELS)
    head = fit_head(*episodes(20)[1:], LABELS)
    with pytest.raises(CalibrationHeadError, match=r"this head takes \(cases, 16\)"):
        head.predict_proba(np.ones((1, 15)))


def _stored() -> dict:
    ids, x, y = episodes(40)
    return json.loads(json.dumps(fit_head(x, y, LABELS, ids=ids, model_values=["pass"] * 40).to_dict()))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(coef=[row[:-1] for row in d["coef"]]), "coef has shape"),
        (lambda d: d.update(intercept=[0.1, 0.2]), "intercept has shape"),
        (lambda d: d["mean"].__setitem__(0, float("nan")), "mean holds a value that is not finite"),
        (lambda d: d["coef"][0].__setitem__(3, float("inf")), "coef holds a value that is not finite"),
        (lambda d: d["scale"].__setitem__(2, 0.0), "scale holds a value that is not positive"),
        (lambda d: d.update(labels=["yes", "no"]), "fitted for labels"),
        (lambda d: d.update(classes=["pass", "maybe"]), "classes"),
        (lambda d: d.update(format="pickle"), "format 'pickle'"),
        (lambda d: d.update(n_features=True), "n_features True"),
        (lambda d: d.update(cv_agreement=1.5), "cv_agreement 1.5"),
        (lambda d: d.update(episodes=41), "episodes 41 != sum of label_counts"),
        (lambda d: d.update(label_counts={"pass": 40}), "label_counts"),
        (lambda d: d.update(fields=["outputs", "__class__"]), "fields"),
        (lambda d: d.update(mean="0.0"), "mean has shape"),
    ],
)
def test_malformed_stored_heads_are_refused_naming_the_field(edit, message):
    data = _stored()
    edit(data)
    with pytest.raises(CalibrationHeadError, match=message):
        CalibrationHead.from_dict(data, LABELS)


def test_an_edited_open_flag_cannot_open_a_shut_gate():
    ids, x, y = episodes(100, signal=0.0, share_pass=0.9)
    data = fit_head(x, y, LABELS, ids=ids).to_dict()
    assert data["open"] is False
    data["open"] = True
    assert CalibrationHead.from_dict(data, LABELS).open is False
    with pytest.raises(CalibrationHeadError, match="expected a mapping"):
        CalibrationHead.from_dict([data], LABELS)


def test_text_statistics_measure_how_much_of_the_output_the_inputs_hold():
    knowledge = "Knowledge: The Eiffel Tower is in Paris. It opened in 1889.\nQuestion: Where is it?"
    quoted = text_statistics(knowledge, 'Paris\nSource: "The Eiffel Tower is in Paris."')
    outside = text_statistics(knowledge, "Paris\nSource: Wikipedia")
    assert quoted[:2] == [pytest.approx(6 / 7), pytest.approx(4 / 6)]  # all but the words around "Source:"
    assert outside[0] == pytest.approx(1 / 3) and outside[1] == 0.0
    assert quoted[2] == pytest.approx(math.log1p(8))
    assert text_statistics(knowledge, "") == [0.0, 0.0, 0.0]


def test_select_head_keeps_the_group_that_carries_the_rule_and_records_it():
    ids, noise, y = episodes(40, signal=0.0, dims=64)
    statistics = np.where(y == "pass", 1.0, 0.2)[:, None] + np.random.default_rng(5).normal(0, 0.05, (40, 3))
    groups = {"statistics": statistics, "outputs": noise}
    head = select_head(groups, y, LABELS, ids=ids, model_values=["pass"] * 40)
    assert head.fields == ["statistics"] and head.n_features == 3
    assert head.open and head.cv_agreement == 1.0
    again = select_head({"outputs": noise, "statistics": statistics}, y, LABELS, ids=ids, model_values=["pass"] * 40)
    assert as_json(again) == as_json(head)
    stored = CalibrationHead.from_dict(json.loads(as_json(head)), LABELS)
    assert stored.fields == ["statistics"]
    with pytest.raises(CalibrationHeadError, match="feature groups"):
        select_head({"knowledge": noise}, y, LABELS)
    with pytest.raises(CalibrationHeadError, match="names a feature group not given"):
        select_head(groups, y, LABELS, candidates=[["inputs"]])
