"""MaxVol channel pruning: exact folding on low-rank activations, oracles, errors."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from graft import collect_activations, prune_channels  # noqa: E402
from maxvol_kit import fast_maxvol  # noqa: E402

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _seed(seed=0):
    torch.manual_seed(seed)


def _states(*modules):
    return [copy.deepcopy(m.state_dict()) for m in modules]


def _assert_same_states(before, modules):
    for state, module in zip(before, modules, strict=True):
        after = module.state_dict()
        assert state.keys() == after.keys()
        for key in state:
            assert torch.equal(state[key], after[key]), key


def _duplicated_filters(layer, groups):
    """Channel c becomes +-s_c (s_c > 0) times channel c % groups (weights, bias).

    The sign alternates every ``groups`` channels. Before a ReLU the outputs
    have rank <= groups; after it (or any other per-channel op that commutes
    with positive scaling) rank <= 2 * groups: relu(h) and relu(-h) for each
    of the ``groups`` distinct filters.
    """
    with torch.no_grad():
        C = layer.weight.shape[0]
        scale = torch.linspace(0.5, 2.0, C, dtype=layer.weight.dtype)
        scale = scale * (1 - 2 * ((torch.arange(C) // groups) % 2))
        source = torch.arange(C) % groups
        shape = (C,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.copy_(layer.weight[source] * scale.reshape(shape))
        layer.bias.copy_(layer.bias[source] * scale)
    return layer


def _classes(channels, groups):
    """(filter, sign) of each channel made by :func:`_duplicated_filters`."""
    return sorted({(c % groups, (c // groups) % 2) for c in channels.tolist()})


# -- exact reproduction ------------------------------------------------------------


@pytest.mark.parametrize("fold", ["interpolative", "lstsq"])
def test_linear_pair_is_exact_when_activations_have_rank_at_most_keep(fold):
    _seed()
    first, second = nn.Linear(3, 10).double(), nn.Linear(10, 4).double()
    x = torch.randn(200, 3, generator=_gen(), dtype=F64)
    h = first(x).detach()  # rank 4: three inputs and the bias
    assert torch.linalg.matrix_rank(h) == 4
    new_first, new_second = prune_channels(first, second, h, keep=4, fold=fold)
    assert (new_first.out_features, new_second.in_features) == (4, 4)
    assert new_first.weight.shape == (4, 3) and new_second.weight.shape == (4, 4)
    torch.testing.assert_close(
        new_second(new_first(x)), second(first(x)), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("fold", ["interpolative", "lstsq"])
def test_conv_pair_is_exact_when_activations_have_rank_at_most_keep(fold):
    _seed()
    # One input channel, 3x3 kernel: every output position is an affine map of
    # a 9-pixel patch, so the (N*H*W, 12) activation matrix has rank <= 10.
    first = nn.Conv2d(1, 12, 3, padding=1).double()
    second = nn.Conv2d(12, 5, 3, padding=1).double()
    x = torch.randn(6, 1, 9, 9, generator=_gen(), dtype=F64)
    h = first(x).detach()
    new_first, new_second = prune_channels(first, second, h, keep=10, fold=fold)
    assert new_first.weight.shape == (10, 1, 3, 3)
    assert new_second.weight.shape == (5, 10, 3, 3)
    assert (new_first.out_channels, new_second.in_channels) == (10, 10)
    torch.testing.assert_close(
        new_second(new_first(x)), second(first(x)), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("four_d", [True, False])
def test_conv_to_linear_through_flatten_is_exact(four_d):
    _seed()
    conv = nn.Conv2d(1, 12, 3, padding=1).double()
    pool, flat = nn.AdaptiveAvgPool2d(2), nn.Flatten()
    linear = nn.Linear(12 * 4, 3).double()
    x = torch.randn(40, 1, 8, 8, generator=_gen(), dtype=F64)
    pooled = pool(conv(x)).detach()  # averages of affine maps: rank <= 10
    acts = pooled if four_d else flat(pooled)
    new_conv, new_linear = prune_channels(conv, linear, acts, keep=10)
    assert new_linear.in_features == 10 * 4
    torch.testing.assert_close(
        new_linear(flat(pool(new_conv(x)))),
        linear(flat(pool(conv(x)))),
        atol=1e-5,
        rtol=0,
    )


def test_relu_between_linear_layers_exact_with_post_relu_rank_at_most_keep():
    _seed()
    first = _duplicated_filters(nn.Linear(6, 12).double(), groups=3)
    second = nn.Linear(12, 3).double()
    model = nn.Sequential(first, nn.ReLU(), second)
    x = torch.randn(300, 6, generator=_gen(), dtype=F64)
    acts = collect_activations(model, second, x, max_samples=None)
    assert torch.linalg.matrix_rank(acts) == 6
    result = prune_channels(first, second, acts, keep=6)
    new_first, new_second = result
    torch.testing.assert_close(
        new_second(torch.relu(new_first(x))), model(x), atol=1e-5, rtol=0
    )
    # MaxVol keeps one channel of each filter and sign: never two multiples.
    assert _classes(result.channels, 3) == [(g, s) for g in range(3) for s in (0, 1)]

    # Folding on the pre-ReLU outputs (rank 3) is exact for them, not after
    # the ReLU: the activations must be taken where next_layer reads them.
    pre = prune_channels(first, second, first(x).detach(), keep=3)
    wrong = pre.next_layer(torch.relu(pre.layer(x)))
    assert (wrong - model(x)).abs().max() > 1e-2


def test_relu_and_maxpool_between_convs_exact_with_post_relu_rank_at_most_keep():
    _seed()
    first = _duplicated_filters(nn.Conv2d(2, 12, 3, padding=1).double(), groups=3)
    second = nn.Conv2d(12, 4, 3, padding=1).double()
    model = nn.Sequential(first, nn.ReLU(), nn.MaxPool2d(2), second)
    x = torch.randn(5, 2, 8, 8, generator=_gen(), dtype=F64)
    acts = collect_activations(model, "3", x)  # post-ReLU, post-pool
    assert acts.shape == (5, 12, 4, 4)
    pruned = copy.deepcopy(model)
    pruned[0], pruned[3] = prune_channels(first, second, acts, keep=6)
    assert pruned[0].out_channels == 6
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=0)


# -- oracles -----------------------------------------------------------------------


def _spectrum_matrix(n, C, seed=0):
    """(n, C) with a clear decay of singular values (no near-ties)."""
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((n, C)))[0]
    V = np.linalg.qr(rng.standard_normal((C, C)))[0]
    return U @ np.diag(0.7 ** np.arange(C)) @ V.T


def test_channels_and_coefficients_are_fast_maxvol_on_right_singular_vectors():
    C, keep = 9, 4
    A = _spectrum_matrix(500, C)
    first, second = nn.Linear(2, C).double(), nn.Linear(C, 3).double()
    result = prune_channels(first, second, torch.from_numpy(A), keep=keep)
    V_k = np.linalg.svd(A)[2][:keep].T
    mv = fast_maxvol(V_k)
    order = np.argsort(mv.indices)
    np.testing.assert_array_equal(result.channels.numpy(), mv.indices[order])
    T = mv.coefficients.T[order]
    np.testing.assert_allclose(result.coefficients.numpy(), T, atol=1e-10)
    # The weights: the kept rows of layer, W_next @ T.T for next_layer.
    J = result.channels
    torch.testing.assert_close(result.layer.weight, first.weight[J])
    torch.testing.assert_close(result.layer.bias, first.bias[J])
    expected = second.weight.detach() @ torch.from_numpy(T).T
    torch.testing.assert_close(result.next_layer.weight, expected)
    torch.testing.assert_close(result.next_layer.bias, second.bias)


def test_conv_fold_matches_a_plain_loop_and_lstsq_matches_numpy():
    _seed()
    first = nn.Conv2d(2, 6, 3).double()
    second = nn.Conv2d(6, 3, 2).double()
    acts = torch.randn(4, 6, 5, 5, generator=_gen(), dtype=F64)
    result = prune_channels(first, second, acts, keep=3, fold="lstsq")
    J = result.channels.numpy()
    A = acts.permute(0, 2, 3, 1).reshape(-1, 6).numpy()
    T = np.linalg.lstsq(A[:, J], A, rcond=None)[0]
    np.testing.assert_allclose(result.coefficients.numpy(), T, atol=1e-10)
    W = second.weight.detach().numpy()
    expected = np.zeros((3, 3, 2, 2))
    for o in range(3):
        for j in range(3):
            for c in range(6):
                expected[o, j] += T[j, c] * W[o, c]
    np.testing.assert_allclose(result.next_layer.weight.detach(), expected, atol=1e-12)


def test_magnitude_selection_and_no_fold_drop_the_weakest_filters():
    _seed()
    first, second = nn.Conv2d(1, 6, 3).double(), nn.Conv2d(6, 2, 1).double()
    acts = torch.rand(3, 6, 4, 4, generator=_gen(), dtype=F64)
    norms = first.weight.detach().abs().sum(dim=(1, 2, 3)).numpy()
    result = prune_channels(
        first, second, acts, keep=2, select="magnitude", fold="none"
    )
    np.testing.assert_array_equal(
        result.channels.numpy(), np.sort(np.argsort(norms)[-2:])
    )
    J = result.channels
    torch.testing.assert_close(result.next_layer.weight, second.weight[:, J])


def test_explicit_channels_are_kept():
    first, second = nn.Linear(3, 5).double(), nn.Linear(5, 2).double()
    acts = torch.rand(20, 5, generator=_gen(), dtype=F64)
    result = prune_channels(first, second, acts, keep=2, select=[4, 1], fold="none")
    assert result.channels.tolist() == [1, 4]
    torch.testing.assert_close(result.layer.weight, first.weight[[1, 4]])


# -- BatchNorm, dtypes, inputs ------------------------------------------------------


def _trained_batchnorm(bn, x):
    bn.train()
    with torch.no_grad():
        for _ in range(3):
            bn(x)
    bn.eval()
    return bn


def test_batchnorm_linear_pair_is_pruned_and_exact():
    _seed()
    first, second = nn.Linear(3, 10).double(), nn.Linear(10, 4).double()
    x = torch.randn(100, 3, generator=_gen(), dtype=F64)
    bn = _trained_batchnorm(nn.BatchNorm1d(10).double(), first(x).detach() + 1.0)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
    model = nn.Sequential(first, bn, second).eval()
    acts = collect_activations(model, second, x)  # after the BatchNorm: rank 4
    result = prune_channels(first, second, acts, keep=4, batchnorm=bn)
    J = result.channels
    new_bn = result.batchnorm
    assert new_bn.num_features == 4
    for name in ("weight", "bias", "running_mean", "running_var"):
        torch.testing.assert_close(getattr(new_bn, name), getattr(bn, name)[J])
    pruned = nn.Sequential(result.layer, new_bn, result.next_layer).eval()
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=0)


def test_batchnorm_relu_between_convs_exact():
    _seed()
    first = _duplicated_filters(nn.Conv2d(1, 8, 3, padding=1).double(), groups=2)
    x = torch.randn(6, 1, 7, 7, generator=_gen(), dtype=F64)
    bn = _trained_batchnorm(nn.BatchNorm2d(8).double(), first(x).detach())
    with torch.no_grad():  # positively homogeneous per channel: no shift
        bn.running_mean.zero_()
        bn.bias.zero_()
    second = nn.Conv2d(8, 2, 3).double()
    model = nn.Sequential(first, bn, nn.ReLU(), second).eval()
    acts = collect_activations(model, second, x)
    result = prune_channels(first, second, acts, keep=4, batchnorm=bn)
    pruned = nn.Sequential(
        result.layer, result.batchnorm, nn.ReLU(), result.next_layer
    ).eval()
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fold", ["interpolative", "lstsq", "none"])
def test_dtypes_shapes_preserved_and_inputs_not_modified(dtype, fold):
    _seed()
    conv = nn.Conv2d(2, 8, 3).to(dtype)
    bn = nn.BatchNorm2d(8).to(dtype)
    linear = nn.Linear(8 * 9, 5).to(dtype)
    linear.weight.requires_grad_(False)
    acts = torch.rand(7, 8, 3, 3, generator=_gen()).to(dtype)
    acts_before = acts.clone()
    before = _states(conv, bn, linear)
    result = prune_channels(conv, linear, acts, keep=3, batchnorm=bn, fold=fold)
    _assert_same_states(before, (conv, bn, linear))
    assert torch.equal(acts, acts_before)
    assert result.layer is not conv and result.next_layer is not linear
    assert (conv.out_channels, linear.in_features) == (8, 72)
    for module in (result.layer, result.batchnorm, result.next_layer):
        for p in module.parameters():
            assert p.dtype == dtype and p.device == conv.weight.device
    assert result.batchnorm.running_var.dtype == dtype
    assert result.layer.weight.shape == (3, 2, 3, 3)
    assert result.next_layer.weight.shape == (5, 27)
    assert result.layer.weight.requires_grad
    assert not result.next_layer.weight.requires_grad
    out = result.next_layer(torch.zeros(1, 27, dtype=dtype))
    assert out.dtype == dtype and out.shape == (1, 5)


# -- collect_activations --------------------------------------------------------------


def test_collect_activations_matches_the_forward_prefix_over_a_loader():
    _seed()
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 2))
    model.train()
    x = torch.randn(50, 4, generator=_gen())
    y = torch.zeros(50, dtype=torch.int64)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=16
    )
    got = collect_activations(model, model[3], loader, max_samples=40)
    # Eval mode inside (dropout off), training flags restored after.
    expected = torch.relu(model[0](x[:40])).detach()
    torch.testing.assert_close(got, expected)
    assert all(m.training for m in model.modules())
    full = collect_activations(model, "3", x, max_samples=None, batch_size=7)
    torch.testing.assert_close(full, torch.relu(model[0](x)).detach())


def test_hooks_removed_and_modes_restored_when_the_forward_raises():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Linear(3, 3), Boom(), nn.Linear(3, 2))
    model[0].eval()  # a mixed state must come back as it was
    with pytest.raises(RuntimeError, match="boom"):
        collect_activations(model, model[2], torch.zeros(4, 3))
    assert not model[2]._forward_pre_hooks
    assert model.training and not model[0].training and model[2].training


def test_collect_activations_errors():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    unused = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="module"):
        collect_activations(model, unused, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="module"):
        collect_activations(model, "7", torch.zeros(2, 3))
    with pytest.raises(ValueError, match="max_samples"):
        collect_activations(model, model[1], torch.zeros(2, 3), max_samples=0)

    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.used(x)

    skips = Skips()
    with pytest.raises(ValueError, match="not called"):
        collect_activations(skips, skips.unused, torch.zeros(2, 3))
    assert not skips.unused._forward_pre_hooks


# -- errors ---------------------------------------------------------------------------


def _linear_pair():
    return nn.Linear(3, 6), nn.Linear(6, 2), torch.rand(10, 6)


@pytest.mark.parametrize(
    ("keep", "error", "match"),
    [
        (0, ValueError, r"keep \(0\) must be in \[1, 6\]"),
        (7, ValueError, r"keep \(7\) must be in \[1, 6\]"),
        (-1, ValueError, "keep"),
        (2.5, TypeError, "keep must be an int"),
        ("2", TypeError, "keep must be an int"),
        (True, TypeError, "keep must be an int"),
    ],
)
def test_bad_keep(keep, error, match):
    layer, next_layer, acts = _linear_pair()
    with pytest.raises(error, match=match):
        prune_channels(layer, next_layer, acts, keep=keep)


def test_numpy_integer_keep_is_accepted():
    layer, next_layer, acts = _linear_pair()
    assert (
        prune_channels(layer, next_layer, acts, keep=np.int64(2))[0].out_features == 2
    )


@pytest.mark.parametrize(
    ("layer", "next_layer", "acts", "error", "match"),
    [
        (nn.Linear(3, 6), nn.Linear(5, 2), torch.rand(4, 6), ValueError, "in_features"),
        (
            nn.Conv2d(1, 6, 3),
            nn.Conv2d(5, 2, 3),
            torch.rand(2, 6, 4, 4),
            ValueError,
            "in_channels",
        ),
        (nn.Conv2d(1, 6, 3), nn.Linear(25, 2), torch.rand(2, 25), ValueError, "in_f"),
        (
            nn.Conv1d(1, 6, 3),
            nn.Conv1d(6, 2, 3),
            torch.rand(2, 6, 4),
            TypeError,
            "layer",
        ),
        (nn.Linear(3, 6), nn.ReLU(), torch.rand(4, 6), TypeError, "next_layer"),
        (
            nn.Linear(3, 6),
            nn.Conv2d(6, 2, 1),
            torch.rand(2, 6, 3, 3),
            TypeError,
            "Linear",
        ),
        (
            nn.Conv2d(2, 6, 3, groups=2),
            nn.Conv2d(6, 2, 1),
            torch.rand(2, 6, 3, 3),
            ValueError,
            "layer.groups",
        ),
        (
            nn.Conv2d(1, 6, 3),
            nn.Conv2d(6, 6, 1, groups=3),
            torch.rand(2, 6, 3, 3),
            ValueError,
            "next_layer.groups",
        ),
        (nn.Linear(3, 6), nn.Linear(6, 2), torch.rand(4, 5), ValueError, "activations"),
        (nn.Linear(3, 6), nn.Linear(6, 2), np.ones((4, 6)), TypeError, "activations"),
        (nn.Conv2d(1, 6, 3), nn.Conv2d(6, 2, 3), torch.rand(4, 6), ValueError, "activ"),
        (
            nn.Conv2d(1, 6, 3),
            nn.Linear(24, 2),
            torch.rand(2, 6, 3, 3),
            ValueError,
            r"activations of shape \(2, 6, 3, 3\)",
        ),
        (nn.Linear(3, 6), nn.Linear(6, 2), torch.rand(0, 6), ValueError, "no samples"),
        (
            nn.Linear(3, 6),
            nn.Linear(6, 2),
            torch.full((3, 6), float("nan")),
            ValueError,
            "NaN",
        ),
    ],
)
def test_bad_layers_and_activations(layer, next_layer, acts, error, match):
    with pytest.raises(error, match=match):
        prune_channels(layer, next_layer, acts, keep=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fold": "exact"}, ValueError, "fold"),
        ({"select": "l2"}, ValueError, "select"),
        ({"select": [0, 0]}, ValueError, "distinct"),
        ({"select": [0, 9]}, ValueError, "select"),
        ({"select": [0, 1, 2]}, ValueError, "keep=2"),
        ({"batchnorm": nn.BatchNorm1d(5)}, ValueError, "batchnorm.num_features"),
        ({"batchnorm": nn.BatchNorm2d(6)}, TypeError, "batchnorm"),
    ],
)
def test_bad_options(kwargs, error, match):
    layer, next_layer, acts = _linear_pair()
    with pytest.raises(error, match=match):
        prune_channels(layer, next_layer, acts, keep=2, **kwargs)


def test_result_unpacks_to_two_modules_and_survives_copy():
    layer, next_layer, acts = _linear_pair()
    result = prune_channels(layer, next_layer, acts, keep=2)
    new_layer, new_next = result
    assert new_layer is result.layer and new_next is result.next_layer
    clone = copy.deepcopy(result)
    assert len(clone) == 2 and clone.batchnorm is None
    assert torch.equal(clone.channels, result.channels)
    torch.testing.assert_close(clone.next_layer.weight, result.next_layer.weight)


def test_streaming_factor_over_many_row_blocks_matches_one_block(monkeypatch):
    import graft.prune._channels as pruning

    first, second = nn.Conv2d(1, 6, 3).double(), nn.Conv2d(6, 2, 1).double()
    acts = torch.rand(3, 6, 5, 5, generator=_gen(), dtype=F64)  # 75 rows
    whole = prune_channels(first, second, acts, keep=3, fold="lstsq")
    monkeypatch.setattr(pruning, "_CHUNK", 7)
    blocks = prune_channels(first, second, acts, keep=3, fold="lstsq")
    assert torch.equal(blocks.channels, whole.channels)
    A = acts.permute(0, 2, 3, 1).reshape(-1, 6).numpy()
    J = blocks.channels.numpy()
    T = np.linalg.lstsq(A[:, J], A, rcond=None)[0]
    np.testing.assert_allclose(blocks.coefficients.numpy(), T, atol=1e-10)


# -- pairs checked against the data flow ----------------------------------------------
