"""Randomized low-rank factors and streaming sketches on any array backend.

- :func:`randomized_range_finder` and :func:`randomized_svd`: Halko,
  Martinsson & Tropp (2011), Algorithms 4.4 and 5.1, with QR between power
  iterations, as in scikit-learn's ``randomized_svd``. scikit-learn's own
  array-API version needs ``SCIPY_ARRAY_API=1`` set before SciPy is imported
  and ``array_api_dispatch=True``, which a library cannot impose on its
  users, so the dozen lines are written here against the array API; the tests
  use scikit-learn's as the oracle on NumPy input.
- :class:`FrequentDirectionsSketch`: Frequent Directions (Liberty 2013;
  Ghashami, Liberty, Phillips & Woodruff 2016), the fast variant with a
  buffer of ``2 ell`` rows and one SVD per ``ell`` rows streamed. For every
  unit ``x`` and ``k < ell``:
  ``0 <= ||A x||^2 - ||B x||^2 <= ||A - A_k||_F^2 / (ell - k)``.
- :func:`random_fourier_features` of the Gaussian kernel (median bandwidth).
- :func:`sparse_sign_projection` (sparse JL: one +-1 per input coordinate)
  and :func:`dense_projection` (Gaussian or Rademacher), with random draws on
  the host, moved to the input's device, so the same seed gives the same
  projection on every backend.

Random draws use ``numpy.random.default_rng(random_state)`` on the host (an
int, a ``Generator`` or None).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from maxvol_kit._backend import get_backend
from maxvol_kit._validation import check_int, check_matrix, rescaled

__all__ = [
    "FrequentDirectionsSketch",
    "dense_projection",
    "gaussian_map",
    "host_rng",
    "principal_coordinates",
    "randomized_range_finder",
    "randomized_svd",
    "sparse_sign_map",
    "sparse_sign_projection",
    "typicality_weights",
]


def host_rng(random_state):
    """A NumPy ``Generator`` from an int, a ``Generator``, a ``RandomState`` or None.

    Parameters
    ----------
    random_state : int, numpy Generator, RandomState, SeedSequence or None

    Returns
    -------
    numpy.random.Generator
        The Generator itself when one is passed (its draws continue).

    Examples
    --------
    >>> from maxvol_kit.utils import check_random_state
    >>> check_random_state(0).integers(10, size=3).tolist()
    [8, 6, 5]
    """
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**63))
    if not (
        random_state is None
        or isinstance(random_state, (np.random.Generator, np.random.SeedSequence))
        or (
            isinstance(random_state, numbers.Integral)
            and not isinstance(random_state, bool)
        )
    ):
        raise TypeError(
            f"random_state ({random_state!r}) must be None, an int, a NumPy "
            "Generator or a RandomState; e.g. random_state=0."
        )
    if isinstance(random_state, numbers.Integral) and random_state < 0:
        raise ValueError(
            f"random_state ({random_state}) must be a non-negative int; e.g. "
            "random_state=0."
        )
    return np.random.default_rng(random_state)


def _gaussian(backend, shape, dtype, random_state):
    """Standard normal draws on the host, as an array on ``backend``'s device."""
    host = host_rng(random_state).standard_normal(shape)
    return backend.asarray(host, dtype=dtype)


def randomized_range_finder(A, size, *, n_iter=4, random_state=None):
    """An orthonormal basis ``Q`` (n, size) that approximates the range of ``A``.

    ``Q = qr((A A^T)^q A Omega)`` with Gaussian ``Omega`` and a QR between
    the power iterations (Halko et al. 2011, Algorithm 4.4).

    Parameters
    ----------
    A : array of shape (n, d)
        Float32 or float64, any backend.
    size : int
        Number of basis vectors, ``1 <= size <= min(n, d)``.
    n_iter : int, default=4
        Power iterations; more sharpen the basis when the spectrum decays
        slowly.
    random_state : int, numpy Generator or None
        Seed of the host draws.

    Returns
    -------
    Q : array of shape (n, size)
        Orthonormal columns, same backend and device as ``A``.

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit._sketch import randomized_range_finder
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((100, 5)) @ rng.standard_normal((5, 40))
    >>> Q = randomized_range_finder(A, 5, random_state=0)
    >>> bool(np.allclose(Q @ (Q.T @ A), A))
    True
    """
    A, backend = check_matrix(A, tall=False)
    size = check_int(
        size, name="size", low=1, high=min(A.shape), fix="ask for at most min(A.shape)"
    )
    n_iter = check_int(n_iter, name="n_iter", low=0, high=1000, fix="e.g. n_iter=4")
    return _range_finder(A, size, n_iter, random_state, backend)


