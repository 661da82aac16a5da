"""GRAFT within each batch, with the knobs the training benchmark compares.

Measured to lose against random subsets and against the record-based round
of :class:`graft.GraftSelector` (docs/benchmarks.md, docs/selection.md), the
per-batch form is not part of the library; the benchmark tables that show
it are rebuilt with this module (registered by ``_variants.py``).
"""

from __future__ import annotations

import math

import torch

from graft import GraftSelector
from graft._checks import check_flag, check_number
from graft._features import last_layer_gradients, penultimate
from graft._format import take
from graft.selection import batchwise_round
from graft.selection._dynamic_rank import choose_rank, prefix_residuals, subset_weights
from graft.selection._rounds import budget, mean_one
from graft.selection._selectors import (
    Selection,
    _candidates,
    _check_fraction,
    _gumbel_top_k,
    _leverage_probabilities,
)
from maxvol_kit._backend import get_backend
from maxvol_kit._groups import allocate
from maxvol_kit._maxvol import greedy_volume
from maxvol_kit._sketch import (
    host_rng,
    principal_coordinates,
    random_fourier_features,
    typicality_weights,
)

__all__ = ["BatchGraftSelector"]


class BatchGraftSelector(GraftSelector):
    """GRAFT within each batch: the per-batch form and its knobs (benchmarks only).

    For each batch (a selection round in refresh mode passes over the data
    batch by batch; online mode selects each training batch): per-sample
    features (the embedding that enters the final ``nn.Linear``, random
    Fourier features of it, the closed-form last-layer gradient, both, or a
    callable); their top principal coordinates; a pick order, by randomized
    volume sampling or the Fast MaxVol greedy order; then the smallest prefix
    whose least-squares gradient combination is within ``eps`` of the batch
    mean gradient (relative residual), between ``min_fraction`` and
    ``fraction`` of the batch. Every variant lost to random subsets or to
    the record-based round of :class:`graft.GraftSelector` in the training
    benchmark (docs/benchmarks.md), so this lives here, for those tables.

    Parameters
    ----------
    fraction : float in (0, 1]
        Budget: at most this share of each batch.
    eps : float, default=0.1
        Relative residual of the gradient to reach.
    min_fraction : float or None, default=None
        At least this share of each batch; None means ``fraction`` (the
        whole budget: on Fashion-MNIST, stopping early at the rank rule's
        prefix cost accuracy for the time it saved).
    features : {"embedding", "kernel", "gradient", "mixed"} or callable, \
default="embedding"
        What the sample coordinates come from; ``"kernel"``: random Fourier
        features of the embedding (Gaussian kernel, median bandwidth); a
        callable ``f(model, inputs, targets) -> Tensor (n, d)`` replaces them.
    coordinates : {"us", "u"}, default="us"
        Principal coordinates scaled by the singular values, or not.
    typicality : float, default=0.0
        Scale each sample's features by ``exp(-typicality * m_i)``, ``m_i`` its
        squared Mahalanobis distance in the batch's principal coordinates over
        their number, before the picks, so atypical samples count less.
    weighted : bool, default=False
        Non-negative least-squares weights (mean 1) for the greedy order;
        else weight 1. Needs ``sampling="greedy"``.
    stratify : bool, default=False
        Split the budget over the classes of the batch in proportion to their
        counts and interleave the classes' picks.
    random_share : float in [0, 1], default=0.0
        Share of the budget filled uniformly at random after the volume
        picks. Needs ``sampling="greedy"``.
    sampling : {"volume", "greedy"}, default="volume"
        ``"volume"``: rows drawn without replacement with probability
        proportional to their leverage in the top ``budget`` principal
        directions, weighted by their inverse inclusion probability (mean 1);
        ``"greedy"``: the Fast MaxVol (greedy volume) order, weight 1.
    pool : float >= 1 or None, default=2
        Select among a uniformly random ``pool * budget`` of each batch only
        (the selection's forward pass runs on those); None: the whole batch.
        Twice the budget brought the picks level with random subsets at 0.1
        of the data and cut the selection's cost about fourfold there.
    layer : str or None
        Name of the final ``nn.Linear`` (default: the last one).

    Notes
    -----
    Greedy volume picks the rows that stick out of the batch; trained on,
    they shift the data away from the test distribution, and on
    Fashion-MNIST every greedy variant lost to random subsets of the same
    size. Volume sampling keeps the leverage-driven spread but reweights the
    picks so the subset gradient estimates the batch gradient, and a random
    pool of twice the budget keeps the picks close to the batch's
    distribution; together they matched random subsets at 0.1 and 0.3 of
    the data in the training benchmark (docs/graft.md), which is why they
    are the defaults.
    """

    name = "graft-batch"
    reads = "data"  # a round passes over the data, batch by batch

    def select_round(self, round):
        return batchwise_round(self, round)

    def __init__(
        self,
        fraction,
        *,
        eps=0.1,
        min_fraction=None,
        features="embedding",
        coordinates="us",
        typicality=0.0,
        weighted=False,
        stratify=False,
        random_share=0.0,
        sampling="volume",
        pool=2,
        layer=None,
    ):
        super().__init__(fraction, eps=eps, pool=pool, layer=layer)
        self.min_fraction = _check_fraction(
            min_fraction if min_fraction is not None else fraction, "min_fraction"
        )
        if self.min_fraction > self.fraction:
            raise ValueError(
                f"min_fraction ({min_fraction}) must not exceed fraction ({fraction})."
            )
        if not callable(features) and not isinstance(features, str):
            raise TypeError(
                f"features must be 'embedding', 'kernel', 'gradient', 'mixed' or a "
                f"callable, got {type(features).__name__} {features!r}."
            )
        if not callable(features) and features not in (
            "embedding",
            "kernel",
            "gradient",
            "mixed",
        ):
            raise ValueError(
                f"features ({features!r}) must be 'embedding', 'kernel', 'gradient', "
                "'mixed' or a callable(model, inputs, targets) -> Tensor."
            )
        if coordinates not in ("us", "u"):
            raise ValueError(f"coordinates ({coordinates!r}) must be 'us' or 'u'.")
        self.features = features
        self.coordinates = coordinates
        self.typicality = check_number("typicality", typicality, low=0, example=1.0)
        self.weighted = check_flag("weighted", weighted)
        self.stratify = check_flag("stratify", stratify)
        self.random_share = check_number(
            "random_share", random_share, low=0, high=1, example=0.5
        )
        if sampling not in ("greedy", "volume"):
            raise ValueError(f"sampling ({sampling!r}) must be 'greedy' or 'volume'.")
        if sampling == "volume" and (weighted or self.random_share):
            raise ValueError(
                f"weighted={weighted!r} and random_share={random_share!r} need "
                "sampling='greedy' (sampling='volume' brings its own inverse-"
                "probability weights); pass sampling='greedy'."
            )
        self.sampling = sampling
        self.wants_embeddings = not callable(features)

    def _features(self, model, inputs, targets, h, G):
        if callable(self.features):
            return self.features(model, inputs, targets)
        if self.features in ("embedding", "kernel"):
            return h
        if self.features == "gradient":
            return G
        return torch.cat([_unit_rows(h), _unit_rows(G)], dim=1)

    @torch.no_grad()
    def select(self, model, inputs, targets, generator=None):
        """Select within one batch; raises ValueError on non-finite features."""
        n = len(targets)
        k_max = budget(self.fraction, n)
        k_min = min(k_max, max(1, math.floor(self.min_fraction * n)))
        pool = _candidates(n, k_max, self.pool, generator)
        inputs, targets = take(inputs, pool, n), targets[pool.to(targets.device)]
        h, logits = penultimate(model, inputs, self.layer)
        y = targets.cpu()
        G = last_layer_gradients(h.double(), logits.double(), targets)
        F = self._features(model, inputs, targets, h, G).double()
        if not (torch.isfinite(F).all() and torch.isfinite(G).all()):
            raise ValueError(
                "non-finite features in the batch (NaN or inf in the model's "
                "outputs); check the learning rate and the inputs."
            )
        scale = None
        if self.typicality:
            Z = principal_coordinates(F - F.mean(dim=0))
            scale = typicality_weights(Z, self.typicality)[:, None]
        if self.features == "kernel":  # diversity in a Gaussian kernel's space
            seed = int(torch.randint(2**62, (1,), generator=generator))
            width = min(max(2 * k_max, 64), 1024)
            F = random_fourier_features(F, width, host_rng(seed))
        if scale is not None:
            F = F * scale
        order, inclusion = self._order(F, y, k_max, generator)
        k = len(order)
        if k_min < k:  # the rank rule may stop early: residuals of the prefixes
            residuals = prefix_residuals(G, order.tolist())
            k = choose_rank(residuals, self.eps, k_min, k)
        rows = order[:k]
        if inclusion is not None:  # inverse inclusion probabilities, mean 1
            weights = mean_one(1.0 / inclusion[rows])
        elif self.weighted:
            weights = subset_weights(G, rows.tolist())
        else:
            weights = torch.ones(k)
        return Selection(
            pool[rows].to(targets.device), weights.float().to(targets.device), k
        )

    def _order(self, F, y, k_max, generator):
        """Pick order of the candidates, and inclusion probabilities if sampled.

        The first ``k_max - round(random_share * k_max)`` picks come from the
        volume criterion (per class and interleaved when stratified), the
        rest uniformly at random from the candidates left.
        """
        n_random = round(self.random_share * k_max)
        k_volume = k_max - n_random
        inclusion = torch.ones(len(F), dtype=torch.float64)
        if k_volume == 0:
            picked = torch.zeros(0, dtype=torch.long)
        elif self.stratify:
            picked = _stratified_order(
                y,
                k_volume,
                lambda members, alloc: self._class_orders(
                    F, members, alloc, generator, inclusion
                ),
            )
        else:
            rows = torch.arange(len(F))
            picked = self._volume_order(F, rows, k_volume, generator, inclusion)
        rest = torch.ones(len(F), dtype=torch.bool)
        rest[picked] = False
        others = torch.nonzero(rest)[:, 0]
        others = others[torch.randperm(len(others), generator=generator)[:n_random]]
        sampled = self.sampling == "volume"
        return torch.cat([picked, others]), inclusion if sampled else None

    def _volume_order(self, F, rows, k, generator, inclusion):
        """``k`` picks among ``rows`` of ``F`` (dataset rows of the batch).

        Greedy volume order, or leverage-score sampling that writes each
        row's inclusion probability ``min(1, k p_i)`` into ``inclusion``.
        """
        if len(rows) <= k:
            return rows
        if self.sampling == "greedy":
            order = _pick_order(F[rows], k, self.coordinates)
            return rows[_complete(order, len(rows), k, generator)]
        p = _leverage_probabilities(F[rows], k)
        inclusion[rows] = torch.clamp(k * p, max=1.0)
        return rows[_gumbel_top_k(p, k, generator)]

    def _class_orders(self, F, members, alloc, generator, inclusion):
        """``alloc[c]`` picks among the rows ``members[c]`` of each class.

        Greedy: one greedy-volume run on the classes' principal coordinates
        laid out in disjoint column blocks, which orders each class exactly
        as a run of its own would (the blocks are orthogonal) at the cost of
        one call.
        """
        if self.sampling != "greedy":
            return [
                self._volume_order(F, rows, kc, generator, inclusion)
                for rows, kc in zip(members, alloc, strict=True)
            ]
        blocks = [
            _coordinates(F[rows], kc, self.coordinates) if len(rows) > kc else None
            for rows, kc in zip(members, alloc, strict=True)
        ]
        width = sum(Z.shape[1] for Z in blocks if Z is not None)
        B = F.new_zeros((len(F), width))
        col = 0
        for rows, Z in zip(members, blocks, strict=True):
            if Z is not None:
                B[rows, col : col + Z.shape[1]] = Z
                col += Z.shape[1]
        picks = _greedy_order(B)
        orders = []
        for rows, kc, Z in zip(members, alloc, blocks, strict=True):
            if Z is None:  # the class is smaller than its share
                orders.append(rows)
                continue
            mine = picks[torch.isin(picks, rows)]
            local = torch.searchsorted(rows, mine)  # rows are sorted
            orders.append(rows[_complete(local, len(rows), kc, generator)])
        return orders


