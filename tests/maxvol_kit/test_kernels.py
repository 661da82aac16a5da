"""The compiled loops (maxvol_kit._kernels) against the Python loops and exact oracles.

The LU start makes the same LAPACK calls as the Python path: bit for bit (its
log-determinant summed in another order). The
stack's own pivoted QR, back substitution and swaps give the Python path's
rows and swap counts, and its coefficients and volumes to roundoff.
"""

import types
from fractions import Fraction

import numpy as np
import pytest
import threadpoolctl

import maxvol_kit._small as small
from tests.maxvol_kit.helpers import gaussian

_RTOL = {"float64": 1e-12, "float32": 2e-6}


@pytest.fixture
def kernels():
    if small._kernels is None:
        pytest.fail("maxvol_kit._kernels was not built (setup.py; needs a C compiler)")
    return small._kernels


def _start(A, how):
    """A coefficient matrix and its rows: the LU start, or the rows of smallest norm."""
    if how == "lu":
        rows, _, C, _ = small.lu_coefficients(A)
        return C, rows
    rows = np.argsort(np.linalg.norm(A, axis=1), kind="stable")[: A.shape[1]]
    rows = rows.astype(np.int64)
    return np.ascontiguousarray(A @ np.linalg.inv(A[rows])), rows


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("n", "r"), [(128, 32), (40, 3), (9, 9), (500, 1)])
@pytest.mark.parametrize("how", ["lu", "smallest"])
@pytest.mark.parametrize(("tol", "max_iter"), [(1.05, 1000), (1.0, 1000), (1.0, 2)])
def test_swaps_match_the_python_loop(kernels, dtype, n, r, how, tol, max_iter):
    for seed in range(3):
        A = gaussian(n, r, seed, dtype=np.dtype(dtype))
        C, rows = _start(A, how)
        C = C.astype(dtype)
        C2, rows2 = C.copy(), rows.copy()
        scale = float(np.abs(C).max())  # the updates' roundoff is relative to it
        n_swaps, gain, largest = small._swap_loop(C, rows, tol, max_iter)
        got = kernels.swaps(C2, rows2, tol, max_iter)
        assert got[0] == n_swaps
        np.testing.assert_allclose(got[1:], (gain, largest), rtol=_RTOL[dtype] * scale)
        np.testing.assert_array_equal(rows2, rows)
        np.testing.assert_allclose(C2, C, rtol=0, atol=_RTOL[dtype] * scale)


def test_swaps_break_magnitude_ties_as_numpy_argmax_and_argmin(kernels):
    # Rows i and -i give entries +m and -m of equal magnitude (exactly, also
    # after each update); the Python loop takes the first largest (+m)
    # unless the smallest is larger in magnitude.
    A = gaussian(30, 4, 1)
    A = np.vstack([A, -A[:10], A[:10]])
    for seed in range(5):
        rows = np.random.default_rng(seed).permutation(A.shape[0])[:4]
        rows = rows.astype(np.int64)
        C = np.ascontiguousarray(A @ np.linalg.inv(A[rows]))
        C2, rows2 = C.copy(), rows.copy()
        got = kernels.swaps(C2, rows2, 1.0, 100)
        assert got[0] == small._swap_loop(C, rows, 1.0, 100)[0]
        np.testing.assert_array_equal(rows2, rows)


def _python_stack(monkeypatch, *args):
    with monkeypatch.context() as patch:
        patch.setattr(small, "_kernels", None)
        return small.stack_maxvol(*args)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("b", "n", "r"), [(40, 128, 32), (7, 20, 5), (3, 6, 6)])
@pytest.mark.parametrize(("refine", "max_iter"), [(True, 3200), (True, 1), (False, 0)])
def test_stack_matches_the_python_path(
    kernels, monkeypatch, dtype, b, n, r, refine, max_iter
):
    A = gaussian(b * n, r, b + n, dtype=np.dtype(dtype)).reshape(b, n, r)
    floor = max(n, r) * float(np.finfo(dtype).eps)
    before = A.copy()
    got = small.stack_maxvol(A, floor, 1.05, max_iter, refine)
    expected = _python_stack(monkeypatch, A, floor, 1.05, max_iter, refine)
    np.testing.assert_array_equal(A, before)  # the input is copied
    rows, C, bad, log_det, n_iter, peak = got
    assert bad is None and expected[2] is None
    np.testing.assert_array_equal(rows, expected[0])
    np.testing.assert_array_equal(n_iter, expected[4])
    for name, x, y in zip(
        ["C", "log_det", "peak"],
        [C, log_det, peak],
        [expected[i] for i in (1, 3, 5)],
        strict=True,
    ):
        assert x.dtype == y.dtype, name
        np.testing.assert_allclose(x, y, rtol=0, atol=_RTOL[dtype] * r, err_msg=name)
    if refine and max_iter > 10:
        assert (peak <= 1.05).all()


