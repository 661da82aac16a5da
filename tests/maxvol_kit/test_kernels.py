"""The compiled loops (maxvol_kit._kernels) give the Python loops' results exactly."""

import numpy as np
import pytest

import maxvol_kit._small as small
from tests.maxvol_kit.helpers import gaussian


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
def test_swaps_equal_the_python_loop(kernels, dtype, n, r, how, tol, max_iter):
    for seed in range(3):
        A = gaussian(n, r, seed, dtype=np.dtype(dtype))
        C, rows = _start(A, how)
        C = C.astype(dtype)
        C2, rows2 = C.copy(), rows.copy()
        expected = small._swap_loop(C, rows, tol, max_iter)
        got = kernels.swaps(C2, rows2, tol, max_iter)
        assert got == expected  # (n_swaps, log gain, max|C|), exactly
        np.testing.assert_array_equal(rows2, rows)
        np.testing.assert_array_equal(C2, C)


def test_swaps_break_magnitude_ties_as_numpy_argmax_and_argmin(kernels):
    # Rows i and -i give entries +m and -m of equal magnitude; the Python loop
    # takes the first largest (+m) unless the smallest is larger in magnitude.
    A = gaussian(30, 4, 1)
    A = np.vstack([A, -A[:10], A[:10]])
    for seed in range(5):
        rows = np.random.default_rng(seed).permutation(A.shape[0])[:4]
        rows = rows.astype(np.int64)
        C = np.ascontiguousarray(A @ np.linalg.inv(A[rows]))
        C2, rows2 = C.copy(), rows.copy()
        assert kernels.swaps(C2, rows2, 1.0, 100) == small._swap_loop(C, rows, 1.0, 100)
        np.testing.assert_array_equal(rows2, rows)


def _python_stack(monkeypatch, *args):
    with monkeypatch.context() as patch:
        patch.setattr(small, "_kernels", None)
        return small.stack_maxvol(*args)


def _agree(got, expected, dtype):
    """The compiled and the Python stack: the same rows and swaps, C to roundoff."""
    rows, C, bad, log_det, n_iter, peak = got
    assert bad is None and expected[2] is None
    np.testing.assert_array_equal(rows, expected[0])
    np.testing.assert_array_equal(n_iter, expected[4])
    tol = 1e-10 if np.dtype(dtype) == np.float64 else 2e-4
    np.testing.assert_allclose(C, expected[1], rtol=tol, atol=tol)
    np.testing.assert_allclose(log_det, expected[3], rtol=tol)
    np.testing.assert_allclose(peak, expected[5], rtol=tol)
    for i in (0, 1, 3, 4, 5):
        assert got[i].dtype == expected[i].dtype


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("b", "n", "r"), [(40, 128, 32), (7, 20, 5), (3, 6, 6)])
@pytest.mark.parametrize(("refine", "max_iter"), [(True, 3200), (True, 1), (False, 0)])
def test_stack_agrees_with_the_python_path(
    kernels, monkeypatch, dtype, b, n, r, refine, max_iter
):
    # The compiled greedy is Gram-Schmidt, the Python one geqp3: the same
    # picks (the greedy order is the definition), C and volumes to roundoff.
    A = gaussian(b * n, r, b + n, dtype=np.dtype(dtype)).reshape(b, n, r)
    floor = max(n, r) * float(np.finfo(dtype).eps)
    before = A.copy()
    got = small.stack_maxvol(A, floor, 1.05, max_iter, refine)
    np.testing.assert_array_equal(A, before)  # read, never written
    _agree(got, _python_stack(monkeypatch, A, floor, 1.05, max_iter, refine), dtype)
    if refine and max_iter > 10:
        assert (got[5] <= 1.05).all()


@pytest.mark.parametrize(("cond", "dtype"), [(1e5, "float32"), (1e11, "float64")])
def test_stack_keeps_ill_conditioned_problems_full_rank(
    kernels, monkeypatch, cond, dtype
):
    # Downdated scores lose their digits as the residuals shrink; the greedy
    # recomputes them (as LAPACK's geqp3 does) instead of calling the
    # problem rank-deficient or picking a row by noise.
    rng = np.random.default_rng(1)
    U = np.linalg.qr(rng.standard_normal((12, 60, 6)))[0]
    A = (U * np.geomspace(1, 1 / cond, 6)).astype(dtype)
    floor = 60 * float(np.finfo(dtype).eps)
    got = small.stack_maxvol(A, floor, 1.05, 600, True)
    expected = _python_stack(monkeypatch, A, floor, 1.05, 600, True)
    assert got[2] is None and expected[2] is None
    np.testing.assert_array_equal(got[0], expected[0])
    assert (got[5] <= 1.05).all()


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
        assert got[1] == expected[1] and got[3] == expected[3]  # rcond, log|det|
        np.testing.assert_array_equal(got[2], expected[2])  # C


def test_lu_start_of_a_singular_matrix_reports_rcond_zero(kernels):
    A = gaussian(40, 5, 3)
    A[:, 4] = A[:, 0] + A[:, 1]
    rows, rcond, _, _ = small.lu_coefficients(A)
    assert rcond < 40 * np.finfo(np.float64).eps
    assert np.unique(rows).size == 5


def test_stack_over_threads_equals_one_thread(kernels, monkeypatch):
    # Each problem's loop is deterministic and touches only its own slices;
    # the first rank-deficient problem is found in whichever chunk holds it.
    A = gaussian(200 * 24, 4, 8).reshape(200, 24, 4)
    floor = 24 * float(np.finfo(np.float64).eps)
    results = {}
    for threads in (1, 3):
        monkeypatch.setattr(small, "_stack_threads", lambda b, t=threads: t)
        results[threads] = small.stack_maxvol(A, floor, 1.05, 400, True)
    for x, y in zip(results[1], results[3], strict=True):
        if x is None:
            assert y is None
        else:
            np.testing.assert_array_equal(x, y)
    A[150, :, 3] = A[150, :, 1]  # in the third chunk of three
    A[180, :, 2] = 0.0
    assert small.stack_maxvol(A, floor, 1.05, 400, True)[2] == 150
    A[20, :, 0] = A[20, :, 1]  # now also in the first
    assert small.stack_maxvol(A, floor, 1.05, 400, True)[2] == 20


def test_stack_threads_follow_cores_problems_and_omp_num_threads(monkeypatch):
    monkeypatch.setattr(small.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert small._stack_threads(63) == 1
    assert small._stack_threads(200) == 3
    assert small._stack_threads(10_000) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert small._stack_threads(10_000) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert small._stack_threads(10_000) == 4


def test_a_compiled_rank_error_stands_only_if_geqp3_agrees(kernels, monkeypatch):
    # At the floor's edge the two greedies may disagree; then the Python
    # path (geqp3) decides, here that the stack is full rank.
    A = gaussian(3 * 20, 4, 6).reshape(3, 20, 4)
    floor = 20 * float(np.finfo(np.float64).eps)
    compiled = small._stack_compiled

    def says_rank_deficient(*args):
        return (*compiled(*args)[:2], 1, None, None, None)

    monkeypatch.setattr(small, "_stack_compiled", says_rank_deficient)
    got = small.stack_maxvol(A, floor, 1.05, 400, True)
    assert got[2] is None
    expected = _python_stack(monkeypatch, A, floor, 1.05, 400, True)
    np.testing.assert_array_equal(got[1], expected[1])  # the Python path's result
