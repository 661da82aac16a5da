"""graft: data selection inside the PyTorch training loop, built on maxvol_kit.

- :class:`Graft` wraps a model and a dataset and serves, epoch by epoch, the
  samples a selector chose, with their loss weights and dataset indices.
- :class:`GraftSelector` (GRAFT: Fast MaxVol on low-rank batch coordinates,
  gradient-aware rank), :class:`SageSelector` (gradient agreement with a
  Frequent Directions sketch) and :class:`RandomSelector` share one interface.
- :class:`FactGraSS` and :class:`GraSS` compress per-sample gradients (sparse
  masks and sparse JL maps); :func:`attribute` scores training samples by
  their compressed gradients' similarity to test samples.
- ``graft run`` (:mod:`graft.cli`) compares selectors on an offline dataset.
"""

from graft._attribution import attribute
from graft._compress import FactGraSS, GraSS
from graft._pruning import collect_activations, prune_channels, prune_model
from graft._selectors import GraftSelector, RandomSelector, SageSelector, Selection
from graft._wrapper import Graft, GraftBatch, train_epoch

__all__ = [
    "FactGraSS",
    "GraSS",
    "Graft",
    "GraftBatch",
    "GraftSelector",
    "RandomSelector",
    "SageSelector",
    "Selection",
    "attribute",
    "collect_activations",
    "prune_channels",
    "prune_model",
    "train_epoch",
]
