"""Oracles and generators for the MaxVol property tests."""

import itertools

import numpy as np
from hypothesis import strategies as st


def gaussian(n, r, seed, dtype=np.float64, scale=1.0):
    """A Gaussian n x r matrix with a fixed seed."""
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((n, r))).astype(dtype)


@st.composite
def tall_matrices(draw, max_n=40, max_r=6, min_r=1):
    """Gaussian tall matrices of random shape, seed and row scales."""
    r = draw(st.integers(min_r, max_r))
    n = draw(st.integers(r, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, r))
    if draw(st.booleans()):
        # Rows of very different scale: the greedy must follow the norms.
        A *= np.exp(rng.uniform(-3, 3, size=(n, 1)))
    return A


def brute_force_max_volume(A):
    """The largest |det A[S]| over all r-row subsets S, and one S attaining it."""
    r = A.shape[1]
    best, best_rows = -1.0, None
    for rows in itertools.combinations(range(A.shape[0]), r):
        vol = abs(np.linalg.det(A[list(rows)]))
        if vol > best:
            best, best_rows = vol, rows
    return best, np.array(best_rows)


def brute_force_max_core(M, r):
    """The r x r submatrix of M of largest |det|: (volume, rows, columns)."""
    best = (-1.0, None, None)
    m, _n = M.shape
    for rows in itertools.combinations(range(m), r):
        vol, cols = brute_force_max_volume(M[list(rows)].T)
        if vol > best[0]:
            best = (vol, np.array(rows), cols)
    return best


def greedy_loop(A, k):
    """Textbook greedy volume: one residual update per step (the oracle)."""
    R = np.array(A, dtype=np.float64, copy=True)
    rows = []
    for _ in range(k):
        norms = np.einsum("ij,ij->i", R, R)
        norms[rows] = -np.inf
        p = int(np.argmax(norms))
        q = R[p] / np.linalg.norm(R[p])
        R -= np.outer(R @ q, q)
        rows.append(p)
    return np.array(rows)


def rect_loop(A, start, K):
    """Greedy rectangular growth with the explicit n x K coefficient matrix.

    The published update (Mikhalev & Oseledets 2018; teneva.maxvol_rect) from
    the square start ``start``.
    """
    rows = list(start)
    B = A @ np.linalg.inv(A[rows])
    for _ in range(K - len(rows)):
        F = np.einsum("ij,ij->i", B, B)
        F[rows] = -np.inf
        i = int(np.argmax(F))
        v = B @ B[i]
        scale = 1.0 / (1.0 + v[i])
        B = np.hstack([B - scale * np.outer(v, B[i]), scale * v[:, None]])
        rows.append(i)
    return np.array(rows), B


def log_abs_det(M):
    """log|det M| for a square matrix."""
    return np.linalg.slogdet(np.asarray(M, dtype=np.float64))[1]


def assert_fd_guarantee(A, B, ell):
    """Frequent Directions: 0 <= ||Ax||^2 - ||Bx||^2 <= ||A - A_k||_F^2 / (ell - k)."""
    assert B.shape[0] <= 2 * ell and B.shape[1] == A.shape[1]
    gap = np.linalg.eigvalsh(A.T @ A - B.T @ B)
    scale = max(1.0, np.linalg.norm(A) ** 2)
    assert gap.min() >= -1e-9 * scale  # B^T B <= A^T A
    sq = np.linalg.svd(A, compute_uv=False) ** 2
    for k in range(ell):
        assert gap.max() <= sq[k:].sum() / (ell - k) + 1e-9 * scale
