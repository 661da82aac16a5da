"""Selection rounds that read the per-sample record instead of the data.

A record-based selector (``reads = "record"``) takes a
:class:`graft.selection.Round` and returns a
:class:`graft.selection.RoundSelection` ``(dataset_indices, weights, ranks)``
for the whole dataset. It reads what the training passes left in
:class:`graft.SampleRecord` (losses, class labels, the embeddings entering
the final ``nn.Linear``): no forward pass, no loading. Samples the record has
not seen yet (epoch -1) are kept or drawn uniformly, never dropped for lack
of information.

- :func:`uniform_round` is what :class:`graft.RandomSelector` does in a round.
- :class:`InfoBatchSelector` is InfoBatch (Qin et al., ICLR 2024): soft
  pruning of the well-learned samples, rescaled, full data at the end.
- :func:`graft_round` is GRAFT over the round: per class, Fast MaxVol rows of
  the class's principal embedding directions (their number set by the
  residual rule) plus leverage-and-uniform sampling with inverse-probability
  weights.
"""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np
import torch

from graft._checks import check_count, check_number
from graft.selection._protocol import Round, RoundSelection
from maxvol_kit import fast_maxvol
from maxvol_kit.utils import allocate

__all__ = ["InfoBatchSelector", "graft_round", "uniform_round"]


def budget(fraction, n):
    """At most ``fraction`` of ``n`` samples (rounded down), at least one."""
    return max(1, min(n, math.floor(fraction * n + 1e-9)))


def mean_one(w):
    """``w`` rescaled to mean 1."""
    return w * (len(w) / w.sum())


def uniform_round(n_samples, fraction, generator):
    """A uniformly random ``fraction`` of the dataset, weight 1 (no data read)."""
    k = budget(fraction, n_samples)
    chosen, _ = _uniform(torch.arange(n_samples), k, generator)
    return RoundSelection(chosen.sort().values, torch.ones(k), [k])


class InfoBatchSelector:
    """InfoBatch: prune well-learned samples at random, rescale the rest.

    Each epoch, every sample whose last recorded training loss is below the
    mean recorded loss is left out with probability ``prune_ratio``; the
    well-learned samples that stay get loss weight ``1 / (1 - prune_ratio)``
    so the expected gradient is the full-data gradient. Samples never
    recorded are always kept. From epoch ``delta * epochs`` on, every sample
    is trained on (the annealing of the paper). The losses come from the
    training passes (:attr:`graft.Graft.record`): a round reads no data.
    Qin et al., "InfoBatch: Lossless training speed up by unbiased dynamic
    data pruning", ICLR 2024 (arXiv 2303.04947); the defaults are theirs.

    Parameters
    ----------
    epochs : int
        The number of training epochs (for the annealing).
    prune_ratio : float in [0, 1), default=0.5
        Probability of leaving out a well-learned sample.
    delta : float in (0, 1], default=0.875
        Share of the epochs with pruning; the rest train on all samples.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from graft import Graft, InfoBatchSelector
    >>> data = TensorDataset(torch.randn(100, 4), torch.randint(0, 2, (100,)))
    >>> graft = Graft(torch.nn.Linear(4, 2), data, selector=InfoBatchSelector(8))
    >>> graft.set_epoch(0)
    >>> graft.fraction_achieved()  # nothing recorded yet: every sample is kept
    1.0
    """

    name = "infobatch"
    reads = "record"  # the training losses
    wants_embeddings = False
    layer = None
    rounds_every_epoch = True

    def __init__(
        self, epochs: int, *, prune_ratio: float = 0.5, delta: float = 0.875
    ) -> None:
        self.epochs = check_count("epochs", epochs, example=8)  # of training
        self.prune_ratio = check_number(
            "prune_ratio", prune_ratio, low=0, high=1, open_high=True, example=0.5
        )
        self.delta = check_number(
            "delta", delta, low=0, high=1, open_low=True, example=0.875
        )

    @property
    def fraction(self):
        """The expected share kept when half the samples are well learned."""
        return 1.0 - self.prune_ratio / 2

    def select_round(self, round: Round) -> RoundSelection:
        """The epoch's kept samples and their weights."""
        record, epoch, generator = round.record, round.epoch, round.generator
        n = record.n_samples
        everything = torch.arange(n)
        if epoch >= self.delta * self.epochs or record.loss is None:
            return RoundSelection(everything, torch.ones(n), [n])
        loss = record.loss.cpu()
        seen = torch.isfinite(loss)
        if not bool(seen.any()):
            return RoundSelection(everything, torch.ones(n), [n])
        well = seen & (loss < loss[seen].mean())
        pruned = well & (torch.rand(n, generator=generator) < self.prune_ratio)
        kept = torch.nonzero(~pruned)[:, 0]
        weights = torch.where(well[kept], 1.0 / (1.0 - self.prune_ratio), 1.0)
        return RoundSelection(kept, weights, [len(kept)])


