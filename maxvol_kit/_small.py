"""MaxVol of small NumPy matrices: one LAPACK call for the picks, plain swaps.

At the sizes a training loop selects in (a mini-batch: n ~ 64-512 rows,
r ~ 8-64 columns) the blocked engines of ``maxvol_kit._greedy`` and
``maxvol_kit._swaps`` spend more on their bookkeeping (candidate lists,
deferred updates, one interpreter round per pick) than on the arithmetic.
Here the greedy-volume picks are the pivots of one column-pivoted QR of
``A.T`` (LAPACK geqp3, the definition of the greedy order), and the swaps
are the classical ones, one rank-1 update of the whole small ``C`` each.
The results are those of the blocked paths (ties and roundoff aside).
Where the optional extension ``maxvol_kit._kernels`` is built these loops
run compiled, with the same rows and the same ``C`` to roundoff (its own
pivoted QR in place of geqp3, so that threads can share a stack).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import math
import os
import sys

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import threadpoolctl

from maxvol_kit._backend import ipiv_to_permutation

try:  # the compiled loops (setup.py); without them, the same loops in Python
    from maxvol_kit import _kernels
except ImportError:  # pragma: no cover - a build without a C compiler
    _kernels = None
else:  # the same source built for AVX2 and FMA, where the CPU has both
    if _kernels.avx2_fma():
        try:
            from maxvol_kit import _kernels_avx2 as _kernels
        except ImportError:  # pragma: no cover - not built (not x86-64)
            pass

__all__ = [
    "SMALL",
    "greedy_coefficients_stack",
    "greedy_pivots",
    "is_small",
    "log_abs_det",
    "lu_coefficients",
    "on_host",
    "rect_growth",
    "stack_maxvol",
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


# Rectangular growth by pivoted Cholesky (:func:`rect_growth`) costs
# (n - r)^3 / 3 for the whole factor whatever the number of picks k; the
# lazy greedy costs ~15 us of interpreter time per pick. One thread, n_rows =
# 2r: pivoted Cholesky wins at 128 x 8..64 (0.25-0.28 against 0.54-3.1 ms),
# at 256 x 16/32/64 and 384 x 64, and loses at 256 x 8 and 512 x 32; it is
# taken while (n - r)^3 <= RECT_WORK * k and n - r <= RECT_ROWS.
RECT_WORK = 1 << 20
RECT_ROWS = 384

# b n r^2 from which a compiled stack is split over threads (256 x 128 x 32 is
# 2^25; a thread costs ~0.1 ms to hand a part to, a 128 x 32 problem ~0.05 ms).
THREAD_WORK = 1 << 22


def is_small(A, backend, *, max_rows=None):
    """Whether ``A`` (n, r) takes the small-problem path.

    ``max_rows`` caps ``n`` as well (the geqp3 greedy: :data:`QR_ROWS`).
    """
    n, r = A.shape[0], A.shape[1]
    if max_rows is not None and n > max_rows:
        return False
    return backend.name == "numpy" and n * r <= SMALL


def on_host(func, A, **kwargs):
    """``func(A)`` through NumPy for a small torch CPU problem, else None.

    A 2-D tensor of at most :data:`SMALL` entries, or a 3-D stack of problems
    the small geqp3 path takes (at most :data:`QR_ROWS` rows each). A CPU
    tensor shares its memory with ``A.numpy()``, so this costs no copy; the
    result's arrays come back as tensors (indices int64, coefficients and
    volumes in the input's dtype), as the torch path returns them.
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(A, torch.Tensor) or A.device.type != "cpu":
        return None
    if A.dtype not in (torch.float32, torch.float64) or A.is_sparse:
        return None  # the torch path has the errors for these
    if A.ndim == 2:
        small = A.numel() <= SMALL
    else:  # a stack: the loop of small problems beats torch's stacked steps
        small = (
            A.ndim == 3 and A.shape[1] <= QR_ROWS and A.shape[1] * A.shape[2] <= SMALL
        )
    if not small:
        return None
    result = func(A.detach().numpy(), **kwargs)
    arrays = {
        name: torch.from_numpy(getattr(result, name))
        for name in ("indices", "n_iter", "converged", "log_volume")
        if isinstance(getattr(result, name), np.ndarray)  # a stack's (b,) fields
    }
    return dataclasses.replace(
        result, **arrays, _coefficients=torch.from_numpy(result.coefficients)
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


def greedy_coefficients_stack(A, floor):
    """All ``r`` greedy pivots and ``C = A A[rows]^-1`` of every problem of a stack.

    With ``A[k].T[:, perm] = Q [R11 R12]``, ``A[k][rows] = R11^T Q^T`` and
    the other rows are ``R12^T Q^T``, so their coefficients are
    ``(R11^-1 R12)^T``: one geqp3 and one triangular solve per problem
    (LAPACK has no batched pivoted QR, and NumPy's batched solve, an LU, took
    twice the time of a loop of trtrs at 256 x 32 x 96), no general inverse;
    ``log_det = log|det A[k][rows]| = sum log|R11_ii|``. The rank check, the
    unit rows and the volumes are computed once for the stack.
    Returns ``(rows (b, r), C (b, n, r), bad, log_det (b,))``, ``bad`` the
    first problem whose rows do not span ``r`` dimensions (None if none;
    ``C`` and ``log_det`` are None then).
    """
    b, n, r = A.shape
    perm = np.empty((b, n), dtype=np.int64)
    # A[k] C-ordered is A[k].T Fortran-ordered: one copy of the stack takes
    # the geqp3s in place, and work[k].T is then problem k's factor. Where
    # the wrapper copies instead (a single row or column: (3, 1) float32),
    # the factor is written back.
    work = np.array(A, order="C")
    for k in range(b):
        qr, jpvt, _ = _pivoted_qr(work[k].T)
        if not np.may_share_memory(qr, work):
            work[k].T[...] = qr
        perm[k] = jpvt
    perm -= 1
    d = np.abs(np.diagonal(work[:, :r, :r], axis1=1, axis2=2))  # |diag R11|
    short = ~(d > floor * d[:, :1])
    rows = np.ascontiguousarray(perm[:, :r])
    if short.any():
        return rows, None, int(np.flatnonzero(short.any(axis=1))[0]), None
    C = np.empty_like(A)
    C[np.arange(b)[:, None], rows] = np.eye(r, dtype=A.dtype)
    if n > r:  # each problem's (R11^-1 R12)^T; trtrs reads only R11's triangle
        for k in range(b):
            qr = work[k].T
            C[k, perm[k, r:]] = _triangular_solve(qr[:, :r], qr[:, r:]).T
    return rows, C, None, np.log(d).sum(axis=1)


def rect_growth(C, rows, min_picks, max_picks, tol2):
    """Greedy rectangular MaxVol growth from the square selection ``rows``.

    ``C = A A[rows]^-1`` (n, r), so ``C[rows] = I``. With ``S`` the rows
    added so far, ``det(A[I]^T A[I]) = det(A[rows])^2 det(P_SS)`` for
    ``P = I + C_o C_o^T`` over the other rows ``o``: adding the row of
    largest ``||c_i||^2`` under the current selection is adding the largest
    diagonal of the Schur complement of ``P_SS``, the pivot that Cholesky
    with diagonal pivoting (LAPACK pstrf) takes, and that pivot is
    ``1 + ||c_i||^2`` (``P`` has every eigenvalue >= 1, so the factor is
    well conditioned). The picks continue past ``min_picks`` while the next
    pivot's ``||c||^2 > tol2``, up to ``max_picks``.

    Returns ``(added, log_gain, best_left)``: the added rows in pick order,
    ``sum log U_jj`` over them (half the log growth of ``det(A[I]^T A[I])``)
    and the largest ``||c_i||^2`` left (``-inf`` if no row is); or None when
    a pick or the stop was decided by a ``||c||^2`` that ``U_jj^2 - 1`` cannot
    resolve (below 1024 eps: rows of tiny coefficients, ``tol`` near 0), for
    the lazy greedy, which computes ``||c||^2`` itself.
    """
    n, r = C.shape
    if n == r:
        return np.empty(0, dtype=np.int64), 0.0, -math.inf
    others = np.ones(n, dtype=bool)
    others[rows] = False
    others = np.flatnonzero(others)
    pstrf, syrk = _lapack(("pstrf",), C.dtype)[0], _lapack(("syrk",), C.dtype, True)[0]
    P = syrk(1.0, C[others])  # the upper triangle of C_o C_o^T
    P.flat[:: n - r + 1] += 1.0
    # tol < 1 <= every pivot: the whole factor, never a rank cut
    U, piv, _, info = pstrf(P, tol=0.5, overwrite_a=True)
    if info < 0:  # pragma: no cover - an argument error is a bug here
        raise RuntimeError(f"LAPACK pstrf failed with info={info}.")
    d = np.diagonal(U).astype(np.float64)
    score = d * d - 1.0  # ||c||^2 of each pick when it was taken
    k = min_picks
    while k < max_picks and score[k] > tol2:
        k += 1
    best_left = float(score[k]) if k < n - r else -math.inf
    roundoff = 1024 * float(np.finfo(C.dtype).eps)
    unresolved_pick = k > 0 and score[k - 1] <= roundoff
    unresolved_stop = k < n - r and max(best_left, tol2) <= roundoff
    if unresolved_pick or unresolved_stop:
        return None
    return others[piv[:k] - 1], float(np.log(d[:k]).sum()), best_left


def stack_maxvol(A, floor, tol, max_iter, refine):
    """Fast MaxVol of every problem of a small stack ``A`` (b, n, r).

    :func:`greedy_coefficients_stack`, then :func:`swaps` on the problems
    not yet dominant (if ``refine``): compiled, the whole stack in one call
    per thread (:func:`stack_threads`); else in Python. The same results
    either way (ties and roundoff aside). Returns
    ``(rows, C, bad, log_det, n_iter, peak)``: ``bad`` as there (``C`` and
    the rest None then), ``log_det`` (b,) in ``A``'s dtype, ``n_iter`` (b,)
    the swaps, ``peak`` (b,) the final ``max|C|``.
    """
    if _kernels is not None:
        return _stack_compiled(A, floor, tol, max_iter, refine)
    rows, C, bad, log_det = greedy_coefficients_stack(A, floor)
    if bad is not None:
        return rows, None, bad, None, None, None
    log_det = log_det.astype(A.dtype)
    n_iter = np.zeros(A.shape[0], dtype=np.int64)
    peak = np.maximum(C.max(axis=(1, 2)), -C.min(axis=(1, 2)))
    if refine:
        for k in np.flatnonzero(peak > tol):
            n_iter[k], peak[k], gain = swaps(C[k], rows[k], tol, max_iter)
            log_det[k] += gain
    return rows, C, None, log_det, n_iter, peak


def _stack_compiled(A, floor, tol, max_iter, refine):
    b, n, r = A.shape
    work = np.array(np.swapaxes(A, 1, 2), order="C")  # each A[k].T, row-major
    C = np.empty(A.shape, dtype=A.dtype)
    rows = np.empty((b, r), dtype=np.int64)
    diagonal = np.empty((b, r), dtype=A.dtype)
    gain, peak = np.zeros(b), np.empty(b)
    n_iter = np.zeros(b, dtype=np.int64)
    arrays = (work, C, rows, diagonal, gain, peak, n_iter)
    bad = _split_stack(arrays, (floor, tol, max_iter, refine), stack_threads(b, n, r))
    if bad >= 0:
        return rows, None, bad, None, None, None
    # as greedy_coefficients_stack and the Python swaps sum them (the gain
    # of a swapped problem added in A's dtype, as to a NumPy scalar)
    log_det = np.log(diagonal).sum(axis=1).astype(A.dtype)
    swapped = n_iter > 0
    if swapped.any():
        log_det[swapped] += gain[swapped].astype(A.dtype)
    return rows, C, None, log_det, n_iter, peak.astype(A.dtype)


def _split_stack(arrays, args, threads):
    """``_kernels.stack`` on ``threads`` consecutive parts of the stack at once.

    The first part runs on this thread. Returns the first rank-deficient
    problem, or -1.
    """
    if threads == 1:
        return _kernels.stack(*arrays, *args)
    b = arrays[0].shape[0]
    bounds = [b * t // threads for t in range(threads + 1)]
    parts = [
        _pool(os.getpid()).submit(_kernels.stack, *(x[lo:hi] for x in arrays), *args)
        for lo, hi in itertools.pairwise(bounds[1:])
    ]
    found = [_kernels.stack(*(x[: bounds[1]] for x in arrays), *args)]
    found += [part.result() for part in parts]
    bad = [lo + k for lo, k in zip(bounds[:-1], found, strict=True) if k >= 0]
    return bad[0] if bad else -1


def stack_threads(b, n, r):
    """Threads a compiled stack of ``b`` problems (n, r) is split over.

    As many as the BLAS may use (``threadpoolctl.threadpool_limits`` and
    the BLAS's environment variables set it), once the stack holds
    :data:`THREAD_WORK` of ``n r^2`` work: the compiled problems call no
    LAPACK (only BLAS i?amax, which holds no lock), so they run side by side.
    One thread where threadpoolctl finds no BLAS or no thread count.
    """
    if b < 2 or b * n * r * r < THREAD_WORK:
        return 1
    libraries = _blas_controller().select(user_api="blas").lib_controllers
    counts = [lib.get_num_threads() for lib in libraries]
    counts = [count for count in counts if count is not None]  # None: unknown
    return max(1, min(b, *counts)) if counts else 1


@functools.cache
def _blas_controller():
    return threadpoolctl.ThreadpoolController()


@functools.cache
def _pool(pid):
    """The worker threads of process ``pid`` (a forked child makes its own)."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1)


def lu_coefficients(A):
    """The rows LU with partial pivoting picks, their ``rcond`` and ``C``, from one LU.

    With ``A[perm] = L U``, ``A[rows] = L11 U`` and the other rows are
    ``L21 U``, so their coefficients are ``L21 L11^-1``: one unit triangular
    solve. ``rcond`` is LAPACK gecon's estimate of ``1 / cond_1(A[rows])``
    from the same factors (LU pivots are not rank-revealing; this is). ``C``
    and ``log_det`` ``= log|det A[rows]| = sum log|U_ii|`` are meaningful
    only when ``rcond`` is not roundoff. Returns ``(rows, rcond, C, log_det)``.
    """
    n, r = A.shape
    if _kernels is not None:  # the same calls, compiled (log|det| summed in order)
        lu, C = np.array(A, order="F"), np.empty(A.shape, dtype=A.dtype)
        rows, diagonal = np.empty(r, dtype=np.int64), np.empty(r, dtype=A.dtype)
        rcond, log_det = _kernels.lu_start(A, lu, C, rows, diagonal)
        return rows, rcond, C, log_det
    getrf, gecon = _lapack(("getrf", "gecon"), A.dtype)
    lu, piv, _ = getrf(np.array(A, order="F"), overwrite_a=True)
    perm = ipiv_to_permutation(piv, n, r)
    rows = perm[:r].astype(np.int64)
    anorm = float(np.abs(A[rows]).sum(axis=0).max())
    rcond, _ = gecon(np.asfortranarray(lu[:r]), anorm, norm="1")
    C = np.empty_like(A)
    _unit_rows(C, rows)
    if n > r:  # L11^T X = L21^T, so X^T = L21 L11^-1
        X = _triangular_solve(lu[:r], lu[r:].T, lower=True, trans=1, unitdiag=True)
        C[perm[r:]] = X.T
    return rows, float(rcond), C, _log_abs_diagonal(lu[:r])


@functools.cache
def _lapack(names, dtype, blas=False):
    """The LAPACK (or BLAS) routines ``names`` for ``dtype`` (a lookup costs ~3 us)."""
    if blas:
        return scipy.linalg.blas.get_blas_funcs(names, dtype=dtype)
    return scipy.linalg.get_lapack_funcs(names, dtype=dtype)


def _triangular_solve(T, B, *, lower=False, trans=0, unitdiag=False):
    """``op(T)^-1 B`` by LAPACK trtrs, reading one triangle of ``T``.

    scipy's ``solve_triangular`` wrapper costs three times the solve at the
    sizes here.
    """
    (trtrs,) = _lapack(("trtrs",), T.dtype)
    X, info = trtrs(T, B, lower=lower, trans=trans, unitdiag=unitdiag)
    if info != 0:  # pragma: no cover - the pivots checked the diagonal
        raise RuntimeError(f"LAPACK trtrs failed with info={info}.")
    return X


def _unit_rows(C, rows):
    """``C[rows] = I`` (row ``rows[j]`` is ``e_j``)."""
    C[rows] = 0
    C[rows, np.arange(len(rows))] = 1


def _log_abs_diagonal(T):
    with np.errstate(divide="ignore"):
        return float(np.log(np.abs(np.diagonal(T))).sum())


def _pivoted_qr(AT):
    """LAPACK geqp3 of the Fortran-ordered ``AT`` in place: ``(qr, jpvt, tau)``."""
    (geqp3,) = _lapack(("geqp3",), AT.dtype)
    qr, jpvt, tau, _, info = geqp3(AT, overwrite_a=True)
    if info < 0:  # pragma: no cover - an argument error is a bug here
        raise RuntimeError(f"LAPACK geqp3 failed with info={info}.")
    return qr, jpvt, tau


def _geqp3(A, k, floor, basis):
    (orgqr,) = _lapack(("orgqr",), A.dtype)
    # A copy: for a C-ordered A, A.T is already Fortran-ordered and would be
    # overwritten in place.
    qr, jpvt, tau = _pivoted_qr(np.array(A.T, order="F"))
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
    ``C <- C - u w^T`` with ``u = C[:, j]``, ``w = (C[i] - e_j) / C_ij`` (in
    place), which multiplies ``|det A[idx]|`` by ``|C_ij|``. Returns
    ``(n_swaps, max|C|, log_gain)``, ``log_gain`` the sum of the
    ``log|C_ij|``; on return ``C[idx]`` is the identity.
    """
    work = np.ascontiguousarray(C)  # C itself, as the callers build it
    if _kernels is not None and work.size < 2**31:  # _swap_loop, compiled
        n_iter, gain, largest = _kernels.swaps(work, idx, tol, max_iter)
    else:
        n_iter, gain, largest = _swap_loop(work, idx, tol, max_iter)
    if work is not C:
        C[...] = work
    return n_iter, largest, gain


def _swap_loop(C, idx, tol, max_iter):
    n_iter, r = 0, C.shape[1]
    (ger,) = _lapack(("ger",), C.dtype, blas=True)
    _unit_rows(C, idx)
    gain = 0.0
    while True:
        # The largest |C_ij| from the largest and the smallest entry: two
        # reading passes, no n x r temporary (C may be most of the memory).
        high, low = int(C.argmax()), int(C.argmin())
        p = high if C.flat[high] >= -C.flat[low] else low
        i, j = divmod(p, r)
        largest = abs(float(C[i, j]))
        if n_iter >= max_iter or not largest > tol:
            return n_iter, gain, largest
        pivot = C[i, j]
        u = C[:, j].copy()
        w = C[i] / pivot
        w[j] -= 1 / pivot
        # C.T is Fortran-ordered, so ger updates C itself. The selected rows
        # have u = 0 there and stay unit rows exactly; row i becomes e_j.
        ger(-1, w, u, a=C.T, overwrite_a=True)
        C[i] = 0
        C[i, j] = 1
        idx[j] = i
        gain += math.log(largest)
        n_iter += 1


def log_abs_det(S):
    """``log|det S|`` of a small square matrix, through its LU factors."""
    return float(np.linalg.slogdet(S)[1])
