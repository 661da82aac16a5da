"""prune_model on torch-pruning's groups: exact on low-rank data, oracles, refusals."""

import copy
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from graft import collect_activations, prune_channels, prune_model  # noqa: E402

F64 = torch.float64


def _seed(seed=0):
    torch.manual_seed(seed)


def _trained_batchnorm(bn, x):
    bn.train()
    with torch.no_grad():
        for _ in range(3):
            bn(x)
    return bn.eval()


def _chain():
    _seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 4, 3),
    ).double()


class _Block(nn.Module):
    """conv-bn-relu-conv-bn plus the skip, then relu (a ResNet basic block)."""

    def __init__(self, c):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


class _Net(nn.Module):
    """A stem, a residual block, a depthwise separable pair and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.block = _Block(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(2), nn.Linear(64, 10)

    def forward(self, x):
        x = self.block(torch.relu(self.bn(self.stem(x))))
        x = torch.relu(self.pw(torch.relu(self.dw(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _duplicate_outputs(*modules, half):
    """Output channel c + half equal to channel c in every parameter and buffer."""
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(recurse=False), *module.buffers()]:
                if tensor.ndim and tensor.shape[0] == 2 * half:
                    tensor[half:] = tensor[:half]


def _channel_columns(acts, C):
    """A consumer's inputs as a (rows, C) matrix: positions or taps as rows."""
    if acts.ndim == 4:
        return acts.movedim(1, -1).reshape(-1, C)
    return acts.reshape(len(acts), C, -1).transpose(1, 2).reshape(-1, C)


def _greedy_by_lstsq(A, B, keep):
    """Forward selection by brute force: ``keep`` columns of ``A`` fitting ``B``."""
    picked = []
    for _ in range(keep):
        left = [c for c in range(A.shape[1]) if c not in picked]
        errors = []
        for c in left:
            cols = A[:, [*picked, c]]
            fit = np.linalg.lstsq(cols, B, rcond=None)[0]
            errors.append(np.linalg.norm(B - cols @ fit))
        picked.append(left[int(np.argmin(errors))])
    return np.array(picked)


def test_a_chain_prunes_as_the_pairs_by_hand():
    pytest.importorskip("torch_pruning")
    model = _chain()
    x = torch.randn(40, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    _trained_batchnorm(model[1], model[0](x).detach())
    before = copy.deepcopy(model.state_dict())
    pruned, report = prune_model(
        model, x[:2], x, fraction=0.5, fold="lstsq", recalibrate=False
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    roots = [g["root"] for g in report["groups"]]
    assert roots == ["0", "4"]  # upstream first; the classifier's outputs stay
    by_root = {g["root"]: g for g in report["groups"]}
    assert by_root["0"]["layers"] == ["0", "1", "4"]  # BatchNorm found, not passed
    assert by_root["4"]["consumers"] == ["8"]

    # Oracle: prune_channels on each pair, from the input on, keeping the
    # channels a plain greedy loop picks (each the one whose addition leaves
    # the smallest least-squares residual of A_0 D, A_0 the consumer's inputs
    # before any pruning, D its weight norm on each input channel). The first
    # pair's fold is prune_channels'; the second's fits the kept inputs of the
    # pruned model to A_0.
    manual = copy.deepcopy(model)
    pairs = {"0": (0, 4, 1), "4": (4, 8, None)}
    for root in roots:
        i, j, b = pairs[root]
        acts = collect_activations(manual, str(j), x)
        C, keep = by_root[root]["channels_before"], by_root[root]["channels_after"]
        A = _channel_columns(acts, C)
        W = manual[j].weight.detach()
        D = W.reshape(W.shape[0], C, -1).norm(dim=(0, 2))  # conv taps or positions
        target = _channel_columns(collect_activations(model, str(j), x), C)
        pivots = _greedy_by_lstsq(A.numpy(), (target * D).numpy(), keep)
        bn = manual[b] if b is not None else None
        result = prune_channels(
            manual[i], manual[j], acts, keep=keep, batchnorm=bn, fold="lstsq",
            select=pivots,
        )  # fmt: skip
        manual[i], manual[j] = result.layer, result.next_layer
        if b is not None:
            manual[b] = result.batchnorm
        if root == "4":
            J = result.channels  # the pruned layer's outputs, in their order
            T = np.linalg.lstsq(A[:, J].numpy(), target.numpy(), rcond=None)[0]
            folded = torch.einsum("ocs,jc->ojs", W.reshape(W.shape[0], C, -1),
                                  torch.as_tensor(T))  # fmt: skip
            with torch.no_grad():
                manual[j].weight.copy_(folded.reshape(W.shape[0], -1))
        assert result.channels.tolist() == by_root[root]["kept"]
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), manual(x))
    counted = sum(p.numel() for p in pruned.parameters())
    assert report["parameters_after"] == counted
    assert report["parameters_before"] == sum(p.numel() for p in model.parameters())
    assert report["macs_after"] < report["macs_before"]


