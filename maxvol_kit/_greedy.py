"""Lazy blocked greedy row selection: the engine behind fast and rect MaxVol.

Both greedy volume (the pivots of column-pivoted QR of ``A.T``) and greedy
rectangular MaxVol pick, at each step, the row with the largest score

    s_i = a_i M a_i^T,

and then downdate a positive semidefinite ``M`` by a rank-1 term,
``M <- M - u u^T``, so that every score drops by ``(a_i . u)^2``. For greedy
volume ``M`` is the projector onto the complement of the picked rows
(``s_i`` is the squared residual norm); for rectangular MaxVol ``M`` is
``(A[I]^T A[I])^-1`` (``s_i = ||c_i||^2``).

Scores only decrease, so a stale score is an upper bound. The engine keeps
exact scores for a short list of candidates (the top ``m`` rows), picks from
them while the best candidate still beats the largest stale score outside the
list, and then refreshes every score at once with one matrix-matrix product
``A @ [u_1 ... u_b]``. The picks are exactly the plain greedy picks (ties and
roundoff aside), but the full passes over ``A`` are BLAS-3 and ``b`` times
fewer than in the textbook one-matrix-vector-product-per-step loop.
"""

from __future__ import annotations

import math

__all__ = ["lazy_greedy"]

# Steps per block and candidates per step: measured on 1e4..1e5 x 64..256
# Gaussian and low-rank matrices (benchmarks/maxvol_bench.py).
_MAX_BLOCK = 64
_CANDIDATES_PER_STEP = 64
_MIN_CANDIDATES = 1024


def lazy_greedy(
    A, scores, n_steps, pick, *, backend, stop_at=-math.inf, exact_on_return=True
):
    """Pick up to ``n_steps`` rows of ``A`` greedily by score.

    Parameters
    ----------
    A : array of shape (n, r)
        The rows to pick from.
    scores : array of shape (n,)
        Exact current scores; updated in place and exact again on return
        (picked rows hold ``-inf``).
    n_steps : int
        The number of rows to pick at most.
    pick : callable
        ``pick(p) -> u``: accept row ``p``, update the caller's state and
        return the downdate vector ``u`` of shape (r,).
    backend : Backend
        The array namespace and adapter of ``A``.
    stop_at : float
        Stop early once the largest score left is ``<= stop_at``.
    exact_on_return : bool
        Refresh the scores after the last block too. Without it the scores
        and ``best_left`` are stale upper bounds; that saves one pass over
        ``A`` when only the picks are needed.

    Returns
    -------
    picked : list of int
        The rows in pick order.
    best_left : float
        The largest score among the rows not picked (``-inf`` if none is left).
    """
    xp, ops = backend.xp, backend.ops
    n = A.shape[0]
    picked = []
    while len(picked) < n_steps:
        steps = min(n_steps - len(picked), _MAX_BLOCK)
        m = min(n, max(_MIN_CANDIDATES, _CANDIDATES_PER_STEP * steps))
        cand, bound = ops.top_k(scores, m)
        block_rows, block_dirs, best = _pick_block(
            xp.take(A, cand, axis=0),
            xp.take(scores, cand),
            ops.to_host(cand),
            bound,
            steps,
            pick,
            xp,
            stop_at,
        )
        picked.extend(block_rows)
        done = len(picked) == n_steps or best <= stop_at
        refresh = exact_on_return or not done
        if block_dirs and refresh:
            W = ops.thin_product(A, xp.stack(block_dirs, axis=1))
            scores -= ops.row_sq_norms(W)
            ops.fill(scores, block_rows, -math.inf)
        if done:
            break
    best_left = float(xp.max(scores)) if len(picked) < n else -math.inf
    return picked, best_left


def _pick_block(Ac, sc, cand, bound, steps, pick, xp, stop_at):
    """Greedy steps on the candidate rows while the choice is provably global.

    ``sc`` holds the candidates' exact scores (``cand`` their rows, on the
    host) and ``bound`` an upper bound on every other row's score; the best
    candidate is the global argmax as long as it is ``>= bound``.
    """
    rows, dirs = [], []
    best = math.inf
    for _ in range(steps):
        q = int(xp.argmax(sc))
        best = float(sc[q])
        if best < bound or best <= stop_at:
            break
        p = int(cand[q])
        u = pick(p)
        proj = Ac @ u
        sc -= proj * proj
        sc[q] = -math.inf
        rows.append(p)
        dirs.append(u)
    return rows, dirs, best
