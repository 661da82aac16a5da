"""The selectors: SAGE against a brute-force oracle, GRAFT's online selection."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

import graft.selection._selectors as selectors  # noqa: E402
from graft import Graft, GraftSelector, SageSelector  # noqa: E402
from graft._features import last_layer_gradients, penultimate  # noqa: E402
from maxvol_kit._groups import allocate  # noqa: E402


def _data(n=300, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = (X @ torch.randn(d, classes, generator=g)).argmax(dim=1)
    flip = torch.rand(n, generator=g) < 0.2  # some label noise
    y[flip] = torch.randint(0, classes, (int(flip.sum()),), generator=g)
    return TensorDataset(X, y)


def _model(d=6, classes=3, hidden=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, classes))


def _oracle(model, X, y, fraction, balanced, how="top"):
    """Cosine of each exact last-layer gradient to the mean, top per class
    (or evenly spaced ranks of the cosine order with pick="spread")."""
    h, logits = penultimate(model, X)
    G = last_layer_gradients(h.double(), logits.double(), y)
    mean = G.mean(dim=0)
    scores = (G @ mean) / (G.norm(dim=1) * mean.norm())
    k = math.floor(fraction * len(y) + 1e-9)

    def pick(rows, kc):
        order = rows[torch.argsort(scores[rows], descending=True)]
        if how == "top":
            return set(order[:kc].tolist())
        return {int(order[int((j + 0.5) * len(order) / kc)]) for j in range(kc)}

    if not balanced:
        return pick(torch.arange(len(y)), k)
    members = [torch.nonzero(y == c)[:, 0] for c in torch.unique(y)]
    alloc = allocate([len(m) for m in members], k)
    chosen = set()
    for rows, kc in zip(members, alloc.tolist(), strict=True):
        chosen |= pick(rows, kc)
    return chosen


@pytest.mark.parametrize("pick", ["top", "spread"])
@pytest.mark.parametrize("balanced", [True, False])
def test_round_keeps_the_samples_that_agree_most_with_the_mean_gradient(balanced, pick):
    # D = 3 classes x (3 + 1) = 12 <= sketch_size: the sketch spans the whole
    # gradient space, so the scores are the exact cosines.
    data, model = _data(), _model()
    selector = SageSelector(0.2, sketch_size=16, stratify=balanced, pick=pick)
    graft = Graft(model, data, selector=selector, batch_size=64, seed=3)
    graft.refresh(0)
    chosen = graft.state_dict()["selected_indices"].tolist()
    assert len(chosen) == len(set(chosen)) == 60
    X, y = data.tensors
    assert set(chosen) == _oracle(model, X, y, 0.2, balanced, pick)


def test_online_selection_is_the_round_within_the_batch():
    data, model = _data(n=90), _model()
    X, y = data.tensors
    sel = SageSelector(0.3, sketch_size=16).select(model, X, y)
    assert set(sel.indices.tolist()) == _oracle(model, X, y, 0.3, True, "spread")
    assert torch.all(sel.weights == 1)


def test_sketch_memory_does_not_grow_with_the_number_of_samples(monkeypatch):
    sizes = []

    class Recording(selectors.FrequentDirectionsSketch):
        def update(self, X):
            super().update(X)
            sizes.append(tuple(self._buffer.shape))
            return self

    monkeypatch.setattr(selectors, "FrequentDirectionsSketch", Recording)
    model = _model(hidden=8)
    for n in (200, 2000):
        sizes.clear()
        graft = Graft(model, _data(n=n), selector=SageSelector(0.1, sketch_size=4))
        graft.refresh(0)
        assert set(sizes) == {(8, 3 * 9)}  # 2 * sketch_size rows, D columns
        assert len(sizes) == math.ceil(n / 128)


def test_class_balance_follows_the_class_counts():
    data, model = _data(n=400), _model()
    graft = Graft(model, data, selector=SageSelector(0.1), batch_size=50)
    graft.refresh(0)
    _, y = data.tensors
    chosen = graft.state_dict()["selected_indices"]
    counts = torch.bincount(y, minlength=3)
    assert torch.bincount(y[chosen], minlength=3).tolist() == (
        allocate(counts.tolist(), 40).tolist()
    )


def test_a_failed_round_keeps_the_previous_selection():
    data, model = _data(), _model()
    graft = Graft(model, data, selector=SageSelector(0.2), batch_size=64)
    graft.refresh(0)
    before = graft.state_dict()["selected_indices"].clone()
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="previous selection and the model"):
        graft.refresh(1)
    assert torch.equal(graft.state_dict()["selected_indices"], before)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"sketch_size": 0}, r"sketch_size \(0\)"),
        ({"sketch_size": 2.5}, r"sketch_size must be a positive integer, got float"),
        ({"features": "embedding"}, r"features \('embedding'\)"),
        ({"pick": "bottom"}, r"pick \('bottom'\) must be 'spread' or 'top'"),
    ],
)
def test_bad_options_name_the_parameter(options, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        SageSelector(0.1, **options)


def test_compressed_gradient_features_plug_in():
    from graft import FactGraSS

    data, model = _data(n=200), _model(hidden=8)
    compressor = FactGraSS(model, proj_dim=64, seed=0)
    calls = []

    def features(m, x, t):
        calls.append(len(t))
        return compressor.per_sample_gradients(x, t)

    graft = Graft(model, data, selector=SageSelector(0.1, features=features))
    graft.refresh(0)
    chosen = graft.state_dict()["selected_indices"].tolist()
    assert len(chosen) == len(set(chosen)) == 20
    assert sum(calls) == 2 * 200  # two passes over the data


def test_graft_leverage_probabilities_match_an_svd_oracle():
    from graft.selection._selectors import _leverage_probabilities

    rng = np.random.default_rng(0)
    F = rng.standard_normal((40, 7)) @ np.diag([5, 4, 3, 2, 1, 0.5, 0.1])
    U = np.linalg.svd(F - F.mean(axis=0), full_matrices=False)[0][:, :3]
    expected = (U**2).sum(axis=1) / 3  # leverage of the top 3 directions, sum 1
    p = _leverage_probabilities(torch.as_tensor(F), 3).numpy()
    np.testing.assert_allclose(p, expected, rtol=1e-8)


def test_graft_online_select_draws_the_budget_from_the_pool_with_mean_one_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(100, 6), torch.randint(0, 3, (100,))
    selector = GraftSelector(0.1, pool=2)
    sel = selector.select(model, x, y, torch.Generator().manual_seed(1))
    again = selector.select(model, x, y, torch.Generator().manual_seed(1))
    pool = torch.randperm(100, generator=torch.Generator().manual_seed(1))[:20]
    assert len(sel.indices) == 10 and len(set(sel.indices.tolist())) == 10
    assert set(sel.indices.tolist()) <= set(pool.tolist())  # picks from the pool
    assert float(sel.weights.mean()) == pytest.approx(1.0) and bool(
        (sel.weights > 0).all()
    )
    assert torch.equal(sel.indices, again.indices)  # the generator decides