def test_a_residual_block_with_duplicated_channels_prunes_exactly():
    pytest.importorskip("torch_pruning")
    _seed(0)
    model = _Net().double().eval()
    x = torch.randn(64, 1, 8, 8, dtype=F64)
    # The residual stream's channels 4..7 copy 0..3 (every producer and the
    # depthwise filters): its activations have rank 4, so keeping 4 is exact.
    _trained_batchnorm(model.bn, model.stem(x).detach())
    _duplicate_outputs(model.stem, model.bn, model.block.c2, model.block.b2,
                       model.dw, half=4)  # fmt: skip
    stream = model.block(torch.relu(model.bn(model.stem(x)))).detach()
    torch.testing.assert_close(stream[:, 4:], stream[:, :4])
    pruned, report = prune_model(
        model, x[:2], x, fraction=0.5, ignored_layers=["block.c1", "pw"],
        recalibrate=False,  # the trained statistics, for the exact comparison
    )  # fmt: skip
    (group,) = report["groups"]
    assert set(group["layers"]) >= {"stem", "bn", "block.c2", "block.b2", "dw"}
    assert sorted(group["consumers"]) == ["block.c1", "pw"]
    assert group["residual"] < 1e-10 and report["output_change"] < 1e-10
    for conv in (pruned.stem, pruned.block.c2, pruned.dw):
        assert conv.out_channels == 4
    assert pruned.block.c1.in_channels == pruned.pw.in_channels == 4
    assert pruned.block.b2.num_features == pruned.dw.groups == 4
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-9, atol=1e-9)


def test_recalibration_sets_each_batchnorm_to_the_statistics_of_its_input():
    pytest.importorskip("torch_pruning")
    _seed(0)
    model = _Net().double().eval()
    x = torch.randn(256, 1, 8, 8, dtype=F64)  # one batch of the recalibration pass
    pruned, _ = prune_model(model, x[:2], x, fraction=0.5, max_samples=None)
    inputs = {}
    norms = {n: m for n, m in pruned.named_modules() if isinstance(m, nn.BatchNorm2d)}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0]))
             for n, m in norms.items()]  # fmt: skip
    with torch.no_grad():
        pruned(x)  # eval mode: the running statistics are not touched
    for h in hooks:
        h.remove()
    for name, norm in norms.items():
        h = inputs[name]  # the oracle: mean and unbiased variance per channel
        # (up to the biased variance the pass normalises with upstream: n-1 / n)
        torch.testing.assert_close(norm.running_mean, h.mean((0, 2, 3)), rtol=1e-3,
                                   atol=1e-4)  # fmt: skip
        torch.testing.assert_close(norm.running_var, h.var((0, 2, 3)), rtol=1e-3,
                                   atol=1e-4)  # fmt: skip
        assert norm.momentum == 0.1 and not norm.training


def test_every_group_of_a_resnet_and_depthwise_model_prunes_and_runs():
    pytest.importorskip("torch_pruning")
    _seed(0)
    model = _Net().eval()
    x = torch.randn(64, 1, 8, 8)
    pruned, report = prune_model(model, x[:2], x, fraction=0.25)
    assert {g["root"] for g in report["groups"]} >= {"block.c1", "pw"}
    assert [g["channels_after"] for g in report["groups"]] == [
        max(1, round(g["channels_before"] / 4)) for g in report["groups"]
    ]
    assert pruned(x).shape == (64, 10) and pruned.fc.out_features == 10
    assert report["parameters_after"] < report["parameters_before"] / 4


