"""Per-sample gradient compression (GraSS, FactGraSS) and data attribution.

- :mod:`graft.grass._projections`: the random maps (coordinate mask, sparse
  JL, Gaussian), drawn on the host from a seed.
- :mod:`graft.grass._compressors`: :class:`GraSS` (mask and project the full
  per-sample gradient) and :class:`FactGraSS` (project the factors of each
  layer's gradient, never forming it).
- :mod:`graft.grass._attribution`: :func:`attribute`, training samples scored
  by their compressed gradients' similarity to test samples.
"""

from graft.grass._attribution import attribute
from graft.grass._compressors import FactGraSS, GraSS

__all__ = ["FactGraSS", "GraSS", "attribute"]
