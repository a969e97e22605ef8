"""What CE 1.0.2's instance-parallel merge gets wrong, set right after it.

CE joins the chunks' explanations into one ``CalibratedExplanations`` and then
gives every explanation the *whole* test matrix as its ``x_test`` (a serial
explain gives each its own row), and keeps in each the probability matrix of
its own chunk only (a serial explain gives each the matrix of the whole
call). So ``add_conjunctions()`` found no conjunctive rule at all (140 for 7
instances serially), and ``.probabilities`` stacked every chunk's matrix once
per explanation in it (25 rows for 7 instances). :func:`repair` gives each
explanation what a serial explain gives it; everything else is CE's own.
"""

from __future__ import annotations

from typing import Any

FULL_PROBABILITIES = "__full_probabilities__"
"""The key under which CE keeps the call's whole probability matrix in each explanation's ``prediction``."""


def repair(explained: Any) -> None:
    """Rows and probabilities as a serial explain leaves them; anything unlike CE 1.0.2's merge is left alone."""
    items = getattr(explained, "explanations", None)
    whole: Any = getattr(explained, "x_test", None)
    if not items or whole is None:
        return
    for explanation in items:
        if id(getattr(explanation, "x_test", None)) == id(whole):  # the merge's whole matrix
            explanation.x_test = whole[explanation.index]
    _join_probabilities(explained, items)


def _join_probabilities(explained: Any, items: list[Any]) -> None:
    """Each chunk's explanations share their chunk's matrix (one object): stacked in order, they are the
    call's, which every explanation then shares, as a serial explain's do. Factual explanations hold it as
    ``prediction_probabilities`` too; alternatives only in ``prediction``, where CE's narratives read an
    instance's class probabilities by its index in the call."""
    import numpy as np

    chunks: list[Any] = []
    rests: list[tuple[Any, ...]] = []  # what else each chunk's tuple holds (multiclass: its predicted classes)
    for explanation in items:
        matrix = _chunk_matrix(explanation)
        if matrix is None:
            return  # regression, or not CE's classification payload: nothing to join
        if not chunks or matrix is not chunks[-1]:
            chunks.append(matrix)
            rests.append(_rest_of_full(explanation))
    if len(chunks) < 2 or not all(isinstance(m, np.ndarray) and m.ndim == 2 for m in chunks):
        return
    whole = np.vstack(chunks)
    if whole.shape[0] != len(items):
        return
    rest = _joined_rest(rests, chunks)
    for explanation in items:
        if getattr(explanation, "prediction_probabilities", None) is not None:
            explanation.prediction_probabilities = whole
        full = _full(explanation)
        if isinstance(full, tuple) and full:
            explanation.prediction[FULL_PROBABILITIES] = (whole, *(full[1:] if rest is None else rest))
        elif full is not None:
            explanation.prediction[FULL_PROBABILITIES] = whole
    if hasattr(explained, "_probabilities_cache"):
        explained._probabilities_cache = None


def _chunk_matrix(explanation: Any) -> Any:
    """The chunk's probability matrix an explanation holds, wherever CE put it (None if none)."""
    matrix = getattr(explanation, "prediction_probabilities", None)
    if matrix is not None:
        return matrix
    full = _full(explanation)
    return full[0] if isinstance(full, tuple) and full else full


def _full(explanation: Any) -> Any:
    """What the explanation's ``prediction`` holds under the full-probabilities key (None if nothing)."""
    prediction = getattr(explanation, "prediction", None)
    return prediction.get(FULL_PROBABILITIES) if isinstance(prediction, dict) else None


def _rest_of_full(explanation: Any) -> tuple[Any, ...]:
    full = _full(explanation)
    return tuple(full[1:]) if isinstance(full, tuple) else ()


def _joined_rest(rests: list[tuple[Any, ...]], chunks: list[Any]) -> tuple[Any, ...] | None:
    """The rest of the chunks' tuples joined as their matrices are, where each part has a row per instance of
    its chunk (multiclass: the predicted classes, which stayed the first chunk's: 16 for 60 instances, the CE
    trial); None where they are not such parts, and each explanation keeps its own."""
    import numpy as np

    if not rests or any(len(r) != len(rests[0]) for r in rests) or not rests[0]:
        return None
    joined = []
    for k in range(len(rests[0])):
        parts = [r[k] for r in rests]
        if not all(isinstance(p, np.ndarray) and p.ndim >= 1 and len(p) == len(m)
                   for p, m in zip(parts, chunks, strict=True)):
            return None
        joined.append(np.concatenate(parts))
    return tuple(joined)
