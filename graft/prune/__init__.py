"""MaxVol channel pruning of trained torch models.

A layer keeps the channels whose activations span the others best (Fast
MaxVol on the activations' triangular factor) and the next layer absorbs the
dropped ones (the interpolative or least-squares fold). It needs only
:mod:`maxvol_kit` and torch: no selector, record or training loop.
:func:`prune_model` prunes whole models on torch-pruning's dependency graph
(the ``prune`` extra, imported when called); :func:`prune_channels` one pair.
"""

from graft.prune._channels import collect_activations, prune_channels
from graft.prune._groups import prune_model, recalibrate_batchnorm

__all__ = [
    "collect_activations",
    "prune_channels",
    "prune_model",
    "recalibrate_batchnorm",
]