def _range_finder(A, size, n_iter, random_state, backend):
    qr = backend.xp.linalg.qr
    Q = A @ _gaussian(backend, (A.shape[1], size), A.dtype, random_state)
    Q, _ = qr(Q)
    for _ in range(n_iter):
        Q, _ = qr(A.T @ Q)
        Q, _ = qr(A @ Q)
    return Q


def randomized_svd(A, n_components, *, n_oversamples=10, n_iter=4, random_state=None):
    """Truncated SVD ``A ~ U diag(s) Vt`` by a randomized range finder.

    Parameters
    ----------
    A : array of shape (n, d)
        Float32 or float64, any backend.
    n_components : int
        Rank of the result, ``1 <= n_components <= min(n, d)``.
    n_oversamples : int, default=10
        Extra basis vectors drawn, clipped to ``min(n, d)`` in all.
    n_iter : int, default=4
        Power iterations.
    random_state : int, numpy Generator or None
        Seed of the host draws.

    Returns
    -------
    U : array of shape (n, n_components)
    s : array of shape (n_components,)
        Descending.
    Vt : array of shape (n_components, d)

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit._sketch import randomized_svd
    >>> A = np.random.default_rng(0).standard_normal((200, 30))
    >>> U, s, Vt = randomized_svd(A, 5, random_state=0)
    >>> U.shape, s.shape, Vt.shape
    ((200, 5), (5,), (5, 30))
    """
    A, backend = check_matrix(A, tall=False)
    k = check_int(
        n_components,
        name="n_components",
        low=1,
        high=min(A.shape),
        fix="ask for at most min(A.shape) components",
    )
    n_oversamples = check_int(
        n_oversamples, name="n_oversamples", low=0, high=10**9, fix="e.g. 10"
    )
    n_iter = check_int(n_iter, name="n_iter", low=0, high=1000, fix="e.g. n_iter=4")
    size = min(k + n_oversamples, min(A.shape))
    Q = _range_finder(A, size, n_iter, random_state, backend)
    U_small, s, Vt = backend.xp.linalg.svd(Q.T @ A, full_matrices=False)
    return (Q @ U_small)[:, :k], s[:k], Vt[:k, :]


def principal_coordinates(F, rank=None, random_state=None):
    """Principal coordinates ``U_r S_r`` of ``F`` (already centred) above roundoff.

    ``rank`` None: exact thin SVD; an int: randomized SVD of that rank.
    Directions below ``sqrt(eps)`` of the largest carry nothing a selection
    can use, and dropping them keeps greedy pivots clear of roundoff; the
    result has ``r`` columns, 0 for constant rows.

    Parameters
    ----------
    F : array of shape (n, d)
        Centred rows, on any backend.
    rank : int or None, default=None
    random_state : int, numpy Generator or None
        Seed of the randomized SVD.

    Returns
    -------
    array of shape (n, r), ``r <= min(n, d, rank)``, same backend as ``F``

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit.utils import principal_coordinates
    >>> F = np.outer(np.arange(4.0) - 1.5, [1.0, 2.0])  # rank one
    >>> principal_coordinates(F).shape
    (4, 1)
    """
    xp = get_backend(F).xp
    if rank is None:
        U, s, _ = xp.linalg.svd(F, full_matrices=False)
    else:
        U, s, _ = randomized_svd(F, min(rank, *F.shape), random_state=random_state)
    floor = math.sqrt(float(xp.finfo(F.dtype).eps)) * float(s[0]) if s.shape[0] else 0.0
    r = int(xp.sum(xp.astype(s > floor, xp.int64)))
    return U[:, :r] * s[:r]


def typicality_weights(Z, alpha, budget=None):
    """Row weights ``exp(-alpha * (m_i + 2 e_i / budget))`` that shrink atypical rows.

    ``Z`` holds principal coordinates; ``m_i`` is the mean squared whitened
    coordinate of row ``i``: its squared Mahalanobis distance from the mean
    (population covariance), over the rank. ``e_i`` is its squared Euclidean
    distance from the mean over the mean of those: with a small ``budget``
    (rows to keep) it dominates, so one row kept is near the medoid, where
    the Mahalanobis distance, noisy in the low-variance directions, is not.
    No ``budget``: ``m_i`` alone. No coordinates: all weights 1.
    """
    xp = get_backend(Z).xp
    if Z.shape[1] == 0:
        return xp.ones(Z.shape[0], dtype=Z.dtype, device=get_backend(Z).device)
    whitened = Z / xp.std(Z, axis=0)
    atypical = xp.mean(whitened * whitened, axis=1)
    if budget is not None:
        squared = xp.sum(Z * Z, axis=1)
        atypical = atypical + (2.0 / float(budget)) * squared / xp.mean(squared)
    return xp.exp(-alpha * atypical)