def _complete(order, n, k, generator):
    """``k`` of the ``n`` rows: ``order``, then random others.

    ``order`` has fewer than ``k`` picks when the features have lower rank.
    """
    if len(order) >= k:
        return order[:k]
    rest = torch.ones(n, dtype=torch.bool)
    rest[order] = False
    others = torch.nonzero(rest)[:, 0]
    others = others[torch.randperm(len(others), generator=generator)]
    return torch.cat([order, others[: k - len(order)]])


def _stratified_order(y, k, orders_of):
    """Per-class pick orders, interleaved so every prefix is near-proportional.

    Class ``c`` gets ``k_c`` of the ``k`` picks in proportion to its count;
    ``orders_of(members, alloc)`` orders each class's picks. The ``j``-th
    pick of class ``c`` is placed at time ``(j + 1/2) / k_c``, and the picks
    of all classes are merged by time.
    """
    members = [torch.nonzero(y == c)[:, 0] for c in torch.unique(y)]
    alloc = allocate([len(m) for m in members], k).tolist()
    kept = [(rows, kc) for rows, kc in zip(members, alloc, strict=True) if kc]
    orders = orders_of([rows for rows, _ in kept], [kc for _, kc in kept])
    times = [(torch.arange(kc, dtype=torch.float64) + 0.5) / kc for _, kc in kept]
    picks, times = torch.cat(orders), torch.cat(times)
    return picks[torch.argsort(times, stable=True)]


def _unit_rows(X):
    return X / X.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _coordinates(F, k, coordinates):
    """The top ``min(k, rank)`` principal coordinates of ``F`` (U S, or U)."""
    Z = principal_coordinates(F - F.mean(dim=0))[:, :k]
    if coordinates == "u" and Z.shape[1]:  # the columns of U S at unit norm
        Z = Z / torch.linalg.vector_norm(Z, dim=0)
    return Z


def _greedy_order(Z):
    """Greedy-volume (Fast MaxVol) pick order of the rows of ``Z``, one per column.

    fast_maxvol(Z, refine=False) would also form the n x R coefficient
    matrix, which the selection does not need.
    """
    if Z.shape[1] == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.as_tensor(greedy_volume(Z, Z.shape[1], get_backend(Z))[0])


def _pick_order(F, k_max, coordinates):
    """Fast MaxVol pick order on the top principal coordinates of ``F``."""
    Z = _coordinates(F, k_max, coordinates)
    if Z.shape[1] == 0:  # all samples identical: any order is as good
        return torch.arange(min(k_max, len(F)))
    return _greedy_order(Z)
