"""Per-sample features of a model, against autograd and plain loops."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from graft._features import (  # noqa: E402
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