def random_fourier_features(F, n_components, rng):
    """Random Fourier features of the Gaussian kernel (Rahimi & Recht, 2007).

    ``phi(x) = sqrt(2 / D) cos(W^T x + b)`` with ``W ~ N(0, 2 / h^2)`` and the
    bandwidth ``h^2`` the median squared distance between rows (of a sample
    of at most 500), so that ``phi(x) . phi(y) ~ exp(-||x - y||^2 / h^2)``.
    ``rng`` is a NumPy Generator (host draws, any backend).
    """
    backend = get_backend(F)
    xp = backend.xp
    # The features are those of F / s for any s (the bandwidth scales along):
    # work at a safe scale.
    F, _ = rescaled(F, backend)
    n, d = F.shape
    sample = xp.take(
        F, backend.indices(rng.choice(n, min(n, 500), replace=False)), axis=0
    )
    sq = xp.sum(sample * sample, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (sample @ sample.T)
    positive = backend.ops.to_host(d2)[backend.ops.to_host(d2) > 1e-12]
    h2 = float(np.median(positive)) if positive.size else 1.0
    W = backend.asarray(
        rng.standard_normal((d, n_components)) * np.sqrt(2.0 / h2), F.dtype
    )
    b = backend.asarray(rng.uniform(0.0, 2.0 * np.pi, n_components), F.dtype)
    return math.sqrt(2.0 / n_components) * xp.cos(F @ W + b)


class FrequentDirectionsSketch:
    """Frequent Directions: a ``(<= 2 ell) x d`` sketch ``B`` of streamed rows.

    Rows are appended to a buffer of ``2 ell`` rows; when it is full, its SVD
    ``U S V^T`` is shrunk to ``sqrt(max(S^2 - s_ell^2, 0)) V^T``, leaving at
    most ``ell - 1`` nonzero rows. Memory is ``2 ell d`` whatever the number
    of rows streamed, and for every unit ``x`` and ``k < ell``,
    ``0 <= ||A x||^2 - ||B x||^2 <= ||A - A_k||_F^2 / (ell - k)``.

    Parameters
    ----------
    sketch_size : int
        ``ell >= 1``.

    Attributes
    ----------
    sketch : array of shape (m, d), m <= 2 * ell
        The rows currently held (``B``); None before the first update.
    n_rows_seen : int
        Rows streamed so far.
    n_shrinks : int
        SVDs performed so far.

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit._sketch import FrequentDirectionsSketch
    >>> A = np.random.default_rng(0).standard_normal((1000, 20))
    >>> fd = FrequentDirectionsSketch(8)
    >>> for chunk in np.array_split(A, 10):
    ...     _ = fd.update(chunk)
    >>> fd.sketch.shape[0] <= 16
    True
    """

    def __init__(self, sketch_size):
        self.sketch_size = check_int(
            sketch_size, name="sketch_size", low=1, high=10**9, fix="e.g. 32"
        )
        self._buffer = None
        self._filled = 0
        self.n_rows_seen = 0
        self.n_shrinks = 0

    @property
    def sketch(self):
        """The sketch rows ``B`` (a view of the filled part of the buffer)."""
        if self._buffer is None:
            return None
        return self._buffer[: self._filled, :]

    def update(self, X):
        """Stream the rows of ``X`` (m, d) into the sketch; return ``self``."""
        X, backend = check_matrix(X, name="X", tall=False)
        if self._buffer is None:
            self._buffer = backend.xp.zeros(
                (2 * self.sketch_size, X.shape[1]), dtype=X.dtype, device=backend.device
            )
        elif X.shape[1] != self._buffer.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} columns but the sketch was started with "
                f"{self._buffer.shape[1]}; stream rows of the same width."
            )
        start = 0
        while start < X.shape[0]:
            room = self._buffer.shape[0] - self._filled
            take = min(room, X.shape[0] - start)
            self._buffer[self._filled : self._filled + take, :] = X[
                start : start + take, :
            ]
            self._filled += take
            start += take
            if self._filled == self._buffer.shape[0]:
                self._shrink()
        self.n_rows_seen += X.shape[0]
        return self

    def _shrink(self):
        xp, ell = get_backend(self._buffer).xp, self.sketch_size
        _, s, Vt = xp.linalg.svd(self._buffer, full_matrices=False)
        # sqrt(s^2 - s_ell^2) as s sqrt(1 - (s_ell / s)^2): no square overflows.
        floor = s[ell - 1] if s.shape[0] >= ell else 0.0
        ratio = floor / xp.where(s > 0, s, 1.0)
        shrunk = s * xp.sqrt(xp.clip(1.0 - ratio * ratio, min=0.0))
        keep = min(ell - 1, s.shape[0])
        self._buffer[:keep, :] = shrunk[:keep, None] * Vt[:keep, :]
        self._buffer[keep:, :] = 0.0
        self._filled = keep
        self.n_shrinks += 1


