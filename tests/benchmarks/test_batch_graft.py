"""The per-batch GRAFT of the benchmarks: stratification, random share, pool."""

import math

import pytest

torch = pytest.importorskip("torch")
from _batch_graft import BatchGraftSelector as GraftSelector  # noqa: E402
from _batch_graft import _pick_order  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from maxvol_kit._groups import allocate  # noqa: E402


class _Identity(nn.Module):
    """The embedding is the input itself (the final Linear's input)."""

    def __init__(self, d=12, classes=4):
        super().__init__()
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(x)


def _batch(n=120, d=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def _select(selector, x, y, seed=0):
    model = _Identity(x.shape[1])
    return selector.select(model, x, y, torch.Generator().manual_seed(seed))


def test_allocate_is_largest_remainder_with_one_per_group():
    assert allocate([50, 30, 20], 10).tolist() == [5, 3, 2]
    assert allocate([50, 30, 20], 7).tolist() == [4, 2, 1]  # 3.5, 2.1, 1.4
    assert allocate([5, 3, 2], 3).tolist() == [1, 1, 1]  # one each when enough
    assert allocate([1, 100], 50).tolist() == [1, 49]
    assert allocate([300, 1, 1], 2).tolist() == [2, 0, 0]  # fewer picks than groups
    assert allocate([2, 2], 4).tolist() == [2, 2]  # never more than a group holds
    assert int(allocate([7, 7, 7], 20).sum()) == 20


def test_stratified_selection_has_the_proportional_class_counts():
    x, y = _batch()
    sel = _select(
        GraftSelector(0.25, stratify=True, sampling="greedy", pool=None), x, y
    )
    k = math.floor(0.25 * len(y))
    assert len(sel.indices) == k == len(set(sel.indices.tolist()))
    counts = torch.bincount(y, minlength=4)
    expected = allocate(counts.tolist(), k)
    assert torch.bincount(y[sel.indices], minlength=4).tolist() == expected.tolist()


def test_stratified_picks_within_a_class_follow_its_greedy_volume_order():
    x, y = _batch()
    sel = _select(
        GraftSelector(0.25, stratify=True, sampling="greedy", pool=None), x, y
    )
    for c in range(4):
        rows = torch.nonzero(y == c)[:, 0]
        picked = [int(i) for i in sel.indices if y[i] == c]
        oracle = rows[_pick_order(x[rows].double(), len(picked), "us")[: len(picked)]]
        assert picked == oracle.tolist()


def test_random_share_keeps_the_greedy_head_and_fills_with_random_rows():
    x, y = _batch()
    plain = _select(GraftSelector(0.25, sampling="greedy", pool=None), x, y).indices
    half = _select(
        GraftSelector(0.25, sampling="greedy", random_share=0.5, pool=None), x, y
    )
    k = len(plain)
    head = k - round(0.5 * k)
    assert half.indices[:head].tolist() == plain[:head].tolist()
    assert len(half.indices) == k == len(set(half.indices.tolist()))
    draws = {
        tuple(
            _select(
                GraftSelector(0.25, sampling="greedy", random_share=0.5, pool=None),
                x,
                y,
                s,
            )
            .indices[head:]
            .tolist()
        )
        for s in range(4)
    }
    assert len(draws) > 1  # the tail is random


def test_full_budget_is_kept_when_the_features_have_low_rank():
    x, y = _batch(n=100, d=5)
    sel = _select(GraftSelector(0.2, sampling="greedy", pool=None), x, y)
    assert len(sel.indices) == 20 == len(set(sel.indices.tolist()))


def test_pool_selects_among_a_random_pool_of_the_batch():
    x, y = _batch()
    big = _select(GraftSelector(0.1, sampling="greedy", pool=100), x, y).indices
    plain = _select(GraftSelector(0.1, sampling="greedy", pool=None), x, y).indices
    assert big.tolist() == plain.tolist()  # a pool as large as the batch
    sel = _select(GraftSelector(0.1, sampling="greedy", pool=2), x, y, seed=3)
    k = math.floor(0.1 * len(y))
    pool = torch.randperm(len(y), generator=torch.Generator().manual_seed(3))
    pool = pool[: math.ceil(2 * k)].sort().values
    assert set(sel.indices.tolist()) <= set(pool.tolist())
    # within the pool, the greedy volume order of the pool's features
    oracle = pool[_pick_order(x[pool].double(), k, "us")]
    assert sel.indices.tolist() == oracle.tolist()


def test_volume_sampling_prefers_high_leverage_rows_and_reweights_them():
    x, y = _batch(n=60, d=12)
    x[:4] *= 6  # four high-leverage rows
    selector = GraftSelector(0.1, pool=None)
    hits = torch.zeros(60)
    for s in range(200):
        sel = _select(selector, x, y, s)
        assert abs(float(sel.weights.mean()) - 1) < 1e-5
        hits[sel.indices] += 1
        big = [w for i, w in zip(sel.indices, sel.weights, strict=True) if i < 4]
        small = [w for i, w in zip(sel.indices, sel.weights, strict=True) if i >= 4]
        if big and small:  # likelier rows count less
            assert max(big) < min(small)
    assert hits[:4].mean() > 3 * hits[4:].mean()


def test_volume_sampling_weights_reduce_the_bias_of_the_mean():
    x, y = _batch(n=60, d=12)
    x[:4] *= 6
    target = x.mean(dim=0)
    selector = GraftSelector(0.2, pool=None)
    weighted, plain = torch.zeros(12), torch.zeros(12)
    draws = 300
    for s in range(draws):
        sel = _select(selector, x, y, s)
        rows = x[sel.indices]
        weighted += (sel.weights[:, None] * rows).mean(dim=0) / draws
        plain += rows.mean(dim=0) / draws
    assert (weighted - target).norm() < 0.5 * (plain - target).norm()


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"random_share": 1.5}, r"random_share \(1.5\)"),
        ({"random_share": "half"}, "random_share must be a number"),
        ({"sampling": "dpp"}, r"sampling \('dpp'\)"),
        ({"weighted": True}, "weighted=True and random_share=0.0 need sampling"),
        ({"random_share": 0.5}, "random_share=0.5 need sampling='greedy'"),
        ({"pool": 0.5}, r"pool \(0.5\)"),
        ({"pool": True}, r"pool must be a number in \[1, inf\), got bool True"),
        ({"pool": float("inf")}, r"pool \(inf\) must be a finite number"),
        ({"pool": float("nan")}, r"pool \(nan\) must be a finite number"),
    ],
)
def test_bad_options_name_the_parameter(options, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        GraftSelector(0.3, **options)


def _data(n=300, d=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    W = torch.randn(d, classes, generator=g)
    return TensorDataset(X, (X @ W).argmax(dim=1))


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


def test_features_must_be_known():
    with pytest.raises(ValueError, match=r"features \('pixels'\) must be"):
        GraftSelector(0.3, features="pixels")
    with pytest.raises(TypeError, match="features must be 'embedding'"):
        GraftSelector(0.3, features=None)


def test_graft_selector_uses_the_maxvol_prefix_and_the_rank_rule():
    from graft._features import last_layer_gradients, penultimate
    from graft.selection._dynamic_rank import choose_rank, prefix_residuals

    model, data = _model(), _data(64)
    x, y = data.tensors
    selector = GraftSelector(
        0.5, eps=0.3, min_fraction=0.25, sampling="greedy", pool=None
    )
    sel = selector.select(model, x, y)
    h, logits = penultimate(model, x)
    G = last_layer_gradients(h.double(), logits.double(), y)
    order = _pick_order(h.double(), 32, "us")
    k = choose_rank(prefix_residuals(G, order.tolist()), 0.3, 16, len(order))
    assert torch.equal(sel.indices, order[:k]) and sel.rank == k
    assert torch.all(sel.weights == 1)


def test_graft_selector_weights_are_the_least_squares_weights():
    from graft._features import last_layer_gradients, penultimate
    from graft.selection._dynamic_rank import subset_weights

    model, data = _model(), _data(64)
    x, y = data.tensors
    sel = GraftSelector(0.5, weighted=True, sampling="greedy", pool=None).select(
        model, x, y
    )
    h, logits = penultimate(model, x)
    G = last_layer_gradients(h.double(), logits.double(), y)
    expected = subset_weights(G, sel.indices.tolist()).float()
    torch.testing.assert_close(sel.weights, expected)
    assert float(sel.weights.mean()) == pytest.approx(1.0, rel=1e-5)


def test_typicality_keeps_graft_away_from_outlying_samples():
    class Identity(nn.Module):
        """The embedding is the input itself, so outliers are known."""

        def __init__(self):
            super().__init__()
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            return self.head(x)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 16, generator=g)
    x[:3] *= 15  # three far outliers
    y = torch.randint(0, 3, (100,), generator=g)
    model = Identity()
    plain = GraftSelector(0.1, sampling="greedy", pool=None).select(model, x, y).indices
    typical = GraftSelector(0.1, sampling="greedy", typicality=2.0, pool=None).select(
        model, x, y
    )
    assert set(range(3)) <= set(plain.tolist())
    assert not set(range(3)) & set(typical.indices.tolist())
    with pytest.raises(ValueError, match=r"typicality \(-1\)"):
        GraftSelector(0.1, typicality=-1)