def test_stack_names_the_first_rank_deficient_problem(kernels, monkeypatch):
    A = gaussian(5 * 30, 4, 2).reshape(5, 30, 4)
    A[2, :, 3] = A[2, :, 0]  # rank 3
    A[4, :, 1] = 0.0
    floor = 30 * float(np.finfo(np.float64).eps)
    got = small.stack_maxvol(A, floor, 1.05, 100, True)
    assert got[2] == 2
    assert _python_stack(monkeypatch, A, floor, 1.05, 100, True)[2] == 2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    ("n", "r", "order"), [(128, 32, "C"), (50, 7, "F"), (6, 6, "C")]
)
def test_lu_start_equals_the_python_path(kernels, monkeypatch, dtype, n, r, order):
    for seed in range(3):
        A = np.array(gaussian(n, r, seed, dtype=np.dtype(dtype)), order=order)
        A.setflags(write=False)  # read, never written
        got = small.lu_coefficients(A)
        with monkeypatch.context() as patch:
            patch.setattr(small, "_kernels", None)
            expected = small.lu_coefficients(A)
        np.testing.assert_array_equal(got[0], expected[0])  # rows
        assert got[1] == expected[1]  # rcond
        np.testing.assert_array_equal(got[2], expected[2])  # C
        # log|det| = sum log|U_jj|: in order in float64 here, pairwise in NumPy
        rel = 1e-6 if dtype == "float32" else 1e-14
        assert got[3] == pytest.approx(expected[3], rel=rel)


def test_lu_start_of_a_singular_matrix_reports_rcond_zero(kernels):
    A = gaussian(40, 5, 3)
    A[:, 4] = A[:, 0] + A[:, 1]
    rows, rcond, _, _ = small.lu_coefficients(A)
    assert rcond < 40 * np.finfo(np.float64).eps
    assert np.unique(rows).size == 5


def _exact_residuals(A, picked):
    """Squared residual norms of the rows of integer ``A`` after projecting out
    the rows ``picked`` (Gram-Schmidt in rational arithmetic)."""

    def residual(row, basis):
        v = [Fraction(int(x)) for x in row]
        for q in basis:
            f = sum(a * b for a, b in zip(v, q, strict=True)) / sum(b * b for b in q)
            v = [a - f * b for a, b in zip(v, q, strict=True)]
        return v

    basis = []
    for p in picked:
        basis.append(residual(A[p], basis))
    return [sum(a * a for a in residual(row, basis)) for row in A]


def test_stack_pivots_are_the_exact_greedy_on_integer_matrices(kernels):
    # Entries in {-2..2}: many exact ties. Each pick must have the largest
    # residual norm in exact arithmetic given the picks before it.
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(150):
        n, r = int(rng.integers(3, 11)), int(rng.integers(1, 4))
        A = rng.integers(-2, 3, size=(n, r)).astype(np.float64)
        rows, C, bad, *_ = small.stack_maxvol(A[None], 1e-9, 1.05, 0, False)
        if bad is not None:
            continue
        checked += 1
        for k in range(r):
            scores = _exact_residuals(A, rows[0, :k])
            assert scores[rows[0, k]] == max(scores), (A, rows[0])
        np.testing.assert_allclose(C[0] @ A[rows[0]], A, atol=1e-12)
    assert checked > 100


@pytest.mark.parametrize(("n", "r"), [(128, 32), (64, 8), (300, 17), (33, 32)])
@pytest.mark.parametrize("spread", [0, 8, 13])
def test_stack_is_as_accurate_as_geqp3_when_the_columns_scales_spread(
    kernels, monkeypatch, n, r, spread
):
    # Column scales 10^(-spread/2)..10^(spread/2) change neither the greedy
    # rows nor C = A A[rows]^-1 in exact arithmetic (C is the same for A and
    # A D); in floating point both paths lose digits to the spread alike
    # (about cond(A D) eps), so compare their worst errors over a few seeds.
    errors = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        A = rng.standard_normal((n, r))
        AD = A * np.logspace(-spread / 2, spread / 2, r)
        got = small.stack_maxvol(AD[None], 1e-300, 1.05, 0, False)
        expected = _python_stack(monkeypatch, AD[None], 1e-300, 1.05, 0, False)
        np.testing.assert_array_equal(got[0], expected[0])  # geqp3's pivots
        oracle = np.linalg.solve(A[got[0][0]].T, A.T).T
        errors.append([np.abs(x[1][0] - oracle).max() for x in (got, expected)])
    compiled, python = np.max(errors, axis=0)
    assert compiled <= 10 * python + 1e-13


