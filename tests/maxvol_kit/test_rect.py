"""Rectangular MaxVol: the guarantees G8-G10 of GUARANTEES.md."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maxvol_kit._small as small
from maxvol_kit import fast_maxvol, rect_maxvol
from maxvol_kit._backend import get_backend
from maxvol_kit._maxvol import log_volume
from maxvol_kit._rect import _small_growth, rect_greedy
from tests.conftest import rtol_for
from tests.maxvol_kit.helpers import gaussian, rect_loop, tall_matrices


def log_vol2(A, idx):
    return 0.5 * np.linalg.slogdet(A[idx].T @ A[idx])[1]


@st.composite
def rect_problems(draw, max_n=50, max_r=6):
    A = draw(tall_matrices(max_n=max_n, max_r=max_r))
    n, r = A.shape
    K = draw(st.integers(r, n))
    return A, K


# G8: volume growth and the greedy choice ---------------------------------------


@given(problem=rect_problems())
def test_each_added_row_multiplies_vol2_squared_by_one_plus_its_norm(problem):
    A, K = problem
    idx = np.asarray(rect_maxvol(A, n_rows=K).indices)
    r = A.shape[1]
    for k in range(r, K):
        prev = idx[:k]
        c = A[idx[k]] @ np.linalg.pinv(A[prev])
        others = np.setdiff1d(np.arange(A.shape[0]), prev)
        norms = np.linalg.norm(A[others] @ np.linalg.pinv(A[prev]), axis=1) ** 2
        # the greedy adds the argmax of ||c_i||^2 ...
        assert c @ c == pytest.approx(norms.max(), rel=1e-9)
        # ... and vol2^2 grows by exactly 1 + ||c||^2
        growth = 2 * (log_vol2(A, idx[: k + 1]) - log_vol2(A, prev))
        assert growth == pytest.approx(math.log1p(c @ c), abs=1e-9)


@given(problem=rect_problems())
def test_matches_the_explicit_coefficient_update_from_the_same_start(problem):
    A, K = problem
    start = np.asarray(fast_maxvol(A, refine=False).indices)
    oracle, B = rect_loop(A, start, K)
    res = rect_maxvol(A, n_rows=K)
    np.testing.assert_array_equal(res.indices, oracle)
    np.testing.assert_allclose(res.coefficients, B, atol=1e-8 * np.abs(B).max())


# G9: the contract --------------------------------------------------------------


@given(
    A=tall_matrices(max_n=60, max_r=6),
    tol=st.sampled_from([0.5, 1.0, 1.5]),
    data=st.data(),
)
def test_contract(A, tol, data):
    n, r = A.shape
    min_rows = data.draw(st.integers(r, n))
    max_rows = data.draw(st.integers(min_rows, n))
    res = rect_maxvol(A, tol=tol, min_rows=min_rows, max_rows=max_rows)
    idx = np.asarray(res.indices)
    K = idx.size
    assert min_rows <= K <= max_rows
    assert np.unique(idx).size == K and idx.dtype == np.int64
    C = res.coefficients
    assert C.shape == (n, K)
    np.testing.assert_allclose(C @ A[idx], A, atol=1e-9 * np.abs(A).max())
    rest = np.setdiff1d(np.arange(n), idx)
    worst = np.linalg.norm(C[rest], axis=1).max() if rest.size else 0.0
    assert res.converged == (worst <= tol * (1 + 1e-9))
    if K < max_rows and K > min_rows:
        # it stopped by tol
        assert worst <= tol * (1 + 1e-9)
    assert res.log_volume == pytest.approx(log_vol2(A, idx), abs=1e-8)


def test_maintained_row_norms_equal_recomputed(dtype):
    A = gaussian(3000, 24, 1, dtype=dtype)
    idx, scores, best_left = rect_greedy(A, 48, 48, 1.0, get_backend(A))
    idx = np.asarray(idx)
    rest = np.setdiff1d(np.arange(A.shape[0]), idx)
    A64 = A.astype(np.float64)
    exact = np.linalg.norm(A64[rest] @ np.linalg.pinv(A64[idx]), axis=1) ** 2
    rtol = 1e-8 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(scores[rest], exact, rtol=rtol)
    assert np.all(np.isneginf(scores[idx]))
    assert best_left == pytest.approx(exact.max(), rel=rtol)


@pytest.mark.parametrize(
    ("n", "r", "bounds"),
    [
        (128, 32, {"n_rows": 64}),
        (200, 16, {"n_rows": 48}),
        (100, 8, {"tol": 1.0}),
        (150, 12, {"tol": 1.5, "min_rows": 20, "max_rows": 40}),
        (90, 10, {"tol": 0.5, "max_rows": 15}),
    ],
)
def test_small_growth_takes_the_greedy_rows_and_volume(n, r, bounds, dtype):
    """The pivoted-Cholesky growth of small problems against the lazy greedy."""
    A = gaussian(n, r, n + r, dtype=dtype)
    backend = get_backend(A)
    res = rect_maxvol(A, **bounds)
    K = bounds.get("n_rows")
    low, high = (K, K) if K else (bounds.get("min_rows", r), bounds.get("max_rows", n))
    assert _small_growth(A, low, high, backend)  # the path under test
    idx, _, best_left = rect_greedy(A, low, high, bounds.get("tol", 1.0), backend)
    np.testing.assert_array_equal(res.indices, idx)
    assert res.converged == (best_left <= bounds.get("tol", 1.0) ** 2)
    rtol = rtol_for(dtype)
    expected = log_volume(A[idx], backend)
    assert res.log_volume == pytest.approx(expected, rel=rtol, abs=rtol)
    if dtype == np.float64 and K:  # and the explicit update of the paper
        start = np.asarray(fast_maxvol(A, refine=False).indices)
        np.testing.assert_array_equal(res.indices, rect_loop(A, start, K)[0])


@pytest.mark.parametrize(
    ("dtype", "scale", "tol"),
    [(np.float32, 1e-5, 1e-6), (np.float64, 1e-9, 0.0), (np.float32, 1e-3, 0.0)],
)
def test_small_growth_leaves_unresolvable_scores_to_the_lazy_greedy(
    monkeypatch, dtype, scale, tol
):
    # Half the rows have coefficients whose squares are below the dtype's
    # resolution of U_jj^2 - 1: the pivoted Cholesky could not rank them or
    # tell them from tol, so the result is the lazy greedy's.
    A = gaussian(60, 4, 0)
    A[30:] *= scale
    A = A.astype(dtype)
    res = rect_maxvol(A, tol=tol)
    monkeypatch.setattr(small, "RECT_ROWS", -1)  # the lazy greedy only
    expected = rect_maxvol(A, tol=tol)
    np.testing.assert_array_equal(res.indices, expected.indices)
    assert res.converged == expected.converged
    C = A.astype(np.float64) @ np.linalg.pinv(A[res.indices].astype(np.float64))
    rest = np.setdiff1d(np.arange(60), res.indices)
    if res.converged and rest.size:
        assert np.linalg.norm(C[rest], axis=1).max() <= tol * (1 + 1e-3) + 1e-6


def test_square_input_selects_every_row():
    A = gaussian(6, 6, 2)
    res = rect_maxvol(A)
    assert sorted(np.asarray(res.indices).tolist()) == list(range(6))
    assert res.converged
    assert res.log_volume == pytest.approx(np.linalg.slogdet(A)[1], abs=1e-9)


def test_stopping_by_tol_without_bounds():
    A = gaussian(2000, 10, 4)
    res = rect_maxvol(A, tol=1.0)
    C = res.coefficients
    rest = np.setdiff1d(np.arange(2000), res.indices)
    assert res.converged
    assert np.linalg.norm(C[rest], axis=1).max() <= 1.0
    assert 10 < res.indices.size < 2000


def test_float32():
    A = gaussian(2000, 16, 9, dtype=np.float32)
    res = rect_maxvol(A, n_rows=32)
    np.testing.assert_allclose(
        res.coefficients @ A[res.indices], A, atol=rtol_for(np.float32) * 10
    )


# G10: local maximality with exchange refinement ---------------------------------


@given(problem=rect_problems(max_n=40, max_r=5))
def test_exchange_refinement_reaches_a_local_maximum(problem):
    A, K = problem
    n, r = A.shape
    greedy = rect_maxvol(A, n_rows=K)
    res = rect_maxvol(A, n_rows=K, refine=True)
    idx = np.asarray(res.indices)
    assert np.unique(idx).size == K
    assert res.log_volume >= greedy.log_volume - 1e-9
    if K == n:
        return
    C = res.coefficients
    rest = np.setdiff1d(np.arange(n), idx)
    sq = np.linalg.norm(C[rest], axis=1) ** 2
    assert sq.max() <= r / (K - r + 1) * (1 + 1e-6)
    assert np.linalg.norm(C, 2) <= math.sqrt(1 + (n - K) * r / (K - r + 1)) * (1 + 1e-6)
    # no single exchange grows the volume (checked by brute force)
    base = log_vol2(A, idx)
    for t in range(K):
        for i in rest:
            trial = idx.copy()
            trial[t] = i
            assert log_vol2(A, trial) <= base + 1e-7
