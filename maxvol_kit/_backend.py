"""Array namespace resolution and the per-backend linear-algebra adapters.

The algorithms are written once against the array API (``xp``) plus a small
adapter object for what the standard lacks: LU with partial pivoting, a
solve against a square factor, top-k selection, in-place products and the
arg-max of magnitudes. The namespace is resolved once by the public function
and passed down; nothing below imports a backend by name.
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
    """NumPy adapter; SciPy only for LAPACK getrf, which NumPy lacks.

    NumPy and SciPy wheels each bundle their own OpenBLAS. After a call into
    one, its threads spin for a while and slow the first calls into the other
    by up to 0.1 s on two cores, so everything but the LU start goes through
    NumPy's.
    """

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
        return A @ np.linalg.inv(B)

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
    def row_absmax(C, rows_per_block=2048):
        """``max_k |C[i, k]|`` for every row ``i``, in one pass over ``C``."""
        out = np.empty(C.shape[0], dtype=C.dtype)
        buf = np.empty((min(rows_per_block, C.shape[0]), C.shape[1]), dtype=C.dtype)
        for start in range(0, C.shape[0], rows_per_block):
            block = C[start : start + rows_per_block]
            tmp = np.abs(block, out=buf[: block.shape[0]])
            out[start : start + rows_per_block] = tmp.max(axis=1)
        return out

    @staticmethod
    def subtract_product(C, U, W, rows_per_block=2048):
        """``C -= U.T @ W`` in place; return the new :meth:`row_absmax` of ``C``.

        ``C`` (n, r), ``U`` (t, n), ``W`` (t, r). Block by block of rows: each
        block's product and its row maxima are computed while the block is in
        cache, so ``C`` is read and written once and no n x r temporary forms.
        """
        out = np.empty(C.shape[0], dtype=C.dtype)
        for start in range(0, C.shape[0], rows_per_block):
            block = C[start : start + rows_per_block]
            block -= U[:, start : start + rows_per_block].T @ W
            out[start : start + rows_per_block] = np.abs(block).max(axis=1)
        return out

    @staticmethod
    def svdvals(X):
        """Singular values of a small matrix."""
        return np.linalg.svd(X, compute_uv=False)

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
