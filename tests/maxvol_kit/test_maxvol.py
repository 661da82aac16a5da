"""Square MaxVol: the guarantees G1-G5 and G11 of GUARANTEES.md, and invariances."""

import itertools
import math
import warnings

import numpy as np
import pytest
import scipy.linalg
from hypothesis import assume, given
from hypothesis import strategies as st

import maxvol_kit._swaps as swaps
from maxvol_kit import ConvergenceWarning, fast_maxvol, maxvol
from maxvol_kit._backend import get_backend
from maxvol_kit._maxvol import coefficients
from maxvol_kit._swaps import swap_to_dominance
from tests.conftest import rtol_for
from tests.maxvol_kit.helpers import (
    brute_force_max_volume,
    gaussian,
    log_abs_det,
    tall_matrices,
)

SQUARE = [
    pytest.param(lambda A, **kw: maxvol(A, **kw), id="maxvol"),
    pytest.param(lambda A, **kw: maxvol(A, init="greedy", **kw), id="maxvol-greedy"),
    pytest.param(lambda A, **kw: fast_maxvol(A, **kw), id="fast_maxvol"),
]


def _random_start(A, seed):
    """A random nonsingular r-row start (usually far from dominant)."""
    rng = np.random.default_rng(seed)
    return rng.choice(A.shape[0], A.shape[1], replace=False)


# G1: swap identity ---------------------------------------------------------------


@given(A=tall_matrices(max_n=30, max_r=5, min_r=2), seed=st.integers(0, 2**16))
def test_swap_multiplies_det_and_rank1_update_is_exact(A, seed):
    start = _random_start(A, seed)
    assume(abs(np.linalg.det(A[start])) >= 1e-6)
    backend = get_backend(A)
    C = coefficients(A, start.copy(), backend)
    i, j = divmod(int(np.argmax(np.abs(C))), A.shape[1])
    assume(i not in start)  # else already dominant: no swap to check
    idx = start.copy()
    n_swaps, _ = swap_to_dominance(C, idx, 1.0, 1, backend)
    assert n_swaps == 1
    expected = start.copy()
    expected[j] = i
    np.testing.assert_array_equal(idx, expected)
    # det A[I'] = det A[I] * C_ij, and the rank-1 update equals a fresh solve.
    C_old = A @ np.linalg.inv(A[start])
    assert np.linalg.det(A[idx]) == pytest.approx(
        np.linalg.det(A[start]) * C_old[i, j], rel=1e-8
    )
    np.testing.assert_allclose(C, A @ np.linalg.inv(A[idx]), atol=1e-8 * abs(C).max())


# G2: monotone volume, bounded number of swaps ------------------------------------


@given(A=tall_matrices(max_n=12, max_r=3, min_r=2), seed=st.integers(0, 2**16))
def test_volume_grows_by_more_than_tol_per_swap_and_swaps_are_bounded(A, seed):
    tol = 1.05
    start = _random_start(A, seed)
    v_start = abs(np.linalg.det(A[start]))
    assume(v_start >= 1e-8)
    full = maxvol(A, tol=tol, start=start)
    volumes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for cap in range(full.n_iter + 1):
            volumes.append(maxvol(A, tol=tol, start=start, max_iter=cap).log_volume)
    assert volumes[0] == pytest.approx(math.log(v_start), abs=1e-9)
    assert all(b - a > math.log(tol) - 1e-9 for a, b in itertools.pairwise(volumes))
    assert volumes[-1] == pytest.approx(full.log_volume, abs=1e-9)
    v_max, _ = brute_force_max_volume(A)
    assert full.n_iter <= math.log(v_max / v_start) / math.log(tol) + 1e-9


# G3: the contract ---------------------------------------------------------------


@pytest.mark.parametrize("run", SQUARE)
@given(A=tall_matrices(), tol=st.sampled_from([1.0, 1.01, 1.05, 1.5]))
def test_contract(run, A, tol):
    res = run(A, tol=tol)
    n, r = A.shape
    idx = np.asarray(res.indices)
    assert idx.dtype == np.int64 and idx.shape == (r,)
    assert np.unique(idx).size == r
    C = res.coefficients
    assert C.shape == (n, r)
    np.testing.assert_array_equal(C[idx], np.eye(r))
    np.testing.assert_allclose(C @ A[idx], A, atol=1e-9 * np.abs(A).max())
    np.testing.assert_allclose(C, A @ np.linalg.inv(A[idx]), atol=1e-8 * abs(C).max())
    assert res.converged == (np.abs(C).max() <= tol)
    assert res.converged
    assert res.log_volume == pytest.approx(log_abs_det(A[idx]), abs=1e-9)


def test_n_iter_counts_swaps_from_the_start():
    A = gaussian(200, 6, 0)
    start = _random_start(A, 1)
    res = maxvol(A, start=start)
    changed = np.count_nonzero(np.asarray(res.indices) != start)
    assert res.n_iter >= changed > 0
    # the same start and one swap fewer is not converged
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        capped = maxvol(A, start=start, max_iter=res.n_iter - 1)
    assert not capped.converged
    assert capped.n_iter == res.n_iter - 1


def test_float32_contract():
    A = gaussian(500, 12, 3, dtype=np.float32)
    for run in (maxvol, fast_maxvol):
        res = run(A)
        C = res.coefficients
        assert C.dtype == np.float32
        assert res.converged and np.abs(C).max() <= 1.05
        np.testing.assert_allclose(
            C @ A[res.indices], A, atol=rtol_for(np.float32) * np.abs(A).max()
        )
        assert res.log_volume == pytest.approx(log_abs_det(A[res.indices]), rel=1e-4)


# G4, G5: dominance gives quasi-maximal volume and bounded coefficients -----------


