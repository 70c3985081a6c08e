"""The calibration head: a small classifier fitted on the expert's episodes, gated by evidence.

A small judge model often cannot apply a house rule however its working memory states it, yet the
expert's labelled cases that MemAlign keeps as episodes *are* learnable by a linear classifier over
a few features of the case. This module fits that classifier, measures it by cross-validation
against the judge model on the same episodes, and lets it decide a judgment only when it wins.

The idea is LLM-Rubric's (Hashemi, Eisner, Rosset, Van Durme, Kedzie, *LLM-Rubric: A
Multidimensional, Calibrated Approach to Automated Evaluation of Natural Language Texts*, ACL 2024,
arXiv 2501.00274): take evidence about a case, such as the LLM judge's distribution over the answers,
and train a small model on human judgments to combine it. The evidence here comes in feature groups
(:data:`FIELDS`): the case's :func:`text_statistics` (how much of the output is found in the inputs,
and its length), embeddings of case fields (``outputs`` by default; ``inputs`` as a separate vector
where a rule needs it), and optionally the judge model's label probabilities under one fixed prompt.
:func:`select_head` fits each default group alone and together and keeps the best by
cross-validation. What a head learns are regularities of its features: it cannot check a fact
against the inputs unless the inputs are among them (``examples/calibration_study.py`` shows an
embedding-only head learning the answers' length, not the rule, on the citation task).

Everything is scikit-learn: ``Pipeline(StandardScaler, LogisticRegression)`` and
``StratifiedKFold``; no optimiser is written here. The fitted head is plain JSON-like data
(:meth:`CalibrationHead.to_dict`, :meth:`CalibrationHead.from_dict`, no pickle: a memory directory
may be hostile) and predicts with NumPy from those numbers, the same arithmetic as scikit-learn's
``predict_proba``.

**Derived data.** A head is a deterministic function of the *set* of training episodes: rows are
sorted by episode id before fitting and the folds are seeded, so refitting after a forget gives
exactly the head fitted without that record, whatever the order episodes arrived in. Where there
are more than :data:`MAX_TRAINING_EPISODES`, :func:`training_sample` keeps a seeded, stratified
sample chosen by a hash of each id, again a function of the set alone.

**The gate.** The head decides (``"auto"``) only when

* at least two labels are present and every present label has :data:`DEFAULT_MIN_PER_LABEL`
  episodes, and
* its stratified k-fold cross-validated agreement on the episodes is at least
  ``baseline + margin`` (:data:`DEFAULT_MARGIN`), where ``baseline`` is the higher of the judge
  model's agreement on the same episodes (their recorded ``judge_value``) and the majority rate.
  Against the majority rate too, so a file that is 90 % one label cannot open the gate with a head
  that only learned the base rate.

Both defaults come from ``examples/calibration_study.py`` (see its ``gate`` part). Numeric judges
use an ordinal head (cumulative logits, one ``LogisticRegression`` per threshold: Frank and Hall,
*A Simple Approach to Ordinal Classification*, ECML 2001); pairwise judges stay model-only.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from memalign_graph.errors import CalibrationHeadError
from memalign_graph.head_features import build_features, text_statistics  # noqa: F401 - text_statistics re-exported
from memalign_graph.spec import (  # the options a JudgeSpec names, re-exported here
    CALIBRATION_MODES,
    DEFAULT_GROUPS,  # noqa: F401
    EMBEDDED_GROUPS,  # noqa: F401
    SPEC_GROUPS,  # noqa: F401
    STATISTICS,
    CalibrationMode,
    check_groups,  # noqa: F401
    check_mode,  # noqa: F401
)

DEFAULT_MARGIN = 0.05
"""Agreement the head's cross-validated agreement must beat the baseline by (0..1).

