"""MaxVol swaps with deferred rank-1 updates: the engine behind the certification.

Swapping selected row ``idx[j]`` for row ``i`` multiplies ``|det A[idx]|`` by
``|C_ij|`` and changes the coefficients ``C = A A[idx]^-1`` by one rank-1 term
(Goreinov et al., 2010):

    C <- C - u w^T,   u = C[:, j],   w = (C[i, :] - e_j) / C_ij.

Applied directly, every swap reads and writes all of ``C`` (memory-bound: at
100000 x 128 a swap costs as much as 8% of the whole LU start). Here the
updates of a block of swaps are deferred, ``C_true = C - U^T W``, and kept
exact only on a list of candidate rows: the rows holding the largest entries
when the block starts. Each swap takes the largest candidate entry; it costs
O(n t) for the column ``u`` plus O(m r) for the candidates. When no candidate
entry exceeds ``tol`` (or ``t`` reaches its cap) one matrix product applies
the deferred updates to all of ``C``, and a pass over ``C`` either certifies
``max|C| <= tol`` or starts the next block.

Every swap still multiplies the volume by more than ``tol`` (G2), and the end
is certified on all of ``C``. With at most ``_CANDIDATES`` rows every row is a
candidate and the swaps are exactly the classical ones (global arg-max).
"""

from __future__ import annotations

import numpy as np

__all__ = ["swap_to_dominance"]

# Candidate rows kept exact, and swaps deferred at most, per block.
_CANDIDATES = 2048
_MAX_DEFERRED = 32


def swap_to_dominance(C, idx, tol, max_iter, backend):
    """MaxVol swaps on ``C = A A[idx]^-1`` in place until ``max|C| <= tol``.

    ``idx`` (host int64) is updated in place. Returns ``(n_swaps, max|C|)``;
    on return ``C[idx]`` is exactly the identity.
    """
    xp, ops = backend.xp, backend.ops
    value = ops.absmax(C)[2]
    if not value > tol:  # already dominant: one pass, no row maxima
        return 0, value
    eye = backend.eye(C.shape[1], C.dtype)
    n_iter = 0
    row_max = ops.row_absmax(C)
    while float(xp.max(row_max)) > tol and n_iter < max_iter:
        block = _SwapBlock(C, row_max, idx, backend)
        while n_iter < max_iter and block.n_deferred < block.capacity:
            q, j, value = block.argmax()
            if value <= tol:
                break
            block.swap(q, j, idx)
            n_iter += 1
        row_max = block.flush(row_max)
        ops.set_rows(C, idx, eye)
        ops.fill(row_max, idx, 1.0)
    return n_iter, float(xp.max(row_max))


class _SwapBlock:
    """Deferred swaps on ``C``, exact on the candidate rows."""

    def __init__(self, C, row_max, idx, backend):
        xp, ops = backend.xp, backend.ops
        n, r = C.shape
        self.C, self.xp, self.ops, self.backend = C, xp, ops, backend
        self.rows, _ = ops.top_k(row_max, min(n, _CANDIDATES))
        self.host_rows = ops.to_host(self.rows)
        self.exact = xp.take(C, self.rows, axis=0)
        self.eye = backend.eye(r, C.dtype)
        # slot[q]: the position in idx of candidate q if it is selected, else -1.
        self.slot = np.full(self.host_rows.shape[0], -1)
        self.where = {int(row): q for q, row in enumerate(self.host_rows.tolist())}
        for j, row in enumerate(idx.tolist()):
            if row in self.where:
                self.slot[self.where[row]] = j
        # At most r deferred swaps, so the extra memory stays O(n r).
        self.capacity = min(_MAX_DEFERRED, r)
        self.U = xp.empty((self.capacity, n), dtype=C.dtype, device=backend.device)
        self.W = xp.empty((self.capacity, r), dtype=C.dtype, device=backend.device)
        self.n_deferred = 0

    def argmax(self):
        """The largest candidate entry: ``(candidate, column, |value|)``."""
        return self.ops.absmax(self.exact)

    def swap(self, q, j, idx):
        """Swap candidate ``q`` into position ``j`` of ``idx`` (deferred)."""
        xp, t = self.xp, self.n_deferred
        exact = self.exact
        # Column j of the current C for every row: C[:, j] - U^T W[:, j].
        u = self.C[:, j] - self.U[:t, :].T @ self.W[:t, j]
        w = xp.asarray(exact[q, :], copy=True)
        w[j] -= 1.0
        w /= exact[q, j]
        exact -= xp.linalg.outer(xp.take(u, self.rows), w)
        self.U[t, :] = u
        self.W[t, :] = w
        self.n_deferred = t + 1
        leaving = self.where.get(int(idx[j]))
        if leaving is not None:
            self.slot[leaving] = -1
        self.slot[q] = j
        idx[j] = int(self.host_rows[q])
        # Selected rows are exactly unit rows: keep roundoff from lifting their
        # 1 over tol = 1, which would select a row twice.
        sel = np.flatnonzero(self.slot >= 0)
        units = self.xp.take(self.eye, self.backend.indices(self.slot[sel]), axis=0)
        self.ops.set_rows(exact, sel, units)

    def flush(self, row_max):
        """Apply the deferred updates to all of ``C`` in one matrix product.

        Returns the row maxima of ``|C|`` afterwards (``row_max`` if nothing
        was deferred).
        """
        t = self.n_deferred
        if not t:
            return row_max
        return self.ops.subtract_product(self.C, self.U[:t, :], self.W[:t, :])