@pytest.mark.parametrize("run", SQUARE)
@given(A=tall_matrices(max_n=12, max_r=4, min_r=1), tol=st.sampled_from([1.0, 1.05]))
def test_dominant_volume_is_quasi_maximal(run, A, tol):
    res = run(A, tol=tol)
    r = A.shape[1]
    v_max, _ = brute_force_max_volume(A)
    bound = math.log(v_max) - r * math.log(tol * math.sqrt(r))
    assert res.log_volume >= bound - 1e-9


@pytest.mark.parametrize("run", SQUARE)
@given(A=tall_matrices(max_n=60, max_r=8), tol=st.sampled_from([1.0, 1.05, 1.3]))
def test_coefficient_spectral_norm_bound(run, A, tol):
    res = run(A, tol=tol)
    n, r = A.shape
    norm = np.linalg.norm(res.coefficients, 2)
    assert norm <= math.sqrt(1 + tol**2 * r * (n - r)) * (1 + 1e-12)


# G11: strong RRQR --------------------------------------------------------------


@pytest.mark.parametrize("run", SQUARE)
@given(A=tall_matrices(max_n=50, max_r=6), tol=st.sampled_from([1.0, 1.05, 1.2]))
def test_converged_result_is_strong_rrqr_of_the_transpose(run, A, tol):
    """Gu & Eisenstat's first condition |R11^-1 R12| <= f on A^T with k = r."""
    res = run(A, tol=tol)
    n, _r = A.shape
    idx = np.asarray(res.indices)
    rest = np.setdiff1d(np.arange(n), idx)
    Q, R11 = scipy.linalg.qr(A[idx].T)
    R12 = Q.T @ A[rest].T
    ratio = scipy.linalg.solve_triangular(R11, R12) if rest.size else np.zeros(1)
    assert np.abs(ratio).max() <= tol * (1 + 1e-9)


# Oracle: teneva's classical maxvol from the same LU start --------------------------


@given(A=tall_matrices(max_n=80, max_r=8, min_r=2))
def test_matches_teneva_maxvol(A):
    teneva = pytest.importorskip("teneva")
    assume(A.shape[0] > A.shape[1])  # teneva requires n > r
    rows, B = teneva.maxvol(A, e=1.05, k=1000)
    res = maxvol(A, tol=1.05)
    np.testing.assert_array_equal(np.asarray(res.indices), rows)
    np.testing.assert_allclose(res.coefficients, B, atol=1e-8 * np.abs(B).max())


@given(A=tall_matrices(max_n=60, max_r=6), tol=st.sampled_from([1.0, 1.05]))
def test_deferred_swaps_with_few_candidates_keep_the_contract(A, tol):
    """Force the blocked path (candidates < n, short blocks) on small inputs."""
    start = _random_start(A, 0)
    assume(abs(np.linalg.det(A[start])) >= 1e-8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(swaps, "_CANDIDATES", 3)
        mp.setattr(swaps, "_MAX_DEFERRED", 2)
        res = maxvol(A, tol=tol, start=start)
    idx = np.asarray(res.indices)
    assert np.unique(idx).size == A.shape[1]
    assert res.converged and np.abs(res.coefficients).max() <= tol
    np.testing.assert_allclose(
        res.coefficients,
        A @ np.linalg.inv(A[idx]),
        atol=1e-8 * abs(res.coefficients).max(),
    )
    assert (
        res.log_volume
        >= math.log(abs(np.linalg.det(A[start]))) + res.n_iter * math.log(tol) - 1e-9
    )


def test_maxvol_at_scale_is_dominant_and_distinct():
    A = gaussian(20000, 32, 7)
    for run in (maxvol, fast_maxvol):
        res = run(A)
        assert res.converged and np.unique(res.indices).size == 32
        assert np.abs(res.coefficients).max() <= 1.05


# Invariances ------------------------------------------------------------------


@pytest.mark.parametrize("run", SQUARE)
@given(A=tall_matrices(), power=st.integers(-20, 20))
def test_power_of_two_scaling_leaves_selection_unchanged(run, A, power):
    base = np.asarray(run(A).indices)
    scaled = np.asarray(run(A * 2.0**power).indices)
    np.testing.assert_array_equal(base, scaled)


@pytest.mark.parametrize("run", SQUARE)
@given(A=tall_matrices(), seed=st.integers(0, 2**16))
def test_row_permutation_permutes_the_selection(run, A, seed):
    perm = np.random.default_rng(seed).permutation(A.shape[0])
    base = set(np.asarray(run(A).indices).tolist())
    permuted = np.asarray(run(A[perm]).indices)
    assert set(perm[permuted].tolist()) == base


@pytest.mark.parametrize("run", SQUARE)
@given(A=tall_matrices(), seed=st.integers(0, 2**16))
def test_result_is_a_fixed_point_also_after_right_multiplication(run, A, seed):
    res = run(A)
    again = maxvol(A, start=res.indices)
    assert again.n_iter == 0
    np.testing.assert_array_equal(again.indices, res.indices)
    G = np.random.default_rng(seed).standard_normal((A.shape[1],) * 2)
    G += 3 * np.eye(A.shape[1])  # comfortably nonsingular
    mixed = maxvol(A @ G, start=res.indices, tol=1.05 * (1 + 1e-9))
    assert mixed.n_iter == 0


@pytest.mark.parametrize("run", SQUARE)
@given(A=tall_matrices(max_n=20, max_r=5), dup=st.integers(0, 1000))
def test_duplicate_rows_are_never_both_selected(run, A, dup):
    n = A.shape[0]
    A2 = np.vstack([A, A[dup % n], A[(dup * 7) % n]])
    idx = np.asarray(run(A2).indices)
    sel = {tuple(row) for row in A2[idx]}
    assert len(sel) == A.shape[1]
