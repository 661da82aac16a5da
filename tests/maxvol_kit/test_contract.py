"""The contract of every MaxVol function, over hostile but realistic input.

For any shape, dtype, structure and scale the result is either a
``ValueError`` / ``TypeError`` that names the parameter, or distinct in-range
rows whose certificate holds: ``max|C| <= tol (1 + 1e-6)`` for square MaxVol,
row norms ``<= tol (1 + 1e-6)`` for rectangular MaxVol when it says
``converged``, with ``C`` recomputed in 113-bit arithmetic (mpmath) from the
input, never from the function's own coefficients. Both the small-problem
path and the blocked one (forced by ``SMALL = 0``) are exercised.
"""

import contextlib
import warnings
from unittest import mock

import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import maxvol_kit._small as small
from maxvol_kit import (
    ConvergenceWarning,
    fast_maxvol,
    maxvol,
    maxvol_batched,
    rect_maxvol,
    skeleton,
    tournament_maxvol,
)

SLACK = 1e-6
STRUCTURES = ("gaussian", "low_rank", "duplicates", "near_singular", "rows", "columns")
DTYPES = ("float64", "float32", "float16", "int64", "bool")
CONTRACT = settings(
    max_examples=int(__import__("os").environ.get("CONTRACT_EXAMPLES", 300)),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def hostile(draw, max_n=24, max_r=5):
    """``(A, description)``: a matrix of random shape, dtype, structure, scale."""
    r = draw(st.integers(1, max_r))
    n = draw(st.integers(r, max_n))
    structure = draw(st.sampled_from(STRUCTURES))
    # Mostly floats, in and beyond each dtype's own range.
    dtype = draw(st.sampled_from(DTYPES[:1] * 4 + DTYPES[1:2] * 3 + DTYPES))
    span = {"float64": 300, "float32": 40, "float16": 6}.get(dtype, 12)
    exponent = draw(st.integers(-span, span))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = rng.standard_normal((n, r))
    if structure == "low_rank" and r > 1:
        A = rng.standard_normal((n, r - 1)) @ rng.standard_normal((r - 1, r))
    elif structure == "duplicates":
        A[n // 2 :] = A[: n - n // 2]
    elif structure == "near_singular" and r > 1:
        A[:, -1] = A[:, 0] + 10.0 ** draw(st.integers(-12, -2)) * rng.standard_normal(n)
    elif structure == "rows":
        A *= 10.0 ** rng.uniform(-8, 8, size=(n, 1))
    elif structure == "columns":
        A *= 10.0 ** rng.uniform(-8, 8, size=(1, r))
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        A = A * 10.0**exponent
        if dtype == "int64":
            A = np.clip(np.nan_to_num(A), -1e15, 1e15).astype(np.int64)
        else:
            A = A.astype(dtype)
    return A, f"{n}x{r} {dtype} {structure} 1e{exponent}"


@contextlib.contextmanager
def path(blocked):
    """The blocked engines on small input when ``blocked``, else as chosen by size."""
    with mock.patch.object(small, "SMALL", 0) if blocked else contextlib.nullcontext():
        yield


def outcome(func, *args, **kwargs):
    """``func``'s result, or None after a clear ValueError / TypeError."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow inside
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            result = func(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            message = str(exc)
            assert any(
                f"{name}{end}" in message for name in ("A", "M") for end in " [.("
            ), message
            event(f"{func.__name__}: {type(exc).__name__}")
            return None
    event(f"{func.__name__}: result")
    return result


def exact(A):
    """``A`` as an mpmath matrix in 113-bit arithmetic (every float is exact)."""
    mpmath.mp.prec = 113
    return mpmath.matrix([[mpmath.mpf(float(x)) for x in row] for row in A])


def check_rows(indices, n, k=None):
    idx = np.asarray(indices)
    assert idx.ndim == 1 and (k is None or idx.size == k)
    assert idx.dtype.kind == "i" and len(set(idx.tolist())) == idx.size
    assert idx.min() >= 0 and idx.max() < n
    return idx


def square_peak(A, idx):
    """``max|C|`` of ``C = A A[idx]^-1``, exactly enough."""
    X = exact(A)
    C = X * mpmath.inverse(exact(A[idx]))
    return max(abs(c) for c in C)


def rect_peak(A, idx):
    """The largest ``||C_i||_2`` over unselected rows, ``C = A pinv(A[idx])``."""
    X, S = exact(A), exact(A[idx])
    Ginv = mpmath.inverse(S.T * S)
    others = sorted(set(range(A.shape[0])) - set(idx.tolist()))
    peaks = [(X[i, :] * Ginv * X[i, :].T)[0] for i in others]
    return float(mpmath.sqrt(max(peaks))) if peaks else 0.0


@CONTRACT
@given(case=hostile(), blocked=st.booleans(), tol=st.sampled_from([1.0, 1.05, 2.0]))
def test_square_maxvol_contract(case, blocked, tol):
    A, what = case
    for func in (fast_maxvol, maxvol):
        with path(blocked):
            res = outcome(func, A, tol=tol)
        if res is None:
            continue
        idx = check_rows(res.indices, A.shape[0], A.shape[1])
        peak = float(square_peak(A, idx))
        assert res.converged, (func.__name__, what, peak)
        assert peak <= tol * (1 + SLACK), (func.__name__, what, peak)
        assert np.isfinite(res.log_volume), what


@CONTRACT
@given(case=hostile(), blocked=st.booleans(), data=st.data())
def test_rect_maxvol_contract(case, blocked, data):
    A, what = case
    n, r = A.shape
    n_rows = data.draw(st.one_of(st.none(), st.integers(r, n)))
    with path(blocked):
        res = outcome(rect_maxvol, A, n_rows=n_rows)
    if res is None:
        return
    idx = check_rows(res.indices, n, n_rows)
    assert idx.size >= r
    if res.converged:
        assert rect_peak(A, idx) <= 1.0 * (1 + SLACK), what
    else:
        assert n_rows is not None, what  # only a fixed row count stops short
    assert np.isfinite(res.log_volume), what


@CONTRACT
@given(case=hostile(max_n=16, max_r=4), other=st.integers(-300, 300))
def test_batched_contract(case, other):
    """Two problems of very different scale in one stack, each certified."""
    A, what = case
    if A.dtype.kind != "f":
        stack = np.stack([A, A])
    else:
        with np.errstate(over="ignore", under="ignore"):
            stack = np.stack([A, (A.astype(np.float64) * 10.0**other).astype(A.dtype)])
    res = outcome(maxvol_batched, stack)
    if res is None:
        return
    for k in range(2):
        idx = check_rows(res.indices[k], A.shape[0], A.shape[1])
        assert float(square_peak(stack[k], idx)) <= 1.05 * (1 + SLACK), what
    assert bool(np.all(res.converged)), what
    assert bool(np.all(np.isfinite(res.log_volume))), what


@CONTRACT
@given(case=hostile(max_n=16, max_r=4), data=st.data())
def test_skeleton_contract(case, data):
    """Rows and columns distinct, the core dominant in both directions."""
    A, what = case
    rank = data.draw(st.integers(1, A.shape[1]))
    res = outcome(skeleton, A, rank)
    if res is None:
        return
    rows = check_rows(res.rows, A.shape[0], rank)
    cols = check_rows(res.columns, A.shape[1], rank)
    if res.converged:
        assert float(square_peak(A[:, cols], rows)) <= 1.05 * (1 + SLACK), what
        assert float(square_peak(A[rows].T, cols)) <= 1.05 * (1 + SLACK), what
    assert np.all(np.isfinite(np.asarray(res.left))), what
    assert np.array_equal(np.asarray(res.right), A[rows]), what


@CONTRACT
@given(case=hostile(max_n=30, max_r=4), chunks=st.integers(4, 12))
def test_tournament_contract(case, chunks):
    A, what = case
    res = outcome(tournament_maxvol, A, chunks=chunks)
    if res is None:
        return
    idx = check_rows(res.indices, A.shape[0], A.shape[1])
    assert float(square_peak(A, idx)) <= 1.05 * (1 + SLACK) or not res.converged, what
    assert np.isfinite(res.log_volume), what


@pytest.mark.parametrize("scale", [1e-300, 1e-155, 1e-20, 1.0, 1e20, 1e160, 1e300])
def test_log_volume_is_reported_in_the_callers_units(scale):
    """Scaling A by s adds r log s (k log s for k rows) to the log-volume."""
    A = np.random.default_rng(0).standard_normal((60, 5))
    for func, k in ((fast_maxvol, 5), (maxvol, 5), (rect_maxvol, 5)):
        base, scaled = func(A), func(A * scale)
        assert np.array_equal(np.asarray(base.indices), np.asarray(scaled.indices))
        assert scaled.log_volume == pytest.approx(
            base.log_volume + k * np.log(scale), rel=1e-12, abs=1e-9
        )
        assert np.allclose(scaled.coefficients, base.coefficients, atol=1e-12)
