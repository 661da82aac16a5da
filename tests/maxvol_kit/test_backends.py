"""Every function on every backend: same answers, results where the input lives."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxvol_kit import fast_maxvol, maxvol, maxvol_batched, rect_maxvol, skeleton
from tests.conftest import to_numpy
from tests.maxvol_kit.helpers import gaussian, greedy_loop, tall_matrices

FUNCTIONS = {
    "fast_maxvol": fast_maxvol,
    "maxvol": maxvol,
    "rect_maxvol": lambda A: rect_maxvol(A, n_rows=min(A.shape[0], 2 * A.shape[1])),
}


def _module(x):
    return type(x).__module__.split(".")[0]


@pytest.mark.parametrize("name", list(FUNCTIONS))
@settings(max_examples=15)
@given(A=tall_matrices(max_n=60, max_r=6))
def test_same_rows_as_numpy_in_float64(backend, name, A):
    _, to = backend
    run = FUNCTIONS[name]
    ref = run(A)
    res = run(to(A))
    np.testing.assert_array_equal(to_numpy(res.indices), ref.indices)
    assert res.converged == ref.converged
    assert res.log_volume == pytest.approx(ref.log_volume, abs=1e-8)
    np.testing.assert_allclose(
        to_numpy(res.coefficients), ref.coefficients, atol=1e-8 * np.abs(A).max()
    )


@pytest.mark.parametrize("name", [*FUNCTIONS, "skeleton", "maxvol_batched"])
def test_results_live_on_the_input_backend(backend, name):
    _, to = backend
    A = to(gaussian(200, 6, 0))
    if name == "skeleton":
        res = skeleton(A, 4)
        outputs = [res.rows, res.columns, res.left, res.right]
    elif name == "maxvol_batched":
        res = maxvol_batched(to(gaussian(200, 6, 0).reshape(4, 50, 6)))
        outputs = [res.indices, res.coefficients, res.converged, res.log_volume]
    else:
        res = FUNCTIONS[name](A)
        outputs = [res.indices, res.coefficients]
    for out in outputs:
        assert _module(out) == _module(A)
        if hasattr(A, "device"):
            assert out.device == A.device
    index = outputs[0]
    assert "int64" in str(index.dtype)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_float32_contract(backend, name):
    _, to = backend
    A = gaussian(400, 10, 3, dtype=np.float32)
    res = FUNCTIONS[name](to(A))
    idx = to_numpy(res.indices)
    C = to_numpy(res.coefficients)
    assert C.dtype == np.float32
    assert np.unique(idx).size == idx.size
    np.testing.assert_allclose(C @ A[idx], A, atol=2e-3 * np.abs(A).max())
    assert res.converged
    if name != "rect_maxvol":
        assert np.abs(C).max() <= 1.05


@settings(max_examples=15)
@given(A=tall_matrices(max_n=60, max_r=8))
def test_fast_maxvol_is_the_greedy_on_every_backend(backend, A):
    _, to = backend
    res = fast_maxvol(to(A), refine=False)
    np.testing.assert_array_equal(to_numpy(res.indices), greedy_loop(A, A.shape[1]))


@settings(max_examples=15)
@given(A=tall_matrices(max_n=60, max_r=6), tol=st.sampled_from([1.0, 1.05]))
def test_square_contract_on_every_backend(backend, A, tol):
    _, to = backend
    for run in (maxvol, fast_maxvol):
        res = run(to(A), tol=tol)
        idx, C = to_numpy(res.indices), to_numpy(res.coefficients)
        n, r = A.shape
        assert np.unique(idx).size == r
        np.testing.assert_array_equal(C[idx], np.eye(r))
        assert res.converged and np.abs(C).max() <= tol
        assert np.linalg.norm(C, 2) <= np.sqrt(1 + tol**2 * r * (n - r)) * (1 + 1e-12)


def test_bad_input_on_every_backend(backend):
    _, to = backend
    A = gaussian(30, 4, 0)
    A[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        fast_maxvol(to(A))
    A = gaussian(30, 4, 0)
    A[:, 3] = A[:, 1]
    with pytest.raises(ValueError, match="numerical rank 3 < 4"):
        maxvol(to(A))
    with pytest.raises(ValueError, match="numerical rank < 4"):
        maxvol_batched(to(np.stack([gaussian(30, 4, 1), A])))


def test_torch_input_with_gradients_is_detached():
    torch = pytest.importorskip("torch")
    A = torch.randn(100, 5, dtype=torch.float64, requires_grad=True)
    res = fast_maxvol(A)
    assert not res.coefficients.requires_grad
    assert res.indices.dtype == torch.int64


# maxvol_batched ----------------------------------------------------------------


@st.composite
def stacks(draw):
    r = draw(st.integers(1, 6))
    n = draw(st.integers(r, 40))
    b = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    A = np.random.default_rng(seed).standard_normal((b, n, r))
    if draw(st.booleans()):
        A *= np.exp(np.random.default_rng(seed + 1).uniform(-3, 3, (b, n, 1)))
    return A


@settings(max_examples=20)
@given(A=stacks(), refine=st.booleans(), tol=st.sampled_from([1.0, 1.05]))
def test_batched_equals_one_call_per_problem(backend, A, refine, tol):
    _, to = backend
    res = maxvol_batched(to(A), refine=refine, tol=tol)
    idx, C = to_numpy(res.indices), to_numpy(res.coefficients)
    for k in range(A.shape[0]):
        one = fast_maxvol(A[k], refine=refine, tol=tol)
        np.testing.assert_array_equal(idx[k], one.indices)
        np.testing.assert_allclose(C[k], one.coefficients, atol=1e-8 * np.abs(A).max())
        assert bool(to_numpy(res.converged)[k]) == one.converged
        assert int(to_numpy(res.n_iter)[k]) == one.n_iter
        assert float(to_numpy(res.log_volume)[k]) == pytest.approx(
            one.log_volume, abs=1e-8
        )


@pytest.mark.parametrize("stacked", [False, True], ids=["small-path", "stacked"])
def test_batched_every_problem_dominant_at_scale(backend, stacked, monkeypatch):
    # Problems stop swapping at different rounds, so the working set shrinks
    # several times; each problem must still end as its own fast_maxvol call.
    # "stacked": the stacked steps of every backend (on the CPU a stack of
    # small problems goes through the small path problem by problem).
    _, to = backend
    A = np.random.default_rng(0).standard_normal((64, 128, 32))
    with monkeypatch.context() as patch:
        if stacked:
            patch.setattr("maxvol_kit._small.QR_ROWS", 0)
        res = maxvol_batched(to(A))
    idx, C = to_numpy(res.indices), to_numpy(res.coefficients)
    n_iter = to_numpy(res.n_iter)
    assert to_numpy(res.converged).all()
    assert np.abs(C).max() <= 1.05
    assert len(set(n_iter.tolist())) > 2
    for k in range(64):
        one = fast_maxvol(A[k])
        np.testing.assert_array_equal(idx[k], one.indices)
        assert n_iter[k] == one.n_iter
        np.testing.assert_allclose(C[k], A[k] @ np.linalg.inv(A[k][idx[k]]), atol=1e-9)
        assert to_numpy(res.log_volume)[k] == pytest.approx(
            np.linalg.slogdet(A[k][idx[k]])[1], abs=1e-9
        )


@pytest.mark.parametrize(
    ("A", "error", "match"),
    [
        (np.ones((5, 3)), ValueError, "must be 3-D.*fast_maxvol"),
        (np.ones((2, 3, 5)), ValueError, "fewer rows than columns"),
        (np.ones((0, 5, 3)), ValueError, "is empty"),
        (np.ones((2, 5, 3), dtype=np.int32), TypeError, "int32"),
    ],
)
def test_batched_bad_input(A, error, match):
    with pytest.raises(error, match=match):
        maxvol_batched(A)


@pytest.mark.parametrize(
    ("shape", "match"),
    [((0, 5, 3), "is empty"), ((2, 3, 5), "fewer rows than columns"), ((5, 3), "3-D")],
)
def test_batched_bad_torch_stacks_get_the_same_errors(shape, match):
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=match):
        maxvol_batched(torch.ones(shape, dtype=torch.float64))


@pytest.mark.parametrize(("bad", "named"), [((2,), 2), ((1, 2), 1), ((0, 2), 0)])
def test_batched_names_the_first_rank_deficient_problem(bad, named):
    A = np.random.default_rng(0).standard_normal((3, 20, 4))
    for k in bad:
        A[k, :, 3] = A[k, :, 0]
    with pytest.raises(ValueError, match=rf"A\[{named}\] .* numerical rank < 4"):
        maxvol_batched(A)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(40, 96, 16), (7, 3, 1), (5, 2, 2)])
def test_batched_small_stack_is_fast_maxvol_exactly(dtype, shape):
    # The small path's stacked bookkeeping (one rank check, unit rows and
    # volumes for the stack, swaps only where needed) makes the same LAPACK
    # calls as one fast_maxvol per problem: the same bits. (3, 1) float32 is
    # a shape whose geqp3 wrapper copies instead of working in place.
    A = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    res = maxvol_batched(A)
    assert res.coefficients.dtype == dtype
    for k in range(len(A)):
        one = fast_maxvol(A[k])
        np.testing.assert_array_equal(res.indices[k], one.indices)
        np.testing.assert_array_equal(res.coefficients[k], one.coefficients)
        assert res.n_iter[k] == one.n_iter and res.converged[k] == one.converged
        assert res.log_volume[k] == pytest.approx(one.log_volume, rel=1e-6)
