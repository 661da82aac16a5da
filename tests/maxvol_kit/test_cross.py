"""Row skeletons (G6) and cross / CUR approximation (G7)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxvol_kit import fast_maxvol, maxvol, skeleton
from tests.maxvol_kit.helpers import brute_force_max_core


@st.composite
def decaying_matrices(draw, max_m=9, max_n=9):
    """Matrices with geometrically decaying singular values."""
    m = draw(st.integers(2, max_m))
    n = draw(st.integers(2, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    decay = draw(st.sampled_from([0.1, 0.3, 0.7]))
    rng = np.random.default_rng(seed)
    k = min(m, n)
    U, _ = np.linalg.qr(rng.standard_normal((m, k)))
    V, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return (U * decay ** np.arange(k)) @ V.T


# G6 ----------------------------------------------------------------------------


@pytest.mark.parametrize("run", [maxvol, fast_maxvol])
@given(
    M=decaying_matrices(max_m=40, max_n=12),
    tol=st.sampled_from([1.0, 1.05]),
    data=st.data(),
)
def test_row_skeleton_error_bound(run, M, tol, data):
    m, n = M.shape
    r = data.draw(st.integers(1, min(m, n) - 1))
    U_full, s, _ = np.linalg.svd(M, full_matrices=False)
    U = U_full[:, :r]
    idx = np.asarray(run(U, tol=tol).indices)
    inv = np.linalg.inv(U[idx])
    err = np.linalg.norm(M - U @ inv @ M[idx], 2)
    sigma = s[r]
    assert err <= np.linalg.norm(inv, 2) * sigma * (1 + 1e-8) + 1e-12
    assert np.linalg.norm(inv, 2) <= math.sqrt(1 + tol**2 * r * (m - r)) * (1 + 1e-9)


# G7 ----------------------------------------------------------------------------


@given(M=decaying_matrices(max_m=6, max_n=6), data=st.data())
def test_maximum_volume_core_gives_the_r_plus_one_bound(M, data):
    r = data.draw(st.integers(1, min(M.shape) - 1))
    _, rows, cols = brute_force_max_core(M, r)
    approx = M[:, cols] @ np.linalg.solve(M[np.ix_(rows, cols)], M[rows, :])
    sigma = np.linalg.svd(M, compute_uv=False)[r]
    assert np.abs(M - approx).max() <= (r + 1) * sigma * (1 + 1e-8) + 1e-13


@given(M=decaying_matrices(max_m=6, max_n=6), data=st.data())
def test_skeleton_error_bound_with_its_volume_ratio(M, data):
    r = data.draw(st.integers(1, min(M.shape) - 1))
    res = skeleton(M, r)
    v_max, _, _ = brute_force_max_core(M, r)
    rho = v_max / abs(np.linalg.det(M[np.ix_(res.rows, res.columns)]))
    sigma = np.linalg.svd(M, compute_uv=False)[r]
    err = np.abs(M - res.approximation()).max()
    assert err <= rho * (r + 1) * sigma * (1 + 1e-8) + 1e-13
    assert res.log_volume == pytest.approx(math.log(v_max / rho), abs=1e-9)


@given(M=decaying_matrices(max_m=30, max_n=30), tol=st.sampled_from([1.0, 1.05]))
def test_skeleton_core_is_dominant_in_rows_and_columns(M, tol):
    s = np.linalg.svd(M, compute_uv=False)
    well_resolved = int(np.sum(s > 1e-8 * s[0]))  # keep away from roundoff rank
    r = max(1, min(min(M.shape) // 2, well_resolved))
    res = skeleton(M, r, tol=tol)
    assert res.converged
    rows, cols = np.asarray(res.rows), np.asarray(res.columns)
    assert np.unique(rows).size == r and np.unique(cols).size == r
    core = M[np.ix_(rows, cols)]
    roundoff = 1e-13 * np.linalg.cond(core)  # of the check's own solves
    assert np.abs(M[:, cols] @ np.linalg.inv(core)).max() <= tol + roundoff
    assert np.abs(np.linalg.solve(core, M[rows, :])).max() <= tol + roundoff
    left = M[:, cols] @ np.linalg.inv(core)
    np.testing.assert_allclose(res.left, left, rtol=0, atol=roundoff + 1e-12)
    np.testing.assert_array_equal(res.right, M[rows, :])


@pytest.mark.parametrize(("m", "n", "r"), [(60, 40, 5), (200, 300, 12), (50, 50, 50)])
def test_exact_recovery_of_rank_r(m, n, r):
    rng = np.random.default_rng(m + n + r)
    M = rng.standard_normal((m, r)) @ rng.standard_normal((r, n))
    res = skeleton(M, r)
    np.testing.assert_allclose(res.approximation(), M, atol=1e-9 * np.abs(M).max())


def test_core_larger_than_the_rank_is_refused():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((60, 5)) @ rng.standard_normal((5, 40))
    msg = r"M\.T \(shape \(40, 60\)\) has numerical rank 5 < 6.*pass rank=5"
    with pytest.raises(ValueError, match=msg):
        skeleton(M, 6)