def test_a_linear_network_on_low_rank_inputs_prunes_exactly():
    pytest.importorskip("torch_pruning")
    _seed(0)
    model = nn.Sequential(nn.Linear(3, 12), nn.Linear(12, 12), nn.Linear(12, 2))
    model = model.double()
    x = torch.randn(200, 3, dtype=F64)  # every hidden layer has rank 3 (+ bias)
    for fold in ("interpolative", "lstsq"):
        pruned, report = prune_model(model, x[:2], x, fraction=0.5, fold=fold)
        assert [pruned[0].out_features, pruned[1].out_features] == [6, 6]
        assert report["output_change"] < 1e-10
        held_out = torch.randn(50, 3, dtype=F64)  # the span holds any input
        with torch.no_grad():
            torch.testing.assert_close(pruned(held_out), model(held_out))
    _, dropped = prune_model(model, x[:2], x, fraction=0.5, fold="none")
    assert dropped["output_change"] > 1e-3  # the fold is what makes it exact


class _Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 1), nn.Conv2d(1, 4, 1)
        self.head = nn.Conv2d(8, 3, 3)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


def test_concatenated_branches_prune_exactly_through_the_index_mapping():
    pytest.importorskip("torch_pruning")
    _seed(0)
    model = _Branches().double()
    x = torch.randn(16, 1, 6, 6, dtype=F64)  # 1x1 convs of one channel: rank 2
    pruned, report = prune_model(model, x[:2], x, fraction=0.5)
    assert sorted(g["root"] for g in report["groups"]) == ["a", "b"]
    assert pruned.head.in_channels == 4
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-9, atol=1e-9)


def test_an_importance_chooses_the_channels():
    pytest.importorskip("torch_pruning")
    model = _chain().eval()
    x = torch.randn(8, 1, 8, 8, dtype=F64)
    scores = torch.tensor([0.0, 5, 1, 4, 2, 3, 7, 6])  # conv 0's 8 channels

    def importance(group):
        n = len(group[0].idxs)
        return scores if n == 8 else torch.arange(n, dtype=torch.float64)

    _, report = prune_model(model, x[:2], x, fraction=0.5, select=importance)
    kept = {g["root"]: g["kept"] for g in report["groups"]}
    assert kept == {"0": [1, 3, 6, 7], "4": [3, 4, 5]}
    _, magnitude = prune_model(model, x[:2], x, fraction=0.5, select="magnitude")
    # torch-pruning's own L1 magnitude of conv 0's group (conv, BatchNorm, conv 4).
    tp = pytest.importorskip("torch_pruning")
    graph = tp.DependencyGraph().build_dependency(model, x[:2])
    group = graph.get_pruning_group(model[0], tp.prune_conv_out_channels, range(8))
    scores = tp.importance.MagnitudeImportance(p=1)(group)
    top = sorted(torch.argsort(scores, descending=True)[:4].tolist())
    assert {g["root"]: g["kept"] for g in magnitude["groups"]}["0"] == top


def test_layers_a_fold_cannot_follow_are_refused_by_name():
    pytest.importorskip("torch_pruning")
    _seed(0)
    norm = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    x = torch.randn(16, 4)
    with pytest.raises(ValueError, match=r"channels of '0' reach '1' \(LN\)"):
        prune_model(norm, x[:2], x, fraction=0.5)
    pruned, report = prune_model(norm, x[:2], x, fraction=0.5, ignored_layers=["0"])
    assert report["groups"] == [] and pruned(x).shape == (16, 2)
    images = torch.randn(4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"grouped convolution 'mix' \(groups=2;"):
        prune_model(_Concatenated(), images[:2], images, fraction=0.5)


