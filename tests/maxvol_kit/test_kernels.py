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


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("b", "n", "r"), [(40, 128, 32), (7, 20, 5), (3, 6, 6)])
@pytest.mark.parametrize(("refine", "max_iter"), [(True, 3200), (True, 1), (False, 0)])
def test_stack_equals_the_python_path(
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
    for name, x, y in zip(
        ["rows", "C", "log_det", "n_iter", "peak"],
        [rows, C, log_det, n_iter, peak],
        [expected[i] for i in (0, 1, 3, 4, 5)],
        strict=True,
    ):
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
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
        assert got[1] == expected[1] and got[3] == expected[3]  # rcond, log|det|
        np.testing.assert_array_equal(got[2], expected[2])  # C


def test_lu_start_of_a_singular_matrix_reports_rcond_zero(kernels):
    A = gaussian(40, 5, 3)
    A[:, 4] = A[:, 0] + A[:, 1]
    rows, rcond, _, _ = small.lu_coefficients(A)
    assert rcond < 40 * np.finfo(np.float64).eps
    assert np.unique(rows).size == 5


def test_float32_volumes_add_the_swaps_gain_in_float32(kernels, monkeypatch):
    # Many swapped float32 problems: the gain added in float64 and rounded
    # once differs in the last bit from the Python path's float32 addition.
    A = np.random.default_rng(5).standard_normal((2000, 40, 6)).astype(np.float32)
    floor = 40 * float(np.finfo(np.float32).eps)
    got = small.stack_maxvol(A, floor, 1.0, 1000, True)
    expected = _python_stack(monkeypatch, A, floor, 1.0, 1000, True)
    assert (got[4] > 0).sum() > 500  # swapped problems
    np.testing.assert_array_equal(got[3], expected[3])
