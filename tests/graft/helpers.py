"""Helpers shared by the graft tests."""


def full_batch_fit(model, x, y, *, steps, lr):
    """Full-batch Adam on cross-entropy; the model in eval mode, no ``.grad`` left."""
    from graft.harness import fit

    return fit(model, x, y, steps=steps, lr=lr)


def per_batch_graft(*args, **kwargs):
    """``GraftSelector`` whose refresh rounds pass over the data batch by batch.

    Its ``select`` (GRAFT's online selection) then runs in every round, which
    exercises the wrapper's per-batch round path.
    """
    from graft import GraftSelector
    from graft.selection import batchwise_round

    class PerBatchGraft(GraftSelector):
        reads = "data"
        select_round = batchwise_round

    return PerBatchGraft(*args, **kwargs)


def record_round(record, epoch, generator):
    """The Round of a selector that reads only the record (no model, no data)."""
    from graft.selection import Round

    def no_data():
        raise AssertionError("a round from the record loaded data")

    return Round(epoch, record, generator, model=None, batches=no_data)


class EveryOther:
    """A record selector of the samples 0, 2, 4, ... with one weight for all."""

    fraction = 0.5
    reads = "record"
    wants_embeddings = False
    layer = None
    rounds_every_epoch = False

    def __init__(self, weight=1.0):
        self.weight = weight

    def select_round(self, round):
        import torch

        from graft.selection import RoundSelection

        n = round.record.n_samples
        chosen = torch.arange(0, n, 2)
        return RoundSelection(chosen, torch.full((len(chosen),), self.weight), [1])
