"""GRAFT selection inside a Lightning ``Trainer`` run (optional integration).

:class:`GraftCallback` owns a :class:`graft.Graft` wrapper and serves its
batches to ``lightning.pytorch.Trainer.fit``: the selection rounds, the
dataset indices, the weights, the history and the state are the wrapper's,
so a Lightning run selects exactly the samples that a plain ``Graft`` loop
with the same seed and selector selects. The callback only forwards the
trainer's events (which epoch it is, which device the model is on) and saves
the wrapper's state in Lightning checkpoints.

This module imports ``lightning``; ``import graft`` does not.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "graft.lightning needs Lightning: pip install lightning "
        "(or pip install 'maxvol-kit[lightning]')."
    ) from exc

from graft._wrapper import Graft

__all__ = ["GraftCallback", "WeightedBatch"]


class WeightedBatch(NamedTuple):
    """A training batch: ``loss = (weights * per_sample_loss).mean()``.

    The fields of :class:`graft.GraftBatch`, as a named tuple so that
    Lightning can move it between devices and ``x, y, w, idx = batch``
    unpacks it.

    Attributes
    ----------
    inputs : Tensor of shape (batch_size, ...)
        The selected samples.
    targets : Tensor of shape (batch_size,)
        Their targets.
    weights : Tensor of shape (batch_size,)
        Their loss weights (non-negative; all ones unless the selector
        weights its picks).
    indices : Tensor of shape (batch_size,)
        Their indices in the training dataset.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    indices: torch.Tensor


