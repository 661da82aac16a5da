"""The batches Graft serves: the batch sampler, the loader and its batch type."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch.utils.data import Sampler

from graft._format import to_device

if TYPE_CHECKING:
    from graft.loop._graft import Graft

__all__ = ["GraftBatch", "GraftBatchSampler", "GraftLoader", "train_epoch"]


class GraftBatch(NamedTuple):
    """A training batch: ``loss = graft.update(batch, per_sample_losses)``.

    A named tuple, so that ``data, weights, indices = batch`` unpacks it and
    Lightning moves it between devices.

    Attributes
    ----------
    data : any
        What the collate function made of the samples' rows.
    weights : Tensor of shape (batch_size,)
        Their loss weights (non-negative; ones unless the selector weights
        its picks).
    indices : Tensor of shape (batch_size,)
        Their indices in the training dataset.
    """

    data: Any
    weights: torch.Tensor
    indices: torch.Tensor


class GraftBatchSampler(Sampler):
    """The dataset indices of each batch of the current epoch.

    ``DataLoader(dataset, batch_sampler=graft.batch_sampler)`` trains on
    what the selector chose. ``set_epoch(epoch)`` is ``graft.set_epoch``;
    ``len()`` is the number of batches of the current epoch (in refresh
    mode it is known once ``set_epoch`` has made the epoch's round).
    """

    def __init__(self, graft):
        self._graft = graft

    @property
    def sampler(self):
        # Lightning sets epochs through ``batch_sampler.sampler.set_epoch``.
        return self

    def set_epoch(self, epoch):
        """``graft.set_epoch(epoch)``."""
        self._graft.set_epoch(epoch)

    def __iter__(self):
        return self._graft._epoch_batches()

    def __len__(self):
        return self._graft._num_batches()


class GraftLoader:
    """``graft.dataloader()``: a DataLoader of :class:`GraftBatch` es.

    The DataLoader (``.dataloader``) loads the rows of the batch sampler's
    batches with their dataset indices; the weights are attached in the main
    process from the current selection, so they are exact with any number of
    workers.
    """

    def __init__(self, graft, dataloader):
        self.graft = graft
        self.dataloader = dataloader

    @property
    def batch_sampler(self):
        """The graft's :class:`GraftBatchSampler`."""
        return self.dataloader.batch_sampler

    @property
    def dataset(self):
        """The user's dataset."""
        return self.graft.dataset

    @property
    def batch_size(self):
        """Samples per batch before selection (``Graft(batch_size=...)``)."""
        return self.graft.batch_size

    def __len__(self):
        return len(self.dataloader)

    def __iter__(self):
        for data, indices in self.dataloader:
            # Read per batch: online selection fills the weights as it goes.
            yield GraftBatch(data, self.graft._weight_of[indices.cpu()], indices)


def train_epoch(
    graft: Graft,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    loss_fn: Callable | None = None,
) -> float:
    """One epoch of weighted training with ``graft``; the mean loss.

    The loop of docs/graft.md: ``graft.set_epoch(epoch)``, then for every
    batch of ``graft.dataloader()`` a forward pass on its inputs,
    ``loss_fn(logits, targets)`` (per-sample losses; default cross-entropy
    with ``reduction="none"``), ``graft.update`` and an optimizer step.
    Inputs, targets and logits are found as ``Graft(inputs=, targets=,
    outputs=)`` say.
    """
    loss_fn = loss_fn or (
        lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none")
    )
    model, fmt, device = graft.model, graft.format, graft._device()
    model.train()
    total, count = 0.0, 0
    for batch in graft.batches(epoch):
        data = to_device(batch.data, device)
        logits = fmt.logits(fmt.call(model, fmt.inputs(data)))
        loss = graft.update(batch, loss_fn(logits, fmt.targets(data)))
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch}; lower the learning rate or check "
                "the inputs."
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(batch.indices)
        count += len(batch.indices)
    return total / max(count, 1)
