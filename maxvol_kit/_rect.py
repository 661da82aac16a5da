"""Rectangular MaxVol (Mikhalev & Oseledets, 2018).

Selects ``K >= r`` rows so that the 2-volume ``sqrt(det(A[I]^T A[I]))`` is
large and every row is expressed through the chosen ones,
``A = C A[I]`` with ``C = A pinv(A[I])``, with small row norms ``||C_i||_2``.
Adding row ``i`` multiplies ``det(A[I]^T A[I])`` by ``1 + ||C_i||^2``; the
greedy adds the row with the largest norm.
"""

from __future__ import annotations

import math

import numpy as np

from maxvol_kit import _small as small
from maxvol_kit._greedy import lazy_greedy
from maxvol_kit._maxvol import (
    MaxVolResult,
    coefficients,
    greedy_volume,
    in_caller_units,
    log_volume,
    small_greedy,
)
from maxvol_kit._validation import check_flag, check_int, check_matrix, check_tol

__all__ = ["rect_maxvol"]

_RANK_HINT = (
    "rectangular MaxVol needs full column rank: select from an orthonormal "
    "basis of its range (its first {found} left singular vectors)"
)
# An exchange must grow det(A[I]^T A[I]) by more than this factor: a
# threshold above roundoff keeps the refinement from cycling.
_EXCHANGE_GAIN = 1.0 + 1e-10


def rect_maxvol(
    A, n_rows=None, *, tol=1.0, min_rows=None, max_rows=None, refine=False
) -> MaxVolResult:
    """Rectangular MaxVol: ``K >= r`` rows of large 2-volume.

    Starts from the r greedy-volume rows of :func:`fast_maxvol` and adds rows
    one at a time, each time the row with the largest coefficient norm
    ``||C_i||_2`` (which maximises the growth of the 2-volume), until every
    unselected row has ``||C_i||_2 <= tol`` or ``max_rows`` rows are chosen.
    Each addition costs O(n r): only ``(A[I]^T A[I])^-1`` (r x r) and the
    row norms are kept, never the n x K matrix ``C``.

    Parameters
    ----------
    A : array of shape (n, r)
        A tall matrix of full column rank, float32 or float64.
    n_rows : int, optional
        Select exactly this many rows (``r <= n_rows <= n``); overrides the
        stopping rule. Do not combine with ``min_rows`` / ``max_rows``.
    tol : float, default=1.0
        Stop once every unselected row has ``||C_i||_2 <= tol``.
    min_rows, max_rows : int, optional
        Bounds on the number of rows; defaults ``r`` and ``n``.
    refine : bool, default=False
        After the greedy growth, exchange selected and unselected rows while
        an exchange increases the 2-volume (O(n K r) per exchange). The result
        is then locally maximal: ``||C_i||^2 <= r / (K - r + 1)`` for every
        unselected row.

    Returns
    -------
    MaxVolResult
        ``indices`` (K rows: the r square rows, then the added rows in order),
        ``n_iter`` exchanges, ``converged`` (``||C_i||_2 <= tol`` for every
        unselected row), ``log_volume`` ``= 0.5 log det(A[I]^T A[I])``;
        ``coefficients`` (n, K) is computed on first access.

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit import rect_maxvol
    >>> A = np.random.default_rng(0).standard_normal((1000, 8))
    >>> res = rect_maxvol(A, n_rows=16)
    >>> res.indices.shape
    (16,)
    >>> np.allclose(res.coefficients @ A[res.indices], A)
    True
    """
    A, backend, e = check_matrix(A, rescale=True)
    tol = check_tol(tol, minimum=0.0, usual=1.0)
    refine = check_flag(refine, name="refine")
    n, r = A.shape
    min_rows, max_rows = _row_bounds(n_rows, min_rows, max_rows, n, r)
    small_result = None
    if _small_growth(A, min_rows, max_rows, backend):
        small_result = _rect_small(A, min_rows, max_rows, tol, backend)
    if small_result is None:
        idx, _scores, best_left = rect_greedy(A, min_rows, max_rows, tol, backend)
        volume = None
    else:
        idx, best_left, volume = small_result
    n_iter = 0
    if refine:
        idx, n_iter, best_left = _exchange_refine(A, idx, backend)
    if volume is None or n_iter:
        volume = log_volume(backend.xp.take(A, backend.indices(idx), axis=0), backend)
    result = MaxVolResult(
        n_iter=n_iter,
        converged=best_left <= tol * tol,
        log_volume=volume,
        indices=backend.indices(idx),
        _source=A,
    )
    return in_caller_units(result, e, r, backend)


def _small_growth(A, min_rows, max_rows, backend):
    """Whether the growth goes by pivoted Cholesky (:func:`small.rect_growth`).

    Its cost is the whole factor of the n - r other rows, so it is taken for
    few rows and enough picks: the fixed or capped number of picks, or ``r``
    of them (a guess) when only ``tol`` stops the growth.
    """
    n, r = A.shape
    if not small.is_small(A, backend, max_rows=small.QR_ROWS):
        return False
    picks = max_rows - r if max_rows < n else max(min_rows - r, r)
    return n - r <= small.RECT_ROWS and (n - r) ** 3 <= small.RECT_WORK * picks


def _rect_small(A, min_rows, max_rows, tol, backend):
    """Square greedy start and growth from one geqp3 and one pivoted Cholesky.

    Returns ``(rows, best_left, log_volume)``, or None where the growth
    cannot resolve the scores (:func:`small.rect_growth`).
    """
    r = A.shape[1]
    rows, C, log_det, _, _ = small_greedy(
        A, math.inf, 0, False, backend, hint=_RANK_HINT
    )
    grown = small.rect_growth(C, rows, min_rows - r, max_rows - r, tol * tol)
    if grown is None:
        return None
    added, gain, best_left = grown
    return np.concatenate([rows, added]), best_left, log_det + gain