def sparse_sign_projection(X, k, *, random_state=None):
    """Sparse JL: each input coordinate goes to one of ``k`` buckets with a sign.

    ``Z[:, h(j)] += s(j) X[:, j]`` with uniform buckets ``h`` and signs
    ``s``; inner products are preserved in expectation, ``E <Zx, Zy> =
    <x, y>``, with variance falling as ``1 / k``. O(n d) work.

    Parameters
    ----------
    X : array of shape (n, d)
    k : int
        Output dimension.
    random_state : int, numpy Generator or None
        Seed of the host draws of ``h`` and ``s``.

    Returns
    -------
    Z : array of shape (n, k), same backend and device as ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit.utils import sparse_sign_projection
    >>> sparse_sign_projection(np.eye(6), 3, random_state=0).shape
    (6, 3)
    """
    X, backend = check_matrix(X, name="X", tall=False)
    k = check_int(k, name="k", low=1, high=10**9, fix="pass a positive dimension")
    buckets, signs = sparse_sign_map(X.shape[1], k, random_state)
    return backend.ops.sign_scatter(X, buckets, signs, k)


def dense_projection(X, k, *, kind="gaussian", random_state=None):
    """``X @ R / sqrt(k)`` with a Gaussian or Rademacher (+-1) ``R`` (d, k).

    Parameters
    ----------
    X : array of shape (n, d)
    k : int
        Output dimension.
    kind : {"gaussian", "rademacher"}, default="gaussian"
    random_state : int, numpy Generator or None

    Returns
    -------
    Z : array of shape (n, k), same backend and device as ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit.utils import dense_projection
    >>> Z = dense_projection(np.ones((2, 100)), 50, kind="rademacher", random_state=0)
    >>> Z.shape
    (2, 50)
    """
    X, backend = check_matrix(X, name="X", tall=False)
    k = check_int(k, name="k", low=1, high=10**9, fix="pass a positive dimension")
    if kind == "gaussian":
        R = gaussian_map(X.shape[1], k, random_state)
    elif kind == "rademacher":
        rng = host_rng(random_state)
        R = rng.choice(np.array([-1.0, 1.0]), size=(X.shape[1], k)) / math.sqrt(k)
    else:
        raise ValueError(f"kind ({kind!r}) must be 'gaussian' or 'rademacher'.")
    return X @ backend.asarray(R, dtype=X.dtype)


def _check_map_dims(d, k):
    """The input and output dimensions of a random map, positive ints."""
    d = check_int(d, name="d", low=1, high=2**62, fix="pass the input dimension")
    k = check_int(k, name="k", low=1, high=10**9, fix="pass a positive dimension")
    return d, k


def sparse_sign_map(d, k, random_state=None):
    """The draws of a sparse JL map ``R^d -> R^k``: a bucket and a sign per coordinate.

    The map sends ``x`` to ``z`` with ``z[h[j]] += s[j] x[j]``; inner products
    are preserved in expectation, ``E <z, z'> = <x, x'>``. The draws are made
    on the host in this order (buckets, then signs), so the same seed gives
    the same map wherever it is applied.

    Parameters
    ----------
    d, k : int
        Input and output dimensions.
    random_state : int, numpy Generator or None

    Returns
    -------
    buckets : ndarray of shape (d,), ints in ``[0, k)``
    signs : ndarray of shape (d,), entries +-1.0

    Examples
    --------
    >>> from maxvol_kit.utils import sparse_sign_map
    >>> buckets, signs = sparse_sign_map(5, 3, random_state=0)
    >>> buckets.shape, set(signs.tolist()) <= {-1.0, 1.0}
    ((5,), True)
    """
    d, k = _check_map_dims(d, k)
    rng = host_rng(random_state)
    buckets = rng.integers(0, k, size=d)
    signs = rng.choice(np.array([-1.0, 1.0]), size=d)
    return buckets, signs


def gaussian_map(d, k, random_state=None):
    """A Gaussian JL matrix ``R / sqrt(k)`` of shape (d, k), drawn on the host.

    ``E <x R, x' R> / k = <x, x'>`` for the standard normal ``R``.

    Parameters
    ----------
    d, k : int
        Input and output dimensions.
    random_state : int, numpy Generator or None

    Returns
    -------
    ndarray of shape (d, k), float64

    Examples
    --------
    >>> from maxvol_kit.utils import gaussian_map
    >>> gaussian_map(4, 2, random_state=0).shape
    (4, 2)
    """
    d, k = _check_map_dims(d, k)
    return host_rng(random_state).standard_normal((d, k)) / math.sqrt(k)
