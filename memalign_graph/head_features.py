"""What a calibration head sees of a case: feature rows, and statistics of the case's text.

The evidence LLM-Rubric combines (Hashemi et al., ACL 2024, arXiv 2501.00274; see
:mod:`memalign_graph.calibration`): :func:`build_features` puts a case's field vectors and the judge
model's label probabilities side by side; :func:`text_statistics` measures how much of the output
the inputs hold.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from memalign_graph.errors import CalibrationHeadError


def build_features(vectors: Sequence[Any], scores: Any | None = None) -> np.ndarray:
    """The head's feature matrix: field vectors side by side, then the model's label probabilities.

    Args:
        vectors: one array per embedded field (``outputs``, ``inputs``...), each ``(n, d_i)``.
        scores: the judge model's label probabilities under the fixed prompt, ``(n, n_labels)``
            in the judge's label order, or ``None`` to leave them out.

    Returns:
        ``(n, sum(d_i) + n_labels)`` float64 array.

    Raises:
        CalibrationHeadError: if a part is not 2-D, the parts differ in rows, nothing is given,
            or a value is not finite.
    """
    parts = [np.asarray(v, dtype=np.float64) for v in vectors]
    if scores is not None:
        parts.append(np.asarray(scores, dtype=np.float64))
    if not parts:
        raise CalibrationHeadError("features: no field vectors and no scores given")
    for i, part in enumerate(parts):
        if part.ndim != 2:
            raise CalibrationHeadError(f"features: part {i} has shape {part.shape}, expected (cases, dims)")
        if part.shape[0] != parts[0].shape[0]:
            raise CalibrationHeadError(f"features: part {i} has {part.shape[0]} rows, part 0 has {parts[0].shape[0]}")
        if not np.isfinite(part).all():
            raise CalibrationHeadError(f"features: part {i} holds a value that is not finite")
    return np.concatenate(parts, axis=1)


_WORD = re.compile(r"\w+")


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def text_statistics(inputs: str, outputs: str) -> list[float]:
    """Three numbers about a case that a rule relating the output to its inputs can be learned from.

    ``coverage_1`` and ``coverage_3``: the share of the output's distinct word unigrams and trigrams
    (lower-cased runs of letters, digits and underscores) that also occur in the inputs, a lexical form
    of extractive coverage (Grusky, Naaman and Artzi, *Newsroom*, NAACL 2018); ``log_words``:
    ``log(1 + words in the output)``.
    An output with no trigram has ``coverage_3`` 0.

    Args:
        inputs: the case's inputs as text (rendered the way the judge sees them).
        outputs: the case's outputs as text.

    Returns:
        ``[coverage_1, coverage_3, log_words]``.
    """
    out = [w.lower() for w in _WORD.findall(outputs)]
    source = [w.lower() for w in _WORD.findall(inputs)]
    stats = []
    for n in (1, 3):
        grams = _grams(out, n)
        stats.append(len(grams & _grams(source, n)) / len(grams) if grams else 0.0)
    return [*stats, math.log1p(len(out))]