def test_float32_volumes_are_the_log_determinants_of_the_rows(kernels):
    # Many swapped float32 problems: the volume, kept as the greedy's sum of
    # log|R_ii| plus the swaps' gains, is log|det A[rows]| (float64 oracle).
    A = np.random.default_rng(5).standard_normal((2000, 40, 6)).astype(np.float32)
    floor = 40 * float(np.finfo(np.float32).eps)
    rows, _, _, log_det, n_iter, _ = small.stack_maxvol(A, floor, 1.0, 1000, True)
    assert (n_iter > 0).sum() > 500  # swapped problems
    picked = np.take_along_axis(A, rows[:, :, None], axis=1).astype(np.float64)
    expected = np.linalg.slogdet(picked)[1]
    assert log_det.dtype == np.float32
    np.testing.assert_allclose(log_det, expected, rtol=0, atol=1e-4)


def test_a_stack_split_over_threads_gives_one_threads_results(kernels, monkeypatch):
    A = gaussian(23 * 40, 6, 7).reshape(23, 40, 6)
    one = small.stack_maxvol(A, 1e-12, 1.0, 1000, True)
    monkeypatch.setattr(small, "stack_threads", lambda b, n, r: 4)
    split = small.stack_maxvol(A, 1e-12, 1.0, 1000, True)
    for x, y in zip(one, split, strict=True):
        if x is not None:
            np.testing.assert_array_equal(x, y)
    A[17, :, 5] = A[17, :, 0]  # rank-deficient, in the last part
    A[20, :, 5] = 0.0
    assert small.stack_maxvol(A, 1e-12, 1.0, 1000, True)[2] == 17


def test_stack_threads_follow_the_blas_limit(monkeypatch):
    monkeypatch.setattr(small, "THREAD_WORK", 1)
    with threadpoolctl.threadpool_limits(1):
        assert small.stack_threads(64, 128, 32) == 1
    with threadpoolctl.threadpool_limits(2):
        assert small.stack_threads(64, 128, 32) <= 2
        assert small.stack_threads(1, 128, 32) == 1
    monkeypatch.setattr(small, "THREAD_WORK", 1 << 40)
    assert small.stack_threads(64, 128, 32) == 1


@pytest.mark.parametrize(("counts", "expected"), [([], 1), ([None], 1), ([None, 3], 3)])
def test_stack_threads_when_the_blas_thread_count_is_unknown(
    monkeypatch, counts, expected
):
    class Library:
        def __init__(self, count):
            self.count = count

        def get_num_threads(self):
            return self.count

    class Controller:
        def select(self, user_api):
            assert user_api == "blas"
            return types.SimpleNamespace(lib_controllers=[Library(c) for c in counts])

    monkeypatch.setattr(small, "THREAD_WORK", 1)
    monkeypatch.setattr(small, "_blas_controller", Controller)
    assert small.stack_threads(64, 128, 32) == expected


def test_the_avx2_build_matches_the_baseline_build(kernels, monkeypatch):
    from maxvol_kit import _kernels as baseline

    if not baseline.avx2_fma():
        pytest.skip("this CPU has no AVX2 and FMA")
    avx2 = pytest.importorskip("maxvol_kit._kernels_avx2")
    assert small._kernels is avx2  # the one the package uses here
    A = gaussian(30 * 96, 24, 3).reshape(30, 96, 24)
    got = small.stack_maxvol(A, 1e-12, 1.0, 1000, True)
    monkeypatch.setattr(small, "_kernels", baseline)
    expected = small.stack_maxvol(A, 1e-12, 1.0, 1000, True)
    for i in (0, 4):  # rows, swaps
        np.testing.assert_array_equal(got[i], expected[i])
    for i in (1, 3, 5):  # C, log|det|, max|C|
        np.testing.assert_allclose(got[i], expected[i], rtol=0, atol=1e-12)