def _row_bounds(n_rows, min_rows, max_rows, n, r):
    if n_rows is not None:
        if min_rows is not None or max_rows is not None:
            raise ValueError(
                "pass either n_rows or min_rows/max_rows, not both; n_rows="
                f"{n_rows} fixes the number of rows."
            )
        n_rows = check_int(
            n_rows,
            name="n_rows",
            low=r,
            high=n,
            fix="rect_maxvol selects between r = A.shape[1] and n = A.shape[0] rows",
        )
        return n_rows, n_rows
    low = (
        r
        if min_rows is None
        else check_int(
            min_rows, name="min_rows", low=r, high=n, fix="pass a value in that range"
        )
    )
    high = (
        n
        if max_rows is None
        else check_int(
            max_rows,
            name="max_rows",
            low=low,
            high=n,
            fix="max_rows must not be below min_rows (or r)",
        )
    )
    return low, high


def rect_greedy(A, min_rows, max_rows, tol, backend):
    """Greedy rectangular growth; returns ``(rows, scores, best_left)``.

    The growth runs in the coordinates of the square start ``I0``: ``B = A
    A[I0]^-1`` (the square MaxVol coefficients), so ``B[I0] = I`` and
    ``G = B[I]^T B[I]`` has every eigenvalue >= 1. The row norms ``||C_i||``
    are the same in any coordinates, and the Sherman-Morrison downdates of
    ``G^-1`` stay well conditioned even when ``A`` is not. ``scores`` are
    ``||C_i||^2`` recomputed from a QR factor of ``B[I]`` at the end
    (selected rows hold -inf), and ``best_left`` is their maximum over the
    unselected rows; the growth goes on while the recomputed scores say it
    must.
    """
    xp, ops = backend.xp, backend.ops
    idx, _ = greedy_volume(A, A.shape[1], backend, hint=_RANK_HINT)
    B = coefficients(A, idx, backend)
    rows = [int(i) for i in idx]
    scores = ops.row_sq_norms(B)
    ops.fill(scores, rows, -math.inf)
    state = {"Ginv": backend.eye(A.shape[1], A.dtype)}

    def pick(p):
        x = B[p, :]
        g = state["Ginv"] @ x
        # Sherman-Morrison: (G + x x^T)^-1 = G^-1 - g g^T / (1 + x^T g).
        u = g / math.sqrt(1.0 + max(0.0, float(x @ g)))
        state["Ginv"] = state["Ginv"] - xp.linalg.outer(u, u)
        return u

    while True:
        # Scores exact on return only where the second growth reads them: the
        # last refresh of a block is one pass over B that _exact_scores redoes.
        added, _ = lazy_greedy(
            B,
            scores,
            min_rows - len(rows),
            pick,
            backend=backend,
            exact_on_return=max_rows > min_rows,
        )
        rows += added
        more, _ = lazy_greedy(
            B,
            scores,
            max_rows - len(rows),
            pick,
            backend=backend,
            stop_at=tol * tol,
            exact_on_return=False,
        )
        rows += more
        scores, state["Ginv"] = _exact_scores(B, rows, backend)
        best_left = float(xp.max(scores)) if len(rows) < A.shape[0] else -math.inf
        if best_left <= tol * tol or len(rows) >= max_rows:
            return np.asarray(rows, dtype=np.int64), scores, best_left


def _exact_scores(B, rows, backend):
    """``||C_i||^2`` and ``(B[I]^T B[I])^-1`` recomputed from ``B[I] = Q R``.

    ``C = B pinv(B[I]) = B R^-1 Q^T`` and ``Q`` has orthonormal columns, so
    ``||C_i|| = ||B_i R^-1||``.
    """
    xp, ops = backend.xp, backend.ops
    _, R = xp.linalg.qr(xp.take(B, backend.indices(rows), axis=0))
    R_inv = xp.linalg.inv(R)
    scores = ops.row_sq_norms(ops.thin_product(B, R_inv))
    ops.fill(scores, rows, -math.inf)
    return scores, R_inv @ R_inv.T


def _exchange_refine(A, idx, backend, max_exchanges=None):
    """Single-row exchanges while one grows the 2-volume (Mikhalev & Oseledets).

    Exchanging selected row ``j`` (position ``t``) for unselected row ``i``
    multiplies ``det(A[I]^T A[I])`` by ``(1 + L_i)(1 - L_j) + C_it^2`` with
    ``L = ||C_i||^2`` and ``C = A pinv(A[I])``.
    """
    xp, ops = backend.xp, backend.ops
    n = A.shape[0]
    K = idx.shape[0]
    max_exchanges = 100 * K if max_exchanges is None else max_exchanges
    n_iter = 0
    while True:
        C = coefficients(A, idx, backend)
        L = ops.row_sq_norms(C)
        diag = xp.stack([C[i, t] for t, i in enumerate(idx.tolist())])
        gain = xp.reshape(1.0 + L, (-1, 1)) * xp.reshape(1.0 - diag, (1, -1)) + C * C
        ops.fill(gain, idx, -math.inf)
        flat = int(xp.argmax(xp.reshape(gain, (-1,))))
        i, t = divmod(flat, K)
        ops.fill(L, idx, -math.inf)
        best_left = float(xp.max(L)) if K < n else -math.inf
        if float(gain[i, t]) <= _EXCHANGE_GAIN or n_iter >= max_exchanges:
            return idx, n_iter, best_left
        idx = idx.copy()
        idx[t] = i
        n_iter += 1
