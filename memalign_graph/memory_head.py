"""A judge's calibration head: fitted on its memory's episodes, cached with the memory's version, applied to judgments.

:mod:`memalign_graph.calibration` is the head itself (features, fit, cross-validated gate, stored
form); this module is what a judge's memory does with one: which episodes train it
(:func:`held_records` keeps a held proposal's records out), the case fields it embeds
(:func:`case_groups`, with stored field vectors reused by digest), the fit over the current
version's episodes (:func:`fit_memory_head`, seeded with :data:`CALIBRATION_SEED`, so a head is a
function of the set of its episodes), the check of a stored head against the judge
(:func:`check_head`), and a judgment's final value (:func:`calibrate`), which says what decided it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from memalign_graph.calibration import (
    MAX_TRAINING_EPISODES,
    CalibrationHead,
    CalibrationHeadError,
    select_head,
    training_sample,
)
from memalign_graph.head_features import build_features, text_statistics
from memalign_graph.spec import (
    EMBEDDED_GROUPS,
    SPEC_GROUPS,
    STATISTICS,
    CalibrationMode,
)

CALIBRATION_SEED = 0
"""Seed of every memory's head: its training sample and its folds (a head is a function of its episodes)."""
STATISTICS_WIDTH = 3
"""Columns of the :data:`STATISTICS` group (:func:`text_statistics`)."""


def held_records(proposed: Sequence[Mapping[str, Any]]) -> set[str]:
    """Ids of the feedback records a pending or rejected proposal came from: held by governance, they train no head.

    A record whose distilled rule an expert has not approved (or rejected) may be hostile; its label waits
    with its rule. Once every proposal it fed is approved (then active) it trains the head again.
    """
    return {
        str(source)
        for p in proposed
        if p.get("status", "pending") in ("pending", "rejected")
        for source in p.get("sources") or ()
    }


class Verdict(NamedTuple):
    """An episode as a head is fitted on it.

    Attributes:
        id: the episode's (feedback record's) id.
        value: the expert's value.
        model_value: the judge model's own value for the case, recorded by this library before the expert
            answered (a review, or scoring at alignment); ``None`` when unknown. A ``judge_value`` that came
            in a feedback file is not one: a file could claim the model is always wrong.
    """

    id: str
    value: Any
    model_value: Any


StoredVectors = dict[tuple[str, str], tuple[str, np.ndarray]]
"""Field vectors of a head's training sample: ``(group, episode id) -> (text digest, unit float32 vector)``."""


def field_text(case: Mapping[str, Any], group: str) -> str:
    """The text of case field ``group`` as a head embeds it: rendered, clipped like an embedded case, never empty."""
    from memalign_graph.spec import EMBED_MAX_CHARS, clip, render

    value = case.get(group)
    text = "" if value is None else render(value)
    return clip(text, EMBED_MAX_CHARS) if text.strip() else "(none)"


