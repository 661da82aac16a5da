"""graft: data selection inside the PyTorch training loop, built on maxvol_kit.

- :class:`Graft` selects inside the user's own loop: its batch sampler
  (:class:`GraftBatchSampler`) and loader (:class:`GraftLoader`) serve, epoch
  by epoch, the samples a selector chose as :class:`GraftBatch` es (the
  collated data, loss weights, dataset indices); ``Graft.update`` returns the
  weighted mean loss and keeps the per-sample record (:class:`SampleRecord`).
- :class:`GraftSelector` (GRAFT: Fast MaxVol on low-rank batch coordinates,
  gradient-aware rank), :class:`InfoBatchSelector` (soft pruning of
  well-learned samples), :class:`SageSelector` (gradient agreement with a
  Frequent Directions sketch) and :class:`RandomSelector` share one interface;
  the rounds of GRAFT, InfoBatch and random read the per-sample record only.
- :class:`FactGraSS` and :class:`GraSS` compress per-sample gradients (sparse
  masks and sparse JL maps); :func:`attribute` scores training samples by
  their compressed gradients' similarity to test samples.
- ``graft run`` (:mod:`graft.cli`) compares selectors on an offline dataset.
"""

from graft._attribution import attribute
from graft._compress import FactGraSS, GraSS
from graft._pruning import collect_activations, prune_channels, prune_model
from graft._record import SampleRecord
from graft._round import InfoBatchSelector
from graft._selectors import GraftSelector, RandomSelector, SageSelector, Selection
from graft._wrapper import (
    Graft,
    GraftBatch,
    GraftBatchSampler,
    GraftLoader,
    train_epoch,
)

__all__ = [
    "FactGraSS",
    "GraSS",
    "Graft",
    "GraftBatch",
    "GraftBatchSampler",
    "GraftLoader",
    "GraftSelector",
    "InfoBatchSelector",
    "RandomSelector",
    "SageSelector",
    "SampleRecord",
    "Selection",
    "attribute",
    "collect_activations",
    "prune_channels",
    "prune_model",
    "train_epoch",
]
