"""Agreement between the judge and the experts.

* Exact match: share of cases where the judge's value equals the expert's
  (categorical and pairwise judgments).
* Cohen's kappa and the confusion matrix (categorical and pairwise), via scikit-learn.
* Concordance correlation coefficient, CCC (Lin, 1989, *A concordance
  correlation coefficient to evaluate reproducibility*, Biometrics 45:255-268):
  ``2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`` with population
  (biased, 1/n) moments, as Lin defines it (numeric judgments).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def exact_match(predicted: Sequence[Any], expected: Sequence[Any]) -> float | None:
    """Share of positions where ``predicted[i] == expected[i]``, in [0, 1]; ``None`` for no cases.

    Raises:
        ValueError: if the sequences differ in length.
    """
    if len(predicted) != len(expected):
        raise ValueError(f"{len(predicted)} predictions for {len(expected)} expert values")
    if not expected:
        return None
    return sum(p == e for p, e in zip(predicted, expected)) / len(expected)


def ccc(predicted: Sequence[float], expected: Sequence[float]) -> float | None:
    """Lin's concordance correlation coefficient, in [-1, 1]; ``None`` for fewer than two cases.

    Returns 1.0 when both series are the same constant, 0.0 when the
    denominator is zero otherwise.

    Raises:
        ValueError: if the sequences differ in length.
    """
    if len(predicted) != len(expected):
        raise ValueError(f"{len(predicted)} predictions for {len(expected)} expert values")
    if len(expected) < 2:
        return None
    x = np.asarray(predicted, dtype=float)
    y = np.asarray(expected, dtype=float)
    cov = float(np.mean((x - x.mean()) * (y - y.mean())))
    denominator = float(x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    if denominator == 0.0:
        return 1.0 if np.array_equal(x, y) else 0.0
    return 2.0 * cov / denominator


def cohen_kappa(predicted: Sequence[Any], expected: Sequence[Any], labels: Sequence[Any]) -> float | None:
    """Cohen's kappa (Cohen, 1960): agreement beyond chance, in [-1, 1]; ``None`` for no cases.

    Computed with scikit-learn's ``cohen_kappa_score``. 1.0 when both sides give
    the same single label throughout (perfect, if degenerate, agreement).
    """
    if not expected:
        return None
    from sklearn.metrics import cohen_kappa_score

    if len(set(predicted) | set(expected)) == 1:
        return 1.0
    return float(cohen_kappa_score(list(expected), list(predicted), labels=list(labels)))


def confusion(predicted: Sequence[Any], expected: Sequence[Any], labels: Sequence[Any]) -> list[list[int]]:
    """Confusion matrix (scikit-learn): rows are the expert's values, columns the judge's, in ``labels`` order."""
    from sklearn.metrics import confusion_matrix

    if not expected:
        return [[0] * len(labels) for _ in labels]
    return confusion_matrix(list(expected), list(predicted), labels=list(labels)).tolist()


def agreement(kind: str, predicted: Sequence[Any], expected: Sequence[Any]) -> float | None:
    """The method's headline metric for a judgment kind: CCC for numeric, exact match otherwise."""
    return ccc(predicted, expected) if kind == "numeric" else exact_match(predicted, expected)
