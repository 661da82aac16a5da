"""graft: data selection inside the PyTorch training loop, built on maxvol_kit.

The library, by concern (each subpackage's docstring lists its modules):

- :mod:`graft.loop`: :class:`Graft` selects inside the user's own loop: its
  batch sampler (:class:`GraftBatchSampler`) and loader (:class:`GraftLoader`)
  serve, epoch by epoch, the samples a selector chose as :class:`GraftBatch`
  es (the collated data, loss weights, dataset indices); ``Graft.update``
  returns the weighted mean loss and keeps the per-sample record
  (:class:`SampleRecord`).
- :mod:`graft.selection`: the :class:`~graft.selection.Selector` interface
  and the selectors, :class:`GraftSelector` (GRAFT: Fast MaxVol on the
  record's embeddings, gradient-aware rank), :class:`InfoBatchSelector`
  (soft pruning of well-learned samples), :class:`SageSelector` (gradient
  agreement with a Frequent Directions sketch) and :class:`RandomSelector`.
- :mod:`graft.grass`: :class:`FactGraSS` and :class:`GraSS` compress
  per-sample gradients (sparse masks and sparse JL maps); :func:`attribute`
  scores training samples by their compressed gradients' similarity to test
  samples.
- :mod:`graft.prune`: MaxVol channel pruning (:func:`prune_model`,
  :func:`recalibrate_batchnorm`,
  :func:`prune_channels`).
- :mod:`graft.lightning`: the Lightning callback (imports Lightning).

Apart from the library, and not imported by it: :mod:`graft.harness`, the
experiment harness of ``graft run`` (datasets, models, reports, the command
line).
"""

from graft.grass import FactGraSS, GraSS, attribute
from graft.loop import (
    Graft,
    GraftBatch,
    GraftBatchSampler,
    GraftLoader,
    TensorBoardLogger,
    train_epoch,
)
from graft.prune import (
    collect_activations,
    prune_channels,
    prune_model,
    recalibrate_batchnorm,
)
from graft.selection import (
    GraftSelector,
    InfoBatchSelector,
    RandomSelector,
    SageSelector,
    SampleRecord,
    Selection,
    Selector,
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
    "Selector",
    "TensorBoardLogger",
    "attribute",
    "collect_activations",
    "prune_channels",
    "prune_model",
    "recalibrate_batchnorm",
    "train_epoch",
]
