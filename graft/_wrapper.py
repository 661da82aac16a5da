"""Graft: the training-loop wrapper that serves selected samples with weights.

Two modes:

- ``"refresh"`` (the GRAFT paper's): every ``refresh_every`` epochs one
  selection round goes over the whole training set batch by batch with the
  current model (no gradients) and keeps, per batch, the rows the selector
  picks; the epochs in between train on that subset, reshuffled each epoch.
- ``"online"``: every batch of a full pass is reduced to its selection
  before the backward pass.

Every batch carries the dataset index of each sample, so the selection is
exact under shuffling, ``num_workers > 0`` and ``torch.distributed`` (each
rank selects within its shard; the indices are all-gathered). All randomness
comes from generators seeded by ``(seed, epoch)``, so a run resumed from
``state_dict()`` selects and trains exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from graft._selectors import RandomSelector

__all__ = ["Graft", "GraftBatch", "train_epoch"]


@dataclass(frozen=True)
class GraftBatch:
    """A batch to train on: ``loss = (weights * per_sample_loss).mean()``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    indices: torch.Tensor


class _Indexed(Dataset):
    """``(x, y, i)`` for each sample of a ``(x, y)`` dataset."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, y, i


def _generator(seed, epoch, stream):
    """A torch generator for one purpose of one epoch (exact on resume).

    ``zlib.crc32`` rather than ``hash``: string hashes change between
    processes, and a resumed run must draw the same numbers.
    """
    return torch.Generator().manual_seed(
        zlib.crc32(f"{seed}:{epoch}:{stream}".encode())
    )


class Graft:
    """Serve each epoch's training batches from a selector's choice of samples.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained (used, without gradients, to select).
    dataset : torch Dataset of ``(input, target)`` pairs
    selector : selector or None
        ``GraftSelector``, ``RandomSelector``...; None trains on all data.
    batch_size : int, default=128
    refresh_every : int, default=5
        Epochs between selection rounds (mode ``"refresh"``).
    mode : {"refresh", "online"}, default="refresh"
    seed : int, default=0
    device : str or torch.device, default="cpu"
    num_workers : int, default=0
        DataLoader workers (indices stay exact).
    warm_start : int, default=0
        The first ``warm_start`` epochs train on uniformly random subsets of
        the selector's ``fraction`` (a round at epoch 0, refreshed as usual),
        so that the first real selection round, at epoch ``warm_start``,
        sees a model that has learnt something. The data budget is the same.
    progress : bool, default=False
        tqdm progress bars for the selection rounds, if tqdm is installed.
    rank, world_size : int or None, default=None
        This process's rank and the number of ranks; None takes them from
        ``torch.distributed`` when it is initialised (else 0 and 1). Each
        rank selects within its shard of every epoch's order of the dataset
        (global batches of ``batch_size * world_size`` samples dealt to the
        ranks, as ``DistributedSampler`` does, from generators all ranks
        share), so the shards are disjoint; the selected dataset indices are
        all-gathered, every rank holds their union (state and accounting
        are global) and trains on its share of it, and every rank gets the
        same number of batches. Selection within a batch is local to the
        rank (e.g. GRAFT's batch mean gradient is the rank's batch's).
        With a ``DistributedDataParallel`` model, selection runs on its
        ``module``, without collectives. Every rank must go through all the
        batches of an epoch.

    Examples
    --------
    >>> for epoch in range(epochs):  # doctest: +SKIP
    ...     for b in graft.batches(epoch):
    ...         loss = (b.weights * loss_fn(model(b.inputs), b.targets)).mean()
    ...         optimizer.zero_grad(); loss.backward(); optimizer.step()

    or simply ``train_epoch(graft, optimizer, epoch)``.
    """

    def __init__(
        self,
        model,
        dataset,
        *,
        selector=None,
        batch_size=128,
        refresh_every=5,
        mode="refresh",
        seed=0,
        device="cpu",
        num_workers=0,
        warm_start=0,
        progress=False,
        rank=None,
        world_size=None,
    ):
        if mode not in ("refresh", "online"):
            raise ValueError(f"mode ({mode!r}) must be 'refresh' or 'online'.")
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("refresh_every", refresh_every, 1),
            ("warm_start", warm_start, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                kind = "a positive integer" if low else "an integer >= 0"
                raise ValueError(f"{name} ({value!r}) must be {kind}.")
        if len(dataset) == 0:
            raise ValueError("dataset is empty; pass a dataset with samples.")
        self.model = model
        self.dataset = _Indexed(dataset)
        self.selector = selector
        self.batch_size = batch_size
        self.refresh_every = refresh_every
        self.mode = mode
        self.seed = seed
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.warm_start = warm_start
        self.progress = progress
        self.rank, self.world_size = _resolve_ranks(rank, world_size)
        self._selection = None  # (indices, weights) of the last round
        self._selected_at = None
        self.history = []

    # -- batches -----------------------------------------------------------------

    def _loader(self, indices, epoch, stream):
        order = indices[
            torch.randperm(len(indices), generator=_generator(self.seed, epoch, stream))
        ]
        return DataLoader(
            self.dataset,
            batch_sampler=_rank_batches(
                order, self.batch_size, self.rank, self.world_size
            ),
            num_workers=self.num_workers,
        )

    def _to_device(self, x, y, i):
        return x.to(self.device), y.to(self.device), i

    def batches(self, epoch):
        """Yield the :class:`GraftBatch` es of ``epoch`` (epochs count from 0)."""
        start = time.perf_counter()
        record = {"epoch": epoch, "samples": 0, "selection_time_s": 0.0, "ranks": []}
        everything = torch.arange(len(self.dataset))
        if self.selector is None:
            for x, y, i in self._loader(everything, epoch, "train"):
                x, y, i = self._to_device(x, y, i)
                record["samples"] += len(y)
                yield GraftBatch(x, y, torch.ones(len(y), device=self.device), i)
        elif self.mode == "online":
            gen = _generator(self.seed, epoch, _select_stream(self.rank))
            selector = self._selector_at(epoch)
            for x, y, i in self._loader(everything, epoch, "train"):
                x, y, i = self._to_device(x, y, i)
                t0 = time.perf_counter()
                sel = self._select(selector, x, y, gen)
                record["selection_time_s"] += time.perf_counter() - t0
                record["ranks"].append(sel.rank)
                record["samples"] += len(sel.indices)
                rows = sel.indices
                yield GraftBatch(x[rows], y[rows], sel.weights, i[rows.cpu()])
        else:
            stale = (
                self._selection is None
                or epoch - self._selected_at >= self.refresh_every
                or self._selected_at < self.warm_start <= epoch
            )
            if stale:
                t0 = time.perf_counter()
                record["ranks"] = self.refresh(epoch)
                record["selection_time_s"] += time.perf_counter() - t0
            indices, weights = self._selection
            weight_of = dict(zip(indices.tolist(), weights.tolist(), strict=True))
            for x, y, i in self._loader(indices, epoch, "train"):
                x, y, i = self._to_device(x, y, i)
                record["samples"] += len(y)
                w = torch.tensor([weight_of[j] for j in i.tolist()], device=self.device)
                yield GraftBatch(x, y, w, i)
        # Accounting is global: the samples of all ranks (disjoint shards).
        record["rank_samples"] = record["samples"]
        record["samples"] = sum(_all_gather(record["samples"], self.world_size))
        record["fraction"] = record["samples"] / len(self.dataset)
        record["epoch_time_s"] = time.perf_counter() - start
        self.history = [h for h in self.history if h["epoch"] != epoch] + [record]

    @contextlib.contextmanager
    def _evaluating(self):
        """The model in eval mode for a selection, back to its mode after."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _selector_at(self, epoch):
        """The selector of ``epoch``: random ones during the warm start."""
        if epoch < self.warm_start:
            return RandomSelector(self.selector.fraction)
        return self.selector

    def _select(self, selector, x, y, generator):
        with self._evaluating():
            return selector.select(_unwrap(self.model), x, y, generator)

    def refresh(self, epoch):
        """Run one selection round over the whole dataset; return the ranks.

        Selectors with a ``select_round(model, batches)`` method (SAGE) get
        the whole round; the others select batch by batch. The new selection
        replaces the previous one only if the round succeeds: on an error the
        previous selection (and the model) are left as they were.
        """
        try:
            selector = self._selector_at(epoch)
            if hasattr(selector, "select_round"):
                with self._evaluating():
                    chosen, weights, ranks = selector.select_round(
                        _unwrap(self.model), lambda: self._selection_batches(epoch)
                    )
            else:
                chosen, weights, ranks = self._select_batchwise(selector, epoch)
        except Exception as exc:
            raise type(exc)(
                f"selection round at epoch {epoch} failed ({exc}); the previous "
                "selection and the model are unchanged."
            ) from exc
        # Every rank keeps the union of the ranks' (disjoint) selections.
        parts = _all_gather((chosen.cpu(), weights.cpu()), self.world_size)
        chosen = torch.cat([p[0] for p in parts])
        weights = torch.cat([p[1] for p in parts])
        self._rank_counts = [len(p[0]) for p in parts]  # rank r's: the r-th part
        self._selection = (chosen, weights.cpu())
        self._selected_at = epoch
        return ranks

    def _selection_batches(self, epoch):
        """The whole dataset in the round's order, as ``(x, y, indices)``."""
        loader = self._loader(torch.arange(len(self.dataset)), epoch, "select")
        if self.progress:
            loader = _tqdm(loader, f"selection round (epoch {epoch})")
        for x, y, i in loader:
            yield self._to_device(x, y, i)

    def _select_batchwise(self, selector, epoch):
        gen = _generator(self.seed, epoch, _select_stream(self.rank))
        chosen, weights, ranks = [], [], []
        for x, y, i in self._selection_batches(epoch):
            sel = self._select(selector, x, y, gen)
            chosen.append(i[sel.indices.cpu()])
            weights.append(sel.weights.cpu())
            ranks.append(sel.rank)
        return torch.cat(chosen), torch.cat(weights), ranks

    # -- state ------------------------------------------------------------------

    def state_dict(self):
        """Everything needed to continue exactly: selection, round, history."""
        indices, weights = self._selection if self._selection else (None, None)
        return {
            "selected_indices": indices,
            "selected_weights": weights,
            "selected_at": self._selected_at,
            "history": [dict(h) for h in self.history],
            "seed": self.seed,
        }

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`; the seed must match."""
        if state["seed"] != self.seed:
            raise ValueError(
                f"the state was saved with seed={state['seed']} but this Graft has "
                f"seed={self.seed}; construct it with the same seed."
            )
        if state["selected_indices"] is None:
            self._selection = None
        else:
            self._selection = (state["selected_indices"], state["selected_weights"])
        self._selected_at = state["selected_at"]
        self.history = [dict(h) for h in state["history"]]

    def fraction_achieved(self):
        """Share of samples that got a backward pass, over the epochs so far."""
        if not self.history:
            return 0.0
        return sum(h["samples"] for h in self.history) / (
            len(self.history) * len(self.dataset)
        )


def train_epoch(graft, optimizer, epoch, loss_fn=None):
    """One epoch of weighted training on ``graft.batches(epoch)``; the mean loss.

    ``loss_fn(outputs, targets)`` must return per-sample losses; the default
    is cross-entropy with ``reduction="none"``. The batch loss is
    ``(weights * losses).mean()``.
    """
    loss_fn = loss_fn or (
        lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none")
    )
    model = graft.model
    model.train()
    total, count = 0.0, 0
    for batch in graft.batches(epoch):
        losses = loss_fn(model(batch.inputs), batch.targets)
        loss = (batch.weights * losses).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch}; lower the learning rate or check "
                "the inputs."
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(batch.targets)
        count += len(batch.targets)
    return total / max(count, 1)


def _tqdm(iterable, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional
        return iterable
    return tqdm(iterable, desc=desc, leave=False)


# -- torch.distributed ------------------------------------------------------------


def _resolve_ranks(rank, world_size):
    """``(rank, world_size)``: given, from ``torch.distributed``, or (0, 1)."""
    dist = torch.distributed
    ready = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if ready else 1
    if rank is None:
        rank = dist.get_rank() if ready else 0
    for name, value in (("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}.")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank ({rank}) and world_size ({world_size}) must satisfy "
            "0 <= rank < world_size; pass None for both to take them from "
            "torch.distributed."
        )
    if world_size > 1 and not ready:
        raise ValueError(
            f"world_size ({world_size}) > 1 needs torch.distributed: call "
            "torch.distributed.init_process_group first, or pass world_size=None."
        )
    return rank, world_size


def _rank_batches(order, batch_size, rank, world_size):
    """The batches (lists of dataset indices) of ``order`` for one rank.

    Global batches of ``batch_size * world_size`` consecutive entries are
    dealt to the ranks round-robin, so the ranks' shards are disjoint and
    every rank gets the same number of batches (DDP needs that). A last
    global batch with fewer entries than ranks joins the previous one, so
    no rank gets an empty batch. With one rank: plain consecutive batches.
    """
    n = len(order)
    if n < world_size:
        raise ValueError(
            f"{n} samples cannot be shared by world_size={world_size} ranks; "
            "use more data or fewer ranks."
        )
    step = batch_size * world_size
    bounds = [*range(0, n, step), n]
    if len(bounds) > 2 and n - bounds[-2] < world_size:
        del bounds[-2]
    return [
        order[bounds[k] : bounds[k + 1]][rank::world_size].tolist()
        for k in range(len(bounds) - 1)
    ]


def _all_gather(obj, world_size):
    """``[obj of rank 0, obj of rank 1, ...]`` (just ``[obj]`` on one rank)."""
    if world_size == 1:
        return [obj]
    out = [None] * world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def _select_stream(rank):
    """The generator stream of a rank's selections (one rank: as before)."""
    return "select" if rank == 0 else f"select:{rank}"


def _unwrap(model):
    """The module a ``DistributedDataParallel`` wraps (selection needs no sync)."""
    ddp = torch.nn.parallel.DistributedDataParallel
    return model.module if isinstance(model, ddp) else model
