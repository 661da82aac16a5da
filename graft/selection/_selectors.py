"""The selectors of graft: random subsets, GRAFT and SAGE.

Each has the members of :class:`graft.selection.Selector`: a round,
``select_round(round)``, over the whole dataset, and the attributes that say
what it reads (``reads``) and what the training passes should record
(``wants_embeddings``, ``layer``); and ``select(model, inputs, targets,
generator)``, one batch's :class:`Selection` (online mode). ``model(inputs)``
returns the logits and ``model.named_modules()`` lists the layers; ``inputs``
is a tensor or a dict / tuple of tensors, ``targets`` the class labels.
:class:`RandomSelector` is the baseline; :class:`GraftSelector` is GRAFT over
the per-sample record (:mod:`graft.selection._rounds`); :class:`SageSelector`
scores gradient agreement in two passes over the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

from graft._checks import check_choice, check_count, check_flag, check_number
from graft._features import last_layer_gradients, penultimate
from graft._format import take
from graft.selection._protocol import Round, RoundSelection, Selection
from graft.selection._rounds import budget, graft_round, mean_one, uniform_round
from maxvol_kit.utils import (
    FrequentDirectionsSketch,
    allocate,
    principal_coordinates,
)

__all__ = ["GraftSelector", "RandomSelector", "SageSelector"]


def _check_fraction(fraction, name="fraction"):
    return check_number(name, fraction, low=0, high=1, open_low=True, example=0.3)


class RandomSelector:
    """A uniformly random share ``fraction`` of the data, weight 1.

    A selection round (refresh mode) draws ``fraction`` of the dataset
    without reading any of it; online mode draws it in each batch.

    Parameters
    ----------
    fraction : float in (0, 1]

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from graft import Graft, RandomSelector
    >>> data = TensorDataset(torch.randn(100, 4), torch.arange(100) % 2)
    >>> graft = Graft(torch.nn.Linear(4, 2), data, selector=RandomSelector(0.3))
    >>> graft.set_epoch(0)
    >>> len(graft.selected_indices)
    30
    """

    name = "random"
    reads = "record"  # only its size: a round touches no data
    wants_embeddings = False
    layer = None
    rounds_every_epoch = False

    def select_round(self, round: Round) -> RoundSelection:
        """A round: ``fraction`` of the dataset, uniformly (the record is unread)."""
        return uniform_round(round.record.n_samples, self.fraction, round.generator)

    def __init__(self, fraction: float) -> None:
        self.fraction = _check_fraction(fraction)

    def select(self, model, inputs, targets, generator):
        """Pick ``round(fraction * len(batch))`` samples uniformly at random."""
        k = budget(self.fraction, len(targets))
        order = torch.randperm(len(targets), generator=generator)[:k]
        weights = torch.ones(k, dtype=torch.float32)
        return Selection(order.to(targets.device), weights.to(targets.device), k)


class GraftSelector:
    """GRAFT: per class, Fast MaxVol rows of the residual-ranked principal directions.

    A round (refresh mode) selects over the whole dataset from the per-sample
    record of the training passes, with no forward pass of its own
    (:func:`graft.selection._rounds.graft_round`): per class, a budget in proportion to
    the class's share of the recorded training loss (where the gradient needs
    more samples); the Fast MaxVol rows of the top principal directions of
    the class's recorded embeddings, as many directions as the relative
    residual ``eps`` needs (the gradient-aware rank); the rest drawn by
    leverage in those directions mixed half and half with uniform, weighted
    by inverse inclusion probability (mean 1 within each class).

    In online mode each batch is selected on its own: leverage sampling in
    the batch's top principal directions of the embeddings, among a random
    ``pool`` times the budget, with inverse-probability weights. (The
    per-batch form with other features, pick orders and rank rules lost to
    random subsets in the training benchmark; it is kept in ``benchmarks/``.)

    Parameters
    ----------
    fraction : float in (0, 1]
        Budget: at most this share of the data (of each batch online).
    eps : float, default=0.1
        Relative residual of a class's embeddings by its top principal
        directions: sets how many directions the round keeps.
    pool : float >= 1 or None, default=2
        Online: select among a uniformly random ``pool * budget`` of each
        batch (the selection's forward pass runs on those); None: all of it.
    layer : str or None
        Name of the final ``nn.Linear`` (default: the last one).

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from graft import Graft, GraftSelector
    >>> data = TensorDataset(torch.randn(200, 4), torch.randint(0, 2, (200,)))
    >>> graft = Graft(torch.nn.Linear(4, 2), data, selector=GraftSelector(0.25))
    >>> graft.set_epoch(0)  # nothing recorded yet: a uniform quarter
    >>> graft.fraction_achieved()
    0.25
    """

    name = "graft"
    reads = "record"  # the losses and embeddings of the training passes
    wants_embeddings = True
    rounds_every_epoch = False

    def __init__(
        self,
        fraction: float,
        *,
        eps: float = 0.1,
        pool: float | None = 2,
        layer: str | None = None,
    ) -> None:
        self.fraction = _check_fraction(fraction)
        self.eps = check_number("eps", eps, low=0, example=0.1)
        if pool is not None:
            pool = check_number("pool", pool, low=1, example=2)
        self.pool = pool
        if layer is not None and not isinstance(layer, str):
            raise TypeError(
                f"layer must be the name of an nn.Linear in the model (str) or None "
                f"for the last one, got {type(layer).__name__} {layer!r}."
            )
        self.layer = layer

    def select_round(self, round: Round) -> RoundSelection:
        """A round over the record: ``(dataset indices, weights, ranks)``."""
        return graft_round(round.record, self.fraction, self.eps, round.generator)

    @torch.no_grad()
    def select(self, model, inputs, targets, generator=None):
        """Select within one batch (online mode); ValueError on non-finite outputs."""
        n = len(targets)
        k = budget(self.fraction, n)
        pool = _candidates(n, k, self.pool, generator)
        h, logits = penultimate(model, take(inputs, pool, n), self.layer)
        if not (torch.isfinite(h).all() and torch.isfinite(logits).all()):
            raise ValueError(
                "non-finite features in the batch (NaN or inf in the model's "
                "outputs); check the learning rate and the inputs."
            )
        F = h.double()
        if len(F) <= k:
            rows, weights = torch.arange(len(F)), torch.ones(len(F))
        else:
            p = _leverage_probabilities(F, k)
            rows = _gumbel_top_k(p, k, generator)
            weights = mean_one(1.0 / torch.clamp(k * p[rows], max=1.0))
        return Selection(
            pool[rows].to(targets.device), weights.float().to(targets.device), k
        )


def _candidates(n, k_max, pool, generator):
    """All of the batch, or a random ``pool * k_max`` of it (batch order)."""
    if pool is None or math.ceil(pool * k_max) >= n:
        return torch.arange(n)
    m = math.ceil(pool * k_max)
    return torch.randperm(n, generator=generator)[:m].sort().values


def _leverage_probabilities(F, k):
    """Leverage-score sampling probabilities (sum 1) of the top ``k`` directions.

    ``p_i = ||U_k[i]||^2 / k`` for the top-``k`` left singular vectors of the
    centred features: rows that stick out in many directions are likelier.
    """
    Z = principal_coordinates(F - F.mean(dim=0))[:, :k]
    if Z.shape[1] == 0:
        return torch.full((len(F),), 1.0 / len(F), dtype=F.dtype)
    U = Z / torch.linalg.vector_norm(Z, dim=0)
    lev = (U * U).sum(dim=1)
    return lev / lev.sum()


def _gumbel_top_k(p, k, generator):
    """``k`` indices drawn without replacement with probability ~ ``p``."""
    u = torch.rand(len(p), generator=generator, dtype=torch.float64)
    keys = p.clamp(min=1e-300).log() - torch.log(-torch.log(u.clamp(min=1e-300)))
    return torch.argsort(keys, descending=True)[:k]


class SageSelector:
    """SAGE: keep the samples whose gradients agree with the consensus.

    A selection round makes two passes over the data with the current model
    (no gradients). Pass 1 streams each sample's gradient features into a
    Frequent Directions sketch of ``sketch_size`` rows and sums them into a
    consensus (the mean gradient). Pass 2 projects each sample's gradient on
    the sketch's top directions ``V`` and scores its agreement, the cosine
    between ``V^T g_i`` and ``V^T g_mean``; the ``fraction`` of samples with
    the highest scores are kept (in proportion to the class counts when
    ``stratify``). State: the sketch (``2 sketch_size x D``), the
    consensus (``D``) and one score per sample, whatever the number of
    samples. In online mode each batch is its own round.

    Parameters
    ----------
    fraction : float in (0, 1]
        Share of the samples kept.
    sketch_size : int, default=32
        Rows ``ell`` of the Frequent Directions sketch.
    stratify : bool, default=True
        Keep the top of each class in proportion to its count, not the top
        overall (agreement with the mean gradient alone favours the classes
        and samples that dominate it).
    pick : {"spread", "top"}, default="spread"
        ``"spread"``: evenly spaced ranks of the agreement order (the
        ``j``-th of ``k`` at rank ``(j + 1/2) n / k``), a sample that covers
        the whole range of agreement; ``"top"``: the samples that agree
        most. On Fashion-MNIST at 5 % of the data the top picks are
        redundant, easy samples and train to 48.6 % test accuracy, against
        66.6 % for the spread and 66.4 % for random subsets.
    features : "gradient" or callable, default="gradient"
        The closed-form last-layer gradient, or
        ``f(model, inputs, targets) -> Tensor (n, D)`` (e.g. a
        ``FactGraSS`` compressor's per-sample gradients).
    layer : str or None
        Name of the final ``nn.Linear`` (default: the last one).

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from graft import Graft, SageSelector
    >>> data = TensorDataset(torch.randn(120, 4), torch.arange(120) % 3)
    >>> graft = Graft(torch.nn.Linear(4, 3), data, selector=SageSelector(0.25))
    >>> graft.set_epoch(0)  # two passes of the model over the data
    >>> len(graft.selected_indices)
    30
    """

    name = "sage"
    reads = "data"  # two passes of the current model over the data
    rounds_every_epoch = False

    def __init__(
        self,
        fraction: float,
        *,
        sketch_size: int = 32,
        stratify: bool = True,
        pick: Literal["spread", "top"] = "spread",
        features: str | Callable = "gradient",
        layer: str | None = None,
    ) -> None:
        self.fraction = _check_fraction(fraction)
        self.pick = check_choice("pick", pick, ("spread", "top"))
        sketch_size = check_count("sketch_size", sketch_size, example=32)
        if not callable(features) and features != "gradient":
            raise ValueError(
                f"features ({features!r}) must be 'gradient' or a "
                "callable(model, inputs, targets) -> Tensor."
            )
        self.sketch_size = sketch_size
        self.stratify = check_flag("stratify", stratify)
        self.features = features
        self.layer = layer
        self.wants_embeddings = not callable(features)

    def _gradients(self, model, inputs, targets):
        if callable(self.features):
            G = self.features(model, inputs, targets).double()
        else:
            h, logits = penultimate(model, inputs, self.layer)
            G = last_layer_gradients(h.double(), logits.double(), targets)
        if not torch.isfinite(G).all():
            raise ValueError(
                "non-finite gradient features in the batch (NaN or inf in the "
                "model's outputs); check the learning rate and the inputs."
            )
        return G

    def _consensus(self, batches, model):
        """Pass 1: the sketch's top right singular vectors and the mean."""
        sketch = FrequentDirectionsSketch(self.sketch_size)
        total, count = None, 0
        for x, y in batches:
            G = self._gradients(model, x, y)
            sketch.update(G)
            total = G.sum(dim=0) if total is None else total + G.sum(dim=0)
            count += len(G)
        _, s, Vh = torch.linalg.svd(sketch.sketch, full_matrices=False)
        V = Vh[: int((s > 1e-12 * s[0]).sum())][: self.sketch_size].T
        return V, V.T @ (total / count)

    def _scores(self, model, x, y, V, consensus):
        """Pass 2: cosine of each projected gradient to the consensus."""
        Z = self._gradients(model, x, y) @ V
        norms = torch.linalg.vector_norm(Z, dim=1) * torch.linalg.vector_norm(consensus)
        return (Z @ consensus) / norms.clamp(min=1e-300)

    def _keep(self, scores, rows, k):
        """``k`` of ``rows`` by agreement: the top, or evenly spaced ranks."""
        order = rows[torch.argsort(scores[rows], descending=True, stable=True)]
        if self.pick == "top":
            return order[:k]
        return order[((torch.arange(k) + 0.5) * len(order) / k).long()]

    def _top(self, scores, labels, k):
        if not self.stratify:
            return self._keep(scores, torch.arange(len(scores)), k)
        members = [torch.nonzero(labels == c)[:, 0] for c in torch.unique(labels)]
        alloc = allocate([len(m) for m in members], k)
        return torch.cat(
            [
                self._keep(scores, rows, kc)
                for rows, kc in zip(members, alloc.tolist(), strict=True)
            ]
        )

    @torch.no_grad()
    def select(self, model, inputs, targets, generator=None):
        """Online mode: one round within the batch."""
        V, consensus = self._consensus([(inputs, targets)], model)
        scores = self._scores(model, inputs, targets, V, consensus).cpu()
        rows = self._top(scores, targets.cpu(), budget(self.fraction, len(scores)))
        ones = torch.ones(len(rows), device=targets.device)
        return Selection(rows.to(targets.device), ones, V.shape[1])

    @torch.no_grad()
    def select_round(self, round: Round) -> RoundSelection:
        """Refresh mode: one round over the whole dataset, in two passes."""
        model, batches = round.model, round.batches
        V, consensus = self._consensus(((x, y) for x, y, _ in batches()), model)
        scores, labels, indices = [], [], []
        for x, y, i in batches():
            scores.append(self._scores(model, x, y, V, consensus).cpu())
            labels.append(y.cpu())
            indices.append(i)
        scores, labels, indices = map(torch.cat, (scores, labels, indices))
        rows = self._top(scores, labels, budget(self.fraction, len(scores)))
        return RoundSelection(indices[rows], torch.ones(len(rows)), [V.shape[1]])
