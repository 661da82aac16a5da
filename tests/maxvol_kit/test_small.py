"""The small-problem path gives what the blocked path gives, and touches nothing."""

import numpy as np
import pytest
from hypothesis import given

import maxvol_kit._small as small
from maxvol_kit import fast_maxvol, maxvol
from maxvol_kit._backend import get_backend
from tests.maxvol_kit.helpers import gaussian, greedy_loop, tall_matrices


def _both(monkeypatch, call, A):
    """``call(A)`` through the small path, then through the blocked one."""
    out = []
    for threshold in (2**62, -1):
        monkeypatch.setattr(small, "SMALL", threshold)
        out.append(call(A))
    return out


@pytest.mark.parametrize(
    "call",
    [
        lambda A: fast_maxvol(A),
        lambda A: fast_maxvol(A, refine=False),
        lambda A: fast_maxvol(A, rank=max(1, A.shape[1] // 2)),
        lambda A: maxvol(A),
        lambda A: maxvol(A, tol=1.0),
    ],
    ids=["fast", "greedy", "rank", "maxvol", "maxvol-tol1"],
)
@pytest.mark.parametrize(
    ("n", "r", "dtype"), [(128, 32, "float64"), (300, 12, "float32")]
)
def test_small_and_blocked_paths_agree(monkeypatch, call, n, r, dtype):
    for seed in range(5):
        A = gaussian(n, r, seed, dtype=np.dtype(dtype))
        fast, blocked = _both(monkeypatch, call, A)
        np.testing.assert_array_equal(fast.indices, blocked.indices)
        assert fast.n_iter == blocked.n_iter and fast.converged == blocked.converged
        rtol = 1e-9 if dtype == "float64" else 1e-4
        np.testing.assert_allclose(fast.log_volume, blocked.log_volume, rtol=rtol)
        np.testing.assert_allclose(
            fast.coefficients, blocked.coefficients, rtol=rtol, atol=rtol
        )


@given(A=tall_matrices(max_n=60, max_r=8))
def test_small_greedy_is_the_textbook_greedy(A):
    assert small.is_small(A, get_backend(A))
    res = fast_maxvol(A, refine=False)
    np.testing.assert_array_equal(res.indices, greedy_loop(A, A.shape[1]))


@pytest.mark.parametrize("order", ["C", "F"])
def test_the_input_is_not_overwritten(order):
    A = np.array(gaussian(64, 8, 3), order=order)
    before = A.copy()
    fast_maxvol(A)
    fast_maxvol(A, rank=4)
    maxvol(A)
    np.testing.assert_array_equal(A, before)


def test_small_path_reports_the_numerical_rank():
    A = gaussian(50, 6, 1)
    A[:, 5] = A[:, 0] + A[:, 1]
    with pytest.raises(ValueError, match="numerical rank 5"):
        fast_maxvol(A)
    assert len(fast_maxvol(A, rank=5).indices) == 5


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_small_torch_cpu_input_goes_through_numpy_and_comes_back_as_tensors(dtype):
    torch = pytest.importorskip("torch")
    A = gaussian(96, 12, 4, dtype=np.dtype(dtype))
    T = torch.from_numpy(A.copy()).requires_grad_(True)
    for call in (fast_maxvol, maxvol, lambda X: fast_maxvol(X, rank=6)):
        got, expected = call(T), call(A)
        assert (
            isinstance(got.indices, torch.Tensor) and got.indices.dtype == torch.int64
        )
        assert got.coefficients.dtype == T.dtype
        np.testing.assert_array_equal(got.indices.numpy(), expected.indices)
        np.testing.assert_array_equal(got.coefficients.numpy(), expected.coefficients)
        assert got.log_volume == expected.log_volume
    np.testing.assert_array_equal(T.detach().numpy(), A)


def test_tall_small_matrices_take_the_blocked_greedy_with_the_same_result(monkeypatch):
    # n > QR_ROWS but n r <= SMALL: the blocked greedy, then the small swaps.
    A = gaussian(small.QR_ROWS + 500, 8, 4)
    assert small.is_small(A, get_backend(A))
    assert not small.is_small(A, get_backend(A), max_rows=small.QR_ROWS)
    np.testing.assert_array_equal(
        fast_maxvol(A, refine=False).indices, greedy_loop(A, A.shape[1])
    )
    mixed = fast_maxvol(A)
    monkeypatch.setattr(small, "SMALL", -1)
    blocked = fast_maxvol(A)
    np.testing.assert_array_equal(mixed.indices, blocked.indices)
    assert mixed.n_iter == blocked.n_iter and mixed.converged
    np.testing.assert_allclose(mixed.log_volume, blocked.log_volume, rtol=1e-12)


def test_a_dominant_start_needs_no_swaps_and_a_swap_start_is_certified():
    from maxvol_kit._swaps import swap_to_dominance

    A = np.linalg.qr(gaussian(3000, 6, 2))[0]
    start = greedy_loop(A, 6).astype(np.int64)
    peak = np.abs(A @ np.linalg.inv(A[start])).max()  # the oracle, > 1 here
    assert peak > 1.001
    idx = start.copy()
    C = A @ np.linalg.inv(A[idx])
    n_iter, value = swap_to_dominance(C, idx, peak + 0.01, 100, get_backend(C))
    assert n_iter == 0 and (idx == start).all()
    assert value == pytest.approx(peak, rel=1e-12)
    n_iter, value = swap_to_dominance(C, idx, 1.0 + 1e-12, 100, get_backend(C))
    assert n_iter >= 1 and value <= 1.0 + 1e-9
    np.testing.assert_allclose(np.abs(A @ np.linalg.inv(A[idx])).max(), value)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_swaps_update_c_in_place_and_track_the_volume(order, dtype):
    # A poor start (the rows of smallest norm) needs many swaps; the tracked
    # gain must equal the change of log|det| (slogdet oracle) and C the
    # coefficients of the final rows, in the caller's array whatever its order.
    A = gaussian(200, 10, 4, dtype=np.dtype(dtype))
    idx = np.argsort(np.linalg.norm(A, axis=1))[:10].astype(np.int64)
    start = idx.copy()
    C = np.array(A @ np.linalg.inv(A[idx]), order=order)
    n_iter, largest, gain = small.swaps(C, idx, 1.0 + 1e-6, 1000)
    assert n_iter >= 5 and largest <= 1.0 + 1e-6
    wide = A.astype(np.float64)
    before = np.linalg.slogdet(wide[start])[1]
    after = np.linalg.slogdet(wide[idx])[1]
    tol = 1e-10 if dtype == "float64" else 1e-4
    assert gain == pytest.approx(after - before, rel=tol)
    np.testing.assert_allclose(C, wide @ np.linalg.inv(wide[idx]), atol=tol)
    np.testing.assert_array_equal(C[idx], np.eye(10))


def test_maxvol_log_volume_is_log_det_of_its_rows_after_many_swaps():
    A = gaussian(500, 16, 5)
    res = maxvol(A, tol=1.0)
    assert res.n_iter >= 5
    assert res.log_volume == pytest.approx(
        np.linalg.slogdet(A[res.indices])[1], rel=1e-12
    )


@pytest.mark.parametrize("classical", [0, 1, 3])
@pytest.mark.parametrize("start", ["lu", "greedy"])
def test_classical_then_deferred_swaps_equal_either_engine_alone(
    monkeypatch, classical, start
):
    # Below 2048 rows the deferred engine's swaps are the classical ones, so
    # any hand-over point gives the same rows, swap count and volume.
    import maxvol_kit._maxvol as mv

    A = np.random.default_rng(5).standard_normal((1500, 12))  # 4 and 6 swaps

    def call():
        if start == "lu":
            return maxvol(A, tol=1.0 + 1e-9)
        return fast_maxvol(A, tol=1.0 + 1e-9)

    monkeypatch.setattr(small, "SMALL", -1)  # no small path: certify's routing
    alone = call()
    assert alone.n_iter >= 4
    monkeypatch.setattr(mv, "CLASSICAL_ENTRIES", -1)
    monkeypatch.setattr(mv, "CLASSICAL_SWAPS", classical)
    mixed = call()
    np.testing.assert_array_equal(mixed.indices, alone.indices)
    assert mixed.n_iter == alone.n_iter and mixed.converged
    for res in (alone, mixed):
        assert res.log_volume == pytest.approx(
            np.linalg.slogdet(A[res.indices])[1], rel=1e-12
        )
        np.testing.assert_allclose(
            res.coefficients, A @ np.linalg.inv(A[res.indices]), atol=1e-9
        )
