"""maxvol_kit: fast, certified maximum-volume submatrices.

Square MaxVol (:func:`maxvol`), greedy-volume Fast MaxVol (:func:`fast_maxvol`),
rectangular MaxVol (:func:`rect_maxvol`) and cross / CUR approximation
(:func:`skeleton`). Every function checks its input, never returns duplicate
rows, and reports the certificate of its answer (:class:`MaxVolResult`).
"""

from maxvol_kit._batched import maxvol_batched
from maxvol_kit._cross import SkeletonResult, skeleton
from maxvol_kit._maxvol import MaxVolResult, fast_maxvol, maxvol
from maxvol_kit._rect import rect_maxvol
from maxvol_kit._validation import ConvergenceWarning

__all__ = [
    "ConvergenceWarning",
    "MaxVolResult",
    "SkeletonResult",
    "fast_maxvol",
    "maxvol",
    "maxvol_batched",
    "rect_maxvol",
    "skeleton",
]

__version__ = "0.1.0.dev0"