Measured (``examples/calibration_study.py --parts gate``; citation rule and HaluEval QA, 10 seeds x
5 to 50 records, plus files that are 90 % one label; 160 runs): with the head chosen by
:func:`select_head`, no run at margin 0.05 and 3 per label opened the gate and then agreed less than
the model on 50 unseen cases. With an ``outputs``-embedding head, which learns less, margin 0 let
HaluEval QA's 90 %-one-label files open wrongly 6 times in 30 (11 with 2 per label); 0.05 never."""
DEFAULT_MIN_PER_LABEL = 3
"""Fewest episodes per present label before the head may decide: the fewest that allow a 3-fold
stratified cross-validation. In the same runs at margin 0.05, 2 per label opened wrongly once
(HaluEval QA) and 3 never; 5 kept the gate shut in 16 of 50 citation runs where the head was better
by 0.05 or more on unseen cases, against 11 for 3."""
DEFAULT_FOLDS = 5
"""Folds of the stratified cross-validation (fewer when a label has fewer episodes)."""
MAX_TRAINING_EPISODES = 2000
"""Most episodes a head is fitted on; above it :func:`training_sample` keeps a stratified sample."""
REGULARISATION_C = 1.0
"""Inverse L2 strength of the logistic regression, on standardised features."""
FORMAT = "memalign-calibration-head"
FORMAT_VERSION = 1
SCORES = "scores"
"""The feature group of the judge model's label probabilities under one fixed prompt."""
FIELDS = (STATISTICS, "outputs", "inputs", "expectations", SCORES)
"""Feature groups a head may use: the case statistics, an embedded case field, the model's scores."""


def _rank(seed: int, episode_id: str) -> str:
    return hashlib.sha256(f"{seed}:{episode_id}".encode()).hexdigest()


def training_sample(
    ids: Sequence[str], labels: Sequence[Any], limit: int = MAX_TRAINING_EPISODES, seed: int = 0
) -> list[int]:
    """Indices of at most ``limit`` episodes, stratified by label, chosen by a seeded hash of each id.

    Each label keeps its share of ``limit`` (largest remainders, at least one per present label),
    taking the episodes whose ``sha256(f"{seed}:{id}")`` is lowest. The choice depends only on the
    set of (id, label) pairs, never on their order, so forgetting an episode outside the sample
    leaves the sample unchanged.

    Args:
        ids: episode ids (distinct).
        labels: the expert's value per episode.
        limit: most episodes kept (at least the number of labels present).
        seed: seed of the hash.

    Returns:
        Indices into ``ids``, sorted by id.

    Raises:
        CalibrationHeadError: if ``ids`` and ``labels`` differ in length or ids repeat.
    """
    if len(ids) != len(labels):
        raise CalibrationHeadError(f"training sample: {len(ids)} ids but {len(labels)} labels")
    if len(set(ids)) != len(ids):
        raise CalibrationHeadError("training sample: episode ids repeat")
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    if len(ids) <= limit:
        return order
    by_label: dict[str, list[int]] = {}
    for i in order:
        by_label.setdefault(str(labels[i]), []).append(i)
    exact = {label: limit * len(members) / len(ids) for label, members in by_label.items()}
    quota = {label: max(1, math.floor(share)) for label, share in exact.items()}
    for label in sorted(exact, key=lambda lab: (quota[lab] - exact[lab], lab))[: max(0, limit - sum(quota.values()))]:
        quota[label] += 1
    chosen: list[int] = []
    for label, members in by_label.items():
        chosen += sorted(members, key=lambda i: _rank(seed, ids[i]))[: quota[label]]
    return sorted(chosen, key=lambda i: ids[i])


def _pipeline(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("logit", LogisticRegression(C=REGULARISATION_C, max_iter=2000, random_state=seed)),
        ]
    )


