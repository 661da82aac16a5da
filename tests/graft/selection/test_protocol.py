"""The Selector protocol: the built-in selectors, custom ones, and the checks."""

import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import TensorDataset  # noqa: E402

from graft import (  # noqa: E402
    Graft,
    GraftSelector,
    InfoBatchSelector,
    RandomSelector,
    SageSelector,
)
from graft.selection import (  # noqa: E402
    BatchSelector,
    Round,
    Selection,
    Selector,
    batchwise_round,
    check_selector,
)
from tests.graft.helpers import EveryOther  # noqa: E402

BUILT_IN = [
    RandomSelector(0.3),
    GraftSelector(0.3),
    SageSelector(0.3),
    InfoBatchSelector(8),
]


def _data(n=60):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.arange(n) % 3)


class FirstOfEachBatch:
    """Keeps row 0 of every batch with weight 2: a per-batch selector."""

    fraction = 0.1
    reads = "data"
    wants_embeddings = False
    layer = None
    rounds_every_epoch = False
    select_round = batchwise_round

    def select(self, model, inputs, targets, generator):
        return Selection(torch.tensor([0]), torch.tensor([2.0]), 1)


@pytest.mark.parametrize("selector", BUILT_IN, ids=lambda s: type(s).__name__)
def test_every_built_in_selector_is_a_selector(selector):
    assert isinstance(selector, Selector)
    assert selector.reads in ("record", "data")
    # InfoBatch selects in rounds only; the others also select within a batch.
    assert isinstance(selector, BatchSelector) == (
        not isinstance(selector, InfoBatchSelector)
    )


def test_batchwise_round_is_a_loop_over_the_batches():
    batches = [
        (torch.randn(5, 4), torch.zeros(5, dtype=torch.long), torch.arange(k, k + 5))
        for k in (0, 10, 20)
    ]
    round_ = Round(0, None, torch.Generator(), None, lambda: iter(batches))
    chosen, weights, ranks = batchwise_round(FirstOfEachBatch(), round_)
    assert chosen.tolist() == [0, 10, 20]  # the first dataset index of each batch
    assert weights.tolist() == [2.0, 2.0, 2.0] and ranks == [1, 1, 1]


def test_a_custom_per_batch_selector_trains_on_its_picks():
    graft = Graft(torch.nn.Linear(4, 3), _data(), selector=FirstOfEachBatch(),
                  batch_size=20)  # fmt: skip
    graft.set_epoch(0)
    served = [b for b in graft.dataloader()]
    assert sorted(int(i) for b in served for i in b.indices) == sorted(
        graft.selected_indices.tolist()
    )
    assert len(graft.selected_indices) == 3  # one per batch of 20
    assert all(torch.all(b.weights == 2.0) for b in served)


def test_a_custom_record_selector_reads_no_data():
    class Evens(EveryOther):
        def select_round(self, round):
            assert round.epoch == 0 and round.record.loss is None
            return super().select_round(round)

    graft = Graft(torch.nn.Linear(4, 3), _data(), selector=Evens())
    graft.set_epoch(0)
    assert graft.selected_indices.tolist() == list(range(0, 60, 2))


def test_missing_members_are_named():
    class NoReads:
        fraction = 0.5
        wants_embeddings = False
        layer = None
        rounds_every_epoch = False

        def select_round(self, round):
            raise AssertionError

    with pytest.raises(TypeError, match=r"NoReads lacks reads \(the members"):
        check_selector(NoReads())
    with pytest.raises(TypeError, match="NoReads lacks reads"):
        Graft(torch.nn.Linear(4, 3), _data(), selector=NoReads())
    with pytest.raises(TypeError, match=r"instance such as RandomSelector\(0.3\)"):
        Graft(torch.nn.Linear(4, 3), _data(), selector=RandomSelector)


def test_online_mode_needs_select_and_reads_is_checked():
    with pytest.raises(ValueError, match=r"no per-batch select.*mode='refresh'"):
        Graft(
            torch.nn.Linear(4, 3),
            _data(),
            selector=InfoBatchSelector(8),
            mode="online",
        )
    odd = RandomSelector(0.3)
    odd.reads = "everything"
    with pytest.raises(ValueError, match=r"reads \('everything'\) must be"):
        check_selector(odd)
    check_selector(None)  # all data