def graft_round(
    record,
    fraction,
    eps,
    generator,
    mix=0.5,
    allocation="loss",
    weighting="class",
    maxvol_rows=True,
):
    """GRAFT over a round's record: ``(indices, weights, ranks)``.

    The budget goes to the classes (the recorded labels; samples without a
    record form one more group, drawn uniformly) in proportion to their share
    of the recorded training loss (``allocation="loss"``; the last-layer
    gradient of a sample grows with its loss, so this is where the gradient
    needs more samples), or to their size (``"size"``), or equally
    (``"equal"``). In each class: the top principal directions of its
    centred embeddings, as many as the relative residual ``eps`` needs (at
    most the budget); the Fast MaxVol rows of those coordinates (among the
    ``16 r`` rows of largest leverage), kept for sure; the rest of the
    budget drawn without replacement with probability ``mix`` times
    leverage in those directions plus ``1 - mix`` uniform.
    Near-duplicates share their leverage, so they are drawn about as often as
    one sample. Weights are the inverse inclusion probabilities, rescaled to
    mean 1 within each class (``weighting="class"``: each class weighs what
    its budget says) or over the whole selection (``"unbiased"``: the
    weighted loss estimates the full-data loss). ``maxvol_rows=False`` drops
    the Fast MaxVol rows (all of the budget is drawn).
    """
    n = record.n_samples
    k = budget(fraction, n)
    if record.embedding is None or record.epoch is None:
        return uniform_round(n, fraction, generator)
    seen = (record.epoch >= 0).cpu().numpy()
    labels = np.full(n, -1, dtype=np.int64)
    if record.target is not None:
        labels = record.target.cpu().numpy().copy()
    labels[~seen] = -2  # the unrecorded group
    classes, counts, groups = _groups(labels)
    alloc = _allocation(allocation, record, labels, classes, counts, k)
    E = record.embedding.cpu()  # float32, no copy on the CPU
    chosen, inclusion, ranks = [], [], []
    with _one_blas_thread():
        for rows, kc, c in zip(groups, alloc, classes.tolist(), strict=True):
            if kc == 0:
                continue
            if c == -2 or kc >= len(rows):
                order, p = _uniform(torch.as_tensor(rows), kc, generator)
                rank = 0
            else:
                local, p, rank = _class_round(
                    take_rows(E, rows), kc, eps, mix, generator, maxvol_rows
                )
                order = torch.as_tensor(rows[np.asarray(local)])
            chosen.append(order)
            inclusion.append(p)
            ranks.append(rank)
    if weighting == "class":  # mean one within each class: its budget share
        weights = torch.cat([mean_one(1.0 / p) for p in inclusion])
    else:
        weights = mean_one(1.0 / torch.cat(inclusion))
    return RoundSelection(torch.cat(chosen), weights.float(), ranks)


def _groups(labels):
    """The labels present, their counts and their rows, ascending.

    A counting pass and a stable radix sort of the labels (int16 when they
    fit): over 60000 samples 0.5 ms, where ``np.unique`` and an int64
    argsort took 2 ms.
    """
    shifted = labels - labels.min()
    counts = np.bincount(shifted)
    present = np.flatnonzero(counts)
    if shifted.max() < np.iinfo(np.int16).max:
        shifted = shifted.astype(np.int16)  # NumPy radix-sorts small integers
    by_label = np.argsort(shifted, kind="stable")
    counts = counts[present]
    classes = present + labels.min()
    return classes, counts, np.split(by_label, np.cumsum(counts)[:-1])


