"""The random maps of gradient compression, drawn on the host from a seed.

Every map is drawn once on the host (same seed, same map on CPU and GPU) and
moved to a device and dtype on first use there:

- :class:`RandomMask`: keep ``m`` of ``d`` coordinates, scaled by
  ``sqrt(d / m)`` so inner products stay unbiased;
- :class:`SparseJL`: coordinate ``j`` is added to bucket ``h(j)`` with sign
  ``s(j)`` (one +-1 per input coordinate, an ``index_add_``); the draws are
  :func:`maxvol_kit.utils.sparse_sign_map`'s, the variance of ``<P x, P y>``
  is at most ``2 ||x||^2 ||y||^2 / k``;
- :class:`GaussianProjection`: ``R / sqrt(k)``, the draws of
  :func:`maxvol_kit.utils.gaussian_map`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from graft._checks import check_count
from maxvol_kit.utils import check_random_state, gaussian_map, sparse_sign_map

__all__ = ["GaussianProjection", "RandomMask", "SparseJL"]

# Below this many entries the sparse JL is applied as a dense d x k sign
# matrix: one BLAS call beats index_add_ there, and the result is the same map.
_DENSE_ENTRIES = 1 << 20


def _check_dim(value, name, fix):
    """A positive int; ``fix`` (what the number is) joins the message."""
    try:
        return check_count(name, value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{exc} ({fix})") from None


class _DeviceCache:
    """Host arrays moved to a device and dtype once, on first use there."""

    def __init__(self):
        self._cache = {}

    def get(self, key, like, make):
        full = (key, like.device, like.dtype)
        if full not in self._cache:
            self._cache[full] = make().to(device=like.device, dtype=like.dtype)
        return self._cache[full]


class RandomMask:
    """Keep ``m`` of ``d`` coordinates, scaled by ``sqrt(d / m)`` (unbiased).

    Parameters
    ----------
    d : int
        Input dimension.
    m : int
        Coordinates kept, ``1 <= m``; ``m >= d`` keeps all (identity).
    random_state : int, numpy Generator or None
        Seed of the host draw.

    Examples
    --------
    >>> import torch
    >>> mask = RandomMask(10, 4, random_state=0)
    >>> mask(torch.ones(2, 10)).shape
    torch.Size([2, 4])
    """

    def __init__(self, d, m, *, random_state=None):
        self.d = _check_dim(d, "d", "pass the input dimension")
        m = _check_dim(m, "m", "pass the number of coordinates to keep")
        self.out_dim = min(m, self.d)
        keep = check_random_state(random_state).choice(
            self.d, self.out_dim, replace=False
        )
        self.indices = np.sort(keep)
        self.scale = math.sqrt(self.d / self.out_dim)
        self._device = _DeviceCache()

    def __call__(self, X):
        """Mask the last axis of ``X`` (..., d) -> (..., m)."""
        if self.out_dim == self.d:
            return X
        idx = self._device.get("idx", X, lambda: torch.as_tensor(self.indices))
        return X.index_select(-1, idx.long()) * self.scale


class SparseJL:
    """Sparse JL map ``R^d -> R^k``: ``Z[..., h(j)] += s(j) X[..., j]``.

    Buckets ``h`` and signs ``s`` are drawn on the host in the order of
    :func:`maxvol_kit.utils.sparse_sign_map`, so both give the same
    map for the same seed. ``E <P x, P y> = <x, y>``, with variance at most
    ``2 ||x||^2 ||y||^2 / k``; applying it costs O(d) per row.

    Parameters
    ----------
    d, k : int
        Input and output dimensions.
    random_state : int, numpy Generator or None

    Examples
    --------
    >>> import torch
    >>> P = SparseJL(1000, 64, random_state=0)
    >>> P(torch.ones(3, 1000)).shape
    torch.Size([3, 64])
    """

    def __init__(self, d, k, *, random_state=None):
        self.d = _check_dim(d, "d", "pass the input dimension")
        self.out_dim = _check_dim(k, "k", "pass the output dimension")
        self.buckets, self.signs = sparse_sign_map(self.d, self.out_dim, random_state)
        self._device = _DeviceCache()

    def _dense(self):
        R = torch.zeros(self.d, self.out_dim, dtype=torch.float64)
        R[torch.arange(self.d), torch.as_tensor(self.buckets)] = torch.as_tensor(
            self.signs
        )
        return R

    def __call__(self, X):
        """Project the last axis of ``X`` (..., d) -> (..., k)."""
        if self.d * self.out_dim <= _DENSE_ENTRIES:
            return X @ self._device.get("dense", X, self._dense)
        h = self._device.get("h", X, lambda: torch.as_tensor(self.buckets)).long()
        s = self._device.get("s", X, lambda: torch.as_tensor(self.signs))
        flat = X.reshape(-1, self.d)
        out = flat.new_zeros(flat.shape[0], self.out_dim).index_add_(1, h, flat * s)
        return out.reshape(*X.shape[:-1], self.out_dim)


class GaussianProjection:
    """Dense Gaussian map ``X @ R / sqrt(k)``, ``R`` (d, k) drawn on the host.

    The same draws as :func:`maxvol_kit.utils.gaussian_map`. ``R`` is
    held in memory: ``4 d k`` bytes in float32, so mask wide gradients first.

    Parameters
    ----------
    d, k : int
    random_state : int, numpy Generator or None
    """

    def __init__(self, d, k, *, random_state=None):
        self.d = _check_dim(d, "d", "pass the input dimension")
        self.out_dim = _check_dim(k, "k", "pass the output dimension")
        self.matrix = gaussian_map(self.d, self.out_dim, random_state)
        self._device = _DeviceCache()

    def __call__(self, X):
        """Project the last axis of ``X`` (..., d) -> (..., k)."""
        return X @ self._device.get("R", X, lambda: torch.as_tensor(self.matrix))
