"""Helpers shared by the graft tests."""

import torch
from torch import nn


def full_batch_fit(model, x, y, *, steps, lr):
    """Full-batch Adam on cross-entropy; the model in eval mode, no ``.grad`` left."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


def per_batch_graft(*args, **kwargs):
    """``GraftSelector`` whose refresh rounds pass over the data batch by batch.

    Its ``select`` (GRAFT's online selection) then runs in every round, which
    exercises the wrapper's per-batch round path.
    """
    from graft import GraftSelector

    class PerBatchGraft(GraftSelector):
        from_record = False

    return PerBatchGraft(*args, **kwargs)