def take_rows(E, rows):
    """``E[rows]`` as a NumPy array, by ``torch.index_select``.

    It copies whole rows: gathering the ten classes of a 60000 x 128 float32
    record took 0.9-1.6 ms, NumPy's fancy indexing (element by element)
    3.4-11.8 ms.
    """
    if isinstance(E, np.ndarray):
        E = torch.from_numpy(E)
    return torch.index_select(E, 0, torch.as_tensor(rows)).numpy()


def _allocation(rule, record, labels, classes, counts, k):
    """The budget of each group: by size, by recorded loss mass, or equal."""
    if rule == "size":
        return allocate(counts.tolist(), k).tolist()
    if rule == "equal":
        shares = np.ones(len(counts))
    else:  # "loss": the group's share of the recorded loss
        loss = np.nan_to_num(record.loss.cpu().numpy(), nan=0.0)
        base = labels.min()
        shares = np.bincount(labels - base, weights=loss)[classes - base]
        shares[classes == -2] = 0.0
        seen_total = shares.sum()
        mean = seen_total / max(1, counts[classes != -2].sum())
        shares[classes == -2] = mean * counts[classes == -2]  # unrecorded: the mean
    return _capped(shares, counts, k)


def _capped(shares, counts, k):
    """Integer budgets in proportion to ``shares``, none above its group's size."""
    alloc = np.zeros(len(counts), dtype=np.int64)
    open_ = counts > 0
    left = k
    while left > 0 and open_.any():
        s = np.where(open_, shares + 1e-12, 0.0)
        extra = np.floor(left * s / s.sum()).astype(np.int64)
        if extra.sum() == 0:
            extra[np.argmax(s)] = 1
        alloc = np.minimum(alloc + extra, counts)
        left = k - alloc.sum()
        open_ = alloc < counts
    return alloc.tolist()


def _one_blas_thread():
    """One BLAS thread for the round's small products, if threadpoolctl is there.

    Right after the training step torch's threads are still spinning; a
    second pool of BLAS threads competing with them doubled the round's time
    on two cores.
    """
    controller = _threadpools()
    if controller is None:  # pragma: no cover - scikit-learn brings threadpoolctl
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


