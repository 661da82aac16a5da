"""MaxVol of small NumPy matrices: one LAPACK call for the picks, plain swaps.

At the sizes a training loop selects in (a mini-batch: n ~ 64-512 rows,
r ~ 8-64 columns) the blocked engines of ``maxvol_kit._greedy`` and
``maxvol_kit._swaps`` spend more on their bookkeeping (candidate lists,
deferred updates, one interpreter round per pick) than on the arithmetic.
Here the greedy-volume picks are the pivots of one column-pivoted QR of
``A.T`` (LAPACK geqp3, the definition of the greedy order), and the swaps
are the classical ones, one rank-1 update of the whole small ``C`` each.
The results are those of the blocked paths (ties and roundoff aside).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import scipy.linalg

from maxvol_kit._backend import ipiv_to_permutation

__all__ = [
    "SMALL",
    "greedy_coefficients",
    "greedy_pivots",
    "is_small",
    "log_abs_det",
    "lu_coefficients",
    "on_host",
    "swaps",
]

# n * r at or below which these paths are the faster ones on NumPy
# (measured on 128 x 32 .. 10000 x 64 Gaussian matrices: at 2000 x 64 both paths
# take ~7 ms for fast_maxvol, at 4000 x 64 the blocked greedy is twice as fast).
SMALL = 1 << 17
# Rows above which geqp3 on ``A.T`` is slower than the blocked greedy even when
# ``n r <= SMALL`` (one thread, float32 and float64, r = 8..64: at 6000 x 16 the
# blocked greedy with its swaps takes 0.42 ms, geqp3 1.0 ms; at 512 x 32 geqp3
# 0.26-0.31 ms, blocked 0.45-0.50 ms). The LU start of ``maxvol`` has no such cap.
QR_ROWS = 1024


def is_small(A, backend, *, max_rows=None):
    """Whether ``A`` (n, r) takes the small-problem path.

    ``max_rows`` caps ``n`` as well (the geqp3 greedy: :data:`QR_ROWS`).
    """
    n, r = A.shape[0], A.shape[1]
    if max_rows is not None and n > max_rows:
        return False
    return backend.name == "numpy" and n * r <= SMALL


def on_host(func, A, **kwargs):
    """``func(A)`` through NumPy for a small 2-D torch CPU tensor, else None.

    A CPU tensor shares its memory with ``A.numpy()``, so the small path
    costs no copy; the result's indices and coefficients come back as
    tensors (int64 and the input's dtype), as the torch path returns them.
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(A, torch.Tensor):
        return None
    if A.device.type != "cpu" or A.ndim != 2 or A.numel() > SMALL:
        return None
    if A.dtype not in (torch.float32, torch.float64) or A.is_sparse:
        return None  # the torch path has the errors for these
    result = func(A.detach().numpy(), **kwargs)
    return dataclasses.replace(
        result,
        indices=torch.from_numpy(result.indices),
        _coefficients=torch.from_numpy(result.coefficients),
    )


def greedy_pivots(A, k, floor, *, basis=True):
    """The first ``k`` pivots of geqp3 on ``A.T`` and a basis of their span.

    Returns ``(rows, V, found)``: ``rows`` (k,) int64 in pick order, ``V``
    (r, k) orthonormal with ``span V = span A[rows]`` in pick order (None
    unless ``basis``), and ``found``, the number of pivots before the first
    whose residual norm is at most ``floor`` times the largest row norm
    (None if all ``k`` pass).
    """
    rows, V, found, _ = _geqp3(A, k, floor, basis)
    return rows, V, found


def greedy_coefficients(A, floor):
    """All ``r`` greedy pivots of ``A`` and ``C = A A[rows]^-1`` from one QR.

    With ``A.T[:, perm] = Q [R11 R12]``, ``A[rows] = R11^T Q^T`` and the
    other rows are ``R12^T Q^T``, so their coefficients are
    ``(R11^-1 R12)^T``: one triangular solve instead of an inverse and a
    product. Returns ``(rows, C, found)``; ``C`` is None when ``found`` is not.
    """
    n, r = A.shape
    rows, _, found, (qr, perm) = _geqp3(A, r, floor, basis=False)
    if found is not None:
        return rows, None, found
    C = np.empty_like(A)
    C[rows] = np.eye(r, dtype=A.dtype)
    if n > r:  # trtrs reads only the upper triangle of qr, R11
        X = scipy.linalg.solve_triangular(qr[:, :r], qr[:, r:], check_finite=False)
        C[perm[r:]] = X.T
    return rows, C, found


def lu_coefficients(A):
    """The rows LU with partial pivoting picks, their ``rcond`` and ``C``, from one LU.

    With ``A[perm] = L U``, ``A[rows] = L11 U`` and the other rows are
    ``L21 U``, so their coefficients are ``L21 L11^-1``: one unit triangular
    solve. ``rcond`` is LAPACK gecon's estimate of ``1 / cond_1(A[rows])``
    from the same factors (LU pivots are not rank-revealing; this is). ``C``
    is meaningful only when ``rcond`` is not roundoff.
    """
    n, r = A.shape
    getrf, gecon = scipy.linalg.get_lapack_funcs(("getrf", "gecon"), (A,))
    lu, piv, _ = getrf(np.array(A, order="F"), overwrite_a=True)
    perm = ipiv_to_permutation(piv, n, r)
    rows = perm[:r].astype(np.int64)
    anorm = float(np.abs(A[rows]).sum(axis=0).max())
    rcond, _ = gecon(np.asfortranarray(lu[:r]), anorm, norm="1")
    C = np.empty_like(A)
    C[rows] = np.eye(r, dtype=A.dtype)
    if n > r:  # L11^T X = L21^T, so X^T = L21 L11^-1
        X = scipy.linalg.solve_triangular(
            lu[:r],
            lu[r:].T,
            trans="T",
            lower=True,
            unit_diagonal=True,
            check_finite=False,
        )
        C[perm[r:]] = X.T
    return rows, float(rcond), C


def _geqp3(A, k, floor, basis):
    geqp3, orgqr = scipy.linalg.get_lapack_funcs(("geqp3", "orgqr"), (A,))
    # A copy: for a C-ordered A, A.T is already Fortran-ordered and would be
    # overwritten in place.
    qr, jpvt, tau, _, info = geqp3(np.array(A.T, order="F"), overwrite_a=True)
    if info < 0:  # pragma: no cover - an argument error is a bug here
        raise RuntimeError(f"LAPACK geqp3 failed with info={info}.")
    d = np.abs(np.diagonal(qr))[:k]
    low = np.flatnonzero(~(d > floor * d[0]))
    found = int(low[0]) if low.size else None
    V = None
    if basis and found is None:
        r = A.shape[1]
        V, _, _ = orgqr(np.array(qr[:, :r], order="F"), tau, overwrite_a=True)
        V = V[:, :k]
    return (jpvt[:k] - 1).astype(np.int64), V, found, (qr, jpvt - 1)


def swaps(C, idx, tol, max_iter):
    """Classical MaxVol swaps on ``C = A A[idx]^-1`` in place.

    Each swap takes the largest ``|C_ij|``, puts row ``i`` at position ``j``
    of ``idx`` (host int64, updated in place) and updates
    ``C <- C - u w^T`` with ``u = C[:, j]``, ``w = (C[i] - e_j) / C_ij``.
    Returns ``(n_swaps, max|C|)``; on return ``C[idx]`` is the identity.
    """
    n_iter, r = 0, C.shape[1]
    eye = np.eye(r, dtype=C.dtype)
    C[idx] = eye
    while n_iter < max_iter:
        i, j = divmod(int(np.argmax(np.abs(C))), r)
        if not abs(C[i, j]) > tol:
            break
        u = C[:, j].copy()
        w = C[i].copy()
        w[j] -= 1.0
        w /= C[i, j]
        C -= np.outer(u, w)
        idx[j] = i
        # Selected rows exactly unit rows, so none can be picked twice.
        C[idx] = eye
        n_iter += 1
    return n_iter, float(np.abs(C).max())


def log_abs_det(S):
    """``log|det S|`` of a small square matrix, through its LU factors."""
    return float(np.linalg.slogdet(S)[1])
