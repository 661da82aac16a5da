"""graft: data selection inside the PyTorch training loop, built on maxvol_kit.

- :class:`Graft` wraps a model and a dataset and serves, epoch by epoch, the
  samples a selector chose, with their loss weights and dataset indices.
- :class:`GraftSelector` (GRAFT: Fast MaxVol on low-rank batch coordinates,
  gradient-aware rank) and :class:`RandomSelector` share one interface.
- ``graft run`` (:mod:`graft.cli`) compares selectors on an offline dataset.
"""

from graft._selectors import GraftSelector, RandomSelector, Selection
from graft._wrapper import Graft, GraftBatch, train_epoch

__all__ = [
    "Graft",
    "GraftBatch",
    "GraftSelector",
    "RandomSelector",
    "Selection",
    "train_epoch",
]
