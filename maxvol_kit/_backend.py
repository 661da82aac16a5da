"""Array namespace resolution and the per-backend linear-algebra adapters.

The algorithms are written once against the array API (``xp``) plus a small
adapter object for what the standard lacks: LU with partial pivoting, a
solve against a square factor, top-k selection, and the fused rank-1 update +
arg-max that drives the MaxVol swaps. The namespace is resolved once by the
public function and passed down; nothing below imports a backend by name.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import scipy.linalg

__all__ = ["Backend", "get_backend"]


def _fortran_copy(A, rows_per_block=256):
    """Fortran-ordered copy of ``A``, in blocks of rows.

    ``numpy.asfortranarray`` transposes a C-ordered tall matrix in one
    cache-unfriendly sweep (7x slower here at 100000 x 256).
    """
    F = np.empty(A.shape, dtype=A.dtype, order="F")
    for start in range(0, A.shape[0], rows_per_block):
        F[start : start + rows_per_block] = A[start : start + rows_per_block]
    return F


class _NumpyOps:
    """NumPy + SciPy adapter (LAPACK getrf/getrs, BLAS ger)."""

    name = "numpy"

    @staticmethod
    def lu_pivot_rows(A):
        """Rows chosen by LU with partial pivoting, and the diagonal of U.

        Returns ``(rows, u_diag)``: the first ``r`` rows of the row permutation
        of ``A = P L U`` in pivot order, and ``diag(U)``.
        """
        (getrf,) = scipy.linalg.get_lapack_funcs(("getrf",), (A,))
        lu, piv, _ = getrf(_fortran_copy(A), overwrite_a=True)
        n, r = A.shape
        perm = np.arange(n)
        # LAPACK's ipiv is a sequence of row interchanges, not a permutation.
        for k, p in enumerate(piv[:r]):
            perm[k], perm[p] = perm[p], perm[k]
        return perm[:r].copy(), np.diagonal(lu).copy()

    @staticmethod
    def solve_right(A, B):
        """Return ``A @ inv(B)`` for a small square ``B``.

        One matrix product with the explicit inverse: as accurate as two
        triangular solves here (the error of either is ~cond(B) eps) and about
        twice as fast for tall ``A``.
        """
        return A @ scipy.linalg.inv(B, check_finite=False)

    @staticmethod
    def top_k(scores, k):
        """Indices of the ``k`` largest scores and the largest score left out."""
        n = scores.shape[0]
        if k >= n:
            return np.arange(n), -np.inf
        part = np.argpartition(scores, n - k - 1)
        return part[n - k :], float(scores[part[n - k - 1]])

    @staticmethod
    def absmax(C):
        """Return ``(i, j, |C_ij|)`` at the entry of largest magnitude."""
        # max and min are two reductions without the temporary of abs(C).
        hi, lo = float(C.max()), float(C.min())
        flat = int(np.argmax(C) if hi >= -lo else np.argmin(C))
        i, j = divmod(flat, C.shape[1])
        return i, j, max(hi, -lo)

    @staticmethod
    def row_sq_norms(W):
        """Squared Euclidean norm of every row, without a temporary ``W * W``."""
        return np.einsum("ij,ij->i", W, W)

    @staticmethod
    def row_absmax(C):
        """``max_k |C[i, k]|`` for every row ``i``."""
        return np.maximum(C.max(axis=1), -C.min(axis=1))

    @staticmethod
    def subtract_product(C, U, W):
        """``C -= U.T @ W`` in place with one BLAS gemm (no n x r temporary).

        ``C`` (n, r) is C-ordered, ``U`` (t, n) and ``W`` (t, r) too; in
        Fortran terms this is ``C^T <- C^T - W^T U``.
        """
        (gemm,) = scipy.linalg.get_blas_funcs(("gemm",), (C,))
        gemm(-1.0, W.T, U.T, beta=1.0, c=C.T, trans_b=1, overwrite_c=True)

    @staticmethod
    def svdvals(X):
        """Singular values of a small matrix."""
        return scipy.linalg.svdvals(X, check_finite=False)

    @staticmethod
    def all_finite(A):
        """Whether every entry of ``A`` is finite (NaN and inf are not)."""
        return bool(np.isfinite(A).all())


class Backend:
    """An array namespace ``xp`` together with its linear-algebra adapter."""

    def __init__(self, xp, ops):
        self.xp = xp
        self.ops = ops
        self.name = ops.name

    def __repr__(self):
        return f"Backend({self.name!r})"


_NUMPY = Backend(array_api_compat.array_namespace(np.empty(0)), _NumpyOps())


def get_backend(A):
    """Resolve the backend of ``A`` (NumPy here; torch and CuPy slot in later).

    Raises
    ------
    NotImplementedError
        If ``A`` belongs to an array library without an adapter yet.
    """
    if array_api_compat.is_numpy_array(A):
        return _NUMPY
    name = type(A).__module__.split(".")[0]
    raise NotImplementedError(
        f"arrays from {name!r} are not supported yet; convert the input with "
        f"numpy.asarray(A) (for torch: A.cpu().numpy())."
    )
