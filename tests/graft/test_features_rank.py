"""Per-sample features (against autograd) and the dynamic-rank arithmetic."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from graft.selection._dynamic_rank import choose_rank, prefix_residuals, subset_weights  # noqa: E402
from graft.selection._features import (  # noqa: E402
    find_final_linear,
    last_layer_gradients,
    penultimate,
    per_sample_gradients,
)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4)).double()


def _data(n=7):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randint(
        0, 4, (n,), generator=g
    )


def _autograd_per_sample(model, x, y, params):
    rows = []
    for i in range(len(y)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows)


def test_penultimate_hook_captures_the_final_input_and_is_removed():
    model, (x, _) = _mlp(), _data()
    h, logits = penultimate(model, x)
    torch.testing.assert_close(h, model[1](model[0](x)))
    torch.testing.assert_close(logits, model(x))
    assert not model[2]._forward_hooks


def test_last_layer_gradients_match_autograd():
    model, (x, y) = _mlp(), _data()
    h, logits = penultimate(model, x)
    closed = last_layer_gradients(h, logits, y)
    final = model[2]
    expected = _autograd_per_sample(model, x, y, [final.weight, final.bias])
    torch.testing.assert_close(closed, expected)


def test_torch_func_per_sample_gradients_match_a_loop():
    model, (x, y) = _mlp(), _data()
    got = per_sample_gradients(model, x, y)
    expected = _autograd_per_sample(model, x, y, list(model.parameters()))
    torch.testing.assert_close(got, expected)
    assert all(p.grad is None for p in model.parameters())


def test_find_final_linear_errors_name_the_option():
    with pytest.raises(ValueError, match=r"no nn\.Linear.*layer='name'.*features="):
        find_final_linear(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match=r"layer \('head'\) is not a module"):
        find_final_linear(_mlp(), layer="head")
    model = _mlp()
    assert find_final_linear(model, layer="0") is model[0]
    assert find_final_linear(model) is model[2]


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