@dataclass
class CalibrationHead:
    """A fitted head: its numbers, its evidence, and whether its gate is open.

    Attributes:
        kind: ``"categorical"`` or ``"numeric"``.
        labels: the judge's values in its own order (numeric: the scale's points as strings).
        n_features: width of the feature rows it takes (:func:`build_features`).
        mean, scale: the StandardScaler's ``mean_`` and ``scale_``, ``(n_features,)``.
        classes: labels the expert used, in scikit-learn's order (a subset of ``labels``).
        coef, intercept: categorical: one ``LogisticRegression`` (``(1 or n_classes, n_features)``);
            numeric: one binary regression per threshold ``y > classes[t]``, ``(n_classes - 1, n_features)``.
        cv_agreement: stratified k-fold agreement on the episodes (0..1), ``None`` when too few to fold.
        model_agreement: the judge model's agreement on the episodes that recorded a ``judge_value``,
            ``None`` when none did.
        majority_agreement: share of the most common label among the episodes.
        episodes: episodes it was fitted on.
        label_counts: episodes per label.
        margin, min_per_label: the gate's settings when it was fitted.
        open: the gate's verdict (see the module docstring).
        seed: seed of the folds and the sample.
        fields: the feature groups of a row, in order (names of :data:`FIELDS`).
        trained_on: :func:`fingerprint` of the episodes it was fitted on (to tell a stale stored head).
    """

    kind: str
    labels: list[str]
    n_features: int
    mean: np.ndarray
    scale: np.ndarray
    classes: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    cv_agreement: float | None
    model_agreement: float | None
    majority_agreement: float
    episodes: int
    label_counts: dict[str, int]
    margin: float
    min_per_label: int
    open: bool
    seed: int = 0
    fields: list[str] = field(default_factory=lambda: ["outputs"])
    trained_on: str = ""

    @property
    def baseline_agreement(self) -> float:
        """What the head must beat: the higher of the model's agreement and the majority rate."""
        return max(self.model_agreement or 0.0, self.majority_agreement)

    def predict_proba(self, features: Any) -> np.ndarray:
        """Probability of each of ``labels`` per row, ``(n, len(labels))``; labels the expert never used get 0.

        Raises:
            CalibrationHeadError: if ``features`` is not ``(n, n_features)`` or holds a non-finite value.
        """
        from scipy.special import expit, softmax  # on first use: SciPy adds 0.15 s to importing this module

        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise CalibrationHeadError(f"features have shape {x.shape}, this head takes (cases, {self.n_features})")
        if not np.isfinite(x).all():
            raise CalibrationHeadError("features hold a value that is not finite")
        z = (x - self.mean) / self.scale
        if len(self.classes) == 1:
            present = np.ones((len(x), 1))
        elif self.kind == "numeric":
            above = expit(z @ self.coef.T + self.intercept)
            above = np.minimum.accumulate(above, axis=1)  # P(y > t) cannot rise with t
            bounds = np.hstack([np.ones((len(x), 1)), above, np.zeros((len(x), 1))])
            present = bounds[:, :-1] - bounds[:, 1:]
        elif len(self.classes) == 2:
            p = expit(z @ self.coef[0] + self.intercept[0])
            present = np.stack([1.0 - p, p], axis=1)
        else:
            present = softmax(z @ self.coef.T + self.intercept, axis=1)
        out = np.zeros((len(x), len(self.labels)))
        for j, label in enumerate(self.classes):
            out[:, self.labels.index(label)] = present[:, j]
        return out

    def predict_values(self, features: Any) -> np.ndarray:
        """The most probable label per row (numeric: as ``int``), ``(n,)`` object array.

        Raises:
            CalibrationHeadError: as :meth:`predict_proba`.
        """
        best = np.asarray(self.labels, dtype=object)[np.argmax(self.predict_proba(features), axis=1)]
        return best.astype(int).astype(object) if self.kind == "numeric" else best

    def uses(self, mode: CalibrationMode = "auto") -> bool:
        """Whether the head decides under ``mode``.

        ``"auto"``: when the gate is open; ``"on"``: whenever it was fitted on two or more labels; ``"off"``: never.

        Raises:
            CalibrationHeadError: for an unknown ``mode``.
        """
        if mode not in CALIBRATION_MODES:
            raise CalibrationHeadError(f"calibration mode {mode!r}: use one of {', '.join(CALIBRATION_MODES)}")
        return (mode == "on" and len(self.classes) > 1) or (mode == "auto" and self.open)

    def decide(self, features: Any | None, model_value: Any, mode: CalibrationMode = "auto") -> dict[str, Any]:
        """The final value of one judgment and what decided it.

        Args:
            features: one case's feature row, ``(n_features,)`` or ``(1, n_features)``; ``None`` when the
                head does not decide (:meth:`uses` is false), so the case's fields need not be embedded.
            model_value: the judge model's own value for the case.
            mode: see :meth:`uses`.

        Returns:
            ``{"value", "model_value", "calibration": {"used", "probabilities", "cv_agreement",
            "model_agreement", "majority_agreement", "episodes"}}``; ``probabilities`` maps each label to
            the head's probability (4 decimals), or is ``None`` when no features were given; ``value`` is
            the head's most probable label when ``used``, else ``model_value``.

        Raises:
            CalibrationHeadError: as :meth:`predict_proba`; for an unknown ``mode``; if ``features`` is
                ``None`` but the head decides.
        """
        used = self.uses(mode)
        probabilities = None
        value = model_value
        if features is not None:
            proba = self.predict_proba(np.asarray(features, dtype=np.float64).reshape(1, -1))[0]
            probabilities = {label: round(float(p), 4) for label, p in zip(self.labels, proba)}
            if used:
                best = self.labels[int(np.argmax(proba))]
                value = int(best) if self.kind == "numeric" else best
        elif used:
            raise CalibrationHeadError("the calibration head decides this judgment but no features were given")
        return {
            "value": value,
            "model_value": model_value,
            "calibration": {
                "used": used,
                "probabilities": probabilities,
                "cv_agreement": self.cv_agreement,
                "model_agreement": self.model_agreement,
                "majority_agreement": self.majority_agreement,
                "episodes": self.episodes,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """The head as plain JSON-like data (lists, floats, strings), read back by :meth:`from_dict`."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "labels": list(self.labels),
            "n_features": self.n_features,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "classes": list(self.classes),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "cv_agreement": self.cv_agreement,
            "model_agreement": self.model_agreement,
            "majority_agreement": self.majority_agreement,
            "episodes": self.episodes,
            "label_counts": dict(self.label_counts),
            "margin": self.margin,
            "min_per_label": self.min_per_label,
            "open": self.open,
            "seed": self.seed,
            "fields": list(self.fields),
            "trained_on": self.trained_on,
        }

    @classmethod
    def from_dict(cls, data: Any, labels: Sequence[Any] | None = None) -> CalibrationHead:
        """A head from :meth:`to_dict`'s data, validated field by field (the data may be hostile).

        Args:
            data: the stored mapping.
            labels: the judge's values; when given, the head must have been fitted for exactly these.

        Returns:
            The head. Its gate is recomputed from the stored evidence, so an edited ``open`` cannot open it.

        Raises:
            CalibrationHeadError: naming the field that is missing, of the wrong type or shape, not
                finite, or inconsistent with the others or with ``labels``.
        """
        if not isinstance(data, Mapping):
            raise CalibrationHeadError(f"calibration head: expected a mapping, got {type(data).__name__}")
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise CalibrationHeadError(
                f"calibration head: format {data.get('format')!r} version {data.get('format_version')!r}, "
                f"expected {FORMAT!r} version {FORMAT_VERSION}"
            )
        kind = data.get("kind")
        if kind not in ("categorical", "numeric"):
            raise CalibrationHeadError(f"calibration head: kind {kind!r} is not 'categorical' or 'numeric'")
        head_labels = _strings(data, "labels")
        if len(head_labels) < 2 or len(set(head_labels)) != len(head_labels):
            raise CalibrationHeadError(f"calibration head: labels {head_labels!r} are not two or more distinct values")
        if labels is not None and head_labels != [str(v) for v in labels]:
            raise CalibrationHeadError(
                f"calibration head: fitted for labels {head_labels!r}, the judge has {[str(v) for v in labels]!r}"
            )
        classes = _strings(data, "classes")
        if not classes or len(set(classes)) != len(classes) or not set(classes) <= set(head_labels):
            raise CalibrationHeadError(f"calibration head: classes {classes!r} are not distinct labels of the judge")
        n_features = data.get("n_features")
        if not isinstance(n_features, int) or isinstance(n_features, bool) or not 0 < n_features <= 100_000:
            raise CalibrationHeadError(f"calibration head: n_features {n_features!r} is not a positive integer")
        mean = _array(data, "mean", (n_features,))
        scale = _array(data, "scale", (n_features,))
        if (scale <= 0).any():
            raise CalibrationHeadError("calibration head: scale holds a value that is not positive")
        if len(classes) == 1:
            rows = 0
        elif kind == "numeric" or len(classes) == 2:
            rows = len(classes) - 1 if kind == "numeric" else 1
        else:
            rows = len(classes)
        coef = _array(data, "coef", (rows, n_features))
        intercept = _array(data, "intercept", (rows,))
        counts = data.get("label_counts")
        if not isinstance(counts, Mapping) or set(counts) != set(classes):
            raise CalibrationHeadError(f"calibration head: label_counts must count exactly the classes {classes!r}")
        label_counts = {str(k): _count(v, f"label_counts[{k!r}]") for k, v in counts.items()}
        fields = _strings(data, "fields")
        if not fields or not set(fields) <= set(FIELDS) or len(set(fields)) != len(fields):
            raise CalibrationHeadError(f"calibration head: fields {fields!r} are not distinct names of {FIELDS!r}")
        trained_on = data.get("trained_on")
        if not isinstance(trained_on, str) or len(trained_on) > 128:
            raise CalibrationHeadError("calibration head: trained_on is not a fingerprint string")
        episodes = _count(data.get("episodes"), "episodes")
        if episodes != sum(label_counts.values()):
            raise CalibrationHeadError(f"calibration head: episodes {episodes} != sum of label_counts")
        head = cls(
            kind=kind,
            labels=head_labels,
            n_features=n_features,
            mean=mean,
            scale=scale,
            classes=classes,
            coef=coef,
            intercept=intercept,
            cv_agreement=_share(data.get("cv_agreement"), "cv_agreement", optional=True),
            model_agreement=_share(data.get("model_agreement"), "model_agreement", optional=True),
            majority_agreement=_share(data.get("majority_agreement"), "majority_agreement"),  # type: ignore[arg-type]
            episodes=episodes,
            label_counts=label_counts,
            margin=_share(data.get("margin"), "margin"),  # type: ignore[arg-type]
            min_per_label=_count(data.get("min_per_label"), "min_per_label"),
            open=False,
            seed=_count(data.get("seed"), "seed"),
            fields=fields,
            trained_on=trained_on,
        )
        head.open = gate_open(head)
        return head


def _strings(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CalibrationHeadError(f"calibration head: {key} must be a list of strings")
    return list(value)


def _array(data: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.asarray(data.get(key), dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationHeadError(f"calibration head: {key} is not an array of numbers") from None
    if array.size == 0 and 0 in shape:
        array = array.reshape(shape)
    if array.shape != shape:
        raise CalibrationHeadError(f"calibration head: {key} has shape {array.shape}, expected {shape}")
    if not np.isfinite(array).all():
        raise CalibrationHeadError(f"calibration head: {key} holds a value that is not finite")
    return array


def _count(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CalibrationHeadError(f"calibration head: {key} {value!r} is not a non-negative integer")
    return value


def _share(value: Any, key: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise CalibrationHeadError(f"calibration head: {key} {value!r} is not a number in 0..1")
    return float(value)


def gate_open(head: CalibrationHead) -> bool:
    """The gate of the module docstring, on the head's stored evidence."""
    if len(head.classes) < 2 or head.cv_agreement is None:
        return False
    if min(head.label_counts.values()) < head.min_per_label:
        return False
    return head.cv_agreement >= head.baseline_agreement + head.margin - 1e-9


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def fit_head(
    features: Any,
    labels: Sequence[Any],
    label_set: Sequence[Any],
    *,
    seed: int = 0,
    ids: Sequence[str] | None = None,
    model_values: Sequence[Any] | None = None,
    kind: Literal["categorical", "numeric"] = "categorical",
    margin: float = DEFAULT_MARGIN,
    min_per_label: int = DEFAULT_MIN_PER_LABEL,
    folds: int = DEFAULT_FOLDS,
    limit: int = MAX_TRAINING_EPISODES,
    fields: Sequence[str] = ("outputs",),
) -> CalibrationHead:
    """Fit a head on episodes and measure its gate.

    Rows are put in episode-id order first and, above ``limit`` episodes, reduced to
    :func:`training_sample`; the result depends only on the set of episodes.

    Args:
        features: ``(n, n_features)`` rows from :func:`build_features`.
        labels: the expert's value per episode (``n``).
        label_set: the judge's values, in its order (numeric: every point of the scale).
        seed: seed of the folds and the sample; the regression itself (lbfgs) is deterministic.
        ids: episode ids (``n``, distinct); default ``"0"``, ``"1"``... (the given order).
        model_values: the judge model's recorded value per episode (``None`` where unknown), for
            the gate's baseline.
        kind: ``"categorical"`` (multinomial logistic regression) or ``"numeric"`` (ordinal).
        margin: see :data:`DEFAULT_MARGIN`.
        min_per_label: see :data:`DEFAULT_MIN_PER_LABEL`.
        folds: most folds of the cross-validation.
        limit: most episodes fitted on.
        fields: the feature groups of each row, in order (recorded on the head; see :data:`FIELDS`).

    Returns:
        A :class:`CalibrationHead`. With one label present it predicts that label and its gate is shut.

    Raises:
        CalibrationHeadError: if the lengths differ, there are no episodes, a label is not one of
            ``label_set``, or a feature is not finite.
    """
    x = np.asarray(features, dtype=np.float64)
    names = [str(v) for v in label_set]
    y_all = np.asarray([str(v) for v in labels], dtype=object)
    if x.ndim != 2 or x.shape[0] != len(y_all) or len(y_all) == 0:
        raise CalibrationHeadError(f"fit: features {x.shape} and {len(y_all)} labels do not match (need ≥ 1 episode)")
    if not np.isfinite(x).all():
        raise CalibrationHeadError("fit: features hold a value that is not finite")
    unknown = sorted(set(y_all) - set(names))
    if unknown:
        raise CalibrationHeadError(f"fit: labels {unknown!r} are not values of the judge ({names!r})")
    id_list = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(y_all))]
    if len(id_list) != len(y_all):
        raise CalibrationHeadError(f"fit: {len(id_list)} ids for {len(y_all)} episodes")
    keep = training_sample(id_list, list(y_all), limit, seed)
    x, y = x[keep], y_all[keep]
    model = (
        np.asarray([None if v is None else str(v) for v in model_values], dtype=object)[keep]
        if model_values is not None
        else None
    )

    classes, counts = np.unique(y, return_counts=True)
    classes_sorted = sorted((str(c) for c in classes), key=names.index if kind == "numeric" else None)
    label_counts = {str(c): int(n) for c, n in zip(classes, counts)}
    majority = float(counts.max() / len(y))
    recorded = None if model is None else np.asarray([v is not None for v in model])
    model_agreement = _agreement(model[recorded], y[recorded]) if recorded is not None and recorded.any() else None
    cv = None
    fitted: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    if len(classes) < 2:
        fitted = (np.zeros(x.shape[1]), np.ones(x.shape[1]), np.zeros((0, x.shape[1])), np.zeros(0))
    else:
        from threadpoolctl import threadpool_limits

        # one BLAS/OpenMP thread: these fits are small, and on a busy machine more threads made them 20x slower
        with threadpool_limits(limits=1):
            k = min(folds, int(counts.min()))
            if k >= 2:
                cv = _cross_validated(x, y, classes_sorted, kind, k, seed)
            fitted = _fit(x, y, classes_sorted, kind, seed)
    mean, scale, coef, intercept = fitted
    head = CalibrationHead(
        kind=kind,
        labels=names,
        n_features=x.shape[1],
        mean=mean,
        scale=scale,
        classes=[str(c) for c in classes_sorted],
        coef=coef,
        intercept=intercept,
        cv_agreement=cv,
        model_agreement=model_agreement,
        majority_agreement=majority,
        episodes=len(y),
        label_counts=label_counts,
        margin=float(margin),
        min_per_label=int(min_per_label),
        open=False,
        seed=int(seed),
        fields=list(fields),
        trained_on=fingerprint([id_list[i] for i in keep], [str(v) for v in y]),
    )
    head.open = gate_open(head)
    return head


