"""Graft: exact indices, weights, accounting, failure safety (resume: test_loop)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from graft import Graft, GraftSelector, RandomSelector  # noqa: E402
from graft._models import make_model  # noqa: E402


def _data(n=300, d=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    W = torch.randn(d, classes, generator=g)
    y = (X @ W).argmax(dim=1)
    return TensorDataset(X, y)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("mode", ["refresh", "online"])
@pytest.mark.parametrize("selector", [RandomSelector(0.3), GraftSelector(0.3)])
def test_batches_carry_the_dataset_indices_of_their_samples(mode, selector):
    data = _data()
    graft = Graft(_model(), data, selector=selector, batch_size=32, mode=mode, seed=1)
    seen = []
    for batch in graft.batches(0):
        X, y = data.tensors
        torch.testing.assert_close(batch.data[0], X[batch.indices])
        torch.testing.assert_close(batch.data[1], y[batch.indices])
        assert batch.weights.shape == batch.data[1].shape
        assert torch.all(batch.weights >= 0)
        seen.append(batch.indices)
    seen = torch.cat(seen)
    assert len(set(seen.tolist())) == len(seen)  # no sample twice in an epoch
    assert graft.history[-1]["samples"] == len(seen)
    assert graft.history[-1]["fraction"] == pytest.approx(len(seen) / len(data))
    assert 0 < graft.history[-1]["fraction"] <= 0.3 + 1e-9


def test_indices_stay_exact_with_workers():
    data = _data(120)
    graft = Graft(
        _model(), data, selector=RandomSelector(0.5), batch_size=16, num_workers=2
    )
    for batch in graft.batches(0):
        torch.testing.assert_close(batch.data[0], data.tensors[0][batch.indices])


def test_full_data_without_a_selector():
    graft = Graft(_model(), _data(), batch_size=50)
    total = sum(len(b.indices) for b in graft.batches(0))
    assert total == 300 and graft.fraction_achieved() == 1.0


def test_refresh_mode_reselects_every_refresh_every_epochs():
    graft = Graft(_model(), _data(), selector=RandomSelector(0.3), refresh_every=2)
    rounds = []
    for epoch in range(5):
        for _ in graft.batches(epoch):
            pass
        rounds.append(graft._selected_at)
    assert rounds == [0, 0, 2, 2, 4]


def test_same_seed_same_selection_and_different_seed_differs():
    a = [
        b.indices
        for b in Graft(_model(), _data(), selector=RandomSelector(0.3), seed=3).batches(
            0
        )
    ]
    b = [
        b.indices
        for b in Graft(_model(), _data(), selector=RandomSelector(0.3), seed=3).batches(
            0
        )
    ]
    c = [
        b.indices
        for b in Graft(_model(), _data(), selector=RandomSelector(0.3), seed=4).batches(
            0
        )
    ]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=False))


def test_failed_round_keeps_the_previous_selection_and_the_model():
    class Failing(RandomSelector):
        def select_from_record(self, record, epoch, generator):
            raise ValueError("non-finite features in the batch")

    graft = Graft(_model(), _data(), selector=RandomSelector(0.3), refresh_every=1)
    list(graft.batches(0))
    before = graft._selection
    weights = [p.detach().clone() for p in graft.model.parameters()]
    graft.selector = Failing(0.3)
    with pytest.raises(
        ValueError, match=r"selection round at epoch 1 failed.*unchanged"
    ):
        list(graft.batches(1))
    assert graft._selection is before and graft._selected_at == 0
    for p, w in zip(graft.model.parameters(), weights, strict=True):
        assert torch.equal(p, w)


def test_nan_model_output_is_a_clear_selection_error():
    model = _model()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    graft = Graft(model, _data(), selector=GraftSelector(0.3, scope="batch"))
    with pytest.raises(ValueError, match="non-finite features"):
        list(graft.batches(0))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"mode \('every'\) must be"):
        Graft(_model(), _data(), mode="every")
    with pytest.raises(ValueError, match=r"batch_size \(0\) must be a positive"):
        Graft(_model(), _data(), batch_size=0)
    with pytest.raises(
        ValueError, match=r"fraction \(1.5\) must be a finite number in \(0, 1\]"
    ):
        RandomSelector(1.5)
    with pytest.raises(ValueError, match=r"features \('pixels'\) must be"):
        GraftSelector(0.3, features="pixels")
    with pytest.raises(ValueError, match="the state was saved with seed=1"):
        Graft(_model(), _data(), seed=2).load_state_dict(
            Graft(_model(), _data(), seed=1).state_dict()
        )


def test_graft_selector_uses_the_maxvol_prefix_and_the_rank_rule():
    from graft._features import last_layer_gradients, penultimate
    from graft._rank import choose_rank, prefix_residuals
    from graft._selectors import _pick_order

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


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_models(name):
    model = make_model(name, (1, 8, 8), 10)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"model \('vit'\) must be one of"):
        make_model("vit", (1, 8, 8), 10)
    assert np.isfinite(sum(float(p.sum()) for p in model.parameters()))


def test_graft_selector_weights_are_the_least_squares_weights():
    from graft._features import last_layer_gradients, penultimate
    from graft._rank import subset_weights

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


@pytest.mark.filterwarnings("ignore:the loader of epoch")  # replays epochs
@pytest.mark.parametrize("mode", ["refresh", "online"])
def test_warm_start_draws_random_subsets_then_selects(mode):
    data, model = _data(), _model()
    options = {"batch_size": 32, "refresh_every": 5, "mode": mode, "seed": 2}
    warm = Graft(model, data, selector=GraftSelector(0.3), warm_start=2, **options)
    rand = Graft(model, data, selector=RandomSelector(0.3), **options)
    graft = Graft(model, data, selector=GraftSelector(0.3), **options)

    def served(g, epoch):
        return [b.indices.tolist() for b in g.batches(epoch)]

    for epoch in range(4):
        expected = rand if epoch < 2 else graft
        if mode == "refresh" and epoch == 2:
            graft.refresh(2)  # the first selection round comes at the warm start
        if mode == "online" or epoch in (0, 2):
            assert served(warm, epoch) == served(expected, epoch)
        else:
            ours, theirs = served(warm, epoch), served(expected, epoch - 1)
            assert sorted(i for b in ours for i in b) == sorted(
                i for b in theirs for i in b
            )
    if mode == "refresh":
        rounds = [h["epoch"] for h in warm.history if h["ranks"]]
        assert rounds == [0, 2]
    with pytest.raises(ValueError, match=r"warm_start \(-1\) must be an integer >= 0"):
        Graft(model, data, selector=GraftSelector(0.3), warm_start=-1)


def test_numpy_scalars_are_numbers_and_wrong_types_are_type_errors():
    from graft import InfoBatchSelector, SageSelector

    data = TensorDataset(torch.randn(40, 4), torch.randint(0, 2, (40,)))
    graft = Graft(torch.nn.Linear(4, 2), data, batch_size=np.int64(8), seed=np.uint8(3))
    assert graft.batch_size == 8 and type(graft.batch_size) is int
    assert GraftSelector(
        np.float32(0.3), eps=np.float64(0.1)
    ).fraction == pytest.approx(0.3)
    assert InfoBatchSelector(np.int32(8), prune_ratio=np.float32(0.5)).epochs == 8
    assert SageSelector(np.float16(0.5), sketch_size=np.int16(16)).fraction == 0.5
    for bad in ("8", 8.0, None, True):
        with pytest.raises(TypeError, match="batch_size must be a positive integer"):
            Graft(torch.nn.Linear(4, 2), data, batch_size=bad)
    with pytest.raises(TypeError, match="fraction must be a number"):
        RandomSelector("0.3")
    with pytest.raises(ValueError, match=r"eps \(nan\) must be a finite number"):
        GraftSelector(0.3, eps=float("nan"))


def test_wrong_types_of_options_are_type_errors():
    data = TensorDataset(torch.randn(40, 4), torch.randint(0, 2, (40,)))
    model = torch.nn.Linear(4, 2)
    for options, match in (
        ({"mode": None}, "mode must be 'refresh' or 'online', got NoneType"),
        ({"device": 5.5}, "device must be a str or torch.device"),
        ({"progress": "yes"}, "progress must be True or False"),
        ({"drop_last": 1}, "drop_last must be True or False"),
    ):
        with pytest.raises(TypeError, match=match):
            Graft(model, data, **options)
    for options, match in (
        ({"scope": None}, "scope must be 'round' or 'batch'"),
        ({"features": None}, "features must be 'embedding'"),
        ({"layer": 5}, "layer must be the name of an nn.Linear"),
        ({"stratify": "no"}, "stratify must be True or False"),
    ):
        with pytest.raises(TypeError, match=match):
            GraftSelector(0.3, **options)
    with pytest.raises(ValueError, match=r"mode \('offline'\) must be"):
        Graft(model, data, mode="offline")
