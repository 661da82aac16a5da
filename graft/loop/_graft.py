"""Graft: data selection inside the user's own training loop.

The user keeps their dataset, collate function, DataLoader options, model,
loss, optimizer, scheduler, AMP and gradient accumulation. Graft adds:

- :attr:`Graft.batch_sampler`, a ``Sampler[list[int]]`` that yields the
  dataset indices of each epoch's training batches (``set_epoch``, ``len``),
  and :meth:`Graft.dataloader`, a DataLoader over it whose batches are
  :class:`GraftBatch` ``(data, weights, indices)``;
- :meth:`Graft.set_epoch`, which runs a selection round when one is due;
- :meth:`Graft.update`, one call per step: the weighted mean of the
  per-sample losses, and the per-sample record (loss, embedding) of the
  training pass (``graft.selection._record``).

Two modes:

- ``"refresh"`` (the GRAFT paper's): every ``refresh_every`` epochs one
  selection round goes over the whole training set batch by batch with the
  current model (no gradients) and keeps, per batch, the rows the selector
  picks; the epochs in between train on that subset, reshuffled each epoch.
- ``"online"``: every batch of a full pass is reduced to its selection
  before the training step; the batch sampler selects as the DataLoader asks
  for the batch.

Indices are exact under shuffling, ``num_workers > 0``, prefetching,
persistent workers and ``torch.distributed`` (each process selects within its
shard; the selections and the record are all-gathered). All randomness comes
from generators seeded by ``(seed, epoch)``, so a run resumed from
``state_dict()`` selects and trains exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch.utils.data import DataLoader, Dataset

from graft._checks import check_choice, check_count, check_flag
from graft._features import eval_mode, find_final_linear
from graft._format import (
    BatchFormat,
    Classifier,
    IndexedCollate,
    IndexedDataset,
    to_device,
)
from graft.loop._batches import GraftBatch, GraftBatchSampler, GraftLoader
from graft.loop._checks import (
    check_dataset,
    check_device,
    check_model_type,
    check_state,
    check_targets,
)
from graft.loop._processes import (
    all_gather,
    process_batches,
    resolve_processes,
    seeded_generator,
    select_stream,
    unwrap,
)
from graft.selection import (
    RandomSelector,
    Round,
    SampleRecord,
    Selector,
    check_selector,
)

__all__ = ["Graft"]

# DataLoader options that the selection rounds' loaders take over from
# Graft.dataloader(), so that they read the data the same way.
_SHARED_LOADER_OPTIONS = (
    "collate_fn",
    "num_workers",
    "pin_memory",
    "worker_init_fn",
    "multiprocessing_context",
)
# DataLoader options that the batch sampler decides, and where to set them.
_SAMPLER_OPTIONS = {
    "batch_size": "Graft(batch_size=...)",
    "shuffle": "Graft(seed=...) (every epoch is shuffled)",
    "sampler": "Graft's batch sampler",
    "batch_sampler": "Graft's batch sampler",
    "drop_last": "Graft(drop_last=...)",
}


class _Capture:
    """The forward hook's target: the last input of the final ``nn.Linear``.

    A small object of its own, so that the hook a model carries holds no
    reference to the Graft (its dataset) when the model is copied or saved.
    """

    def __init__(self):
        self.embedding = None
        self.selecting = False

    def __call__(self, module, args, output):
        if not self.selecting:
            self.embedding = args[0].detach()


def _add_note(exc, note):
    """PEP 678 note on ``exc`` (kept as ``__notes__`` before Python 3.11)."""
    if hasattr(exc, "add_note"):
        try:
            exc.add_note(note)
        except TypeError:  # __notes__ is not a list: keep the error as it is
            pass
    else:  # pragma: no cover - Python 3.10
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]


class Graft:
    """Train on the samples a selector picks, in the user's own loop.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained (used, without gradients, to select).
    dataset : torch Dataset
        Rows of any format the collate function (default:
        ``torch.utils.data.default_collate``) turns into batches.
    selector : selector or None
        ``GraftSelector``, ``SageSelector``, ``RandomSelector``...; None
        trains on all data.
    batch_size : int, default=128
    refresh_every : int, default=5
        Epochs between selection rounds (mode ``"refresh"``).
    mode : {"refresh", "online"}, default="refresh"
    seed : int, default=0
    device : str, torch.device or None, default=None
        Where the selection runs; None: the model's device.
    inputs, targets : str, int, callable or None, default=None
        Where the model's inputs and the class labels are in a batch: a dict
        key, a tuple position or ``callable(batch)``. None: ``(x, y, ...)``
        tuples, dicts with common keys (``"pixel_values"``, ``"input_ids"``,
        ``"x"``, ... and ``"labels"``, ``"label"``, ``"y"``, ...), or a
        bare tensor (no targets). A dict of inputs is passed as keywords, a
        tuple as positional arguments.
    outputs : callable or None, default=None
        ``callable(model_output) -> logits``, e.g. ``lambda out:
        out.logits``; None: a tensor, a ``"logits"`` entry or attribute, or
        the first entry of a tuple.
    collate_fn : callable or None, default=None
        The collate function of the selection rounds (and the default of
        :meth:`dataloader`); :meth:`dataloader`'s ``collate_fn`` replaces it.
    num_workers : int, default=0
        DataLoader workers of the selection rounds (likewise).
    drop_last : bool, default=False
        Drop the last, incomplete training batch of every epoch.
    warm_start : int, default=0
        The first ``warm_start`` epochs train on uniformly random subsets of
        the selector's ``fraction`` (a round at epoch 0, refreshed as usual),
        so that the first real selection round, at epoch ``warm_start``,
        sees a model that has learnt something. The data budget is the same.
    progress : bool, default=False
        tqdm progress bars for the selection rounds, if tqdm is installed.
    on_round : callable or None, default=None
        ``on_round(entry)`` after each selection, with the epoch's
        :attr:`history` entry (``epoch``, ``samples``, ``fraction``,
        ``selection_time_s``, ``ranks``): after every round in refresh mode,
        at the end of every epoch online. E.g. :class:`TensorBoardLogger`, or
        any logger's ``log`` wrapped in a function. On every process; log
        from one.
    process_rank, world_size : int or None, default=None
        This process's rank and the number of processes; None takes them from
        ``torch.distributed`` when it is initialised (else 0 and 1). Each
        rank selects within its shard of every epoch's order of the dataset
        (global batches of ``batch_size * world_size`` samples dealt to the
        ranks, as ``DistributedSampler`` does, from generators all processes
        share), so the shards are disjoint; the selected dataset indices and
        the record are all-gathered, every process holds their union (state and
        accounting are global) and trains on its share of it, and every process
        gets the same number of batches. With a ``DistributedDataParallel``
        model, selection runs on its ``module``, without collectives. Every
        rank must go through all the batches of an epoch.

    Attributes
    ----------
    batch_sampler : GraftBatchSampler
        The dataset indices of the current epoch's batches.
    record : SampleRecord
        Per-sample loss, epoch and embedding of the last training pass of
        each sample (``record.loss``, ``record.epoch``, ``record.embedding``).
    history : list of dict
        One record per epoch: ``epoch``, ``samples`` (all processes),
        ``process_samples``, ``fraction``, ``selection_time_s``, ``ranks``.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from torch.utils.data import TensorDataset
    >>> from graft import Graft, RandomSelector
    >>> X, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    >>> model = torch.nn.Linear(8, 3)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> graft = Graft(model, TensorDataset(X, y), selector=RandomSelector(0.5),
    ...               batch_size=64)
    >>> loader = graft.dataloader()
    >>> for epoch in range(2):
    ...     graft.set_epoch(epoch)
    ...     for batch in loader:
    ...         x, t = batch.data
    ...         losses = F.cross_entropy(model(x), t, reduction="none")
    ...         loss = graft.update(batch, losses)
    ...         opt.zero_grad(); loss.backward(); opt.step()
    >>> len(loader), graft.fraction_achieved()
    (2, 0.5)
    """

    def __init__(
        self,
        model: torch.nn.Module | None,
        dataset: Dataset,
        *,
        selector: Selector | None = None,
        batch_size: int = 128,
        refresh_every: int = 5,
        mode: Literal["refresh", "online"] = "refresh",
        seed: int = 0,
        device: str | torch.device | None = None,
        inputs: str | int | Callable | None = None,
        targets: str | int | Callable | None = None,
        outputs: Callable | None = None,
        collate_fn: Callable | None = None,
        num_workers: int = 0,
        drop_last: bool = False,
        warm_start: int = 0,
        progress: bool = False,
        process_rank: int | None = None,
        world_size: int | None = None,
        on_round: Callable[[dict], None] | None = None,
    ) -> None:
        mode = check_choice("mode", mode, ("refresh", "online"))
        self.batch_size = check_count("batch_size", batch_size, 1)
        self.refresh_every = check_count("refresh_every", refresh_every, 1)
        self.warm_start = check_count("warm_start", warm_start, 0)
        self.seed = check_count("seed", seed, 0)
        check_count("num_workers", num_workers, 0)
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(
                f"collate_fn must be callable, got {type(collate_fn).__name__}."
            )
        drop_last = check_flag("drop_last", drop_last)
        check_model_type(model)
        check_selector(selector, mode)
        check_dataset(dataset)
        self.model = model
        self.dataset = dataset
        self.selector = selector
        self.mode = mode
        self.device = check_device(device)
        self.format = BatchFormat(inputs, targets, outputs)
        self.drop_last = drop_last
        self.progress = check_flag("progress", progress)
        if on_round is not None and not callable(on_round):
            raise TypeError(
                f"on_round must be callable(entry) or None, got "
                f"{type(on_round).__name__}; e.g. on_round=TensorBoardLogger('runs')."
            )
        self.on_round = on_round
        self.process_rank, self.world_size = resolve_processes(process_rank, world_size)
        self._load_options = {"collate_fn": collate_fn, "num_workers": num_workers}
        self.batch_sampler = GraftBatchSampler(self)
        self.record = SampleRecord(len(dataset))
        self.history = []
        self._selection = None  # (indices, weights) of the last round
        self._selected_at = None
        self._weight_of = torch.ones(len(dataset))  # each sample's weight this epoch
        self._epoch = None  # the epoch set last
        self._plan = None  # this process's batches of the epoch (online: to select in)
        self._hook = None  # (layer, handle) of the embedding hook
        self._capture = _Capture()  # what the hook saw last
        self._iterated = None  # the epoch whose batches were served last
        # Where the loader takes the epoch from when it is iterated before
        # set_epoch (Lightning builds the first iterator before it sets it).
        self._epoch_source = None

    # -- the loop's pieces -------------------------------------------------------

    def dataloader(self, **kwargs):
        """A loader over :attr:`batch_sampler` whose batches are :class:`GraftBatch`.

        Takes any ``torch.utils.data.DataLoader`` keyword except those the
        batch sampler decides (``batch_size``, ``shuffle``, ``sampler``,
        ``batch_sampler``, ``drop_last``: set them on ``Graft``).
        ``collate_fn``, ``num_workers``, ``pin_memory``, ``worker_init_fn``
        and ``multiprocessing_context`` also become those of the selection
        rounds, so that they read the batches the same way.
        """
        for key, where in _SAMPLER_OPTIONS.items():
            if key in kwargs:
                raise ValueError(
                    f"{key} is decided by the batch sampler of Graft; set it "
                    f"with {where}, not in graft.dataloader()."
                )
        if "num_workers" in kwargs:
            check_count("num_workers", kwargs["num_workers"], 0)
        shared = {k: kwargs[k] for k in _SHARED_LOADER_OPTIONS if k in kwargs}
        self._load_options = {**self._load_options, **shared}
        loader = self._indexed_loader(
            self.batch_sampler, {**self._load_options, **kwargs}
        )
        return GraftLoader(self, loader)

    def _indexed_loader(self, batch_sampler, options):
        """A DataLoader of ``(collated rows, dataset indices)`` batches."""
        options = {**options, "collate_fn": IndexedCollate(options.get("collate_fn"))}
        return DataLoader(
            IndexedDataset(self.dataset), batch_sampler=batch_sampler, **options
        )

    def set_epoch(self, epoch):
        """Start epoch ``epoch`` (from 0): a selection round if one is due."""
        epoch = check_count("epoch", epoch, 0)
        if epoch == self._epoch and self._plan is not None:
            return  # already set (Lightning may set it after the loader did)
        self._check_model()
        self.record.sync(self.world_size, lambda x: all_gather(x, self.world_size))
        self._attach_hook()
        start, ranks = time.perf_counter(), []
        if self.selector is not None and self.mode == "refresh" and self._due(epoch):
            ranks = self.refresh(epoch)
        selection_time = time.perf_counter() - start
        everything = torch.arange(len(self.dataset))
        if self.selector is None:
            served = everything
            self._weight_of = torch.ones(len(self.dataset))
        elif self.mode == "online":
            served = everything
            self._weight_of = torch.zeros(len(self.dataset))
        else:
            served = self._selection[0]
        self._epoch = epoch
        self._plan = self._batches(served, epoch, "train")
        entry = {
            "epoch": epoch,
            "samples": 0,
            "process_samples": 0,
            "selection_time_s": selection_time,
            "ranks": ranks,
        }
        self.history = [h for h in self.history if h["epoch"] != epoch] + [entry]
        if self.selector is None or self.mode == "refresh":
            entry["process_samples"] = sum(map(len, self._plan))
            self._close_epoch(entry, report=self._selected_at == epoch)

    def update(self, batch, losses):
        """The weighted mean loss of ``batch``; records its per-sample losses.

        Parameters
        ----------
        batch : GraftBatch
            A batch of :meth:`dataloader`.
        losses : Tensor of shape (len(batch.indices),)
            The per-sample losses of the training forward pass (e.g.
            ``F.cross_entropy(logits, y, reduction="none")``).

        Returns
        -------
        Tensor
            ``(batch.weights * losses).mean()``, to call ``backward`` on.
        """
        if not isinstance(batch, GraftBatch):
            raise TypeError(
                f"batch must be a GraftBatch of graft.dataloader(), got "
                f"{type(batch).__name__}."
            )
        if not isinstance(losses, torch.Tensor):
            raise TypeError(f"losses must be a Tensor, got {type(losses).__name__}.")
        n = len(batch.indices)
        if losses.ndim == 0:
            raise ValueError(
                "losses is a scalar (shape ()), so the selection weights cannot be "
                "applied; compute one loss per sample with reduction='none', e.g. "
                "F.cross_entropy(logits, y, reduction='none')."
            )
        if losses.shape != (n,):
            raise ValueError(
                f"losses has shape {tuple(losses.shape)} but the batch has {n} "
                f"samples; pass one loss per sample, shape ({n},) (reduce token or "
                "pixel losses per sample first)."
            )
        embeddings = self._take_embeddings(n)
        targets = self.format.targets(batch.data)
        self.record.write(batch.indices, losses, embeddings, self._epoch, targets)
        weights = batch.weights.to(losses.device, non_blocking=True)
        return (weights * losses).mean()

    @property
    def selected_indices(self):
        """Dataset indices of the current selection (a copy), or None."""
        return None if self._selection is None else self._selection[0].clone()

    @property
    def selected_weights(self):
        """Loss weights of the current selection (a copy), or None."""
        return None if self._selection is None else self._selection[1].clone()

    def weights_of(self, indices):
        """The current epoch's loss weights of the samples ``indices``.

        For a DataLoader of your own over :attr:`batch_sampler` whose
        batches carry their dataset indices:
        ``graft.update(GraftBatch(data, graft.weights_of(i), i), losses)``.
        """
        indices = torch.as_tensor(indices).cpu()
        n = len(self.dataset)
        if indices.is_floating_point() or indices.dtype == torch.bool:
            raise TypeError(f"indices must be integers, got {indices.dtype}.")
        if indices.numel() and not (0 <= int(indices.min()) <= int(indices.max()) < n):
            raise ValueError(
                f"indices must be dataset indices in [0, {n - 1}], got values in "
                f"[{int(indices.min())}, {int(indices.max())}]."
            )
        return self._weight_of[indices]

    def batches(self, epoch):
        """``set_epoch(epoch)``, then the epoch's :class:`GraftBatch` es."""
        self.set_epoch(epoch)
        return iter(self.dataloader())

    def close(self):
        """Remove the forward hook that records the embeddings."""
        if self._hook is not None:
            self._hook[1].remove()
            self._hook = None
        self._capture.embedding = None

    # -- epochs ------------------------------------------------------------------

    def _check_model(self):
        if self.model is None:
            raise RuntimeError(
                "Graft has no model; pass it as Graft(model, dataset, ...) (the "
                "Lightning callback sets it when the trainer starts)."
            )

    def _due(self, epoch):
        return (
            self._selection is None
            or self._selector_at(epoch).rounds_every_epoch
            or epoch - self._selected_at >= self.refresh_every
            or self._selected_at < self.warm_start <= epoch
        )

    def _batches(self, indices, epoch, stream):
        """The process's batches of ``indices``, shuffled for ``(epoch, stream)``."""
        order = indices[
            torch.randperm(
                len(indices), generator=seeded_generator(self.seed, epoch, stream)
            )
        ]
        drop_last = self.drop_last and stream == "train"  # rounds see every sample
        return process_batches(
            order, self.batch_size, self.process_rank, self.world_size, drop_last
        )

    def _num_batches(self):
        if self._plan is not None:
            return len(self._plan)
        if self.selector is not None and self.mode == "refresh":
            raise TypeError(
                "the number of batches of an epoch is known once graft.set_epoch("
                "epoch) has made its selection round; call set_epoch first."
            )
        everything = torch.arange(len(self.dataset))
        return len(self._batches(everything, 0, "train"))

    def _epoch_batches(self):
        """The sampler's batches, decided when the first one is asked for.

        A generator: DataLoader iterators call ``iter(batch_sampler)`` more
        than once when they start and only draw from the last.
        """
        if self._plan is None and self._epoch_source is not None:
            self.set_epoch(self._epoch_source())
        if self._plan is None:
            raise RuntimeError(
                "call graft.set_epoch(epoch) at the start of every epoch, before "
                "iterating the loader (it runs the selection rounds)."
            )
        if self._iterated == self._epoch:
            warnings.warn(
                f"the loader of epoch {self._epoch} is iterated a second time: the "
                "same samples in the same order, and no new selection round; call "
                "graft.set_epoch(epoch) at the start of every epoch.",
                stacklevel=3,
            )
        self._iterated = self._epoch
        if self.selector is not None and self.mode == "online":
            yield from self._online_batches(self._epoch, self.history[-1])
        else:
            yield from [list(b) for b in self._plan]

    def _online_batches(self, epoch, entry):
        """Each batch of the epoch reduced to its selection, as it is asked for."""
        generator = seeded_generator(self.seed, epoch, select_stream(self.process_rank))
        selector = self._selector_at(epoch)
        last = len(self._plan) - 1
        entry.update(process_samples=0, ranks=[], selection_time_s=0.0)  # a new pass
        for k, (inputs, targets, indices) in enumerate(self._load(self._plan)):
            start = time.perf_counter()
            sel = self._select(selector, inputs, targets, generator)
            chosen = indices[sel.indices.cpu()]
            self._weight_of[chosen] = sel.weights.float().cpu()
            entry["selection_time_s"] += time.perf_counter() - start
            entry["ranks"].append(sel.rank)
            entry["process_samples"] += len(chosen)
            if k == last or self.world_size == 1:  # all processes at the last batch
                self._close_epoch(entry, report=k == last)  # a sized loader stops
            yield chosen.tolist()

    def _close_epoch(self, entry, report=True):
        """Global accounting of an epoch: the samples of all processes (disjoint).

        ``report``: a selection was made for this epoch, so ``on_round`` hears
        of it (a round in refresh mode; every epoch online).
        """
        counts = all_gather(entry["process_samples"], self.world_size)
        entry["samples"] = sum(counts)
        entry["fraction"] = entry["samples"] / len(self.dataset)
        if report and self.on_round is not None and self.selector is not None:
            self.on_round(dict(entry))

    # -- selection ---------------------------------------------------------------

    def _device(self):
        if self.device is not None:
            return self.device
        parameter = next(unwrap(self.model).parameters(), None)
        return torch.device("cpu") if parameter is None else parameter.device

    @contextlib.contextmanager
    def _evaluating(self):
        """The model in eval mode for a selection, back to its mode after."""
        self._capture.selecting = True
        try:
            with eval_mode(self.model):
                yield
        finally:
            self._capture.selecting = False

    def _selector_at(self, epoch):
        """The selector of ``epoch``: random ones during the warm start."""
        if epoch < self.warm_start:
            return RandomSelector(self.selector.fraction)
        return self.selector

    def _classifier(self):
        return Classifier(unwrap(self.model), self.format)

    def _select(self, selector, inputs, targets, generator):
        with self._evaluating():
            return selector.select(self._classifier(), inputs, targets, generator)

    def _load(self, batches, desc=None):
        """``(inputs, targets, indices)`` of ``batches``, on the selection's device."""
        loader = self._indexed_loader(batches, self._load_options)
        if self.progress and desc:
            loader = _tqdm(loader, desc)
        device = self._device()
        iterator = iter(loader)
        while True:
            try:
                data, indices = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                _add_note(
                    exc,
                    "while loading samples for selection (the dataset's rows and "
                    "collate_fn; the selection rounds use Graft's collate_fn or "
                    "that of graft.dataloader()).",
                )
                raise
            inputs, targets = self.format.inputs(data), self.format.targets(data)
            targets = check_targets(targets, indices)
            yield to_device(inputs, device), targets.to(device), indices

    def refresh(self, epoch):
        """Run one selection round over the whole dataset; return its ranks.

        The round is ``selector.select_round(round)`` with the
        :class:`graft.selection.Round` of the epoch (the record, the model in
        eval mode, this process's shard of the data). The new selection
        replaces the previous one only if the round succeeds: on an error the
        previous selection (and the model) are left as they were, and the
        error says so.
        """
        try:
            selector = self._selector_at(epoch)
            with self._evaluating():  # once for the round: no training in between
                chosen, weights, ranks = selector.select_round(
                    self._round(selector, epoch)
                )
            if selector.reads == "record":  # the same round on every process
                mine = torch.arange(self.process_rank, len(chosen), self.world_size)
                chosen, weights = chosen[mine], weights[mine]
        except Exception as exc:
            _add_note(
                exc,
                f"selection round at epoch {epoch} failed; the previous selection "
                "and the model are unchanged.",
            )
            raise
        # Every process keeps the union of the processes' (disjoint) selections.
        parts = all_gather((chosen.cpu(), weights.cpu()), self.world_size)
        self._set_selection(
            torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), epoch
        )
        self._process_counts = [len(p[0]) for p in parts]  # process r's: the r-th part
        return ranks

    def _set_selection(self, indices, weights, epoch):
        self._selection = (indices, weights.float())
        self._selected_at = epoch
        self._weight_of = torch.zeros(len(self.dataset))
        self._weight_of[indices] = weights.float()

    def _round(self, selector, epoch):
        """What the round of ``epoch`` may read (see graft.selection.Round)."""
        # A round from the record is computed by every process: one shared stream.
        if selector.reads == "record":
            stream = "record"
        else:
            stream = select_stream(self.process_rank)

        def batches():  # the whole dataset in the round's order, this process's shard
            order = self._batches(torch.arange(len(self.dataset)), epoch, "select")
            return self._load(order, f"selection round (epoch {epoch})")

        return Round(
            epoch=epoch,
            record=self.record,
            generator=seeded_generator(self.seed, epoch, stream),
            model=self._classifier(),
            batches=batches,
        )

    # -- the record --------------------------------------------------------------

    def _wants_embeddings(self):
        return self.selector is not None and self.selector.wants_embeddings

    def _attach_hook(self):
        """A forward hook on the final nn.Linear that keeps its last input."""
        if not self._wants_embeddings():
            self.close()
            return
        layer = find_final_linear(unwrap(self.model), self.selector.layer)
        if self._hook is not None and self._hook[0] is layer:
            return
        self.close()
        self._hook = (layer, layer.register_forward_hook(self._capture))

    def _take_embeddings(self, n):
        """The embeddings of the training forward pass of the batch being updated."""
        if self._hook is None:
            return None
        h, self._capture.embedding = self._capture.embedding, None
        if h is None or len(h) != n:
            seen = "no forward pass" if h is None else f"a forward pass of {len(h)}"
            raise ValueError(
                f"graft.update got {n} losses, but the model's final nn.Linear saw "
                f"{seen} samples since the last update; call the model once on the "
                "batch's inputs, then graft.update(batch, losses), before the next "
                "batch."
            )
        # Per-token (or per-pixel) inputs: their mean, one width for all batches.
        return h if h.ndim == 2 else h.reshape(n, -1, h.shape[-1]).mean(dim=1)

    def set_processes(self, process_rank, world_size):
        """Join ``world_size`` processes as ``process_rank`` (before the first epoch).

        For frameworks that start ``torch.distributed`` after the wrapper is
        built (the Lightning callback calls it in ``setup``); ``None`` for
        both takes them from ``torch.distributed``.
        """
        if self._plan is not None:  # a loaded selection is global: it may stay
            raise RuntimeError(
                "set_processes must come before the first set_epoch: the epochs "
                "planned so far were dealt to the processes as they were."
            )
        self.process_rank, self.world_size = resolve_processes(process_rank, world_size)

    # -- state ------------------------------------------------------------------

    def state_dict(self):
        """Everything needed to continue exactly: selection, round, record, history.

        Under ``torch.distributed`` call it on every process (it gathers the
        ranks' latest record entries, a collective) and save it from one:
        the record of the last epoch is otherwise only complete at the next
        ``set_epoch``, and a round from the record would resume differently.
        """
        self.record.sync(self.world_size, lambda x: all_gather(x, self.world_size))
        indices, weights = self._selection if self._selection else (None, None)
        if indices is not None:
            indices, weights = indices.clone(), weights.clone()
        return {
            "n_samples": len(self.dataset),
            "selected_indices": indices,
            "selected_weights": weights,
            "selected_at": self._selected_at,
            "record": self.record.state_dict(),
            "history": [dict(h) for h in self.history],
            "seed": self.seed,
        }

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`; refuse a state that does not fit.

        The seed and the dataset size must match, the selected indices must
        be distinct and in range, and their weights finite and >= 0;
        nothing is changed when the state is refused.
        """
        check_state(state, self.seed, len(self.dataset))
        self.record.check_state(state.get("record"))
        # The epoch is set anew: the next set_epoch plans from this state.
        self._epoch = self._plan = self._iterated = None
        if state["selected_indices"] is None:
            self._selection, self._selected_at = None, state["selected_at"]
        else:
            self._set_selection(
                state["selected_indices"].long().clone(),
                state["selected_weights"].clone(),
                state["selected_at"],
            )
        self.record.load_state_dict(state.get("record"), self._record_device())
        self.history = [dict(h) for h in state["history"]]

    def _record_device(self):
        return self._device() if self.model is not None else torch.device("cpu")

    def fraction_achieved(self):
        """Share of samples that got a backward pass, over the epochs so far."""
        if not self.history:
            return 0.0
        return sum(h["samples"] for h in self.history) / (
            len(self.history) * len(self.dataset)
        )


def _tqdm(iterable, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional
        return iterable
    return tqdm(iterable, desc=desc, leave=False)