def select_head(
    groups: Mapping[str, Any],
    labels: Sequence[Any],
    label_set: Sequence[Any],
    *,
    candidates: Sequence[Sequence[str]] | None = None,
    **options: Any,
) -> CalibrationHead:
    """Fit a head on each candidate set of feature groups and keep the one with the best cross-validated agreement.

    A few strong features (:func:`text_statistics`) and a 384-dimensional embedding do not mix well in
    one L2-penalised regression fitted on tens of episodes (the embedding's dimensions dilute them), so
    each group is tried alone and all together, and stratified k-fold agreement picks. Ties go to the
    earlier candidate. The gate then judges the chosen head on that same agreement: a maximum over a
    few candidates, slightly optimistic, which :data:`DEFAULT_MARGIN` was measured to absorb.

    Args:
        groups: feature group name (one of :data:`FIELDS`) -> ``(n, d)`` rows, all for the same episodes.
        labels: the expert's value per episode.
        label_set: the judge's values.
        candidates: the group sets to try, in order; default each group alone, then all together.
        **options: passed to :func:`fit_head` (``seed``, ``ids``, ``model_values``, ``kind``...).

    Returns:
        The chosen :class:`CalibrationHead`; its ``fields`` name the groups its rows are built from.

    Raises:
        CalibrationHeadError: for an unknown group or a candidate naming a group not given, and as
            :func:`fit_head`.
    """
    unknown = sorted(set(groups) - set(FIELDS))
    if unknown or not groups:
        raise CalibrationHeadError(f"feature groups {unknown or '(none)'}: use names of {FIELDS!r}")
    names = list(groups)
    tried = [list(c) for c in candidates] if candidates is not None else [[g] for g in names]
    if candidates is None and len(names) > 1:
        tried.append(names)
    best: CalibrationHead | None = None
    for candidate in tried:
        if not candidate or not set(candidate) <= set(names):
            raise CalibrationHeadError(f"candidate {candidate!r} names a feature group not given ({names!r})")
        head = fit_head(build_features([groups[g] for g in candidate]), labels, label_set, fields=candidate, **options)
        if best is None or (head.cv_agreement or 0.0) > (best.cv_agreement or 0.0):
            best = head
    assert best is not None  # tried is never empty
    return best


