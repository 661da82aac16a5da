"""Randomized SVD, Frequent Directions and random projections on every backend."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxvol_kit._sketch import (
    FrequentDirectionsSketch,
    dense_projection,
    randomized_range_finder,
    randomized_svd,
    sparse_sign_projection,
)
from tests.conftest import to_numpy
from tests.maxvol_kit.helpers import assert_fd_guarantee


def decaying(n, d, seed, decay=0.7, noise=1e-3):
    rng = np.random.default_rng(seed)
    k = min(n, d)
    U, _ = np.linalg.qr(rng.standard_normal((n, k)))
    V, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return (U * decay ** np.arange(k)) @ V.T + noise * rng.standard_normal((n, d))


# Randomized SVD ----------------------------------------------------------------


def test_randomized_svd_matches_scikit_learn():
    extmath = pytest.importorskip("sklearn.utils.extmath")
    A = decaying(300, 80, 0)
    U, s, Vt = randomized_svd(A, 6, random_state=0)
    U_sk, s_sk, Vt_sk = extmath.randomized_svd(A, 6, random_state=0)
    np.testing.assert_allclose(s, s_sk, rtol=1e-8)
    # same subspaces (signs of singular vectors are arbitrary)
    np.testing.assert_allclose(np.abs(U.T @ U_sk), np.eye(6), atol=1e-6)
    np.testing.assert_allclose(np.abs(Vt @ Vt_sk.T), np.eye(6), atol=1e-6)


def test_randomized_svd_is_an_svd():
    A = decaying(200, 60, 1)
    U, s, Vt = randomized_svd(A, 8, random_state=1)
    np.testing.assert_allclose(U.T @ U, np.eye(8), atol=1e-12)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(8), atol=1e-12)
    assert np.all(np.diff(s) <= 0)
    exact = np.linalg.svd(A, compute_uv=False)
    np.testing.assert_allclose(s, exact[:8], rtol=1e-6)
    err = np.linalg.norm(A - (U * s) @ Vt, 2)
    assert err <= exact[8] * (1 + 1e-3)


def test_range_finder_is_exact_on_low_rank_input():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((150, 7)) @ rng.standard_normal((7, 50))
    Q = randomized_range_finder(A, 7, random_state=0)
    np.testing.assert_allclose(Q.T @ Q, np.eye(7), atol=1e-12)
    np.testing.assert_allclose(Q @ (Q.T @ A), A, atol=1e-10 * np.abs(A).max())


def test_randomized_svd_same_on_every_backend(backend):
    _, to = backend
    A = decaying(120, 40, 3)
    U, s, _Vt = randomized_svd(A, 5, random_state=7)
    U2, s2, _Vt2 = randomized_svd(to(A), 5, random_state=7)
    np.testing.assert_allclose(to_numpy(s2), s, rtol=1e-10)
    np.testing.assert_allclose(np.abs(to_numpy(U2).T @ U), np.eye(5), atol=1e-8)


def test_randomized_svd_bad_input():
    A = decaying(50, 20, 0)
    with pytest.raises(ValueError, match=r"n_components \(21\) must be in \[1, 20\]"):
        randomized_svd(A, 21)
    with pytest.raises(ValueError, match="NaN or infinite"):
        randomized_svd(np.full((5, 5), np.nan), 2)


# Frequent Directions -----------------------------------------------------------


@settings(max_examples=25)
@given(
    n=st.integers(1, 300),
    d=st.integers(1, 30),
    ell=st.integers(1, 12),
    chunks=st.integers(1, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_frequent_directions_guarantee(n, d, ell, chunks, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d)) * np.exp(-np.arange(d) / 4)
    fd = FrequentDirectionsSketch(ell)
    for part in np.array_split(A, min(chunks, n)):
        fd.update(part)
    assert fd.n_rows_seen == n
    assert_fd_guarantee(A, fd.sketch, ell)


def test_frequent_directions_memory_does_not_grow_with_rows():
    fd = FrequentDirectionsSketch(8)
    rng = np.random.default_rng(0)
    fd.update(rng.standard_normal((50, 20)))
    buffer = fd._buffer
    for _ in range(200):
        fd.update(rng.standard_normal((50, 20)))
    assert fd._buffer is buffer and buffer.shape == (16, 20)
    assert fd.n_rows_seen == 10050 and fd.sketch.shape[0] <= 16


def test_frequent_directions_on_every_backend(backend):
    _, to = backend
    A = decaying(400, 30, 5)
    ref, fd = FrequentDirectionsSketch(6), FrequentDirectionsSketch(6)
    for part in np.array_split(A, 5):
        ref.update(part)
        fd.update(to(part))
    got = to_numpy(fd.sketch)
    np.testing.assert_allclose(got.T @ got, ref.sketch.T @ ref.sketch, atol=1e-8)


def test_frequent_directions_bad_input():
    fd = FrequentDirectionsSketch(4)
    fd.update(np.ones((3, 5)))
    with pytest.raises(ValueError, match="X has 6 columns but the sketch"):
        fd.update(np.ones((3, 6)))
    with pytest.raises(ValueError, match=r"sketch_size \(0\)"):
        FrequentDirectionsSketch(0)


# Random projections ------------------------------------------------------------


PROJECTIONS = {
    "sparse": lambda X, k, seed: sparse_sign_projection(X, k, random_state=seed),
    "gaussian": lambda X, k, seed: dense_projection(X, k, random_state=seed),
    "rademacher": lambda X, k, seed: dense_projection(
        X, k, kind="rademacher", random_state=seed
    ),
}


@pytest.mark.parametrize("kind", list(PROJECTIONS))
def test_projection_preserves_inner_products(kind):
    """JL with a fixed seed: every pairwise error within 5 standard deviations."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2000))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    k = 1024
    Z = PROJECTIONS[kind](X, k, 1)
    err = np.abs(Z @ Z.T - X @ X.T)
    # Var <Zx, Zy> <= 2 / k for unit x, y (sign and Gaussian sketches alike).
    assert err.max() <= 5 * np.sqrt(2 / k)


@pytest.mark.parametrize("kind", list(PROJECTIONS))
def test_projection_is_unbiased(kind):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2, 300))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    k, draws = 32, 400
    est = [(lambda Z: Z[0] @ Z[1])(PROJECTIONS[kind](X, k, s)) for s in range(draws)]
    std_of_mean = np.sqrt(2 / k) / np.sqrt(draws)
    assert abs(np.mean(est) - X[0] @ X[1]) <= 4 * std_of_mean


@pytest.mark.parametrize("kind", list(PROJECTIONS))
def test_projection_same_on_every_backend(backend, kind):
    _, to = backend
    X = np.random.default_rng(3).standard_normal((10, 50))
    ref = PROJECTIONS[kind](X, 16, 4)
    np.testing.assert_allclose(
        to_numpy(PROJECTIONS[kind](to(X), 16, 4)), ref, atol=1e-12
    )


def test_projection_bad_input():
    with pytest.raises(ValueError, match=r"kind \('sparse'\) must be"):
        dense_projection(np.ones((2, 3)), 2, kind="sparse")
    with pytest.raises(ValueError, match=r"k \(0\)"):
        sparse_sign_projection(np.ones((2, 3)), 0)
