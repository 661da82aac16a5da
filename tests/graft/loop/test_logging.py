"""on_round and TensorBoardLogger: called once per selection, with its figures."""

import importlib.util

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from graft import Graft, GraftSelector, RandomSelector, TensorBoardLogger  # noqa: E402


def _data(n=60):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.arange(n) % 3)


def _train(graft, epochs):
    opt = torch.optim.SGD(graft.model.parameters(), lr=0.1)
    for epoch in range(epochs):
        graft.set_epoch(epoch)
        for batch in graft.dataloader():
            x, y = batch.data
            loss = graft.update(
                batch, F.cross_entropy(graft.model(x), y, reduction="none")
            )
            opt.zero_grad()
            loss.backward()
            opt.step()


@pytest.mark.parametrize(
    ("mode", "selector", "expected"),
    [
        ("refresh", RandomSelector(0.5), [0, 2, 4]),  # the rounds, refresh_every=2
        ("online", GraftSelector(0.5), [0, 1, 2, 3, 4]),  # every epoch selects
        ("refresh", None, []),  # all data: nothing selected
    ],
)
def test_on_round_hears_of_every_selection_once(mode, selector, expected):
    seen = []
    graft = Graft(torch.nn.Linear(4, 3), _data(), selector=selector, mode=mode,
                  refresh_every=2, batch_size=20, on_round=seen.append)  # fmt: skip
    _train(graft, 5)
    assert [e["epoch"] for e in seen] == expected
    for entry in seen:  # the figures of the history, as they were then
        assert entry == next(h for h in graft.history if h["epoch"] == entry["epoch"])
        assert 0 < entry["fraction"] <= 0.5


def test_tensorboard_logger_writes_the_figures_of_each_round():
    written = []

    class Writer:
        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

    logger = TensorBoardLogger(writer=Writer())
    graft = Graft(torch.nn.Linear(4, 3), _data(), selector=RandomSelector(0.5),
                  refresh_every=2, on_round=logger)  # fmt: skip
    _train(graft, 3)
    steps = {step for _, _, step in written}
    assert steps == {0, 2}
    assert ("graft/fraction", 0.5, 2) in written and ("graft/samples", 30, 0) in written


def test_bad_callbacks_are_named():
    with pytest.raises(TypeError, match="on_round must be callable"):
        Graft(torch.nn.Linear(4, 3), _data(), on_round="tensorboard")
    with pytest.raises(TypeError, match="writer must have add_scalar"):
        TensorBoardLogger(writer=object())
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            TensorBoardLogger("runs")
