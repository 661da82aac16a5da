"""Square MaxVol: the classical swap algorithm and greedy-volume Fast MaxVol.

For ``A`` of shape (n, r) and rank r, a set ``I`` of r rows is *dominant*
when every entry of the coefficient matrix ``C = A A[I]^-1`` satisfies
``|C_ij| <= tol``. Then ``A = C A[I]`` expresses every row through the chosen
ones with bounded coefficients, and ``|det A[I]|`` is within
``(tol sqrt(r))^r`` of the largest r x r minor (Goreinov et al., 2010).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from maxvol_kit import _small as small
from maxvol_kit._backend import get_backend
from maxvol_kit._greedy import lazy_greedy
from maxvol_kit._swaps import swap_to_dominance
from maxvol_kit._validation import (
    ConvergenceWarning,
    check_flag,
    check_indices,
    check_int,
    check_matrix,
    check_tol,
    rank_deficient_error,
    rescaled,
)

__all__ = ["MaxVolResult", "fast_maxvol", "maxvol"]


@dataclass(frozen=True, eq=False)
class MaxVolResult:
    """The rows a MaxVol function selected, with the certificate of their quality.

    Attributes
    ----------
    indices : array of shape (k,)
        The selected row indices (int64, same backend and device as the input),
        distinct. For :func:`fast_maxvol` they are in greedy pick order, with
        swaps replacing entries in place.
    n_iter : int
        The number of swaps (square) or exchanges (rectangular) performed.
    converged : bool
        Whether the result met its tolerance: ``max|C| <= tol`` for square
        MaxVol, ``max_i ||C_i||_2 <= tol`` over unselected rows for
        rectangular MaxVol.
    log_volume : float
        ``log`` of the product of the singular values of ``A[indices]``:
        ``log|det A[indices]|`` when square, the log 2-volume otherwise.
    coefficients : array of shape (n, k)
        ``C = A @ pinv(A[indices])``, so that ``A = C @ A[indices]`` when
        ``k >= rank A``. Computed on first access when the algorithm did not
        form it (the result then holds a reference to ``A``).

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit import maxvol
    >>> A = np.random.default_rng(0).standard_normal((50, 4))
    >>> res = maxvol(A)
    >>> res.indices.shape, res.converged, bool(np.abs(res.coefficients).max() <= 1.05)
    ((4,), True, True)
    >>> np.allclose(res.coefficients @ A[res.indices], A)
    True
    """

    indices: Any
    n_iter: int
    converged: bool
    log_volume: float
    _coefficients: Any = field(default=None, repr=False)
    _source: Any = field(default=None, repr=False)

    @cached_property
    def coefficients(self):
        """Coefficient matrix ``C`` with ``A = C @ A[indices]`` (see class doc)."""
        if self._coefficients is not None:
            return self._coefficients
        backend = get_backend(self._source)
        idx = backend.ops.to_host(self.indices)
        source, _ = rescaled(self._source, backend)  # C does not depend on scale
        return coefficients(source, idx, backend)


def coefficients(A, idx, backend):
    """``A @ pinv(A[idx])`` through the small ``A[idx]`` (``idx`` on the host)."""
    xp, ops = backend.xp, backend.ops
    sub = xp.take(A, backend.indices(idx), axis=0)
    k, r = sub.shape
    if k == r:
        C = A @ xp.linalg.inv(sub)
        ops.set_rows(C, idx, backend.eye(r, A.dtype))
        return C
    if k > r:
        # pinv(A_I) = R^-1 Q^T for A_I = Q R.
        Q, R = xp.linalg.qr(sub)
        return (A @ xp.linalg.inv(R)) @ Q.T
    # k < r: pinv(A_I) = Q R^-T for A_I^T = Q R.
    Q, R = xp.linalg.qr(sub.T)
    C = (A @ Q) @ xp.linalg.inv(R.T)
    ops.set_rows(C, idx, backend.eye(k, A.dtype))
    return C


def in_caller_units(result, e, n_columns, backend):
    """``result`` of a problem scaled by ``2^-e`` (:func:`rescaled`), unscaled.

    The rows and the coefficients do not depend on the scale; the log-volume
    of ``k = min(len(indices), n_columns)`` singular values grows by
    ``k * e * log 2`` (``e`` per problem for a stack).
    """
    if (e == 0) if isinstance(e, int) else not np.any(e):
        return result
    shift = min(result.indices.shape[-1], n_columns) * math.log(2.0) * e
    if np.ndim(e):
        shift = backend.asarray(shift, dtype=result.log_volume.dtype)
    else:
        shift = float(shift)
    return dataclasses.replace(result, log_volume=result.log_volume + shift)


def singular_values(A_sub, backend):
    """The singular values of a small matrix, on the host in float64."""
    return backend.ops.to_host(backend.xp.linalg.svdvals(A_sub)).astype(np.float64)


def log_volume(A_sub, backend):
    """Log of the product of the singular values of a small matrix."""
    with np.errstate(divide="ignore"):
        return float(np.sum(np.log(singular_values(A_sub, backend))))


def well_conditioned(s, A, backend):
    """Whether singular values ``s`` of a submatrix of ``A`` have full rank."""
    return bool(s[-1] > rank_floor(A, backend) * s[0])


def rank_floor(A, backend):
    """Relative pivot size below which a row counts as linearly dependent.

    The factor of ``numpy.linalg.matrix_rank``, ``max(n, r) * eps``: a pivot
    smaller than it times the largest one is roundoff.
    """
    n, r = A.shape
    return max(n, r) * float(backend.xp.finfo(A.dtype).eps)


class _RankDeficient(Exception):
    def __init__(self, found):
        self.found = found


def _greedy_pivots(A, k, backend):
    """The first ``k`` pivots of column-pivoted QR of ``A.T``, in pick order.

    Returns ``(rows, V)``: ``V`` of shape (r, k) is an orthonormal basis of
    the span of the picked rows, built by Gram-Schmidt in pick order.
    Raises ``_RankDeficient`` when a pivot's residual falls below
    :func:`rank_floor` times the largest row norm.
    """
    if small.is_small(A, backend, max_rows=small.QR_ROWS):  # one geqp3 call
        rows, V, found = small.greedy_pivots(
            A, k, rank_floor(A, backend), basis=k < A.shape[1]
        )
        if found is not None:
            raise _RankDeficient(found)
        return rows, V
    xp = backend.xp
    r = A.shape[1]
    scores = backend.ops.row_sq_norms(A)
    floor = (rank_floor(A, backend) ** 2) * float(xp.max(scores))
    V = xp.zeros((r, k), dtype=A.dtype, device=backend.device)
    count = 0

    def pick(p):
        nonlocal count
        Vk = V[:, :count]
        y = A[p, :]
        # Classical Gram-Schmidt twice: orthogonal to working precision.
        for _ in range(2):
            y = y - Vk @ (Vk.T @ y)
        s = float(y @ y)
        if not s > floor:
            raise _RankDeficient(count)
        V[:, count] = y / math.sqrt(s)
        count += 1
        return V[:, count - 1]

    rows, _ = lazy_greedy(A, scores, k, pick, backend=backend, exact_on_return=False)
    return np.asarray(rows, dtype=np.int64), V


def greedy_volume(A, k, backend, *, name="A", hint=None):
    """:func:`_greedy_pivots`, with a clear error for rank-deficient ``A``.

    ``hint`` formats the fix with ``{found}``, the numerical rank found.
    """
    try:
        return _greedy_pivots(A, k, backend)
    except _RankDeficient as exc:
        raise _greedy_rank_error(A, exc.found, k, name, hint) from None


def _greedy_rank_error(A, found, k, name="A", hint=None):
    hint = hint or (
        "pass rank={found} to fast_maxvol to pick that many rows, or select "
        "from an orthonormal basis of its range"
    )
    return rank_deficient_error(name, A.shape, found, k, hint.format(found=found))


def numerical_rank(A, backend):
    """The numerical rank of ``A`` as greedy pivoting reveals it."""
    try:
        _greedy_pivots(A, A.shape[1], backend)
    except _RankDeficient as exc:
        return exc.found
    return A.shape[1]


def certify(
    A, idx, tol, max_iter, backend, *, refine=True, C=None, log_det=None, few=False
):
    """Coefficients of a square selection, swapped to dominance if ``refine``.

    ``idx`` (host int64) is updated in place by the swaps; ``C``, if given,
    is ``A A[idx]^-1`` already, and ``log_det``, if given, ``log|det A[idx]|``
    (the small path then tracks the volume through the swaps instead of
    factoring the final rows). ``few``: the start is the greedy one, which
    rarely needs more than a couple of swaps (see :func:`_swaps`).
    """
    C = coefficients(A, idx, backend) if C is None else C
    small_path = small.is_small(A, backend)
    gain = 0.0
    if refine:
        n_iter, value, gain = _swaps(C, idx, tol, max_iter, backend, few)
    else:
        n_iter, value = 0, backend.ops.absmax(C)[2]
    converged = value <= tol
    if refine and not converged:
        _warn_unconverged(max_iter, value, tol)
    # The starts are full rank (greedy pivots above the rank floor, an LU or
    # user start checked by its singular values) and swaps only grow the volume.
    if small_path and log_det is not None and gain is not None:
        volume = log_det + gain  # each swap multiplies |det| by its |C_ij|
    else:
        sub = backend.xp.take(A, backend.indices(idx), axis=0)
        volume = small.log_abs_det(sub) if small_path else log_volume(sub, backend)
    return MaxVolResult(
        indices=backend.indices(idx),
        n_iter=n_iter,
        converged=converged,
        log_volume=volume,
        _coefficients=C,
    )


def _warn_unconverged(max_iter, value, tol):
    warnings.warn(
        f"MaxVol stopped after max_iter={max_iter} swaps with max|C| = "
        f"{value:.4g} > tol = {tol}; raise max_iter or tol.",
        ConvergenceWarning,
        stacklevel=4,
    )


# Entries of C up to which the classical swaps (one pass over C each, BLAS
# ger in place) beat the deferred engine of ``maxvol_kit._swaps`` even for an
# LU start's dozen swaps (one thread, 12 swaps: 1.9 against 4.0 ms at
# 6000 x 32, 3.8 against 7.7 ms at 20000 x 32; 85 against 52 ms at
# 100000 x 64). Beyond it a greedy start still takes up to
# :data:`CLASSICAL_SWAPS` classical swaps first: it needs 0-3, and the
# deferred engine's set-up costs more than they do (1,000,000 x 16, 3 swaps:
# 41 against 144 ms, with the largest |C_ij| found by argmax and argmin).
CLASSICAL_ENTRIES = 1 << 20
CLASSICAL_SWAPS = 8


def _swaps(C, idx, tol, max_iter, backend, few):
    """Swaps to dominance: ``(n_swaps, max|C|, log_gain)``.

    Classical on NumPy where they are the faster (see
    :data:`CLASSICAL_ENTRIES`), the deferred engine otherwise or for what is
    left; ``log_gain`` (the sum of the swaps' ``log|C_ij|``) is None when the
    deferred engine ran.
    """
    n_iter, gain = 0, 0.0
    if backend.name == "numpy":
        size = C.shape[0] * C.shape[1]
        cap = max_iter if size <= CLASSICAL_ENTRIES else CLASSICAL_SWAPS * few
        if cap:
            n_iter, value, gain = small.swaps(C, idx, tol, min(cap, max_iter))
            if not value > tol or n_iter == max_iter:
                return n_iter, value, gain
    more, value = swap_to_dominance(C, idx, tol, max_iter - n_iter, backend)
    return n_iter + more, value, (gain if more == 0 else None)


def _default_max_iter(max_iter, r):
    if max_iter is None:
        return 100 * r
    return check_int(
        max_iter, name="max_iter", low=0, high=2**62, fix="pass None for no cap"
    )


def maxvol(A, *, tol=1.05, max_iter=None, init="lu", start=None) -> MaxVolResult:
    """Classical square MaxVol: a dominant r x r submatrix by row swaps.

    Starts from the rows that LU with partial pivoting picks (or from
    ``start``), then swaps one row at a time while some coefficient
    ``|C_ij| > tol``, where ``C = A @ inv(A[I])``. Each swap multiplies
    ``|det A[I]|`` by ``|C_ij|``, so the volume only grows. The rank-1
    updates of ``C`` are deferred over blocks of swaps and kept exact on the
    rows with the largest entries (see ``maxvol_kit._swaps``); for
    ``n <= 2048`` the swaps are exactly the classical ones.

    Parameters
    ----------
    A : array of shape (n, r)
        A tall matrix of full column rank, float32 or float64.
    tol : float, default=1.05
        Dominance tolerance, ``>= 1``.
    max_iter : int or None, default=None
        Cap on the number of swaps; ``None`` means ``100 * r``.
    init : {"lu", "greedy"}, default="lu"
        Starting rows: LU partial pivoting (the classical choice) or the greedy
        volume picks of :func:`fast_maxvol`. Ignored when ``start`` is given.
    start : array-like of int of shape (r,), optional
        Starting rows; ``A[start]`` must be nonsingular.

    Returns
    -------
    MaxVolResult
        ``indices`` (r rows), ``coefficients`` ``C`` (n, r) with ``C[indices]``
        the identity, ``n_iter`` swaps, ``converged`` (``max|C| <= tol``),
        ``log_volume`` ``= log|det A[indices]|``.

    Raises
    ------
    ValueError
        If ``A`` is not a finite tall 2-D matrix, has numerical rank below r,
        or ``start`` is invalid or singular.

    See Also
    --------
    fast_maxvol : Greedy-volume start (usually far larger volume) + swaps.

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit import maxvol
    >>> A = np.random.default_rng(0).standard_normal((1000, 8))
    >>> res = maxvol(A)
    >>> bool(np.abs(res.coefficients).max() <= 1.05)
    True
    >>> np.allclose(res.coefficients @ A[res.indices], A)
    True
    """
    hosted = small.on_host(
        maxvol, A, tol=tol, max_iter=max_iter, init=init, start=start
    )
    if hosted is not None:
        return hosted
    A, backend, e = check_matrix(A, rescale=True)
    tol = check_tol(tol)
    r = A.shape[1]
    max_iter = _default_max_iter(max_iter, r)
    idx, C, log_det = _start_rows(A, init, start, backend)
    result = certify(A, idx, tol, max_iter, backend, C=C, log_det=log_det)
    return in_caller_units(result, e, r, backend)


def _start_rows(A, init, start, backend):
    """The starting rows, and their coefficients and log|det| when free."""
    n, r = A.shape
    if start is not None:
        idx = check_indices(start, name="start", n=n, size=r)
        sub = backend.xp.take(A, backend.indices(idx), axis=0)
        if not well_conditioned(singular_values(sub, backend), A, backend):
            raise ValueError(
                "start selects a numerically singular submatrix A[start]; pass "
                "rows that are linearly independent, or start=None."
            )
        return idx, None, None
    if init == "greedy":
        return greedy_volume(A, r, backend)[0], None, None
    if init != "lu":
        raise ValueError(f"init ({init!r}) must be 'lu' or 'greedy'.")
    if small.is_small(A, backend):  # rows, C and log|det| from one LU
        idx, rcond, C, log_det = small.lu_coefficients(A)
        full_rank = rcond > rank_floor(A, backend)
    else:
        (idx, _), C, log_det = backend.ops.lu_pivot_rows(A), None, None
        sub = backend.xp.take(A, backend.indices(idx), axis=0)
        full_rank = well_conditioned(singular_values(sub, backend), A, backend)
    # LU pivots are not rank-revealing: a start whose rows are not well
    # conditioned gives way to the greedy one, or to the rank error.
    if not full_rank:
        found = numerical_rank(A, backend)
        if found == r:
            return greedy_volume(A, r, backend)[0], None, None
        raise rank_deficient_error(
            "A",
            A.shape,
            found,
            r,
            "select from an orthonormal basis of its range (e.g. the first "
            f"{found} left singular vectors), or call fast_maxvol(A, rank={found})",
        )
    return idx.astype(np.int64), C, log_det


def fast_maxvol(A, rank=None, *, tol=1.05, refine=True) -> MaxVolResult:
    """Fast MaxVol: greedy-volume rows in pick order, certified by swaps.

    Picks, one at a time, the row with the largest residual norm after
    projecting out the rows already picked: exactly the pivots of
    column-pivoted QR of ``A.T`` (``scipy.linalg.qr(A.T, pivoting=True)``),
    so every prefix of the result is the greedy choice of its size. Then, if
    ``refine``, MaxVol swaps certify ``max|C| <= tol``. On random matrices
    the greedy rows already have a much larger volume than the LU start of
    :func:`maxvol` and need few swaps or none.

    The work is O(n r^2): the selection keeps exact scores for a short list
    of candidate rows and refreshes all scores with one matrix-matrix product
    every block of picks (see ``maxvol_kit._greedy``).

    Parameters
    ----------
    A : array of shape (n, r)
        A tall matrix, float32 or float64.
    rank : int or None, default=None
        Number of rows to pick, ``1 <= rank <= r``; ``None`` means r. With
        ``rank < r`` the picks span the dominant part of the row space
        (rank-revealing use) and need only numerical rank ``>= rank``; the
        coefficients and swaps then refer to ``B = A @ Q``, ``Q`` an
        orthonormal basis of the span of the greedy picks.
    tol : float, default=1.05
        Dominance tolerance for the swaps, ``>= 1``.
    refine : bool, default=True
        Run swaps until ``max|C| <= tol``. With ``False`` the result is the
        pure greedy order; ``converged`` still reports whether it is dominant.

    Returns
    -------
    MaxVolResult
        ``indices`` in pick order (swaps replace entries in place),
        ``coefficients`` (n, rank), ``n_iter`` swaps, ``converged``,
        ``log_volume``.

    Raises
    ------
    ValueError
        If ``A`` is not a finite tall 2-D matrix or its numerical rank is
        below ``rank`` (the message gives the rank found).

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit import fast_maxvol
    >>> A = np.random.default_rng(0).standard_normal((1000, 8))
    >>> res = fast_maxvol(A)
    >>> res.converged, res.indices.shape
    (True, (8,))
    """
    refine = check_flag(refine, name="refine")
    hosted = small.on_host(fast_maxvol, A, rank=rank, tol=tol, refine=refine)
    if hosted is not None:
        return hosted
    A, backend, e = check_matrix(A, rescale=True)
    tol = check_tol(tol)
    r = A.shape[1]
    k = (
        r
        if rank is None
        else check_int(
            rank, name="rank", low=1, high=r, fix="pass rank=None for the full rank"
        )
    )
    if k == r and small.is_small(A, backend, max_rows=small.QR_ROWS):
        result = _small_fast_maxvol(A, tol, refine, backend)
    else:
        idx, V = greedy_volume(A, k, backend)
        B = A if k == r else A @ V
        result = certify(B, idx, tol, 100 * k, backend, refine=refine, few=True)
    return in_caller_units(result, e, k, backend)


def _small_fast_maxvol(A, tol, refine, backend):
    """Picks, ``C`` and swaps of a small problem in one call (a stack of one)."""
    r = A.shape[1]
    max_iter = 100 * r
    rows, C, log_det, n_iter, peak = small_greedy(A, tol, max_iter, refine, backend)
    converged = peak <= tol
    if refine and not converged:  # pragma: no cover - a greedy start needs 0-3
        _warn_unconverged(max_iter, peak, tol)
    return MaxVolResult(
        indices=rows,
        n_iter=n_iter,
        converged=converged,
        log_volume=log_det,
        _coefficients=C,
    )


def small_greedy(A, tol, max_iter, refine, backend, *, hint=None):
    """The greedy rows of a small ``A`` and ``C = A A[rows]^-1``, swapped if ``refine``.

    The loop of :func:`maxvol_batched`'s small stacks (one column-pivoted
    QR, one triangular solve, the swaps; compiled where
    ``maxvol_kit._kernels`` is) on a stack of one. Returns ``(rows, C,
    log|det A[rows]|, n_swaps, max|C|)``; a rank-deficient ``A`` raises
    :func:`_greedy_rank_error` (``hint`` as there).
    """
    r = A.shape[1]
    floor = rank_floor(A, backend)
    rows, C, bad, log_det, n_iter, peak = small.stack_maxvol(
        A[None], floor, tol, max_iter, refine
    )
    if bad is not None:
        found = small.greedy_pivots(A, r, floor, basis=False)[2]
        raise _greedy_rank_error(A, found, r, hint=hint)
    return rows[0], C[0], float(log_det[0]), int(n_iter[0]), float(peak[0])
