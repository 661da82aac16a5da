"""Fast MaxVol for a stack of problems, vectorised over the stack.

GRAFT selects rows in every mini-batch: many small problems (b, n, r) at
once. Looping over them in Python costs a kernel launch (or an interpreter
round) per operation per problem; here every step works on the whole stack:
the greedy-volume picks advance one row per step for all problems together
(r steps of a few stacked operations, no general inverse), and the swaps
advance all problems that are not yet dominant, on a working set that shrinks
to the problems still swapping. The only host synchronisations are one per
swap round (how many problems are still above ``tol``?) and one rank check
after the greedy phase. The volume is tracked, not recomputed: the product of
the greedy residual norms times the pivot of every swap.

For each problem the result is the one :func:`maxvol_kit.fast_maxvol` gives
(same greedy picks, same classical swaps; ties aside). A NumPy stack of
small problems (the small path's sizes) goes problem by problem through that
path instead (``maxvol_kit._small.stack_maxvol``, compiled where the
extension is built): on the CPU a loop over problems that each fit in cache
is faster than one NumPy call per step over the whole stack.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np

from maxvol_kit import _small as small
from maxvol_kit._maxvol import MaxVolResult, in_caller_units
from maxvol_kit._validation import check_flag, check_int, check_stack, check_tol

__all__ = ["maxvol_batched"]


def maxvol_batched(A, *, tol=1.05, refine=True, max_iter=None) -> MaxVolResult:
    """Fast MaxVol on each matrix of a stack, vectorised over the stack.

    Parameters
    ----------
    A : array of shape (b, n, r)
        ``b`` tall matrices of full column rank, float32 or float64 (NumPy,
        torch, CuPy or another array-API namespace).
    tol : float, default=1.05
        Dominance tolerance for the swaps, ``>= 1``.
    refine : bool, default=True
        Swap until ``max|C| <= tol`` in every problem; with ``False`` the
        result is the greedy order of each problem.
    max_iter : int or None, default=None
        Cap on the swap rounds; ``None`` means ``100 * r``.

    Returns
    -------
    MaxVolResult
        With batched fields: ``indices`` (b, r) int64 in greedy pick order
        (swaps replace entries in place), ``coefficients`` (b, n, r),
        ``n_iter`` (b,) swaps per problem, ``converged`` (b,) bool,
        ``log_volume`` (b,) ``log|det A[k][indices[k]]|``.

    Raises
    ------
    ValueError
        If ``A`` is not a finite 3-D stack of tall matrices, or a problem has
        numerical rank below r (the message names the first such problem).

    Notes
    -----
    A NumPy or torch CPU stack of small problems (``n <= 1024``,
    ``n r <= 131072``) runs compiled, problem by problem; from ``2^22``
    of ``b n r^2`` it is split over as many threads as the BLAS may use,
    which ``threadpoolctl.threadpool_limits`` caps.

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit import fast_maxvol, maxvol_batched
    >>> A = np.random.default_rng(0).standard_normal((16, 128, 8))
    >>> res = maxvol_batched(A)
    >>> res.indices.shape, bool(res.converged.all())
    ((16, 8), True)
    >>> bool((res.indices[3] == fast_maxvol(A[3]).indices).all())
    True
    """
    hosted = small.on_host(maxvol_batched, A, tol=tol, refine=refine, max_iter=max_iter)
    if hosted is not None:
        return hosted
    A, backend, e = check_stack(A)
    tol = check_tol(tol)
    refine = check_flag(refine, name="refine")
    max_iter = (
        100 * A.shape[2]
        if max_iter is None
        else check_int(
            max_iter, name="max_iter", low=0, high=2**62, fix="pass None for no cap"
        )
    )
    if small.is_small(A[0, ...], backend, max_rows=small.QR_ROWS):
        return in_caller_units(
            _small_loop(A, tol, refine, max_iter), e, A.shape[2], backend
        )
    rows, C, log_volume = _greedy_batched(A, backend)
    n_iter = backend.xp.zeros(A.shape[0], dtype=backend.xp.int64, device=backend.device)
    if refine:
        C, rows, n_iter, log_volume = _swaps_batched(
            C, rows, n_iter, log_volume, tol, max_iter, backend
        )
    C = backend.ops.unit_rows(C, rows)
    peak = backend.xp.max(backend.ops.last_absmax(C), axis=1)
    result = MaxVolResult(
        indices=rows,
        n_iter=n_iter,
        converged=peak <= tol,
        log_volume=log_volume,
        _coefficients=C,
    )
    return in_caller_units(result, e, A.shape[2], backend)


def _small_loop(A, tol, refine, max_iter):
    """The small NumPy path: one geqp3 per problem, then swaps where needed.

    NumPy has no batched kernels, so the stacked steps of
    :func:`_greedy_batched` cost one call per step over the whole stack; a
    loop of single geqp3 calls is faster (256 x 128 x 32: 37 ms against
    60 ms), and compiled (``maxvol_kit._small.stack_maxvol``: its own
    pivoted QR, split over threads) it runs without the interpreter. Each
    problem's result is exactly what :func:`maxvol_kit.fast_maxvol` gives
    (the same loop).
    """
    n, r = A.shape[1:]
    floor = max(n, r) * float(np.finfo(A.dtype).eps)
    rows, C, bad, log_volume, n_iter, peak = small.stack_maxvol(
        A, floor, tol, max_iter, refine
    )
    if bad is not None:
        raise _rank_error(bad, n, r)
    return MaxVolResult(
        indices=rows,
        n_iter=n_iter,
        converged=peak <= tol,
        log_volume=log_volume,
        _coefficients=C,
    )


def _rank_error(first, n, r):
    return ValueError(
        f"A[{first}] (shape {(n, r)}) has numerical rank < {r}: its rows do "
        "not span r dimensions to working precision; drop that problem or "
        "reduce r for the whole stack."
    )


def _take_rows(flat, index, n, xp):
    """``A[k, index[k]]`` for every problem ``k``, from ``flat = A.reshape(b * n, r)``.

    ``index`` has shape (b,); the result (b, r).
    """
    offsets = xp.arange(index.shape[0], device=array_api_compat.device(index)) * n
    return xp.take(flat, index + offsets, axis=0)


def _greedy_batched(A, backend):
    """Greedy-volume picks of every problem, one step for all at a time.

    Classical Gram-Schmidt (twice) builds an orthonormal basis (the rows of
    ``V``) of the picked rows ``Y`` in pick order, so ``L = Y V^T`` is lower
    triangular with the residual norms on its diagonal and the coefficients
    need no general inverse: ``C = A Y^-1 = A V^T L^-1``. Returns
    ``(rows, C, log|det Y|)``.
    """
    xp, ops = backend.xp, backend.ops
    b, n, r = A.shape
    flat = xp.reshape(A, (b * n, r))
    # v^T A^T reads each problem's transpose in one contiguous sweep (half the
    # time of A v for these shapes).
    At = xp.asarray(xp.matrix_transpose(A), copy=True)
    scores = ops.row_sq_norms(A)
    eps = float(xp.finfo(A.dtype).eps)
    floor = (max(n, r) * eps) ** 2 * xp.max(scores, axis=1)
    # Row k of V belongs to pick k: contiguous writes and slices.
    V = xp.zeros((b, r, r), dtype=A.dtype, device=backend.device)
    Y = xp.empty((b, r, r), dtype=A.dtype, device=backend.device)
    log_volume = xp.zeros(b, dtype=A.dtype, device=backend.device)
    deficient = xp.zeros(b, dtype=xp.bool, device=backend.device)
    picks = []
    for k in range(r):
        p = xp.argmax(scores, axis=1)
        y = _take_rows(flat, p, n, xp)
        Y[:, k, :] = y
        if k:
            Vk = V[:, :k, :]
            for _ in range(2):  # classical Gram-Schmidt twice
                y = y - (xp.matrix_transpose(Vk) @ (Vk @ y[..., None]))[..., 0]
        s = xp.sum(y * y, axis=1)
        deficient = deficient | (s <= floor)
        norm = xp.sqrt(xp.where(s > 0, s, 1.0))
        log_volume = log_volume + xp.log(norm)
        v = y / norm[:, None]
        V[:, k, :] = v
        proj = (v[:, None, :] @ At)[:, 0, :]
        scores = ops.fill_along_rows(scores - proj * proj, p[:, None], -math.inf)
        picks.append(p)
    if bool(xp.any(deficient)):
        raise _rank_error(int(xp.argmax(xp.astype(deficient, xp.int8))), n, r)
    C = A @ (xp.matrix_transpose(V) @ ops.inv_lower(Y @ xp.matrix_transpose(V)))
    return xp.stack(picks, axis=1), C, log_volume


def _swaps_batched(C, rows, n_iter, log_volume, tol, max_iter, backend):
    """Classical MaxVol swaps on every problem still above ``tol``, together.

    The problems still swapping form a working set; once half of it is
    dominant it shrinks to the rest (one copy), so the later rounds cost what
    the few slow problems need, not the whole stack.
    """
    xp, ops = backend.xp, backend.ops
    _, n, r = C.shape
    columns = xp.reshape(xp.arange(r, device=backend.device), (1, r))
    work = _Working((C, rows, n_iter, log_volume), backend)
    for _ in range(max_iter):
        # Selected rows hold unit rows (1 <= tol); masking them keeps roundoff
        # from selecting a row twice when tol = 1.
        row_max = ops.fill_along_rows(ops.last_absmax(work.C), work.rows, 0.0)
        i = xp.argmax(row_max, axis=1)
        active = xp.take_along_axis(row_max, i[:, None], axis=1)[:, 0] > tol
        n_active = int(xp.sum(xp.astype(active, xp.int64)))  # the one host sync
        if not n_active:
            break
        if 2 * n_active <= work.size:
            keep = ops.to_host(active)
            work.shrink(keep)
            i, active = (
                _take_where(i, keep, backend),
                _take_where(active, keep, backend),
            )
        row = _take_rows(xp.reshape(work.C, (-1, r)), i, n, xp)
        j = xp.argmax(xp.abs(row), axis=1)
        pivot = xp.take_along_axis(row, j[:, None], axis=1)
        hit = columns == j[:, None]
        w = xp.where(active[:, None], (row - xp.astype(hit, C.dtype)) / pivot, 0.0)
        u = xp.take_along_axis(
            work.C, xp.broadcast_to(j[:, None, None], (work.size, n, 1)), axis=2
        )[..., 0]
        work.C = ops.subtract_outer(work.C, u, w)
        work.rows = xp.where(hit & active[:, None], i[:, None], work.rows)
        work.n_iter = work.n_iter + xp.astype(active, xp.int64)
        work.log_volume = work.log_volume + xp.where(
            active, xp.log(xp.abs(pivot[:, 0])), 0.0
        )
    return work.merge()


def _take_where(x, keep, backend):
    """The entries of ``x`` (on the device) where the host mask ``keep`` holds."""
    return backend.xp.take(x, backend.indices(np.flatnonzero(keep)), axis=0)


class _Working:
    """The problems of a stack still being swapped: their ids and state arrays.

    ``full`` holds the whole stack's arrays ``(C, rows, n_iter, log_volume)``;
    problems that leave the working set are written back into them.
    """

    def __init__(self, full, backend):
        self.full, self.backend = full, backend
        self.ids = np.arange(full[0].shape[0])
        self.C, self.rows, self.n_iter, self.log_volume = full

    @property
    def size(self):
        return self.ids.shape[0]

    def _state(self):
        return (self.C, self.rows, self.n_iter, self.log_volume)

    def shrink(self, keep):
        """Write the problems that leave back into ``full``; keep the others."""
        ops = self.backend.ops
        leaving = ~keep
        for whole, part in zip(self.full, self._state(), strict=True):
            ops.set_rows(
                whole, self.ids[leaving], _take_where(part, leaving, self.backend)
            )
        self.C, self.rows, self.n_iter, self.log_volume = (
            _take_where(part, keep, self.backend) for part in self._state()
        )
        self.ids = self.ids[keep]

    def merge(self):
        """Write the working problems back into ``full``; return the full arrays."""
        if self.size == self.full[0].shape[0]:
            return self._state()
        for whole, part in zip(self.full, self._state(), strict=True):
            self.backend.ops.set_rows(whole, self.ids, part)
        return self.full
