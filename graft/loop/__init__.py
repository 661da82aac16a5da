"""Graft in the user's own training loop: batches, weights and the per-sample record.

- :mod:`graft.loop._graft`: :class:`Graft`, which runs the selection rounds
  (``set_epoch``), weights the losses and keeps the record (``update``), and
  saves and restores all of it (``state_dict``).
- :mod:`graft.loop._batches`: what it serves, :class:`GraftBatchSampler`,
  :class:`GraftLoader` and :class:`GraftBatch`, and :func:`train_epoch`.
- :mod:`graft._format`: where inputs, targets and logits are in a batch.
- :mod:`graft.loop._logging`: :class:`TensorBoardLogger`, an ``on_round``
  callback.
- :mod:`graft.loop._processes`: seeded random streams and torch.distributed.
- :mod:`graft.loop._checks`: the checks of arguments, batches and states.
"""

from graft.loop._batches import GraftBatch, GraftBatchSampler, GraftLoader, train_epoch
from graft.loop._graft import Graft
from graft.loop._logging import TensorBoardLogger

__all__ = [
    "Graft",
    "GraftBatch",
    "GraftBatchSampler",
    "GraftLoader",
    "TensorBoardLogger",
    "train_epoch",
]
