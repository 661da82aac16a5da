"""Splitting a selection budget over groups (classes) in proportion to size."""

from __future__ import annotations

import numpy as np

__all__ = ["allocate"]


def allocate(counts, K):
    """Split ``K`` over groups in proportion to ``counts`` (largest remainder).

    Every group gets at least one when ``K`` is at least the number of
    groups, and no group gets more than it holds. Returns a NumPy int array.

    Parameters
    ----------
    counts : sequence of int
        The size of each group.
    K : int
        The budget.

    Returns
    -------
    ndarray of int, shape (len(counts),)

    Examples
    --------
    >>> from maxvol_kit.utils import allocate
    >>> allocate([50, 30, 20], 10).tolist()
    [5, 3, 2]
    >>> allocate([98, 1, 1], 3).tolist()  # every group gets one
    [1, 1, 1]
    """
    counts = np.asarray(counts, dtype=np.float64)
    share = K * counts / counts.sum()
    alloc = np.floor(share).astype(int)
    if K >= counts.size:  # every class gets a row when there are enough
        alloc = np.maximum(alloc, 1)
    while alloc.sum() > K:  # take back from the groups that keep at least one
        alloc[np.argmax(np.where(alloc > 1, alloc - share, -np.inf))] -= 1
    order = np.argsort(-(share - alloc), kind="stable")
    for g in order[: K - alloc.sum()]:
        alloc[g] += 1
    return np.minimum(alloc, counts.astype(int))
