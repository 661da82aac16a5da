"""Cross (skeleton, CUR) approximation from a dominant r x r submatrix.

``M ~ M[:, J] M[I, J]^-1 M[I, :]``. If ``M[I, J]`` has the largest volume
among all r x r submatrices, ``||M - M[:, J] M[I, J]^-1 M[I, :]||_max <=
(r + 1) sigma_{r+1}(M)`` (Goreinov & Tyrtyshnikov, 2001); a submatrix whose
volume is ``1 / rho`` of the largest gets ``rho (r + 1) sigma_{r+1}(M)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from maxvol_kit._maxvol import certify, coefficients, greedy_volume, log_volume
from maxvol_kit._validation import (
    check_int,
    check_matrix,
    check_tol,
    times_power_of_two,
)

__all__ = ["SkeletonResult", "skeleton"]


@dataclass(frozen=True, eq=False)
class SkeletonResult:
    """A cross approximation ``M ~ left @ right``.

    Attributes
    ----------
    rows, columns : array of shape (rank,)
        ``I`` and ``J``: the rows and columns of the core ``M[I, J]``.
    left : array of shape (m, rank)
        ``M[:, J] @ inv(M[I, J])``.
    right : array of shape (rank, n)
        ``M[I, :]``.
    n_iter : int
        Alternations of row and column MaxVol performed.
    converged : bool
        Whether the core is dominant both in ``M[:, J]`` (rows) and in
        ``M[I, :]`` (columns) with the requested ``tol``.
    log_volume : float
        ``log|det M[I, J]|``.

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit import skeleton
    >>> rng = np.random.default_rng(0)
    >>> M = rng.standard_normal((30, 3)) @ rng.standard_normal((3, 20))  # rank 3
    >>> res = skeleton(M, 3)
    >>> res.left.shape, res.right.shape, np.allclose(res.left @ res.right, M)
    ((30, 3), (3, 20), True)
    """

    rows: Any
    columns: Any
    left: Any
    right: Any
    n_iter: int
    converged: bool
    log_volume: float

    def approximation(self):
        """The rank-``r`` approximation ``left @ right`` of shape (m, n)."""
        return self.left @ self.right


def skeleton(M, rank, *, tol=1.05, max_iter=50) -> SkeletonResult:
    """Cross / CUR approximation ``M ~ M[:, J] inv(M[I, J]) M[I, :]``.

    Columns ``J`` start from the greedy-volume (column-pivoted QR) columns of
    ``M``; then row MaxVol on ``M[:, J]`` and column MaxVol on ``M[I, :]``
    alternate, each swap growing ``|det M[I, J]|``, until the core is
    dominant in both directions.

    Parameters
    ----------
    M : array of shape (m, n)
        The matrix, float32 or float64, of numerical rank ``>= rank``.
    rank : int
        Size of the core, ``1 <= rank <= min(m, n)``.
    tol : float, default=1.05
        Dominance tolerance for both the row and the column MaxVol.
    max_iter : int, default=50
        Cap on the row/column alternations.

    Returns
    -------
    SkeletonResult
        ``rows``, ``columns``, factors ``left`` (m, rank) and ``right``
        (rank, n) with ``M ~ left @ right``, ``n_iter``, ``converged``,
        ``log_volume``.

    Notes
    -----
    If ``rank M = rank`` the approximation is exact. Otherwise its largest
    entry error is at most ``rho (rank + 1) sigma_{rank+1}(M)``, where
    ``1 / rho`` is the ratio of ``|det M[I, J]|`` to the largest r x r
    minor; the maximum-volume core has ``rho = 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit import skeleton
    >>> rng = np.random.default_rng(0)
    >>> M = rng.standard_normal((60, 5)) @ rng.standard_normal((5, 40))
    >>> res = skeleton(M, 5)
    >>> np.allclose(res.approximation(), M)
    True
    """
    M, backend, e = check_matrix(M, name="M", tall=False, rescale=True)
    tol = check_tol(tol)
    m, n = M.shape
    rank = check_int(
        rank,
        name="rank",
        low=1,
        high=min(m, n),
        fix="the core cannot be larger than the matrix",
    )
    max_iter = check_int(
        max_iter, name="max_iter", low=1, high=2**62, fix="pass a positive cap"
    )
    hint = "pass rank={found} or less"
    xp = backend.xp

    def columns_of(cols):
        return xp.take(M, backend.indices(cols), axis=1)

    def rows_of(rows):
        return xp.take(M, backend.indices(rows), axis=0)

    cols, _ = greedy_volume(M.T, rank, backend, name="M.T", hint=hint)
    rows, _ = greedy_volume(columns_of(cols), rank, backend, name="M[:, J]", hint=hint)
    converged = False
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (n_iter is reported)
        # certify swaps the host index arrays in place.
        certify(columns_of(cols), rows, tol, 100 * rank, backend)
        col_pass = certify(rows_of(rows).T, cols, tol, 100 * rank, backend)
        if col_pass.n_iter == 0:
            # No column moved, so the rows are still dominant in M[:, cols].
            converged = col_pass.converged
            break
    core = xp.take(rows_of(rows), backend.indices(cols), axis=1)
    return SkeletonResult(
        rows=backend.indices(rows),
        columns=backend.indices(cols),
        left=coefficients(columns_of(cols), rows, backend),
        right=times_power_of_two(rows_of(rows), e, backend),  # caller's units
        n_iter=n_iter,
        converged=converged,
        log_volume=log_volume(core, backend) + rank * e * math.log(2.0),
    )