class _Concatenated(nn.Module):
    """Two branches concatenated into a grouped convolution."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3)
        self.mix = nn.Conv2d(8, 4, 3, groups=2)

    def forward(self, x):
        return self.mix(torch.cat([self.a(x), self.b(x)], dim=1))


def _grouped_model(duplicated):
    """conv (1 -> 8), grouped conv (8 -> 4, groups 2), a linear head; float64.

    With ``duplicated``, channels 2i and 2i+1 of the first conv are copies, and
    so are outputs 2i and 2i+1 of the grouped conv: half of every group is
    redundant, so pruning half of it is exact.
    """
    _seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, groups=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    ).double()
    if duplicated:
        with torch.no_grad():
            for conv in (model[0], model[2]):
                conv.weight[1::2] = conv.weight[0::2]
                conv.bias[1::2] = conv.bias[0::2]
    return model


def test_grouped_convolutions_prune_alike_in_every_group_and_fold_exactly():
    pytest.importorskip("torch_pruning")
    model = _grouped_model(duplicated=True)
    x = torch.randn(64, 1, 8, 8, dtype=F64)
    pruned, report = prune_model(model, x[:2], x, fraction=0.5, recalibrate=False)
    conv, grouped = pruned[0], pruned[2]
    assert (conv.out_channels, grouped.in_channels, grouped.out_channels) == (4, 4, 2)
    assert grouped.groups == 2 and grouped.weight.shape == (2, 2, 3, 3)
    kept = {entry["root"]: entry["kept"] for entry in report["groups"]}
    # One channel of each duplicated pair, at the same position in both groups.
    assert [k // 2 for k in kept["0"]] == [0, 1, 2, 3]
    assert [k % 4 for k in kept["0"][:2]] == [k % 4 for k in kept["0"][2:]]
    assert [k // 2 for k in kept["2"]] == [0, 1]
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-9, atol=1e-9)


def test_grouped_convolutions_fold_within_their_groups():
    # No redundancy: the fold must still never mix two groups' channels, so
    # the pruned grouped conv equals the least-squares fold done group by group
    # by hand (the oracle), and every importance keeps equal groups.
    pytest.importorskip("torch_pruning")
    model = _grouped_model(duplicated=False)
    x = torch.randn(64, 1, 8, 8, dtype=F64)
    ignored = ["2"]  # prune only the first conv's channels
    pruned, report = prune_model(
        model, x[:2], x, fraction=0.5, ignored_layers=ignored, recalibrate=False
    )
    (entry,) = report["groups"]
    J = np.array(entry["kept"])
    local = J[:2]
    assert list(J[2:]) == list(local + 4)
    A = model[1](model[0](x)).detach().movedim(1, -1).reshape(-1, 8).numpy()
    W = model[2].weight.detach().numpy()
    for G in range(2):
        cols = np.arange(4 * G, 4 * G + 4)
        T = np.linalg.lstsq(A[:, cols[local]], A[:, cols], rcond=None)[0]
        expected = np.einsum("oc...,jc->oj...", W[2 * G : 2 * G + 2], T)
        got = pruned[2].weight.detach().numpy()[2 * G : 2 * G + 2]
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
    for select in ("magnitude", lambda group: torch.arange(8.0)):
        other, rep = prune_model(
            model, x[:2], x, fraction=0.5, select=select, ignored_layers=ignored
        )
        kept = rep["groups"][0]["kept"]
        assert [k - 4 for k in kept[2:]] == kept[:2] and other(x).shape == (64, 3)


def test_bad_arguments_are_named_before_anything_is_pruned():
    pytest.importorskip("torch_pruning")
    model = _chain()
    x = torch.zeros(4, 1, 8, 8, dtype=F64)
    cases = (
        ({"fraction": 0}, ValueError, r"fraction \(0\) must be"),
        ({"fraction": 0.5, "select": 3}, TypeError, "select must be"),
        ({"fraction": 0.5, "select": "l2"}, ValueError, "select"),
        ({"fraction": 0.5, "fold": "exact"}, ValueError, "fold"),
        ({"fraction": 0.5, "tolerance": -1}, ValueError, "tolerance"),
        ({"fraction": 0.5, "recalibrate": "yes"}, TypeError, "recalibrate"),
        ({"fraction": 0.5, "ignored_layers": ["fc"]}, ValueError, "ignored_layers"),
    )
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            prune_model(model, x[:2], x, **options)
    with pytest.raises(ValueError, match="model fails at forward"):
        prune_model(model, x[:2], x.repeat(1, 2, 1, 1), fraction=0.5)


def test_the_tolerance_is_checked_on_held_out_data():
    pytest.importorskip("torch_pruning")
    model = _chain().eval()
    x = torch.randn(64, 1, 8, 8, dtype=F64)
    _, report = prune_model(model, x[:2], x[:32], fraction=0.25, held_out=x[32:])
    assert report["output_change"] > 0
    with pytest.raises(ValueError, match=r"moved by .* more than tolerance=1e-06"):
        prune_model(model, x[:2], x[:32], fraction=0.25, held_out=x[32:],
                    tolerance=1e-6)  # fmt: skip


def test_without_torch_pruning_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ImportError, match=r"maxvol-kit\[prune\]"):
        prune_model(model, torch.zeros(2, 4), torch.zeros(8, 4), fraction=0.5)


class _GroupedResidual(nn.Module):
    """A ResNeXt-style block: grouped 3x3, pointwise conv, BatchNorm, skip."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.g = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.pw = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.pw(self.g(h)))
        return self.head(h.mean((2, 3)))


