"""The gradient-aware rank: prefix residuals, the rank rule, subset weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from graft.selection._dynamic_rank import (  # noqa: E402
    choose_rank,
    prefix_residuals,
    subset_weights,
)


def test_prefix_residuals_against_least_squares():
    g = torch.Generator().manual_seed(0)
    G = torch.randn(12, 9, generator=g, dtype=torch.float64)
    order = [3, 7, 0, 11, 5, 2, 9, 1, 4]
    e = prefix_residuals(G, order)
    mean = G.mean(0)
    for k in range(1, len(order) + 1):
        S = G[order[:k]]
        w = torch.linalg.lstsq(S.T, mean[:, None]).solution
        expected = torch.linalg.vector_norm(S.T @ w[:, 0] - mean) / mean.norm()
        assert float(e[k - 1]) == pytest.approx(float(expected), abs=1e-7)
    assert np.all(np.diff(e.numpy()) <= 1e-12)
    assert float(e[-1]) == pytest.approx(0.0, abs=1e-7)  # 9 picks span R^9


def test_prefix_residuals_skip_dependent_picks():
    G = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    e = prefix_residuals(G, [0, 1, 2])
    assert float(e[0]) == pytest.approx(float(e[1]))
    assert float(e[2]) == pytest.approx(0.0, abs=1e-12)


def test_choose_rank_bounds():
    e = torch.tensor([0.9, 0.5, 0.3, 0.1, 0.05])
    assert choose_rank(e, 0.3, 1, 5) == 3
    assert choose_rank(e, 0.3, 4, 5) == 4  # the lower bound wins
    assert choose_rank(e, 0.01, 1, 5) == 5  # never below eps: the budget
    assert choose_rank(e, 0.3, 1, 2) == 2


def test_subset_weights_are_nonnegative_with_mean_one():
    g = torch.Generator().manual_seed(3)
    G = torch.randn(20, 6, generator=g, dtype=torch.float64)
    w = subset_weights(G, [1, 4, 7, 9, 12, 15])
    assert torch.all(w >= 0) and float(w.mean()) == pytest.approx(1.0)


def test_subset_weights_solve_the_mean_gradient_when_it_is_a_positive_combination():
    """Rows that span the mean with positive coefficients: the exact solution."""
    rng = np.random.default_rng(4)
    B = rng.standard_normal((6, 9))  # the subset's gradients, independent rows
    C = rng.uniform(0.1, 1.0, size=(14, 6))  # the others: positive mixes of them
    G = torch.as_tensor(np.vstack([B, C @ B]))
    coefficients = (1.0 + C.sum(axis=0)) / len(G)  # mean(G) = coefficients @ B
    w = subset_weights(G, range(6)).numpy()
    np.testing.assert_allclose(w, coefficients * 6 / coefficients.sum(), rtol=1e-10)
    # The unscaled weights reproduce the mean gradient exactly.
    np.testing.assert_allclose(
        (w * coefficients.sum() / 6) @ B, G.mean(dim=0).numpy(), atol=1e-12
    )
