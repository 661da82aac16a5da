"""Fast MaxVol for a stack of problems, vectorised over the stack.

GRAFT selects rows in every mini-batch: many small problems (b, n, r) at
once. Looping over them in Python costs a kernel launch (or an interpreter
round) per operation per problem; here every step works on the whole stack:
the greedy-volume picks advance one row per step for all problems together,
and the swaps advance all problems that are not yet dominant. The only host
synchronisations are one per swap round (is any problem still above
``tol``?) and one rank check after the greedy phase.

For each problem the result is the one :func:`maxvol_kit.fast_maxvol` gives
(same greedy picks, same classical swaps; ties aside).
"""

from __future__ import annotations

import math

from maxvol_kit._maxvol import MaxVolResult
from maxvol_kit._validation import check_int, check_stack, check_tol

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
    A, backend = check_stack(A)
    tol = check_tol(tol)
    xp = backend.xp
    b, r = A.shape[0], A.shape[2]
    max_iter = (
        100 * r
        if max_iter is None
        else check_int(
            max_iter, name="max_iter", low=0, high=2**62, fix="pass None for no cap"
        )
    )
    rows = _greedy_batched(A, backend)
    C = A @ xp.linalg.inv(_gather_rows(A, rows, xp))
    n_iter = xp.zeros(b, dtype=xp.int64, device=backend.device)
    if refine:
        C, rows, n_iter = _swaps_batched(C, rows, tol, max_iter, backend)
    C = _unit_rows(C, rows, backend)
    peak = xp.max(xp.reshape(xp.abs(C), (b, -1)), axis=1)
    _, logabsdet = xp.linalg.slogdet(_gather_rows(A, rows, xp))
    return MaxVolResult(
        indices=rows,
        n_iter=n_iter,
        converged=peak <= tol,
        log_volume=logabsdet,
        _coefficients=C,
    )


def _gather_rows(A, rows, xp):
    """``A[k][rows[k]]`` for every problem ``k``: shape (b, len(rows[k]), r)."""
    b, _, r = A.shape
    index = xp.broadcast_to(xp.reshape(rows, (b, -1, 1)), (b, rows.shape[1], r))
    return xp.take_along_axis(A, index, axis=1)


def _greedy_batched(A, backend):
    """Greedy-volume picks of every problem, one step for all at a time."""
    xp = backend.xp
    b, n, r = A.shape
    scores = xp.sum(A * A, axis=2)
    eps = float(xp.finfo(A.dtype).eps)
    floor = (max(n, r) * eps) ** 2 * xp.max(scores, axis=1)
    V = xp.zeros((b, r, r), dtype=A.dtype, device=backend.device)
    positions = xp.reshape(xp.arange(n, device=backend.device), (1, n))
    deficient = xp.zeros(b, dtype=xp.bool, device=backend.device)
    picks = []
    for k in range(r):
        p = xp.argmax(scores, axis=1)
        y = _gather_rows(A, xp.reshape(p, (b, 1)), xp)[:, 0, :]
        Vk = V[:, :, :k]
        for _ in range(2):  # classical Gram-Schmidt twice
            y = y - (Vk @ (xp.matrix_transpose(Vk) @ y[..., None]))[..., 0]
        s = xp.sum(y * y, axis=1)
        deficient = deficient | (s <= floor)
        V[:, :, k] = y / xp.reshape(xp.sqrt(xp.where(s > 0, s, 1.0)), (b, 1))
        proj = (A @ V[:, :, k, None])[..., 0]
        scores = xp.where(positions == p[:, None], -math.inf, scores - proj * proj)
        picks.append(p)
    if bool(xp.any(deficient)):
        first = int(xp.argmax(xp.astype(deficient, xp.int8)))
        raise ValueError(
            f"A[{first}] (shape {(n, r)}) has numerical rank < {r}: its rows do "
            "not span r dimensions to working precision; drop that problem or "
            "reduce r for the whole stack."
        )
    return xp.stack(picks, axis=1)


def _swaps_batched(C, rows, tol, max_iter, backend):
    """Classical MaxVol swaps on every problem still above ``tol``, together."""
    xp = backend.xp
    b, n, r = C.shape
    columns = xp.reshape(xp.arange(r, device=backend.device), (1, r))
    n_iter = xp.zeros(b, dtype=xp.int64, device=backend.device)
    for _ in range(max_iter):
        # Selected rows hold unit rows (1 <= tol); masking them keeps roundoff
        # from selecting a row twice when tol = 1.
        selected = _selected(rows, n, backend)[..., None]
        flat_abs = xp.reshape(xp.where(selected, 0.0, xp.abs(C)), (b, n * r))
        flat = xp.argmax(flat_abs, axis=1)
        value = xp.take_along_axis(flat_abs, flat[:, None], axis=1)[:, 0]
        active = value > tol
        if not bool(xp.any(active)):  # the one host sync per round
            break
        i, j = flat // r, flat % r
        u = xp.take_along_axis(
            C, xp.broadcast_to(xp.reshape(j, (b, 1, 1)), (b, n, 1)), axis=2
        )[..., 0]
        row = _gather_rows(C, xp.reshape(i, (b, 1)), xp)[:, 0, :]
        pivot = xp.take_along_axis(row, j[:, None], axis=1)
        w = (row - xp.astype(columns == j[:, None], C.dtype)) / pivot
        w = xp.where(active[:, None], w, 0.0)
        C = C - u[:, :, None] * w[:, None, :]
        rows = xp.where((columns == j[:, None]) & active[:, None], i[:, None], rows)
        n_iter = n_iter + xp.astype(active, xp.int64)
    return C, rows, n_iter


def _onehot(rows, n, backend):
    """``onehot[k, t, i] = (rows[k, t] == i)``, shape (b, r, n)."""
    xp = backend.xp
    positions = xp.reshape(xp.arange(n, device=backend.device), (1, 1, n))
    return xp.reshape(rows, (rows.shape[0], rows.shape[1], 1)) == positions


def _selected(rows, n, backend):
    """Boolean (b, n): which rows each problem has selected."""
    return backend.xp.any(_onehot(rows, n, backend), axis=1)


def _unit_rows(C, rows, backend):
    """Make ``C[k][rows[k]]`` exactly the identity (roundoff of the updates)."""
    xp = backend.xp
    onehot = _onehot(rows, C.shape[1], backend)
    units = xp.matrix_transpose(xp.astype(onehot, C.dtype))
    return xp.where(xp.any(onehot, axis=1)[..., None], units, C)
