"""Graft: the training-loop wrapper that serves selected samples with weights.

Two modes:

- ``"refresh"`` (the GRAFT paper's): every ``refresh_every`` epochs one
  selection round goes over the whole training set batch by batch with the
  current model (no gradients) and keeps, per batch, the rows the selector
  picks; the epochs in between train on that subset, reshuffled each epoch.
- ``"online"``: every batch of a full pass is reduced to its selection
  before the backward pass.

Every batch carries the dataset index of each sample, so the selection is
exact under shuffling and ``num_workers > 0``. All randomness comes from
generators seeded by ``(seed, epoch)``, so a run resumed from
``state_dict()`` selects and trains exactly as an uninterrupted one.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

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
    progress : bool, default=False
        tqdm progress bars for the selection rounds, if tqdm is installed.

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
        progress=False,
    ):
        if mode not in ("refresh", "online"):
            raise ValueError(f"mode ({mode!r}) must be 'refresh' or 'online'.")
        for name, value in (
            ("batch_size", batch_size),
            ("refresh_every", refresh_every),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} ({value!r}) must be a positive integer.")
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
        self.progress = progress
        self._selection = None  # (indices, weights) of the last round
        self._selected_at = None
        self.history = []

    # -- batches -----------------------------------------------------------------

    def _loader(self, indices, epoch, stream):
        order = indices[
            torch.randperm(len(indices), generator=_generator(self.seed, epoch, stream))
        ]
        return DataLoader(
            torch.utils.data.Subset(self.dataset, order.tolist()),
            batch_size=self.batch_size,
            shuffle=False,
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
            gen = _generator(self.seed, epoch, "select")
            for x, y, i in self._loader(everything, epoch, "train"):
                x, y, i = self._to_device(x, y, i)
                t0 = time.perf_counter()
                sel = self._select(x, y, gen)
                record["selection_time_s"] += time.perf_counter() - t0
                record["ranks"].append(sel.rank)
                record["samples"] += len(sel.indices)
                rows = sel.indices
                yield GraftBatch(x[rows], y[rows], sel.weights, i[rows.cpu()])
        else:
            stale = (
                self._selection is None
                or epoch - self._selected_at >= self.refresh_every
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
        record["fraction"] = record["samples"] / len(self.dataset)
        record["epoch_time_s"] = time.perf_counter() - start
        self.history = [h for h in self.history if h["epoch"] != epoch] + [record]

    def _select(self, x, y, generator):
        was_training = self.model.training
        self.model.eval()
        try:
            return self.selector.select(self.model, x, y, generator)
        finally:
            self.model.train(was_training)

    def refresh(self, epoch):
        """Run one selection round over the whole dataset; return the ranks.

        The new selection replaces the previous one only if the round
        succeeds: on an error the previous selection (and the model) are
        left as they were.
        """
        gen = _generator(self.seed, epoch, "select")
        loader = self._loader(torch.arange(len(self.dataset)), epoch, "select")
        if self.progress:
            loader = _tqdm(loader, f"selection round (epoch {epoch})")
        chosen, weights, ranks = [], [], []
        try:
            for x, y, i in loader:
                x, y, i = self._to_device(x, y, i)
                sel = self._select(x, y, gen)
                chosen.append(i[sel.indices.cpu()])
                weights.append(sel.weights.cpu())
                ranks.append(sel.rank)
        except Exception as exc:
            raise type(exc)(
                f"selection round at epoch {epoch} failed ({exc}); the previous "
                "selection and the model are unchanged."
            ) from exc
        self._selection = (torch.cat(chosen), torch.cat(weights))
        self._selected_at = epoch
        return ranks

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
