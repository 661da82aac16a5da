"""Bad input: clear errors naming the parameter, the value and the fix."""

import tracemalloc

import numpy as np
import pytest

from maxvol_kit import fast_maxvol, maxvol, rect_maxvol, skeleton
from tests.maxvol_kit.helpers import gaussian

ALL = [
    pytest.param(maxvol, id="maxvol"),
    pytest.param(fast_maxvol, id="fast_maxvol"),
    pytest.param(rect_maxvol, id="rect_maxvol"),
    pytest.param(lambda M, **kw: skeleton(M, 2, **kw), id="skeleton"),
]


@pytest.mark.parametrize("run", ALL)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(run, bad):
    A = gaussian(20, 3, 0)
    A[5, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        run(A)


@pytest.mark.parametrize("run", ALL)
@pytest.mark.parametrize(
    ("A", "match"),
    [
        (np.ones(5), "must be 2-D, got 1-D"),
        (np.ones((4, 3, 2)), "must be 2-D, got 3-D"),
        (np.ones((0, 3)), "is empty"),
        (np.ones((3, 0)), "is empty"),
    ],
)
def test_wrong_shapes(run, A, match):
    with pytest.raises(ValueError, match=match):
        run(A)


@pytest.mark.parametrize("run", [maxvol, fast_maxvol, rect_maxvol])
def test_wide_matrix_is_refused_with_the_transpose_hint(run):
    with pytest.raises(ValueError, match=r"fewer rows than columns.*A\.T"):
        run(gaussian(3, 5, 0))


@pytest.mark.parametrize("run", ALL)
@pytest.mark.parametrize(
    ("dtype", "match"),
    [
        (np.int64, "dtype int64.*astype"),
        (np.bool_, "dtype bool"),
        (np.complex128, "complex input is not supported"),
        (np.float16, "dtype float16.*astype"),
    ],
)
def test_unsupported_dtypes(run, dtype, match):
    A = (gaussian(20, 3, 0) > 0).astype(dtype)
    with pytest.raises(TypeError, match=match):
        run(A)


@pytest.mark.parametrize("run", [maxvol, fast_maxvol, rect_maxvol])
def test_rank_deficient_input_names_the_rank_found(run):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((50, 3)) @ rng.standard_normal((3, 5))
    with pytest.raises(ValueError, match=r"shape \(50, 5\)\) has numerical rank 3 < 5"):
        run(A)


@pytest.mark.parametrize("run", [maxvol, fast_maxvol, rect_maxvol])
def test_zero_and_duplicate_columns_are_rank_deficient(run):
    A = gaussian(30, 4, 2)
    A[:, 3] = A[:, 0]
    with pytest.raises(ValueError, match="numerical rank 3 < 4"):
        run(A)
    with pytest.raises(ValueError, match="numerical rank 0 < 4"):
        run(np.zeros((30, 4)))


def test_lists_are_accepted():
    A = gaussian(10, 2, 0)
    np.testing.assert_array_equal(maxvol(A.tolist()).indices, maxvol(A).indices)


@pytest.mark.parametrize("run", [maxvol, fast_maxvol, skeleton])
@pytest.mark.parametrize(
    ("tol", "error"),
    [(0.99, ValueError), (np.nan, ValueError), ("1.1", TypeError), (True, TypeError)],
)
def test_bad_tol(run, tol, error):
    A = gaussian(20, 3, 0)
    args = (A, 2) if run is skeleton else (A,)
    with pytest.raises(error, match="tol"):
        run(*args, tol=tol)


def test_bad_rank_and_counts():
    A = gaussian(20, 3, 0)
    with pytest.raises(ValueError, match=r"rank \(4\) must be in \[1, 3\].*rank=None"):
        fast_maxvol(A, rank=4)
    with pytest.raises(TypeError, match="rank must be an integer"):
        fast_maxvol(A, rank=2.0)
    with pytest.raises(ValueError, match=r"n_rows \(2\) must be in \[3, 20\]"):
        rect_maxvol(A, n_rows=2)
    with pytest.raises(ValueError, match="either n_rows or min_rows"):
        rect_maxvol(A, n_rows=5, max_rows=6)
    with pytest.raises(ValueError, match=r"max_rows \(4\) must be in \[5, 20\]"):
        rect_maxvol(A, min_rows=5, max_rows=4)
    with pytest.raises(ValueError, match=r"rank \(4\) must be in \[1, 3\]"):
        skeleton(A.T, 4)
    with pytest.raises(ValueError, match=r"max_iter \(-1\)"):
        maxvol(A, max_iter=-1)
    with pytest.raises(ValueError, match=r"init \('qr'\) must be 'lu' or 'greedy'"):
        maxvol(A, init="qr")


@pytest.mark.parametrize(
    ("start", "match"),
    [
        ([0, 1], "must hold 3 row indices"),
        ([0, 1, 1], "repeats a row index"),
        ([0, 1, 20], r"outside \[0, 20\)"),
        ([0.0, 1.0, 2.0], "must hold integers"),
    ],
)
def test_bad_start(start, match):
    with pytest.raises((ValueError, TypeError), match=match):
        maxvol(gaussian(20, 3, 0), start=start)


def test_singular_start():
    A = gaussian(20, 3, 0)
    A[1] = 2 * A[0]
    with pytest.raises(ValueError, match=r"numerically singular submatrix A\[start\]"):
        maxvol(A, start=[0, 1, 2])


def test_non_numeric_input_is_a_type_error():
    with pytest.raises(TypeError, match=r"dtype.*only float32 and float64"):
        maxvol([["a", "b"], ["c", "d"], ["e", "f"]])


def test_input_is_never_modified():
    A = gaussian(300, 6, 0)
    before = A.copy()
    for run in (maxvol, fast_maxvol, rect_maxvol):
        run(A)
    rect_maxvol(A, n_rows=12, refine=True)
    skeleton(A, 4)
    np.testing.assert_array_equal(A, before)


def test_memory_is_linear_in_n():
    """No n x n allocation: peak traced memory is a small multiple of n r."""
    n, r = 20000, 8
    A = gaussian(n, r, 0)
    budget = 8 * n * r * A.itemsize  # 10 MB; an n x n float64 would be 3.2 GB
    for run in (maxvol, fast_maxvol, lambda A: rect_maxvol(A, n_rows=2 * r)):
        tracemalloc.start()
        try:
            assert run(A).coefficients.shape[0] == n
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < budget