class GraftCallback(Callback):
    """Train a ``LightningModule`` on the samples a GRAFT selector picks.

    The callback wraps the training dataset in a :class:`graft.Graft` and
    serves its batches through :meth:`train_dataloader`. Three changes to a
    Lightning script:

    1. ``Trainer(callbacks=[callback])``;
    2. ``trainer.fit(module, train_dataloaders=callback.train_dataloader())``
       (or return ``callback.train_dataloader()`` from the module's or the
       datamodule's ``train_dataloader``);
    3. in ``training_step``, unpack ``x, y, weights, indices = batch`` and
       return ``(weights * per_sample_losses).mean()``.

    The selection uses the ``LightningModule`` itself as the model: its
    ``forward`` must return the logits, and its last ``nn.Linear`` is the
    layer whose input gives the embedding features. Single-device training
    only; under a multi-process strategy the callback raises an error.

    Parameters
    ----------
    selector : selector or None
        :class:`graft.GraftSelector`, :class:`graft.RandomSelector`, or any
        object with the same ``select`` method; None trains on all data.
    dataset : torch Dataset of ``(input, target)`` pairs
        The training set to select from.
    batch_size : int, default=128
        Samples per batch before selection.
    refresh_every : int, default=5
        Epochs between selection rounds (``mode="refresh"``).
    mode : {"refresh", "online"}, default="refresh"
        ``"refresh"``: a selection round over the whole dataset every
        ``refresh_every`` epochs, training on that subset in between;
        ``"online"``: every batch is reduced to its selection before the
        backward pass.
    seed : int, default=0
        Seed of every random choice (shuffling, selection); with the same
        seed the run selects as a plain :class:`graft.Graft` does.
    num_workers : int, default=0
        DataLoader workers (indices stay exact).
    warm_start : int, default=0
        Epochs on random subsets of the same size before the first
        selection round (see :class:`graft.Graft`).
    progress : bool, default=False
        tqdm progress bars for the selection rounds.

    Attributes
    ----------
    graft : graft.Graft
        The wrapper that selects and serves the batches; its ``history``
        and ``fraction_achieved()`` report the run.

    See Also
    --------
    graft.Graft : The same selection in a plain PyTorch loop.

    Notes
    -----
    In refresh mode the number of batches changes from round to round, so
    the loader has no length and Lightning treats it like an iterable
    dataset (``val_check_interval`` must be ``1.0``, an int or a time). In
    online mode and without a selector the loader has a length and
    Lightning fetches each batch only when it trains on it, so the
    selection of a batch sees the model after the previous step, as in a
    plain loop.

    The callback's state (the current selection, the round it was made in
    and the history) is saved in Lightning checkpoints; a run resumed with
    ``trainer.fit(..., ckpt_path=...)`` selects exactly as an uninterrupted
    one.

    Examples
    --------
    >>> import lightning as L  # doctest: +SKIP
    >>> from graft import GraftSelector
    >>> from graft.lightning import GraftCallback
    >>> callback = GraftCallback(  # doctest: +SKIP
    ...     GraftSelector(fraction=0.3), dataset=train_set, batch_size=64
    ... )
    >>> trainer = L.Trainer(max_epochs=10, callbacks=[callback])  # doctest: +SKIP
    >>> trainer.fit(  # doctest: +SKIP
    ...     module, train_dataloaders=callback.train_dataloader()
    ... )
    >>> callback.graft.fraction_achieved()  # doctest: +SKIP
    0.29
    """

    def __init__(
        self,
        selector: Any,
        *,
        dataset: torch.utils.data.Dataset,
        batch_size: int = 128,
        refresh_every: int = 5,
        mode: str = "refresh",
        seed: int = 0,
        num_workers: int = 0,
        warm_start: int = 0,
        progress: bool = False,
    ) -> None:
        # The model is the LightningModule, known once the trainer starts;
        # Graft only uses it inside a selection round.
        self.graft = Graft(
            None,
            dataset,
            selector=selector,
            batch_size=batch_size,
            refresh_every=refresh_every,
            mode=mode,
            seed=seed,
            num_workers=num_workers,
            warm_start=warm_start,
            progress=progress,
        )
        self._trainer = None
        self._active = None  # the generator of the epoch being served

    def train_dataloader(self) -> _GraftLoader:
        """The loader to train on: pass it to ``trainer.fit`` or return it.

        Returns
        -------
        iterable of WeightedBatch
            Each pass yields the batches of the trainer's current epoch,
            ``graft.batches(trainer.current_epoch)``; it has a length in
            online mode and without a selector.
        """
        sized = self.graft.mode == "online" or self.graft.selector is None
        return _SizedGraftLoader(self) if sized else _GraftLoader(self)

    # -- Lightning hooks -----------------------------------------------------

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Take the ``LightningModule`` as the model that selects."""
        if stage != "fit":
            return
        if trainer.world_size > 1:
            raise NotImplementedError(
                f"GraftCallback runs on one device, but the trainer has "
                f"world_size={trainer.world_size}; use Trainer(devices=1), or the "
                "plain graft.Graft loop."
            )
        self._trainer = trainer
        self.graft.model = pl_module

    def on_fit_start(self, trainer, pl_module) -> None:
        """Select on the device the strategy moved the model to."""
        self.graft.device = pl_module.device

    def on_train_start(self, trainer, pl_module) -> None:
        """Check that the trainer trains on this callback's loader."""
        loader = trainer.train_dataloader
        if loader is not None and getattr(loader, "_callback", None) is not self:
            raise RuntimeError(
                "GraftCallback is in the trainer's callbacks but the trainer trains "
                f"on {type(loader).__name__}; pass "
                "train_dataloaders=callback.train_dataloader() to trainer.fit, or "
                "return callback.train_dataloader() from train_dataloader()."
            )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Log the epoch's data fraction and selection time."""
        self._close()
        record = next(
            (h for h in self.graft.history if h["epoch"] == trainer.current_epoch),
            None,
        )
        if record is not None:
            pl_module.log("graft/fraction", float(record["fraction"]))
            pl_module.log("graft/selection_time_s", float(record["selection_time_s"]))

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Drop the references to the trainer and the model."""
        if stage == "fit":
            self._close()
            self._trainer = None
            self.graft.model = None

    def state_dict(self) -> dict[str, Any]:
        """The wrapper's state: selection, round, history and seed."""
        return {"graft": self.graft.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the seed must match)."""
        self.graft.load_state_dict(state_dict["graft"])

    # -- serving -------------------------------------------------------------

    def _close(self):
        if self._active is not None:
            self._active.close()
            self._active = None

    def _batches_per_pass(self):
        return math.ceil(len(self.graft.dataset) / self.graft.batch_size)

    def _serve(self, count):
        """Yield the current epoch's batches as :class:`WeightedBatch` es.

        With a ``count`` (a sized loader), Lightning stops after the
        ``count``-th batch without asking for another, so the wrapper's
        epoch record is closed before that batch is handed out.
        """
        if self._trainer is None:
            raise RuntimeError(
                "GraftCallback.train_dataloader() is served by the callback during "
                "trainer.fit; add the callback with Trainer(callbacks=[callback])."
            )
        self._close()
        # The epoch Lightning gives samplers: the number of epochs processed.
        # Unlike ``current_epoch`` it is already right when Lightning fetches
        # the first batch of a resumed run, before its loop state settles.
        epoch = self._trainer.fit_loop.epoch_progress.current.processed
        batches = self.graft.batches(epoch)
        self._active = batches
        for k, batch in enumerate(batches, 1):
            if k == count:
                next(batches, None)  # the loader is exhausted: records the epoch
            yield WeightedBatch(
                batch.inputs, batch.targets, batch.weights, batch.indices
            )


class _GraftLoader:
    """The callback's batches for the trainer's current epoch (no length)."""

    def __init__(self, callback):
        self._callback = callback

    def __iter__(self):
        return self._callback._serve(None)


class _SizedGraftLoader(_GraftLoader):
    """A loader with a known number of batches: one per batch of a full pass."""

    def __iter__(self):
        return self._callback._serve(len(self))

    def __len__(self):
        return self._callback._batches_per_pass()