def fingerprint(ids: Sequence[str], labels: Sequence[Any]) -> str:
    """SHA-256 (hex, 32 chars) of the (id, label) pairs as a set: equal exactly when a head saw the same episodes."""
    pairs = sorted(f"{i}\x00{v}" for i, v in zip(ids, labels))
    return hashlib.sha256("\x01".join(pairs).encode("utf-8")).hexdigest()[:32]


def _fit(
    x: np.ndarray, y: np.ndarray, classes: list[str], kind: str, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scaler mean and scale, coefficients and intercepts of the head fitted on ``x``.

    Categorical: one pipeline over ``classes`` (scikit-learn's sorted order). Numeric: one binary
    pipeline per threshold, ``y`` above ``classes[t]`` (Frank and Hall 2001); the scalers are identical.
    """
    from sklearn.exceptions import ConvergenceWarning

    targets = [np.isin(y, classes[t + 1 :]).astype(int) for t in range(len(classes) - 1)] if kind == "numeric" else [y]
    coefs, intercepts = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for target in targets:
            pipeline = _pipeline(seed).fit(x, target)
            coefs.append(pipeline.named_steps["logit"].coef_)
            intercepts.append(pipeline.named_steps["logit"].intercept_)
    scaler = pipeline.named_steps["scale"]
    # C order, as from_dict builds them: the same layout gives bit-identical predictions after a round trip
    return tuple(
        np.ascontiguousarray(a) for a in (scaler.mean_, scaler.scale_, np.vstack(coefs), np.concatenate(intercepts))
    )  # type: ignore[return-value]


def _cross_validated(x: np.ndarray, y: np.ndarray, classes: list[str], kind: str, folds: int, seed: int) -> float:
    """Agreement of out-of-fold predictions over all episodes (stratified, shuffled with ``seed``)."""
    from sklearn.model_selection import StratifiedKFold

    predicted = np.empty(len(y), dtype=object)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        mean, scale, coef, intercept = _fit(x[train], y[train], classes, kind, seed)
        fold = CalibrationHead(
            kind=kind, labels=classes, n_features=x.shape[1], mean=mean, scale=scale, classes=classes,
            coef=coef, intercept=intercept, cv_agreement=None, model_agreement=None, majority_agreement=0.0,
            episodes=len(train), label_counts={}, margin=0.0, min_per_label=0, open=False,
        )  # fmt: skip
        predicted[test] = np.asarray(classes, dtype=object)[np.argmax(fold.predict_proba(x[test]), axis=1)]
    return _agreement(predicted, y)


_MOVED_TO_MEMORY_HEAD = frozenset(
    "CALIBRATION_SEED STATISTICS_WIDTH StoredVectors Verdict calibrate case_groups case_row check_head embed_texts "
    "field_text fit_memory_head held_records needs_embedding report text_digest".split()
)


def __getattr__(name: str) -> Any:
    """Names that moved to :mod:`memalign_graph.memory_head`, still found here with a ``DeprecationWarning``.

    Raises:
        AttributeError: for any other name.
    """
    if name not in _MOVED_TO_MEMORY_HEAD:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"memalign_graph.calibration.{name} moved to memalign_graph.memory_head", DeprecationWarning, 2)
    return getattr(importlib.import_module("memalign_graph.memory_head"), name)