def test_a_grouped_residual_block_prunes_every_group_and_runs():
    pytest.importorskip("torch_pruning")
    _seed(1)
    model = _GroupedResidual()
    x = torch.randn(64, 1, 8, 8)
    pruned, report = prune_model(model, x[:2], x, fraction=0.5)
    assert {entry["root"] for entry in report["groups"]} == {"pw.0", "g.0"}
    for entry in report["groups"]:
        kept = np.array(entry["kept"])
        assert entry["channels_after"] == 8 == len(kept)
        # four groups of four channels: the same two positions kept in each
        assert len({tuple(block) for block in (kept.reshape(4, 2) % 4)}) == 1
    assert pruned.g[0].groups == 4 and pruned.g[0].weight.shape == (8, 2, 3, 3)
    assert pruned(x).shape == (64, 3)
    assert report["parameters_after"] < report["parameters_before"]


def test_a_channel_its_consumer_does_not_read_is_left_out():
    # Channel 0 has by far the largest activations (the unweighted greedy
    # volume's first pick) but the next layer gives it zero weight: it
    # cannot matter to the outputs, so the output-weighted choice drops it.
    pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 3)).to(F64)
    with torch.no_grad():
        model[0].weight[0] *= 100
        model[1].weight[:, 0] = 0
    x = torch.randn(64, 6, dtype=F64)
    acts = model[0](x).detach()
    assert int(acts.norm(dim=0).argmax()) == 0
    _, report = prune_model(model, x[:2], x, fraction=0.5, recalibrate=False)
    (group,) = report["groups"]
    assert 0 not in group["kept"] and len(group["kept"]) == 2


def test_a_shuffled_loader_prunes_as_the_tensor_of_its_samples():
    # The fold pairs the pruned and the unpruned model's inputs sample by
    # sample: the batches are read once, so a shuffled loader is as good as
    # the tensor (same channels, same fold).
    pytest.importorskip("torch_pruning")
    from torch.utils.data import DataLoader, TensorDataset

    model = _chain()
    x = torch.randn(256, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(2))
    loader = DataLoader(TensorDataset(x), batch_size=32, shuffle=True)
    options = {"fraction": 0.5, "recalibrate": False}  # its batch statistics differ
    _, from_tensor = prune_model(model, x[:2], x, **options)
    _, from_loader = prune_model(model, x[:2], loader, **options)
    for a, b in zip(from_tensor["groups"], from_loader["groups"], strict=True):
        assert a["kept"] == b["kept"]
        assert a["residual"] == pytest.approx(b["residual"], rel=1e-6)


def test_select_maxvol_names_its_replacement():
    pytest.importorskip("torch_pruning")
    model = _chain()
    x = torch.randn(8, 1, 8, 8, dtype=F64)
    with pytest.raises(ValueError, match="select='residual'"):
        prune_model(model, x[:2], x, fraction=0.5, select="maxvol")


def test_a_dead_channel_prunes_without_warnings():
    # A channel that is zero on every sample (a dead ReLU) adds nothing to
    # the fit and is dropped, without 0/0 along the way.
    pytest.importorskip("torch_pruning")
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).to(F64)
    with torch.no_grad():
        model[0].weight[0] = 0
        model[0].bias[0] = -1
    x = torch.randn(64, 6, dtype=F64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = prune_model(model, x[:2], x, fraction=0.75, recalibrate=False)
    (group,) = report["groups"]
    assert 0 not in group["kept"] and len(group["kept"]) == 3
