"""Fast MaxVol: the pivots of column-pivoted QR, the prefix property, certification."""

import contextlib

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

import maxvol_kit._greedy as greedy
from maxvol_kit import fast_maxvol
from tests.maxvol_kit.helpers import gaussian, greedy_loop, log_abs_det, tall_matrices


def qr_pivots(A, k):
    """The first k columns that LAPACK geqp3 pivots to in A^T."""
    _, piv = scipy.linalg.qr(A.T, pivoting=True, mode="r")
    return piv[:k]


@given(A=tall_matrices(max_n=80, max_r=10))
def test_picks_the_rows_pivoted_qr_of_the_transpose_picks(A):
    res = fast_maxvol(A, refine=False)
    np.testing.assert_array_equal(res.indices, qr_pivots(A, A.shape[1]))


@given(A=tall_matrices(max_n=80, max_r=10))
def test_picks_the_textbook_greedy_rows(A):
    res = fast_maxvol(A, refine=False)
    np.testing.assert_array_equal(res.indices, greedy_loop(A, A.shape[1]))


@pytest.mark.parametrize(("n", "r"), [(3000, 40), (5000, 17), (20000, 64)])
def test_matches_pivoted_qr_at_scale(n, r):
    A = gaussian(n, r, n + r)
    np.testing.assert_array_equal(fast_maxvol(A, refine=False).indices, qr_pivots(A, r))


@contextlib.contextmanager
def tiny_blocks():
    """Force short candidate lists and blocks so every engine path runs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(greedy, "_MIN_CANDIDATES", 2)
        mp.setattr(greedy, "_CANDIDATES_PER_STEP", 1)
        mp.setattr(greedy, "_MAX_BLOCK", 3)
        yield


@given(A=tall_matrices(max_n=80, max_r=10))
def test_engine_with_tiny_candidate_lists_still_matches_pivoted_qr(A):
    with tiny_blocks():
        res = fast_maxvol(A, refine=False)
    np.testing.assert_array_equal(res.indices, qr_pivots(A, A.shape[1]))


def test_low_rank_plus_noise_matches_pivoted_qr():
    rng = np.random.default_rng(5)
    A = rng.standard_normal((2000, 4)) @ rng.standard_normal((4, 24))
    A += 1e-3 * rng.standard_normal(A.shape)
    with tiny_blocks():
        res = fast_maxvol(A, refine=False)
    np.testing.assert_array_equal(res.indices, qr_pivots(A, 24))


@given(A=tall_matrices(max_n=60, max_r=8), data=st.data())
def test_every_prefix_is_the_greedy_choice_of_its_size(A, data):
    r = A.shape[1]
    full = np.asarray(fast_maxvol(A, refine=False).indices)
    k = data.draw(st.integers(1, r))
    prefix = fast_maxvol(A, rank=k, refine=False)
    np.testing.assert_array_equal(prefix.indices, full[:k])
    # the k-volume of the prefix is the product of the greedy residual norms
    s = np.linalg.svd(A[full[:k]], compute_uv=False)
    assert prefix.log_volume == pytest.approx(np.log(s).sum(), abs=1e-9)


@given(A=tall_matrices(max_n=60, max_r=8), tol=st.sampled_from([1.0, 1.05, 1.2]))
def test_refined_result_is_certified(A, tol):
    res = fast_maxvol(A, tol=tol)
    C = res.coefficients
    assert res.converged and np.abs(C).max() <= tol
    np.testing.assert_allclose(C @ A[res.indices], A, atol=1e-9 * np.abs(A).max())
    greedy_only = fast_maxvol(A, refine=False)
    # swaps only ever grow the volume from the greedy start
    assert res.log_volume >= greedy_only.log_volume - 1e-9
    assert res.log_volume == pytest.approx(log_abs_det(A[res.indices]), abs=1e-9)


@given(A=tall_matrices(max_n=60, max_r=8))
def test_unrefined_result_reports_whether_it_is_dominant(A):
    res = fast_maxvol(A, refine=False, tol=1.0)
    assert res.n_iter == 0
    assert res.converged == (np.abs(res.coefficients).max() <= 1.0)


@given(A=tall_matrices(max_n=60, max_r=8, min_r=2), data=st.data())
def test_rank_below_r_certifies_in_the_span_of_the_picks(A, data):
    r = A.shape[1]
    k = data.draw(st.integers(1, r - 1))
    res = fast_maxvol(A, rank=k)
    idx = np.asarray(res.indices)
    assert idx.shape == (k,) and np.unique(idx).size == k
    C = res.coefficients
    assert C.shape == (A.shape[0], k)
    assert res.converged and np.abs(C).max() <= 1.05
    np.testing.assert_array_equal(C[idx], np.eye(k))


def test_rank_revealing_on_a_low_rank_matrix():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((500, 3)) @ rng.standard_normal((3, 10))
    res = fast_maxvol(A, rank=3)
    assert np.linalg.matrix_rank(A[res.indices]) == 3
    # the picks reproduce A: A = C_full A[I] with least-squares coefficients
    X = np.linalg.lstsq(A[res.indices].T, A.T, rcond=None)[0].T
    np.testing.assert_allclose(X @ A[res.indices], A, atol=1e-9 * np.abs(A).max())
    with pytest.raises(ValueError, match=r"numerical rank 3 < 4.*rank=3"):
        fast_maxvol(A, rank=4)
