"""Splitting a selection budget over groups (classes) in proportion to size."""

from __future__ import annotations

import numpy as np

__all__ = ["allocate"]


def allocate(counts, K):
    """Split ``K`` over groups in proportion to ``counts`` (largest remainder).

    Every group gets at least one when ``K`` is at least the number of
    groups, and no group gets more than it holds. Returns a NumPy int array.
    """
    counts = np.asarray(counts, dtype=np.float64)
    share = K * counts / counts.sum()
    alloc = np.floor(share).astype(int)
    if K >= counts.size:  # every class gets a row when there are enough
        alloc = np.maximum(alloc, 1)
    while alloc.sum() > K:
        alloc[np.argmax(alloc - share)] -= 1
    order = np.argsort(-(share - alloc), kind="stable")
    for g in order[: K - alloc.sum()]:
        alloc[g] += 1
    return np.minimum(alloc, counts.astype(int))
