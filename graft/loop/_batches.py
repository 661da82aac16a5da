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

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from graft import Graft
    >>> data = TensorDataset(torch.randn(10, 3), torch.arange(10) % 2)
    >>> graft = Graft(torch.nn.Linear(3, 2), data, batch_size=4)
    >>> graft.set_epoch(0)
    >>> (x, y), weights, indices = next(iter(graft.dataloader()))
    >>> x.shape, weights.tolist(), len(indices)
    (torch.Size([4, 3]), [1.0, 1.0, 1.0, 1.0], 4)
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

    Parameters
    ----------
    graft : Graft
        The wrapper whose selection it serves (``graft.batch_sampler``).

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from graft import Graft, RandomSelector
    >>> data = TensorDataset(torch.randn(20, 3), torch.arange(20) % 2)
    >>> graft = Graft(torch.nn.Linear(3, 2), data, selector=RandomSelector(0.5),
    ...               batch_size=5)
    >>> graft.set_epoch(0)
    >>> loader = DataLoader(data, batch_sampler=graft.batch_sampler)
    >>> len(loader), sum(len(y) for _, y in loader)
    (2, 10)
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

    Parameters
    ----------
    graft : Graft
        The wrapper whose batches it loads.
    dataloader : torch.utils.data.DataLoader
        A loader over ``graft.batch_sampler`` of ``(rows, dataset indices)``.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from graft import Graft, GraftLoader
    >>> data = TensorDataset(torch.randn(8, 3), torch.arange(8) % 2)
    >>> graft = Graft(torch.nn.Linear(3, 2), data, batch_size=4)
    >>> loader = graft.dataloader()
    >>> isinstance(loader, GraftLoader), len(loader), loader.batch_size
    (True, 2, 4)
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

    Parameters
    ----------
    graft : Graft
    optimizer : torch.optim.Optimizer
        Steps ``graft.model``'s parameters.
    epoch : int
    loss_fn : callable or None
        ``loss_fn(logits, targets) -> Tensor (n,)`` of per-sample losses.

    Returns
    -------
    float
        The mean training loss over the epoch's samples.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from graft import Graft, RandomSelector, train_epoch
    >>> data = TensorDataset(torch.randn(64, 4), torch.arange(64) % 2)
    >>> model = torch.nn.Linear(4, 2)
    >>> graft = Graft(model, data, selector=RandomSelector(0.5), batch_size=16)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> loss = train_epoch(graft, opt, epoch=0)
    >>> graft.fraction_achieved()
    0.5
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
