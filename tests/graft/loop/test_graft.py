"""Graft: exact indices, weights, accounting, failure safety (resume: test_loop)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from graft import Graft, GraftSelector, RandomSelector  # noqa: E402
from graft.harness import make_model  # noqa: E402
from tests.graft.helpers import per_batch_graft  # noqa: E402


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
        def select_round(self, round):
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
    graft = Graft(model, _data(), selector=per_batch_graft(0.3))
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
    with pytest.raises(ValueError, match="the state was saved with seed=1"):
        Graft(_model(), _data(), seed=2).load_state_dict(
            Graft(_model(), _data(), seed=1).state_dict()
        )


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_models(name):
    model = make_model(name, (1, 8, 8), 10)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"model \('vit'\) must be one of"):
        make_model("vit", (1, 8, 8), 10)
    assert np.isfinite(sum(float(p.sum()) for p in model.parameters()))


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
        ({"layer": 5}, "layer must be the name of an nn.Linear"),
        ({"pool": "2"}, r"pool must be a number in \[1, inf\)"),
        ({"eps": None}, "eps must be a number"),
    ):
        with pytest.raises(TypeError, match=match):
            GraftSelector(0.3, **options)
    with pytest.raises(ValueError, match=r"mode \('offline'\) must be"):
        Graft(model, data, mode="offline")
