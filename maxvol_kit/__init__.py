"""maxvol_kit: fast, certified maximum-volume submatrices.

Square MaxVol (:func:`maxvol`), greedy-volume Fast MaxVol (:func:`fast_maxvol`),
rectangular MaxVol (:func:`rect_maxvol`) and cross / CUR approximation
(:func:`skeleton`), and :func:`tournament_maxvol` for tall matrices stored by
blocks of rows (Dask arrays, ``.npy`` files). Every function checks its input,
never returns duplicate rows, and reports the certificate of its answer
(:class:`MaxVolResult`).
"""

from maxvol_kit._batched import maxvol_batched
from maxvol_kit._cross import SkeletonResult, skeleton
from maxvol_kit._distributed import tournament_maxvol  # imports Dask on use only
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
    "tournament_maxvol",
]

__version__ = "0.1.0.dev0"

# The scikit-learn estimators load on first use, so that the functions need
# only NumPy and SciPy.
_ESTIMATORS = (
    "FrequentDirections",
    "MaxVolFeatureSelector",
    "MaxVolSampler",
    "RandomizedLowRank",
    "SubsetFitEstimator",
)
__all__ += list(_ESTIMATORS)


def __getattr__(name):
    if name in _ESTIMATORS:
        try:
            from maxvol_kit import _estimators
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                f"maxvol_kit.{name} needs scikit-learn: pip install "
                "'maxvol-kit[sklearn]'"
            ) from exc
        return getattr(_estimators, name)
    raise AttributeError(f"module 'maxvol_kit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