def text_digest(text: str) -> str:
    """What a stored field vector is checked against: SHA-256 of the embedded text, 16 hex characters."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def embed_texts(embeddings: Any, texts: Sequence[str], chunk: int = 256) -> np.ndarray:
    """Unit float32 vectors of ``texts``, ``(n, dim)``, embedded as documents ``chunk`` at a time.

    Documents, not queries, on both sides (fitting and judging), so a field means the same to the head.

    Raises:
        CalibrationHeadError: if the embeddings return another shape than one vector per text.
    """
    embed = getattr(embeddings, "embed_documents_array", None) or embeddings.embed_documents
    blocks = []
    for start in range(0, len(texts), chunk):
        part = list(texts[start : start + chunk])
        block = np.asarray(embed(part), dtype=np.float32)
        if block.ndim != 2 or len(block) != len(part):
            raise CalibrationHeadError(f"embeddings returned {block.shape} for {len(part)} texts")
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        blocks.append(block / np.where(norms == 0, 1.0, norms))
    return np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=np.float32)


def case_groups(
    cases: Sequence[Mapping[str, Any]],
    groups: Sequence[str],
    embeddings: Any,
    *,
    ids: Sequence[str] | None = None,
    stored: Mapping[tuple[str, str], tuple[str, np.ndarray]] | None = None,
) -> tuple[dict[str, np.ndarray], StoredVectors]:
    """Each feature group's rows for ``cases``: ``{group: (n, d)}``, and the field vectors used.

    Args:
        cases: ``{"inputs", "outputs", "expectations"?}`` each.
        groups: names of :data:`SPEC_GROUPS`.
        embeddings: the memory's embeddings (for embedded groups).
        ids: the cases' episode ids, to reuse ``stored`` vectors and to key the returned ones.
        stored: vectors from an earlier fit; one is reused when its text digest still matches.

    Returns:
        ``(groups, vectors)``: ``vectors`` (with ``ids``) holds every embedded field vector of these cases.

    Raises:
        CalibrationHeadError: for an unknown group or embeddings of the wrong shape.
    """
    from memalign_graph.spec import render

    out: dict[str, np.ndarray] = {}
    vectors: StoredVectors = {}
    for group in groups:
        if group == STATISTICS:
            rows = [text_statistics(render(c["inputs"]), render(c["outputs"])) for c in cases]
            out[group] = np.asarray(rows, dtype=np.float64).reshape(len(cases), STATISTICS_WIDTH)
            continue
        if group not in EMBEDDED_GROUPS:
            raise CalibrationHeadError(f"feature group {group!r}: use names of {SPEC_GROUPS!r}")
        texts = [field_text(c, group) for c in cases]
        digests = [text_digest(t) for t in texts]
        found: list[np.ndarray | None] = [None] * len(cases)
        if ids is not None and stored:
            for i, (episode_id, digest) in enumerate(zip(ids, digests)):
                hit = stored.get((group, episode_id))
                if hit is not None and hit[0] == digest:
                    found[i] = np.asarray(hit[1], dtype=np.float32)
        missing = [i for i, v in enumerate(found) if v is None]
        if missing:
            for i, vector in zip(missing, embed_texts(embeddings, [texts[i] for i in missing])):
                found[i] = vector
        matrix = np.stack(found) if found else np.zeros((0, 0), dtype=np.float32)  # type: ignore[arg-type]
        if ids is not None:
            vectors.update({(group, episode_id): (digests[i], matrix[i]) for i, episode_id in enumerate(ids)})
        out[group] = matrix.astype(np.float64)
    return out, vectors


def fit_memory_head(
    spec: Any,
    verdicts: Sequence[Verdict],
    get_cases: Any,
    embeddings: Any,
    *,
    groups: Sequence[str],
    stored: Mapping[tuple[str, str], tuple[str, np.ndarray]] | None = None,
) -> tuple[CalibrationHead | None, StoredVectors]:
    """A judge's head fitted on its episodes (see :func:`select_head`), and the field vectors of its sample.

    Deterministic: the sample (:func:`training_sample`, at most :data:`MAX_TRAINING_EPISODES`) and the
    folds are seeded with :data:`CALIBRATION_SEED`, rows are put in id order, so the head is a function
    of the set of verdicts and their cases. Categorical judges choose among each group alone and all
    together; numeric judges fit an ordinal head on ``outputs`` (selection by exact agreement was
    measured to hurt them, see the design note); pairwise judges get none.

    Args:
        spec: the :class:`~memalign_graph.spec.JudgeSpec`.
        verdicts: the training episodes (expert value given, not held by governance).
        get_cases: ``get_cases(ids) -> [episode]`` (any order; unknown ids skipped).
        embeddings: the memory's embeddings.
        groups: the judge's feature groups (:data:`SPEC_GROUPS`).
        stored: field vectors of an earlier fit, reused where their text still matches.

    Returns:
        ``(head or None, vectors)``; ``None`` for a pairwise judge or without verdicts.

    Raises:
        CalibrationHeadError: if a sampled episode is missing, or as :func:`select_head`.
    """
    if spec.kind == "pairwise" or not verdicts:
        return None, {}
    ids = [v.id for v in verdicts]
    keep = training_sample(ids, [str(v.value) for v in verdicts], MAX_TRAINING_EPISODES, CALIBRATION_SEED)
    chosen = [verdicts[i] for i in keep]
    found = {e["id"]: e for e in get_cases([v.id for v in chosen])}
    lost = [v.id for v in chosen if v.id not in found]
    if lost:
        raise CalibrationHeadError(f"episodes {lost[:5]} of the training sample are missing")
    sample_ids = [v.id for v in chosen]
    matrices, vectors = case_groups([found[i] for i in sample_ids], groups, embeddings, ids=sample_ids, stored=stored)
    numeric = spec.kind == "numeric"
    candidates = None
    if numeric:
        candidates = [["outputs"]] if "outputs" in matrices else [list(matrices)]
    head = select_head(
        matrices,
        [v.value for v in chosen],
        spec.values,
        candidates=candidates,
        ids=sample_ids,
        model_values=[v.model_value for v in chosen],
        kind="numeric" if numeric else "categorical",
        seed=CALIBRATION_SEED,
    )
    return head, vectors


def check_head(head: CalibrationHead, spec: Any, groups: Sequence[str], dim: int | None) -> None:
    """Refuse a stored head that does not fit this judge and memory.

    Raises:
        CalibrationHeadError: if its kind, groups or width differ from what this judge fits.
    """
    kind = "numeric" if spec.kind == "numeric" else "categorical"
    if spec.kind == "pairwise" or head.kind != kind:
        raise CalibrationHeadError(f"calibration head: a {head.kind} head for a {spec.kind} judge")
    if not set(head.fields) <= set(groups):
        raise CalibrationHeadError(f"calibration head: fields {head.fields!r} are not the judge's {list(groups)!r}")
    if isinstance(dim, int):
        width = sum(STATISTICS_WIDTH if f == STATISTICS else dim for f in head.fields)
        if head.n_features != width:
            raise CalibrationHeadError(f"calibration head: {head.n_features} features, its fields make {width}")


def needs_embedding(head: CalibrationHead) -> bool:
    """Whether judging with ``head`` embeds a case field (else its features cost a tenth of a millisecond)."""
    return any(f in EMBEDDED_GROUPS for f in head.fields)


def case_row(head: CalibrationHead, case: Mapping[str, Any], embeddings: Any) -> np.ndarray:
    """One case's feature row for ``head``, ``(n_features,)``: its groups in the head's order.

    Raises:
        CalibrationHeadError: as :func:`case_groups`.
    """
    matrices, _ = case_groups([case], head.fields, embeddings)
    return build_features([matrices[f] for f in head.fields])[0]


def _why(head: CalibrationHead, used: bool, mode: str, unknown_model: bool) -> str:
    """One line on why the head decided or not (what the judgment's ``calibration.reason`` says)."""
    if mode == "on":
        return "calibration is on" if used else "the head was fitted on one label only"
    if unknown_model:
        return (
            "no recorded judgments of this model on the episodes: its agreement is unknown, so a hosted "
            "model's value stands"
        )
    if len(head.classes) < 2:
        return f"the episodes hold one label only ({head.classes[0]!r})"
    few = sorted(label for label, n in head.label_counts.items() if n < head.min_per_label)
    if few or head.cv_agreement is None:
        return f"fewer than {head.min_per_label} episodes of {', '.join(map(repr, few or head.classes))}"
    said = (
        f"cross-validated {head.cv_agreement:.2f} against baseline {head.baseline_agreement:.2f} "
        f"+ margin {head.margin:.2f} on {head.episodes} episodes"
    )
    return f"gate open: {said}" if used else f"gate shut: {said}"


def calibrate(
    head: CalibrationHead,
    case: Mapping[str, Any],
    model_value: Any,
    mode: CalibrationMode,
    embeddings: Any,
    *,
    model_evidence: bool = False,
) -> dict[str, Any]:
    """The final value of a judgment the model made, and what decided it.

    Args:
        head: the memory's head.
        case: the judged case.
        model_value: the judge model's value.
        mode: ``"auto"`` (the head decides when its gate is open), ``"on"`` (whenever it knows two
            labels), ``"off"`` (never; the caller then adds no ``calibration`` at all).
        embeddings: the memory's embeddings.
        model_evidence: under ``"auto"``, require recorded judgments of the model on the episodes
            (hosted models: one that follows instructions may beat the head, and without its
            recorded values that cannot be told).

    Returns:
        ``{"value", "model_value", "calibration": {"used", "probabilities", "cv_agreement",
        "model_agreement", "majority_agreement", "episodes", "fields", "open", "reason"}}``.
        ``probabilities`` (label -> p) is ``None`` when the head did not decide and would have to
        embed the case to say (a shut gate then costs nothing).

    Raises:
        CalibrationHeadError: as :func:`case_row`; for an unknown ``mode``.
    """
    unknown_model = mode == "auto" and model_evidence and head.model_agreement is None
    decides = head.uses("off" if unknown_model else mode)
    row = case_row(head, case, embeddings) if decides or not needs_embedding(head) else None
    out = head.decide(row, model_value, "off" if unknown_model else mode)
    out["calibration"].update(fields=list(head.fields), open=head.open, reason=_why(head, decides, mode, unknown_model))
    return out


def report(head: CalibrationHead | None) -> dict[str, Any] | None:
    """What a head is and what its gate says, JSON-like (``None`` without a head).

    Returns:
        ``{"kind", "fields", "episodes", "label_counts", "cv_agreement", "model_agreement",
        "majority_agreement", "baseline_agreement", "margin", "min_per_label", "open", "reason"}``.
    """
    if head is None:
        return None
    return {
        "kind": head.kind,
        "fields": list(head.fields),
        "episodes": head.episodes,
        "label_counts": dict(head.label_counts),
        "cv_agreement": head.cv_agreement,
        "model_agreement": head.model_agreement,
        "majority_agreement": head.majority_agreement,
        "baseline_agreement": head.baseline_agreement,
        "margin": head.margin,
        "min_per_label": head.min_per_label,
        "open": head.open,
        "reason": _why(head, head.open, "auto", False),
    }
