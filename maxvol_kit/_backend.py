"""Array namespace resolution and the per-backend linear-algebra adapters.

The algorithms are written once against the array API (``xp``) plus a small
adapter object (``ops``) for what the standard lacks or does slowly: LU with
partial pivoting, top-k selection, scatter into rows, in-place blocked
products and the arg-max of magnitudes. The backend is resolved once by the
public function and passed down.

Backends: NumPy (+ SciPy for LU), torch (CPU and CUDA), CuPy (+ cupyx) and
any other array-API namespace (``array_api_strict`` in the tests) through the
generic adapter, which falls back to NumPy on the host for the LU start only.
Small index arrays (the selected rows) are kept on the host as NumPy int64
while an algorithm runs and moved to the input's device at the end.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np

__all__ = ["Backend", "get_backend"]


def _fortran_copy(A, rows_per_block=256):
    """Fortran-ordered copy of a NumPy ``A``, in blocks of rows.

    ``numpy.asfortranarray`` transposes a C-ordered tall matrix in one
    cache-unfriendly sweep (7x slower here at 100000 x 256).
    """
    F = np.empty(A.shape, dtype=A.dtype, order="F")
    for start in range(0, A.shape[0], rows_per_block):
        F[start : start + rows_per_block] = A[start : start + rows_per_block]
    return F


def ipiv_to_permutation(piv, n, r):
    """The row permutation that the first ``r`` entries of LAPACK's ``ipiv`` encode.

    ``ipiv`` (0-based here) is a sequence of row interchanges, not a
    permutation: ``A[perm] = L U``.
    """
    perm = np.arange(n)
    for k, p in enumerate(np.asarray(piv[:r]).tolist()):
        perm[k], perm[p] = perm[p], perm[k]
    return perm


def _ipiv_to_rows(piv, n, r):
    """The first ``r`` rows of :func:`ipiv_to_permutation`."""
    return ipiv_to_permutation(piv, n, r)[:r].copy()


def _partition_top_k(module, scores, k):
    """``top_k`` through ``module.argpartition`` (NumPy and CuPy): no full sort."""
    n = scores.shape[0]
    if k >= n:
        return module.arange(n), -math.inf
    part = module.argpartition(scores, n - k - 1)
    return part[n - k :], float(scores[part[n - k - 1]])


class _GenericOps:
    """Adapter written against the array API alone (slow paths are fine here)."""

    name = "array-api"
    # Whether ``x[index_array, ...] = values`` works (NumPy, torch, CuPy do).
    fancy_indexing = False

    def __init__(self, xp):
        self.xp = xp

    def prepare(self, A):
        """The array the algorithms work on (e.g. detached from autograd)."""
        return A

    def lu_pivot_rows(self, A):
        """Rows chosen by LU with partial pivoting, and the diagonal of U.

        The array API has no LU; this adapter runs it on the host with NumPy.
        """
        return _NumpyOps().lu_pivot_rows(self.to_host(A))

    def top_k(self, scores, k):
        """Indices of the ``k`` largest scores and the largest score left out."""
        xp = self.xp
        n = scores.shape[0]
        order = xp.argsort(scores, descending=True)
        if k >= n:
            return order, -math.inf
        return order[:k], float(scores[int(order[k])])

    def absmax(self, C):
        """Return ``(i, j, |C_ij|)`` at the entry of largest magnitude."""
        xp = self.xp
        flat = int(xp.argmax(xp.reshape(xp.abs(C), (-1,))))
        i, j = divmod(flat, C.shape[1])
        return i, j, float(xp.abs(C[i, j]))

    def row_sq_norms(self, W):
        """Squared Euclidean norm of every row (the last axis: also of a stack)."""
        return self.xp.sum(W * W, axis=-1)

    def last_absmax(self, C):
        """``max_t |C[..., t]|``: the largest magnitude of every row of a stack."""
        return self.xp.max(self.xp.abs(C), axis=-1)

    def row_absmax(self, C, rows_per_block=2048):
        """``max_k |C[i, k]|`` for every row ``i``, by blocks of rows."""
        xp = self.xp
        n = C.shape[0]
        blocks = [
            xp.max(xp.abs(C[start : min(start + rows_per_block, n), :]), axis=1)
            for start in range(0, n, rows_per_block)
        ]
        return xp.concat(blocks)

    def thin_product(self, A, U):
        """``A @ U`` for tall ``A`` (n, r) and thin ``U`` (r, b); may be a view.

        Both BLAS are faster on the transposed problem for thin ``U``
        (measured at 100000 x 256 times 256 x 26 on two cores: OpenBLAS 1.5x,
        MKL 3x).
        """
        return (U.T @ A.T).T

    def subtract_product(self, C, U, W, rows_per_block=2048):
        """``C -= U.T @ W`` in place, by blocks of rows; return the new row maxima.

        ``C`` (n, r), ``U`` (t, n), ``W`` (t, r): no n x r temporary forms.
        """
        xp = self.xp
        maxima = []
        for start in range(0, C.shape[0], rows_per_block):
            stop = min(start + rows_per_block, C.shape[0])
            block = C[start:stop, :] - U[:, start:stop].T @ W
            C[start:stop, :] = block
            maxima.append(xp.max(xp.abs(block), axis=1))
        return xp.concat(maxima)

    def sign_scatter(self, X, buckets, signs, k):
        """``Z[:, buckets[j]] += signs[j] X[:, j]`` (host ``buckets``, ``signs``).

        Generic: through a dense d x k sign matrix (fine for the test sizes).
        """
        xp = self.xp
        d = X.shape[1]
        device = array_api_compat.device(X)
        b = xp.reshape(xp.asarray(buckets, device=device), (d, 1))
        onehot = xp.astype(
            b == xp.reshape(xp.arange(k, device=device), (1, k)), X.dtype
        )
        s = xp.reshape(xp.asarray(signs, dtype=X.dtype, device=device), (d, 1))
        return X @ (onehot * s)

    def fill_along_rows(self, x, index, value):
        """``x[k, index[k]] = value`` for every row ``k`` of a 2-D ``x``; returns it.

        ``index`` (b, m) lives on the device. Generic: a mask and ``where``
        (a new array); the adapters with integer-array assignment write in place.
        """
        xp = self.xp
        if self.fancy_indexing:
            x[self._row_numbers(x), index] = value
            return x
        return xp.where(xp.any(self._onehot(index, x.shape[1]), axis=1), value, x)

    def unit_rows(self, C, rows):
        """Make ``C[k][rows[k]]`` exactly the identity rows, for every ``k``; returns C.

        ``C`` (b, n, r) and ``rows`` (b, r) on the device.
        """
        xp = self.xp
        r = rows.shape[1]
        if self.fancy_indexing:
            eye = xp.eye(r, dtype=C.dtype, device=array_api_compat.device(C))
            C[self._row_numbers(C), rows] = eye
            return C
        onehot = self._onehot(rows, C.shape[1])
        units = xp.matrix_transpose(xp.astype(onehot, C.dtype))
        return xp.where(xp.any(onehot, axis=1)[..., None], units, C)

    def subtract_outer(self, C, u, w):
        """``C[k] - outer(u[k], w[k])`` for a stack ``C`` (b, n, r); may reuse ``C``."""
        return C - u[:, :, None] * w[:, None, :]

    def inv_lower(self, L):
        """Inverse of each lower-triangular matrix of a stack (upper part ignored)."""
        xp = self.xp
        r = L.shape[-1]
        positions = xp.arange(r, device=array_api_compat.device(L))
        lower = positions[:, None] >= positions[None, :]
        return xp.linalg.inv(xp.where(lower, L, 0.0))

    def _row_numbers(self, x):
        """``[[0], [1], ..., [b - 1]]`` on the device of ``x``: pairs with an index."""
        b = x.shape[0]
        return self.xp.reshape(
            self.xp.arange(b, device=array_api_compat.device(x)), (b, 1)
        )

    def _onehot(self, index, n):
        """``onehot[k, t, i] = (index[k, t] == i)``, shape (b, m, n)."""
        xp = self.xp
        positions = xp.arange(n, device=array_api_compat.device(index))
        return index[:, :, None] == xp.reshape(positions, (1, 1, n))

    def set_rows(self, X, rows, values):
        """``X[rows] = values`` for host row indices (one row at a time here)."""
        for k, i in enumerate(np.asarray(rows).tolist()):
            X[i, ...] = values[k, ...]

    def fill(self, x, rows, value):
        """``x[rows] = value`` for host indices into a 1-D or 2-D array."""
        for i in np.asarray(rows).tolist():
            x[i, ...] = value

    def all_finite(self, A):
        """Whether every entry of ``A`` is finite (NaN and inf are not).

        A finite sum proves it in one pass without a boolean temporary (NaN
        and inf propagate); only an overflowing sum needs the full check.
        """
        xp = self.xp
        with np.errstate(all="ignore"):  # inf - inf in the sum is the answer
            if bool(xp.isfinite(xp.sum(A))):
                return True
        return bool(xp.all(xp.isfinite(A)))

    def to_host(self, x):
        """A NumPy copy of a small array (moved to the CPU device first if needed)."""
        try:
            return np.asarray(x)
        except RuntimeError:
            # e.g. array_api_strict's non-default devices refuse the conversion.
            return np.asarray(x.to_device(type(x.device)("CPU_DEVICE")))


class _NumpyOps(_GenericOps):
    """NumPy adapter; SciPy only for LAPACK getrf and trtri, which NumPy lacks.

    NumPy and SciPy wheels each bundle their own OpenBLAS. After a call into
    one, its threads spin for a while and slow the first calls into the other
    by up to 0.1 s on two cores, so everything but the LU start goes through
    NumPy's.
    """

    name = "numpy"
    fancy_indexing = True

    def __init__(self, xp=None):
        super().__init__(xp)

    def lu_pivot_rows(self, A):
        """Rows chosen by LU with partial pivoting, and the diagonal of U.

        Returns ``(rows, u_diag)``: the first ``r`` rows of the row permutation
        of ``A = P L U`` in pivot order, and ``diag(U)``, both on the host.
        """
        import scipy.linalg

        (getrf,) = scipy.linalg.get_lapack_funcs(("getrf",), (A,))
        lu, piv, _ = getrf(_fortran_copy(A), overwrite_a=True)
        return _ipiv_to_rows(piv, *A.shape), np.diagonal(lu).copy()

    def top_k(self, scores, k):
        return _partition_top_k(np, scores, k)

    def absmax(self, C):
        # max and min are two reductions without the temporary of abs(C).
        hi, lo = float(C.max()), float(C.min())
        flat = int(np.argmax(C) if hi >= -lo else np.argmin(C))
        i, j = divmod(flat, C.shape[1])
        return i, j, max(hi, -lo)

    def row_sq_norms(self, W):
        return np.einsum("...i,...i->...", W, W)

    def last_absmax(self, C):
        # Two reductions without the temporary of abs(C).
        return np.maximum(C.max(axis=-1), -C.min(axis=-1))

    def row_absmax(self, C, rows_per_block=2048):
        # One pass over C; the abs of a block lives in a reused buffer.
        out = np.empty(C.shape[0], dtype=C.dtype)
        buf = np.empty((min(rows_per_block, C.shape[0]), C.shape[1]), dtype=C.dtype)
        for start in range(0, C.shape[0], rows_per_block):
            block = C[start : start + rows_per_block]
            tmp = np.abs(block, out=buf[: block.shape[0]])
            out[start : start + rows_per_block] = tmp.max(axis=1)
        return out

    def subtract_product(self, C, U, W, rows_per_block=2048):
        out = np.empty(C.shape[0], dtype=C.dtype)
        for start in range(0, C.shape[0], rows_per_block):
            block = C[start : start + rows_per_block]
            block -= U[:, start : start + rows_per_block].T @ W
            out[start : start + rows_per_block] = np.abs(block).max(axis=1)
        return out

    def subtract_outer(self, C, u, w):
        C -= u[:, :, None] * w[:, None, :]
        return C

    def inv_lower(self, L):
        import scipy.linalg

        # One LAPACK trtri per matrix: np.linalg.inv (LU) is 8x slower here.
        (trtri,) = scipy.linalg.get_lapack_funcs(("trtri",), (L,))
        out = np.empty_like(L)
        for k in range(L.shape[0]):
            out[k], info = trtri(L[k], lower=1)
            if info:
                raise np.linalg.LinAlgError(f"singular triangular factor {k}")
        return np.tril(out)

    def set_rows(self, X, rows, values):
        X[np.asarray(rows)] = values

    def fill(self, x, rows, value):
        x[np.asarray(rows)] = value

    def sign_scatter(self, X, buckets, signs, k):
        import scipy.sparse

        d = X.shape[1]
        S = scipy.sparse.csr_matrix(
            (signs.astype(X.dtype), (np.arange(d), buckets)), shape=(d, k)
        )
        return np.ascontiguousarray((S.T @ X.T).T)


class _TorchOps(_GenericOps):
    """torch adapter (CPU and CUDA): ``torch.linalg.lu_factor``, ``topk``."""

    name = "torch"
    fancy_indexing = True

    def prepare(self, A):
        return A.detach()

    def lu_pivot_rows(self, A):
        import torch

        LU, piv = torch.linalg.lu_factor(A)
        # torch returns LAPACK's 1-based ipiv.
        rows = _ipiv_to_rows(piv.cpu().numpy() - 1, *A.shape)
        return rows, torch.diagonal(LU).cpu().numpy()

    def top_k(self, scores, k):
        n = scores.shape[0]
        if k >= n:
            return self.xp.arange(n, device=scores.device), -math.inf
        values, order = scores.topk(k + 1)
        return order[:k], float(values[k])

    def absmax(self, C):
        flat = int(C.abs().argmax())
        i, j = divmod(flat, C.shape[1])
        return i, j, float(C[i, j].abs())

    def row_sq_norms(self, W):
        import torch

        return torch.einsum("...i,...i->...", W, W)

    def last_absmax(self, C):
        # Two reductions without the temporary of abs(C).
        return C.amax(-1).maximum(C.amin(-1).neg_())

    def subtract_outer(self, C, u, w):
        return C.addcmul_(u[:, :, None], w[:, None, :], value=-1)

    def inv_lower(self, L):
        import torch

        eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device)
        return torch.linalg.solve_triangular(L, eye.expand_as(L), upper=False)

    def set_rows(self, X, rows, values):
        X[self._index(rows, X)] = values

    def fill(self, x, rows, value):
        x[self._index(rows, x)] = value

    def sign_scatter(self, X, buckets, signs, k):
        import torch

        b = torch.as_tensor(buckets, device=X.device)
        s = torch.as_tensor(signs, dtype=X.dtype, device=X.device)
        return X.new_zeros((X.shape[0], k)).index_add_(1, b, X * s)

    @staticmethod
    def _index(rows, like):
        import torch

        return torch.as_tensor(np.asarray(rows), device=like.device)

    def to_host(self, x):
        return x.cpu().numpy()


class _CupyOps(_GenericOps):
    """CuPy adapter: ``cupyx.scipy.linalg.lu_factor``, ``argpartition``."""

    name = "cupy"
    fancy_indexing = True

    def lu_pivot_rows(self, A):
        import cupyx.scipy.linalg

        lu, piv = cupyx.scipy.linalg.lu_factor(A)
        rows = _ipiv_to_rows(piv.get(), *A.shape)
        return rows, lu.diagonal().get()

    def top_k(self, scores, k):
        import cupy

        return _partition_top_k(cupy, scores, k)

    def set_rows(self, X, rows, values):
        X[self.xp.asarray(np.asarray(rows))] = values

    def fill(self, x, rows, value):
        x[self.xp.asarray(np.asarray(rows))] = value

    def to_host(self, x):
        return x.get()


class Backend:
    """An array namespace ``xp``, its adapter ``ops`` and the input's device."""

    def __init__(self, xp, ops, device):
        self.xp = xp
        self.ops = ops
        self.device = device
        self.name = ops.name

    def asarray(self, x, dtype=None):
        """``x`` (host data or an array) on this backend's device."""
        return self.xp.asarray(x, dtype=dtype, device=self.device)

    def indices(self, idx):
        """Host row indices as an int64 array on the input's device."""
        return self.asarray(np.asarray(idx, dtype=np.int64), dtype=self.xp.int64)

    def eye(self, n, dtype):
        """The identity on the input's device."""
        return self.xp.eye(n, dtype=dtype, device=self.device)

    def __repr__(self):
        return f"Backend({self.name!r}, device={self.device!r})"


_NUMPY_XP = array_api_compat.array_namespace(np.empty(0))


def get_backend(A):
    """Resolve the backend of ``A``: NumPy, torch, CuPy or another array API.

    Raises
    ------
    TypeError
        If ``A`` is not an array of a namespace the array API covers.
    """
    if array_api_compat.is_numpy_array(A):
        return _NUMPY_BACKEND
    xp = array_api_compat.array_namespace(A)
    device = array_api_compat.device(A)
    if array_api_compat.is_torch_array(A):
        return Backend(xp, _TorchOps(xp), device)
    if array_api_compat.is_cupy_array(A):
        return Backend(xp, _CupyOps(xp), device)
    return Backend(xp, _GenericOps(xp), device)


# Stateless, so one serves every NumPy call.
_NUMPY_BACKEND = Backend(_NUMPY_XP, _NumpyOps(_NUMPY_XP), "cpu")
