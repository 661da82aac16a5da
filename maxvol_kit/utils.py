"""Building blocks the selectors share: budgets, random states, coordinates, sketches.

The pieces of :mod:`maxvol_kit` that :mod:`graft` (and any code that builds a
selector) uses besides the MaxVol functions, with the same checks and
backends:

- :func:`allocate` splits a selection budget over groups (classes) in
  proportion to their size, largest remainder first.
- :func:`check_flag` accepts Python and NumPy bools only (TypeError for
  strings, None and numbers).
- :func:`check_random_state` turns ``None``, an int, a NumPy ``Generator``
  or ``RandomState`` into a NumPy ``Generator``.
- :func:`principal_coordinates` gives the principal coordinates ``U S`` of a
  centred matrix above roundoff (exact or randomized SVD, any backend).
- :class:`FrequentDirectionsSketch` keeps a ``(<= 2 ell) x d`` sketch of
  streamed rows (the engine of :class:`maxvol_kit.FrequentDirections`).
- :func:`sparse_sign_map` and :func:`gaussian_map` draw the random maps of
  sparse and Gaussian JL projections on the host, in one order, so a map
  applied by another library (graft's gradient compressors) is the same map
  as :func:`sparse_sign_projection` and :func:`dense_projection` apply.
- :func:`sparse_sign_projection` and :func:`dense_projection` project the
  columns of a matrix on any backend.
"""

from maxvol_kit._groups import allocate
from maxvol_kit._sketch import (
    FrequentDirectionsSketch,
    dense_projection,
    gaussian_map,
    principal_coordinates,
    sparse_sign_map,
    sparse_sign_projection,
)
from maxvol_kit._sketch import host_rng as check_random_state
from maxvol_kit._validation import check_flag

__all__ = [
    "FrequentDirectionsSketch",
    "allocate",
    "check_flag",
    "check_random_state",
    "dense_projection",
    "gaussian_map",
    "principal_coordinates",
    "sparse_sign_map",
    "sparse_sign_projection",
]