@functools.cache
def _threadpools():
    """The loaded thread pools, found once (a scan costs ~2 ms, a round ~30 ms).

    By the first round NumPy, SciPy and torch, whose BLAS the round uses, are
    loaded.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController()


def _uniform(rows, k, generator):
    pick = torch.randperm(len(rows), generator=generator)[:k]
    return rows[pick], torch.full((len(pick),), min(1.0, k / len(rows)))


# Rows of a class that estimate its principal directions (a uniform sample of
# them for a larger class): on the 5600-row classes of a recorded MLP (d = 128)
# the top directions of 1024 rows' Gram capture 99.9 % of the variance the
# exact ones do, with a rank 0-3 lower, in about a quarter of the time.
GRAM_ROWS = 1024
# Candidates of a class's MaxVol rows per direction (see _maxvol_rows).
POOL = 16
# Width of the randomized eigendecomposition of a wider Gram (d > SKETCH + 16):
# its top eigenvalues come within 0.1 % of LAPACK's after one power step, in
# 0.34 ms against eigh's 0.8 ms at d = 128.
SKETCH = 48


def _class_round(H, k, eps, mix, generator, maxvol_rows=True):
    """``k`` of the rows of one class's embeddings ``H``: local order, inclusion.

    In NumPy throughout (float32 as recorded): mixing torch kernels with the
    BLAS threads of ``fast_maxvol`` makes both wait for each other on a small
    machine.
    """
    m = len(H)
    u = torch.rand(m, generator=generator, dtype=torch.float64).numpy()
    mean = _mean(H)
    gram = _centred_gram(H, mean, generator)
    total = float(np.trace(gram))
    if total <= 0:
        return (*_uniform(torch.arange(m), k, generator), 0)
    lam, V = _top_eigen(gram, eps, total, generator)
    residual = np.sqrt(np.clip(total - np.cumsum(lam), 0, None) / total)
    rank = int(np.argmax(residual <= eps)) + 1 if (residual <= eps).any() else len(lam)
    # Directions below the working precision of H (float32 as recorded) are noise,
    # and Fast MaxVol would refuse a rank-deficient Z.
    floor = 100 * float(np.finfo(H.dtype).eps) * lam[0]
    rank = max(1, min(rank, k, int((lam > floor).sum())))
    P = (V[:, :rank] / np.sqrt(lam[:rank])).astype(H.dtype)
    Z = H @ P - (mean @ P).astype(H.dtype)  # ~U of the thin SVD of the centred rows
    lev = np.einsum("ij,ij->i", Z, Z)
    core = _maxvol_rows(Z, lev) if maxvol_rows else np.zeros(0, dtype=np.int64)
    q = mix * lev / lev.sum() + (1 - mix) / m
    q[core] = 0
    rest = k - len(core)
    pi = np.minimum(rest * q / q.sum(), 1.0) if rest else np.zeros(m)
    pi[core] = 1.0
    with np.errstate(divide="ignore"):
        keys = np.log(q) - np.log(-np.log(np.clip(u, 1e-300, None)))
    keys[core] = np.inf
    top = np.argpartition(-keys, k - 1)[:k] if k < m else np.arange(m)
    order = top[np.argsort(-keys[top], kind="stable")]
    return (
        torch.as_tensor(order),
        torch.as_tensor(np.maximum(pi[order], 1e-12)),
        rank,
    )


def _maxvol_rows(Z, lev):
    """Fast MaxVol rows of ``Z`` among its ``POOL * r`` rows of largest leverage.

    By Hadamard's inequality a row adds at most its norm (the square root
    of its leverage) to the volume of any ``r`` rows, so the rows of small
    leverage rarely belong to the largest volume. On the classes of a
    recorded MLP (ranks 15 and 30) the pool's log volume came within 0.7 of
    that of Fast MaxVol on all rows (-33 to -62), sometimes above it, in a
    quarter of the time (0.11 against 0.44 ms at 4000 x 15).
    """
    size = POOL * Z.shape[1]
    if size < len(Z):
        pool = np.argpartition(-lev, size - 1)[:size]
        try:
            return pool[fast_maxvol(Z[pool]).indices]
        except ValueError:  # the pool spans fewer directions than Z: all rows
            pass
    return fast_maxvol(Z).indices


def _mean(H):
    """The float64 mean row of ``H`` by one BLAS product.

    Not ``H.mean(dtype=float64)``: that converts ``H`` row by row.
    """
    return (np.ones(len(H), dtype=H.dtype) @ H).astype(np.float64) / len(H)


def _centred_gram(H, mean, generator):
    """``m`` times the covariance of the rows of ``H`` (d x d, float64).

    From the d x d Gram matrix (d << m), centred as ``H^T H - m mu mu^T``
    without a centred copy of ``H``; for more than :data:`GRAM_ROWS` rows,
    from a uniform sample of them (centred on its own mean, so the estimate
    stays positive semidefinite), scaled to ``m`` rows.
    """
    m = len(H)
    if m <= GRAM_ROWS:
        return (H.T @ H).astype(np.float64) - m * np.outer(mean, mean)
    sample = take_rows(H, torch.randperm(m, generator=generator)[:GRAM_ROWS])
    centre = _mean(sample)
    gram = (sample.T @ sample).astype(np.float64) - GRAM_ROWS * np.outer(centre, centre)
    return gram * (m / GRAM_ROWS)


def _top_eigen(gram, eps, total, generator):
    """Leading eigenpairs of ``gram``, descending, enough for the residual ``eps``.

    A d x d Gram with ``d > SKETCH + 16`` goes through a randomized range
    finder of :data:`SKETCH` columns with one power step (Halko, Martinsson
    and Tropp 2011, algorithm 4.3); if its eigenvalues leave a relative
    residual above ``eps`` (of ``total``, the trace), the full
    eigendecomposition is taken instead.
    """
    d = len(gram)
    if d > SKETCH + 16:
        # float32 draws: torch's float64 normals took 0.1 ms, a fifth of the rest
        omega = torch.randn(d, SKETCH, generator=generator).numpy().astype(gram.dtype)
        Q, _ = np.linalg.qr(gram @ (gram @ omega))
        lam, W = np.linalg.eigh(Q.T @ gram @ Q)
        lam = np.clip(lam[::-1], 0, None)
        if total - lam.sum() <= (eps**2) * total:
            return lam, Q @ W[:, ::-1]
    lam, V = np.linalg.eigh(gram)
    return np.clip(lam[::-1], 0, None), V[:, ::-1]
